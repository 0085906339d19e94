//! A netlink sock_diag socket: dumps of the TCP sockets of the namespace it was made in.
use std::{collections::HashMap, io};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{
        ExtensionFlags, InetRequest, InetResponse, InetResponseHeader, SocketId, StateFlags, Timer,
        nlas::Nla,
    },
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

pub use crate::table::SockInfo;
use crate::{
    clock::monotonic_ns,
    decode::{Family, TcpState},
    table::Tuple,
};

/// A netlink sock_diag socket.
pub struct SockDiag {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// Offset of `idiag_expires` (u32, milliseconds) in `struct inet_diag_msg`: after family,
/// state, timer, retrans (4 × u8) and `struct inet_diag_sockid` (48 bytes). The sock_diag crate
/// parses the message but drops the TIME_WAIT timer's value, which is what we need here.
const IDIAG_EXPIRES: usize = 4 + 48;
/// Size of `struct nlmsghdr`.
const NLMSG_HDR: usize = 16;

impl SockDiag {
    pub fn new() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            socket,
            seq: 0,
            buf: vec![0; 64 << 10],
        })
    }

    /// Every timewait socket: local/remote tuple → its substate and the milliseconds left on
    /// its timer. Both substates: an active closer whose peer has not sent its FIN yet is
    /// handed to a timewait socket in FIN_WAIT2 (sock_diag reports the substate, and a dump
    /// for TIME_WAIT alone does not return it), which becomes TIME_WAIT when the FIN comes.
    pub fn time_wait(&mut self) -> io::Result<HashMap<Tuple, TwSocket>> {
        let mut out = HashMap::new();
        for family in [AF_INET, AF_INET6] {
            self.dump(
                family,
                StateFlags::TIME_WAIT | StateFlags::FIN_WAIT2,
                |h, expires_ms, read_ns| {
                    // Full sockets in FIN_WAIT2 (still owned by a process) have no
                    // timewait timer: they are not handed over yet.
                    if !matches!(h.timer, Some(Timer::TimeWait)) {
                        return;
                    }
                    let state = if h.state == TcpState::TimeWait as u8 {
                        TcpState::TimeWait
                    } else {
                        TcpState::FinWait2
                    };
                    out.insert(
                        tuple(&h.socket_id),
                        TwSocket {
                            state,
                            expires_ms,
                            read_ns,
                        },
                    );
                },
            )?;
        }
        Ok(out)
    }

    /// Every TCP socket but timewait ones: tuple → (socket inode, owner uid).
    pub fn inodes(&mut self) -> io::Result<HashMap<Tuple, (u32, u32)>> {
        Ok(self
            .sockets()?
            .into_iter()
            .filter(|d| d.inode != 0)
            .map(|d| (d.tuple, (d.inode, d.uid)))
            .collect())
    }

    /// Every TCP socket but timewait and request ones, both families.
    pub fn sockets(&mut self) -> io::Result<Vec<DiagSocket>> {
        let mut out = Vec::new();
        let states = StateFlags::all() - StateFlags::TIME_WAIT;
        for family in [AF_INET, AF_INET6] {
            self.dump(family, states.clone(), |h, _, _| {
                if h.state == TcpState::NewSynRecv as u8 {
                    return; // request mini-sockets: not connections yet
                }
                if matches!(h.timer, Some(Timer::TimeWait)) {
                    // A timewait mini-socket (an orphaned FIN_WAIT2 handed over early, or
                    // TIME_WAIT itself): owned by no process, and it never shows on the
                    // tracepoints, so it could not be followed.
                    return;
                }
                out.push(DiagSocket {
                    family: if h.family == AF_INET {
                        Family::Ipv4
                    } else {
                        Family::Ipv6
                    },
                    state: h.state,
                    tuple: tuple(&h.socket_id),
                    inode: h.inode,
                    uid: h.uid,
                });
            })?;
        }
        Ok(out)
    }

    /// What `ss -ti` shows of every full socket in `states`: local/remote tuple → its queues
    /// and `tcp_info` (INET_DIAG_INFO). For the stuck reports' "why".
    pub fn info(&mut self, states: StateFlags) -> io::Result<HashMap<Tuple, SockInfo>> {
        let mut out = HashMap::new();
        for family in [AF_INET, AF_INET6] {
            self.dump_ext(family, states.clone(), ExtensionFlags::INFO, |r, _, _| {
                let h = &r.header;
                let tcp = r.nlas.iter().find_map(|n| match n {
                    Nla::TcpInfo(i) => Some(i),
                    _ => None,
                });
                let Some(i) = tcp else {
                    return;
                };
                out.insert(
                    tuple(&h.socket_id),
                    SockInfo {
                        recv_queue: h.recv_queue,
                        send_queue: h.send_queue,
                        notsent_bytes: i.notsent_bytes,
                        unacked: i.unacked,
                        retransmits: i.retransmits,
                        probes: i.probes,
                        backoff: i.backoff,
                        rto_us: i.rto,
                        rtt_us: i.rtt,
                        total_retrans: i.total_retrans,
                        last_data_sent_ms: i.last_data_sent,
                        last_data_recv_ms: i.last_data_recv,
                        last_ack_recv_ms: i.last_ack_recv,
                        snd_wnd: i.snd_wnd,
                        rttvar_us: i.rttvar,
                        min_rtt_us: i.min_rtt,
                        cwnd: i.snd_cwnd,
                        bytes_acked: i.bytes_acked,
                        bytes_received: i.bytes_received,
                        segs_out: i.segs_out,
                        segs_in: i.segs_in,
                        delivery_rate_bytes_per_s: i.delivery_rate,
                    },
                );
            })?;
        }
        Ok(out)
    }

    fn dump(
        &mut self,
        family: u8,
        states: StateFlags,
        mut f: impl FnMut(&InetResponseHeader, u32, u64),
    ) -> io::Result<()> {
        self.dump_ext(family, states, ExtensionFlags::empty(), |r, e, t| {
            f(&r.header, e, t)
        })
    }

    /// Each socket of the dump to `f`, with its `idiag_expires` and about when the kernel
    /// wrote it (CLOCK_MONOTONIC ns): the kernel fills the first datagram while the request
    /// is sent and each next one as the previous one is read, so a timer's "milliseconds
    /// left" are as of then, not of the end of a dump that lists 100,000 sockets.
    fn dump_ext(
        &mut self,
        family: u8,
        states: StateFlags,
        extensions: ExtensionFlags,
        mut f: impl FnMut(&InetResponse, u32, u64),
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
        hdr.sequence_number = self.seq;
        let socket_id = if family == AF_INET {
            SocketId::new_v4()
        } else {
            SocketId::new_v6()
        };
        let mut req = NetlinkMessage::new(
            hdr,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions,
                states,
                socket_id,
            })
            .into(),
        );
        req.finalize();
        let mut out = vec![0; req.buffer_len()];
        req.serialize(&mut out);
        let mut filled = monotonic_ns();
        self.socket.send(&out, 0)?;
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let this = filled;
            filled = monotonic_ns();
            let mut g = |r: &InetResponse, e: u32| f(r, e, this);
            if read_answer(&self.buf[..n], self.seq, &mut g)? == Answer::Done {
                return Ok(());
            }
        }
    }
}

/// Whether a dump's answer is complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Done,
    /// More datagrams follow.
    More,
}

/// One datagram of a dump's answer: each `inet_diag_msg` of the dump numbered `seq` to `f`
/// with its `idiag_expires`. Messages of another sequence number are skipped: what is left
/// of an earlier dump that failed half-way (its end would otherwise end this one early, and
/// the sockets not listed yet would look gone).
fn read_answer(
    bytes: &[u8],
    seq: u32,
    f: &mut impl FnMut(&InetResponse, u32),
) -> io::Result<Answer> {
    let mut off = 0;
    while off < bytes.len() {
        let rest = &bytes[off..];
        let msg = NetlinkMessage::<SockDiagMessage>::deserialize(rest)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {e}")))?;
        let len = msg.header.length as usize;
        if msg.header.sequence_number == seq {
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(Answer::Done),
                NetlinkPayload::Error(e) => {
                    // The kernel's errno (ENOENT: no inet_diag/tcp_diag here).
                    let io = e.to_io();
                    return Err(io::Error::new(io.kind(), SockDiagError(io)));
                }
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    f(&r, idiag_expires(rest).unwrap_or(0));
                }
                _ => {}
            }
        }
        if len == 0 {
            break;
        }
        // Messages are 4-byte aligned (NLMSG_ALIGN).
        off += (len + 3) & !3;
    }
    Ok(Answer::More)
}

/// `idiag_expires` of the `inet_diag_msg` that `msg` (a netlink message, from its header)
/// carries.
fn idiag_expires(msg: &[u8]) -> Option<u32> {
    let at = NLMSG_HDR + IDIAG_EXPIRES;
    let b = msg.get(at..at + 4)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// An error the kernel answered a dump with: its errno is kept (`raw_os_error`), so a
/// caller can tell "not available on this kernel" from a failure worth retrying.
#[derive(Debug)]
pub struct SockDiagError(pub io::Error);

impl std::fmt::Display for SockDiagError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sock_diag: {}", self.0)
    }
}

impl std::error::Error for SockDiagError {}

/// Whether a dump failed because this kernel cannot answer it at all (no `inet_diag` or
/// `tcp_diag`, no netlink sock_diag): retrying will not help.
pub fn unavailable(e: &io::Error) -> bool {
    let errno = e.raw_os_error().or_else(|| {
        e.get_ref()
            .and_then(|i| i.downcast_ref::<SockDiagError>())
            .and_then(|s| s.0.raw_os_error())
    });
    matches!(
        errno,
        Some(libc::ENOENT | libc::EPROTONOSUPPORT | libc::EOPNOTSUPP | libc::EAFNOSUPPORT)
    )
}

/// A timewait socket as sock_diag reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TwSocket {
    /// TIME_WAIT, or FIN_WAIT2 (an orphan waiting for the peer's FIN).
    pub state: TcpState,
    /// Milliseconds left on its timer...
    pub expires_ms: u32,
    /// ...when the kernel said so (CLOCK_MONOTONIC ns; at most a datagram's parsing early).
    pub read_ns: u64,
}

impl TwSocket {
    /// When its timer fires (CLOCK_MONOTONIC ns), to the kernel's jiffy and millisecond.
    pub fn expires_ns(&self) -> u64 {
        self.read_ns + u64::from(self.expires_ms) * 1_000_000
    }
}

/// One socket as sock_diag reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiagSocket {
    pub family: Family,
    /// Raw `TCP_*` state.
    pub state: u8,
    pub tuple: Tuple,
    pub inode: u32,
    pub uid: u32,
}

fn tuple(id: &SocketId) -> Tuple {
    Tuple::new(
        id.source_address,
        id.source_port,
        id.destination_address,
        id.destination_port,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// (state, a timewait timer, local port, remote port, expires) of one socket.
    type Got = (u8, bool, u16, u16, u32);

    /// Everything `read_answer` hands over.
    fn read(datagrams: &[Vec<u8>], seq: u32) -> (Vec<Got>, io::Result<Answer>) {
        let mut got = Vec::new();
        let mut last = Ok(Answer::More);
        for d in datagrams {
            last = read_answer(d, seq, &mut |r: &InetResponse, expires| {
                let h = &r.header;
                got.push((
                    h.state,
                    matches!(h.timer, Some(Timer::TimeWait)),
                    h.socket_id.source_port,
                    h.socket_id.destination_port,
                    expires,
                ));
            });
            if !matches!(last, Ok(Answer::More)) {
                break;
            }
        }
        (got, last)
    }

    /// A real answer of this kernel (6.18) to the dump `time_wait` asks for, captured from
    /// the socket: two timewait sockets in TIME_WAIT, then an orphaned FIN_WAIT2
    /// 127.0.0.1:59006 -> 127.0.0.1:43451 that `ss -tanoe state fin-wait-2` listed at that
    /// moment as `timer:(timewait,59sec,0)`; then NLMSG_DONE in a datagram of its own.
    const REAL_ANSWER: &str = "6000000014000200010000008218000002060300b4d892b37f0000010000000000000000000000007f0000010000000000000000000000000000000070b600000000000060d400000000000000000000000000000000000008000f000000000060000000140002000100000082180000020603009f10d5e17f0000010000000000000000000000007f00000100000000000000000000000000000000500301000000000080d500000000000000000000000000000000000008000f00000000006000000014000200010000008218000002050300e67ea9bb7f0000010000000000000000000000007f0000010000000000000000000000000000000071b600000000000018ea00000000000000000000000000000000000008000f0000000000";
    const REAL_DONE: &str = "1400000003000200010000008218000000000000";

    #[test]
    fn idiag_expires_is_read_from_a_real_answer() {
        let (got, end) = read(&[hex(REAL_ANSWER), hex(REAL_DONE)], 1);
        assert_eq!(end.unwrap(), Answer::Done);
        let tw = true;
        assert_eq!(
            got,
            [
                (TcpState::TimeWait as u8, tw, 46296, 37555, 54_368),
                (TcpState::TimeWait as u8, tw, 40720, 54753, 54_656),
                // 59.928 s left: what ss rounds down to "59sec".
                (TcpState::FinWait2 as u8, tw, 59006, 43451, 59_928),
            ]
        );
    }

    /// A message laid out as the kernel's `struct nlmsghdr` + `struct inet_diag_msg`
    /// (include/uapi/linux/inet_diag.h) with a different value in every field around
    /// `idiag_expires`: only that one is read.
    #[test]
    fn idiag_expires_is_the_field_after_the_socket_id() {
        let mut m = Vec::new();
        m.extend_from_slice(&88u32.to_ne_bytes()); // nlmsg_len: 16 + 72
        m.extend_from_slice(&20u16.to_ne_bytes()); // SOCK_DIAG_BY_FAMILY
        m.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
        m.extend_from_slice(&7u32.to_ne_bytes()); // nlmsg_seq
        m.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid
        m.extend_from_slice(&[2, TcpState::FinWait2 as u8, 3, 0]); // family, state, timer, retrans
        m.extend_from_slice(&1234u16.to_be_bytes()); // idiag_sport
        m.extend_from_slice(&80u16.to_be_bytes()); // idiag_dport
        m.extend_from_slice(&[127, 0, 0, 1]);
        m.extend_from_slice(&[0; 12]);
        m.extend_from_slice(&[127, 0, 0, 2]);
        m.extend_from_slice(&[0; 12]);
        m.extend_from_slice(&0x1111_1111u32.to_ne_bytes()); // idiag_if
        m.extend_from_slice(&[0x22; 8]); // idiag_cookie
        m.extend_from_slice(&0x0001_2345u32.to_ne_bytes()); // idiag_expires
        m.extend_from_slice(&0x3333_3333u32.to_ne_bytes()); // idiag_rqueue
        m.extend_from_slice(&0x4444_4444u32.to_ne_bytes()); // idiag_wqueue
        m.extend_from_slice(&0x5555_5555u32.to_ne_bytes()); // idiag_uid
        m.extend_from_slice(&0x6666_6666u32.to_ne_bytes()); // idiag_inode
        assert_eq!(m.len(), 88);
        assert_eq!(idiag_expires(&m), Some(0x0001_2345));
        let (got, end) = read(&[m.clone()], 7);
        assert_eq!(end.unwrap(), Answer::More);
        assert_eq!(
            got,
            [(TcpState::FinWait2 as u8, true, 1234, 80, 0x0001_2345)]
        );
        assert_eq!(idiag_expires(&m[..70]), None, "a truncated message");
    }

    /// What an earlier dump left unread (it failed half-way) belongs to it: its sockets are
    /// not this dump's, and its end does not end this one.
    #[test]
    fn an_earlier_dumps_leftovers_are_skipped() {
        let (got, end) = read(&[hex(REAL_ANSWER), hex(REAL_DONE)], 2);
        assert!(got.is_empty(), "{got:?}");
        assert_eq!(end.unwrap(), Answer::More);
    }

    /// The kernel's refusal keeps its errno: ENOENT (no inet_diag or tcp_diag) is "not
    /// available here", anything else is worth retrying.
    #[test]
    fn a_refusal_keeps_its_errno() {
        let nack = |errno: i32| {
            let mut m = Vec::new();
            m.extend_from_slice(&36u32.to_ne_bytes());
            m.extend_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
            m.extend_from_slice(&0u16.to_ne_bytes());
            m.extend_from_slice(&3u32.to_ne_bytes());
            m.extend_from_slice(&0u32.to_ne_bytes());
            m.extend_from_slice(&(-errno).to_ne_bytes());
            m.extend_from_slice(&[0; 16]); // the request's header
            m
        };
        let (_, end) = read(&[nack(libc::ENOENT)], 3);
        let e = end.unwrap_err();
        assert!(unavailable(&e), "{e}");
        assert!(e.to_string().contains("sock_diag"), "{e}");
        let (_, end) = read(&[nack(libc::EBUSY)], 3);
        assert!(!unavailable(&end.unwrap_err()));
        assert!(!unavailable(&io::Error::other("a dump cut short")));
    }
}
