//! Sinks: how transitions, finished connections and losses are shown. Adding a view means
//! adding a [`Sink`]; the table does not change.
use std::{
    io::{self, Write},
    net::IpAddr,
};

use anstyle::{AnsiColor, Style};
use chrono::{DateTime, Local, Utc};
use serde::Serialize;

use crate::{
    decode::{
        Comm, Context, ContextKind, Family, SockAddr, Task, TcpState, Transition, errno_name,
    },
    table::{
        CloseClass, Conn, Note, Owner, OwnerSource, Role, SeenFrom, StuckGroup, StuckReport,
        TimeWait, Unstuck,
    },
};

/// Events the kernel could not hand over, by cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LostCause {
    /// The ring buffer was full (the reader fell behind).
    RingbufFull,
    /// The kernel skipped the program because it was already running on that CPU (a
    /// softirq transition interrupting a process-context one): `recursion_misses`.
    Recursion,
    /// The portable program could not read a field of the record.
    ReadError,
}

impl LostCause {
    pub const fn describe(self) -> &'static str {
        match self {
            Self::RingbufFull => "ring buffer full (raise --ring-buffer-size)",
            Self::Recursion => "program skipped by the kernel while already running on that CPU",
            Self::ReadError => "record field could not be read",
        }
    }
}

/// Converts the kernel's CLOCK_MONOTONIC timestamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    /// CLOCK_REALTIME − CLOCK_MONOTONIC, in ns, sampled once at start-up.
    offset_ns: i128,
}

impl WallClock {
    pub fn now() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Self {
            offset_ns: real - mono,
        }
    }

    /// A clock with a known offset (a recording's, or a test's).
    pub fn fixed(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// CLOCK_REALTIME − CLOCK_MONOTONIC, in ns.
    pub fn offset_ns(&self) -> i128 {
        self.offset_ns
    }

    pub fn utc(&self, mono_ns: u64) -> DateTime<Utc> {
        let ns = i64::try_from(self.offset_ns + i128::from(mono_ns)).unwrap_or(i64::MAX);
        DateTime::from_timestamp_nanos(ns)
    }
}

/// The last wall-clock second a sink formatted: formatting a date (and looking up the time
/// zone) costs more than the rest of a record, and records come many per second.
struct SecondCache(std::cell::RefCell<CachedSecond>);

struct CachedSecond {
    /// The monotonic times that fall in the cached second: `[start, end)`; empty at first.
    start: u64,
    end: u64,
    text: String,
}

impl SecondCache {
    fn new() -> Self {
        Self(std::cell::RefCell::new(CachedSecond {
            start: 0,
            end: 0,
            text: String::new(),
        }))
    }

    /// Appends the second holding `ts_ns` as `format` writes it (run only when the second
    /// changes) and returns the nanoseconds within that second. Within the cached second
    /// this is a range check and a copy: the wall-clock arithmetic runs once a second.
    fn write(
        &self,
        b: &mut Vec<u8>,
        clock: &WallClock,
        ts_ns: u64,
        format: impl FnOnce(DateTime<Utc>) -> String,
    ) -> u64 {
        let mut cache = self.0.borrow_mut();
        if !(cache.start..cache.end).contains(&ts_ns) {
            // The wall time in ns, as `WallClock::utc` computes it.
            let wall = i64::try_from(clock.offset_ns() + i128::from(ts_ns)).unwrap_or(i64::MAX);
            let nanos = wall.rem_euclid(1_000_000_000) as u64;
            // The monotonic start of this wall second; none (nothing cached) if it would
            // be before boot.
            let (start, end) = match ts_ns.checked_sub(nanos) {
                Some(start) => (start, start.saturating_add(1_000_000_000)),
                None => (0, 0),
            };
            *cache = CachedSecond {
                start,
                end,
                text: format(clock.utc(ts_ns)),
            };
            b.extend_from_slice(cache.text.as_bytes());
            return nanos;
        }
        b.extend_from_slice(cache.text.as_bytes());
        ts_ns - cache.start
    }
}

/// `n` in exactly `width` (at most 20) decimal digits, zero-padded (its low digits if
/// longer).
fn put_zero_padded(b: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut out = [b'0'; 20];
    let width = width.min(out.len());
    for d in out[..width].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    b.extend_from_slice(&out[..width]);
}

/// A transition the tracepoint cannot show, learned from netlink sock_diag: a closed
/// socket's TIME_WAIT (kept by the kernel in a separate timewait socket), and its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiagTransition {
    /// When tracer learned it (CLOCK_MONOTONIC ns).
    pub ts_ns: u64,
    pub sock: SockAddr,
    pub family: Family,
    pub saddr: IpAddr,
    pub sport: u16,
    pub daddr: IpAddr,
    pub dport: u16,
    pub old: TcpState,
    pub new: TcpState,
    /// When the TIME_WAIT timer fires (CLOCK_MONOTONIC ns), for → TIME_WAIT.
    pub expires_ns: Option<u64>,
    /// Time spent in `old`, for TIME_WAIT → CLOSE.
    pub in_old_ns: Option<u64>,
    pub owner: Option<Owner>,
}

/// CLOCK_MONOTONIC now, in ns: the clock of the kernel's `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

/// A clock's time in ns.
fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clocks used here always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

pub trait Sink {
    fn transition(
        &mut self,
        t: &Transition,
        in_old_ns: Option<u64>,
        owner: Option<&Owner>,
    ) -> io::Result<()>;
    fn event(&mut self, c: &Context, owner: Option<&Owner>) -> io::Result<()>;
    fn diag_transition(&mut self, d: &DiagTransition) -> io::Result<()>;
    fn connection(&mut self, c: &Conn) -> io::Result<()>;
    fn stuck(&mut self, r: &StuckReport) -> io::Result<()>;
    /// A connection reported stuck moved on (`new` is its new state) at `ts_ns`.
    fn unstuck(&mut self, t: &Transition, u: &Unstuck, owner: Option<&Owner>) -> io::Result<()>;
    fn stuck_summary(&mut self, groups: &[StuckGroup], threshold_ns: u64) -> io::Result<()>;
    /// `count` new losses of one cause; `total` so far for that cause.
    fn lost(&mut self, cause: LostCause, count: u64, total: u64) -> io::Result<()>;
    /// A connection drawn as a ladder (`--view ladder`; text only).
    fn ladder(&mut self, l: &crate::ladder::Ladder) -> io::Result<()>;
    /// `--summary`, at exit and on SIGUSR1.
    fn summary(&mut self, s: &crate::summary::Summary) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}

/// `1.25ms`, `52.3µs`, `3.20s`, `2m05s`: short and unambiguous.
pub fn human_ns(ns: u64) -> String {
    let mut b = Vec::with_capacity(16);
    put_human_ns(&mut b, ns);
    // Only UTF-8 is written.
    String::from_utf8_lossy(&b).into_owned()
}

/// [`human_ns`] as it was written with float formatting: the reference for the integer one,
/// and what it falls back to where the two could round differently.
fn human_ns_float(ns: u64) -> String {
    let f = ns as f64;
    match ns {
        0..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{:.1}µs", f / 1e3),
        1_000_000..=999_999_999 => format!("{:.2}ms", f / 1e6),
        1_000_000_000..=59_999_999_999 => format!("{:.2}s", f / 1e9),
        _ => {
            let s = ns / 1_000_000_000;
            if s < 3600 {
                format!("{}m{:02}s", s / 60, s % 60)
            } else {
                format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
            }
        }
    }
}

/// [`human_ns`] appended to `b`, in integers: a duration is in most text rows and timeline
/// lines, and float formatting cost more than the rest of the row.
fn put_human_ns(b: &mut Vec<u8>, ns: u64) {
    // The unit of the last digit shown (in ns), the digits after the point, the suffix.
    let (unit, decimals, suffix): (u64, usize, &[u8]) = match ns {
        0..=999 => {
            put_u64(b, ns);
            b.extend_from_slice(b"ns");
            return;
        }
        1_000..=999_999 => (100, 1, "µs".as_bytes()),
        1_000_000..=999_999_999 => (10_000, 2, b"ms"),
        1_000_000_000..=59_999_999_999 => (10_000_000, 2, b"s"),
        _ => {
            b.extend_from_slice(human_ns_float(ns).as_bytes());
            return;
        }
    };
    if ns % unit == unit / 2 {
        // Exactly half-way in decimal: which way it goes depends on the float's binary
        // value, so ask the float formatter, as before. Elsewhere the decimal value is far
        // enough from a half (at least 1e-6 relative) that the float's error cannot matter.
        b.extend_from_slice(human_ns_float(ns).as_bytes());
        return;
    }
    let r = (ns + unit / 2) / unit;
    let scale = if decimals == 1 { 10 } else { 100 };
    put_u64(b, r / scale);
    b.push(b'.');
    put_zero_padded(b, r % scale, decimals);
    b.extend_from_slice(suffix);
}

/// A timeline's offset column: `+` and the time since `start` (`?` if unknown),
/// right-aligned in 10 characters, as `{:>10}` pads (by characters: `µ` is two bytes).
fn offset_column(ts: Option<u64>, start: u64) -> Vec<u8> {
    let mut o = Vec::with_capacity(16);
    match ts {
        Some(e) => {
            o.push(b'+');
            put_human_ns(&mut o, e.saturating_sub(start));
        }
        None => o.push(b'?'),
    }
    let chars = std::str::from_utf8(&o).map_or(o.len(), |s| s.chars().count());
    let mut padded = vec![b' '; 10usize.saturating_sub(chars)];
    padded.extend_from_slice(&o);
    padded
}

/// `0x…` as [`SockAddr`]'s `Display` writes it (16 hex digits).
fn put_sock_text(b: &mut Vec<u8>, s: SockAddr) {
    b.extend_from_slice(b"0x");
    hex16(b, s.0);
}

/// [`endpoint`] appended to `b`.
fn put_endpoint(b: &mut Vec<u8>, addr: IpAddr, port: u16) {
    if addr.is_ipv6() {
        b.push(b'[');
        let _ = ip(b, addr);
        b.push(b']');
    } else {
        let _ = ip(b, addr);
    }
    b.push(b':');
    put_u64(b, port.into());
}

/// `addr:port`, an IPv6 address in brackets.
pub fn endpoint(addr: IpAddr, port: u16) -> String {
    let mut b = Vec::with_capacity(48);
    put_endpoint(&mut b, addr, port);
    // Only ASCII is written.
    String::from_utf8_lossy(&b).into_owned()
}

/// What a context event says, in a few words (`RST received`, `error ECONNREFUSED`).
fn describe(kind: ContextKind, state: Option<TcpState>, value: i32) -> String {
    let mut b = Vec::with_capacity(32);
    put_describe(&mut b, kind, state, value);
    // Only UTF-8 is written.
    String::from_utf8_lossy(&b).into_owned()
}

/// [`describe`] appended to `b`.
fn put_describe(b: &mut Vec<u8>, kind: ContextKind, state: Option<TcpState>, value: i32) {
    let in_state = |b: &mut Vec<u8>| {
        if let Some(s) = state {
            b.extend_from_slice(b" in ");
            b.extend_from_slice(s.name().as_bytes());
        }
    };
    match kind {
        ContextKind::SendReset => {
            b.extend_from_slice(b"RST sent");
            in_state(b);
        }
        ContextKind::ReceiveReset => b.extend_from_slice(b"RST received"),
        ContextKind::Retransmit if state == Some(TcpState::SynSent) => {
            b.extend_from_slice(b"SYN retransmitted");
        }
        ContextKind::Retransmit => {
            b.extend_from_slice(b"retransmit");
            in_state(b);
        }
        ContextKind::RetransmitSynack => b.extend_from_slice(b"SYN-ACK retransmitted"),
        ContextKind::Error => {
            b.extend_from_slice(b"error ");
            b.extend_from_slice(errno_name(value).as_bytes());
        }
        ContextKind::Destroy => b.extend_from_slice(b"socket freed"),
    }
}

/// Human-readable lines, tcpstates-like, plus a timeline block per finished connection.
pub struct Text<W: Write> {
    out: W,
    clock: WallClock,
    color: bool,
    timelines: bool,
    header_done: bool,
    /// The line being written (reused: no allocation per row).
    line: Vec<u8>,
    /// The timeline block being written (reused likewise).
    block: Vec<u8>,
    /// The last wall-clock second shown, as local `HH:MM:SS`.
    second: SecondCache,
}

impl<W: Write> Text<W> {
    pub fn new(out: W, clock: WallClock, color: bool, timelines: bool) -> Self {
        Self {
            out,
            clock,
            color,
            timelines,
            header_done: false,
            line: Vec::with_capacity(256),
            block: Vec::with_capacity(1024),
            second: SecondCache::new(),
        }
    }

    fn style(&self, s: Style) -> Style {
        if self.color { s } else { Style::new() }
    }

    fn state_style(&self, s: TcpState) -> Style {
        use TcpState::*;
        let c = match s {
            SynSent | SynRecv | NewSynRecv | Listen => AnsiColor::Cyan,
            Established => AnsiColor::Green,
            FinWait1 | FinWait2 | CloseWait | LastAck | Closing | TimeWait => AnsiColor::Yellow,
            Close => AnsiColor::Red,
        };
        self.style(Style::new().fg_color(Some(c.into())))
    }

    fn header(&mut self) -> io::Result<()> {
        if !self.header_done {
            let b = self.style(Style::new().bold());
            writeln!(self.out, "{b}{TEXT_HEADER}{b:#}")?;
            self.header_done = true;
        }
        Ok(())
    }

    /// TIME, SOCK, PID, COMM, LOCAL, REMOTE: the owner when known, else `*` and the task on
    /// the CPU.
    #[allow(clippy::too_many_arguments)]
    fn prefix(
        &self,
        ts_ns: u64,
        sock: Option<SockAddr>,
        owner: Option<&Owner>,
        on_cpu: Option<(u32, &Comm)>,
        local: (IpAddr, u16),
        remote: (IpAddr, u16),
    ) -> String {
        let mut b = Vec::with_capacity(128);
        self.write_prefix(&mut b, ts_ns, sock, owner, on_cpu, local, remote);
        // Only UTF-8 is written.
        String::from_utf8_lossy(&b).into_owned()
    }

    /// [`Self::prefix`] appended to `b`, without formatting machinery: a row per event.
    #[allow(clippy::too_many_arguments)]
    fn write_prefix(
        &self,
        b: &mut Vec<u8>,
        ts_ns: u64,
        sock: Option<SockAddr>,
        owner: Option<&Owner>,
        on_cpu: Option<(u32, &Comm)>,
        local: (IpAddr, u16),
        remote: (IpAddr, u16),
    ) {
        // Local `%H:%M:%S%.6f`.
        let nanos = self.second.write(b, &self.clock, ts_ns, |t| {
            t.with_timezone(&Local).format("%H:%M:%S").to_string()
        });
        b.push(b'.');
        put_zero_padded(b, nanos / 1_000, 6);
        b.push(b' ');
        let start = b.len();
        match sock {
            Some(s) => put_sock_text(b, s),
            None => b.push(b'-'),
        }
        pad(b, start, 18);
        b.push(b' ');
        // PID and COMM: the owner's, else `*` and the task on the CPU, else `-`.
        let who = match (owner, on_cpu) {
            (Some(o), _) => Some((o.pid, "", &o.comm)),
            (None, Some((pid, comm))) => Some((pid, "*", comm)),
            (None, None) => None,
        };
        let start = b.len();
        match who {
            Some((pid, _, _)) => put_u64(b, pid.into()),
            None => b.push(b'-'),
        }
        pad(b, start, 7);
        b.push(b' ');
        let start = b.len();
        match who {
            Some((_, mark, comm)) => {
                b.extend_from_slice(mark.as_bytes());
                b.extend_from_slice(comm.as_str().as_bytes());
            }
            None => b.push(b'-'),
        }
        pad(b, start, 16);
        for (addr, port) in [local, remote] {
            b.push(b' ');
            let start = b.len();
            put_endpoint(b, addr, port);
            pad(b, start, ADDR_W);
        }
    }

    /// `text` in style `s` (nothing around it without colour), as `{s}{text}{s:#}`.
    fn put_styled(&self, b: &mut Vec<u8>, s: Style, text: &[u8]) {
        if self.color {
            let _ = write!(b, "{s}");
            b.extend_from_slice(text);
            let _ = write!(b, "{s:#}");
        } else {
            b.extend_from_slice(text);
        }
    }

    /// The timeline block of a finished connection, written without `format!` or
    /// allocations (it was most of the text output's cost); the same bytes as the
    /// `format!` version it replaced (a test compares).
    fn write_block(&self, b: &mut Vec<u8>, c: &Conn) {
        // The header line, bold.
        let mut head = Vec::with_capacity(160);
        head.extend_from_slice("── ".as_bytes());
        put_sock_text(&mut head, c.sock);
        head.push(b' ');
        head.extend_from_slice(c.role.name().as_bytes());
        head.push(b' ');
        if c.role == Role::Listener {
            head.extend_from_slice(b"listening on ");
            put_endpoint(&mut head, c.saddr, c.sport);
        } else {
            put_endpoint(&mut head, c.saddr, c.sport);
            head.extend_from_slice(b" -> ");
            put_endpoint(&mut head, c.daddr, c.dport);
        }
        if let Some(o) = c.owner {
            head.extend_from_slice(b"  owner ");
            put_u64(&mut head, o.pid.into());
            head.extend_from_slice(b" (");
            head.extend_from_slice(o.comm.as_str().as_bytes());
            head.push(b')');
        }
        if let Some(k) = c.close {
            head.extend_from_slice(b"  close ");
            head.extend_from_slice(k.name().as_bytes());
        }
        head.extend_from_slice(b"  lifetime ");
        put_human_ns(&mut head, c.lifetime_ns());
        if c.incomplete {
            head.extend_from_slice(b"  (incomplete: events before or within it were not seen)");
        }
        self.put_styled(b, self.style(Style::new().bold()), &head);
        b.push(b'\n');

        let dim = self.style(Style::new().dimmed());
        let start = c.start_ns();
        // `   ` then the offset from the start (`?` if unknown), right-aligned in 10, dim.
        let offset = |b: &mut Vec<u8>, ts: Option<u64>| {
            b.extend_from_slice(b"   ");
            self.put_styled(b, dim, &offset_column(ts, start));
        };
        // States and context events, in time order (an event at the same time as a state
        // comes after it).
        let mut notes = c.notes.iter().peekable();
        let emit_notes =
            |b: &mut Vec<u8>,
             until: Option<u64>,
             notes: &mut std::iter::Peekable<std::slice::Iter<'_, Note>>| {
                while let Some(n) = notes.next_if(|n| until.is_none_or(|u| n.ts_ns < u)) {
                    offset(b, Some(n.ts_ns));
                    b.extend_from_slice(b"  ! ");
                    put_describe(b, n.kind, n.state, n.value);
                    b.push(b'\n');
                }
            };
        let mut durations = c.durations();
        for (state, entered) in c.states.iter().zip(c.entered_ns.iter()) {
            if entered.is_some() {
                emit_notes(b, entered, &mut notes);
            }
            offset(b, entered);
            b.extend_from_slice(b"  ");
            // The name left-aligned in 12, as `{:<12}` pads (a longer one as it is).
            let name = state.name().as_bytes();
            let mut padded = [b' '; 12];
            let shown: &[u8] = match padded.get_mut(..name.len()) {
                Some(p) => {
                    p.copy_from_slice(name);
                    &padded
                }
                None => name,
            };
            self.put_styled(b, self.state_style(*state), shown);
            b.push(b' ');
            match durations.next() {
                Some(Some(d)) => put_human_ns(b, d),
                Some(None) => b.push(b'?'),
                None => {}
            }
            // The line ends trimmed, as `trim_end` left it.
            while b.last() == Some(&b' ') {
                b.pop();
            }
            b.push(b'\n');
        }
        emit_notes(b, None, &mut notes);
        if c.notes_dropped > 0 {
            b.extend_from_slice(b"   ");
            b.extend_from_slice(&[b' '; 10]);
            b.extend_from_slice("  ! … ".as_bytes());
            put_u64(b, c.notes_dropped.into());
            b.extend_from_slice(b" more events not kept\n");
        }
        if let Some(TimeWait {
            confirmed: true,
            expires_ns,
        }) = c.time_wait
        {
            b.extend_from_slice(b"   ");
            b.extend_from_slice(&offset_column(Some(c.end_ns()), start));
            b.extend_from_slice(b"  ");
            self.put_styled(b, self.state_style(TcpState::TimeWait), b"TIME_WAIT   ");
            b.push(b' ');
            if let Some(e) = expires_ns {
                b.extend_from_slice(b"(expires in ");
                put_human_ns(b, e.saturating_sub(c.end_ns()));
                b.push(b')');
            }
            b.push(b'\n');
        }
    }

    fn state_pair(&self, old: TcpState, new: TcpState) -> String {
        let (os, ns) = (self.state_style(old), self.state_style(new));
        // Pad the plain names, then wrap them in colour, so columns line up either way.
        let width = old.name().len() + 4 + new.name().len();
        format!(
            "{os}{old}{os:#} -> {ns}{new}{ns:#}{}",
            " ".repeat(28usize.saturating_sub(width))
        )
    }
}

/// Endpoint column width: any IPv4 endpoint and most IPv6 ones; longer ones push the row.
const ADDR_W: usize = 26;
const TEXT_HEADER: &str = "TIME            SOCK               PID     COMM             LOCAL                      REMOTE                     TRANSITION                   IN OLD";

impl<W: Write> Sink for Text<W> {
    fn transition(
        &mut self,
        t: &Transition,
        in_old_ns: Option<u64>,
        owner: Option<&Owner>,
    ) -> io::Result<()> {
        self.header()?;
        let mut b = std::mem::take(&mut self.line);
        b.clear();
        self.write_prefix(
            &mut b,
            t.ts_ns,
            Some(t.sock),
            owner,
            Some((t.task.pid, &t.task.comm)),
            (t.saddr, t.sport),
            (t.daddr, t.dport),
        );
        b.push(b' ');
        if self.color {
            b.extend_from_slice(self.state_pair(t.old, t.new).as_bytes());
        } else {
            let start = b.len();
            b.extend_from_slice(t.old.name().as_bytes());
            b.extend_from_slice(b" -> ");
            b.extend_from_slice(t.new.name().as_bytes());
            pad(&mut b, start, 28);
        }
        b.push(b' ');
        match in_old_ns {
            Some(ns) => put_human_ns(&mut b, ns),
            None => b.push(b'-'),
        }
        b.push(b'\n');
        let r = self.out.write_all(&b);
        self.line = b;
        r
    }

    fn event(&mut self, c: &Context, owner: Option<&Owner>) -> io::Result<()> {
        if c.kind == ContextKind::Destroy {
            // One per socket, right after its CLOSE: shown in the timeline block, not here.
            return Ok(());
        }
        self.header()?;
        let prefix = self.prefix(
            c.ts_ns,
            c.sock,
            owner,
            Some((c.task.pid, &c.task.comm)),
            (c.saddr, c.sport),
            (c.daddr, c.dport),
        );
        let w = self.style(Style::new().fg_color(Some(AnsiColor::Magenta.into())));
        writeln!(
            self.out,
            "{prefix} {w}! {}{w:#}",
            describe(c.kind, c.state, c.value)
        )
    }

    fn diag_transition(&mut self, d: &DiagTransition) -> io::Result<()> {
        self.header()?;
        let prefix = self.prefix(
            d.ts_ns,
            Some(d.sock),
            d.owner.as_ref(),
            None,
            (d.saddr, d.sport),
            (d.daddr, d.dport),
        );
        let pair = self.state_pair(d.old, d.new);
        let note = match d.expires_ns {
            Some(e) => format!(
                "(sock_diag) expires in {}",
                human_ns(e.saturating_sub(d.ts_ns))
            ),
            None => "(sock_diag) timewait socket gone".into(),
        };
        writeln!(self.out, "{prefix} {pair} {note}")
    }

    fn connection(&mut self, c: &Conn) -> io::Result<()> {
        if !self.timelines {
            return Ok(());
        }
        let mut b = std::mem::take(&mut self.block);
        b.clear();
        self.write_block(&mut b, c);
        let r = self.out.write_all(&b);
        self.block = b;
        r
    }

    fn stuck(&mut self, r: &StuckReport) -> io::Result<()> {
        let c = &r.conn;
        let w = self.style(Style::new().fg_color(Some(AnsiColor::Red.into())).bold());
        let sock = if c.sock.0 == 0 {
            "(from dump)".to_string()
        } else {
            c.sock.to_string()
        };
        let owner = c.owner.map_or_else(
            || "owner unknown".to_string(),
            |o| format!("owner {} ({})", o.pid, o.comm),
        );
        let at_least = if r.age_at_least { "at least " } else { "" };
        let again = if r.report > 1 {
            format!(" (report {})", r.report)
        } else {
            String::new()
        };
        let path: Vec<&str> = c.states.iter().map(|s| s.name()).collect();
        writeln!(
            self.out,
            "{w}STUCK{w:#} {sock} {} -> {} in {} for {at_least}{}  {owner}{again}\n      so far: {}",
            endpoint(c.saddr, c.sport),
            endpoint(c.daddr, c.dport),
            r.state,
            human_ns(r.age_ns),
            path.join(" -> "),
        )
    }

    fn unstuck(&mut self, t: &Transition, u: &Unstuck, owner: Option<&Owner>) -> io::Result<()> {
        let g = self.style(Style::new().fg_color(Some(AnsiColor::Green.into())).bold());
        let owner = owner.map_or_else(String::new, |o| format!("  owner {} ({})", o.pid, o.comm));
        let at_least = if u.age_at_least { "at least " } else { "" };
        writeln!(
            self.out,
            "{g}MOVED{g:#} {} {} -> {}: {} -> {} after {at_least}{}{owner}",
            t.sock,
            endpoint(t.saddr, t.sport),
            endpoint(t.daddr, t.dport),
            u.state,
            t.new,
            human_ns(u.age_ns),
        )
    }

    fn stuck_summary(&mut self, groups: &[StuckGroup], threshold_ns: u64) -> io::Result<()> {
        let b = self.style(Style::new().bold());
        if groups.is_empty() {
            return writeln!(
                self.out,
                "{b}No connection stuck for {} or more.{b:#}",
                human_ns(threshold_ns)
            );
        }
        writeln!(
            self.out,
            "{b}Stuck connections ({} or more), by owner and state:{b:#}",
            human_ns(threshold_ns)
        )?;
        for g in groups {
            let who = g.owner.map_or_else(
                || "owner unknown:".to_string(),
                |o| format!("pid {} ({})", o.pid, o.comm),
            );
            let at_least = if g.oldest_at_least { "at least " } else { "" };
            writeln!(
                self.out,
                "  {who} holds {} socket{} in {}, oldest {at_least}{}",
                g.count,
                if g.count == 1 { "" } else { "s" },
                g.state,
                human_ns(g.oldest_ns)
            )?;
        }
        Ok(())
    }

    fn lost(&mut self, cause: LostCause, count: u64, total: u64) -> io::Result<()> {
        let w = self.style(Style::new().fg_color(Some(AnsiColor::Red.into())).bold());
        writeln!(
            self.out,
            "{w}LOST {count} events ({}), {total} so far{w:#}",
            cause.describe()
        )
    }

    fn ladder(&mut self, l: &crate::ladder::Ladder) -> io::Result<()> {
        self.out.write_all(crate::ladder::render_text(l).as_bytes())
    }

    fn summary(&mut self, s: &crate::summary::Summary) -> io::Result<()> {
        self.out.write_all(s.render_text().as_bytes())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The JSON Lines schema version (`"v"` in every record). Bumped when a key changes meaning or
/// disappears; adding keys does not bump it.
pub const SCHEMA_VERSION: u32 = 1;

/// Bytes of records [`Json`] collects before writing them out.
const JSON_CHUNK: usize = 64 << 10;

/// JSON Lines, one object per record (schema in the README).
pub struct Json<W: Write> {
    out: W,
    clock: WallClock,
    /// Records not yet written: each is formatted straight into it, and it goes to `out`
    /// in chunks of [`JSON_CHUNK`] (one copy less than a record buffer plus a `BufWriter`).
    buf: Vec<u8>,
    /// The last second formatted (`2026-11-23T22:01:09`).
    second: SecondCache,
    owners: OwnerCache,
}

impl<W: Write> Json<W> {
    pub fn new(out: W, clock: WallClock) -> Self {
        Self {
            out,
            clock,
            buf: Vec::with_capacity(JSON_CHUNK + 4096),
            second: SecondCache::new(),
            owners: OwnerCache::new(),
        }
    }

    /// Everything written so far, with what is still buffered.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.flush_buf()?;
        Ok(self.out)
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Appends one record, written by `f` (a failed one leaves nothing behind), and writes
    /// the buffer out once it holds a chunk.
    fn record(&mut self, f: impl FnOnce(&Self, &mut Vec<u8>) -> io::Result<()>) -> io::Result<()> {
        let mut b = std::mem::take(&mut self.buf);
        let start = b.len();
        let r = f(self, &mut b);
        if r.is_err() {
            b.truncate(start);
        }
        self.buf = b;
        r?;
        if self.buf.len() >= JSON_CHUNK {
            self.flush_buf()?;
        }
        Ok(())
    }

    /// One record through serde: `{"v":1,…}` then a newline. Every record leads with the
    /// schema version.
    fn emit<T: Serialize>(&mut self, v: &T) -> io::Result<()> {
        /// `{"v":1,` with [`SCHEMA_VERSION`].
        const LEAD: &[u8] = b"{\"v\":1,";
        const _: () = assert!(SCHEMA_VERSION == 1, "update LEAD");
        self.record(|_, b| {
            let start = b.len();
            serde_json::to_writer(&mut *b, v)?;
            b.push(b'\n');
            // `v` is a non-empty struct, serialised as `{…}`: its `{` gives way to the version.
            if b.get(start) == Some(&b'{') {
                b.splice(start..=start, LEAD.iter().copied());
            }
            Ok(())
        })
    }

    /// A transition record's keys from its start through `in_old_ns`, the same for both
    /// sources.
    fn transition_head(
        &self,
        b: &mut Vec<u8>,
        ts_ns: u64,
        sock: SockAddr,
        (family, saddr, sport, daddr, dport): (Family, IpAddr, u16, IpAddr, u16),
        (old, new): (TcpState, TcpState),
        in_old_ns: Option<u64>,
    ) -> io::Result<()> {
        b.extend_from_slice(b"{\"v\":1,\"type\":\"transition\",\"time\":\"");
        self.write_time(b, ts_ns);
        b.extend_from_slice(b"\",\"ts_ns\":");
        put_u64(b, ts_ns);
        b.extend_from_slice(b",\"sock\":");
        put_sock(b, sock);
        put_tuple(b, Some(family), saddr, sport, daddr, dport)?;
        b.extend_from_slice(b",\"old\":\"");
        b.extend_from_slice(old.name().as_bytes());
        b.extend_from_slice(b"\",\"new\":\"");
        b.extend_from_slice(new.name().as_bytes());
        b.extend_from_slice(b"\",\"in_old_ns\":");
        put_opt_u64(b, in_old_ns);
        Ok(())
    }

    /// The transition record, written by hand: it is most of the output at high rates, and
    /// this is several times cheaper than serde's generic path (no per-field escaping of
    /// known-safe keys, no allocations). Same bytes as [`TransitionJson`] (a test compares).
    fn fast_transition(
        &mut self,
        t: &Transition,
        in_old_ns: Option<u64>,
        owner: Option<&Owner>,
    ) -> io::Result<()> {
        self.record(|this, b| {
            this.transition_head(
                b,
                t.ts_ns,
                t.sock,
                (t.family, t.saddr, t.sport, t.daddr, t.dport),
                (t.old, t.new),
                in_old_ns,
            )?;
            put_task(b, &t.task, t.cpu)?;
            b.extend_from_slice(b",\"owner\":");
            this.owners.put(b, owner)?;
            b.extend_from_slice(b",\"source\":\"tracepoint\"}\n");
            Ok(())
        })
    }

    /// A transition learned from sock_diag (→ TIME_WAIT, TIME_WAIT → CLOSE: two per active
    /// closer on a busy host) by hand, as [`Self::fast_transition`]; the same bytes as
    /// [`TransitionJson`] with `source` `sock_diag` (a test compares).
    fn fast_diag_transition(&mut self, d: &DiagTransition) -> io::Result<()> {
        self.record(|this, b| {
            this.transition_head(
                b,
                d.ts_ns,
                d.sock,
                (d.family, d.saddr, d.sport, d.daddr, d.dport),
                (d.old, d.new),
                d.in_old_ns,
            )?;
            b.extend_from_slice(
                b",\"pid\":null,\"tid\":null,\"comm\":null,\"cpu\":null,\"owner\":",
            );
            this.owners.put(b, d.owner.as_ref())?;
            b.extend_from_slice(b",\"source\":\"sock_diag\"");
            if let Some(e) = d.expires_ns {
                b.extend_from_slice(b",\"expires_ns\":");
                put_u64(b, e);
            }
            b.extend_from_slice(b"}\n");
            Ok(())
        })
    }

    /// The context event record by hand, as [`Self::fast_transition`]; same bytes as
    /// [`EventJson`] (a test compares).
    fn fast_event(&mut self, c: &Context, owner: Option<&Owner>) -> io::Result<()> {
        self.record(|this, b| {
            b.extend_from_slice(b"{\"v\":1,\"type\":\"event\",\"kind\":\"");
            b.extend_from_slice(c.kind.name().as_bytes());
            b.extend_from_slice(b"\",\"time\":\"");
            this.write_time(b, c.ts_ns);
            b.extend_from_slice(b"\",\"ts_ns\":");
            put_u64(b, c.ts_ns);
            b.extend_from_slice(b",\"sock\":");
            match c.sock {
                Some(s) => put_sock(b, s),
                None => b.extend_from_slice(b"null"),
            }
            put_tuple(b, c.family, c.saddr, c.sport, c.daddr, c.dport)?;
            b.extend_from_slice(b",\"state\":");
            put_opt_name(b, c.state.map(TcpState::name));
            put_errno(b, c.kind, c.value)?;
            b.extend_from_slice(b",\"value\":");
            put_i64(b, c.value.into());
            put_task(b, &c.task, c.cpu)?;
            b.extend_from_slice(b",\"owner\":");
            this.owners.put(b, owner)?;
            b.extend_from_slice(b"}\n");
            Ok(())
        })
    }

    /// The connection record by hand (one per socket, and the longest record); same bytes
    /// as [`ConnectionJson`] (a test compares).
    fn fast_connection(&mut self, c: &Conn) -> io::Result<()> {
        self.record(|this, b| {
            b.extend_from_slice(b"{\"v\":1,\"type\":\"connection\",\"sock\":");
            put_sock(b, c.sock);
            put_tuple(b, Some(c.family), c.saddr, c.sport, c.daddr, c.dport)?;
            b.extend_from_slice(b",\"role\":\"");
            b.extend_from_slice(c.role.name().as_bytes());
            b.extend_from_slice(b"\",\"states\":[");
            for (i, s) in c.states.iter().enumerate() {
                if i > 0 {
                    b.push(b',');
                }
                put_name(b, s.name());
            }
            b.extend_from_slice(b"],\"durations_ns\":[");
            for (i, d) in c.durations().enumerate() {
                if i > 0 {
                    b.push(b',');
                }
                put_opt_u64(b, d);
            }
            b.extend_from_slice(b"],\"start_ns\":");
            put_u64(b, c.start_ns());
            b.extend_from_slice(b",\"end_ns\":");
            put_u64(b, c.end_ns());
            b.extend_from_slice(b",\"lifetime_ns\":");
            put_u64(b, c.lifetime_ns());
            b.extend_from_slice(b",\"start_time\":\"");
            this.write_time(b, c.start_ns());
            b.extend_from_slice(b"\",\"incomplete\":");
            b.extend_from_slice(if c.incomplete { b"true" } else { b"false" });
            b.extend_from_slice(b",\"owner\":");
            this.owners.put(b, c.owner.as_ref())?;
            b.extend_from_slice(b",\"close\":");
            put_opt_name(b, c.close.map(CloseClass::name));
            b.extend_from_slice(b",\"events\":[");
            for (i, n) in c.notes.iter().enumerate() {
                if i > 0 {
                    b.push(b',');
                }
                b.extend_from_slice(b"{\"kind\":\"");
                b.extend_from_slice(n.kind.name().as_bytes());
                b.extend_from_slice(b"\",\"ts_ns\":");
                put_u64(b, n.ts_ns);
                b.extend_from_slice(b",\"state\":");
                put_opt_name(b, n.state.map(TcpState::name));
                put_errno(b, n.kind, n.value)?;
                b.extend_from_slice(b",\"value\":");
                put_i64(b, n.value.into());
                b.push(b'}');
            }
            for (key, v) in [
                (b"],\"events_dropped\":".as_slice(), c.notes_dropped),
                (b",\"retransmits\":", c.retransmits),
                (b",\"syn_retransmits\":", c.syn_retransmits),
                (b",\"synack_retransmits\":", c.synack_retransmits),
                (b",\"resets_sent\":", c.resets_sent),
                (b",\"resets_received\":", c.resets_received),
            ] {
                b.extend_from_slice(key);
                put_u64(b, v.into());
            }
            b.extend_from_slice(b",\"error\":");
            match c.error {
                Some(e) => put_str(b, &errno_name(e))?,
                None => b.extend_from_slice(b"null"),
            }
            b.extend_from_slice(b",\"time_wait\":");
            match c.time_wait {
                Some(tw) => {
                    b.extend_from_slice(if tw.confirmed {
                        b"{\"confirmed\":true,\"expires_ns\":"
                    } else {
                        b"{\"confirmed\":false,\"expires_ns\":"
                    });
                    put_opt_u64(b, tw.expires_ns);
                    b.push(b'}');
                }
                None => b.extend_from_slice(b"null"),
            }
            b.extend_from_slice(b",\"seen_from\":\"");
            b.extend_from_slice(c.seen_from.name().as_bytes());
            b.extend_from_slice(b"\"}\n");
            Ok(())
        })
    }

    /// [`Self::time`] appended to `b` without allocating.
    fn write_time(&self, b: &mut Vec<u8>, ts_ns: u64) {
        let nanos = self.second.write(b, &self.clock, ts_ns, |t| {
            t.format("%Y-%m-%dT%H:%M:%S").to_string()
        });
        b.push(b'.');
        put_zero_padded(b, nanos, 9);
        b.push(b'Z');
    }

    /// RFC 3339 UTC with nanoseconds, as `to_rfc3339_opts(Nanos, true)` writes it.
    fn time(&self, ts_ns: u64) -> String {
        let mut b = Vec::with_capacity(32);
        self.write_time(&mut b, ts_ns);
        // Only ASCII is written.
        String::from_utf8_lossy(&b).into_owned()
    }
}

/// Spaces after what was written since `start`, up to `width` characters (as `{:<width}`
/// pads: by characters, not bytes).
fn pad(b: &mut Vec<u8>, start: usize, width: usize) {
    let written = &b[start..];
    let chars = if written.is_ascii() {
        written.len()
    } else {
        String::from_utf8_lossy(written).chars().count()
    };
    b.resize(b.len() + width.saturating_sub(chars), b' ');
}

/// `n` as 16 lowercase hex digits (put together on the stack and appended at once: one
/// capacity check instead of sixteen).
fn hex16(b: &mut Vec<u8>, n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, d) in out.iter_mut().enumerate() {
        *d = DIGITS[((n >> ((15 - i) * 4)) & 0xf) as usize];
    }
    b.extend_from_slice(&out);
}

// ---- Hand-written JSON pieces. Each writes what serde_json writes for the same value. ----

fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn put_i64(b: &mut Vec<u8>, v: i64) {
    b.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn put_opt_u64(b: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(v) => put_u64(b, v),
        None => b.extend_from_slice(b"null"),
    }
}

/// `s` between quotes, as is: a name of ours (a state, a kind, a class) or a string already
/// found [`plain`], which JSON needs no escapes for.
fn put_name(b: &mut Vec<u8>, name: &str) {
    b.push(b'"');
    b.extend_from_slice(name.as_bytes());
    b.push(b'"');
}

fn put_opt_name(b: &mut Vec<u8>, name: Option<&str>) {
    match name {
        Some(n) => put_name(b, n),
        None => b.extend_from_slice(b"null"),
    }
}

/// `"0x…"`: a socket address as [`SockAddr`]'s `Display` writes it.
fn put_sock(b: &mut Vec<u8>, s: SockAddr) {
    b.push(b'"');
    put_sock_text(b, s);
    b.push(b'"');
}

/// Bytes a JSON string may hold as they are: printable ASCII but `"` and `\\`.
const PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0x20;
    while c < 0x7f {
        t[c] = c != b'"' as usize && c != b'\\' as usize;
        c += 1;
    }
    t
};

/// Whether JSON can hold `bytes` as they are (see [`PLAIN`]).
fn plain(bytes: &[u8]) -> bool {
    bytes.iter().all(|&c| PLAIN[usize::from(c)])
}

/// `s` as a JSON string. The common case (plain ASCII) is copied; anything else goes
/// through serde_json's escaping.
fn put_str(b: &mut Vec<u8>, s: &str) -> io::Result<()> {
    if plain(s.as_bytes()) {
        put_name(b, s);
        Ok(())
    } else {
        Ok(serde_json::to_writer(b, s)?)
    }
}

/// A task name as a JSON string ([`Comm::as_str`]). Nearly every one is plain ASCII: that is
/// checked and copied in one pass, without UTF-8 validation or a string; anything else goes
/// through [`Comm::as_str`] and serde's escaping.
fn put_comm(b: &mut Vec<u8>, c: &Comm) -> io::Result<()> {
    // Quotes and up to 16 bytes, put together on the stack as they are checked.
    let mut out = [b'"'; 18];
    let mut n = 0;
    for &x in &c.0 {
        if x == 0 {
            break;
        }
        if !PLAIN[usize::from(x)] {
            return put_str(b, &c.as_str());
        }
        n += 1;
        out[n] = x;
    }
    b.extend_from_slice(&out[..n + 2]);
    Ok(())
}

fn put_owner(b: &mut Vec<u8>, owner: Option<&Owner>) -> io::Result<()> {
    let Some(o) = owner else {
        b.extend_from_slice(b"null");
        return Ok(());
    };
    b.extend_from_slice(b"{\"pid\":");
    put_u64(b, o.pid.into());
    b.extend_from_slice(b",\"comm\":");
    put_comm(b, &o.comm)?;
    b.extend_from_slice(b",\"uid\":");
    put_u64(b, o.uid.into());
    b.extend_from_slice(b",\"cgroup_id\":");
    put_u64(b, o.cgroup_id);
    b.extend_from_slice(b",\"source\":\"");
    b.extend_from_slice(match o.source {
        OwnerSource::Event => b"event".as_slice(),
        OwnerSource::Inherited => b"inherited",
        OwnerSource::Procfs => b"procfs",
    });
    b.extend_from_slice(b"\"}");
    Ok(())
}

/// `,"pid":…,"tid":…,"comm":…,"cpu":…`: the task on the CPU (the owner follows it).
fn put_task(b: &mut Vec<u8>, task: &Task, cpu: u32) -> io::Result<()> {
    b.extend_from_slice(b",\"pid\":");
    put_u64(b, task.pid.into());
    b.extend_from_slice(b",\"tid\":");
    put_u64(b, task.tid.into());
    b.extend_from_slice(b",\"comm\":");
    put_comm(b, &task.comm)?;
    b.extend_from_slice(b",\"cpu\":");
    put_u64(b, cpu.into());
    Ok(())
}

/// Owner objects as [`put_owner`] wrote them, in slots picked by pid and source: a
/// process's sockets repeat its owner in every record (an accepted socket's inherited one
/// beside it), so most records copy it instead of formatting five fields again.
struct OwnerCache(std::cell::RefCell<[(Option<Owner>, Vec<u8>); OWNER_SLOTS]>);

const OWNER_SLOTS: usize = 16;

impl OwnerCache {
    fn new() -> Self {
        Self(std::cell::RefCell::new(std::array::from_fn(|_| {
            (None, Vec::new())
        })))
    }

    /// Appends `owner` (or `null`) as [`put_owner`] writes it.
    fn put(&self, b: &mut Vec<u8>, owner: Option<&Owner>) -> io::Result<()> {
        let Some(o) = owner else {
            b.extend_from_slice(b"null");
            return Ok(());
        };
        let mut slots = self.0.borrow_mut();
        let i = (o.pid as usize * 3 + o.source as usize) % OWNER_SLOTS;
        let (cached, bytes) = &mut slots[i];
        if *cached != Some(*o) {
            bytes.clear();
            put_owner(bytes, Some(o))?;
            *cached = Some(*o);
        }
        b.extend_from_slice(bytes);
        Ok(())
    }
}

/// `,"family":…,"saddr":…,"sport":…,"daddr":…,"dport":…`
fn put_tuple(
    b: &mut Vec<u8>,
    family: Option<Family>,
    saddr: IpAddr,
    sport: u16,
    daddr: IpAddr,
    dport: u16,
) -> io::Result<()> {
    b.extend_from_slice(match family {
        Some(Family::Ipv4) => b",\"family\":\"ipv4\",\"saddr\":\"".as_slice(),
        Some(Family::Ipv6) => b",\"family\":\"ipv6\",\"saddr\":\"",
        None => b",\"family\":null,\"saddr\":\"",
    });
    ip(b, saddr)?;
    b.extend_from_slice(b"\",\"sport\":");
    put_u64(b, sport.into());
    b.extend_from_slice(b",\"daddr\":\"");
    ip(b, daddr)?;
    b.extend_from_slice(b"\",\"dport\":");
    put_u64(b, dport.into());
    Ok(())
}

/// `,"errno":"…"` for error reports (skipped otherwise, as serde skips `None`).
fn put_errno(b: &mut Vec<u8>, kind: ContextKind, value: i32) -> io::Result<()> {
    if let Some(e) = errno_of(kind, value) {
        b.extend_from_slice(b",\"errno\":");
        put_str(b, &e)?;
    }
    Ok(())
}

/// Each byte value's decimal digits (unused ones zero) and their count.
const OCTETS: [[u8; 4]; 256] = {
    let mut t = [[0u8; 4]; 256];
    let mut v = 0;
    while v < 256 {
        let d = [(v / 100) as u8, (v / 10 % 10) as u8, (v % 10) as u8];
        t[v] = if v >= 100 {
            [b'0' + d[0], b'0' + d[1], b'0' + d[2], 3]
        } else if v >= 10 {
            [b'0' + d[1], b'0' + d[2], 0, 2]
        } else {
            [b'0' + d[2], 0, 0, 1]
        };
        v += 1;
    }
    t
};

/// An address as its `Display` writes it; IPv4 without the formatting machinery.
fn ip(b: &mut Vec<u8>, a: IpAddr) -> io::Result<()> {
    match a {
        IpAddr::V4(v4) => {
            // At most 15 bytes, put together on the stack from the octets' digits
            // ([`OCTETS`]) and appended at once.
            let mut out = [0u8; 16];
            let mut n = 0;
            for o in v4.octets() {
                let [d0, d1, d2, len] = OCTETS[usize::from(o)];
                out[n..n + 4].copy_from_slice(&[d0, d1, d2, b'.']);
                n += usize::from(len);
                out[n] = b'.';
                n += 1;
            }
            b.extend_from_slice(&out[..n - 1]);
            Ok(())
        }
        IpAddr::V6(v6) => write!(b, "{v6}"),
    }
}

/// The transition record as serde writes it: the reference for the hand-written ones.
#[cfg(test)]
#[derive(Serialize)]
struct TransitionJson<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    time: String,
    ts_ns: u64,
    sock: SockAddr,
    family: Family,
    saddr: IpAddr,
    sport: u16,
    daddr: IpAddr,
    dport: u16,
    old: TcpState,
    new: TcpState,
    in_old_ns: Option<u64>,
    pid: Option<u32>,
    tid: Option<u32>,
    comm: Option<&'a Comm>,
    cpu: Option<u32>,
    owner: Option<&'a Owner>,
    /// `tracepoint` or `sock_diag`.
    source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_ns: Option<u64>,
}

#[cfg(test)]
#[derive(Serialize)]
struct EventJson<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    kind: ContextKind,
    time: String,
    ts_ns: u64,
    sock: Option<SockAddr>,
    family: Option<Family>,
    saddr: IpAddr,
    sport: u16,
    daddr: IpAddr,
    dport: u16,
    state: Option<TcpState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errno: Option<String>,
    value: i32,
    pid: u32,
    tid: u32,
    comm: &'a Comm,
    cpu: u32,
    owner: Option<&'a Owner>,
}

#[cfg(test)]
#[derive(Serialize)]
struct NoteJson {
    kind: ContextKind,
    ts_ns: u64,
    state: Option<TcpState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errno: Option<String>,
    value: i32,
}

#[cfg(test)]
#[derive(Serialize)]
struct ConnectionJson<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    sock: SockAddr,
    family: Family,
    saddr: IpAddr,
    sport: u16,
    daddr: IpAddr,
    dport: u16,
    role: Role,
    states: &'a [TcpState],
    durations_ns: Vec<Option<u64>>,
    start_ns: u64,
    end_ns: u64,
    lifetime_ns: u64,
    start_time: String,
    incomplete: bool,
    owner: Option<&'a Owner>,
    close: Option<CloseClass>,
    events: Vec<NoteJson>,
    events_dropped: u32,
    retransmits: u32,
    syn_retransmits: u32,
    synack_retransmits: u32,
    resets_sent: u32,
    resets_received: u32,
    error: Option<String>,
    time_wait: Option<TimeWait>,
    seen_from: SeenFrom,
}

#[derive(Serialize)]
struct StuckJson<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    sock: Option<SockAddr>,
    state: TcpState,
    age_ns: u64,
    /// The socket predates the tracer: it has been stuck at least `age_ns`.
    age_at_least: bool,
    report: u32,
    owner: Option<&'a Owner>,
    family: Family,
    saddr: IpAddr,
    sport: u16,
    daddr: IpAddr,
    dport: u16,
    role: Role,
    states: &'a [TcpState],
    seen_from: SeenFrom,
}

#[derive(Serialize)]
struct UnstuckJson<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    time: String,
    ts_ns: u64,
    sock: SockAddr,
    state: TcpState,
    new: TcpState,
    age_ns: u64,
    age_at_least: bool,
    reports: u32,
    owner: Option<&'a Owner>,
    family: Family,
    saddr: IpAddr,
    sport: u16,
    daddr: IpAddr,
    dport: u16,
}

#[derive(Serialize)]
struct StuckSummaryJson<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    threshold_ns: u64,
    groups: &'a [StuckGroup],
}

#[derive(Serialize)]
struct LostJson {
    #[serde(rename = "type")]
    ty: &'static str,
    count: u64,
    cause: LostCause,
    total: u64,
}

fn errno_of(kind: ContextKind, value: i32) -> Option<String> {
    (kind == ContextKind::Error).then(|| errno_name(value))
}

impl<W: Write> Json<W> {
    /// The transition record through serde: the reference [`Self::fast_transition`] must match.
    #[cfg(test)]
    fn serde_transition(
        &mut self,
        t: &Transition,
        in_old_ns: Option<u64>,
        owner: Option<&Owner>,
    ) -> io::Result<()> {
        let rec = TransitionJson {
            ty: "transition",
            time: self.time(t.ts_ns),
            ts_ns: t.ts_ns,
            sock: t.sock,
            family: t.family,
            saddr: t.saddr,
            sport: t.sport,
            daddr: t.daddr,
            dport: t.dport,
            old: t.old,
            new: t.new,
            in_old_ns,
            pid: Some(t.task.pid),
            tid: Some(t.task.tid),
            comm: Some(&t.task.comm),
            cpu: Some(t.cpu),
            owner,
            source: "tracepoint",
            expires_ns: None,
        };
        self.emit(&rec)
    }

    /// The serde reference of [`Self::fast_diag_transition`].
    #[cfg(test)]
    fn serde_diag_transition(&mut self, d: &DiagTransition) -> io::Result<()> {
        let rec = TransitionJson {
            ty: "transition",
            time: self.time(d.ts_ns),
            ts_ns: d.ts_ns,
            sock: d.sock,
            family: d.family,
            saddr: d.saddr,
            sport: d.sport,
            daddr: d.daddr,
            dport: d.dport,
            old: d.old,
            new: d.new,
            in_old_ns: d.in_old_ns,
            pid: None,
            tid: None,
            comm: None,
            cpu: None,
            owner: d.owner.as_ref(),
            source: "sock_diag",
            expires_ns: d.expires_ns,
        };
        self.emit(&rec)
    }

    /// The serde reference of [`Self::fast_event`].
    #[cfg(test)]
    fn serde_event(&mut self, c: &Context, owner: Option<&Owner>) -> io::Result<()> {
        let rec = EventJson {
            ty: "event",
            kind: c.kind,
            time: self.time(c.ts_ns),
            ts_ns: c.ts_ns,
            sock: c.sock,
            family: c.family,
            saddr: c.saddr,
            sport: c.sport,
            daddr: c.daddr,
            dport: c.dport,
            state: c.state,
            errno: errno_of(c.kind, c.value),
            value: c.value,
            pid: c.task.pid,
            tid: c.task.tid,
            comm: &c.task.comm,
            cpu: c.cpu,
            owner,
        };
        self.emit(&rec)
    }

    /// The serde reference of [`Self::fast_connection`].
    #[cfg(test)]
    fn serde_connection(&mut self, c: &Conn) -> io::Result<()> {
        let rec = ConnectionJson {
            ty: "connection",
            sock: c.sock,
            family: c.family,
            saddr: c.saddr,
            sport: c.sport,
            daddr: c.daddr,
            dport: c.dport,
            role: c.role,
            states: &c.states,
            durations_ns: c.durations_ns(),
            start_ns: c.start_ns(),
            end_ns: c.end_ns(),
            lifetime_ns: c.lifetime_ns(),
            start_time: self.time(c.start_ns()),
            incomplete: c.incomplete,
            owner: c.owner.as_ref(),
            close: c.close,
            events: c
                .notes
                .iter()
                .map(|n| NoteJson {
                    kind: n.kind,
                    ts_ns: n.ts_ns,
                    state: n.state,
                    errno: errno_of(n.kind, n.value),
                    value: n.value,
                })
                .collect(),
            events_dropped: c.notes_dropped,
            retransmits: c.retransmits,
            syn_retransmits: c.syn_retransmits,
            synack_retransmits: c.synack_retransmits,
            resets_sent: c.resets_sent,
            resets_received: c.resets_received,
            error: c.error.map(errno_name),
            time_wait: c.time_wait,
            seen_from: c.seen_from,
        };
        self.emit(&rec)
    }
}

impl<W: Write> Sink for Json<W> {
    fn transition(
        &mut self,
        t: &Transition,
        in_old_ns: Option<u64>,
        owner: Option<&Owner>,
    ) -> io::Result<()> {
        self.fast_transition(t, in_old_ns, owner)
    }

    fn event(&mut self, c: &Context, owner: Option<&Owner>) -> io::Result<()> {
        self.fast_event(c, owner)
    }

    fn diag_transition(&mut self, d: &DiagTransition) -> io::Result<()> {
        self.fast_diag_transition(d)
    }

    fn connection(&mut self, c: &Conn) -> io::Result<()> {
        self.fast_connection(c)
    }

    fn stuck(&mut self, r: &StuckReport) -> io::Result<()> {
        let c = &r.conn;
        self.emit(&StuckJson {
            ty: "stuck",
            sock: (c.sock.0 != 0).then_some(c.sock),
            state: r.state,
            age_ns: r.age_ns,
            age_at_least: r.age_at_least,
            report: r.report,
            owner: c.owner.as_ref(),
            family: c.family,
            saddr: c.saddr,
            sport: c.sport,
            daddr: c.daddr,
            dport: c.dport,
            role: c.role,
            states: &c.states,
            seen_from: c.seen_from,
        })
    }

    fn unstuck(&mut self, t: &Transition, u: &Unstuck, owner: Option<&Owner>) -> io::Result<()> {
        self.emit(&UnstuckJson {
            ty: "unstuck",
            time: self.time(t.ts_ns),
            ts_ns: t.ts_ns,
            sock: t.sock,
            state: u.state,
            new: t.new,
            age_ns: u.age_ns,
            age_at_least: u.age_at_least,
            reports: u.reports,
            owner,
            family: t.family,
            saddr: t.saddr,
            sport: t.sport,
            daddr: t.daddr,
            dport: t.dport,
        })
    }

    fn stuck_summary(&mut self, groups: &[StuckGroup], threshold_ns: u64) -> io::Result<()> {
        self.emit(&StuckSummaryJson {
            ty: "stuck_summary",
            threshold_ns,
            groups,
        })
    }

    fn lost(&mut self, cause: LostCause, count: u64, total: u64) -> io::Result<()> {
        self.emit(&LostJson {
            ty: "lost",
            count,
            cause,
            total,
        })
    }

    /// The ladder view is text only (the CLI refuses `--view ladder -o json`); the JSON
    /// connection records carry the same states and times.
    fn ladder(&mut self, _l: &crate::ladder::Ladder) -> io::Result<()> {
        Ok(())
    }

    fn summary(&mut self, s: &crate::summary::Summary) -> io::Result<()> {
        self.emit(&s.record_json())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_buf()?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Table, tests::tr};
    use TcpState::*;

    const OFFSET: i128 = 1_700_000_000_000_000_000;

    pub(super) fn client() -> (Vec<(Transition, Option<u64>)>, Conn) {
        let mut t = Table::new();
        let evs = [
            tr(0xffff_8881_0000_1000, 1_000, Close, SynSent, 0, 8080),
            tr(
                0xffff_8881_0000_1000,
                51_000,
                SynSent,
                Established,
                40000,
                8080,
            ),
            tr(
                0xffff_8881_0000_1000,
                1_051_000,
                Established,
                FinWait1,
                40000,
                8080,
            ),
            tr(
                0xffff_8881_0000_1000,
                1_061_000,
                FinWait1,
                FinWait2,
                40000,
                8080,
            ),
            tr(
                0xffff_8881_0000_1000,
                1_301_000,
                FinWait2,
                Close,
                40000,
                8080,
            ),
        ];
        let mut out = Vec::new();
        for e in evs {
            let a = t.apply(&e);
            out.push((e, a.in_old_ns));
        }
        (out, t.flush().remove(0))
    }

    #[test]
    fn json_transition_has_the_documented_schema() {
        let (evs, _) = client();
        let mut s = Json::new(Vec::new(), WallClock::fixed(OFFSET));
        s.transition(&evs[1].0, evs[1].1, None).unwrap();
        let line = String::from_utf8(s.into_inner().unwrap()).unwrap();
        assert_eq!(
            line,
            concat!(
                r#"{"v":1,"type":"transition","time":"2023-11-14T22:13:20.000051000Z","ts_ns":51000,"#,
                r#""sock":"0xffff888100001000","family":"ipv4","saddr":"127.0.0.1","sport":40000,"#,
                r#""daddr":"127.0.0.1","dport":8080,"old":"SYN_SENT","new":"ESTABLISHED","#,
                r#""in_old_ns":50000,"pid":7,"tid":7,"comm":"app","cpu":0,"owner":null,"#,
                r#""source":"tracepoint"}"#,
                "\n"
            )
        );
    }

    #[test]
    fn json_connection_has_the_documented_schema() {
        let (_, c) = client();
        let mut s = Json::new(Vec::new(), WallClock::fixed(OFFSET));
        s.connection(&c).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&s.into_inner().unwrap()).unwrap();
        assert_eq!(v["type"], "connection");
        assert_eq!(v["role"], "client");
        assert_eq!(
            v["states"],
            serde_json::json!([
                "CLOSE",
                "SYN_SENT",
                "ESTABLISHED",
                "FIN_WAIT1",
                "FIN_WAIT2",
                "CLOSE"
            ])
        );
        assert_eq!(
            v["durations_ns"],
            serde_json::json!([null, 50000, 1000000, 10000, 240000])
        );
        assert_eq!(
            (v["start_ns"].as_u64(), v["end_ns"].as_u64()),
            (Some(1000), Some(1_301_000))
        );
        assert_eq!(v["lifetime_ns"], 1_300_000);
        assert_eq!(
            (v["sport"].as_u64(), v["dport"].as_u64()),
            (Some(40000), Some(8080))
        );
        assert_eq!(v["incomplete"], false);
        assert_eq!(v["sock"], "0xffff888100001000");
    }

    #[test]
    fn json_lost() {
        let mut s = Json::new(Vec::new(), WallClock::fixed(0));
        s.lost(LostCause::Recursion, 3, 10).unwrap();
        assert_eq!(
            String::from_utf8(s.into_inner().unwrap()).unwrap(),
            "{\"v\":1,\"type\":\"lost\",\"count\":3,\"cause\":\"recursion\",\"total\":10}\n"
        );
    }

    #[test]
    fn text_without_colour_has_aligned_columns_and_a_timeline() {
        let (evs, c) = client();
        let mut s = Text::new(Vec::new(), WallClock::fixed(OFFSET), false, true);
        for (e, in_old) in &evs {
            s.transition(e, *in_old, None).unwrap();
        }
        s.connection(&c).unwrap();
        let out = String::from_utf8(s.out).unwrap();
        assert!(!out.contains('\x1b'), "no escapes without colour");
        let lines: Vec<_> = out.lines().collect();
        assert!(lines[0].starts_with("TIME "));
        assert!(lines[1].contains("127.0.0.1:0 ") && lines[1].contains("CLOSE -> SYN_SENT"));
        assert!(lines[1].ends_with(" -"), "{}", lines[1]);
        assert!(lines[2].contains("SYN_SENT -> ESTABLISHED") && lines[2].ends_with(" 50.0µs"));
        assert_eq!(
            lines[6],
            "── 0xffff888100001000 client 127.0.0.1:40000 -> 127.0.0.1:8080  owner 7 (app)  close active  lifetime 1.30ms"
        );
        assert_eq!(lines[7], "            ?  CLOSE        ?");
        assert_eq!(lines[8], "         +0ns  SYN_SENT     50.0µs");
        assert_eq!(lines[12], "      +1.30ms  CLOSE");
        // The IN OLD column starts at the same place on every line.
        let in_old_col = |l: &str| l.len() - l.rsplit(' ').next().unwrap().len();
        assert_eq!(in_old_col(lines[1]), in_old_col(lines[2]));
    }

    #[test]
    fn ipv6_endpoints_are_bracketed() {
        assert_eq!(endpoint("::1".parse().unwrap(), 80), "[::1]:80");
        assert_eq!(endpoint("10.0.0.1".parse().unwrap(), 0), "10.0.0.1:0");
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_ns(850), "850ns");
        assert_eq!(human_ns(52_340), "52.3µs");
        assert_eq!(human_ns(1_250_000), "1.25ms");
        assert_eq!(human_ns(3_200_000_000), "3.20s");
        assert_eq!(human_ns(125_000_000_000), "2m05s");
        assert_eq!(human_ns(7_500_000_000_000), "2h05m");
    }

    /// The JSON schema, record by record: every key, in order. A change here is a change to
    /// the interface log shippers rely on: update the README and, if a key changes meaning or
    /// goes away, SCHEMA_VERSION.
    #[test]
    fn schema_of_every_record_type() {
        use crate::{
            decode::{ContextKind, Family},
            table::{
                StuckGroup, StuckReport, Unstuck,
                tests::{ctx, task},
            },
        };
        let (evs, c) = client();
        let mut s = Json::new(Vec::new(), WallClock::fixed(OFFSET));
        s.transition(&evs[0].0, None, None).unwrap();
        s.event(&ctx(Some(1), 5, ContextKind::Error, None, 111), None)
            .unwrap();
        s.connection(&c).unwrap();
        let d = DiagTransition {
            ts_ns: 9,
            sock: c.sock,
            family: Family::Ipv4,
            saddr: c.saddr,
            sport: 1,
            daddr: c.daddr,
            dport: 2,
            old: FinWait2,
            new: TimeWait,
            expires_ns: Some(60),
            in_old_ns: None,
            owner: None,
        };
        s.diag_transition(&d).unwrap();
        s.stuck(&StuckReport {
            conn: c.clone(),
            state: CloseWait,
            age_ns: 5,
            age_at_least: false,
            report: 1,
        })
        .unwrap();
        s.unstuck(
            &evs[1].0,
            &Unstuck {
                state: CloseWait,
                age_ns: 5,
                age_at_least: true,
                reports: 2,
            },
            None,
        )
        .unwrap();
        let g = StuckGroup {
            owner: None,
            state: CloseWait,
            count: 3,
            oldest_ns: 9,
            oldest_at_least: false,
        };
        s.stuck_summary(&[g], 30).unwrap();
        s.lost(LostCause::RingbufFull, 1, 1).unwrap();
        let _ = task(1, "x");
        let keys = |line: &str| -> Vec<String> {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["v"], 1, "{line}");
            v.as_object().unwrap().keys().cloned().collect()
        };
        let out = String::from_utf8(s.into_inner().unwrap()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        let want: [&[&str]; 8] = [
            &[
                "v",
                "type",
                "time",
                "ts_ns",
                "sock",
                "family",
                "saddr",
                "sport",
                "daddr",
                "dport",
                "old",
                "new",
                "in_old_ns",
                "pid",
                "tid",
                "comm",
                "cpu",
                "owner",
                "source",
            ],
            &[
                "v", "type", "kind", "time", "ts_ns", "sock", "family", "saddr", "sport", "daddr",
                "dport", "state", "errno", "value", "pid", "tid", "comm", "cpu", "owner",
            ],
            &[
                "v",
                "type",
                "sock",
                "family",
                "saddr",
                "sport",
                "daddr",
                "dport",
                "role",
                "states",
                "durations_ns",
                "start_ns",
                "end_ns",
                "lifetime_ns",
                "start_time",
                "incomplete",
                "owner",
                "close",
                "events",
                "events_dropped",
                "retransmits",
                "syn_retransmits",
                "synack_retransmits",
                "resets_sent",
                "resets_received",
                "error",
                "time_wait",
                "seen_from",
            ],
            &[
                "v",
                "type",
                "time",
                "ts_ns",
                "sock",
                "family",
                "saddr",
                "sport",
                "daddr",
                "dport",
                "old",
                "new",
                "in_old_ns",
                "pid",
                "tid",
                "comm",
                "cpu",
                "owner",
                "source",
                "expires_ns",
            ],
            &[
                "v",
                "type",
                "sock",
                "state",
                "age_ns",
                "age_at_least",
                "report",
                "owner",
                "family",
                "saddr",
                "sport",
                "daddr",
                "dport",
                "role",
                "states",
                "seen_from",
            ],
            &[
                "v",
                "type",
                "time",
                "ts_ns",
                "sock",
                "state",
                "new",
                "age_ns",
                "age_at_least",
                "reports",
                "owner",
                "family",
                "saddr",
                "sport",
                "daddr",
                "dport",
            ],
            &["v", "type", "threshold_ns", "groups"],
            &["v", "type", "count", "cause", "total"],
        ];
        assert_eq!(lines.len(), want.len());
        for (line, want) in lines.iter().zip(want) {
            let mut got = keys(line);
            let mut want: Vec<String> = want.iter().map(|k| k.to_string()).collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{line}");
        }
        let sum: serde_json::Value = serde_json::from_str(lines[6]).unwrap();
        let mut gk: Vec<&String> = sum["groups"][0].as_object().unwrap().keys().collect();
        gk.sort();
        assert_eq!(
            gk,
            ["count", "oldest_at_least", "oldest_ns", "owner", "state"]
        );
    }
}

#[cfg(test)]
mod time_tests {
    use super::*;
    use chrono::SecondsFormat;
    use std::fmt::Write as _;

    /// An owner whose name needs every kind of JSON escape and is not valid UTF-8.
    fn odd_owner(source: OwnerSource) -> Owner {
        Owner {
            pid: 42,
            comm: Comm(*b"we\"ird\\\xff\n\0\0\0\0\0\0\0"),
            uid: 1000,
            cgroup_id: 1 << 40,
            source,
        }
    }

    #[test]
    fn the_hand_written_transition_record_is_serdes_byte_for_byte() {
        use crate::table::tests::tr;
        let clock = WallClock::fixed(1_795_475_125_841_852_172);
        let owner = odd_owner(OwnerSource::Inherited);
        let mut v6 = tr(
            0xffff_8881_0000_0040,
            1_597_174_506_244,
            TcpState::SynSent,
            TcpState::Established,
            5,
            80,
        );
        v6.family = Family::Ipv6;
        v6.saddr = "::ffff:127.0.0.1".parse().unwrap();
        v6.daddr = "fd00::1".parse().unwrap();
        v6.task.comm = owner.comm;
        let v4 = tr(1, 999_999_999, TcpState::Close, TcpState::SynSent, 0, 8080);
        for (t, in_old, o) in [
            (&v4, None, None),
            (&v6, Some(123), Some(&owner)),
            (
                &v4,
                Some(0),
                Some(&Owner {
                    source: OwnerSource::Procfs,
                    ..owner
                }),
            ),
        ] {
            let mut fast = Json::new(Vec::new(), clock);
            fast.transition(t, in_old, o).unwrap();
            let mut slow = Json::new(Vec::new(), clock);
            slow.serde_transition(t, in_old, o).unwrap();
            let fast = String::from_utf8(fast.into_inner().unwrap()).unwrap();
            let slow = String::from_utf8(slow.into_inner().unwrap()).unwrap();
            assert!(
                fast.starts_with("{\"v\":1,") && fast.ends_with("}\n"),
                "{fast}"
            );
            assert_eq!(fast, slow);
        }
    }

    #[test]
    fn one_sink_over_many_records_stays_serdes_byte_for_byte() {
        // The fast writer's caches (the current second, owners by slot) and lookup tables
        // (IPv4 octets, plain bytes) over a long run: owners that share a slot in turn,
        // times back and forth across second boundaries, every octet value, odd names.
        use crate::table::tests::tr;
        let clock = WallClock::fixed(1_795_475_125_841_852_172);
        let comms = [
            Comm(*b"loadgen\0\0\0\0\0\0\0\0\0"),
            Comm(*b"exactly16bytes!!"),
            Comm(*b"we\"ird\\\xff\n\0\0\0\0\0\0\0"),
            Comm(*b"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"),
            Comm(*b"caf\xc3\xa9\0\0\0\0\0\0\0\0\0\0\0"),
        ];
        let sources = [
            OwnerSource::Event,
            OwnerSource::Inherited,
            OwnerSource::Procfs,
        ];
        let mut fast = Json::new(Vec::new(), clock);
        let mut slow = Json::new(Vec::new(), clock);
        let mut ts: u64 = 1_000_000_000 - 3;
        for i in 0u32..600 {
            // Forward by odd steps, sometimes back over a second boundary.
            ts = if i % 7 == 3 {
                ts.saturating_sub(1_000_000_001)
            } else {
                ts + 333_333_337 * u64::from(i % 4)
            };
            let mut t = tr(
                0xffff_8881_0000_0000 + u64::from(i),
                ts,
                TcpState::Established,
                TcpState::FinWait1,
                (i * 7) as u16,
                65100,
            );
            let o = (i % 255) as u8;
            t.saddr = IpAddr::V4([o, 255 - o, o / 10, 0].into());
            t.daddr = IpAddr::V4([10, o % 100, 100, o].into());
            t.task.comm = comms[i as usize % comms.len()];
            let owner = Owner {
                // Pids 16 apart share a slot.
                pid: 100 + 16 * (i % 3),
                comm: comms[(i / 3) as usize % comms.len()],
                uid: i % 2,
                cgroup_id: u64::from(i % 5),
                source: sources[(i / 2) as usize % sources.len()],
            };
            let owner = (i % 11 != 0).then_some(owner);
            fast.transition(&t, Some(u64::from(i)), owner.as_ref())
                .unwrap();
            slow.serde_transition(&t, Some(u64::from(i)), owner.as_ref())
                .unwrap();
        }
        let fast = String::from_utf8(fast.into_inner().unwrap()).unwrap();
        let slow = String::from_utf8(slow.into_inner().unwrap()).unwrap();
        assert_eq!(fast.lines().count(), 600);
        for (f, s) in fast.lines().zip(slow.lines()) {
            assert_eq!(f, s);
        }
    }

    #[test]
    fn the_hand_written_sock_diag_transition_is_serdes_byte_for_byte() {
        let clock = WallClock::fixed(1_795_475_125_841_852_172);
        let owner = odd_owner(OwnerSource::Event);
        let start = DiagTransition {
            ts_ns: 1_597_174_506_244,
            sock: SockAddr(0xffff_8881_0000_0040),
            family: Family::Ipv4,
            saddr: "127.0.0.1".parse().unwrap(),
            sport: 40000,
            daddr: "10.1.2.3".parse().unwrap(),
            dport: 443,
            old: TcpState::FinWait2,
            new: TcpState::TimeWait,
            expires_ns: Some(1_657_174_506_244),
            in_old_ns: None,
            owner: Some(owner),
        };
        let end = DiagTransition {
            ts_ns: 1_657_200_000_000,
            family: Family::Ipv6,
            saddr: "fd00::1".parse().unwrap(),
            daddr: "::ffff:10.0.0.1".parse().unwrap(),
            old: TcpState::TimeWait,
            new: TcpState::Close,
            expires_ns: None,
            in_old_ns: Some(60_025_493_756),
            owner: None,
            ..start
        };
        let mut fast = Json::new(Vec::new(), clock);
        let mut slow = Json::new(Vec::new(), clock);
        for d in [start, end, start] {
            fast.diag_transition(&d).unwrap();
            slow.serde_diag_transition(&d).unwrap();
        }
        let fast = String::from_utf8(fast.into_inner().unwrap()).unwrap();
        let slow = String::from_utf8(slow.into_inner().unwrap()).unwrap();
        assert!(
            fast.contains("\"source\":\"sock_diag\",\"expires_ns\":"),
            "{fast}"
        );
        assert_eq!(fast, slow);
    }

    #[test]
    fn the_hand_written_event_and_connection_records_are_serdes_byte_for_byte() {
        use crate::table::tests::ctx;
        let clock = WallClock::fixed(1_795_475_125_841_852_172);
        let owner = odd_owner(OwnerSource::Procfs);
        let mut events = [
            ctx(Some(0x10), 1, ContextKind::Destroy, None, 0),
            ctx(None, 999_999_999, ContextKind::Error, None, 111),
            ctx(
                Some(7),
                5,
                ContextKind::SendReset,
                Some(TcpState::Established),
                -3,
            ),
            ctx(None, 6, ContextKind::Error, None, 100_000),
        ];
        events[1].family = None;
        events[2].family = Some(Family::Ipv6);
        events[2].saddr = "fd00::1".parse().unwrap();
        events[2].daddr = "::ffff:10.0.0.1".parse().unwrap();
        events[3].task.comm = owner.comm;
        for (c, o) in events.iter().zip([None, Some(&owner), None, Some(&owner)]) {
            let mut fast = Json::new(Vec::new(), clock);
            fast.event(c, o).unwrap();
            let mut slow = Json::new(Vec::new(), clock);
            slow.serde_event(c, o).unwrap();
            let fast = String::from_utf8(fast.into_inner().unwrap()).unwrap();
            let slow = String::from_utf8(slow.into_inner().unwrap()).unwrap();
            assert!(
                fast.starts_with("{\"v\":1,") && fast.ends_with("}\n"),
                "{fast}"
            );
            assert_eq!(fast, slow);
        }

        let plain = super::tests::client().1;
        let mut full = plain.clone();
        full.owner = Some(owner);
        full.close = Some(CloseClass::OrphanTimeout);
        full.incomplete = true;
        full.entered_ns.set(2, None);
        full.error = Some(104);
        full.time_wait = Some(TimeWait {
            confirmed: true,
            expires_ns: Some(60_000_000_000),
        });
        full.notes = events
            .iter()
            .map(|e| Note {
                kind: e.kind,
                ts_ns: e.ts_ns,
                state: e.state,
                value: e.value,
            })
            .collect();
        full.notes_dropped = 3;
        full.retransmits = 1;
        full.resets_received = 2;
        full.seen_from = SeenFrom::Dump;
        full.family = Family::Ipv6;
        full.saddr = "::1".parse().unwrap();
        let mut unconfirmed = plain.clone();
        unconfirmed.time_wait = Some(TimeWait {
            confirmed: false,
            expires_ns: None,
        });
        unconfirmed.states.truncate(1);
        unconfirmed.entered_ns.truncate(1);
        for c in [&plain, &full, &unconfirmed] {
            let mut fast = Json::new(Vec::new(), clock);
            fast.connection(c).unwrap();
            let mut slow = Json::new(Vec::new(), clock);
            slow.serde_connection(c).unwrap();
            let fast = String::from_utf8(fast.into_inner().unwrap()).unwrap();
            let slow = String::from_utf8(slow.into_inner().unwrap()).unwrap();
            assert!(
                fast.starts_with("{\"v\":1,") && fast.ends_with("}\n"),
                "{fast}"
            );
            assert_eq!(fast, slow);
        }
    }

    /// The timeline block as it was written with `format!` (the reference for
    /// `Text::write_block`).
    fn reference_block<W: Write>(this: &Text<W>, c: &Conn) -> String {
        let b = this.style(Style::new().bold());
        let dim = this.style(Style::new().dimmed());
        let mut block = String::new();
        let peer = match c.role {
            Role::Listener => format!("listening on {}", endpoint(c.saddr, c.sport)),
            _ => format!(
                "{} -> {}",
                endpoint(c.saddr, c.sport),
                endpoint(c.daddr, c.dport)
            ),
        };
        let owner = c
            .owner
            .map_or_else(String::new, |o| format!("  owner {} ({})", o.pid, o.comm));
        let close = c
            .close
            .map_or_else(String::new, |k| format!("  close {}", k.name()));
        let _ = writeln!(
            block,
            "{b}── {} {} {peer}{owner}{close}  lifetime {}{}{b:#}",
            c.sock,
            c.role.name(),
            human_ns(c.lifetime_ns()),
            if c.incomplete {
                "  (incomplete: events before or within it were not seen)"
            } else {
                ""
            },
        );
        let start = c.start_ns();
        let offset = |ts: Option<u64>| {
            ts.map_or_else(
                || "?".to_string(),
                |e| format!("+{}", human_ns(e.saturating_sub(start))),
            )
        };
        let durations = c.durations_ns();
        // States and context events, in time order (an event at the same time as a state
        // comes after it).
        let mut notes = c.notes.iter().peekable();
        let emit_notes =
            |block: &mut String,
             until: Option<u64>,
             notes: &mut std::iter::Peekable<std::slice::Iter<'_, Note>>| {
                while let Some(n) = notes.next_if(|n| until.is_none_or(|u| n.ts_ns < u)) {
                    let _ = writeln!(
                        block,
                        "   {dim}{:>10}{dim:#}  ! {}",
                        offset(Some(n.ts_ns)),
                        describe(n.kind, n.state, n.value)
                    );
                }
            };
        for (i, (state, entered)) in c.states.iter().zip(c.entered_ns.iter()).enumerate() {
            if entered.is_some() {
                emit_notes(&mut block, entered, &mut notes);
            }
            let dur = match durations.get(i) {
                Some(Some(d)) => human_ns(*d),
                Some(None) => "?".to_string(),
                None => String::new(),
            };
            let s = this.state_style(*state);
            let line = format!(
                "   {dim}{:>10}{dim:#}  {s}{:<12}{s:#} {dur}",
                offset(entered),
                state.name()
            );
            let _ = writeln!(block, "{}", line.trim_end());
        }
        emit_notes(&mut block, None, &mut notes);
        if c.notes_dropped > 0 {
            let _ = writeln!(
                block,
                "   {:>10}  ! … {} more events not kept",
                "", c.notes_dropped
            );
        }
        if let Some(TimeWait {
            confirmed: true,
            expires_ns,
        }) = c.time_wait
        {
            let s = this.state_style(TcpState::TimeWait);
            let left = expires_ns.map_or_else(String::new, |e| {
                format!("(expires in {})", human_ns(e.saturating_sub(c.end_ns())))
            });
            let _ = writeln!(
                block,
                "   {:>10}  {s}{:<12}{s:#} {left}",
                offset(Some(c.end_ns())),
                "TIME_WAIT"
            );
        }
        block
    }

    #[test]
    fn the_hand_written_timeline_block_is_the_formatted_one() {
        use crate::table::{
            Table,
            tests::{ctx, tr},
        };
        let clock = WallClock::fixed(1_795_475_125_841_852_172);
        let (evs, client) = super::tests::client();
        let mut conns = vec![client.clone()];
        // Incomplete, odd owner name, IPv6, every kind of note, dropped notes, TIME_WAIT
        // with and without its expiry, every duration range (and the half-way values
        // where the float formatter decides), a listener.
        let mut t = Table::new();
        for (i, (e, _)) in evs.iter().enumerate() {
            t.apply(e);
            let kind = [
                ContextKind::SendReset,
                ContextKind::ReceiveReset,
                ContextKind::Retransmit,
                ContextKind::RetransmitSynack,
                ContextKind::Error,
            ][i];
            let state = [None, Some(TcpState::SynSent)][i % 2];
            t.context(&ctx(Some(e.sock.0), e.ts_ns + 1, kind, state, 111));
        }
        t.context(&ctx(
            Some(evs[0].0.sock.0),
            evs[4].0.ts_ns,
            ContextKind::Destroy,
            None,
            0,
        ));
        let mut c = t.flush().remove(0);
        assert!(c.notes.len() >= 5, "{c:?}");
        c.incomplete = true;
        c.owner = Some(Owner {
            pid: 7,
            comm: Comm(*b"\xc3\xa9t\xc3\xa9\xff-long-nam\0"),
            uid: 0,
            cgroup_id: 0,
            source: OwnerSource::Inherited,
        });
        c.saddr = "fd00::1".parse().unwrap();
        c.daddr = "::ffff:10.0.0.1".parse().unwrap();
        c.family = Family::Ipv6;
        c.notes_dropped = 3;
        c.time_wait = Some(TimeWait {
            confirmed: true,
            expires_ns: Some(60_000_000_000),
        });
        conns.push(c.clone());
        c.time_wait = Some(TimeWait {
            confirmed: true,
            expires_ns: None,
        });
        c.entered_ns.set(1, None);
        conns.push(c.clone());
        for (i, d) in [
            0u64,
            999,
            1_000,
            1_050,
            1_150,
            999_949,
            999_950,
            999_999,
            1_000_000,
            1_005_000,
            1_015_000,
            999_994_999,
            999_995_000,
            1_000_000_000,
            1_005_000_000,
            59_994_999_999,
            59_995_000_000,
            60_000_000_000,
            3_600_000_000_000,
            u64::MAX / 2,
        ]
        .into_iter()
        .enumerate()
        {
            let mut c = client.clone();
            let base = c.entered_ns.get(1).unwrap_or(0);
            let n = c.entered_ns.len();
            c.entered_ns.set(n - 1, Some(base + d));
            c.entered_ns.set(n - 2, Some(base + d / 2 + i as u64));
            conns.push(c);
        }
        t = Table::new();
        t.apply(&tr(
            0xffff_8881_0000_2000,
            5,
            TcpState::Close,
            TcpState::Listen,
            80,
            0,
        ));
        t.apply(&tr(
            0xffff_8881_0000_2000,
            9_000_000,
            TcpState::Listen,
            TcpState::Close,
            80,
            0,
        ));
        conns.extend(t.flush());
        for color in [false, true] {
            let mut text = Text::new(Vec::new(), clock, color, true);
            let mut want = String::new();
            for c in &conns {
                want.push_str(&reference_block(&text, c));
                text.connection(c).unwrap();
            }
            assert_eq!(String::from_utf8(text.out).unwrap(), want, "color {color}");
        }
    }

    #[test]
    fn integer_durations_are_the_float_formatted_ones() {
        let mut values: Vec<u64> = Vec::new();
        for edge in [0u64, 1_000, 1_000_000, 1_000_000_000, 60_000_000_000] {
            values.extend(edge.saturating_sub(20_000)..edge + 20_000);
        }
        // Every rounding boundary of each range, and a spread of others.
        for unit in [100u64, 10_000, 10_000_000] {
            for k in 0..2_000u64 {
                let v = k * unit * 37 + unit / 2;
                values.extend([v - 1, v, v + 1]);
            }
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x % 70_000_000_000);
        }
        for v in values {
            assert_eq!(human_ns(v), human_ns_float(v), "{v}");
        }
    }

    /// The text row as it was written with `format!` (the reference for the hand-written one).
    fn reference_row(
        clock: WallClock,
        t: &Transition,
        in_old_ns: Option<u64>,
        owner: Option<&Owner>,
    ) -> String {
        let time = clock
            .utc(t.ts_ns)
            .with_timezone(&Local)
            .format("%H:%M:%S%.6f");
        let sock = t.sock.to_string();
        let (pid, comm) = match owner {
            Some(o) => (o.pid.to_string(), o.comm.as_str().into_owned()),
            None => (t.task.pid.to_string(), format!("*{}", t.task.comm.as_str())),
        };
        let prefix = format!(
            "{time} {sock:<18} {pid:<7} {comm:<16} {local:<ADDR_W$} {remote:<ADDR_W$}",
            local = endpoint(t.saddr, t.sport),
            remote = endpoint(t.daddr, t.dport),
        );
        let width = t.old.name().len() + 4 + t.new.name().len();
        let pair = format!(
            "{} -> {}{}",
            t.old.name(),
            t.new.name(),
            " ".repeat(28usize.saturating_sub(width))
        );
        let in_old = in_old_ns.map_or_else(|| "-".to_string(), human_ns);
        format!("{prefix} {pair} {in_old}\n")
    }

    #[test]
    fn the_hand_written_text_row_is_the_formatted_one() {
        use crate::table::tests::tr;
        let clock = WallClock::fixed(1_795_475_125_841_852_172);
        let owner = Owner {
            pid: 42,
            comm: Comm(*b"\xc3\xa9t\xc3\xa9\xff-long-nam\0"),
            uid: 0,
            cgroup_id: 0,
            source: OwnerSource::Event,
        };
        let mut v6 = tr(
            u64::MAX,
            1_597_174_506_244,
            TcpState::SynSent,
            TcpState::Established,
            5,
            80,
        );
        v6.family = Family::Ipv6;
        v6.saddr = "2001:db8:1234:5678:9abc:def0:1234:5678".parse().unwrap();
        v6.daddr = "::1".parse().unwrap();
        v6.task.comm = owner.comm;
        let v4 = tr(
            1,
            999_999_999,
            TcpState::NewSynRecv,
            TcpState::Established,
            0,
            65535,
        );
        let mut sink = Text::new(Vec::new(), clock, false, true);
        sink.header_done = true;
        let mut want = String::new();
        for (i, ts) in [0u64, 999, 1_000, 999_999_999, 1_000_000_001, 61_000_000_000]
            .into_iter()
            .enumerate()
        {
            for (t, o) in [(&v4, None), (&v6, Some(&owner)), (&v6, None)] {
                let mut t = *t;
                t.ts_ns += ts * 7;
                let in_old = (i % 3 != 0).then_some(ts);
                sink.transition(&t, in_old, o).unwrap();
                want.push_str(&reference_row(clock, &t, in_old, o));
            }
        }
        assert_eq!(String::from_utf8(sink.out).unwrap(), want);
    }

    #[test]
    fn cached_json_times_match_chrono() {
        let clock = WallClock::fixed(1_795_475_125_841_852_172);
        let j = Json::new(Vec::new(), clock);
        for ts in [
            0u64,
            1,
            999_999_999,
            1_000_000_000,
            1_597_174_506_244,
            1_597_174_506_245,
        ] {
            let want = clock.utc(ts).to_rfc3339_opts(SecondsFormat::Nanos, true);
            assert_eq!(j.time(ts), want);
        }
        // One sink (one cached second) over times back and forth across second boundaries,
        // with clocks whose wall seconds start anywhere in the monotonic one.
        for offset in [
            0i128,
            1,
            158_147_828,
            999_999_999,
            -1_795_475_125_841_852_172,
        ] {
            let clock = WallClock::fixed(1_795_475_125_841_852_172 + offset);
            let j = Json::new(Vec::new(), clock);
            let mut ts: u64 = 5_000_000_000;
            for i in 0u64..400 {
                ts = match i % 5 {
                    0 => ts - 999_999_999,
                    1 => ts + 1,
                    2 => ts + 499_999_999,
                    3 => ts - 1,
                    _ => ts + 700_000_003,
                };
                let want = clock.utc(ts).to_rfc3339_opts(SecondsFormat::Nanos, true);
                assert_eq!(j.time(ts), want, "ts {ts}, offset {offset}");
            }
        }
    }
}
