use super::{json::*, text::*, *};
use crate::table::{Table, tests::tr};
use crate::{
    clock::WallClock,
    decode::{LostCause, TcpState, Transition},
    table::{Conn, DiagTransition},
    tuple::{Endpoint, Tuple},
    units::*,
};
use TcpState::*;

const OFFSET: i128 = 1_700_000_000_000_000_000;

pub(super) fn client() -> (Vec<(Transition, Option<u64>)>, Conn) {
    let mut t = Table::new();
    let evs = [
        tr(0xffff_8881_0000_1000, 1_000, Close, SynSent, 0, 8080),
        tr(
            0xffff_8881_0000_1000,
            51_000,
            SynSent,
            Established,
            40000,
            8080,
        ),
        tr(
            0xffff_8881_0000_1000,
            1_051_000,
            Established,
            FinWait1,
            40000,
            8080,
        ),
        tr(
            0xffff_8881_0000_1000,
            1_061_000,
            FinWait1,
            FinWait2,
            40000,
            8080,
        ),
        tr(
            0xffff_8881_0000_1000,
            1_301_000,
            FinWait2,
            Close,
            40000,
            8080,
        ),
    ];
    let mut out = Vec::new();
    for e in evs {
        let a = t.apply(&e);
        out.push((e, a.in_old_ns));
    }
    (out, t.flush().remove(0))
}

#[test]
fn json_transition_has_the_documented_schema() {
    let (evs, _) = client();
    let mut s = Json::new(Vec::new(), WallClock::fixed(OFFSET));
    s.transition(&evs[1].0, evs[1].1, None).unwrap();
    let line = String::from_utf8(s.into_inner().unwrap()).unwrap();
    assert_eq!(
        line,
        concat!(
            r#"{"v":1,"type":"transition","time":"2023-11-14T22:13:20.000051000Z","ts_ns":51000,"#,
            r#""sock":"0xffff888100001000","netns":4026531840,"family":"ipv4","saddr":"127.0.0.1","sport":40000,"#,
            r#""daddr":"127.0.0.1","dport":8080,"old":"SYN_SENT","new":"ESTABLISHED","#,
            r#""in_old_ns":50000,"pid":7,"tid":7,"comm":"app","cpu":0,"owner":null,"#,
            r#""source":"tracepoint"}"#,
            "\n"
        )
    );
}

#[test]
fn json_connection_has_the_documented_schema() {
    let (_, c) = client();
    let mut s = Json::new(Vec::new(), WallClock::fixed(OFFSET));
    s.connection(&c).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&s.into_inner().unwrap()).unwrap();
    assert_eq!(v["type"], "connection");
    assert_eq!(v["role"], "client");
    assert_eq!(
        v["states"],
        serde_json::json!([
            "CLOSE",
            "SYN_SENT",
            "ESTABLISHED",
            "FIN_WAIT1",
            "FIN_WAIT2",
            "CLOSE"
        ])
    );
    assert_eq!(
        v["durations_ns"],
        serde_json::json!([null, 50000, 1000000, 10000, 240000])
    );
    assert_eq!(
        (v["start_ns"].as_u64(), v["end_ns"].as_u64()),
        (Some(1000), Some(1_301_000))
    );
    assert_eq!(v["lifetime_ns"], 1_300_000);
    assert_eq!(
        (v["sport"].as_u64(), v["dport"].as_u64()),
        (Some(40000), Some(8080))
    );
    assert_eq!(v["incomplete"], false);
    assert_eq!(v["sock"], "0xffff888100001000");
}

#[test]
fn json_lost() {
    let mut s = Json::new(Vec::new(), WallClock::fixed(0));
    s.lost(LostCause::Recursion, 3, 10).unwrap();
    assert_eq!(
        String::from_utf8(s.into_inner().unwrap()).unwrap(),
        "{\"v\":1,\"type\":\"lost\",\"count\":3,\"cause\":\"recursion\",\"total\":10}\n"
    );
}

#[test]
fn text_without_colour_has_aligned_columns_and_a_timeline() {
    let (evs, c) = client();
    let mut s = Text::new(Vec::new(), WallClock::fixed(OFFSET), false, true);
    for (e, in_old) in &evs {
        s.transition(e, *in_old, None).unwrap();
    }
    s.connection(&c).unwrap();
    let out = String::from_utf8(s.out).unwrap();
    assert!(!out.contains('\x1b'), "no escapes without colour");
    let lines: Vec<_> = out.lines().collect();
    assert!(lines[0].starts_with("TIME "));
    assert!(lines[1].contains("127.0.0.1:0 ") && lines[1].contains("CLOSE -> SYN_SENT"));
    assert!(lines[1].ends_with(" -"), "{}", lines[1]);
    assert!(lines[2].contains("SYN_SENT -> ESTABLISHED") && lines[2].ends_with(" 50.0µs"));
    assert_eq!(
        lines[6],
        "── 0xffff888100001000 client 127.0.0.1:40000 -> 127.0.0.1:8080  owner 7 (app)  close active  lifetime 1.30ms"
    );
    assert_eq!(lines[7], "            ?  CLOSE        ?");
    assert_eq!(lines[8], "         +0ns  SYN_SENT     50.0µs");
    assert_eq!(lines[12], "      +1.30ms  CLOSE");
    // The IN OLD column starts at the same place on every line.
    let in_old_col = |l: &str| l.len() - l.rsplit(' ').next().unwrap().len();
    assert_eq!(in_old_col(lines[1]), in_old_col(lines[2]));
}

/// Owners with a known cgroup carry its identity: in every JSON record that has an owner
/// (hand-written and serde ones), after the owner in text; unknown or plain cgroups
/// leave text as it was.
#[test]
fn owner_identity_in_json_and_text() {
    use crate::{
        cgroup::Names,
        table::{StuckGroup, StuckReport, Unstuck},
    };
    let (evs, c) = client();
    let owner = c.owner.unwrap();
    assert_eq!(owner.cgroup_id, 9);
    let ctr = "3f2a9c1b7d0e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c";
    let names = Names::new();
    names.learn(
        9,
        Some(format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b3c4d_5678_90ab_cdef_001122334455.slice/cri-containerd-{ctr}.scope"
        )),
    );
    let mut s = Json::new(Vec::new(), WallClock::fixed(OFFSET));
    s.use_cgroups(&names);
    s.transition(&evs[0].0, None, Some(&owner)).unwrap();
    s.connection(&c).unwrap();
    let report = StuckReport {
        conn: c.clone(),
        state: CloseWait,
        age_ns: 5,
        age_at_least: false,
        report: 1,
        info: None,
    };
    s.stuck(&report).unwrap();
    let u = Unstuck {
        state: CloseWait,
        age_ns: 5,
        age_at_least: false,
        reports: 1,
    };
    s.unstuck(&evs[1].0, &u, Some(&owner)).unwrap();
    let g = StuckGroup {
        owner: Some(owner),
        state: CloseWait,
        count: 1,
        oldest_ns: 5,
        oldest_at_least: false,
    };
    s.stuck_summary(std::slice::from_ref(&g), 1).unwrap();
    let out = String::from_utf8(s.into_inner().unwrap()).unwrap();
    let want = serde_json::json!({
        "pid": 7, "comm": "app", "uid": 1000, "cgroup_id": 9,
        "cgroup": format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b3c4d_5678_90ab_cdef_001122334455.slice/cri-containerd-{ctr}.scope"),
        "unit": format!("cri-containerd-{ctr}.scope"),
        "container_id": ctr,
        "pod_uid": "1a2b3c4d-5678-90ab-cdef-001122334455",
        "source": "event",
    });
    for l in out.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let o = if v["type"] == "stuck_summary" {
            &v["groups"][0]["owner"]
        } else {
            &v["owner"]
        };
        assert_eq!(o, &want, "{l}");
    }

    // Text: the short form after the owner, wherever an owner is shown.
    let text = |names: &Names| {
        let mut t = Text::new(Vec::new(), WallClock::fixed(OFFSET), false, true);
        t.use_cgroups(names);
        t.transition(&evs[0].0, None, Some(&owner)).unwrap();
        t.transition(&evs[1].0, evs[1].1, None).unwrap();
        t.connection(&c).unwrap();
        t.stuck(&report).unwrap();
        t.unstuck(&evs[1].0, &u, Some(&owner)).unwrap();
        t.stuck_summary(std::slice::from_ref(&g), 1).unwrap();
        String::from_utf8(t.out).unwrap()
    };
    let tagged = text(&names);
    let lines: Vec<&str> = tagged.lines().collect();
    let tag = "[ctr 3f2a9c1b7d0e pod 1a2b3c4d]";
    assert!(lines[1].ends_with(&format!(" -  {tag}")), "{}", lines[1]);
    assert!(!lines[2].contains('['), "no owner, no tag: {}", lines[2]);
    assert!(
        lines[3].contains(&format!("owner 7 (app) {tag}  close active")),
        "{}",
        lines[3]
    );
    assert!(
        tagged.contains(&format!("owner 7 (app) {tag}\n      so far")),
        "{tagged}"
    );
    assert!(
        tagged.contains(&format!("after 5ns  owner 7 (app) {tag}\n")),
        "{tagged}"
    );
    assert!(
        tagged.contains(&format!("  pid 7 (app) {tag} holds 1 socket")),
        "{tagged}"
    );
    // A unit only.
    names.learn(9, Some("/system.slice/nginx.service".into()));
    assert!(text(&names).contains("owner 7 (app) [nginx.service]  close"));
    // Neither unit nor container, or not known: exactly the text of before.
    let plain = text(&Names::new());
    assert!(!plain.contains('['), "{plain}");
    names.learn(9, Some("/user.slice".into()));
    assert_eq!(text(&names), plain);
}

#[test]
fn ipv6_endpoints_are_bracketed() {
    assert_eq!(
        endpoint(Endpoint::new("::1".parse().unwrap(), 80)),
        "[::1]:80"
    );
    assert_eq!(
        endpoint(Endpoint::new("10.0.0.1".parse().unwrap(), 0)),
        "10.0.0.1:0"
    );
}

#[test]
fn human_durations() {
    assert_eq!(human_ns(850), "850ns");
    assert_eq!(human_ns(52_340), "52.3µs");
    assert_eq!(human_ns(1_250_000), "1.25ms");
    assert_eq!(human_ns(3_200_000_000), "3.20s");
    assert_eq!(human_ns(125_000_000_000), "2m05s");
    assert_eq!(human_ns(7_500_000_000_000), "2h05m");
}

/// The JSON schema, record by record: every key, in order. A change here is a change to
/// the interface log shippers rely on: update the README and, if a key changes meaning or
/// goes away, SCHEMA_VERSION.
#[test]
fn schema_of_every_record_type() {
    use crate::{
        decode::{ContextKind, Family},
        summary::Summary,
        table::{
            Note, StuckGroup, StuckReport, TimeWait, Unstuck,
            tests::{ctx, task},
        },
    };
    let (evs, mut c) = client();
    let owner = c
        .owner
        .expect("the client's owner comes from its connect()");
    // One context event of each shape on the connection: an error (it has `errno`) and a
    // destroy (it has not).
    c.notes.push(Note {
        kind: ContextKind::Error,
        ts_ns: 1_301_500,
        state: None,
        value: 111,
    });
    c.notes.push(Note {
        kind: ContextKind::Destroy,
        ts_ns: 1_302_000,
        state: None,
        value: 0,
    });
    c.time_wait = Some(TimeWait {
        confirmed: true,
        expires_ns: Some(60_000_000_000),
    });
    c.tcp = Some(Box::new(tracer_common::TcpStats {
        bytes_acked: 1,
        bytes_received: 1,
        segs_out: 5,
        segs_in: 4,
        srtt_us: 52 << 3,
        present: tracer_common::stat::BYTES_ACKED
            | tracer_common::stat::BYTES_RECEIVED
            | tracer_common::stat::SEGS_OUT
            | tracer_common::stat::SEGS_IN
            | tracer_common::stat::SRTT,
        ..Default::default()
    }));
    c.orphan = Some(Box::new(crate::table::Orphan {
        handoff_ns: 1_061_000,
        expires_ns: Some(60_001_061_000),
        end: Some(crate::table::OrphanEnd {
            ts_ns: 1_301_000,
            how: crate::table::OrphanHow::Fin { peer: true },
        }),
    }));
    let mut s = Json::new(Vec::new(), WallClock::fixed(OFFSET));
    s.transition(&evs[0].0, None, Some(&owner)).unwrap();
    let mut e = ctx(Some(1), 5, ContextKind::Error, None, 111);
    e.task = task(7, "app");
    s.event(&e, Some(&owner)).unwrap();
    s.connection(&c).unwrap();
    let d = DiagTransition {
        ts_ns: 9,
        sock: c.sock,
        netns: c.netns,
        family: Family::Ipv4,
        tuple: Tuple::new(c.tuple.local.addr, 1, c.tuple.remote.addr, 2),
        old: FinWait2,
        new: TimeWait,
        expires_ns: Some(60),
        in_old_ns: None,
        owner: Some(owner),
    };
    s.diag_transition(&d).unwrap();
    s.stuck(&StuckReport {
        conn: c.clone(),
        state: CloseWait,
        age_ns: 5,
        age_at_least: false,
        report: 1,
        info: Some(crate::table::SockInfo {
            recv_queue: 7,
            ..Default::default()
        }),
    })
    .unwrap();
    s.unstuck(
        &evs[1].0,
        &Unstuck {
            state: CloseWait,
            age_ns: 5,
            age_at_least: true,
            reports: 2,
        },
        Some(&owner),
    )
    .unwrap();
    let g = StuckGroup {
        owner: Some(owner),
        state: CloseWait,
        count: 3,
        oldest_ns: 9,
        oldest_at_least: false,
    };
    s.stuck_summary(&[g], 30).unwrap();
    s.lost(LostCause::RingbufFull, 1, 1).unwrap();
    let mut sum = Summary::new();
    for (t, _) in &evs {
        sum.transition(t);
    }
    sum.connection(&c);
    s.summary(&sum).unwrap();
    let out = String::from_utf8(s.into_inner().unwrap()).unwrap();
    let got: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<Ordered>(l).unwrap().shape())
        .collect();
    const OWNER: &str = "{pid comm uid cgroup_id cgroup unit container_id pod_uid source}";
    const TUPLE: &str = "family saddr sport daddr dport";
    let want = [
        format!(
            "{{v type time ts_ns sock netns {TUPLE} old new in_old_ns pid tid comm cpu owner{OWNER} source}}"
        ),
        format!(
            "{{v type kind time ts_ns sock netns {TUPLE} state errno value pid tid comm cpu owner{OWNER}}}"
        ),
        format!(
            "{{v type sock netns {TUPLE} role states durations_ns start_ns end_ns lifetime_ns start_time \
             incomplete owner{OWNER} close \
             events[{{kind ts_ns state errno value}} {{kind ts_ns state value}}] events_dropped \
             retransmits syn_retransmits synack_retransmits resets_sent resets_received error \
             time_wait{{confirmed expires_ns}} orphan{{handoff_ns expires_ns end end_ns source}} \
             tcp{{bytes_sent bytes_received bytes_retrans segs_out segs_in retrans_total srtt_us \
             rttvar_us min_rtt_us cwnd handshake_rtt_us delivery_rate_bytes_per_s}} seen_from}}"
        ),
        format!(
            "{{v type time ts_ns sock netns {TUPLE} old new in_old_ns pid tid comm cpu owner{OWNER} \
             source expires_ns}}"
        ),
        format!(
            "{{v type sock netns state age_ns age_at_least report owner{OWNER} {TUPLE} role states \
             seen_from orphaned why{{text recv_queue send_queue notsent_bytes unacked retransmits probes \
             backoff rto_us rtt_us total_retrans last_data_sent_ms last_data_recv_ms last_ack_recv_ms \
             snd_wnd rttvar_us min_rtt_us cwnd bytes_acked bytes_received segs_out segs_in \
             delivery_rate_bytes_per_s}}}}"
        ),
        format!(
            "{{v type time ts_ns sock netns state new age_ns age_at_least reports owner{OWNER} {TUPLE}}}"
        ),
        format!(
            "{{v type threshold_ns groups[{{owner{OWNER} state count oldest_ns oldest_at_least}}]}}"
        ),
        "{v type count cause total}".to_string(),
        "{v type span_ns connections incomplete by_role_close[{role close count}] \
         transitions[{old new count}] \
         durations[{name count p50_ns p90_ns p99_ns max_ns buckets[{le_ns count}]}] \
         bytes[{name count p50_bytes p90_bytes p99_bytes max_bytes buckets[{le_bytes count}]}] \
         top_remotes_by_connections[{remote count}] top_remotes_by_resets \
         top_remotes_by_bytes[{remote count}] top_remotes_by_retransmits remotes_not_counted}"
            .to_string(),
    ];
    assert_eq!(got.len(), want.len(), "{out}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "\nin:\n{out}");
    }
}

/// A JSON value with its objects' keys in the order they were written (serde_json's own
/// `Value` sorts them), to pin the schema's key order.
enum Ordered {
    Object(Vec<(String, Ordered)>),
    Array(Vec<Ordered>),
    Scalar,
}

impl Ordered {
    /// Keys in order, a nested object in braces after its key, each distinct shape of an
    /// array's objects in brackets (in order of first appearance); scalars and arrays of
    /// scalars leave only their key.
    fn shape(&self) -> String {
        match self {
            Self::Scalar => String::new(),
            Self::Object(kv) => {
                let keys: Vec<String> = kv
                    .iter()
                    .map(|(k, v)| format!("{k}{}", v.shape()))
                    .collect();
                format!("{{{}}}", keys.join(" "))
            }
            Self::Array(items) => {
                let mut shapes: Vec<String> = Vec::new();
                for s in items.iter().map(Self::shape).filter(|s| !s.is_empty()) {
                    if !shapes.contains(&s) {
                        shapes.push(s);
                    }
                }
                if shapes.is_empty() {
                    String::new()
                } else {
                    format!("[{}]", shapes.join(" "))
                }
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_str<E>(self, _: &str) -> Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Scalar)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Ordered, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Ordered::Array(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Ordered, A::Error> {
                let mut v = Vec::new();
                while let Some((k, x)) = a.next_entry::<String, Ordered>()? {
                    v.push((k, x));
                }
                Ok(Ordered::Object(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// An orphaned FIN_WAIT2's stuck report says who closed it only where that is known: a
/// close the tracer saw, made by a process it named. The bug: any orphan without an owner
/// was "closed before tracer started", even one the tracer saw close. One from the dump
/// moves without an address: no sock in JSON, "(from dump)" in text.
#[test]
fn an_orphans_stuck_report_says_what_is_known_of_who_closed_it() {
    use crate::table::{Orphan, SeenFrom, StuckReport, Unstuck};
    let (evs, mut c) = client();
    c.orphan = Some(Box::new(Orphan {
        handoff_ns: 1_301_000,
        expires_ns: Some(60_001_301_000),
        end: None,
    }));
    let why = |c: &Conn| {
        let mut t = Text::new(Vec::new(), WallClock::fixed(OFFSET), false, true);
        t.stuck(&StuckReport {
            conn: c.clone(),
            state: FinWait2,
            age_ns: 2_000_000_000,
            age_at_least: c.seen_from == SeenFrom::Dump,
            report: 1,
            info: None,
        })
        .unwrap();
        let out = String::from_utf8(t.out).unwrap();
        out.lines()
            .find_map(|l| l.trim_start().strip_prefix("why: ").map(str::to_string))
            .unwrap_or_else(|| panic!("no why: {out}"))
    };
    assert_eq!(why(&c), "closed by pid 7 (app); the peer never sent FIN");
    c.owner = None;
    assert_eq!(
        why(&c),
        "closed under tracer, by a process it could not name; the peer never sent FIN"
    );
    c.seen_from = SeenFrom::Dump;
    c.sock = crate::decode::SockAddr(0);
    assert_eq!(
        why(&c),
        "closed before tracer started (no process holds a closed socket: who closed it is unknown); the peer never sent FIN"
    );
    // It moves: the peer's FIN, seen by sock_diag.
    let mut moved = evs[4].0;
    (moved.sock, moved.old, moved.new) = (crate::decode::SockAddr(0), FinWait2, TimeWait);
    let u = Unstuck {
        state: FinWait2,
        age_ns: 3_000_000_000,
        age_at_least: true,
        reports: 1,
    };
    let mut t = Text::new(Vec::new(), WallClock::fixed(OFFSET), false, true);
    t.unstuck(&moved, &u, None).unwrap();
    let text = String::from_utf8(t.out).unwrap();
    assert!(
        text.starts_with("MOVED (from dump) 127.0.0.1:40000 -> 127.0.0.1:8080: FIN_WAIT2 -> TIME_WAIT after at least 3.00s"),
        "{text}"
    );
    let mut j = Json::new(Vec::new(), WallClock::fixed(OFFSET));
    j.unstuck(&moved, &u, None).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&j.into_inner().unwrap()).unwrap();
    assert_eq!(
        (&v["sock"], &v["state"], &v["new"], &v["age_at_least"]),
        (
            &serde_json::Value::Null,
            &serde_json::json!("FIN_WAIT2"),
            &serde_json::json!("TIME_WAIT"),
            &serde_json::json!(true)
        )
    );
}
