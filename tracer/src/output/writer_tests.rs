use std::{io::Write, net::IpAddr};

use anstyle::Style;
use chrono::Local;

use super::{json::*, text::*, *};
use crate::{
    cgroup::Names,
    clock::WallClock,
    decode::{Comm, ContextKind, Family, SockAddr, TcpState, Transition},
    table::{CloseClass, Conn, DiagTransition, Note, Owner, OwnerSource, Role, SeenFrom, TimeWait},
    tuple::Tuple,
    units::*,
};
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

/// A cgroup cache knowing [`odd_owner`]'s cgroup: a path that needs JSON escapes, with a
/// unit, a container and a pod in it.
fn odd_names() -> Names {
    let names = Names::new();
    names.learn(
        1 << 40,
        Some(format!(
            "/we\"ird\\ caf\u{e9}\u{1}/kubepods-besteffort-pod1a2b3c4d_0000_1111.slice/cri-containerd-{}.scope",
            "ab".repeat(32)
        )),
    );
    names
}

/// Two JSON sinks (hand-written and serde) sharing `names`.
fn json_pair(clock: WallClock, names: &Names) -> (Json<Vec<u8>>, Json<Vec<u8>>) {
    let (mut fast, mut slow) = (Json::new(Vec::new(), clock), Json::new(Vec::new(), clock));
    fast.use_cgroups(names);
    slow.use_cgroups(names);
    (fast, slow)
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
    v6.tuple.local.addr = "::ffff:127.0.0.1".parse().unwrap();
    v6.tuple.remote.addr = "fd00::1".parse().unwrap();
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
        let (mut fast, mut slow) = json_pair(clock, &odd_names());
        fast.transition(t, in_old, o).unwrap();
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
        OwnerSource::Accept,
    ];
    // Cgroups learned part-way: the owners cached before must be written again.
    let names = Names::new();
    names.learn(1, Some("/".into()));
    let (mut fast, mut slow) = json_pair(clock, &names);
    let mut ts: u64 = 1_000_000_000 - 3;
    for i in 0u32..600 {
        match i {
            200 => names.learn(2, Some("/system.slice/a.service".into())),
            300 => names.learn(3, Some(format!("/docker/{}", "c".repeat(64)))),
            400 => names.learn(2, Some("/system.slice/b\"c.service".into())),
            500 => names.learn(3, None),
            _ => {}
        }
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
        t.tuple.local.addr = IpAddr::V4([o, 255 - o, o / 10, 0].into());
        t.tuple.remote.addr = IpAddr::V4([10, o % 100, 100, o].into());
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
        netns: 4_026_532_001,
        family: Family::Ipv4,
        tuple: Tuple::new(
            "127.0.0.1".parse().unwrap(),
            40000,
            "10.1.2.3".parse().unwrap(),
            443,
        ),
        old: TcpState::FinWait2,
        new: TcpState::TimeWait,
        expires_ns: Some(1_657_174_506_244),
        in_old_ns: None,
        owner: Some(owner),
    };
    let end = DiagTransition {
        ts_ns: 1_657_200_000_000,
        family: Family::Ipv6,
        tuple: Tuple::new(
            "fd00::1".parse().unwrap(),
            40000,
            "::ffff:10.0.0.1".parse().unwrap(),
            443,
        ),
        old: TcpState::TimeWait,
        new: TcpState::Close,
        expires_ns: None,
        in_old_ns: Some(60_025_493_756),
        owner: None,
        ..start
    };
    let (mut fast, mut slow) = json_pair(clock, &odd_names());
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
    events[2].tuple.local.addr = "fd00::1".parse().unwrap();
    events[2].tuple.remote.addr = "::ffff:10.0.0.1".parse().unwrap();
    events[3].task.comm = owner.comm;
    for (c, o) in events.iter().zip([None, Some(&owner), None, Some(&owner)]) {
        let (mut fast, mut slow) = json_pair(clock, &odd_names());
        fast.event(c, o).unwrap();
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
    full.tuple.local.addr = "::1".parse().unwrap();
    let mut unconfirmed = plain.clone();
    unconfirmed.time_wait = Some(TimeWait {
        confirmed: false,
        expires_ns: None,
    });
    unconfirmed.states.truncate(1);
    unconfirmed.entered_ns.truncate(1);
    for c in [&plain, &full, &unconfirmed] {
        let (mut fast, mut slow) = json_pair(clock, &odd_names());
        fast.connection(c).unwrap();
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
        Role::Listener => format!("listening on {}", endpoint(c.tuple.local)),
        _ => format!(
            "{} -> {}",
            endpoint(c.tuple.local),
            endpoint(c.tuple.remote)
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
        "{b}── {} {} {peer}{owner}{close}  lifetime {}{}{}{b:#}",
        c.sock,
        c.role.name(),
        human_ns(c.lifetime_ns()),
        super::text::tcp_words(c).map_or_else(String::new, |w| format!("  {w}")),
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
    let handoff = super::text::orphan_note(c);
    for (i, (state, entered)) in c.states.iter().zip(c.entered_ns.iter()).enumerate() {
        if let Some((ts, text)) = handoff.filter(|_| i + 1 == c.states.len()) {
            emit_notes(&mut block, Some(ts), &mut notes);
            let _ = writeln!(block, "   {dim}{:>10}{dim:#}  ! {text}", offset(Some(ts)));
        }
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
    c.tuple.local.addr = "fd00::1".parse().unwrap();
    c.tuple.remote.addr = "::ffff:10.0.0.1".parse().unwrap();
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
    // With its counters.
    let mut carried = client.clone();
    carried.tcp = Some(Box::new(tracer_common::TcpStats {
        bytes_acked: 1_234_567,
        bytes_received: 3_500,
        srtt_us: 52 << 3,
        total_retrans: 3,
        present: tracer_common::stat::BYTES_ACKED
            | tracer_common::stat::BYTES_RECEIVED
            | tracer_common::stat::SRTT
            | tracer_common::stat::TOTAL_RETRANS,
        ..Default::default()
    }));
    conns.push(carried);
    // An orphaned FIN_WAIT2, each way it can end (the handoff before a note, after one).
    for end in [
        None,
        Some(crate::table::OrphanHow::Fin { peer: true }),
        Some(crate::table::OrphanHow::Timeout),
        Some(crate::table::OrphanHow::Gone),
    ] {
        let mut o = client.clone();
        let n = o.entered_ns.len();
        let fin_wait2 = o.entered_ns.get(n - 2).unwrap_or(0);
        o.orphan = Some(Box::new(crate::table::Orphan {
            handoff_ns: fin_wait2 + 5_000,
            expires_ns: Some(fin_wait2 + 60_000_000_000),
            end: end.map(|how| crate::table::OrphanEnd {
                ts_ns: fin_wait2 + 300_000_000,
                how,
            }),
        }));
        o.entered_ns.set(n - 1, Some(fin_wait2 + 300_000_000));
        conns.push(o);
    }
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
        local = endpoint(t.tuple.local),
        remote = endpoint(t.tuple.remote),
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
    v6.tuple.local.addr = "2001:db8:1234:5678:9abc:def0:1234:5678".parse().unwrap();
    v6.tuple.remote.addr = "::1".parse().unwrap();
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

#[test]
fn columns_rows_line_up_under_their_header() {
    let (_, mut c) = super::tests::client();
    c.tcp = Some(Box::new(tracer_common::TcpStats {
        bytes_acked: 1_235,
        bytes_received: 3_500,
        srtt_us: 52 << 3,
        total_retrans: 3,
        present: tracer_common::stat::BYTES_ACKED
            | tracer_common::stat::BYTES_RECEIVED
            | tracer_common::stat::SRTT
            | tracer_common::stat::TOTAL_RETRANS,
        ..Default::default()
    }));
    let head = super::text::columns_header();
    let row = super::text::columns_row(&c);
    // Every header column starts where its value does.
    for name in ["COMM", "ROLE", "LOCAL", "REMOTE"] {
        let at = head.find(name).unwrap();
        assert_ne!(row.as_bytes()[at], b' ', "{name}:\n{head}\n{row}");
        assert_eq!(row.as_bytes()[at - 1], b' ', "{name}:\n{head}\n{row}");
    }
    assert!(
        row.contains(" 1.2KiB ") && row.contains(" 3.4KiB ") && row.contains(" 52.0µs "),
        "{row}"
    );
    assert!(row.ends_with(" active"), "{row}");
    // The longest role name fits its column too.
    c.role = Role::Listener;
    let row = super::text::columns_row(&c);
    let at = head.find("LOCAL").unwrap();
    assert_eq!(&row[at - 9..at], "listener ", "\n{head}\n{row}");
}

#[test]
fn the_timeline_header_says_what_the_connection_carried() {
    // Literal text, not `tcp_words` compared with itself. The client of `client()`: its SYN
    // and FIN acked, the peer's FIN received (FIN_WAIT2 → CLOSE), so 100,000 + 2 acked and
    // 50,000 + 1 received are 97.7KiB and 48.8KiB of data.
    let (_, mut c) = super::tests::client();
    let header = |c: &Conn| {
        let mut text = Text::new(Vec::new(), WallClock::fixed(0), false, true);
        text.connection(c).unwrap();
        let out = String::from_utf8(text.out).unwrap();
        out.lines().next().unwrap().to_string()
    };
    let stats = tracer_common::TcpStats {
        bytes_acked: 100_002,
        bytes_received: 50_001,
        srtt_us: 52 << 3,
        total_retrans: 3,
        present: tracer_common::stat::BYTES_ACKED
            | tracer_common::stat::BYTES_RECEIVED
            | tracer_common::stat::SRTT
            | tracer_common::stat::TOTAL_RETRANS,
        ..Default::default()
    };
    c.tcp = Some(Box::new(stats));
    assert_eq!(
        header(&c),
        "── 0xffff888100001000 client 127.0.0.1:40000 -> 127.0.0.1:8080  owner 7 (app)  \
         close active  lifetime 1.30ms  tx 97.7KiB rx 48.8KiB rtt 52.0µs retrans 3"
    );
    // No retransmits: not said. A field the kernel lacks: left out.
    c.tcp = Some(Box::new(tracer_common::TcpStats {
        total_retrans: 0,
        present: stats.present & !tracer_common::stat::SRTT,
        ..stats
    }));
    assert_eq!(
        header(&c),
        "── 0xffff888100001000 client 127.0.0.1:40000 -> 127.0.0.1:8080  owner 7 (app)  \
         close active  lifetime 1.30ms  tx 97.7KiB rx 48.8KiB"
    );
    // Without counters: the header as it always was.
    c.tcp = None;
    assert_eq!(
        header(&c),
        "── 0xffff888100001000 client 127.0.0.1:40000 -> 127.0.0.1:8080  owner 7 (app)  \
         close active  lifetime 1.30ms"
    );
}

/// A socket in another network namespace than the tracer's (a container's) is named at the
/// end of its rows: event rows, `--columns` rows, the ladder's title. The tracer's own
/// namespace, or an unknown one, changes nothing: the row is byte for byte the usual one.
#[test]
fn another_namespace_is_named_at_the_end_of_rows_only() {
    use crate::table::tests::{NETNS, ctx, tr};
    let clock = WallClock::fixed(1_795_475_125_841_852_172);
    let here = tr(1, 1_000, TcpState::SynSent, TcpState::Established, 5, 80);
    let mut there = here;
    there.netns = NETNS + 1;
    let rows = |home: u32, t: &Transition| {
        crate::enrich::netns::set_home(home);
        let mut sink = Text::new(Vec::new(), clock, false, true);
        sink.header_done = true;
        sink.transition(t, None, None).unwrap();
        let mut e = ctx(Some(1), 2_000, ContextKind::ReceiveReset, None, 0);
        e.netns = t.netns;
        sink.event(&e, None).unwrap();
        String::from_utf8(sink.out).unwrap()
    };
    let plain = reference_row(clock, &here, None, None);
    let mut shown = rows(NETNS, &there)
        .lines()
        .map(str::to_string)
        .collect::<Vec<_>>();
    assert_eq!(
        shown[0],
        format!("{}  netns {}", plain.trim_end(), NETNS + 1),
        "the transition row, then the namespace"
    );
    assert!(
        shown[1].ends_with(&format!("! RST received  netns {}", NETNS + 1)),
        "{}",
        shown[1]
    );
    // Here, or with no "here" known (a recording from before namespaces): unchanged.
    for (home, t) in [(NETNS, &here), (0, &there)] {
        shown = rows(home, t).lines().map(str::to_string).collect();
        assert_eq!(format!("{}\n", shown[0]), plain);
        assert!(shown[1].ends_with("! RST received"), "{}", shown[1]);
    }

    // --columns: after the last column, which keeps its place.
    let (_, mut c) = super::tests::client();
    crate::enrich::netns::set_home(c.netns);
    let usual = super::text::columns_row(&c);
    c.netns += 1;
    assert_eq!(
        super::text::columns_row(&c),
        format!("{usual}  netns {}", c.netns)
    );
    // The ladder's title.
    let l = crate::ladder::build(&c, None, &clock);
    assert!(
        l.title.ends_with(&format!(" netns {}", c.netns)),
        "{}",
        l.title
    );
    c.netns -= 1;
    let l = crate::ladder::build(&c, None, &clock);
    assert!(!l.title.contains("netns"), "{}", l.title);
    crate::enrich::netns::set_home(0);
}
