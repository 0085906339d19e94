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

/// An orphaned FIN_WAIT2 (the client handed to a timewait socket at its close, the server's
/// FIN 300 ms later): the server's FIN is drawn where the server sent it (its LAST_ACK), not
/// at the client's handoff, no segment comes from the right before it, and the handoff is a
/// note on the client's line, with no arrow. The same in text and in the SVG.
#[test]
fn an_orphans_ladder_draws_the_peers_fin_where_it_was_sent() {
    const HANDOFF: &str = "handed to a timewait socket (FIN_WAIT2)";
    let l = orphan_sample();
    let handoff = l
        .rows
        .iter()
        .find(|r| r.note.as_deref() == Some(HANDOFF))
        .expect("the handoff's note");
    assert_eq!(
        (
            handoff.side,
            handoff.state,
            &handoff.arrow,
            handoff.offset_ns
        ),
        (Side::Left, None, &None, 387_400)
    );
    let last_ack = l
        .rows
        .iter()
        .position(|r| r.side == Side::Right && r.state == Some(LastAck))
        .unwrap();
    assert_eq!(
        l.rows[last_ack].arrow,
        Some(Arrow {
            from: Side::Right,
            label: "FIN"
        }),
        "the server's FIN on its LAST_ACK row"
    );
    assert_eq!(l.rows[last_ack].offset_ns, 300_270_000);
    // Between the client's FIN and the server's: only the ACK of the client's FIN and no
    // arrow at all from the handoff on.
    let arrows: Vec<(u64, Side, &str)> = l
        .rows
        .iter()
        .filter_map(|r| r.arrow.as_ref().map(|a| (r.offset_ns, a.from, a.label)))
        .collect();
    use Side::*;
    assert_eq!(
        arrows,
        [
            (0, Left, "SYN"),
            (43_200, Right, "SYN-ACK"),
            (43_200, Left, "ACK"),
            (86_400, Left, "FIN"),
            (91_600, Right, "ACK"),
            (300_270_000, Right, "FIN"),
            (300_270_000, Left, "ACK"),
        ]
    );
    // The client's CLOSE (and TIME_WAIT) after the server's FIN, on the same instant.
    let close = l
        .rows
        .iter()
        .position(|r| r.side == Left && r.state == Some(Close))
        .unwrap();
    assert!(close > last_ack && l.rows[close].offset_ns == 300_270_000);

    let text = text::render(&l);
    let lines: Vec<&str> = text.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} not in\n{text}"))
    };
    let (note, fin2) = (at(HANDOFF), at("LAST_ACK"));
    assert!(
        lines[note].contains("! ") && !lines[note].contains('─'),
        "{text}"
    );
    assert!(
        lines[fin2].contains('◀') && lines[fin2].contains(" FIN "),
        "{text}"
    );
    assert!(
        lines[note + 1..fin2].iter().all(|l| !l.contains('─')),
        "no segment between the handoff and the server's FIN:\n{text}"
    );
    assert!(note < fin2 && fin2 < at("TIME_WAIT"), "{text}");

    let svg = svg::render(&l);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let y = |n: roxmltree::Node| n.attribute("y").unwrap().parse::<f64>().unwrap();
    let note = doc
        .descendants()
        .find(|n| n.attribute("class") == Some("note") && n.text() == Some(HANDOFF))
        .expect("the handoff's note in the SVG");
    assert_eq!(note.attribute("data-side"), Some("left"));
    let state_y = |side: &str, name: &str| {
        doc.descendants()
            .find(|n| {
                n.attribute("class") == Some("state")
                    && n.attribute("data-side") == Some(side)
                    && n.text() == Some(name)
            })
            .map(y)
            .unwrap_or_else(|| panic!("no {side} {name}"))
    };
    // Arrows: (from, label, y of the line).
    let arrows: Vec<(String, String, f64)> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("arrow"))
        .map(|g| {
            let line = g.children().find(|n| n.has_tag_name("line")).unwrap();
            let label = g
                .descendants()
                .find(|n| n.attribute("class") == Some("label"))
                .and_then(|n| n.text())
                .unwrap();
            (
                g.attribute("data-from").unwrap().to_string(),
                label.to_string(),
                line.attribute("y1").unwrap().parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(arrows.len(), 7, "{arrows:?}");
    let right_fins: Vec<f64> = arrows
        .iter()
        .filter(|(from, label, _)| from == "right" && label == "FIN")
        .map(|a| a.2)
        .collect();
    let last_ack_y = state_y("right", "LAST_ACK");
    assert_eq!(right_fins.len(), 1, "{arrows:?}");
    assert!(
        (right_fins[0] - last_ack_y).abs() < 12.0,
        "the server's FIN at {} beside its LAST_ACK at {last_ack_y}",
        right_fins[0]
    );
    // Nothing drawn across on the handoff's row, and the FIN well below it.
    let note_y = y(note);
    assert!(
        arrows.iter().all(|a| (a.2 - note_y).abs() > 12.0),
        "an arrow on the handoff's row ({note_y}): {arrows:?}"
    );
    assert!(right_fins[0] > note_y && state_y("left", "TIME_WAIT") > right_fins[0]);
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
