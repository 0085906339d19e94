use super::*;
use crate::table::{Table, tests::tr};
use TcpState::*;

/// One loopback connection as this kernel reports it (client closes first): client at
/// address 1 (port 5), server child at 2 (port 80).
fn connection(t: &mut Table, p: &mut Pairer) -> Vec<Pair> {
    let steps = [
        tr(1, 0, Close, SynSent, 0, 80),
        tr(1, 50, SynSent, Established, 5, 80),
        tr(2, 60, Listen, SynRecv, 80, 5),
        tr(2, 70, SynRecv, Established, 80, 5),
        tr(1, 1000, Established, FinWait1, 5, 80),
        tr(2, 1010, Established, CloseWait, 80, 5),
        tr(2, 2000, CloseWait, LastAck, 80, 5),
        tr(1, 2010, FinWait1, FinWait2, 5, 80),
        tr(1, 2020, FinWait2, Close, 5, 80),
        tr(2, 2030, LastAck, Close, 80, 5),
    ];
    let mut out = Vec::new();
    for s in &steps {
        p.transition(s);
        t.apply(s);
    }
    // The server's record comes first (the client waits for its TIME_WAIT lookup).
    let mut done = t.flush();
    done.sort_by_key(|c| c.role != Role::Server);
    for c in done {
        out.extend(p.finished(c, true));
    }
    out
}

#[test]
fn both_ends_are_paired_and_each_segment_drawn_once() {
    let (mut t, mut p) = (Table::new(), Pairer::new());
    let pairs = connection(&mut t, &mut p);
    assert_eq!(pairs.len(), 1, "held until the other end finished");
    let (a, b) = &pairs[0];
    let l = build(a, b.as_ref(), &WallClock::fixed(0));
    assert!(l.left.label.starts_with("client 127.0.0.1:5"), "{l:?}");
    assert!(l.right.label.starts_with("server 127.0.0.1:80"), "{l:?}");
    let arrows: Vec<(Side, &str)> = l
        .rows
        .iter()
        .filter_map(|r| r.arrow.as_ref().map(|a| (a.from, a.label)))
        .collect();
    use Side::*;
    assert_eq!(
        arrows,
        [
            (Left, "SYN"),
            (Right, "SYN-ACK"),
            (Left, "ACK"),
            (Left, "FIN"),
            (Right, "ACK"),
            (Right, "FIN"),
            (Left, "ACK"),
        ]
    );
    let states: Vec<(Side, TcpState)> = l
        .rows
        .iter()
        .filter_map(|r| r.state.map(|s| (r.side, s)))
        .collect();
    assert_eq!(
        states,
        [
            (Left, SynSent),
            (Left, Established),
            (Right, SynRecv),
            (Right, Established),
            (Left, FinWait1),
            (Right, CloseWait),
            (Right, LastAck),
            (Left, FinWait2),
            (Left, Close),
            (Right, Close),
        ]
    );
    let text = text::render(&l);
    assert!(text.contains("── SYN ──"), "{text}");
    assert!(text.contains("◀") && text.contains("SYN-ACK ──"), "{text}");
    assert!(text.contains("close active") && text.contains("close passive"));
}

#[test]
fn an_end_without_a_local_peer_is_drawn_alone() {
    let (mut t, mut p) = (Table::new(), Pairer::new());
    for s in [
        tr(1, 0, Close, SynSent, 0, 80),
        tr(1, 50, SynSent, Close, 5, 80),
    ] {
        p.transition(&s);
        t.apply(&s);
    }
    let c = t.flush().pop().unwrap();
    let pairs = p.finished(c, true);
    assert_eq!(pairs.len(), 1);
    assert!(pairs[0].1.is_none());
    let l = build(&pairs[0].0, None, &WallClock::fixed(0));
    assert_eq!(l.right.initial, None);
    assert!(l.right.label.starts_with("remote 127.0.0.1:80"));
    assert_eq!(l.rows.len(), 2);
    // Not shown (filtered out): nothing to draw.
    let s = tr(3, 0, Close, SynSent, 0, 80);
    t.apply(&s);
    t.apply(&tr(3, 9, SynSent, Close, 7, 80));
    assert!(p.finished(t.flush().pop().unwrap(), false).is_empty());
}

#[test]
fn held_ends_are_bounded_and_flushed_at_exit() {
    let mut p = Pairer::new();
    let mut t = Table::new();
    // A server child whose client is still open: held; flushed alone at exit.
    for s in [
        tr(1, 0, Close, SynSent, 0, 80),
        tr(1, 5, SynSent, Established, 5, 80),
        tr(2, 6, Listen, SynRecv, 80, 5),
        tr(2, 7, SynRecv, Established, 80, 5),
        tr(2, 8, Established, Close, 80, 5),
    ] {
        p.transition(&s);
        t.apply(&s);
    }
    let server = t.flush().pop().unwrap();
    assert!(p.finished(server, true).is_empty());
    let rest = p.flush();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].0.role, Role::Server);
}

/// Two containers, the same loopback 4-tuple in each: each end pairs with its own
/// namespace's other end, not with the other container's (they were paired by tuple alone).
#[test]
fn the_same_tuple_in_two_namespaces_pairs_within_each() {
    let (mut t, mut p) = (Table::new(), Pairer::new());
    let in_ns = |mut s: Transition, netns: u32| {
        s.netns = netns;
        s
    };
    let (a, b) = (crate::table::tests::NETNS, crate::table::tests::NETNS + 1);
    let mut steps = Vec::new();
    for (ns, client, server, at) in [(a, 1, 2, 0), (b, 3, 4, 5)] {
        for s in [
            tr(client, at, Close, SynSent, 0, 80),
            tr(client, at + 50, SynSent, Established, 5, 80),
            tr(server, at + 60, Listen, SynRecv, 80, 5),
            tr(server, at + 70, SynRecv, Established, 80, 5),
        ] {
            steps.push(in_ns(s, ns));
        }
    }
    // B's server closes first, then A's client, then A's server and B's client.
    for (sock, ns, peer_port, local) in [(4, b, 5, 80), (1, a, 80, 5), (2, a, 5, 80), (3, b, 80, 5)]
    {
        steps.push(in_ns(
            tr(sock, 1_000, Established, Close, local, peer_port),
            ns,
        ));
    }
    let mut pairs = Vec::new();
    for s in &steps {
        p.transition(s);
        t.apply(s);
        if s.new == Close {
            for c in t.flush() {
                pairs.extend(p.finished(c, true));
            }
        }
    }
    assert_eq!(pairs.len(), 2, "{pairs:#?}");
    for (one, other) in &pairs {
        let other = other.as_ref().expect("both ends on this host");
        assert_eq!(one.netns, other.netns);
        assert_eq!(one.tuple, other.tuple.reversed());
    }
}
