//! Command-line interface. Every value is validated here, before anything is loaded; clap
//! exits with code 2 and names the bad value.
use std::time::Duration;

use clap::{Parser, ValueEnum};

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
  tracer -o json | jq 'select(.type==\"connection\")'   finished connections only";

#[derive(Debug, Parser)]
#[command(name = "tracer", version, about = ABOUT, long_about = LONG_ABOUT, after_help = AFTER_HELP)]
pub struct Args {
    /// Output format: `text` for people, `json` for JSON Lines (one object per line).
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,

    /// Only sockets with this port on either side (repeatable). Filtered in the kernel.
    #[arg(short, long = "port", value_name = "PORT", value_parser = parse_port)]
    pub ports: Vec<u16>,

    /// Only IPv4 sockets.
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// Only IPv6 sockets (including IPv4-mapped ones on dual-stack sockets).
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,

    /// Stop after this long: `30` (seconds), `30s`, `2m`, `1h`.
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Text output: do not print a timeline block when a connection closes.
    #[arg(long)]
    pub no_timeline: bool,

    /// Do not look up TIME_WAIT (netlink sock_diag) for connections this side closed first.
    #[arg(long)]
    pub no_timewait: bool,

    /// Do not attach the context tracepoints (resets, retransmits, error reports, socket
    /// destruction): transitions only, slightly cheaper; close classes are then less precise.
    #[arg(long)]
    pub no_events: bool,

    /// Colour in text output.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,

    /// Size of the kernel ring buffer: a power of two of at least 4KiB (`512K`, `8M`, `64MiB`).
    /// Larger absorbs longer bursts before events are lost (losses are always reported).
    #[arg(long, value_name = "SIZE", default_value = "8MiB", value_parser = parse_ring_size)]
    pub ring_buffer_size: u32,

    /// How often the reader polls the ring buffer. The kernel wakes the reader early when a
    /// quarter of the buffer is pending, so this bounds latency, not throughput.
    #[arg(long, value_name = "DURATION", default_value = "10ms", value_parser = parse_poll)]
    pub poll_interval: Duration,

    /// Use the portable program (runtime offsets, bpf_probe_read_kernel) even when the fast
    /// one fits this kernel. For testing the fallback path.
    #[arg(long, hide = true)]
    pub force_portable: bool,

    /// Show the eBPF program's own debug log (aya-log) on stderr; for debugging tracer.
    #[arg(long)]
    pub bpf_log: bool,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

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
