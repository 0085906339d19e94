use crate::harness::*;

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn time_wait_is_followed_to_its_end() {
    // TIME_WAIT lasts 60 s on Linux (fixed): this test waits for it.
    let (listener, addr) = bound(false);
    let t = Tracer::start(&["-o", "json", "--no-events", "-p", &addr.port().to_string()]);
    let cport = one_connection(listener, addr, FirstCloser::Client);
    let is = |v: &Value, old: &str, new: &str| {
        v["source"] == "sock_diag" && v["old"] == old && v["new"] == new && v["sport"] == cport
    };
    t.wait_json(1, |v| is(v, "FIN_WAIT2", "TIME_WAIT"));
    let start = Instant::now();
    while !t.json().iter().any(|v| is(v, "TIME_WAIT", "CLOSE")) {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "TIME_WAIT did not end within 90 s"
        );
        thread::sleep(Duration::from_millis(250));
    }
    let (status, out, _) = t.stop();
    assert!(status.success());
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tw = records
        .iter()
        .find(|v| is(v, "FIN_WAIT2", "TIME_WAIT"))
        .unwrap();
    let end = records
        .iter()
        .find(|v| is(v, "TIME_WAIT", "CLOSE"))
        .unwrap();
    let expires = tw["expires_ns"].as_u64().unwrap();
    let ended = end["ts_ns"].as_u64().unwrap();
    // Seen gone after the timer, within the timer wheel's slack: a 60 s kernel timer lands
    // in a wheel level with ~4 s granularity, plus up to 1 s between dumps.
    assert!(
        ended + 100_000_000 >= expires && ended <= expires + 6_000_000_000,
        "expires {expires}, ended {ended}"
    );
    assert_eq!(end["sock"], tw["sock"]);
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn without_time_wait_lookups_an_active_closer_is_reported_at_once() {
    // With lookups, an active closer's record waits (up to 1.5 s) for sock_diag to confirm
    // its TIME_WAIT. Without them it must not wait for a lookup nobody makes.
    let (listener, addr) = bound(false);
    let t = Tracer::start(&[
        "-o",
        "json",
        "--no-timewait",
        "-p",
        &addr.port().to_string(),
    ]);
    let cport = one_connection(listener, addr, FirstCloser::Client);
    let closed = Instant::now();
    t.wait_json(1, |v| v["type"] == "connection" && v["sport"] == cport);
    let waited = closed.elapsed();
    let (status, _, err) = t.stop();
    assert!(status.success(), "{err:?}");
    assert!(
        waited < Duration::from_millis(700),
        "the client's record came {waited:?} after its close"
    );
}
