use std::net::IpAddr;

use super::*;
use crate::decode::{Accept, Task};
use crate::decode::{Comm, TcpState::*};

/// The network namespace of the test sockets.
pub(crate) const NETNS: u32 = 4_026_531_840;

pub(crate) fn task(pid: u32, comm: &str) -> Task {
    let mut c = [0u8; 16];
    c[..comm.len()].copy_from_slice(comm.as_bytes());
    Task {
        pid,
        tid: pid,
        comm: Comm(c),
        uid: 1000,
        cgroup_id: 9,
    }
}

pub(crate) fn tr(
    sock: u64,
    ts: u64,
    old: TcpState,
    new: TcpState,
    sport: u16,
    dport: u16,
) -> Transition {
    Transition {
        ts_ns: ts,
        sock: SockAddr(sock),
        netns: NETNS,
        family: Family::Ipv4,
        tuple: Tuple::new(
            "127.0.0.1".parse().unwrap(),
            sport,
            if dport == 0 {
                "0.0.0.0".parse().unwrap()
            } else {
                "127.0.0.1".parse().unwrap()
            },
            dport,
        ),
        old,
        new,
        task: task(7, "app"),
        cpu: 0,
        srtt_us: 0,
    }
}

pub(crate) fn ctx(
    sock: Option<u64>,
    ts: u64,
    kind: ContextKind,
    state: Option<TcpState>,
    value: i32,
) -> Context {
    Context {
        kind,
        ts_ns: ts,
        sock: sock.map(SockAddr),
        netns: if sock.is_some() { NETNS } else { 0 },
        family: Some(Family::Ipv4),
        tuple: Tuple::new(
            "127.0.0.1".parse().unwrap(),
            40000,
            "127.0.0.1".parse().unwrap(),
            80,
        ),
        state,
        value,
        task: task(0, "swapper/0"),
        cpu: 0,
    }
}

/// Feeds transitions and context events in order, then releases everything.
pub(crate) fn run(table: &mut Table, events: &[Ev]) -> Vec<Conn> {
    let mut out = Vec::new();
    for e in events {
        match e {
            Ev::T(t) => out.extend(table.apply(t).finished),
            Ev::C(c) => {
                table.context(c);
            }
        }
    }
    out.extend(table.flush());
    out
}

#[derive(Clone)]
pub(crate) enum Ev {
    T(Transition),
    C(Context),
}

fn ts(evs: &[Transition]) -> Vec<Ev> {
    evs.iter().cloned().map(Ev::T).collect()
}

#[test]
fn client_closing_first_fills_its_port_and_times_each_state() {
    let mut t = Table::new();
    let done = run(
        &mut t,
        &ts(&[
            tr(1, 100, Close, SynSent, 0, 8080),
            tr(1, 150, SynSent, Established, 40000, 8080),
            tr(1, 1150, Established, FinWait1, 40000, 8080),
            tr(1, 1160, FinWait1, FinWait2, 40000, 8080),
            tr(1, 1400, FinWait2, Close, 40000, 8080),
        ]),
    );
    assert_eq!(done.len(), 1);
    let c = &done[0];
    assert_eq!(c.role, Role::Client);
    assert_eq!(
        c.states[..],
        [Close, SynSent, Established, FinWait1, FinWait2, Close]
    );
    assert_eq!(
        c.durations_ns(),
        [None, Some(50), Some(1000), Some(10), Some(240)]
    );
    assert_eq!(
        (c.start_ns(), c.end_ns(), c.lifetime_ns()),
        (100, 1400, 1300)
    );
    assert_eq!((c.tuple.local.port, c.tuple.remote.port), (40000, 8080));
    assert_eq!(c.close, Some(CloseClass::Active));
    assert!(!c.incomplete);
    assert!(t.is_empty(), "CLOSE frees the entry");
}

#[test]
fn a_closed_record_waits_for_the_grace_period_or_its_time_wait_lookup() {
    let mut t = Table::new();
    t.apply(&tr(1, 100, Close, SynSent, 0, 80));
    t.apply(&tr(1, 200, SynSent, Close, 0, 80));
    assert!(t.expire(200 + GRACE_NS - 1).is_empty());
    assert_eq!(t.expire(200 + GRACE_NS).len(), 1);

    // An active closer waits for its TIME_WAIT lookup, up to TIME_WAIT_WAIT_NS.
    for (s, tw) in [(2, true), (3, false)] {
        t.apply(&tr(s, 0, Close, SynSent, 0, 80));
        t.apply(&tr(s, 1, SynSent, Established, 5, 80));
        t.apply(&tr(s, 2, Established, FinWait1, 5, 80));
        t.apply(&tr(s, 3, FinWait1, FinWait2, 5, 80));
        t.apply(&tr(s, 4, FinWait2, Close, 5, 80));
        if tw {
            let p: Vec<_> = t.time_wait_pending().collect();
            assert_eq!(
                (p.len(), p[0].from, p[0].tuple.local.port),
                (1, FinWait2, 5)
            );
            let w = super::TimeWait {
                confirmed: true,
                expires_ns: Some(60_000_000_004),
            };
            t.set_time_wait(SockAddr(s), NsTuple::new(p[0].netns, p[0].tuple), Some(w));
            let c = t.expire(4 + GRACE_NS);
            assert_eq!(c[0].time_wait, Some(w));
        } else {
            assert!(
                t.expire(4 + GRACE_NS).is_empty(),
                "still waiting for the lookup"
            );
            let c = t.expire(4 + TIME_WAIT_WAIT_NS);
            assert_eq!((c.len(), c[0].time_wait), (1, None));
        }
    }
}

#[test]
fn an_address_reused_before_the_time_wait_lookup_loses_no_connection() {
    // Measured on this kernel with fast churn: an active closer's struct sock is freed
    // and given to the next accepted child (LISTEN -> SYN_RECV) within the grace period.
    let mut t = Table::new();
    t.apply(&tr(1, 0, Close, SynSent, 0, 80));
    t.apply(&tr(1, 1, SynSent, Established, 5, 80));
    t.apply(&tr(1, 2, Established, FinWait1, 5, 80));
    t.apply(&tr(1, 3, FinWait1, FinWait2, 5, 80));
    t.apply(&tr(1, 4, FinWait2, Close, 5, 80));
    // The same address, a new server child, another tuple.
    let a = t.apply(&tr(1, 5, Listen, SynRecv, 80, 6));
    assert!(
        a.finished.is_empty(),
        "the closer still waits for its lookup"
    );
    t.apply(&tr(1, 6, SynRecv, Established, 80, 6));
    let p: Vec<_> = t.time_wait_pending().collect();
    assert_eq!((p.len(), p[0].tuple.local.port), (1, 5));
    let w = super::TimeWait {
        confirmed: true,
        expires_ns: Some(60_000_000_004),
    };
    t.set_time_wait(SockAddr(1), NsTuple::new(p[0].netns, p[0].tuple), Some(w));
    let done = t.expire(4 + GRACE_NS);
    assert_eq!(done.len(), 1);
    assert_eq!(
        (done[0].role, done[0].time_wait, done[0].close),
        (Role::Client, Some(w), Some(CloseClass::Active))
    );
    assert_eq!(t.len(), 1, "the new socket is still open");
    t.apply(&tr(1, 7, Established, Close, 80, 6));
    assert_eq!(t.flush().len(), 1);
    assert!(t.is_idle());
}

#[test]
fn in_old_is_the_time_since_the_previous_transition() {
    let mut t = Table::new();
    assert_eq!(t.apply(&tr(1, 100, Close, SynSent, 0, 80)).in_old_ns, None);
    assert_eq!(
        t.apply(&tr(1, 130, SynSent, Established, 5, 80)).in_old_ns,
        Some(30)
    );
}

#[test]
fn roles() {
    let mut t = Table::new();
    t.apply(&tr(1, 1, Close, SynSent, 0, 80));
    t.apply(&tr(2, 1, Listen, SynRecv, 80, 5));
    t.apply(&tr(3, 1, Close, Listen, 80, 0));
    t.apply(&tr(4, 1, Established, CloseWait, 80, 5));
    let mut roles: Vec<_> = t.open().map(|c| (c.sock.0, c.role, c.incomplete)).collect();
    roles.sort_by_key(|r| r.0);
    assert_eq!(
        roles,
        [
            (1, Role::Client, false),
            (2, Role::Server, false),
            (3, Role::Listener, false),
            (4, Role::Unknown, true)
        ]
    );
}

#[test]
fn owners_come_from_process_context_and_are_inherited_by_accepted_sockets() {
    let mut t = Table::new();
    let mut listen = tr(9, 1, Close, Listen, 80, 0);
    listen.task = task(100, "server");
    assert_eq!(
        t.apply(&listen).owner.map(|o| (o.pid, o.source)),
        Some((100, OwnerSource::Event))
    );
    let mut connect = tr(1, 2, Close, SynSent, 0, 80);
    connect.task = task(200, "client");
    t.apply(&connect);
    // Softirq: the task on the CPU is the client, but the owner stays put.
    let a = t.apply(&tr(1, 3, SynSent, Established, 5000, 80));
    assert_eq!(a.owner.map(|o| o.pid), Some(200));
    let mut child = tr(2, 4, Listen, SynRecv, 80, 5000);
    child.task = task(200, "client");
    let a = t.apply(&child);
    let o = a.owner.unwrap();
    assert_eq!(
        (o.pid, o.comm.as_str().into_owned(), o.source),
        (100, "server".into(), OwnerSource::Inherited)
    );
    t.apply(&tr(2, 5, SynRecv, Established, 80, 5000));
    // The server's own close confirms it (a worker process may be the real owner).
    let mut close = tr(2, 6, Established, FinWait1, 80, 5000);
    close.task = task(101, "worker");
    let o = t.apply(&close).owner.unwrap();
    assert_eq!((o.pid, o.source), (101, OwnerSource::Event));
}

/// `pid` (comm `comm`) accepted the socket `sock` (local port `sport`, remote `dport`).
pub(crate) fn acc(
    sock: u64,
    ts: u64,
    state: TcpState,
    (sport, dport): (u16, u16),
    pid: u32,
    comm: &str,
) -> Accept {
    let t = tr(sock, ts, state, state, sport, dport);
    Accept {
        ts_ns: ts,
        sock: t.sock,
        netns: t.netns,
        family: t.family,
        tuple: t.tuple,
        state,
        task: task(pid, comm),
        cpu: 0,
    }
}

fn owner_of(t: &Table, sock: u64) -> Option<(u32, OwnerSource)> {
    t.open()
        .find(|c| c.sock == SockAddr(sock))
        .and_then(|c| c.owner)
        .map(|o| (o.pid, o.source))
}

#[test]
fn the_accepting_process_owns_an_accepted_socket_until_its_own_act() {
    // A pre-fork server: the master (100) listens, a worker (101) accepts.
    let mut t = Table::new();
    let mut listen = tr(9, 1, Close, Listen, 80, 0);
    listen.task = task(100, "master");
    t.apply(&listen);
    t.apply(&tr(2, 2, Listen, SynRecv, 80, 5000));
    t.apply(&tr(2, 3, SynRecv, Established, 80, 5000));
    assert_eq!(owner_of(&t, 2), Some((100, OwnerSource::Inherited)));
    let o = t.accept(&acc(2, 4, Established, (80, 5000), 101, "worker"));
    assert_eq!(
        o.map(|o| (o.pid, o.source)),
        Some((101, OwnerSource::Accept))
    );
    let c = t.open().find(|c| c.sock == SockAddr(2)).unwrap();
    assert_eq!(c.owner.unwrap().comm.as_str(), "worker");
    // Softirq transitions keep it; /proc does not replace it.
    let a = t.apply(&tr(2, 5, Established, CloseWait, 80, 5000));
    assert_eq!(a.owner.map(|o| o.pid), Some(101));
    let mut proc_owner = Owner::from_task(&task(55, "other"), OwnerSource::Procfs);
    t.set_owner(SockAddr(2), proc_owner);
    assert_eq!(owner_of(&t, 2), Some((101, OwnerSource::Accept)));
    // The socket's own act afterwards wins (the fd was passed on, say).
    let mut close = tr(2, 6, CloseWait, LastAck, 80, 5000);
    close.task = task(102, "handler");
    let o = t.apply(&close).owner.unwrap();
    assert_eq!((o.pid, o.source), (102, OwnerSource::Event));
    // ... and a late accept record does not undo it.
    t.accept(&acc(2, 7, LastAck, (80, 5000), 101, "worker"));
    assert_eq!(owner_of(&t, 2), Some((102, OwnerSource::Event)));
    // /proc replaces an inherited owner (the stuck check), not an accepted one.
    t.apply(&tr(3, 8, Listen, SynRecv, 80, 5001));
    proc_owner.pid = 56;
    t.set_owner(SockAddr(3), proc_owner);
    assert_eq!(owner_of(&t, 3), Some((56, OwnerSource::Procfs)));
    t.accept(&acc(3, 9, SynRecv, (80, 5001), 103, "worker2"));
    assert_eq!(owner_of(&t, 3), Some((103, OwnerSource::Accept)));
    t.set_owner(SockAddr(3), proc_owner);
    assert_eq!(owner_of(&t, 3), Some((103, OwnerSource::Accept)));
}

#[test]
fn ranks_of_owner_sources() {
    use OwnerSource::*;
    let o = |s| Some(Owner::from_task(&task(1, "x"), s));
    for (cur, new, replaces) in [
        (None, Inherited, true),
        (o(Inherited), Procfs, true),
        (o(Inherited), Accept, true),
        (o(Procfs), Accept, true),
        (o(Accept), Procfs, false),
        (o(Accept), Inherited, false),
        (o(Accept), Accept, false),
        (o(Accept), Event, true),
        (o(Event), Accept, false),
        (o(Event), Procfs, false),
        (o(Event), Event, true),
    ] {
        assert_eq!(
            owner_replaces(cur.as_ref(), new),
            replaces,
            "{cur:?} <- {new:?}"
        );
    }
    assert_eq!(
        serde_json::to_string(&Accept).unwrap(),
        "\"accept\"",
        "the JSON name"
    );
    assert_eq!(Accept.name(), "accept");
}

#[test]
fn an_accept_of_a_socket_not_seen_yet_starts_its_timeline() {
    // `--pid WORKER`: the kernel dropped the handshake (the master's), not the accept.
    let mut t = Table::new();
    t.accept(&acc(4, 10, Established, (80, 6000), 101, "worker"));
    let c = t.open().next().unwrap();
    assert_eq!(
        (c.role, c.states.as_slice(), c.incomplete),
        (Role::Server, &[Established][..], true)
    );
    assert_eq!(owner_of(&t, 4), Some((101, OwnerSource::Accept)));
    // Context events without an address find it by tuple.
    let mut e = ctx(None, 11, ContextKind::Error, None, 104);
    e.tuple = c.tuple;
    assert_eq!(t.context(&e).map(|o| o.pid), Some(101));
    let a = t.apply(&tr(4, 12, Established, CloseWait, 80, 6000));
    assert_eq!((a.in_old_ns, a.owner.map(|o| o.pid)), (None, Some(101)));
    // Already reset in the accept queue, never seen: nothing to follow.
    t.accept(&acc(5, 13, Close, (80, 6001), 101, "worker"));
    assert_eq!(t.len(), 1);
    // Reset in the queue after its handshake was seen: the closed record gets the owner.
    t.apply(&tr(6, 14, Listen, SynRecv, 80, 6002));
    t.apply(&tr(6, 15, SynRecv, Established, 80, 6002));
    t.apply(&tr(6, 16, Established, Close, 80, 6002));
    t.accept(&acc(6, 17, Close, (80, 6002), 101, "worker"));
    let done = t.flush();
    let c = done.iter().find(|c| c.sock == SockAddr(6)).unwrap();
    assert_eq!(
        c.owner.map(|o| (o.pid, o.source)),
        Some((101, OwnerSource::Accept))
    );
}

#[test]
fn stuck_reports_ask_proc_about_unknown_and_inherited_owners_only() {
    let mut t = Table::new();
    let mut listen = tr(9, 0, Close, Listen, 80, 0);
    listen.task = task(100, "master");
    t.apply(&listen);
    for (sock, port) in [(1, 5001), (2, 5002), (3, 5003)] {
        t.apply(&tr(sock, S, Listen, SynRecv, 80, port));
        t.apply(&tr(sock, S, SynRecv, Established, 80, port));
        t.apply(&tr(sock, S, Established, CloseWait, 80, port));
    }
    t.accept(&acc(2, S, CloseWait, (80, 5002), 101, "worker"));
    // Not due yet; then all three are, and only the inherited ones need /proc.
    assert!(t.stuck_due(10 * S, 30 * S).is_empty());
    let mut due = t.stuck_due(31 * S, 30 * S);
    due.sort();
    assert_eq!(due, [SockAddr(1), SockAddr(2), SockAddr(3)]);
    let mut want: Vec<u64> = t
        .unconfirmed_owners(&due)
        .into_iter()
        .map(|(s, _)| s.0)
        .collect();
    want.sort();
    assert_eq!(want, [1, 3]);
    // Reported, they are not due again until the back-off age.
    assert_eq!(t.stuck(31 * S, 30 * S).len(), 3);
    assert!(t.stuck_due(32 * S, 30 * S).is_empty());
}

#[test]
fn server_closing_first_and_listener() {
    let mut t = Table::new();
    let done = run(
        &mut t,
        &ts(&[
            tr(9, 1, Close, Listen, 80, 0),
            tr(2, 10, Listen, SynRecv, 80, 5000),
            tr(2, 20, SynRecv, Established, 80, 5000),
            tr(2, 30, Established, CloseWait, 80, 5000),
            tr(2, 40, CloseWait, LastAck, 80, 5000),
            tr(2, 50, LastAck, Close, 80, 5000),
            tr(9, 60, Listen, Close, 80, 0),
        ]),
    );
    let server = done.iter().find(|c| c.role == Role::Server).unwrap();
    assert_eq!(
        server.states[..],
        [Listen, SynRecv, Established, CloseWait, LastAck, Close]
    );
    assert_eq!(server.close, Some(CloseClass::Passive));
    let listener = done.iter().find(|c| c.role == Role::Listener).unwrap();
    assert_eq!(listener.states[..], [Close, Listen, Close]);
    assert_eq!(listener.lifetime_ns(), 59);
    assert_eq!(listener.close, Some(CloseClass::ListenerClosed));
}

fn classify(events: &[Ev]) -> Conn {
    let mut t = Table::new();
    let mut done = run(&mut t, events);
    assert_eq!(done.len(), 1, "{done:#?}");
    done.remove(0)
}

#[test]
fn close_classes_from_recorded_sequences() {
    use ContextKind::*;
    let est = |s| {
        vec![
            Ev::T(tr(s, 1, Close, SynSent, 0, 80)),
            Ev::T(tr(s, 2, SynSent, Established, 40000, 80)),
        ]
    };
    let cases: Vec<(Vec<Ev>, CloseClass)> = vec![
        // Refused: RST in SYN_SENT (receive_reset before the CLOSE, error report after).
        (
            vec![
                Ev::T(tr(1, 1, Close, SynSent, 0, 80)),
                Ev::C(ctx(Some(1), 2, ReceiveReset, None, 0)),
                Ev::T(tr(1, 2, SynSent, Close, 40000, 80)),
                Ev::C(ctx(None, 3, Error, None, ECONNREFUSED)),
            ],
            CloseClass::Refused,
        ),
        // Timeout: SYN retransmits, then ETIMEDOUT.
        (
            vec![
                Ev::T(tr(1, 1, Close, SynSent, 0, 80)),
                Ev::C(ctx(Some(1), 2, Retransmit, Some(SynSent), 0)),
                Ev::C(ctx(Some(1), 3, Retransmit, Some(SynSent), 0)),
                Ev::T(tr(1, 4, SynSent, Close, 40000, 80)),
                Ev::C(ctx(None, 5, Error, None, ETIMEDOUT)),
            ],
            CloseClass::Timeout,
        ),
        // Reset sent: SO_LINGER 0 close (the RST may come right after the CLOSE).
        (
            [
                est(1),
                vec![
                    Ev::T(tr(1, 3, Established, Close, 40000, 80)),
                    Ev::C(ctx(Some(1), 4, SendReset, Some(Close), 0)),
                ],
            ]
            .concat(),
            CloseClass::ResetSent,
        ),
        // Reset received.
        (
            [
                est(1),
                vec![
                    Ev::C(ctx(Some(1), 3, ReceiveReset, None, 0)),
                    Ev::T(tr(1, 3, Established, Close, 40000, 80)),
                ],
            ]
            .concat(),
            CloseClass::ResetReceived,
        ),
        // Simultaneous close.
        (
            [
                est(1),
                ts(&[
                    tr(1, 3, Established, FinWait1, 40000, 80),
                    tr(1, 4, FinWait1, Closing, 40000, 80),
                    tr(1, 5, Closing, Close, 40000, 80),
                ]),
            ]
            .concat(),
            CloseClass::Simultaneous,
        ),
        // Passive.
        (
            [
                est(1),
                ts(&[
                    tr(1, 3, Established, CloseWait, 40000, 80),
                    tr(1, 4, CloseWait, LastAck, 40000, 80),
                    tr(1, 5, LastAck, Close, 40000, 80),
                ]),
            ]
            .concat(),
            CloseClass::Passive,
        ),
        // Orphaned FIN_WAIT2 given up: the kernel sends a RST and closes.
        (
            [
                est(1),
                vec![
                    Ev::T(tr(1, 3, Established, FinWait1, 40000, 80)),
                    Ev::T(tr(1, 4, FinWait1, FinWait2, 40000, 80)),
                    Ev::C(ctx(Some(1), 60_000_000_004, SendReset, Some(FinWait2), 0)),
                    Ev::T(tr(1, 60_000_000_004, FinWait2, Close, 40000, 80)),
                ],
            ]
            .concat(),
            CloseClass::OrphanTimeout,
        ),
        // A connect() abandoned without any answer or error: unknown.
        (
            ts(&[
                tr(1, 1, Close, SynSent, 0, 80),
                tr(1, 2, SynSent, Close, 0, 80),
            ]),
            CloseClass::Unknown,
        ),
    ];
    for (events, want) in cases {
        let c = classify(&events);
        assert_eq!(c.close, Some(want), "{:?}", c.states);
    }
}

#[test]
fn context_events_are_kept_counted_and_bounded() {
    use ContextKind::*;
    let mut t = Table::new();
    t.apply(&tr(1, 1, Close, SynSent, 0, 80));
    for i in 0..(MAX_EVENTS_PER_CONN as u64 + 5) {
        t.context(&ctx(Some(1), 2 + i, Retransmit, Some(SynSent), 0));
    }
    let c = t.open().next().unwrap();
    assert_eq!((c.notes.len(), c.notes_dropped), (MAX_EVENTS_PER_CONN, 5));
    assert_eq!((c.retransmits, c.syn_retransmits), (69, 69));
    // Unknown socket, no tuple match: not attached.
    assert_eq!(t.context(&ctx(Some(99), 1, Destroy, None, 0)), None);
}

#[test]
fn error_reports_find_an_accepted_socket_by_tuple() {
    let mut t = Table::new();
    t.apply(&tr(2, 1, Listen, SynRecv, 80, 40000));
    let mut e = ctx(None, 3, ContextKind::Error, None, 104);
    (e.tuple.local.port, e.tuple.remote.port) = (80, 40000);
    t.context(&e);
    assert_eq!(t.open().next().unwrap().error, Some(104));
}

#[test]
fn error_reports_find_their_socket_by_tuple() {
    let mut t = Table::new();
    t.apply(&tr(1, 1, Close, SynSent, 0, 80));
    t.apply(&tr(1, 2, SynSent, Established, 40000, 80));
    t.context(&ctx(None, 3, ContextKind::Error, None, 104));
    assert_eq!(t.open().next().unwrap().error, Some(104));
}

#[test]
fn address_reuse_after_close_starts_a_new_timeline() {
    let mut t = Table::new();
    let done = run(
        &mut t,
        &ts(&[
            tr(5, 1, Close, SynSent, 0, 80),
            tr(5, 2, SynSent, Close, 0, 80),
            tr(5, 3, Close, Listen, 81, 0),
            tr(5, 4, Listen, Close, 81, 0),
        ]),
    );
    assert_eq!(done.len(), 2);
    assert_eq!((done[0].role, done[1].role), (Role::Client, Role::Listener));
    assert!(!done[0].incomplete && !done[1].incomplete);
}

#[test]
fn reuse_without_a_seen_close_supersedes_and_marks_incomplete() {
    let mut t = Table::new();
    t.apply(&tr(5, 1, Close, SynSent, 0, 80));
    t.apply(&tr(5, 2, SynSent, Established, 1, 80));
    // The socket's CLOSE was lost; a new socket at the same address connects.
    let a = t.apply(&tr(5, 9, Close, SynSent, 0, 443));
    let old = &a.finished[0];
    assert!(old.incomplete);
    assert_eq!(old.states[..], [Close, SynSent, Established]);
    let new = t.open().next().unwrap();
    assert_eq!(
        (new.role, new.tuple.remote.port, new.incomplete),
        (Role::Client, 443, false)
    );
}

#[test]
fn a_self_transition_does_not_add_a_state() {
    let mut t = Table::new();
    t.apply(&tr(1, 10, Close, SynSent, 0, 80));
    t.apply(&tr(1, 20, SynSent, Established, 1, 80));
    t.apply(&tr(1, 30, Established, FinWait1, 1, 80));
    assert_eq!(
        t.apply(&tr(1, 35, FinWait1, FinWait1, 1, 80)).in_old_ns,
        Some(5)
    );
    t.apply(&tr(1, 40, FinWait1, FinWait2, 1, 80));
    t.apply(&tr(1, 50, FinWait2, Close, 1, 80));
    let c = t.flush().remove(0);
    assert_eq!(
        c.states[..],
        [Close, SynSent, Established, FinWait1, FinWait2, Close]
    );
    assert_eq!(
        c.durations_ns(),
        [None, Some(10), Some(10), Some(10), Some(10)]
    );
    assert!(!c.incomplete);
}

#[test]
fn a_gap_is_marked_and_not_timed() {
    let mut t = Table::new();
    t.apply(&tr(1, 10, Close, SynSent, 0, 80));
    // SYN_SENT → ESTABLISHED was lost.
    let a = t.apply(&tr(1, 50, Established, FinWait1, 1, 80));
    assert_eq!(a.in_old_ns, None);
    let c = t.open().next().unwrap();
    assert!(c.incomplete);
    assert_eq!(c.states[..], [Close, SynSent, Established, FinWait1]);
    assert_eq!(c.durations_ns(), [None, None, None]);
}

const S: u64 = 1_000_000_000;

fn close_wait(t: &mut Table, sock: u64, at: u64, owner_pid: u32, comm: &str) {
    let mut a = tr(sock, at, Listen, SynRecv, 80, 1000 + sock as u16);
    a.task = task(owner_pid, comm);
    t.apply(&a);
    t.apply(&tr(sock, at, SynRecv, Established, 80, 1000 + sock as u16));
    // Owned by `owner_pid` through the listener it came from.
    t.apply(&tr(
        sock,
        at,
        Established,
        CloseWait,
        80,
        1000 + sock as u16,
    ));
}

#[test]
fn stuck_is_reported_at_the_threshold_then_with_back_off_then_when_it_moves() {
    let mut t = Table::new();
    let mut l = tr(100, 0, Close, Listen, 80, 0);
    l.task = task(1234, "myapp");
    t.apply(&l);
    close_wait(&mut t, 1, 0, 1234, "myapp");
    let age = 30 * S;
    assert!(t.stuck(29 * S, age).is_empty());
    let r = t.stuck(30 * S, age);
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].state, r[0].age_ns, r[0].report, r[0].age_at_least),
        (CloseWait, 30 * S, 1, false)
    );
    assert_eq!(r[0].conn.owner.map(|o| o.pid), Some(1234));
    // Not again until the age doubles.
    assert!(t.stuck(59 * S, age).is_empty());
    assert_eq!(t.stuck(60 * S, age)[0].report, 2);
    assert!(t.stuck(119 * S, age).is_empty());
    assert_eq!(t.stuck(120 * S, age)[0].report, 3);
    // It moves: reported once as unstuck, with how long it was stuck.
    let a = t.apply(&tr(1, 130 * S, CloseWait, LastAck, 80, 1001));
    assert_eq!(
        a.unstuck,
        Some(Unstuck {
            state: CloseWait,
            age_ns: 130 * S,
            age_at_least: false,
            reports: 3
        })
    );
    // LAST_ACK is a new state: a new threshold.
    assert!(t.stuck(131 * S, age).is_empty());
    assert_eq!(t.stuck(160 * S, age)[0].state, LastAck);
    // ESTABLISHED and LISTEN are never stuck.
    assert!(t.stuck(10_000 * S, age).iter().all(|r| r.state == LastAck));
}

#[test]
fn stuck_connections_are_grouped_by_owner_and_state() {
    let mut t = Table::new();
    for (l, pid, comm) in [(100, 1234, "myapp"), (101, 99, "other")] {
        let mut e = tr(l, 0, Close, Listen, if pid == 99 { 81 } else { 80 }, 0);
        e.task = task(pid, comm);
        t.apply(&e);
    }
    for s in 1..=3 {
        close_wait(&mut t, s, s * S, 1234, "myapp");
    }
    let mut a = tr(9, 0, Listen, SynRecv, 81, 999);
    a.task = task(99, "other");
    t.apply(&a); // SYN_RECV for "other" (inherits from its listener on port 81)
    let g = t.stuck_groups(100 * S, 30 * S, |_| true);
    assert_eq!(g.len(), 2);
    assert_eq!(
        (
            g[0].owner.map(|o| o.pid),
            g[0].state,
            g[0].count,
            g[0].oldest_ns
        ),
        (Some(1234), CloseWait, 3, 99 * S)
    );
    assert_eq!(
        (g[1].owner.map(|o| o.pid), g[1].state, g[1].count),
        (Some(99), SynRecv, 1)
    );
    assert!(t.stuck_groups(100 * S, 200 * S, |_| true).is_empty());
    assert_eq!(
        t.stuck_groups(100 * S, 30 * S, |c| c.last_state() == SynRecv)
            .len(),
        1
    );
}

#[test]
fn seeded_sockets_age_from_start_up_and_are_adopted_by_their_first_event() {
    let mut t = Table::new();
    let tuple = Tuple::new(
        "127.0.0.1".parse().unwrap(),
        80,
        "127.0.0.1".parse().unwrap(),
        5000,
    );
    let owner = Owner {
        pid: 42,
        comm: Comm::default(),
        uid: 0,
        cgroup_id: 0,
        source: OwnerSource::Procfs,
    };
    t.seed(
        Seed {
            netns: NETNS,
            family: Family::Ipv4,
            tuple,
            state: CloseWait,
            owner: Some(owner),
            orphan: false,
        },
        10 * S,
    );
    let r = t.stuck(40 * S, 30 * S);
    assert_eq!((r.len(), r[0].age_ns, r[0].age_at_least), (1, 30 * S, true));
    assert_eq!(r[0].conn.seen_from, SeenFrom::Dump);
    // Its first event carries the kernel address: the entry is adopted, not duplicated.
    let a = t.apply(&tr(7, 50 * S, CloseWait, LastAck, 80, 5000));
    // close() in process context: the owner is confirmed by the event.
    assert_eq!(
        a.owner.map(|o| (o.pid, o.source)),
        Some((7, OwnerSource::Event))
    );
    assert_eq!(
        a.unstuck.map(|u| (u.age_ns, u.age_at_least)),
        Some((40 * S, true))
    );
    assert_eq!(t.seeded_len(), 0);
    let c = t.open().next().unwrap();
    assert_eq!(
        (c.sock.0, c.states.as_slice(), c.incomplete),
        (7, &[CloseWait, LastAck][..], true)
    );
    // A seeded listener passes its owner on to accepted sockets.
    let ltuple = Tuple::new(
        "0.0.0.0".parse().unwrap(),
        443,
        "0.0.0.0".parse().unwrap(),
        0,
    );
    t.seed(
        Seed {
            netns: NETNS,
            family: Family::Ipv4,
            tuple: ltuple,
            state: Listen,
            owner: Some(owner),
            orphan: false,
        },
        10 * S,
    );
    let a = t.apply(&tr(8, 60 * S, Listen, SynRecv, 443, 6000));
    assert_eq!(
        a.owner.map(|o| (o.pid, o.source)),
        Some((42, OwnerSource::Inherited))
    );
}

#[test]
fn the_table_is_bounded_and_evicts_the_least_recently_active() {
    let mut t = Table::new();
    t.max_conns = 100;
    for s in 0..150u64 {
        t.apply(&tr(s + 1, s, Close, SynSent, 0, 80));
    }
    let ev = t.enforce_cap();
    assert_eq!(ev.len(), 50);
    assert!(
        ev.iter().all(|c| c.incomplete && c.sock.0 <= 50),
        "oldest first"
    );
    assert_eq!((t.len(), t.evicted), (100, 50));
    assert!(t.enforce_cap().is_empty());
    t.apply(&tr(1000, 1000, Close, SynSent, 0, 80));
    assert_eq!(
        t.enforce_cap().len(),
        10,
        "the excess, and at least a tenth of the cap"
    );
}

#[test]
fn sockets_the_kernel_no_longer_has_are_aged_out() {
    let mut t = Table::new();
    t.apply(&tr(1, 10, Close, SynSent, 0, 80));
    t.apply(&tr(1, 20, SynSent, Established, 5000, 80));
    t.apply(&tr(2, 30, Close, SynSent, 0, 81));
    t.apply(&tr(2, 40, SynSent, Established, 5001, 81));
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let alive: std::collections::HashSet<NsTuple> =
        [NsTuple::new(NETNS, Tuple::new(lo, 5001, lo, 81))]
            .into_iter()
            .collect();
    // Quiet since before 30: only socket 1 qualifies; it is gone from the kernel.
    let gone = t.prune_vanished(&alive, 30);
    assert_eq!(gone.len(), 1);
    assert_eq!((gone[0].sock.0, gone[0].incomplete), (1, true));
    assert_eq!(t.len(), 1);
    // Socket 2 is alive: kept however quiet.
    assert!(t.prune_vanished(&alive, 1_000).is_empty());
}

/// An active closer handed to a timewait socket before the peer's FIN: held, stuck in
/// FIN_WAIT2, then its FIN_WAIT2 lasts until the peer's LAST_ACK (on this host), or it
/// times out.
#[test]
fn an_orphaned_fin_wait2_is_followed_to_its_end() {
    const MS: u64 = 1_000_000;
    for peer_closes in [true, false] {
        let mut t = Table::new();
        t.apply(&tr(1, 0, Close, SynSent, 0, 80));
        t.apply(&tr(1, MS, SynSent, Established, 5, 80));
        t.apply(&tr(2, MS, Listen, SynRecv, 80, 5));
        t.apply(&tr(2, MS, SynRecv, Established, 80, 5));
        t.apply(&tr(1, 10 * MS, Established, FinWait1, 5, 80));
        t.apply(&tr(2, 10 * MS, Established, CloseWait, 80, 5));
        t.apply(&tr(1, 11 * MS, FinWait1, FinWait2, 5, 80));
        t.apply(&tr(1, 11 * MS + 5_000, FinWait2, Close, 5, 80));
        // The first lookup finds the timewait socket in FIN_WAIT2.
        let p: Vec<_> = t.time_wait_pending().collect();
        assert_eq!(
            (p.len(), p[0].closed_ns, p[0].from_ns),
            (1, 11 * MS + 5_000, Some(11 * MS))
        );
        let key = NsTuple::new(p[0].netns, p[0].tuple);
        let found = Orphan {
            handoff_ns: p[0].closed_ns,
            expires_ns: Some(60_000 * MS),
            end: None,
        };
        t.set_orphan(SockAddr(1), key, found);
        // Held past the TIME_WAIT wait, and stuck in FIN_WAIT2 for its age since FIN_WAIT2.
        assert!(t.expire(11 * MS + TIME_WAIT_WAIT_NS + 1).is_empty());
        let stuck = t.stuck(2_011 * MS, 2_000 * MS);
        assert_eq!(
            stuck
                .iter()
                .map(|r| (r.state, r.age_ns))
                .collect::<Vec<_>>(),
            [(CloseWait, 2_001 * MS), (FinWait2, 2_000 * MS)]
        );
        assert_eq!(t.stuck_groups(2_011 * MS, 2_000 * MS, |_| true).len(), 2);
        let end = if peer_closes {
            t.apply(&tr(2, 311 * MS, CloseWait, LastAck, 80, 5));
            let p: Vec<_> = t.time_wait_pending().collect();
            assert_eq!(p[0].peer_fin_ns, Some(311 * MS));
            OrphanEnd {
                ts_ns: 311 * MS,
                how: OrphanHow::Fin { peer: true },
            }
        } else {
            OrphanEnd {
                ts_ns: 60_000 * MS,
                how: OrphanHow::Timeout,
            }
        };
        t.set_orphan(
            SockAddr(1),
            key,
            Orphan {
                end: Some(end),
                ..found
            },
        );
        let c = t
            .expire(60_001 * MS)
            .into_iter()
            .find(|c| c.sock == SockAddr(1))
            .expect("released once its end is known");
        let fin_wait2 = c.durations_ns()[4];
        assert_eq!(
            fin_wait2,
            Some(end.ts_ns - 11 * MS),
            "FIN_WAIT2 lasts until its end"
        );
        assert_eq!(c.end_ns(), end.ts_ns);
        assert_eq!(
            c.classify(),
            if peer_closes {
                CloseClass::Active
            } else {
                CloseClass::OrphanTimeout
            }
        );
    }
}

/// Client 1, 127.0.0.1:40000 → :80, established.
fn established() -> Vec<Ev> {
    ts(&[
        tr(1, 1, Close, SynSent, 0, 80),
        tr(1, 2, SynSent, Established, 40000, 80),
    ])
}

#[test]
fn a_reset_sent_without_a_socket_is_not_the_closed_connections() {
    use ContextKind::*;
    // An active closer waiting for its TIME_WAIT lookup: the host answers a late segment
    // for that tuple with a RST of no socket.
    let mut t = Table::new();
    for e in [
        established(),
        ts(&[
            tr(1, 3, Established, FinWait1, 40000, 80),
            tr(1, 4, FinWait1, FinWait2, 40000, 80),
            tr(1, 5, FinWait2, Close, 40000, 80),
        ]),
    ]
    .concat()
    {
        if let Ev::T(tr) = e {
            t.apply(&tr);
        }
    }
    // Shown with the connection's owner, not noted.
    assert!(t.context(&ctx(None, 6, SendReset, None, 0)).is_some());
    assert_eq!(
        t.time_wait_pending().count(),
        1,
        "the lookup is still pending"
    );
    let done = t.flush();
    assert_eq!(
        (done[0].close, done[0].resets_sent, done[0].notes.len()),
        (Some(CloseClass::Active), 0, 0)
    );

    // A connection that timed out, then RSTs answering the peer's segments.
    let c = classify(
        &[
            established(),
            vec![
                Ev::C(ctx(Some(1), 3, Retransmit, Some(Established), 0)),
                Ev::T(tr(1, 4, Established, Close, 40000, 80)),
                Ev::C(ctx(None, 4, Error, None, ETIMEDOUT)),
                Ev::C(ctx(None, 5, SendReset, None, 0)),
                Ev::C(ctx(None, 6, SendReset, None, 0)),
            ],
        ]
        .concat(),
    );
    assert_eq!(
        (c.close, c.resets_sent, c.error),
        (Some(CloseClass::Timeout), 0, Some(ETIMEDOUT))
    );
    // The socket's own RST still counts.
    let c = classify(
        &[
            established(),
            vec![
                Ev::T(tr(1, 3, Established, Close, 40000, 80)),
                Ev::C(ctx(Some(1), 4, SendReset, Some(Close), 0)),
            ],
        ]
        .concat(),
    );
    assert_eq!((c.close, c.resets_sent), (Some(CloseClass::ResetSent), 1));
}

#[test]
fn etimedout_is_a_timeout_in_every_synchronized_state() {
    use ContextKind::*;
    let rtx = |ts| Ev::C(ctx(Some(1), ts, Retransmit, None, 0));
    let timedout = |ts| Ev::C(ctx(None, ts, Error, None, ETIMEDOUT));
    let cases: Vec<(&str, Vec<Ev>)> = vec![
        // tcp_retries2 exhausted: tcp_done, then the error report (6.10+).
        (
            "retries, error after CLOSE",
            vec![
                rtx(3),
                rtx(4),
                Ev::T(tr(1, 9, Established, Close, 40000, 80)),
                timedout(9),
            ],
        ),
        // Older kernels report the error first.
        (
            "retries, error before CLOSE",
            vec![
                rtx(3),
                timedout(9),
                Ev::T(tr(1, 9, Established, Close, 40000, 80)),
            ],
        ),
        // Keepalive probes unanswered: a RST of the socket, then ETIMEDOUT.
        (
            "keepalive",
            vec![
                Ev::C(ctx(Some(1), 9, SendReset, Some(Established), 0)),
                Ev::T(tr(1, 9, Established, Close, 40000, 80)),
                timedout(9),
            ],
        ),
        // shutdown(SHUT_WR), the FIN never acknowledged.
        (
            "FIN_WAIT1",
            vec![
                Ev::T(tr(1, 3, Established, FinWait1, 40000, 80)),
                rtx(4),
                Ev::T(tr(1, 9, FinWait1, Close, 40000, 80)),
                timedout(9),
            ],
        ),
        (
            "CLOSE_WAIT",
            vec![
                Ev::T(tr(1, 3, Established, CloseWait, 40000, 80)),
                rtx(4),
                Ev::T(tr(1, 9, CloseWait, Close, 40000, 80)),
                timedout(9),
            ],
        ),
        // Retransmits drew ICMP errors: tcp_write_err reports the soft error.
        (
            "soft EHOSTUNREACH",
            vec![
                rtx(3),
                Ev::T(tr(1, 9, Established, Close, 40000, 80)),
                Ev::C(ctx(None, 9, Error, None, EHOSTUNREACH)),
            ],
        ),
    ];
    for (what, events) in cases {
        let c = classify(&[established(), events].concat());
        assert_eq!(c.close, Some(CloseClass::Timeout), "{what}: {c:?}");
    }

    // Without error reports (kernels before 5.15): the same retransmits and CLOSE with no
    // reset either way are still a timeout in ESTABLISHED, CLOSE_WAIT and FIN_WAIT1; without
    // a retransmit, or after a RST, they are not.
    let no_error: Vec<(&str, Vec<Ev>, CloseClass)> = vec![
        (
            "ESTABLISHED",
            vec![rtx(3), Ev::T(tr(1, 9, Established, Close, 40000, 80))],
            CloseClass::Timeout,
        ),
        (
            "CLOSE_WAIT",
            vec![
                Ev::T(tr(1, 3, Established, CloseWait, 40000, 80)),
                rtx(4),
                Ev::T(tr(1, 9, CloseWait, Close, 40000, 80)),
            ],
            CloseClass::Timeout,
        ),
        (
            "FIN_WAIT1",
            vec![
                Ev::T(tr(1, 3, Established, FinWait1, 40000, 80)),
                rtx(4),
                Ev::T(tr(1, 9, FinWait1, Close, 40000, 80)),
            ],
            CloseClass::Timeout,
        ),
        (
            "no retransmit",
            vec![Ev::T(tr(1, 9, Established, Close, 40000, 80))],
            CloseClass::Unknown,
        ),
        (
            "a RST received",
            vec![
                rtx(3),
                Ev::C(ctx(Some(1), 8, ReceiveReset, Some(Established), 0)),
                Ev::T(tr(1, 9, Established, Close, 40000, 80)),
            ],
            CloseClass::ResetReceived,
        ),
        (
            "a retransmitted FIN answered: LAST_ACK",
            vec![
                Ev::T(tr(1, 3, Established, CloseWait, 40000, 80)),
                Ev::T(tr(1, 4, CloseWait, LastAck, 40000, 80)),
                rtx(5),
                Ev::T(tr(1, 9, LastAck, Close, 40000, 80)),
            ],
            CloseClass::Passive,
        ),
    ];
    for (what, events, want) in no_error {
        let c = classify(&[established(), events].concat());
        assert_eq!((c.close, c.error), (Some(want), None), "{what}: {c:?}");
    }

    // The error report ends the wait for a TIME_WAIT that will not come.
    let mut t = Table::new();
    run(&mut t, &established());
    t.apply(&tr(1, 3, Established, FinWait1, 40000, 80));
    t.apply(&tr(1, 9, FinWait1, Close, 40000, 80));
    assert_eq!(t.time_wait_pending().count(), 1);
    t.context(&ctx(None, 9, Error, None, ETIMEDOUT));
    assert_eq!(t.time_wait_pending().count(), 0);
    let done = t.expire(9 + GRACE_NS);
    assert_eq!(done[0].close, Some(CloseClass::Timeout));
}

#[test]
fn an_icmp_error_in_syn_sent_is_unreachable() {
    use ContextKind::*;
    for errno in [EHOSTUNREACH, ENETUNREACH] {
        let c = classify(&[
            Ev::T(tr(1, 1, Close, SynSent, 0, 80)),
            Ev::T(tr(1, 2, SynSent, Close, 40000, 80)),
            Ev::C(ctx(None, 2, Error, None, errno)),
        ]);
        assert_eq!(c.close, Some(CloseClass::Unreachable), "{errno}");
        assert_eq!(CloseClass::Unreachable.name(), "unreachable");
    }
    // After SYN retransmits too (the error kept while the socket was busy, then reported).
    let c = classify(&[
        Ev::T(tr(1, 1, Close, SynSent, 0, 80)),
        Ev::C(ctx(Some(1), 2, Retransmit, Some(SynSent), 0)),
        Ev::T(tr(1, 3, SynSent, Close, 40000, 80)),
        Ev::C(ctx(None, 3, Error, None, EHOSTUNREACH)),
    ]);
    assert_eq!(c.close, Some(CloseClass::Unreachable));
}

#[test]
fn events_of_a_socket_not_seen_yet_join_its_record() {
    use ContextKind::*;
    // A socket older than the tracer retransmits until it dies.
    let c = classify(&[
        Ev::C(ctx(Some(9), 10, Retransmit, Some(Established), 0)),
        Ev::C(ctx(Some(9), 20, Retransmit, Some(Established), 0)),
        Ev::C(ctx(Some(9), 25, Destroy, None, 0)), // not kept: not this socket's
        Ev::T(tr(9, 30, Established, Close, 40000, 80)),
        Ev::C(ctx(None, 30, Error, None, ETIMEDOUT)),
    ]);
    assert_eq!(c.role, Role::Unknown);
    assert!(c.incomplete);
    assert_eq!((c.retransmits, c.notes.len()), (2, 3));
    assert_eq!(c.notes[0].ts_ns, 10);
    assert_eq!(c.close, Some(CloseClass::Timeout));

    // Bounded per socket, counted.
    let mut t = Table::new();
    for i in 0..(MAX_UNSEEN_NOTES as u64 + 3) {
        t.context(&ctx(Some(9), i, Retransmit, Some(Established), 0));
    }
    assert_eq!(t.unseen_dropped, 3);
    t.apply(&tr(9, 100, Established, FinWait1, 40000, 80));
    let c = t.open().next().unwrap();
    assert_eq!(c.notes.len(), MAX_UNSEEN_NOTES);
    assert_eq!(t.unseen_len(), 0);
}

#[test]
fn a_new_socket_at_a_reused_address_does_not_take_what_was_kept() {
    use ContextKind::*;
    for birth in [
        tr(9, 30, Close, SynSent, 0, 80),
        tr(9, 30, Listen, SynRecv, 80, 40000),
        tr(9, 30, Close, Listen, 80, 0),
    ] {
        let mut t = Table::new();
        t.context(&ctx(Some(9), 10, Retransmit, Some(Established), 0));
        t.apply(&birth);
        let c = t.open().next().unwrap();
        assert_eq!((c.notes.len(), c.retransmits), (0, 0), "{birth:?}");
        assert_eq!((t.unseen_len(), t.unseen_dropped), (0, 1));
    }
    // Another tuple at that address: another socket.
    let mut t = Table::new();
    t.context(&ctx(Some(9), 10, Retransmit, Some(Established), 0));
    t.apply(&tr(9, 30, Established, Close, 40001, 80));
    assert_eq!((t.unseen_len(), t.unseen_dropped), (0, 1));
    assert!(t.flush()[0].notes.is_empty());
}

#[test]
fn the_sockets_not_seen_yet_are_bounded_and_the_quiet_ones_give_way() {
    use ContextKind::*;
    let mut t = Table::new();
    for s in 0..MAX_UNSEEN_SOCKS as u64 {
        t.context(&ctx(Some(100 + s), 1, Retransmit, None, 0));
    }
    // Full: one more socket's event is dropped (its own are still kept).
    t.context(&ctx(Some(1), 2, Retransmit, None, 0));
    t.context(&ctx(Some(100), 1 + UNSEEN_MAX_AGE_NS, Retransmit, None, 0));
    assert_eq!((t.unseen_len(), t.unseen_dropped), (MAX_UNSEEN_SOCKS, 1));
    // A minute later the quiet ones are given up for a new one.
    t.context(&ctx(Some(1), 3 + UNSEEN_MAX_AGE_NS, Retransmit, None, 0));
    assert_eq!(
        t.unseen_len(),
        2,
        "socket 100 was active since, socket 1 is new"
    );
    assert_eq!(t.unseen_dropped, 1 + (MAX_UNSEEN_SOCKS as u64 - 1));
}

#[test]
fn a_seeded_socket_keeps_its_events_before_its_first_transition() {
    use ContextKind::*;
    let mut t = Table::new();
    let c = ctx(Some(9), 10, Retransmit, Some(Established), 0);
    t.seed(
        Seed {
            netns: NETNS,
            family: Family::Ipv4,
            tuple: c.tuple,
            state: Established,
            owner: None,
            orphan: false,
        },
        1,
    );
    t.context(&c);
    t.apply(&tr(9, 30, Established, Close, 40000, 80));
    t.context(&ctx(None, 30, Error, None, ETIMEDOUT));
    let done = t.flush();
    assert_eq!(
        (done[0].retransmits, done[0].seen_from, done[0].close),
        (1, SeenFrom::Dump, Some(CloseClass::Timeout))
    );
    assert_eq!(t.unseen_len(), 0);
}

#[test]
fn an_error_reported_before_a_connecting_sockets_tuple_is_known_is_kept() {
    use ContextKind::*;
    // Kernels before 6.10 report a failed connect's error just before its CLOSE, while the
    // record does not know its local port yet.
    for (errno, want) in [
        (EHOSTUNREACH, CloseClass::Unreachable),
        (ETIMEDOUT, CloseClass::Timeout),
        (ECONNREFUSED, CloseClass::Refused),
    ] {
        let c = classify(&[
            Ev::T(tr(1, 1, Close, SynSent, 0, 80)),
            Ev::C(ctx(None, 5, Error, None, errno)),
            Ev::T(tr(1, 5, SynSent, Close, 40000, 80)),
        ]);
        assert_eq!((c.close, c.error), (Some(want), Some(errno)));
    }
    // Not one from long before, and a report without an errno sets none.
    let c = classify(&[
        Ev::C(ctx(None, 1, Error, None, EHOSTUNREACH)),
        Ev::T(tr(1, 2, Close, SynSent, 0, 80)),
        Ev::C(ctx(None, 3, Error, None, 0)),
        Ev::T(tr(1, 3 + GRACE_NS, SynSent, Close, 40000, 80)),
    ]);
    assert_eq!((c.close, c.error), (Some(CloseClass::Unknown), None));
}

/// A finished connection with these transitions (socket 1, client port 40000 → 80, or the
/// reverse for a server), given the kernel's `bytes_acked` / `bytes_received` at its close.
fn carried(states: &[TcpState], acked: u64, received: u64) -> Conn {
    let mut t = Table::new();
    for (i, w) in states.windows(2).enumerate() {
        t.apply(&tr(1, 10 * (i as u64 + 1), w[0], w[1], 40000, 80));
    }
    let mut c = t.flush().remove(0);
    c.tcp = Some(Box::new(tracer_common::TcpStats {
        bytes_acked: acked,
        bytes_received: received,
        present: tracer_common::stat::BYTES_ACKED | tracer_common::stat::BYTES_RECEIVED,
        ..Default::default()
    }));
    c
}

#[test]
fn data_bytes_take_out_exactly_the_syn_and_fins_the_counters_hold() {
    // The kernel's counters are sequence space: N data bytes sent, M received, plus 1 for
    // each SYN (a client's own, acked) and FIN (ours acked, theirs processed) that the
    // timeline shows were exchanged before the close.
    const N: u64 = 1000;
    const M: u64 = 500;
    // A client closing first: its SYN and FIN acked, the peer's FIN in FIN_WAIT2.
    let c = carried(
        &[Close, SynSent, Established, FinWait1, FinWait2, Close],
        1 + N + 1,
        M + 1,
    );
    assert_eq!(c.data_bytes(), (Some(N), Some(M)));
    // A server closing second: the peer's FIN took it to CLOSE_WAIT, its own FIN acked in
    // LAST_ACK; no SYN of its own in bytes_acked.
    let c = carried(
        &[Listen, SynRecv, Established, CloseWait, LastAck, Close],
        N + 1,
        M + 1,
    );
    assert_eq!(c.data_bytes(), (Some(N), Some(M)));
    // Simultaneous: FIN_WAIT1 → CLOSING on the peer's FIN, CLOSING → CLOSE on our FIN's ACK.
    let c = carried(
        &[Close, SynSent, Established, FinWait1, Closing, Close],
        1 + N + 1,
        M + 1,
    );
    assert_eq!(c.data_bytes(), (Some(N), Some(M)));
}

#[test]
fn an_orphaned_fin_wait1_timing_out_had_neither_fin_counted() {
    // FIN_WAIT1 → CLOSE without a RST: the FIN's retransmits (or zero-window probes) ran out
    // (tcp_write_err: ETIMEDOUT). Had our FIN been acked the socket would have gone to
    // FIN_WAIT2; had the peer's FIN been processed, to CLOSING. So neither is in the
    // counters: bytes_acked = SYN + N, bytes_received = M.
    const N: u64 = 1000;
    const M: u64 = 500;
    let mut c = carried(&[Close, SynSent, Established, FinWait1, Close], 1 + N, M);
    c.error = Some(ETIMEDOUT);
    assert_eq!(c.data_bytes(), (Some(N), Some(M)));
    // The same from LAST_ACK: the peer's FIN is in (CLOSE_WAIT), ours never acked.
    let mut c = carried(
        &[Listen, SynRecv, Established, CloseWait, LastAck, Close],
        N,
        M + 1,
    );
    c.error = Some(ETIMEDOUT);
    assert_eq!(c.data_bytes(), (Some(N), Some(M)));
}

#[test]
fn a_reset_does_not_take_back_a_fin_already_counted() {
    const N: u64 = 1000;
    const M: u64 = 500;
    // CLOSE_WAIT closed with SO_LINGER 0 (a RST sent): the peer's FIN is in bytes_received.
    let mut c = carried(&[Listen, SynRecv, Established, CloseWait, Close], N, M + 1);
    c.resets_sent = 1;
    assert_eq!(c.data_bytes(), (Some(N), Some(M)));
    // FIN_WAIT2 reset by the peer: our FIN was acked (FIN_WAIT2), theirs never came.
    let mut c = carried(
        &[Close, SynSent, Established, FinWait1, FinWait2, Close],
        1 + N + 1,
        M,
    );
    c.resets_received = 1;
    assert_eq!(c.data_bytes(), (Some(N), Some(M)));
    // ESTABLISHED reset: no FIN either way.
    let mut c = carried(&[Close, SynSent, Established, Close], 1 + N, M);
    c.resets_received = 1;
    assert_eq!(c.data_bytes(), (Some(N), Some(M)));
    // An orphaned FIN_WAIT2 handed to a timewait socket: the peer's FIN came (if ever) after
    // the counters were read.
    let mut c = carried(
        &[Close, SynSent, Established, FinWait1, FinWait2, Close],
        1 + N + 1,
        M,
    );
    c.orphan = Some(Box::new(Orphan {
        handoff_ns: 50,
        expires_ns: None,
        end: None,
    }));
    assert_eq!(c.data_bytes(), (Some(N), Some(M)));
}

#[test]
fn a_servers_handshake_rtt_is_the_kernels_synack_sample() {
    let mut t = Table::new();
    t.apply(&tr(2, 10, Listen, SynRecv, 80, 40000));
    let mut est = tr(2, 12, SynRecv, Established, 80, 40000);
    // The child's srtt_us (<< 3) as the kernel read it at SYN_RECV → ESTABLISHED.
    est.srtt_us = 51_000 << 3;
    t.apply(&est);
    t.apply(&tr(2, 20, Established, Close, 80, 40000));
    let c = t.flush().remove(0);
    assert_eq!(
        (c.role, c.handshake_rtt_ns()),
        (Role::Server, Some(51_000_000))
    );
    // Without a sample (no timestamps, or an older recording): unknown, not the 2 ns the
    // tracepoint's times would say.
    let mut t = Table::new();
    t.apply(&tr(2, 10, Listen, SynRecv, 80, 40000));
    t.apply(&tr(2, 12, SynRecv, Established, 80, 40000));
    t.apply(&tr(2, 20, Established, Close, 80, 40000));
    assert_eq!(t.flush().remove(0).handshake_rtt_ns(), None);
    // A client's is its time in SYN_SENT, as before.
    let c = carried(&[Close, SynSent, Established, Close], 1, 0);
    assert_eq!(c.handshake_rtt_ns(), Some(10));
}

/// `expire` walks nothing before the earliest release: every change that can release a
/// held record sooner (an answered lookup, a reset, an orphan's end or its timer read) is
/// still released on time.
#[test]
fn held_records_are_released_on_time_without_a_walk_each_time() {
    const MS: u64 = 1_000_000;
    let mut t = Table::new();
    // An orphan waiting for its peer's FIN, its timer 60 s away: nothing due for a minute.
    let closer = |t: &mut Table, s: u64, port: u16, at: u64| {
        t.apply(&tr(s, at, Close, SynSent, 0, 80));
        t.apply(&tr(s, at + 1, SynSent, Established, port, 80));
        t.apply(&tr(s, at + 2, Established, FinWait1, port, 80));
        t.apply(&tr(s, at + 3, FinWait1, FinWait2, port, 80));
        t.apply(&tr(s, at + 4, FinWait2, Close, port, 80));
    };
    closer(&mut t, 1, 5, 0);
    let key = |port| {
        NsTuple::new(
            NETNS,
            Tuple::new(
                "127.0.0.1".parse().unwrap(),
                port,
                "127.0.0.1".parse().unwrap(),
                80,
            ),
        )
    };
    let orphan = Orphan {
        handoff_ns: 4,
        expires_ns: Some(60_000 * MS),
        end: None,
    };
    t.set_orphan(SockAddr(1), key(5), orphan);
    assert!(t.expire(2_000 * MS).is_empty());
    assert_eq!(t.next_release_ns, 60_000 * MS + ORPHAN_SLACK_NS);
    // A closer whose lookup is answered: released a grace period after its close.
    closer(&mut t, 2, 6, 3_000 * MS);
    assert!(t.expire(3_000 * MS + 5).is_empty());
    t.set_time_wait(SockAddr(2), key(6), None);
    let c = t.expire(3_000 * MS + 4 + GRACE_NS);
    assert_eq!(c.iter().map(|c| c.sock.0).collect::<Vec<_>>(), [2]);
    // A closer reset after its close: no lookup to wait for.
    closer(&mut t, 3, 7, 4_000 * MS);
    t.context(&Context {
        sock: Some(SockAddr(3)),
        ..ctx(Some(3), 4_000 * MS + 5, ContextKind::ReceiveReset, None, 0)
    });
    let c = t.expire(4_000 * MS + 4 + GRACE_NS);
    assert_eq!(c.iter().map(|c| c.sock.0).collect::<Vec<_>>(), [3]);
    // The orphan's end: released a grace period after its close (long past).
    t.set_orphan(
        SockAddr(1),
        key(5),
        Orphan {
            end: Some(OrphanEnd {
                ts_ns: 5_000 * MS,
                how: OrphanHow::Fin { peer: false },
            }),
            ..orphan
        },
    );
    let c = t.expire(5_000 * MS);
    assert_eq!(c.iter().map(|c| c.sock.0).collect::<Vec<_>>(), [1]);
    assert_eq!(t.next_release_ns, u64::MAX, "nothing held");
}
