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
            r#""sock":"0xffff888100001000","family":"ipv4","saddr":"127.0.0.1","sport":40000,"#,
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
        table::{
            StuckGroup, StuckReport, Unstuck,
            tests::{ctx, task},
        },
    };
    let (evs, c) = client();
    let mut s = Json::new(Vec::new(), WallClock::fixed(OFFSET));
    s.transition(&evs[0].0, None, None).unwrap();
    s.event(&ctx(Some(1), 5, ContextKind::Error, None, 111), None)
        .unwrap();
    s.connection(&c).unwrap();
    let d = DiagTransition {
        ts_ns: 9,
        sock: c.sock,
        family: Family::Ipv4,
        tuple: Tuple::new(c.tuple.local.addr, 1, c.tuple.remote.addr, 2),
        old: FinWait2,
        new: TimeWait,
        expires_ns: Some(60),
        in_old_ns: None,
        owner: None,
    };
    s.diag_transition(&d).unwrap();
    s.stuck(&StuckReport {
        conn: c.clone(),
        state: CloseWait,
        age_ns: 5,
        age_at_least: false,
        report: 1,
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
        None,
    )
    .unwrap();
    let g = StuckGroup {
        owner: None,
        state: CloseWait,
        count: 3,
        oldest_ns: 9,
        oldest_at_least: false,
    };
    s.stuck_summary(&[g], 30).unwrap();
    s.lost(LostCause::RingbufFull, 1, 1).unwrap();
    let _ = task(1, "x");
    let keys = |line: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["v"], 1, "{line}");
        v.as_object().unwrap().keys().cloned().collect()
    };
    let out = String::from_utf8(s.into_inner().unwrap()).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    let want: [&[&str]; 8] = [
        &[
            "v",
            "type",
            "time",
            "ts_ns",
            "sock",
            "family",
            "saddr",
            "sport",
            "daddr",
            "dport",
            "old",
            "new",
            "in_old_ns",
            "pid",
            "tid",
            "comm",
            "cpu",
            "owner",
            "source",
        ],
        &[
            "v", "type", "kind", "time", "ts_ns", "sock", "family", "saddr", "sport", "daddr",
            "dport", "state", "errno", "value", "pid", "tid", "comm", "cpu", "owner",
        ],
        &[
            "v",
            "type",
            "sock",
            "family",
            "saddr",
            "sport",
            "daddr",
            "dport",
            "role",
            "states",
            "durations_ns",
            "start_ns",
            "end_ns",
            "lifetime_ns",
            "start_time",
            "incomplete",
            "owner",
            "close",
            "events",
            "events_dropped",
            "retransmits",
            "syn_retransmits",
            "synack_retransmits",
            "resets_sent",
            "resets_received",
            "error",
            "time_wait",
            "seen_from",
        ],
        &[
            "v",
            "type",
            "time",
            "ts_ns",
            "sock",
            "family",
            "saddr",
            "sport",
            "daddr",
            "dport",
            "old",
            "new",
            "in_old_ns",
            "pid",
            "tid",
            "comm",
            "cpu",
            "owner",
            "source",
            "expires_ns",
        ],
        &[
            "v",
            "type",
            "sock",
            "state",
            "age_ns",
            "age_at_least",
            "report",
            "owner",
            "family",
            "saddr",
            "sport",
            "daddr",
            "dport",
            "role",
            "states",
            "seen_from",
        ],
        &[
            "v",
            "type",
            "time",
            "ts_ns",
            "sock",
            "state",
            "new",
            "age_ns",
            "age_at_least",
            "reports",
            "owner",
            "family",
            "saddr",
            "sport",
            "daddr",
            "dport",
        ],
        &["v", "type", "threshold_ns", "groups"],
        &["v", "type", "count", "cause", "total"],
    ];
    assert_eq!(lines.len(), want.len());
    for (line, want) in lines.iter().zip(want) {
        let mut got = keys(line);
        let mut want: Vec<String> = want.iter().map(|k| k.to_string()).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{line}");
    }
    let sum: serde_json::Value = serde_json::from_str(lines[6]).unwrap();
    let mut gk: Vec<&String> = sum["groups"][0].as_object().unwrap().keys().collect();
    gk.sort();
    assert_eq!(
        gk,
        ["count", "oldest_at_least", "oldest_ns", "owner", "state"]
    );
}
