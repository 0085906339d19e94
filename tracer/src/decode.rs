//! Bytes from the ring buffer → typed events. Raw kernel integers become enums here, and
//! anything the decoder does not understand is an error, never a guess.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use serde::{Serialize, Serializer};
use tracer_common::{AF_INET, AF_INET6, EVENT_SIZE, Event, kind};

use crate::tuple::Tuple;

/// A TCP state, numbered as the kernel's `TCP_*` constants (include/net/tcp_states.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TcpState {
    Established = 1,
    SynSent = 2,
    SynRecv = 3,
    FinWait1 = 4,
    FinWait2 = 5,
    TimeWait = 6,
    Close = 7,
    CloseWait = 8,
    LastAck = 9,
    Listen = 10,
    Closing = 11,
    NewSynRecv = 12,
}

impl TcpState {
    pub const ALL: [TcpState; 12] = [
        Self::Established,
        Self::SynSent,
        Self::SynRecv,
        Self::FinWait1,
        Self::FinWait2,
        Self::TimeWait,
        Self::Close,
        Self::CloseWait,
        Self::LastAck,
        Self::Listen,
        Self::Closing,
        Self::NewSynRecv,
    ];

    /// The kernel's name without `TCP_`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Established => "ESTABLISHED",
            Self::SynSent => "SYN_SENT",
            Self::SynRecv => "SYN_RECV",
            Self::FinWait1 => "FIN_WAIT1",
            Self::FinWait2 => "FIN_WAIT2",
            Self::TimeWait => "TIME_WAIT",
            Self::Close => "CLOSE",
            Self::CloseWait => "CLOSE_WAIT",
            Self::LastAck => "LAST_ACK",
            Self::Listen => "LISTEN",
            Self::Closing => "CLOSING",
            Self::NewSynRecv => "NEW_SYN_RECV",
        }
    }
}

impl TryFrom<u8> for TcpState {
    type Error = DecodeError;
    fn try_from(v: u8) -> Result<Self, DecodeError> {
        Self::ALL
            .get(usize::from(v).wrapping_sub(1))
            .copied()
            .ok_or(DecodeError::State(v))
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl Serialize for TcpState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// The kernel's `AF_*` value.
    pub const fn raw(self) -> u16 {
        match self {
            Self::Ipv4 => AF_INET,
            Self::Ipv6 => AF_INET6,
        }
    }
}

impl TryFrom<u16> for Family {
    type Error = DecodeError;
    fn try_from(v: u16) -> Result<Self, DecodeError> {
        match v {
            AF_INET => Ok(Self::Ipv4),
            AF_INET6 => Ok(Self::Ipv6),
            other => Err(DecodeError::Family(other)),
        }
    }
}

/// The 16-byte `comm` of a task, NUL-padded; shown lossily as UTF-8.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Comm(pub [u8; 16]);

impl Comm {
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(self.0.len());
        String::from_utf8_lossy(&self.0[..end])
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.as_str())
    }
}

impl Serialize for Comm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_str())
    }
}

/// A kernel socket address (`struct sock *`), printed as `0xffff…`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SockAddr(pub u64);

impl fmt::Debug for SockAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x}", self.0)
    }
}

impl fmt::Display for SockAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format!("{:#018x}", self.0))
    }
}

impl Serialize for SockAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The task that was on the CPU when the kernel emitted an event. In softirq this is whatever
/// was interrupted, not the socket's owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Task {
    /// tgid.
    pub pid: u32,
    pub tid: u32,
    pub comm: Comm,
    pub uid: u32,
    pub cgroup_id: u64,
}

/// One decoded TCP state transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    pub sock: SockAddr,
    /// Inode of the socket's network namespace; 0 when unknown.
    pub netns: u32,
    pub family: Family,
    /// Local (`saddr`/`sport`) and remote (`daddr`/`dport`) ends.
    pub tuple: Tuple,
    pub old: TcpState,
    pub new: TcpState,
    pub task: Task,
    pub cpu: u32,
    /// SYN_RECV → ESTABLISHED: the child socket's `srtt_us` (<< 3) read by the kernel at
    /// this transition, which holds the SYN-ACK's RTT sample; 0 when unknown or for any
    /// other transition.
    pub srtt_us: u32,
}

/// What a context event says happened to a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContextKind {
    /// This host sent a RST.
    SendReset,
    /// A RST arrived.
    ReceiveReset,
    /// A segment was retransmitted (a SYN when the socket is in SYN_SENT).
    Retransmit,
    /// A SYN-ACK was retransmitted (reported on the listener).
    RetransmitSynack,
    /// An error was reported to the socket (errno in `value`).
    Error,
    /// The kernel freed the socket.
    Destroy,
}

impl ContextKind {
    pub const fn name(self) -> &'static str {
        match self {
            Self::SendReset => "send_reset",
            Self::ReceiveReset => "receive_reset",
            Self::Retransmit => "retransmit",
            Self::RetransmitSynack => "retransmit_synack",
            Self::Error => "error",
            Self::Destroy => "destroy",
        }
    }
}

/// A reset, retransmit, error report or socket destruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    pub kind: ContextKind,
    pub ts_ns: u64,
    /// `None` for error reports (they carry a tuple) and resets sent without a socket.
    pub sock: Option<SockAddr>,
    /// Inode of the socket's network namespace; 0 when unknown (no socket).
    pub netns: u32,
    /// `None` when the event does not say.
    pub family: Option<Family>,
    /// Local (`saddr`/`sport`) and remote (`daddr`/`dport`) ends.
    pub tuple: Tuple,
    /// The socket's state, where the tracepoint reports it (resets sent, retransmits).
    pub state: Option<TcpState>,
    /// Errno for `Error` (positive), `err` for `Retransmit`, reason for `SendReset`.
    pub value: i32,
    pub task: Task,
    pub cpu: u32,
}

/// A task accepted a TCP socket (`accept()`/`accept4()` returned it): that task's process is
/// the socket's owner, whatever listener it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accept {
    pub ts_ns: u64,
    pub sock: SockAddr,
    /// Inode of the socket's network namespace; 0 when unknown.
    pub netns: u32,
    pub family: Family,
    /// Local and remote ends, as the socket had them.
    pub tuple: Tuple,
    /// The socket's state when it was accepted (ESTABLISHED, CLOSE_WAIT if the peer already
    /// sent FIN, CLOSE if it already reset).
    pub state: TcpState,
    /// The accepting task (its uid and cgroup included).
    pub task: Task,
    pub cpu: u32,
}

/// A connection's TCP counters at its close, read from the socket just after the transition
/// to CLOSE it follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    pub ts_ns: u64,
    pub sock: SockAddr,
    pub stats: tracer_common::TcpStats,
}

/// Any decoded event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    Transition(Transition),
    Context(Context),
    Accept(Accept),
    Stats(Stats),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than an event ({EVENT_SIZE} bytes)")]
    Short(usize),
    #[error("unknown record kind {0}")]
    Kind(u32),
    #[error("unknown TCP state {0}")]
    State(u8),
    #[error("unknown address family {0}")]
    Family(u16),
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    from_raw(&raw(bytes)?)
}

/// The raw record, as the kernel wrote it (what `--record` keeps).
pub fn raw(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() < EVENT_SIZE {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: the length was checked above; `Event` is plain old data (any bit pattern is
    // valid) and `read_unaligned` makes no alignment assumption.
    Ok(unsafe { bytes.as_ptr().cast::<Event>().read_unaligned() })
}

/// Turns the raw record into a typed event, rejecting values the kernel should not send.
pub fn from_raw(ev: &Event) -> Result<Decoded, DecodeError> {
    let task = Task {
        pid: (ev.pid_tgid >> 32) as u32,
        tid: ev.pid_tgid as u32,
        comm: Comm(ev.comm),
        uid: ev.uid_gid as u32,
        cgroup_id: ev.cgroup_id,
    };
    let ctx_kind = match ev.kind {
        kind::TRANSITION => {
            let family = Family::try_from(ev.family)?;
            return Ok(Decoded::Transition(Transition {
                ts_ns: ev.ts_ns,
                sock: SockAddr(ev.skaddr),
                netns: ev.netns,
                family,
                tuple: Tuple::new(
                    addr(family, &ev.saddr),
                    ev.sport,
                    addr(family, &ev.daddr),
                    ev.dport,
                ),
                old: TcpState::try_from(ev.oldstate)?,
                new: TcpState::try_from(ev.newstate)?,
                task,
                cpu: ev.cpu,
                srtt_us: ev.value as u32,
            }));
        }
        kind::ACCEPT => {
            let family = Family::try_from(ev.family)?;
            return Ok(Decoded::Accept(Accept {
                ts_ns: ev.ts_ns,
                sock: SockAddr(ev.skaddr),
                netns: ev.netns,
                family,
                tuple: Tuple::new(
                    addr(family, &ev.saddr),
                    ev.sport,
                    addr(family, &ev.daddr),
                    ev.dport,
                ),
                state: TcpState::try_from(ev.oldstate)?,
                task,
                cpu: ev.cpu,
            }));
        }
        kind::TCP_STATS => {
            return Ok(Decoded::Stats(Stats {
                ts_ns: ev.ts_ns,
                sock: SockAddr(ev.skaddr),
                stats: tracer_common::TcpStats::unpack(ev),
            }));
        }
        kind::SEND_RESET => ContextKind::SendReset,
        kind::RECEIVE_RESET => ContextKind::ReceiveReset,
        kind::RETRANSMIT => ContextKind::Retransmit,
        kind::RETRANSMIT_SYNACK => ContextKind::RetransmitSynack,
        kind::ERROR_REPORT => ContextKind::Error,
        kind::DESTROY_SOCK => ContextKind::Destroy,
        other => return Err(DecodeError::Kind(other)),
    };
    let family = match ev.family {
        0 => None,
        f => Some(Family::try_from(f)?),
    };
    let (saddr, daddr) = match family {
        Some(f) => (addr(f, &ev.saddr), addr(f, &ev.daddr)),
        None => (
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        ),
    };
    Ok(Decoded::Context(Context {
        kind: ctx_kind,
        ts_ns: ev.ts_ns,
        sock: (ev.skaddr != 0).then_some(SockAddr(ev.skaddr)),
        netns: ev.netns,
        family,
        tuple: Tuple::new(saddr, ev.sport, daddr, ev.dport),
        state: match ev.oldstate {
            0 => None,
            s => Some(TcpState::try_from(s)?),
        },
        value: ev.value,
        task,
        cpu: ev.cpu,
    }))
}

fn addr(family: Family, bytes: &[u8; 16]) -> IpAddr {
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(*bytes)),
    }
}

/// The symbolic name of an errno (`ECONNREFUSED`), or its number.
pub fn errno_name(e: i32) -> String {
    let errno = nix::errno::Errno::from_raw(e.saturating_abs());
    if errno == nix::errno::Errno::UnknownErrno {
        format!("errno {e}")
    } else {
        format!("{errno:?}")
    }
}

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
            Self::RingbufFull => {
                "ring buffer full (the reader fell behind: raise --queue-size or --ring-buffer-size)"
            }
            Self::Recursion => "program skipped by the kernel while already running on that CPU",
            Self::ReadError => "record field could not be read",
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A raw event as the eBPF program would send it.
    pub(crate) fn raw(old: u8, new: u8) -> Event {
        let mut saddr = [0u8; 16];
        saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        Event {
            kind: kind::TRANSITION,
            cpu: 1,
            ts_ns: 1_000,
            skaddr: 0xffff_8881_0000_1000,
            pid_tgid: (42u64 << 32) | 43,
            cgroup_id: 77,
            uid_gid: (5u64 << 32) | 1000,
            comm,
            saddr,
            daddr: saddr,
            sport: 40000,
            dport: 8080,
            family: AF_INET,
            oldstate: old,
            newstate: new,
            value: 0,
            netns: 0,
        }
    }

    fn bytes(ev: &Event) -> Vec<u8> {
        // SAFETY: plain old data of exactly EVENT_SIZE bytes, no padding.
        unsafe { std::slice::from_raw_parts((ev as *const Event).cast::<u8>(), EVENT_SIZE) }
            .to_vec()
    }

    fn transition(ev: &Event) -> Transition {
        match decode(&bytes(ev)).unwrap() {
            Decoded::Transition(t) => t,
            other => panic!("not a transition: {other:?}"),
        }
    }

    #[test]
    fn state_names_match_the_kernel() {
        let names: Vec<_> = (1..=12u8)
            .map(|v| TcpState::try_from(v).unwrap().name())
            .collect();
        assert_eq!(
            names,
            [
                "ESTABLISHED",
                "SYN_SENT",
                "SYN_RECV",
                "FIN_WAIT1",
                "FIN_WAIT2",
                "TIME_WAIT",
                "CLOSE",
                "CLOSE_WAIT",
                "LAST_ACK",
                "LISTEN",
                "CLOSING",
                "NEW_SYN_RECV"
            ]
        );
        assert_eq!(TcpState::try_from(0), Err(DecodeError::State(0)));
        assert_eq!(TcpState::try_from(13), Err(DecodeError::State(13)));
        assert_eq!(
            serde_json::to_string(&TcpState::FinWait2).unwrap(),
            "\"FIN_WAIT2\""
        );
    }

    #[test]
    fn decodes_ipv4() {
        let t = transition(&raw(7, 2));
        assert_eq!(t.old, TcpState::Close);
        assert_eq!(t.new, TcpState::SynSent);
        assert_eq!(t.tuple.local.addr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            (t.task.pid, t.task.tid, t.task.uid, t.task.cgroup_id),
            (42, 43, 1000, 77)
        );
        assert_eq!(t.task.comm.as_str(), "curl");
        assert_eq!(t.sock.to_string(), "0xffff888100001000");
        assert_eq!(
            (t.tuple.local.port, t.tuple.remote.port, t.cpu),
            (40000, 8080, 1)
        );
    }

    #[test]
    fn decodes_ipv6_compressed() {
        let mut ev = raw(1, 4);
        ev.family = AF_INET6;
        ev.saddr = "::1".parse::<Ipv6Addr>().unwrap().octets();
        ev.daddr = "fd00::1:2".parse::<Ipv6Addr>().unwrap().octets();
        let t = transition(&ev);
        assert_eq!(t.family, Family::Ipv6);
        assert_eq!(t.tuple.local.addr.to_string(), "::1");
        assert_eq!(t.tuple.remote.addr.to_string(), "fd00::1:2");
    }

    #[test]
    fn rejects_what_it_does_not_understand() {
        assert_eq!(decode(&[0u8; 10]), Err(DecodeError::Short(10)));
        let mut ev = raw(7, 2);
        ev.family = 1;
        assert_eq!(decode(&bytes(&ev)), Err(DecodeError::Family(1)));
        let mut ev = raw(7, 2);
        ev.kind = 10;
        assert_eq!(decode(&bytes(&ev)), Err(DecodeError::Kind(10)));
        assert_eq!(decode(&bytes(&raw(7, 99))), Err(DecodeError::State(99)));
    }

    #[test]
    fn the_delivery_rate_is_tcp_get_infos() {
        let st = tracer_common::TcpStats {
            rate_delivered: 10,
            rate_interval_us: 1_000,
            mss: 1448,
            present: tracer_common::stat::DELIVERY_RATE,
            ..Default::default()
        };
        // tcp_compute_delivery_rate: rate_delivered * mss_cache * USEC_PER_SEC / interval.
        assert_eq!(st.delivery_rate(), Some(10 * 1448 * 1_000_000 / 1_000));
        // No sample yet: 0, as tcp_info says; a kernel without one of the fields: unknown.
        let none = tracer_common::TcpStats {
            rate_interval_us: 0,
            ..st
        };
        assert_eq!(none.delivery_rate(), Some(0));
        let lacking = tracer_common::TcpStats {
            present: tracer_common::stat::RATE_DELIVERED | tracer_common::stat::RATE_INTERVAL,
            ..st
        };
        assert_eq!(lacking.delivery_rate(), None);
    }

    #[test]
    fn a_counters_record_from_before_the_delivery_rate_has_none() {
        // Recorded when `uid_gid` held `bytes_sent` (present bit 1 << 2) and bits 0..=10
        // were all there was: the rate fields stay unknown, the rest decodes as before.
        let mut ev = raw(7, 1);
        ev.kind = kind::TCP_STATS;
        tracer_common::TcpStats {
            bytes_acked: 5,
            present: 0x7ff,
            ..Default::default()
        }
        .pack(&mut ev);
        ev.uid_gid = 123_456_789; // bytes_sent
        let Decoded::Stats(s) = decode(&bytes(&ev)).unwrap() else {
            panic!("a counters record")
        };
        assert_eq!(
            (
                s.stats.bytes_acked,
                s.stats.rate_delivered,
                s.stats.rate_interval_us
            ),
            (5, 0, 0)
        );
        assert_eq!(s.stats.delivery_rate(), None);
    }

    #[test]
    fn a_servers_established_transition_carries_the_synack_rtt() {
        let mut ev = raw(3, 1);
        ev.value = 51_000 << 3;
        assert_eq!(transition(&ev).srtt_us, 51_000 << 3);
        assert_eq!(transition(&raw(2, 1)).srtt_us, 0);
    }

    #[test]
    fn counters_records_round_trip() {
        let st = tracer_common::TcpStats {
            bytes_acked: 1 << 40,
            bytes_received: 12345,
            bytes_retrans: 77,
            segs_out: 1,
            segs_in: 2,
            total_retrans: 3,
            srtt_us: 4,
            mdev_us: 5,
            min_rtt_us: 6,
            snd_cwnd: 7,
            rate_delivered: 8,
            rate_interval_us: 9,
            mss: 10,
            present: 0x3ffb,
        };
        let mut ev = raw(7, 1);
        ev.kind = kind::TCP_STATS;
        st.pack(&mut ev);
        let Decoded::Stats(s) = decode(&bytes(&ev)).unwrap() else {
            panic!("a counters record")
        };
        assert_eq!(
            (s.stats, s.sock, s.ts_ns),
            (st, SockAddr(ev.skaddr), ev.ts_ns)
        );
    }

    #[test]
    fn decodes_context_events() {
        let mut ev = raw(1, 0);
        ev.kind = kind::ERROR_REPORT;
        ev.skaddr = 0;
        ev.value = 111;
        let Decoded::Context(c) = decode(&bytes(&ev)).unwrap() else {
            panic!()
        };
        assert_eq!((c.kind, c.sock, c.value), (ContextKind::Error, None, 111));
        assert_eq!(c.state, Some(TcpState::Established));
        assert_eq!(errno_name(c.value), "ECONNREFUSED");
        assert_eq!(errno_name(110), "ETIMEDOUT");
        assert_eq!(errno_name(-104), "ECONNRESET");
        assert_eq!(errno_name(99999), "errno 99999");
        ev.kind = kind::SEND_RESET;
        ev.family = 0;
        ev.oldstate = 0;
        let Decoded::Context(c) = decode(&bytes(&ev)).unwrap() else {
            panic!()
        };
        assert_eq!(
            (c.kind, c.family, c.state),
            (ContextKind::SendReset, None, None)
        );
    }

    #[test]
    fn decodes_accepts() {
        let mut ev = raw(1, 0);
        ev.kind = kind::ACCEPT;
        ev.sport = 8080;
        ev.dport = 40000;
        let Decoded::Accept(a) = decode(&bytes(&ev)).unwrap() else {
            panic!()
        };
        assert_eq!((a.state, a.family), (TcpState::Established, Family::Ipv4));
        assert_eq!(
            (a.task.pid, a.task.tid, a.task.uid, a.task.cgroup_id),
            (42, 43, 1000, 77)
        );
        assert_eq!(a.task.comm.as_str(), "curl");
        assert_eq!((a.tuple.local.port, a.tuple.remote.port), (8080, 40000));
        assert_eq!(a.sock, SockAddr(0xffff_8881_0000_1000));
        // An accepted socket always has a family and a state.
        ev.family = 0;
        assert_eq!(decode(&bytes(&ev)), Err(DecodeError::Family(0)));
        ev.family = AF_INET;
        ev.oldstate = 0;
        assert_eq!(decode(&bytes(&ev)), Err(DecodeError::State(0)));
    }

    #[test]
    fn comm_stops_at_nul_and_is_lossy() {
        let mut c = [0u8; 16];
        c[..3].copy_from_slice(&[b'a', 0xff, b'b']);
        assert_eq!(Comm(c).as_str(), "a\u{fffd}b");
        assert_eq!(Comm([b'x'; 16]).as_str().len(), 16);
    }
}
