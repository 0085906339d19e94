//! Recordings (`--record FILE`) and their reader (`tracer replay FILE`).
//!
//! A recording is JSON Lines: a `header` line, then in the order they happened every raw
//! event the kernel handed over (before any decoding or filtering, so a newer tracer can
//! decode it again), every fact the enrichers gave the connection table (owners from /proc,
//! TIME_WAIT lookups, sockets from the start-up dump, sockets that vanished), the TIME_WAIT
//! transitions learned from sock_diag, losses, and the moments the table was settled
//! (`settle`, `tick`), so a replay releases the same connection records at the same points.
//! `end` closes a complete recording; a file without one was cut short (the replay says so).
//! The format is versioned by the header's `"v"`; README.md documents every line type.
use std::{
    fmt,
    io::{self, BufRead, Write},
    net::IpAddr,
};

use serde::{Deserialize, Serialize};
use tracer_common::Event;

use crate::{
    decode::LostCause,
    decode::{Comm, Family, SockAddr, TcpState},
    table::DiagTransition,
    table::{Fact, NsTuple, Orphan, OrphanEnd, OrphanHow, Owner, OwnerSource, Seed, TimeWait},
    tuple::Tuple,
};

/// The recording format's version. A reader accepts only the versions it knows: 1 (no
/// `cgroup` lines) and 2.
pub const VERSION: u32 = 2;
/// The oldest version this reader still reads.
pub const OLDEST_VERSION: u32 = 1;
/// The header's `format` value.
pub const FORMAT: &str = "tracer-recording";

/// The first line: what is needed to decode and show the rest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub v: u32,
    /// tracer's version that wrote it.
    pub tracer: String,
    /// `uname -r` of the traced host.
    pub kernel: String,
    pub hostname: String,
    /// CLOCK_REALTIME − CLOCK_MONOTONIC at start-up, ns: turns the events' monotonic
    /// timestamps into wall-clock times.
    pub clock_offset_ns: i64,
    /// Wall-clock start, RFC 3339.
    pub started: String,
    /// The command line that made it.
    pub command: Vec<String>,
    /// The kernel-side filters in force (events they dropped are not in the file).
    pub filters: String,
    /// The recording tracer's network namespace inode (absent in older recordings).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub netns: u32,
}

/// One raw event, field for field as the kernel wrote it (`tracer_common::Event`). The
/// 64-bit kernel values are split or written in hex so no JSON reader rounds them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawEvent {
    pub kind: u32,
    pub cpu: u32,
    pub ts_ns: u64,
    /// `struct sock` address, `0x…`.
    pub sock: String,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    /// The 16 `comm` bytes in hex (it need not be UTF-8).
    pub comm: String,
    /// 16 bytes in hex (IPv4: 4 bytes then zeros).
    pub saddr: String,
    pub daddr: String,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub oldstate: u8,
    pub newstate: u8,
    pub value: i32,
    /// The socket's network namespace inode (absent: unknown, as in recordings made before
    /// tracer read it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub netns: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn all_zero(v: &[u32]) -> bool {
    v.iter().all(|&n| n == 0)
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        use fmt::Write as _;
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex<const N: usize>(s: &str, what: &str) -> Result<[u8; N], String> {
    if s.len() != N * 2 || !s.is_ascii() {
        return Err(format!("`{what}` must be {} hex digits", N * 2));
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16)
            .map_err(|_| format!("`{what}` is not hex: {s:?}"))?;
    }
    Ok(out)
}

fn sock_hex(s: SockAddr) -> String {
    format!("{:#x}", s.0)
}

fn parse_sock(s: &str) -> Result<SockAddr, String> {
    let digits = s
        .strip_prefix("0x")
        .ok_or_else(|| format!("socket address {s:?} must start with 0x"))?;
    u64::from_str_radix(digits, 16)
        .map(SockAddr)
        .map_err(|_| format!("socket address {s:?} is not hex"))
}

impl From<&Event> for RawEvent {
    fn from(e: &Event) -> Self {
        Self {
            kind: e.kind,
            cpu: e.cpu,
            ts_ns: e.ts_ns,
            sock: sock_hex(SockAddr(e.skaddr)),
            pid: (e.pid_tgid >> 32) as u32,
            tid: e.pid_tgid as u32,
            uid: e.uid_gid as u32,
            gid: (e.uid_gid >> 32) as u32,
            cgroup_id: e.cgroup_id,
            comm: hex(&e.comm),
            saddr: hex(&e.saddr),
            daddr: hex(&e.daddr),
            sport: e.sport,
            dport: e.dport,
            family: e.family,
            oldstate: e.oldstate,
            newstate: e.newstate,
            value: e.value,
            netns: e.netns,
        }
    }
}

impl TryFrom<&RawEvent> for Event {
    type Error = String;
    fn try_from(r: &RawEvent) -> Result<Self, String> {
        Ok(Event {
            kind: r.kind,
            cpu: r.cpu,
            ts_ns: r.ts_ns,
            skaddr: parse_sock(&r.sock)?.0,
            pid_tgid: (u64::from(r.pid) << 32) | u64::from(r.tid),
            cgroup_id: r.cgroup_id,
            uid_gid: (u64::from(r.gid) << 32) | u64::from(r.uid),
            comm: unhex(&r.comm, "comm")?,
            saddr: unhex(&r.saddr, "saddr")?,
            daddr: unhex(&r.daddr, "daddr")?,
            sport: r.sport,
            dport: r.dport,
            family: r.family,
            oldstate: r.oldstate,
            newstate: r.newstate,
            value: r.value,
            netns: r.netns,
        })
    }
}

/// An owner as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecOwner {
    pub pid: u32,
    /// Hex, as in [`RawEvent::comm`].
    pub comm: String,
    pub uid: u32,
    pub cgroup_id: u64,
    /// `event`, `inherited` or `procfs`.
    pub source: String,
}

impl From<&Owner> for RecOwner {
    fn from(o: &Owner) -> Self {
        Self {
            pid: o.pid,
            comm: hex(&o.comm.0),
            uid: o.uid,
            cgroup_id: o.cgroup_id,
            source: o.source.name().into(),
        }
    }
}

impl TryFrom<&RecOwner> for Owner {
    type Error = String;
    fn try_from(o: &RecOwner) -> Result<Self, String> {
        Ok(Owner {
            pid: o.pid,
            comm: Comm(unhex(&o.comm, "comm")?),
            uid: o.uid,
            cgroup_id: o.cgroup_id,
            source: match o.source.as_str() {
                "event" => OwnerSource::Event,
                "inherited" => OwnerSource::Inherited,
                "procfs" => OwnerSource::Procfs,
                "accept" => OwnerSource::Accept,
                other => return Err(format!("unknown owner source {other:?}")),
            },
        })
    }
}

/// A 4-tuple as recorded: local address, local port, remote address, remote port.
pub type RecTuple = (IpAddr, u16, IpAddr, u16);

fn rec_tuple(t: &Tuple) -> RecTuple {
    (t.local.addr, t.local.port, t.remote.addr, t.remote.port)
}

fn tuple_of((saddr, sport, daddr, dport): RecTuple) -> Tuple {
    Tuple::new(saddr, sport, daddr, dport)
}

/// One line of a recording.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    Header(Header),
    Event(RawEvent),
    /// A socket from the start-up sock_diag dump.
    Seed {
        now_ns: u64,
        /// Network namespace inode (absent: 0, unknown).
        #[serde(default, skip_serializing_if = "is_zero")]
        netns: u32,
        family: u16,
        tuple: RecTuple,
        /// Raw `TCP_*` state.
        state: u8,
        owner: Option<RecOwner>,
        /// A timewait socket in FIN_WAIT2: closed, the peer's FIN awaited.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        orphan: bool,
    },
    /// An owner found in /proc.
    Owner {
        sock: String,
        owner: RecOwner,
    },
    /// A TIME_WAIT lookup: found (`confirmed`) with its expiry, or not.
    TimeWait {
        sock: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        netns: u32,
        tuple: RecTuple,
        confirmed: bool,
        expires_ns: Option<u64>,
    },
    /// An active closer found handed over in the FIN_WAIT2 substate, or how that ended
    /// (`end`: `fin`, `timeout`, `gone`; `peer`: the FIN's time is the peer's LAST_ACK).
    Orphan {
        sock: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        netns: u32,
        tuple: RecTuple,
        handoff_ns: u64,
        expires_ns: Option<u64>,
        end: Option<String>,
        end_ns: Option<u64>,
        #[serde(default)]
        peer: bool,
    },
    /// Sockets the kernel no longer had, dropped from the table.
    Vanished {
        socks: Vec<String>,
        tuples: Vec<RecTuple>,
        /// The namespace of each of `tuples`, in order (absent: all unknown).
        #[serde(default, skip_serializing_if = "all_zero")]
        netns: Vec<u32>,
    },
    /// A transition learned from sock_diag (→ TIME_WAIT, TIME_WAIT → CLOSE).
    Diag {
        ts_ns: u64,
        sock: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        netns: u32,
        family: u16,
        tuple: RecTuple,
        old: u8,
        new: u8,
        expires_ns: Option<u64>,
        in_old_ns: Option<u64>,
        owner: Option<RecOwner>,
    },
    /// A cgroup id learned (the first time an owner with it was seen, or again once the
    /// cache started over), with its path relative to the cgroup2 root; `null` if the
    /// cgroup was gone by the time it was looked up. A replay learns it here instead of
    /// from the replaying machine's cgroups.
    Cgroup {
        id: u64,
        path: Option<String>,
    },
    /// Events the kernel could not hand over.
    Lost {
        cause: LostCause,
        count: u64,
        total: u64,
    },
    /// The table was settled at this time (held records released, caps enforced).
    Settle {
        ts_ns: u64,
    },
    /// The periodic check (stuck connections) ran at this time.
    Tick {
        ts_ns: u64,
    },
    /// The recording ended cleanly.
    End {
        ts_ns: u64,
        reason: String,
    },
}

fn state(raw: u8) -> Result<TcpState, String> {
    TcpState::try_from(raw).map_err(|e| e.to_string())
}

fn family(raw: u16) -> Result<Family, String> {
    Family::try_from(raw).map_err(|e| e.to_string())
}

impl Line {
    pub fn fact(f: &Fact) -> Self {
        match f {
            Fact::Seed { seed, now_ns } => Self::Seed {
                now_ns: *now_ns,
                netns: seed.netns,
                family: seed.family.raw(),
                tuple: rec_tuple(&seed.tuple),
                state: seed.state as u8,
                owner: seed.owner.as_ref().map(RecOwner::from),
                orphan: seed.orphan,
            },
            Fact::Owner { sock, owner } => Self::Owner {
                sock: sock_hex(*sock),
                owner: owner.into(),
            },
            Fact::TimeWait { sock, tuple, tw } => Self::TimeWait {
                sock: sock_hex(*sock),
                netns: tuple.netns,
                tuple: rec_tuple(&tuple.tuple),
                confirmed: tw.is_some_and(|t| t.confirmed),
                expires_ns: tw.and_then(|t| t.expires_ns),
            },
            Fact::Orphan {
                sock,
                tuple,
                orphan,
            } => Self::Orphan {
                sock: sock_hex(*sock),
                netns: tuple.netns,
                tuple: rec_tuple(&tuple.tuple),
                handoff_ns: orphan.handoff_ns,
                expires_ns: orphan.expires_ns,
                end: orphan.end.map(|e| e.how.name().to_string()),
                end_ns: orphan.end.map(|e| e.ts_ns),
                peer: matches!(
                    orphan.end,
                    Some(OrphanEnd {
                        how: OrphanHow::Fin { peer: true },
                        ..
                    })
                ),
            },
            Fact::Vanished { socks, tuples } => Self::Vanished {
                socks: socks.iter().map(|s| sock_hex(*s)).collect(),
                tuples: tuples.iter().map(|t| rec_tuple(&t.tuple)).collect(),
                netns: tuples.iter().map(|t| t.netns).collect(),
            },
        }
    }

    pub fn diag(d: &DiagTransition) -> Self {
        Self::Diag {
            ts_ns: d.ts_ns,
            sock: sock_hex(d.sock),
            netns: d.netns,
            family: d.family.raw(),
            tuple: rec_tuple(&d.tuple),
            old: d.old as u8,
            new: d.new as u8,
            expires_ns: d.expires_ns,
            in_old_ns: d.in_old_ns,
            owner: d.owner.as_ref().map(RecOwner::from),
        }
    }
}

/// A recorded line, turned back into what the pipeline takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Header(Header),
    Event(Event),
    Fact(Fact),
    Diag(DiagTransition),
    Cgroup {
        id: u64,
        path: Option<String>,
    },
    Lost {
        cause: LostCause,
        count: u64,
        total: u64,
    },
    Settle(u64),
    Tick(u64),
    End {
        ts_ns: u64,
        reason: String,
    },
}

impl TryFrom<Line> for Item {
    type Error = String;
    fn try_from(l: Line) -> Result<Self, String> {
        let owner = |o: Option<RecOwner>| o.as_ref().map(Owner::try_from).transpose();
        Ok(match l {
            Line::Header(h) => Self::Header(h),
            Line::Event(r) => Self::Event(Event::try_from(&r)?),
            Line::Seed {
                now_ns,
                netns,
                family: f,
                tuple,
                state: s,
                owner: o,
                orphan,
            } => Self::Fact(Fact::Seed {
                seed: Seed {
                    netns,
                    family: family(f)?,
                    tuple: tuple_of(tuple),
                    state: state(s)?,
                    owner: owner(o)?,
                    orphan,
                },
                now_ns,
            }),
            Line::Owner { sock, owner: o } => Self::Fact(Fact::Owner {
                sock: parse_sock(&sock)?,
                owner: Owner::try_from(&o)?,
            }),
            Line::TimeWait {
                sock,
                netns,
                tuple,
                confirmed,
                expires_ns,
            } => Self::Fact(Fact::TimeWait {
                sock: parse_sock(&sock)?,
                tuple: NsTuple::new(netns, tuple_of(tuple)),
                tw: Some(TimeWait {
                    confirmed,
                    expires_ns,
                }),
            }),
            Line::Orphan {
                sock,
                netns,
                tuple,
                handoff_ns,
                expires_ns,
                end,
                end_ns,
                peer,
            } => {
                let how = match end.as_deref() {
                    None => None,
                    Some("fin") => Some(OrphanHow::Fin { peer }),
                    Some("timeout") => Some(OrphanHow::Timeout),
                    Some("gone") => Some(OrphanHow::Gone),
                    Some(other) => return Err(format!("unknown orphan end {other:?}")),
                };
                let end = match (how, end_ns) {
                    (Some(how), Some(ts_ns)) => Some(OrphanEnd { ts_ns, how }),
                    (None, _) => None,
                    (Some(_), None) => return Err("an orphan's end without end_ns".into()),
                };
                Self::Fact(Fact::Orphan {
                    sock: parse_sock(&sock)?,
                    tuple: NsTuple::new(netns, tuple_of(tuple)),
                    orphan: Orphan {
                        handoff_ns,
                        expires_ns,
                        end,
                    },
                })
            }
            Line::Vanished {
                socks,
                tuples,
                netns,
            } => Self::Fact(Fact::Vanished {
                socks: socks
                    .iter()
                    .map(|s| parse_sock(s))
                    .collect::<Result<_, _>>()?,
                tuples: tuples
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| NsTuple::new(netns.get(i).copied().unwrap_or(0), tuple_of(t)))
                    .collect(),
            }),
            Line::Diag {
                ts_ns,
                sock,
                netns,
                family: f,
                tuple,
                old,
                new,
                expires_ns,
                in_old_ns,
                owner: o,
            } => Self::Diag(DiagTransition {
                ts_ns,
                sock: parse_sock(&sock)?,
                netns,
                family: family(f)?,
                tuple: tuple_of(tuple),
                old: state(old)?,
                new: state(new)?,
                expires_ns,
                in_old_ns,
                owner: owner(o)?,
            }),
            Line::Cgroup { id, path } => Self::Cgroup { id, path },
            Line::Lost {
                cause,
                count,
                total,
            } => Self::Lost {
                cause,
                count,
                total,
            },
            Line::Settle { ts_ns } => Self::Settle(ts_ns),
            Line::Tick { ts_ns } => Self::Tick(ts_ns),
            Line::End { ts_ns, reason } => Self::End { ts_ns, reason },
        })
    }
}

/// Writes a recording.
pub struct Recorder<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> Recorder<W> {
    pub fn new(out: W, header: &Header) -> io::Result<Self> {
        let mut r = Self {
            out,
            buf: Vec::with_capacity(512),
        };
        r.line(&Line::Header(header.clone()))?;
        Ok(r)
    }

    pub fn line(&mut self, l: &Line) -> io::Result<()> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, l)?;
        self.buf.push(b'\n');
        self.out.write_all(&self.buf)
    }

    pub fn event(&mut self, e: &Event) -> io::Result<()> {
        self.line(&Line::Event(e.into()))
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// What went wrong reading a recording, and where.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("line {line}: {msg}")]
    Bad { line: u64, msg: String },
    #[error("line {line}: {source}")]
    Io { line: u64, source: io::Error },
}

/// The header a reader accepts, checked on the first line.
fn check_header(h: &Header) -> Result<(), String> {
    if h.format != FORMAT {
        return Err(format!(
            "not a tracer recording (format {:?}, expected {FORMAT:?})",
            h.format
        ));
    }
    if !(OLDEST_VERSION..=VERSION).contains(&h.v) {
        return Err(format!(
            "recording format version {} is not supported by this tracer (it reads versions {OLDEST_VERSION} to {VERSION})",
            h.v
        ));
    }
    Ok(())
}

/// Reads a recording line by line. The first line must be a header. Stops at the first bad
/// line with an error naming it; what came before has been returned.
pub struct Reader<R: BufRead> {
    input: R,
    line: u64,
    buf: String,
    failed: bool,
    /// Longest line accepted: a corrupt file must not make the reader buffer without bound.
    max_line: usize,
}

/// Longest line a recording holds (an event line is ~400 bytes; a `vanished` line after a
/// large prune is the longest).
pub const MAX_LINE: usize = 16 << 20;

impl<R: BufRead> Reader<R> {
    pub fn new(input: R) -> Self {
        Self {
            input,
            line: 0,
            buf: String::new(),
            failed: false,
            max_line: MAX_LINE,
        }
    }

    /// Lines read so far.
    pub fn lines_read(&self) -> u64 {
        self.line
    }

    fn bad(&mut self, msg: String) -> Option<Result<Item, ReadError>> {
        self.failed = true;
        Some(Err(ReadError::Bad {
            line: self.line,
            msg,
        }))
    }
}

impl<R: BufRead> Iterator for Reader<R> {
    type Item = Result<Item, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        self.buf.clear();
        self.line += 1;
        let limit = self.max_line as u64 + 1;
        let read = io::Read::take(&mut self.input, limit).read_line(&mut self.buf);
        match read {
            Ok(0) => {
                if self.line == 1 {
                    return self.bad("the file is empty (no header line)".into());
                }
                self.line -= 1;
                return None;
            }
            Ok(n) if n as u64 >= limit => {
                return self.bad(format!("line longer than {} bytes", self.max_line));
            }
            Ok(_) => {}
            Err(e) => {
                self.failed = true;
                return Some(Err(ReadError::Io {
                    line: self.line,
                    source: e,
                }));
            }
        }
        if !self.buf.ends_with('\n') {
            return self.bad(
                "the line is cut short (no newline at its end): the recording was truncated".into(),
            );
        }
        let parsed: Line = match serde_json::from_str(self.buf.trim_end()) {
            Ok(l) => l,
            Err(e) => return self.bad(format!("not a valid recording line: {e}")),
        };
        match (&parsed, self.line) {
            (Line::Header(h), 1) => {
                if let Err(msg) = check_header(h) {
                    return self.bad(msg);
                }
            }
            (_, 1) => {
                return self.bad("the first line is not a tracer recording header".into());
            }
            (Line::Header(_), _) => return self.bad("a second header".into()),
            _ => {}
        }
        match Item::try_from(parsed) {
            Ok(item) => Some(Ok(item)),
            Err(msg) => self.bad(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            format: FORMAT.into(),
            v: VERSION,
            tracer: "0.1.0".into(),
            kernel: "6.18.0".into(),
            hostname: "h".into(),
            clock_offset_ns: 1_700_000_000_000_000_000,
            started: "2026-11-23T00:00:00Z".into(),
            command: vec!["tracer".into()],
            filters: String::new(),
            netns: 0,
        }
    }

    fn event() -> Event {
        Event {
            kind: 0,
            cpu: 1,
            ts_ns: 123,
            skaddr: 0xffff_8881_0000_0040,
            pid_tgid: (4_000_000u64 << 32) | 4_000_001,
            cgroup_id: 7,
            uid_gid: (1000u64 << 32) | 1001,
            comm: *b"python3\0\0\0\0\0\0\0\0\0",
            saddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            daddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            sport: 0,
            dport: 8080,
            family: 2,
            oldstate: 7,
            newstate: 2,
            value: -3,
            netns: 0,
        }
    }

    fn write(lines: &[Line]) -> Vec<u8> {
        let mut r = Recorder::new(Vec::new(), &header()).unwrap();
        for l in lines {
            r.line(l).unwrap();
        }
        r.out
    }

    #[test]
    fn events_and_facts_round_trip() {
        let owner = Owner {
            pid: 9,
            comm: Comm(*b"nginx\0\0\0\0\0\0\0\0\0\0\0"),
            uid: 33,
            cgroup_id: 5,
            source: OwnerSource::Procfs,
        };
        let tuple = Tuple::new("::1".parse().unwrap(), 80, "::1".parse().unwrap(), 40000);
        let facts = [
            Fact::Owner {
                sock: SockAddr(0x10),
                owner,
            },
            Fact::TimeWait {
                sock: SockAddr(0x20),
                tuple: NsTuple::new(4_026_532_000, tuple),
                tw: Some(TimeWait {
                    confirmed: true,
                    expires_ns: Some(60),
                }),
            },
            Fact::Seed {
                seed: Seed {
                    netns: 4_026_532_000,
                    family: Family::Ipv6,
                    tuple,
                    state: TcpState::Listen,
                    owner: Some(owner),
                    orphan: true,
                },
                now_ns: 5,
            },
            Fact::Orphan {
                sock: SockAddr(0x40),
                tuple: NsTuple::new(4_026_532_000, tuple),
                orphan: Orphan {
                    handoff_ns: 7,
                    expires_ns: Some(60_000_000_007),
                    end: Some(OrphanEnd {
                        ts_ns: 300_000_007,
                        how: OrphanHow::Fin { peer: true },
                    }),
                },
            },
            Fact::Vanished {
                socks: vec![SockAddr(0x30)],
                tuples: vec![NsTuple::new(0, tuple), NsTuple::new(4_026_532_000, tuple)],
            },
        ];
        let mut lines = vec![Line::Event((&event()).into())];
        lines.extend(facts.iter().map(Line::fact));
        lines.push(Line::Settle { ts_ns: 9 });
        lines.push(Line::Cgroup {
            id: 5,
            path: Some("/system.slice/nginx.service".into()),
        });
        lines.push(Line::Cgroup { id: 6, path: None });
        lines.push(Line::End {
            ts_ns: 10,
            reason: "SIGINT".into(),
        });
        let bytes = write(&lines);
        let items: Vec<Item> = Reader::new(&bytes[..]).map(Result::unwrap).collect();
        assert_eq!(items[0], Item::Header(header()));
        assert_eq!(items[1], Item::Event(event()));
        for (i, f) in facts.iter().enumerate() {
            assert_eq!(items[2 + i], Item::Fact(f.clone()));
        }
        let n = 2 + facts.len();
        assert_eq!(items[n], Item::Settle(9));
        assert_eq!(
            items[n + 1],
            Item::Cgroup {
                id: 5,
                path: Some("/system.slice/nginx.service".into())
            }
        );
        assert_eq!(items[n + 2], Item::Cgroup { id: 6, path: None });
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.contains(r#"{"type":"cgroup","id":5,"path":"/system.slice/nginx.service"}"#),
            "{text}"
        );
    }

    #[test]
    fn version_1_recordings_are_still_read() {
        let mut h = header();
        h.v = 1;
        let mut bytes = Vec::new();
        serde_json::to_writer(&mut bytes, &Line::Header(h.clone())).unwrap();
        bytes.extend_from_slice(b"\n{\"type\":\"settle\",\"ts_ns\":2}\n");
        let items: Vec<Item> = Reader::new(&bytes[..]).map(Result::unwrap).collect();
        assert_eq!(items, [Item::Header(h), Item::Settle(2)]);
    }

    #[test]
    fn bad_lines_are_named_and_reading_stops_there() {
        let mut bytes = write(&[Line::Settle { ts_ns: 1 }]);
        bytes.extend_from_slice(b"{\"type\":\"settle\"}\n{\"type\":\"settle\",\"ts_ns\":2}\n");
        let got: Vec<_> = Reader::new(&bytes[..]).collect();
        assert_eq!(got.len(), 3);
        let err = got[2].as_ref().unwrap_err().to_string();
        assert!(
            err.starts_with("line 3: not a valid recording line"),
            "{err}"
        );
    }

    #[test]
    fn truncation_empty_files_and_foreign_headers() {
        let bytes = write(&[Line::Settle { ts_ns: 1 }]);
        let cut = &bytes[..bytes.len() - 3];
        let err = Reader::new(cut).last().unwrap().unwrap_err().to_string();
        assert!(err.contains("line 2: the line is cut short"), "{err}");

        let err = Reader::new(&b""[..])
            .next()
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1: the file is empty"), "{err}");

        let err = Reader::new(&b"{\"type\":\"settle\",\"ts_ns\":1}\n"[..])
            .next()
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a tracer recording header"), "{err}");

        let mut h = header();
        h.v = 99;
        let mut bytes = Vec::new();
        serde_json::to_writer(&mut bytes, &Line::Header(h)).unwrap();
        bytes.push(b'\n');
        let err = Reader::new(&bytes[..])
            .next()
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(err.contains("version 99 is not supported"), "{err}");
    }

    #[test]
    fn overlong_lines_are_refused_without_buffering_them() {
        let mut bytes = write(&[]);
        bytes.extend(std::iter::repeat_n(b'x', 100));
        bytes.push(b'\n');
        let mut r = Reader::new(&bytes[..]);
        assert!(matches!(r.next(), Some(Ok(Item::Header(_)))));
        r.max_line = 50;
        let err = r.next().unwrap().unwrap_err().to_string();
        assert!(err.contains("line 2: line longer than 50 bytes"), "{err}");
    }
}
