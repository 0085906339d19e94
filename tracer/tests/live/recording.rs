use crate::harness::*;

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn a_recording_replays_to_the_same_connection_records() {
    let dir = temp_dir("record");
    let rec = dir.join("run.jsonl");
    let (listener, addr) = bound(false);
    let port = addr.port().to_string();
    let t = Tracer::start(&[
        "-o",
        "json",
        "-p",
        &port,
        "--summary",
        "--record",
        rec.to_str().unwrap(),
    ]);
    // Two connections on one listener, one closed by each side, then a refused one.
    listener.listen(16).unwrap();
    let listener: std::net::TcpListener = listener.into();
    for first in [FirstCloser::Client, FirstCloser::Server] {
        let mut client = TcpStream::connect(addr).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let mut b = [0u8; 1];
        let (a, mut b2) = match first {
            FirstCloser::Client => (client, server),
            FirstCloser::Server => (server, client),
        };
        drop(a);
        assert_eq!(b2.read(&mut b).unwrap(), 0);
        drop(b2);
        client = TcpStream::connect(addr).unwrap();
        server = listener.accept().unwrap().0;
        drop((client, server));
    }
    drop(listener);
    assert!(TcpStream::connect(addr).is_err());
    t.wait_json(6, |v| v["type"] == "connection");
    let (status, out, err) = t.stop();
    assert!(status.success(), "{err:?}");

    let live: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let replayed = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["replay", rec.to_str().unwrap(), "-o", "json", "--summary"])
        .output_locked()
        .unwrap();
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    let replayed: Vec<Value> = String::from_utf8(replayed.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The same connection records, field for field (times included: the recording keeps
    // the clock offset), in the same order; and the same summary.
    let pick = |v: &[Value], ty: &str| -> Vec<Value> {
        v.iter().filter(|r| r["type"] == ty).cloned().collect()
    };
    let (lc, rc) = (pick(&live, "connection"), pick(&replayed, "connection"));
    assert!(lc.len() >= 6, "{lc:#?}");
    assert_eq!(lc, rc);
    assert_eq!(pick(&live, "summary"), pick(&replayed, "summary"));
    // And the same transitions, TIME_WAIT ones from sock_diag included.
    assert_eq!(pick(&live, "transition"), pick(&replayed, "transition"));
    // The kernel sends each close of a connection that moved data (a synchronized state ->
    // CLOSE) with its counters in one ring record; the recording keeps them as two events,
    // the counters (kind 9) right after their transition (kind 1), as before.
    let events: Vec<Value> = std::fs::read_to_string(&rec)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "event")
        .collect();
    let synchronized = [1, 4, 5, 8, 9, 11];
    let closes: Vec<usize> = (0..events.len())
        .filter(|&i| {
            let e = &events[i];
            e["kind"] == 1
                && e["newstate"] == 7
                && synchronized.contains(&e["oldstate"].as_u64().unwrap())
        })
        .collect();
    // Two connections closed by each side: four ends each time.
    assert_eq!(closes.len(), 8, "{events:#?}");
    for &i in &closes {
        let (close, stats) = (&events[i], &events[i + 1]);
        assert_eq!(stats["kind"], 9, "{close} then {stats}");
        assert_eq!(
            (&stats["sock"], &stats["ts_ns"]),
            (&close["sock"], &close["ts_ns"])
        );
    }
    assert_eq!(events.iter().filter(|e| e["kind"] == 9).count(), 8);
    std::fs::remove_dir_all(&dir).unwrap();
}
