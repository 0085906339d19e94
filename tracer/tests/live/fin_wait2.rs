//! The teardown the tracepoint cannot see: an active closer handed to a timewait socket in
//! FIN_WAIT2 before the peer's FIN, followed with sock_diag to its end.
use crate::harness::*;

fn parse(out: &[String]) -> Vec<Value> {
    out.iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn client_record(records: &[Value], cport: u16) -> &Value {
    of_type(records, "connection")
        .into_iter()
        .find(|c| c["role"] == "client" && c["sport"] == cport)
        .unwrap_or_else(|| panic!("client {cport}: {records:#?}"))
}

/// The server closes 300 ms after the client: the client's FIN_WAIT2 lasts those 300 ms
/// (not the microseconds until the handoff), ends at the server's LAST_ACK, its TIME_WAIT
/// is confirmed, and the ladder draws the server's FIN where the server sent it.
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn an_orphaned_fin_wait2_lasts_until_the_peers_fin() {
    let dir = temp_dir("fin-wait2");
    let rec = dir.join("run.jsonl");
    let (listener, addr) = bound(false);
    let t = Tracer::start(&[
        "-o",
        "json",
        "-p",
        &addr.port().to_string(),
        "--record",
        rec.to_str().unwrap(),
    ]);
    t.wait_stderr("attached", Duration::from_secs(5));
    let cport = client_closes_first(listener, addr, Duration::from_millis(300));
    t.wait_json(3, |v| v["type"] == "connection");
    let (status, out, err) = t.stop();
    assert!(status.success(), "{err:?}");
    let records = parse(&out);
    let c = client_record(&records, cport);
    assert_eq!(states(c), timeline(&CLIENT_OPEN, &ACTIVE_CLOSE), "{c:#}");
    assert_eq!(c["orphan"]["end"], "fin", "{c:#}");
    assert_eq!(c["orphan"]["source"], "peer", "{c:#}");
    assert_eq!(c["time_wait"]["confirmed"], true, "{c:#}");
    assert_eq!(c["close"], "active");
    let fin_wait2 = c["durations_ns"][4].as_u64().unwrap();
    assert!(
        (280_000_000..1_000_000_000).contains(&fin_wait2),
        "FIN_WAIT2 lasted {fin_wait2} ns: {c:#}"
    );
    // The server's CLOSE_WAIT -> LAST_ACK is when the client's FIN_WAIT2 ended.
    let last_ack = of_type(&records, "transition")
        .into_iter()
        .find(|v| v["dport"] == cport && v["new"] == "LAST_ACK")
        .expect("the server's LAST_ACK");
    assert_eq!(c["end_ns"], last_ack["ts_ns"], "{c:#}\n{last_ack:#}");
    assert_eq!(c["orphan"]["end_ns"], last_ack["ts_ns"]);
    let handoff = c["orphan"]["handoff_ns"].as_u64().unwrap();
    assert!(handoff < last_ack["ts_ns"].as_u64().unwrap());
    let tw = of_type(&records, "transition")
        .into_iter()
        .find(|v| v["source"] == "sock_diag" && v["sport"] == cport)
        .expect("FIN_WAIT2 -> TIME_WAIT from sock_diag");
    assert_eq!(
        (tw["old"].as_str(), tw["new"].as_str(), &tw["ts_ns"]),
        (Some("FIN_WAIT2"), Some("TIME_WAIT"), &last_ack["ts_ns"])
    );
    assert_eq!(tw["in_old_ns"].as_u64(), Some(fin_wait2));

    // Replayed as a ladder: the FIN is drawn on the server's LAST_ACK row, the handoff is a
    // note on the client's side.
    let ladder = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["replay", rec.to_str().unwrap(), "--view", "ladder"])
        .output_locked()
        .unwrap();
    let text = String::from_utf8_lossy(&ladder.stdout);
    assert!(ladder.status.success(), "{text}");
    let fin_rows: Vec<&str> = text.lines().filter(|l| l.contains(" FIN ")).collect();
    assert_eq!(
        fin_rows.len(),
        2,
        "the client's FIN and the server's:\n{text}"
    );
    assert!(
        fin_rows[1].contains("LAST_ACK") && fin_rows[1].contains('◀'),
        "the server's FIN at its LAST_ACK:\n{text}"
    );
    assert!(
        text.contains("handed to a timewait socket (FIN_WAIT2)"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The server never closes: the client's orphaned FIN_WAIT2 is reported stuck with the
/// process that closed it, and a new `tracer stuck` finds it in the start-up dump.
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn an_orphaned_fin_wait2_is_stuck_when_the_peer_never_closes() {
    let (listener, addr) = bound(false);
    let port = addr.port().to_string();
    let t = Tracer::start(&["stuck", "2s", "-o", "json", "-p", &port]);
    t.wait_stderr("attached", Duration::from_secs(5));
    listener.listen(4).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let client = TcpStream::connect(addr).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let cport = client.local_addr().unwrap().port();
    let closed = Instant::now();
    drop(client);
    let mut b = [0u8; 1];
    assert_eq!(server.read(&mut b).unwrap(), 0, "the client's FIN");
    let p = u64::from(cport);
    let is_orphan =
        |v: &Value| v["type"] == "stuck" && v["sport"] == p && v["state"] == "FIN_WAIT2";
    t.wait_json(1, is_orphan);
    let seen = closed.elapsed();
    let (status, out, err) = t.stop();
    assert!(status.success(), "{err:?}");
    assert!(
        seen < Duration::from_secs(4),
        "reported {seen:?} after the close"
    );
    let records = parse(&out);
    let s = records.iter().find(|v| is_orphan(v)).unwrap();
    assert_eq!(s["orphaned"], true, "{s:#}");
    assert_eq!(
        s["owner"]["pid"].as_u64(),
        Some(u64::from(std::process::id())),
        "the process that closed it: {s:#}"
    );

    // Older than the tracer now: found in the start-up dump.
    let t = Tracer::start(&["stuck", "1s", "-o", "json", "-p", &port]);
    t.wait_json(1, is_orphan);
    let (status, out, err) = t.stop();
    assert!(status.success(), "{err:?}");
    let records = parse(&out);
    let s = records.iter().find(|v| is_orphan(v)).unwrap();
    assert_eq!(
        (&s["orphaned"], &s["seen_from"]),
        (&Value::Bool(true), &Value::from("dump")),
        "{s:#}"
    );
    drop(server);
    drop(listener);
}

/// A small `tcp_fin_timeout` in a namespace the test makes: the orphan's FIN_WAIT2 timer
/// ends it, classified `orphan_timeout`, at the right time.
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn the_fin_wait2_timer_gives_orphan_timeout() {
    let ns = Netns::new("fin-timeout");
    let ok = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns_name(&ns),
            "sysctl",
            "-qw",
            "net.ipv4.tcp_fin_timeout=2",
        ])
        .status_locked()
        .unwrap();
    assert!(ok.success());
    let (listener, addr) = ns.run(|| bound(false));
    let t = Tracer::start(&["-o", "json", "-p", &addr.port().to_string()]);
    t.wait_stderr("attached", Duration::from_secs(5));
    let (server, listener, cport, closed_at) = ns.run(move || {
        listener.listen(4).unwrap();
        let listener: std::net::TcpListener = listener.into();
        let client = TcpStream::connect(addr).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let cport = client.local_addr().unwrap().port();
        drop(client);
        let mut b = [0u8; 1];
        assert_eq!(server.read(&mut b).unwrap(), 0);
        (server, listener, cport, Instant::now())
    });
    let p = u64::from(cport);
    let start = Instant::now();
    while !t
        .json()
        .iter()
        .any(|v| v["type"] == "connection" && v["sport"] == p)
    {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no client record within 15 s"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let waited = closed_at.elapsed();
    let (status, out, err) = t.stop();
    drop((server, listener));
    assert!(status.success(), "{err:?}");
    let records = parse(&out);
    let c = client_record(&records, cport);
    assert_eq!(c["close"], "orphan_timeout", "{c:#}");
    assert_eq!(c["orphan"]["end"], "timeout", "{c:#}");
    let fin_wait2 = c["durations_ns"][4].as_u64().unwrap();
    assert!(
        (1_900_000_000..5_000_000_000).contains(&fin_wait2),
        "FIN_WAIT2 lasted {fin_wait2} ns (tcp_fin_timeout 2 s): {c:#}"
    );
    assert!(waited < Duration::from_secs(8), "{waited:?}");
    let end = of_type(&records, "transition")
        .into_iter()
        .find(|v| v["source"] == "sock_diag" && v["sport"] == p)
        .expect("FIN_WAIT2 -> CLOSE from sock_diag");
    assert_eq!(
        (end["old"].as_str(), end["new"].as_str()),
        (Some("FIN_WAIT2"), Some("CLOSE"))
    );
}

fn ns_name(ns: &Netns) -> String {
    ns.path().trim_start_matches("/run/netns/").to_string()
}
