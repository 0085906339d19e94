//! `cargo xtask loadgen` (hidden): N complete loopback TCP connections, as fast as possible or
//! at a fixed rate, for `cargo xtask bench` and `cargo xtask soak`.
//!
//! Each connection is a real three-way handshake and a real close on loopback, so the kernel
//! emits a known number of `sock:inet_sock_set_state` transitions: 10 per connection with a
//! FIN close (5 on each side; TIME_WAIT is not a tracepoint transition), 6 with an RST close
//! (SO_LINGER 0), plus 2 per listener (CLOSE -> LISTEN, LISTEN -> CLOSE).
//!
//! Ephemeral ports: by default the generator moves itself into a fresh network namespace
//! (`unshare(CLONE_NEWNET)`, `lo` up, `ip_local_port_range` 1024–65000, large backlogs). The
//! TIME_WAIT sockets of earlier runs die with their namespace, so runs never collide with each
//! other or with the host's own traffic, and the listener ports (above 65000) are outside the
//! ephemeral range, so no client socket can take them. `tcp_tw_reuse` defaults to 2 (reuse for
//! loopback) in a new namespace, which lets one listener serve more than 64k connections in a
//! row. Nothing leaves loopback: the namespace has no other interface.
//!
//! The result is one JSON line on stdout ([`Report`]); progress and errors go to stderr.
use std::{
    io::{BufRead as _, BufReader, ErrorKind, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    process::{Command, ExitCode, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use socket2::{Domain, Socket, Type};

/// First listener port: above the namespace's ephemeral range (1024–65000) and the host's
/// default one (32768–60999), so even `--no-netns` runs do not collide with client ports.
const DEFAULT_PORT: u16 = 65100;
/// Most connections one run may make (also bounds `--rate` × duration).
const MAX_CONNS: u64 = 20_000_000;
/// Open connections per process in hold mode. Each takes two descriptors (client and
/// server), and a container without CAP_SYS_RESOURCE cannot raise RLIMIT_NOFILE past its hard
/// limit (20000 here), so larger holds are split over child processes in the same namespace,
/// each with its own listener (which also keeps every 4-tuple distinct).
const HOLD_PER_PROC: u64 = 9_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum Family {
    #[value(name = "4")]
    V4,
    #[value(name = "6")]
    V6,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum Closer {
    /// The client closes first (the usual HTTP/1.0 pattern): client TIME_WAIT.
    Client,
    /// The server closes first: the server side goes to TIME_WAIT.
    Server,
}

/// What each connection looks like and how many run at once: the options `loadgen` and
/// `bench` share.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct Shape {
    /// Client threads (and as many server threads); blocking sockets.
    #[arg(short = 'c', long, default_value_t = 4)]
    pub concurrency: usize,
    /// Address family (loopback 127.0.0.1 or ::1).
    #[arg(long, value_enum, default_value_t = Family::V4)]
    pub family: Family,
    /// Which side closes first.
    #[arg(long, value_enum, default_value_t = Closer::Client)]
    pub close: Closer,
    /// Close with an RST (SO_LINGER 0) instead of a FIN: 6 transitions per connection
    /// instead of 10.
    #[arg(long)]
    pub rst: bool,
}

impl Shape {
    /// `concurrency` threads of plain IPv4 connections closed by the client with a FIN.
    pub fn plain(concurrency: usize) -> Self {
        Self {
            concurrency,
            family: Family::V4,
            close: Closer::Client,
            rst: false,
        }
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Connections to make (complete: handshake and close).
    #[arg(short = 'n', long, default_value_t = 10_000)]
    pub conns: u64,
    #[command(flatten)]
    pub shape: Shape,
    /// First listener port (keep it outside the ephemeral range).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Total connections per second (paced per thread); default: as fast as possible.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Keep every connection open until all N are established, hold them this many seconds,
    /// then close them all (for memory with many connections open at once).
    #[arg(long, value_name = "SECS")]
    pub hold: Option<f64>,
    /// With `--hold`: each client closes as soon as it is connected while its server keeps
    /// its end for the hold, so every client socket is an orphaned FIN_WAIT2 (a timewait
    /// socket awaiting the peer's FIN) meanwhile; then the servers close.
    #[arg(long, requires = "hold")]
    pub orphans: bool,
    /// Stop starting connections after this many seconds (the run is bounded in time too).
    #[arg(long, default_value_t = 900.0)]
    pub max_secs: f64,
    /// Stay in the current network namespace (ephemeral ports and TIME_WAIT then shared with
    /// the host; not recommended).
    #[arg(long)]
    pub no_netns: bool,
    /// Print progress to stderr every this many seconds (0: never).
    #[arg(long, default_value_t = 0.0)]
    pub progress: f64,
    /// Internal (hold mode split over processes): print "open" when all connections are
    /// open, then wait for a line on stdin before closing them.
    #[arg(long, hide = true)]
    pub child: bool,
}

impl Args {
    /// Listeners needed: one, or enough for every open connection to get its own 4-tuple.
    pub fn listeners(&self) -> u64 {
        if self.hold.is_some() && !self.child {
            self.conns.div_ceil(HOLD_PER_PROC).max(1)
        } else {
            1
        }
    }

    /// Transitions the kernel emits for `conns` completed connections on these listeners.
    pub fn expected_transitions(&self, conns: u64) -> u64 {
        let per_conn = if self.shape.rst { 6 } else { 10 };
        per_conn * conns + 2 * self.listeners()
    }

    /// The arguments that reproduce this run (for spawning the generator as a child).
    pub fn to_cli(&self) -> Vec<String> {
        let mut v = vec![
            "--conns".into(),
            self.conns.to_string(),
            "--concurrency".into(),
            self.shape.concurrency.to_string(),
            "--family".into(),
            match self.shape.family {
                Family::V4 => "4".into(),
                Family::V6 => "6".into(),
            },
            "--close".into(),
            match self.shape.close {
                Closer::Client => "client".into(),
                Closer::Server => "server".into(),
            },
            "--port".into(),
            self.port.to_string(),
            "--max-secs".into(),
            self.max_secs.to_string(),
            "--progress".into(),
            self.progress.to_string(),
        ];
        if self.shape.rst {
            v.push("--rst".into());
        }
        if let Some(r) = self.rate {
            v.extend(["--rate".into(), r.to_string()]);
        }
        if let Some(h) = self.hold {
            v.extend(["--hold".into(), h.to_string()]);
        }
        if self.orphans {
            v.push("--orphans".into());
        }
        if self.no_netns {
            v.push("--no-netns".into());
        }
        v
    }
}

/// What one generator run did (printed as one JSON line).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// Connections completed (handshake and close on both sides).
    pub conns: u64,
    /// Connect attempts that failed (each makes transitions the formula does not count).
    pub failed: u64,
    /// Connections started to when the last one closed (excludes namespace set-up).
    pub elapsed_s: f64,
    pub conns_per_s: f64,
    pub listeners: u64,
    pub listen_port: u16,
    /// 10 (FIN) or 6 (RST) per connection + 2 per listener.
    pub expected_transitions: u64,
    /// Rate mode: how far the slowest thread fell behind its schedule at most.
    pub max_lag_s: f64,
    /// Stopped early by --max-secs.
    pub timed_out: bool,
    /// Hold mode: seconds until all connections were open.
    pub open_s: Option<f64>,
}

pub fn main(args: &Args) -> anyhow::Result<ExitCode> {
    if args.conns == 0 || args.conns > MAX_CONNS {
        bail!("--conns must be 1..={MAX_CONNS}");
    }
    if args.shape.concurrency == 0 || args.shape.concurrency > 256 {
        bail!("--concurrency must be 1..=256");
    }
    if let Some(r) = args.rate
        && !(r > 0.0 && r.is_finite())
    {
        bail!("--rate must be a positive number");
    }
    if !(args.max_secs > 0.0 && args.max_secs.is_finite()) {
        bail!("--max-secs must be positive");
    }
    if u64::from(args.port) + args.listeners() > 65_536 {
        bail!(
            "--port {} leaves no room for {} listeners",
            args.port,
            args.listeners()
        );
    }
    // Before any thread exists: unshare applies to the calling thread only.
    if !args.no_netns {
        enter_fresh_netns()?;
    }
    let report = if args.hold.is_some() && args.conns > HOLD_PER_PROC && !args.child {
        hold_over_children(args)?
    } else {
        if args.hold.is_some() {
            raise_nofile(2 * args.conns + 256)?;
        }
        run(args)?
    };
    println!(
        "{}",
        serde_json::to_string(&report).context("encoding the report")?
    );
    Ok(ExitCode::SUCCESS)
}

/// A new network namespace with `lo` up, a wide ephemeral port range and big backlogs.
fn enter_fresh_netns() -> anyhow::Result<()> {
    // SAFETY: plain syscall; the process is still single-threaded here.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error())
            .context("unshare(CLONE_NEWNET) (needs root / CAP_SYS_ADMIN; or pass --no-netns)");
    }
    let st = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .context("running `ip link set lo up` (iproute2)")?;
    if !st.success() {
        bail!("`ip link set lo up` in the new namespace failed ({st})");
    }
    // /proc/sys/net is per namespace: opened from this (unshared) thread it is the new one's.
    for (key, value) in [
        ("net/ipv4/ip_local_port_range", "1024 65000"),
        ("net/core/somaxconn", "65535"),
        ("net/ipv4/tcp_max_syn_backlog", "65535"),
    ] {
        let p = format!("/proc/sys/{key}");
        std::fs::write(&p, value).with_context(|| format!("writing {value:?} to {p}"))?;
    }
    Ok(())
}

fn raise_nofile(want: u64) -> anyhow::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if lim.rlim_cur >= want {
        return Ok(());
    }
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    // Raising the hard limit needs CAP_SYS_RESOURCE; the soft one only up to the hard one.
    let new = if want <= lim.rlim_max {
        libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max,
        }
    } else {
        libc::rlimit {
            rlim_cur: want.min(nr_open),
            rlim_max: want.min(nr_open),
        }
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("raising RLIMIT_NOFILE to {want} for --hold"));
    }
    if new.rlim_cur < want {
        bail!("--hold needs {want} file descriptors; fs.nr_open is {nr_open}");
    }
    Ok(())
}

fn listener(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)
        .context("socket() for the listener")?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())
        .with_context(|| format!("binding the listener to {addr}"))?;
    // A deep accept queue: an overflowing one drops handshakes, and the 1 s SYN retransmit
    // timer would then dominate the measured rate.
    s.listen(65_535)
        .with_context(|| format!("listen on {addr}"))?;
    // accept() honours SO_RCVTIMEO: server threads wake up to see whether the run is over.
    s.set_read_timeout(Some(Duration::from_millis(50)))?;
    Ok(s.into())
}

fn set_linger_zero(fd: i32) -> std::io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `l` (a valid struct linger) for the given length.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const l).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads until EOF or error (an RST from the peer is an expected end here).
fn drain(s: &mut TcpStream) {
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Closes a connection this side closes first: a FIN, or an RST with `--rst`.
fn close_first(s: TcpStream, rst: bool) {
    if rst {
        // Best effort: if SO_LINGER fails the close is a FIN, and the tracefs count shows it.
        let _ = set_linger_zero(s.as_raw_fd());
    }
    drop(s);
}

struct Shared {
    stop_accepting: AtomicBool,
    release: AtomicBool,
    accepted: AtomicU64,
    connected: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    /// Highest lateness behind the rate schedule, in µs.
    max_lag_us: AtomicU64,
    timed_out: AtomicBool,
}

fn run(args: &Args) -> anyhow::Result<Report> {
    let ip: IpAddr = match args.shape.family {
        Family::V4 => Ipv4Addr::LOCALHOST.into(),
        Family::V6 => Ipv6Addr::LOCALHOST.into(),
    };
    let nl = args.listeners();
    let listeners: Vec<Arc<TcpListener>> = (0..nl)
        .map(|i| listener(SocketAddr::new(ip, args.port + i as u16)).map(Arc::new))
        .collect::<anyhow::Result<_>>()?;
    let shared = Arc::new(Shared {
        stop_accepting: AtomicBool::new(false),
        release: AtomicBool::new(false),
        accepted: AtomicU64::new(0),
        connected: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        max_lag_us: AtomicU64::new(0),
        timed_out: AtomicBool::new(false),
    });
    let c = args.shape.concurrency;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.max_secs);

    // Server threads: accept, then play the server's part of the close.
    let mut servers = Vec::with_capacity(c);
    for t in 0..c {
        let l = Arc::clone(&listeners[t % listeners.len()]);
        let sh = Arc::clone(&shared);
        let a = args.clone();
        servers.push(
            thread::Builder::new()
                .name(format!("server{t}"))
                .spawn(move || server(&l, &sh, &a))
                .context("spawning a server thread")?,
        );
    }
    // Client threads: connection j (global) goes to thread j % c and listener j % nl.
    let mut clients = Vec::with_capacity(c);
    for t in 0..c {
        let sh = Arc::clone(&shared);
        let a = args.clone();
        let addrs: Vec<SocketAddr> = (0..nl)
            .map(|i| SocketAddr::new(ip, args.port + i as u16))
            .collect();
        clients.push(
            thread::Builder::new()
                .name(format!("client{t}"))
                .spawn(move || client(t, &addrs, &sh, &a, start, deadline))
                .context("spawning a client thread")?,
        );
    }

    let mut open_s = None;
    let progress = (args.progress > 0.0).then(|| Duration::from_secs_f64(args.progress));
    let mut next_progress = progress.map(|p| start + p);
    if let Some(hold) = args.hold {
        // Wait for every connection to be open on both sides (or for the clients to give up).
        loop {
            let connected = shared.connected.load(Ordering::Relaxed);
            let failed = shared.failed.load(Ordering::Relaxed);
            let accepted = shared.accepted.load(Ordering::Relaxed);
            if connected + failed >= args.conns && accepted >= connected {
                break;
            }
            if Instant::now() > deadline {
                shared.timed_out.store(true, Ordering::Relaxed);
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
        open_s = Some(start.elapsed().as_secs_f64());
        if args.child {
            // Tell the parent, then wait for its go (or its death: EOF) to close.
            println!("open");
            std::io::stdout().flush().context("writing to the parent")?;
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        } else {
            eprintln!(
                "loadgen: {} connections open after {:.2}s; holding them {hold}s",
                shared.connected.load(Ordering::Relaxed),
                start.elapsed().as_secs_f64()
            );
            thread::sleep(Duration::from_secs_f64(hold));
        }
        shared.release.store(true, Ordering::Relaxed);
    }
    for (i, h) in clients.into_iter().enumerate() {
        // Progress while the clients run, from the main thread (it is otherwise idle).
        while !h.is_finished() {
            thread::sleep(Duration::from_millis(20));
            if let (Some(p), Some(n)) = (progress, next_progress)
                && Instant::now() >= n
            {
                eprintln!(
                    "loadgen: {:.0}s: {} connections done",
                    start.elapsed().as_secs_f64(),
                    shared.completed.load(Ordering::Relaxed)
                );
                next_progress = Some(n + p);
            }
        }
        h.join()
            .map_err(|_| anyhow::anyhow!("client thread {i} panicked"))?;
    }
    // Every client is done: the servers finish what is in the accept queues and stop.
    shared.stop_accepting.store(true, Ordering::Relaxed);
    for (i, h) in servers.into_iter().enumerate() {
        h.join()
            .map_err(|_| anyhow::anyhow!("server thread {i} panicked"))?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    // The last ACKs (LAST_ACK -> CLOSE) are processed in softirq right after the closes; give
    // them a moment before the listeners go (their LISTEN -> CLOSE ends the run).
    thread::sleep(Duration::from_millis(50));
    drop(listeners);
    let completed = shared.completed.load(Ordering::Relaxed);
    Ok(Report {
        conns: completed,
        failed: shared.failed.load(Ordering::Relaxed),
        elapsed_s: elapsed,
        conns_per_s: completed as f64 / elapsed.max(1e-9),
        listeners: nl,
        listen_port: args.port,
        expected_transitions: args.expected_transitions(completed),
        max_lag_s: shared.max_lag_us.load(Ordering::Relaxed) as f64 / 1e6,
        timed_out: shared.timed_out.load(Ordering::Relaxed),
        open_s,
    })
}

fn client(
    t: usize,
    addrs: &[SocketAddr],
    sh: &Shared,
    a: &Args,
    start: Instant,
    deadline: Instant,
) {
    let c = a.shape.concurrency as u64;
    let mut held = Vec::new();
    let mut j = t as u64;
    while j < a.conns {
        let now = Instant::now();
        if now > deadline {
            sh.timed_out.store(true, Ordering::Relaxed);
            break;
        }
        if let Some(rate) = a.rate {
            let due = start + Duration::from_secs_f64(j as f64 / rate);
            if due > now {
                thread::sleep(due - now);
            } else {
                let lag = (now - due).as_micros() as u64;
                sh.max_lag_us.fetch_max(lag, Ordering::Relaxed);
            }
        }
        let addr = addrs[(j % addrs.len() as u64) as usize];
        match TcpStream::connect(addr) {
            Ok(mut s) => {
                sh.connected.fetch_add(1, Ordering::Relaxed);
                if a.hold.is_some() && !a.orphans {
                    held.push(s);
                } else {
                    match a.shape.close {
                        Closer::Client => close_first(s, a.shape.rst),
                        Closer::Server => {
                            drain(&mut s);
                            drop(s);
                        }
                    }
                    sh.completed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                let n = sh.failed.fetch_add(1, Ordering::Relaxed);
                if n < 5 {
                    eprintln!("loadgen: connect to {addr} failed: {e}");
                }
            }
        }
        j += c;
    }
    if a.hold.is_some() {
        while !sh.release.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(5));
        }
        for mut s in held {
            match a.shape.close {
                Closer::Client => close_first(s, a.shape.rst),
                Closer::Server => {
                    drain(&mut s);
                    drop(s);
                }
            }
            sh.completed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn server(l: &TcpListener, sh: &Shared, a: &Args) {
    let mut held = Vec::new();
    loop {
        match l.accept() {
            Ok((mut s, _)) => {
                sh.accepted.fetch_add(1, Ordering::Relaxed);
                // The accepted socket must block even though the listener has a timeout.
                let _ = s.set_read_timeout(None);
                if a.hold.is_some() {
                    held.push(s);
                    continue;
                }
                match a.shape.close {
                    Closer::Client => {
                        drain(&mut s);
                        drop(s);
                    }
                    Closer::Server => close_first(s, a.shape.rst),
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if sh.stop_accepting.load(Ordering::Relaxed) {
                    break;
                }
                if a.hold.is_some() && sh.release.load(Ordering::Relaxed) {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("loadgen: accept failed: {e}");
                thread::sleep(Duration::from_millis(1));
            }
        }
    }
    if a.hold.is_some() {
        while !sh.release.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(5));
        }
        for mut s in held {
            match a.shape.close {
                Closer::Client => {
                    drain(&mut s);
                    drop(s);
                }
                Closer::Server => close_first(s, a.shape.rst),
            }
        }
    }
}

/// Hold mode for more connections than one process can hold: children in this namespace,
/// each with HOLD_PER_PROC connections on its own listener port, released together.
fn hold_over_children(args: &Args) -> anyhow::Result<Report> {
    let hold = args.hold.unwrap_or(0.0);
    let exe = std::env::current_exe().context("finding my own binary")?;
    let start = Instant::now();
    let mut children = Vec::new();
    let mut left = args.conns;
    let mut port = args.port;
    while left > 0 {
        let n = left.min(HOLD_PER_PROC);
        let mut a = args.clone();
        a.conns = n;
        a.port = port;
        a.no_netns = true;
        a.child = true;
        a.shape.concurrency = args.shape.concurrency.min(2);
        a.progress = 0.0;
        let mut cli = a.to_cli();
        cli.push("--child".into());
        let child = Command::new(&exe)
            .arg("loadgen")
            .args(cli)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting a hold child")?;
        children.push(child);
        left -= n;
        port += 1;
    }
    let mut outs = Vec::new();
    for c in &mut children {
        let out = c.stdout.take().context("child stdout")?;
        let mut r = BufReader::new(out);
        let mut line = String::new();
        r.read_line(&mut line).context("waiting for a hold child")?;
        if line.trim() != "open" {
            bail!("a hold child failed before opening its connections");
        }
        outs.push(r);
    }
    let open_s = start.elapsed().as_secs_f64();
    eprintln!(
        "loadgen: {} connections open after {open_s:.2}s in {} processes; holding them {hold}s",
        args.conns,
        children.len()
    );
    thread::sleep(Duration::from_secs_f64(hold));
    for c in &mut children {
        let mut stdin = c.stdin.take().context("child stdin")?;
        stdin.write_all(b"go\n").context("releasing a hold child")?;
    }
    let mut total = Report {
        conns: 0,
        failed: 0,
        elapsed_s: 0.0,
        conns_per_s: 0.0,
        listeners: children.len() as u64,
        listen_port: args.port,
        expected_transitions: 0,
        max_lag_s: 0.0,
        timed_out: false,
        open_s: Some(open_s),
    };
    for (mut c, mut r) in children.into_iter().zip(outs) {
        let mut line = String::new();
        r.read_line(&mut line)
            .context("reading a hold child's report")?;
        let st = c.wait().context("waiting for a hold child")?;
        if !st.success() {
            bail!("a hold child failed ({st})");
        }
        let rep: Report = serde_json::from_str(line.trim())
            .with_context(|| format!("parsing a hold child's report {line:?}"))?;
        total.conns += rep.conns;
        total.failed += rep.failed;
        total.timed_out |= rep.timed_out;
    }
    total.elapsed_s = start.elapsed().as_secs_f64();
    total.conns_per_s = total.conns as f64 / total.elapsed_s.max(1e-9);
    total.expected_transitions = args.expected_transitions(total.conns);
    Ok(total)
}
