//! The serde versions of the hand-written JSON records: the reference the tests compare the
//! hand-written bytes with.
use std::{
    io::{self, Write},
    net::IpAddr,
};

use serde::Serialize;

use super::json::{Json, errno_of, netns_of};
use crate::{
    cgroup::Identity,
    decode::{Comm, Context, ContextKind, Family, SockAddr, TcpState, Transition, errno_name},
    table::{CloseClass, Conn, DiagTransition, Owner, OwnerSource, Role, SeenFrom, TimeWait},
};

/// An owner object as serde writes it: the reference for the hand-written one.
#[cfg(test)]
#[derive(Serialize)]
struct OwnerRef<'a> {
    pid: u32,
    comm: &'a Comm,
    uid: u32,
    cgroup_id: u64,
    cgroup: Option<&'a str>,
    unit: Option<&'a str>,
    container_id: Option<&'a str>,
    pod_uid: Option<&'a str>,
    source: OwnerSource,
}

#[cfg(test)]
fn owner_ref<'a>(o: Option<&'a Owner>, identity: Option<&'a Identity>) -> Option<OwnerRef<'a>> {
    o.map(|o| OwnerRef {
        pid: o.pid,
        comm: &o.comm,
        uid: o.uid,
        cgroup_id: o.cgroup_id,
        cgroup: identity.map(|i| i.path.as_str()),
        unit: identity.and_then(|i| i.unit.as_deref()),
        container_id: identity.and_then(|i| i.container_id.as_deref()),
        pod_uid: identity.and_then(|i| i.pod_uid.as_deref()),
        source: o.source,
    })
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
    netns: Option<u32>,
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
    owner: Option<OwnerRef<'a>>,
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
    netns: Option<u32>,
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
    owner: Option<OwnerRef<'a>>,
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
    netns: Option<u32>,
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
    owner: Option<OwnerRef<'a>>,
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
    orphan: Option<OrphanJson>,
    tcp: Option<TcpJson>,
    seen_from: SeenFrom,
}

#[derive(Serialize)]
struct TcpJson {
    bytes_sent: Option<u64>,
    bytes_received: Option<u64>,
    bytes_retrans: Option<u64>,
    segs_out: Option<u32>,
    segs_in: Option<u32>,
    retrans_total: Option<u32>,
    srtt_us: Option<u32>,
    rttvar_us: Option<u32>,
    min_rtt_us: Option<u32>,
    cwnd: Option<u32>,
    handshake_rtt_us: Option<u64>,
    delivery_rate_bytes_per_s: Option<u64>,
}

#[derive(Serialize)]
struct OrphanJson {
    handoff_ns: Option<u64>,
    expires_ns: Option<u64>,
    end: Option<&'static str>,
    end_ns: Option<u64>,
    source: Option<&'static str>,
}

impl<W: Write> Json<W> {
    /// The transition record through serde: the reference [`Self::fast_transition`] must match.
    #[cfg(test)]
    pub(super) fn serde_transition(
        &mut self,
        t: &Transition,
        in_old_ns: Option<u64>,
        owner: Option<&Owner>,
    ) -> io::Result<()> {
        let identity = owner.and_then(|o| self.names.get(o.cgroup_id));
        let rec = TransitionJson {
            ty: "transition",
            time: self.time(t.ts_ns),
            ts_ns: t.ts_ns,
            sock: t.sock,
            netns: netns_of(t.netns),
            family: t.family,
            saddr: t.tuple.local.addr,
            sport: t.tuple.local.port,
            daddr: t.tuple.remote.addr,
            dport: t.tuple.remote.port,
            old: t.old,
            new: t.new,
            in_old_ns,
            pid: Some(t.task.pid),
            tid: Some(t.task.tid),
            comm: Some(&t.task.comm),
            cpu: Some(t.cpu),
            owner: owner_ref(owner, identity.as_deref()),
            source: "tracepoint",
            expires_ns: None,
        };
        self.emit(&rec)
    }

    /// The serde reference of [`Self::fast_diag_transition`].
    #[cfg(test)]
    pub(super) fn serde_diag_transition(&mut self, d: &DiagTransition) -> io::Result<()> {
        let identity = d.owner.and_then(|o| self.names.get(o.cgroup_id));
        let rec = TransitionJson {
            ty: "transition",
            time: self.time(d.ts_ns),
            ts_ns: d.ts_ns,
            sock: d.sock,
            netns: netns_of(d.netns),
            family: d.family,
            saddr: d.tuple.local.addr,
            sport: d.tuple.local.port,
            daddr: d.tuple.remote.addr,
            dport: d.tuple.remote.port,
            old: d.old,
            new: d.new,
            in_old_ns: d.in_old_ns,
            pid: None,
            tid: None,
            comm: None,
            cpu: None,
            owner: owner_ref(d.owner.as_ref(), identity.as_deref()),
            source: "sock_diag",
            expires_ns: d.expires_ns,
        };
        self.emit(&rec)
    }

    /// The serde reference of [`Self::fast_event`].
    #[cfg(test)]
    pub(super) fn serde_event(&mut self, c: &Context, owner: Option<&Owner>) -> io::Result<()> {
        let identity = owner.and_then(|o| self.names.get(o.cgroup_id));
        let rec = EventJson {
            ty: "event",
            kind: c.kind,
            time: self.time(c.ts_ns),
            ts_ns: c.ts_ns,
            sock: c.sock,
            netns: netns_of(c.netns),
            family: c.family,
            saddr: c.tuple.local.addr,
            sport: c.tuple.local.port,
            daddr: c.tuple.remote.addr,
            dport: c.tuple.remote.port,
            state: c.state,
            errno: errno_of(c.kind, c.value),
            value: c.value,
            pid: c.task.pid,
            tid: c.task.tid,
            comm: &c.task.comm,
            cpu: c.cpu,
            owner: owner_ref(owner, identity.as_deref()),
        };
        self.emit(&rec)
    }

    /// The serde reference of [`Self::fast_connection`].
    #[cfg(test)]
    pub(super) fn serde_connection(&mut self, c: &Conn) -> io::Result<()> {
        let identity = c.owner.and_then(|o| self.names.get(o.cgroup_id));
        let rec = ConnectionJson {
            ty: "connection",
            sock: c.sock,
            netns: netns_of(c.netns),
            family: c.family,
            saddr: c.tuple.local.addr,
            sport: c.tuple.local.port,
            daddr: c.tuple.remote.addr,
            dport: c.tuple.remote.port,
            role: c.role,
            states: &c.states,
            durations_ns: c.durations_ns(),
            start_ns: c.start_ns(),
            end_ns: c.end_ns(),
            lifetime_ns: c.lifetime_ns(),
            start_time: self.time(c.start_ns()),
            incomplete: c.incomplete,
            owner: owner_ref(c.owner.as_ref(), identity.as_deref()),
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
            orphan: c.orphan.as_deref().map(|o| OrphanJson {
                handoff_ns: (o.handoff_ns != 0).then_some(o.handoff_ns),
                expires_ns: o.expires_ns,
                end: o.end.map(|e| e.how.name()),
                end_ns: o.end.map(|e| e.ts_ns),
                source: o.end.map(|e| e.how.source()),
            }),
            tcp: c.tcp.as_deref().map(|t| {
                use tracer_common::stat;
                let has = |bit: u32| t.present & bit != 0;
                TcpJson {
                    bytes_sent: c.data_bytes().0,
                    bytes_received: c.data_bytes().1,
                    bytes_retrans: has(stat::BYTES_RETRANS).then_some(t.bytes_retrans),
                    segs_out: has(stat::SEGS_OUT).then_some(t.segs_out),
                    segs_in: has(stat::SEGS_IN).then_some(t.segs_in),
                    retrans_total: has(stat::TOTAL_RETRANS).then_some(t.total_retrans),
                    srtt_us: has(stat::SRTT).then_some(t.srtt_us >> 3),
                    rttvar_us: has(stat::MDEV).then_some(t.mdev_us >> 2),
                    min_rtt_us: (has(stat::MIN_RTT) && t.min_rtt_us != u32::MAX)
                        .then_some(t.min_rtt_us),
                    cwnd: has(stat::SND_CWND).then_some(t.snd_cwnd),
                    handshake_rtt_us: c.handshake_rtt_ns().map(|n| n / 1_000),
                    delivery_rate_bytes_per_s: t.delivery_rate(),
                }
            }),
            seen_from: c.seen_from,
        };
        self.emit(&rec)
    }
}
