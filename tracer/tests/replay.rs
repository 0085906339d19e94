//! Replays of recordings made by `tracer --record` on a real kernel (tests/fixtures): golden
//! files for the ladder, the timelines and the summary, and what a corrupt or truncated
//! recording does. No root, no BPF: these run in a plain `cargo test`.
//!
//! The fixtures were made with `tracer demo SCENARIO --record tests/fixtures/SCENARIO.jsonl`
//! and a run of 20 mixed connections (`mixed.jsonl`: see README "Tests"). After a deliberate
//! change of output, regenerate the golden files with `UPDATE_GOLDEN=1 cargo test --test
//! replay` and review the diff.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn tracer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(args)
        // Wall-clock times in the output do not depend on where the test runs.
        .env("TZ", "UTC")
        .env_remove("NO_COLOR")
        .output()
        .expect("run tracer")
}

fn replay(file: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["replay", file.to_str().unwrap(), "--color", "never"];
    args.extend_from_slice(extra);
    tracer(&args)
}

/// Compares with tests/golden/NAME, or writes it with UPDATE_GOLDEN=1.
fn golden(name: &str, got: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    if want != got {
        panic!(
            "{} differs from the output (UPDATE_GOLDEN=1 to accept it):\n--- want\n{want}\n--- got\n{got}",
            path.display()
        );
    }
}

fn ok_stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn ladders_of_the_demo_scenarios_match_their_golden_files() {
    for s in ["normal", "server-first", "reset", "refused"] {
        let out = replay(&fixture(&format!("{s}.jsonl")), &["--view", "ladder"]);
        golden(&format!("{s}.ladder.txt"), &ok_stdout(&out));
    }
}

#[test]
fn timelines_and_summary_match_their_golden_files() {
    let out = replay(&fixture("normal.jsonl"), &[]);
    golden("normal.events.txt", &ok_stdout(&out));
    let out = replay(&fixture("mixed.jsonl"), &["--summary", "-q"]);
    golden("mixed.summary.txt", &ok_stdout(&out));
}

/// `--diagram FILE`: the state diagram of the mixed run, as an SVG (every arrow's count,
/// the median time in each state, the kernel's other arrows); the file is created private.
#[test]
fn the_state_diagram_svg_matches_its_golden_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("replay-diagram");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("mixed.svg");
    let out = replay(
        &fixture("mixed.jsonl"),
        &["-q", "--diagram", svg.to_str().unwrap()],
    );
    assert!(ok_stdout(&out).is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("wrote the state diagram to {}", svg.display())),
        "{err}"
    );
    let mode = std::fs::metadata(&svg).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let got = std::fs::read_to_string(&svg).unwrap();
    golden("mixed.diagram.svg", &got);
    // An existing file is refused without --force, before anything is replayed.
    let again = replay(
        &fixture("mixed.jsonl"),
        &["-q", "--diagram", svg.to_str().unwrap()],
    );
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("--force"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

fn json_records(out: &Output) -> Vec<Value> {
    ok_stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn the_mixed_run_replays_every_connection_with_its_close_class() {
    let records = json_records(&replay(
        &fixture("mixed.jsonl"),
        &["-o", "json", "--summary"],
    ));
    let conns: Vec<&Value> = records
        .iter()
        .filter(|v| v["type"] == "connection")
        .collect();
    // 8 client-first closes, 6 server-first, 3 resets, 3 refused, 1 listener.
    let count = |role: &str, close: &str| {
        conns
            .iter()
            .filter(|v| v["role"] == role && v["close"] == close)
            .count()
    };
    assert_eq!(conns.len(), 38, "{conns:#?}");
    assert_eq!(count("client", "active"), 8);
    assert_eq!(count("server", "passive"), 8);
    assert_eq!(count("server", "active"), 6);
    assert_eq!(count("client", "passive"), 6);
    assert_eq!(count("client", "reset_sent"), 3);
    assert_eq!(count("server", "reset_received"), 3);
    assert_eq!(count("client", "refused"), 3);
    assert_eq!(count("listener", "listener_closed"), 1);
    // Every active closer's TIME_WAIT came from the recording's sock_diag facts.
    let tw = conns
        .iter()
        .filter(|v| v["time_wait"]["confirmed"] == true)
        .count();
    assert_eq!(tw, 14);

    let summary: Vec<&Value> = records.iter().filter(|v| v["type"] == "summary").collect();
    assert_eq!(summary.len(), 1);
    let s = summary[0];
    assert_eq!(
        (s["v"].as_u64(), s["connections"].as_u64()),
        (Some(1), Some(38))
    );
    let handshake = s["durations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "handshake")
        .unwrap();
    assert_eq!(handshake["count"], 17);
    let p50 = handshake["p50_ns"].as_u64().unwrap();
    let p99 = handshake["p99_ns"].as_u64().unwrap();
    assert!(p50 > 0 && p50 <= p99 && p99 <= handshake["max_ns"].as_u64().unwrap());
}

#[test]
fn the_connections_view_shows_only_the_connection_records() {
    // JSON: exactly the `connection` records of the events view, in the same order.
    let all = json_records(&replay(&fixture("mixed.jsonl"), &["-o", "json"]));
    let want: Vec<&Value> = all.iter().filter(|v| v["type"] == "connection").collect();
    let got = json_records(&replay(
        &fixture("mixed.jsonl"),
        &["-o", "json", "--view", "connections"],
    ));
    assert_eq!(want.len(), 38);
    assert_eq!(got.iter().collect::<Vec<_>>(), want);
    // Text: the timeline blocks of the events view, without the header and event rows.
    let events = ok_stdout(&replay(&fixture("normal.jsonl"), &[]));
    let blocks: String = events
        .split_inclusive('\n')
        .skip_while(|l| !l.starts_with("── "))
        .filter(|l| l.starts_with("── ") || l.starts_with("   "))
        .collect();
    let text = ok_stdout(&replay(
        &fixture("normal.jsonl"),
        &["--view", "connections"],
    ));
    assert!(text.starts_with("── "), "{text}");
    assert_eq!(text, blocks);
    // Without timelines the text view would show nothing: refused, naming the conflict.
    let out = replay(
        &fixture("normal.jsonl"),
        &["--view", "connections", "--no-timeline"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-timeline"));
}

/// Client connections to mixed.jsonl's listener.
const RPORT_CLIENTS: usize = 20;

#[test]
fn replay_applies_the_filters_as_the_kernel_would() {
    let all = json_records(&replay(&fixture("mixed.jsonl"), &["-o", "json"]));
    let port = all
        .iter()
        .find(|v| v["type"] == "connection" && v["role"] == "listener")
        .unwrap()["sport"]
        .as_u64()
        .unwrap()
        .to_string();
    // Through CLOSE_WAIT: the 14 passive closers, nothing else.
    let cw = json_records(&replay(
        &fixture("mixed.jsonl"),
        &["-o", "json", "--state", "CLOSE_WAIT"],
    ));
    let conns = cw.iter().filter(|v| v["type"] == "connection").count();
    assert_eq!(conns, 14);
    // A port nobody used: nothing at all.
    let none = replay(&fixture("mixed.jsonl"), &["-o", "json", "-p", "1"]);
    assert_eq!(ok_stdout(&none), "");
    // The listener's port as the remote port: exactly the connections whose remote port it
    // is in the unfiltered replay (the clients), none missing, nothing else.
    let key = |v: &Value| {
        (
            v["sock"].to_string(),
            v["role"].to_string(),
            v["sport"].to_string(),
        )
    };
    let mut want: Vec<_> = all
        .iter()
        .filter(|v| v["type"] == "connection" && v["dport"] == port.parse::<u64>().unwrap())
        .map(key)
        .collect();
    want.sort();
    assert_eq!(want.len(), RPORT_CLIENTS, "{want:?}");
    assert!(
        want.iter().all(|(_, role, _)| role == "\"client\""),
        "{want:?}"
    );
    let clients = json_records(&replay(
        &fixture("mixed.jsonl"),
        &["-o", "json", "--rport", &port],
    ));
    let mut got: Vec<_> = clients
        .iter()
        .filter(|v| v["type"] == "connection")
        .map(key)
        .collect();
    got.sort();
    assert_eq!(got, want);
    // Options that cannot apply to a recording are refused (exit 2), naming why.
    let out = replay(&fixture("mixed.jsonl"), &["--netns", "4026531840"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no network namespace"));
}

#[test]
fn a_corrupt_line_is_named_and_everything_before_it_is_shown() {
    let text = std::fs::read_to_string(fixture("normal.jsonl")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[9] = "{\"type\":\"event\",\"kind\":0,";
    let dir = std::env::temp_dir().join(format!("tracer-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("corrupt.jsonl");
    std::fs::write(&bad, lines.join("\n") + "\n").unwrap();
    let out = replay(&bad, &["-o", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 10: not a valid recording line"), "{err}");
    assert!(
        err.contains("everything before that line was shown"),
        "{err}"
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    let transitions = shown
        .lines()
        .filter(|l| l.contains("\"transition\""))
        .count();
    assert!(
        transitions >= 5,
        "the events before line 10 are shown: {shown}"
    );

    // Cut in the middle of a line: the last line is named as cut short.
    let cut = dir.join("cut.jsonl");
    std::fs::write(&cut, &text[..text.len() / 2]).unwrap();
    let out = replay(&cut, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cut short"), "{err}");

    // Cut at a line boundary: whole lines, no end line: a warning, exit 0.
    let n = text.match_indices('\n').nth(15).unwrap().0 + 1;
    let short = dir.join("short.jsonl");
    std::fs::write(&short, &text[..n]).unwrap();
    let out = replay(&short, &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no end line"));

    // Not a recording at all.
    let other = dir.join("other.jsonl");
    std::fs::write(&other, "{\"v\":1,\"type\":\"transition\"}\n").unwrap();
    let out = replay(&other, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The owners' cgroup identity comes from the recording's `cgroup` lines, never from the
/// replaying machine: from the line on, not before it; `--container` filters on it. A
/// recording without such lines (all the fixtures: version 1) shows null fields.
#[test]
fn a_replay_shows_the_recorded_cgroup_identity_from_its_line_on() {
    let ctr = "3f2a9c1b7d0e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c";
    let old = json_records(&replay(&fixture("normal.jsonl"), &["-o", "json"]));
    let owned: Vec<&Value> = old.iter().filter(|v| v["owner"].is_object()).collect();
    assert!(!owned.is_empty());
    for v in &owned {
        let o = &v["owner"];
        assert_eq!(o["cgroup_id"], 1, "{v}");
        for k in ["cgroup", "unit", "container_id", "pod_uid"] {
            assert!(o[k].is_null(), "{k} in {v}");
        }
    }
    // The same events, with the root cgroup (id 1) recorded as a container's after the
    // first three events.
    let text = std::fs::read_to_string(fixture("normal.jsonl")).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[0] = lines[0].replace("\"v\":1", "\"v\":2");
    let third = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("\"type\":\"event\""))
        .nth(2)
        .unwrap()
        .0;
    lines.insert(
        third + 1,
        format!(r#"{{"type":"cgroup","id":1,"path":"/system.slice/docker-{ctr}.scope"}}"#),
    );
    let dir = std::env::temp_dir().join(format!("tracer-replay-cg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rec = dir.join("cgroup.jsonl");
    std::fs::write(&rec, lines.join("\n") + "\n").unwrap();

    let got = json_records(&replay(&rec, &["-o", "json"]));
    assert_eq!(got.len(), old.len());
    let transitions: Vec<&Value> = got.iter().filter(|v| v["type"] == "transition").collect();
    let before = transitions
        .iter()
        .take(3)
        .filter(|v| v["owner"].is_object());
    for v in before {
        assert!(v["owner"]["container_id"].is_null(), "before the line: {v}");
    }
    let conns: Vec<&Value> = got.iter().filter(|v| v["type"] == "connection").collect();
    assert!(!conns.is_empty());
    for c in &conns {
        let o = &c["owner"];
        assert_eq!(
            o["cgroup"],
            format!("/system.slice/docker-{ctr}.scope"),
            "{c}"
        );
        assert_eq!(o["unit"], format!("docker-{ctr}.scope"));
        assert_eq!(o["container_id"], ctr);
        assert!(o["pod_uid"].is_null());
    }
    // --container: by prefix; another container's prefix keeps nothing.
    let kept = json_records(&replay(
        &rec,
        &[
            "-o",
            "json",
            "--view",
            "connections",
            "--container",
            "3f2a9c",
        ],
    ));
    assert_eq!(kept.len(), conns.len());
    let none = replay(&rec, &["-o", "json", "--container", "0000"]);
    assert_eq!(ok_stdout(&none), "");
    // Text: the short form after the owner.
    let text = ok_stdout(&replay(&rec, &["--view", "connections"]));
    assert!(text.contains("(tracer-demo) [ctr 3f2a9c1b7d0e]"), "{text}");
    let plain = ok_stdout(&replay(
        &fixture("normal.jsonl"),
        &["--view", "connections"],
    ));
    assert!(!plain.contains('['), "{plain}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `counters.jsonl`: three connections on loopback with the kernel's counters read at each
/// close (`tracer -p 47933 -q --record`): 100,000 bytes up and 50,000 down closed by the
/// client, 1,000 up and 2,000 down closed by the server, 10 up then a RST from the server
/// (SO_LINGER 0). Its `--columns` table is golden; its records carry exactly those bytes.
#[test]
fn a_recording_with_counters_gives_the_columns_and_the_bytes_each_way() {
    let out = replay(
        &fixture("counters.jsonl"),
        &["--view", "connections", "--columns"],
    );
    golden("counters.columns.txt", &ok_stdout(&out));
    let records = json_records(&replay(
        &fixture("counters.jsonl"),
        &["-o", "json", "--view", "connections"],
    ));
    let mut got: Vec<(String, String, u64, u64)> = records
        .iter()
        .filter(|v| v["type"] == "connection" && v["role"] != "listener")
        .map(|v| {
            let tcp = &v["tcp"];
            // Every counter this kernel has, and the handshake of both roles.
            for k in [
                "segs_out",
                "segs_in",
                "retrans_total",
                "srtt_us",
                "rttvar_us",
                "min_rtt_us",
                "cwnd",
                "handshake_rtt_us",
                "delivery_rate_bytes_per_s",
            ] {
                assert!(tcp[k].is_u64(), "{k}: {v:#}");
            }
            (
                v["role"].as_str().unwrap().to_string(),
                v["close"].as_str().unwrap().to_string(),
                tcp["bytes_sent"].as_u64().unwrap(),
                tcp["bytes_received"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    let s = |x: &str| x.to_string();
    assert_eq!(
        got,
        [
            (s("client"), s("active"), 100_000, 50_000),
            (s("client"), s("passive"), 1_000, 2_000),
            (s("client"), s("reset_received"), 10, 0),
            (s("server"), s("active"), 2_000, 1_000),
            (s("server"), s("passive"), 50_000, 100_000),
            (s("server"), s("reset_sent"), 0, 10),
        ]
    );
}
