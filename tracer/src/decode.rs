//! Bytes from the ring buffer → typed events. Raw kernel integers become enums here, and
//! anything the decoder does not understand is an error, never a guess.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use serde::{Serialize, Serializer};
use tracer_common::{AF_INET, AF_INET6, KIND_TRANSITION, TRANSITION_EVENT_SIZE, TransitionEvent};

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
#[derive(Clone, Copy, PartialEq, Eq, Default)]
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

/// One decoded TCP state transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    pub sock: SockAddr,
    pub family: Family,
    pub saddr: IpAddr,
    pub sport: u16,
    pub daddr: IpAddr,
    pub dport: u16,
    pub old: TcpState,
    pub new: TcpState,
    /// The task on the CPU (tgid), not necessarily the socket's owner.
    pub pid: u32,
    pub tid: u32,
    pub comm: Comm,
    pub cpu: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than an event ({TRANSITION_EVENT_SIZE} bytes)")]
    Short(usize),
    #[error("unknown record kind {0}")]
    Kind(u32),
    #[error("unknown TCP state {0}")]
    State(u8),
    #[error("unknown address family {0}")]
    Family(u16),
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Transition, DecodeError> {
    if bytes.len() < TRANSITION_EVENT_SIZE {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: the length was checked above; `TransitionEvent` is plain old data (any bit
    // pattern is valid) and `read_unaligned` makes no alignment assumption.
    let ev = unsafe { bytes.as_ptr().cast::<TransitionEvent>().read_unaligned() };
    from_raw(&ev)
}

/// Turns the raw record into a [`Transition`], rejecting values the kernel should not send.
pub fn from_raw(ev: &TransitionEvent) -> Result<Transition, DecodeError> {
    if ev.kind != KIND_TRANSITION {
        return Err(DecodeError::Kind(ev.kind));
    }
    let family = Family::try_from(ev.family)?;
    Ok(Transition {
        ts_ns: ev.ts_ns,
        sock: SockAddr(ev.skaddr),
        family,
        saddr: addr(family, &ev.saddr),
        sport: ev.sport,
        daddr: addr(family, &ev.daddr),
        dport: ev.dport,
        old: TcpState::try_from(ev.oldstate)?,
        new: TcpState::try_from(ev.newstate)?,
        pid: (ev.pid_tgid >> 32) as u32,
        tid: ev.pid_tgid as u32,
        comm: Comm(ev.comm),
        cpu: ev.cpu,
    })
}

fn addr(family: Family, bytes: &[u8; 16]) -> IpAddr {
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(*bytes)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A raw event as the eBPF program would send it.
    pub(crate) fn raw(old: u8, new: u8) -> TransitionEvent {
        let mut saddr = [0u8; 16];
        saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        TransitionEvent {
            ts_ns: 1_000,
            skaddr: 0xffff_8881_0000_1000,
            saddr,
            daddr: saddr,
            pid_tgid: (42u64 << 32) | 43,
            comm,
            sport: 40000,
            dport: 8080,
            family: AF_INET,
            oldstate: old,
            newstate: new,
            cpu: 1,
            kind: KIND_TRANSITION,
        }
    }

    fn bytes(ev: &TransitionEvent) -> Vec<u8> {
        // SAFETY: plain old data of exactly TRANSITION_EVENT_SIZE bytes, no padding.
        unsafe {
            std::slice::from_raw_parts(
                (ev as *const TransitionEvent).cast::<u8>(),
                TRANSITION_EVENT_SIZE,
            )
        }
        .to_vec()
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
        let t = decode(&bytes(&raw(7, 2))).unwrap();
        assert_eq!(t.old, TcpState::Close);
        assert_eq!(t.new, TcpState::SynSent);
        assert_eq!(t.saddr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((t.pid, t.tid), (42, 43));
        assert_eq!(t.comm.as_str(), "curl");
        assert_eq!(t.sock.to_string(), "0xffff888100001000");
        assert_eq!((t.sport, t.dport, t.cpu), (40000, 8080, 1));
    }

    #[test]
    fn decodes_ipv6_compressed() {
        let mut ev = raw(1, 4);
        ev.family = AF_INET6;
        ev.saddr = "::1".parse::<Ipv6Addr>().unwrap().octets();
        ev.daddr = "fd00::1:2".parse::<Ipv6Addr>().unwrap().octets();
        let t = decode(&bytes(&ev)).unwrap();
        assert_eq!(t.family, Family::Ipv6);
        assert_eq!(t.saddr.to_string(), "::1");
        assert_eq!(t.daddr.to_string(), "fd00::1:2");
    }

    #[test]
    fn rejects_what_it_does_not_understand() {
        assert_eq!(decode(&[0u8; 10]), Err(DecodeError::Short(10)));
        let mut ev = raw(7, 2);
        ev.family = 1;
        assert_eq!(decode(&bytes(&ev)), Err(DecodeError::Family(1)));
        let mut ev = raw(7, 2);
        ev.kind = 9;
        assert_eq!(decode(&bytes(&ev)), Err(DecodeError::Kind(9)));
        assert_eq!(decode(&bytes(&raw(7, 99))), Err(DecodeError::State(99)));
    }

    #[test]
    fn comm_stops_at_nul_and_is_lossy() {
        let mut c = [0u8; 16];
        c[..3].copy_from_slice(&[b'a', 0xff, b'b']);
        assert_eq!(Comm(c).as_str(), "a\u{fffd}b");
        assert_eq!(Comm([b'x'; 16]).as_str().len(), 16);
    }
}
