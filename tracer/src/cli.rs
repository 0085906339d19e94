//! Command-line interface. Every value is validated here, before anything is loaded; clap
//! exits with code 2 and names the bad value.
use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    decode::{Family, TcpState},
    filter::{CgroupId, Cidr, Filter, netns_inode, parse_container},
    pipeline::View,
};

const ABOUT: &str = "Show the Linux kernel's TCP state machine live: every state transition, per-connection timelines.";

const LONG_ABOUT: &str = "\
Show the Linux kernel's TCP state machine live.

tracer attaches an eBPF program to the kernel tracepoint sock:inet_sock_set_state and
prints every TCP state transition on this host as it happens (one line each), then, when
a socket reaches CLOSE, its whole timeline: each state, when it was entered and how long
it lasted.

What you will see for one connection on loopback:
  client   CLOSE -> SYN_SENT -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE
  server   LISTEN -> SYN_RECV -> ESTABLISHED -> CLOSE_WAIT -> LAST_ACK -> CLOSE
  listener CLOSE -> LISTEN ... LISTEN -> CLOSE
(the side that closes first goes through FIN_WAIT1/FIN_WAIT2, the other through
CLOSE_WAIT/LAST_ACK).

Kernel quirks worth knowing:
  * TIME_WAIT is handled by a separate timewait socket: the closing socket reports
    FIN_WAIT2 -> CLOSE here, and TIME_WAIT itself never appears on this tracepoint.
  * A client's local port is still 0 at CLOSE -> SYN_SENT; it is filled in later.
  * Many transitions run in softirq: PID/COMM is the task that was on the CPU, which is
    not necessarily the socket's owner.

Needs root (or CAP_BPF + CAP_PERFMON). Stops on Ctrl-C / SIGTERM, after --duration, or
when stdout is closed (e.g. `| head`); it then prints how many events were lost, if any.";

const AFTER_HELP: &str = "\
Examples:
  tracer                         every transition on the host, with timelines
  tracer -p 8080                 only connections with port 8080 on either side
  tracer -o json -p 443 -p 80    JSON Lines, ports 443 and 80
  tracer -6 --duration 30s       IPv6 only, stop after 30 seconds
  tracer -o json --view connections   one JSON record per finished connection (like tcplife)
  tracer stuck 30s               only connections stuck 30 s or more, with their owners
  tracer --stuck 2m --state CLOSE_WAIT -p 8080    CLOSE_WAIT leaks on port 8080
  tracer --addr 10.0.0.0/8 --rport 443            outgoing HTTPS to 10/8
  tracer --container 3f2a9c1b7d0e -o json         one container's sockets (by id prefix), with owner
                                                  cgroup, unit, container_id and pod_uid
  tracer --metrics 127.0.0.1:9464 --quiet --stuck 60s   a service: metrics and stuck reports
  tracer --view ladder -p 8080                    each connection as a sequence diagram
  tracer --summary -q -p 8080                     a summary with histograms at exit (and SIGUSR1)
  tracer --record /tmp/tcp.rec -p 8080 --svg /tmp/svg   record (and draw SVGs) for later
  tracer replay /tmp/tcp.rec --view ladder        that recording as ladders: no root needed
  tracer demo server-first                        a classroom demo: one connection, drawn";

#[derive(Debug, Parser)]
#[command(name = "tracer", version, about = ABOUT, long_about = LONG_ABOUT, after_help = AFTER_HELP)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Output format: `text` for people, `json` for JSON Lines (one object per line).
    #[arg(global = true, short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,

    /// Only sockets with this port on either side (repeatable). Filtered in the kernel.
    #[arg(global = true, short, long = "port", value_name = "PORT", value_parser = parse_port)]
    pub ports: Vec<u16>,

    /// Only sockets with this local port (repeatable). Filtered in the kernel. A client's
    /// first transition (CLOSE -> SYN_SENT) has local port 0 and does not match.
    #[arg(global = true, long = "lport", value_name = "PORT", value_parser = parse_port)]
    pub lports: Vec<u16>,

    /// Only sockets with this remote port (repeatable). Filtered in the kernel.
    #[arg(global = true, long = "rport", value_name = "PORT", value_parser = parse_port)]
    pub rports: Vec<u16>,

    /// Only sockets whose local or remote address is in this prefix (repeatable):
    /// `10.0.0.0/8`, `fd00::/8`, `127.0.0.1`. Filtered in the kernel.
    #[arg(global = true, long = "addr", value_name = "CIDR")]
    pub addrs: Vec<Cidr>,

    /// Only connections that pass through this state (repeatable), e.g. `CLOSE_WAIT`:
    /// their records and stuck reports, and their transitions from the moment they reach it.
    #[arg(global = true, long = "state", value_name = "STATE", value_parser = parse_state)]
    pub states: Vec<TcpState>,

    /// Only sockets owned by this process id (repeatable). Filtered in the kernel, from the
    /// owner tracker (the process that connected, listened, accepted or closed).
    #[arg(global = true, long = "pid", value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub pids: Vec<u32>,

    /// Only sockets owned by a process with this command name (repeatable; the kernel keeps
    /// 15 characters). Filtered in the kernel.
    #[arg(global = true, long = "comm", value_name = "NAME", value_parser = parse_comm)]
    pub comms: Vec<String>,

    /// Only sockets owned by a process in this cgroup v2 (repeatable): its path relative to
    /// the cgroup2 root, as the `0::` line of /proc/PID/cgroup shows it
    /// (`system.slice/nginx.service` or `/system.slice/nginx.service`), or its directory
    /// under the cgroup2 mount. The mount is found in /proc/self/mountinfo: /sys/fs/cgroup
    /// on a pure cgroup v2 host, /sys/fs/cgroup/unified on a hybrid one. Exactly that cgroup,
    /// not its children. Filtered in the kernel.
    #[arg(global = true, long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<CgroupId>,

    /// Only sockets owned by a process in the container whose id starts with this (at least
    /// 4 hex digits, repeatable; `docker ps` shows 12, a Kubernetes `containerd://ID` is
    /// taken as its ID). The container id comes from the owner's cgroup path (Docker,
    /// containerd, CRI-O, Podman; systemd or cgroupfs driver), and JSON shows it as
    /// `owner.container_id`. Filtered in user space, not in the kernel (the kernel knows
    /// cgroup ids, not container ids): every event still crosses the ring buffer, so combine
    /// it with --port or --cgroup on a busy host.
    #[arg(global = true, long = "container", value_name = "ID_PREFIX", value_parser = parse_container)]
    pub containers: Vec<String>,

    /// Only sockets in the network namespace with this inode (repeatable; `ls -iL
    /// /proc/PID/ns/net` shows it). The socket's own namespace, not the current task's:
    /// filtered in the kernel, reading the socket at offsets from the kernel's BTF.
    #[arg(global = true, long = "netns", value_name = "INODE", value_parser = clap::value_parser!(u32).range(1..))]
    pub netns: Vec<u32>,

    /// Only sockets in this network namespace (repeatable): `/run/netns/NAME` (from `ip
    /// netns add`) or `/proc/PID/ns/net`.
    #[arg(global = true, long = "netns-path", value_name = "PATH", value_parser = netns_inode)]
    pub netns_paths: Vec<u32>,

    /// Report connections that stay in SYN_SENT, SYN_RECV, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT,
    /// LAST_ACK or CLOSING longer than this (`30s`, `2m`): when they cross it, again each time
    /// their age doubles, and when they finally move. Sockets older than the tracer count too
    /// (from a sock_diag dump at start-up). A summary by owner and state is printed on exit
    /// and on SIGUSR1.
    #[arg(global = true, long, value_name = "AGE", value_parser = parse_duration)]
    pub stuck: Option<Duration>,

    /// Serve Prometheus metrics on this address (`127.0.0.1:9464`, `[::1]:9464`) at
    /// /metrics: transitions, connections by role and close class, resets, retransmits, lost
    /// events, connections per state and stuck ones, and duration histograms.
    #[arg(global = true, long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,

    /// No per-event output (transitions, events, connection records): only stuck reports,
    /// losses and summaries.
    #[arg(global = true, short, long)]
    pub quiet: bool,

    /// Only IPv4 sockets.
    #[arg(global = true, short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// Only IPv6 sockets (including IPv4-mapped ones on dual-stack sockets).
    #[arg(global = true, short = '6', long = "ipv6")]
    pub ipv6: bool,

    /// Stop after this long: `30` (seconds), `30s`, `2m`, `1h`.
    #[arg(global = true, short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// How connections are shown: `events` (every transition as it happens, then a timeline
    /// per connection when it closes; the default), `connections` (only each connection's
    /// record when it closes: its timeline in text, its `connection` record in JSON; one
    /// record per socket instead of one per transition, like tcplife, and the cheapest view
    /// on a busy host) or `ladder` (each connection, when it closes, as a sequence diagram:
    /// client on the left, server on the right when both ends are on this host, the segments
    /// each state change implies as arrows, real time offsets). Ladder is text only.
    #[arg(global = true, long, value_enum, value_name = "VIEW")]
    pub view: Option<View>,

    /// Also write each finished connection as an SVG sequence diagram (the ladder) into DIR,
    /// created if missing (mode 0700); one file per connection (mode 0600), named by time and
    /// endpoints. The filters choose which connections.
    #[arg(global = true, long, value_name = "DIR")]
    pub svg: Option<PathBuf>,

    /// Record every raw event, and what sock_diag and /proc told tracer, to FILE (JSON Lines,
    /// documented in the README), for `tracer replay FILE`. The kernel filters given here
    /// apply to what is recorded. The file is created mode 0600 (it names every connection,
    /// process, uid and cgroup); an existing FILE, or a symlink at that path, is refused
    /// unless --force is given.
    #[arg(global = true, long, value_name = "FILE")]
    pub record: Option<PathBuf>,

    /// At exit, write the TCP state diagram as an SVG picture to FILE: the classic diagram
    /// (RFC 793) with how often each arrow was taken and the median time connections spent
    /// in each state, then the kernel's own arrows (a reset's ESTABLISHED -> CLOSED, the
    /// handoff to a timewait socket) with their counts. Works live and with `tracer replay
    /// FILE`. Created at start-up (mode 0600; an existing file or a symlink is refused unless
    /// --force is given).
    #[arg(global = true, long, value_name = "FILE")]
    pub diagram: Option<PathBuf>,

    /// Replace an existing --record FILE or SVG file instead of refusing. A symlink at the
    /// path is replaced itself: tracer never writes through one.
    #[arg(global = true, long)]
    pub force: bool,

    /// Print a summary at exit and on SIGUSR1: connections by role and close class,
    /// transitions by (old, new), duration histograms with p50/p90/p99/max (handshake,
    /// accept, CLOSE_WAIT, FIN_WAIT2, TIME_WAIT, lifetime), and the top remote endpoints by
    /// connections and by resets. JSON: one `"type":"summary"` record.
    #[arg(global = true, long)]
    pub summary: bool,

    /// Text output: one line per connection when it closes, in columns, like tcplife: owner
    /// pid and comm, both ends, data sent and received, RTT, retransmits, lifetime, how it
    /// ended (a header first). Instead of the timeline blocks; with `--view connections`
    /// that is all that is printed.
    #[arg(global = true, long)]
    pub columns: bool,

    /// Text output: do not print a timeline block when a connection closes.
    #[arg(global = true, long)]
    pub no_timeline: bool,

    /// Do not look up TIME_WAIT (netlink sock_diag) for connections this side closed first.
    /// With `--stuck` (and `tracer stuck`) orphaned FIN_WAIT2 sockets are then not found
    /// either: closed by their process before the peer's FIN, they live in the same timewait
    /// table (said at start).
    #[arg(global = true, long)]
    pub no_timewait: bool,

    /// Do not attach the context tracepoints (resets, retransmits, error reports, socket
    /// destruction): transitions only, slightly cheaper; close classes are then less precise.
    #[arg(global = true, long)]
    pub no_events: bool,

    /// Do not read each connection's TCP counters at its close (bytes, RTT, retransmits,
    /// cwnd, delivery rate: the connection records' `tcp`), nor a server's handshake RTT as
    /// it is accepted: less time per transition in the kernel (the reads happen on those
    /// transitions only).
    #[arg(global = true, long)]
    pub no_counters: bool,

    /// Do not attribute accepted sockets to the process that accepted them (the
    /// `sys_exit_accept4`/`sys_exit_accept` program, 0.4-0.7 µs per accept): they keep their
    /// listener's owner until their own close, as a pre-fork server's master.
    #[arg(global = true, long)]
    pub no_accept: bool,

    /// Colour in text output.
    #[arg(global = true, long, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,

    /// Size of the kernel ring buffer: a power of two of at least 4KiB (`512K`, `8M`, `64MiB`).
    /// Larger absorbs longer bursts before events are lost (losses are always reported).
    #[arg(global = true, long, value_name = "SIZE", default_value = "8MiB", value_parser = parse_ring_size)]
    pub ring_buffer_size: u32,

    /// Most memory the reader may hold of records copied out of the ring buffer and not yet
    /// handled (`64M`, `1G`; at least 1MiB). A dedicated thread empties the ring as fast as it
    /// can copy; decoding and output follow behind, so a burst (a deploy closing every
    /// connection at once) waits here instead of overflowing the ring. Taken only while a
    /// burst lasts, given back after it. Past it, the ring fills and losses are reported as
    /// ring buffer full.
    #[arg(global = true, long, value_name = "SIZE", default_value = "128MiB", value_parser = parse_queue_size)]
    pub queue_size: usize,

    /// Most connections followed at once; beyond it the least recently active are dropped
    /// (reported as incomplete connection records and counted at exit). Bounds memory
    /// (about 400 bytes a socket).
    #[arg(global = true, long, value_name = "N", default_value_t = crate::table::DEFAULT_MAX_CONNS, value_parser = parse_max_conns)]
    pub max_connections: usize,

    /// How often the reader polls the ring buffer. The kernel wakes the reader early when a
    /// quarter of the buffer is pending, so this bounds latency, not throughput.
    #[arg(global = true, long, value_name = "DURATION", default_value = "10ms", value_parser = parse_poll)]
    pub poll_interval: Duration,

    /// Scheduling priority (nice, -20 to 19) of the reader. Under a connection storm the
    /// reader competes for CPU with the very threads making the storm; at the default fair
    /// share it falls behind and the ring buffer overflows (losses are reported, but lost).
    /// The default, -10, lets it keep up; 0 leaves it at the normal priority.
    #[arg(global = true, long, value_name = "N", default_value_t = -10, allow_hyphen_values = true, value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub nice: i32,

    /// Use the portable program (runtime offsets, bpf_probe_read_kernel) even when the fast
    /// one fits this kernel, the classic error-report tracepoint instead of the raw one, and
    /// a read per socket field. For testing the fallback paths.
    #[arg(global = true, long, hide = true)]
    pub force_portable: bool,

    /// Show the eBPF program's own log (aya-log) on stderr, whatever RUST_LOG says: a line
    /// for the first transition that passes the filters (the log is alive), then one for any
    /// record field the program fails to read. For debugging tracer.
    #[arg(global = true, long)]
    pub bpf_log: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a shell completion script: `tracer completions bash > /etc/bash_completion.d/tracer`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `tracer man > /usr/local/share/man/man1/tracer.1`.
    Man,
    /// Only find stuck connections, quietly: `tracer stuck 30s` is `tracer --stuck 30s --quiet`.
    /// For on-call use: prints each connection stuck longer than AGE (with its owner), when it
    /// moves, and a summary by owner and state on exit and on SIGUSR1.
    Stuck {
        /// How long in one state counts as stuck.
        #[arg(value_name = "AGE", default_value = "30s", value_parser = parse_duration)]
        age: Duration,
    },
    /// A live dashboard of the host's TCP state machine in the terminal: sockets in each
    /// state now (with their history), every transition's count and rate, the connections
    /// stuck longer than `--stuck` (30 s unless given) with their owners, the busiest
    /// remotes, and tracer's own health. Every filter applies. Keys: q quit, p pause, s
    /// cycle the remotes' sort, d diagram or list, n group the sockets by namespace or
    /// container, / filter the lists, Up/Down and Enter a connection's timeline and ladder,
    /// ? help.
    Top {
        /// Refresh interval.
        #[arg(long, value_name = "D", default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
    },
    /// Show a recording made with `--record FILE`: no root, no BPF, any machine. Every view,
    /// filter, `--stuck`, `--summary` and `--diagram` works as live (`--netns`, `--metrics`
    /// and `--record` do not: the recording has no namespaces, and nothing is live). A corrupt
    /// or truncated file stops the replay at the bad line, named, after showing everything
    /// before it. With `--top`, the recording plays into the `tracer top` dashboard.
    Replay {
        /// The recording.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Play it into the `tracer top` dashboard, paced by its timestamps (`--speed`),
        /// then hold the last frame until `q`.
        #[arg(long)]
        top: bool,
        /// With --top: how fast to play, as a multiple of the recorded time (`2` twice as
        /// fast, `0.5` half); 0 plays it as fast as possible.
        #[arg(long, value_name = "N", default_value_t = 1.0, value_parser = parse_speed)]
        speed: f64,
        /// With --top: the dashboard's refresh interval, in recorded time.
        #[arg(long, value_name = "D", default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
    },
    /// For a classroom: open one connection on loopback and show it as a ladder, straight
    /// from the kernel (needs root, like tracing). The scenario picks how it goes.
    Demo {
        #[arg(value_enum, default_value_t = Scenario::Normal)]
        scenario: Scenario,
        /// Pause between the steps of the scenario, so each stands apart in the diagram.
        #[arg(long, value_name = "DURATION", default_value = "20ms", value_parser = parse_duration)]
        pause: Duration,
    },
}

/// `tracer demo` scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Handshake, a request and a reply, then the client closes first (active close,
    /// TIME_WAIT on the client), the server second (CLOSE_WAIT, LAST_ACK).
    Normal,
    /// The same, but the server closes first: the roles of the teardown swap.
    ServerFirst,
    /// The client aborts with SO_LINGER 0: one RST instead of the four-way teardown.
    Reset,
    /// connect() to a port nobody listens on: SYN, RST, ECONNREFUSED.
    Refused,
    /// Both ends shut down at the same instant, from two threads, until the FINs cross (a
    /// few tries): FIN_WAIT1 -> CLOSING -> TIME_WAIT on both sides.
    Simultaneous,
}

impl Scenario {
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Normal => "a connection on loopback; the client closes first",
            Self::ServerFirst => "a connection on loopback; the server closes first",
            Self::Reset => {
                "a connection on loopback that the client aborts (SO_LINGER 0 then close: RST)"
            }
            Self::Refused => "a connect() to a loopback port nobody listens on",
            Self::Simultaneous => {
                "connections on loopback whose two ends shut down at once, until the FINs cross (only that one is drawn)"
            }
        }
    }
}

impl Args {
    /// The filters, as the kernel program and the table apply them.
    pub fn filter(&self) -> Filter {
        Filter {
            ports: self.ports.clone(),
            lports: self.lports.clone(),
            rports: self.rports.clone(),
            family: match (self.ipv4, self.ipv6) {
                (true, false) => Some(Family::Ipv4),
                (false, true) => Some(Family::Ipv6),
                _ => None,
            },
            cidrs: self.addrs.clone(),
            states: self.states.clone(),
            pids: self.pids.clone(),
            comms: self.comms.clone(),
            cgroups: self.cgroups.clone(),
            containers: self.containers.clone(),
            netns: self
                .netns
                .iter()
                .chain(&self.netns_paths)
                .copied()
                .collect(),
        }
    }

    /// The stuck threshold, from `--stuck` or `tracer stuck AGE` (30 s in the dashboard).
    pub fn stuck_threshold(&self) -> Option<Duration> {
        match &self.command {
            Some(Command::Stuck { age }) => Some(*age),
            _ if self.top_interval().is_some() => {
                Some(self.stuck.unwrap_or(Duration::from_secs(30)))
            }
            _ => self.stuck,
        }
    }

    /// The dashboard's refresh interval when it is shown: `tracer top`, `tracer replay FILE
    /// --top`.
    pub fn top_interval(&self) -> Option<Duration> {
        match &self.command {
            Some(Command::Top { interval })
            | Some(Command::Replay {
                top: true,
                interval,
                ..
            }) => Some(*interval),
            _ => None,
        }
    }

    /// The view: `--view`, else ladder for `demo`, else events.
    pub fn view(&self) -> View {
        match (self.view, &self.command) {
            (Some(v), _) => v,
            (None, Some(Command::Demo { .. })) => View::Ladder,
            (None, _) => View::Events,
        }
    }

    /// Checks across options that clap cannot express; the message names the fix.
    pub fn check(&self) -> Result<(), String> {
        if self.columns && self.output == Output::Json {
            return Err(
                "--columns is a text layout: JSON connection records already carry every field (drop -o json or --columns)".into(),
            );
        }
        if self.view() == View::Connections && self.no_timeline && self.output == Output::Text {
            return Err(
                "--no-timeline leaves --view connections nothing to show: drop one of them".into(),
            );
        }
        if self.view() == View::Ladder && self.output == Output::Json {
            return Err(
                "the ladder view is text only: drop `-o json`, or use `--svg DIR` for diagrams next to JSON output".into(),
            );
        }
        if let Some(Command::Replay {
            file, top, speed, ..
        }) = &self.command
        {
            if !top && *speed != 1.0 {
                return Err("--speed paces the dashboard: add --top".into());
            }
            if !self.netns.is_empty() || !self.netns_paths.is_empty() {
                return Err("--netns and --netns-path cannot filter a replay: recorded events carry no network namespace".into());
            }
            if self.metrics.is_some() {
                return Err(
                    "--metrics serves live metrics; it has nothing to serve in a replay".into(),
                );
            }
            if self.record.is_some() {
                return Err(
                    "--record cannot be used with replay: copy the recording instead".into(),
                );
            }
            if !file.is_file() {
                return Err(format!("no recording at {}", file.display()));
            }
        }
        if let Some(dir) = &self.svg
            && dir.exists()
            && !dir.is_dir()
        {
            return Err(format!("--svg {}: not a directory", dir.display()));
        }
        Ok(())
    }

    pub fn quiet(&self) -> bool {
        self.quiet || matches!(self.command, Some(Command::Stuck { .. }))
    }
}

fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "`{s}` is not a speed: a multiple of the recorded time (`1`, `10`, `0.5`), 0 for as fast as possible"
        )),
    }
}

fn parse_max_conns(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}` is not a number of connections (1 or more)")),
    }
}

fn parse_comm(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 15 {
        return Err(format!(
            "`{s}`: a command name is 1 to 15 bytes (the kernel keeps 15)"
        ));
    }
    Ok(s.to_string())
}

fn parse_state(s: &str) -> Result<TcpState, String> {
    let want = s.trim().to_ascii_uppercase().replace('-', "_");
    let want = want.strip_prefix("TCP_").unwrap_or(&want);
    TcpState::ALL
        .into_iter()
        .find(|st| st.name() == want)
        .ok_or_else(|| {
            let names: Vec<&str> = TcpState::ALL.iter().map(|s| s.name()).collect();
            format!("`{s}` is not a TCP state; one of {}", names.join(", "))
        })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) => Err("port 0 matches nothing: give a port from 1 to 65535".into()),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("`{s}` is not a port (1 to 65535)")),
    }
}

/// `30` (seconds) or a humantime duration (`30s`, `2m`, `1h30m`, `250ms`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| format!("`{s}` is not a duration ({e}); try `30`, `30s`, `2m` or `1h`"))?,
    };
    if d.is_zero() {
        return Err("a duration of zero would stop at once".into());
    }
    Ok(d)
}

fn parse_poll(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(1) || d > Duration::from_secs(1) {
        return Err(format!("`{s}` is out of range: give 1ms to 1s"));
    }
    Ok(d)
}

/// `4096`, `512K`, `8M`, `8MiB`, `1G` (binary units).
pub fn parse_ring_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size; try `8M` or `64MiB`"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown unit `{other}` in `{s}`; use K, M or G")),
    };
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))?;
    if bytes < 4096 || !bytes.is_power_of_two() {
        return Err(format!(
            "`{s}` = {bytes} bytes: the kernel needs a power of two of at least 4KiB (e.g. 1M, 8M, 64M)"
        ));
    }
    // Kernel limit for BPF ring buffers (RINGBUF_MAX_RECORD_SZ / mapping limits): stay ≤ 1 GiB.
    u32::try_from(bytes)
        .ok()
        .filter(|&b| b <= 1 << 30)
        .ok_or_else(|| format!("`{s}` is too large: at most 1GiB"))
}

/// `--queue-size`: a size with an optional unit, 1 MiB to 64 GiB.
pub fn parse_queue_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size; try `128M` or `1GiB`"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown unit `{other}` in `{s}`; use K, M or G")),
    };
    let bytes = n
        .checked_mul(mult)
        .filter(|&b| b <= 64 << 30)
        .ok_or_else(|| format!("`{s}` is too large: at most 64GiB"))?;
    if bytes < 1 << 20 {
        return Err(format!("`{s}` is too small: at least 1MiB"));
    }
    usize::try_from(bytes).map_err(|_| format!("`{s}` is too large"))
}

/// Writes the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    use clap::CommandFactory as _;
    clap_complete::generate(shell, &mut Args::command(), "tracer", out);
}

/// Writes the man page, generated from the same definitions as `--help`.
pub fn man(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    use clap::CommandFactory as _;
    clap_mangen::Man::new(Args::command()).render(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn man_page_and_completions_are_generated() {
        let mut m = Vec::new();
        man(&mut m).unwrap();
        let m = String::from_utf8(m).unwrap();
        assert!(
            m.contains(".TH tracer") && m.contains("\\-\\-stuck"),
            "{}",
            &m[..200.min(m.len())]
        );
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut c = Vec::new();
            completions(shell, &mut c);
            let c = String::from_utf8(c).unwrap();
            assert!(
                c.contains("ring-buffer-size") && c.contains("stuck"),
                "{shell}"
            );
        }
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_ring_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_ring_size("512K"), Ok(512 << 10));
        assert_eq!(parse_ring_size("4096"), Ok(4096));
        assert_eq!(parse_ring_size("1G"), Ok(1 << 30));
        assert!(parse_ring_size("3M").unwrap_err().contains("power of two"));
        assert!(parse_ring_size("1K").unwrap_err().contains("at least 4KiB"));
        assert!(parse_ring_size("2G").unwrap_err().contains("at most 1GiB"));
        assert!(parse_ring_size("8X").unwrap_err().contains("unknown unit"));
        assert_eq!(parse_queue_size("128MiB"), Ok(128 << 20));
        assert_eq!(parse_queue_size("3M"), Ok(3 << 20));
        assert_eq!(parse_queue_size("1G"), Ok(1 << 30));
        assert!(
            parse_queue_size("512K")
                .unwrap_err()
                .contains("at least 1MiB")
        );
        assert!(
            parse_queue_size("65G")
                .unwrap_err()
                .contains("at most 64GiB")
        );
        assert!(parse_ring_size("lots").is_err());
    }

    #[test]
    fn durations_and_ports() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").unwrap_err().contains("`soon`"));
        assert!(parse_poll("5s").is_err());
        assert_eq!(parse_port("8080"), Ok(8080));
        assert!(parse_port("0").is_err());
        assert!(parse_port("70000").unwrap_err().contains("`70000`"));
    }

    #[test]
    fn stuck_mode_and_filters() {
        let a = Args::try_parse_from(["tracer", "stuck", "2m", "-p", "80"]).unwrap();
        assert_eq!(
            (a.stuck_threshold(), a.quiet(), a.ports.as_slice()),
            (Some(Duration::from_secs(120)), true, &[80][..])
        );
        let a = Args::try_parse_from(["tracer", "stuck"]).unwrap();
        assert_eq!(a.stuck_threshold(), Some(Duration::from_secs(30)));
        let a = Args::try_parse_from([
            "tracer",
            "--stuck",
            "30s",
            "--state",
            "close-wait",
            "--addr",
            "10.0.0.0/8",
            "--lport",
            "1",
            "--rport",
            "2",
            "-4",
        ])
        .unwrap();
        let f = a.filter();
        assert_eq!(
            (
                f.states.as_slice(),
                f.family,
                f.lports.as_slice(),
                f.rports.as_slice()
            ),
            (
                &[TcpState::CloseWait][..],
                Some(Family::Ipv4),
                &[1u16][..],
                &[2u16][..]
            )
        );
        assert_eq!(f.cidrs[0].to_string(), "10.0.0.0/8");
        let a = Args::try_parse_from([
            "tracer",
            "--container",
            "3F2A9C",
            "--container",
            "docker://abcd1234",
        ])
        .unwrap();
        assert_eq!(a.filter().containers, ["3f2a9c", "abcd1234"]);
        assert!(!a.quiet());
        for bad in [
            vec!["tracer", "--state", "WAITING"],
            vec!["tracer", "--addr", "10.0.0.0/40"],
            vec!["tracer", "--stuck", "soon"],
            vec!["tracer", "stuck", "0"],
            vec!["tracer", "--lport", "0"],
            vec!["tracer", "--container", "3f2"],
            vec!["tracer", "--container", "nginx"],
        ] {
            let e = Args::try_parse_from(&bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
            assert!(e.to_string().contains(bad.last().unwrap()), "{e}");
        }
    }

    #[test]
    fn flags_parse_and_conflict() {
        let a = Args::try_parse_from(["tracer", "-o", "json", "-p", "80", "--port", "443", "-6"])
            .unwrap();
        assert_eq!(
            (a.output, a.ports.as_slice(), a.ipv6),
            (Output::Json, &[80, 443][..], true)
        );
        let e = Args::try_parse_from(["tracer", "-4", "-6"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = Args::try_parse_from(["tracer", "--ring-buffer-size", "3M"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("3M"));
    }
}
