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
                |h, expires_ms| {
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
                    out.insert(tuple(&h.socket_id), TwSocket { state, expires_ms });
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
            self.dump(family, states.clone(), |h, _| {
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
            self.dump_ext(family, states.clone(), ExtensionFlags::INFO, |r, _| {
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
        mut f: impl FnMut(&InetResponseHeader, u32),
    ) -> io::Result<()> {
        self.dump_ext(family, states, ExtensionFlags::empty(), |r, e| {
            f(&r.header, e)
        })
    }

    fn dump_ext(
        &mut self,
        family: u8,
        states: StateFlags,
        extensions: ExtensionFlags,
        mut f: impl FnMut(&InetResponse, u32),
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
        self.socket.send(&out, 0)?;
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut off = 0;
            while off < n {
                let bytes = &self.buf[off..n];
                let msg = NetlinkMessage::<SockDiagMessage>::deserialize(bytes).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {e}"))
                })?;
                let len = msg.header.length as usize;
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => {
                        return Err(io::Error::other(format!("sock_diag: {e:?}")));
                    }
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                        let at = NLMSG_HDR + IDIAG_EXPIRES;
                        let expires = bytes
                            .get(at..at + 4)
                            .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        f(&r, expires);
                    }
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }
}

/// A timewait socket as sock_diag reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TwSocket {
    /// TIME_WAIT, or FIN_WAIT2 (an orphan waiting for the peer's FIN).
    pub state: TcpState,
    /// Milliseconds left on its timer.
    pub expires_ms: u32,
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
