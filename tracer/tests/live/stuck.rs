use crate::harness::*;

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn a_close_wait_leak_is_reported_by_pid_within_age_plus_one_second() {
    let (listener, addr) = bound(false);
    let t = Tracer::start(&["stuck", "2s", "-o", "json", "-p", &addr.port().to_string()]);
    listener.listen(1).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let client = TcpStream::connect(addr).unwrap();
    let (server, _) = listener.accept().unwrap();
    drop(client); // the peer closes; our "application" never does: CLOSE_WAIT
    let closed = Instant::now();
    // Other sockets on the host may share the port number (an orphan left by another test):
    // this one is the server side of our connection.
    let port = u64::from(addr.port());
    let ours = move |v: &Value| v["sport"] == port && v["role"] == "server";
    t.wait_json(1, |v| v["type"] == "stuck" && ours(v));
    let waited = closed.elapsed();
    assert!(
        waited <= Duration::from_secs(3),
        "reported after {waited:?}, AGE is 2s"
    );
    drop(server); // it finally moves: CLOSE_WAIT -> LAST_ACK
    t.wait_json(1, |v| v["type"] == "unstuck" && v["sport"] == port);
    let (status, out, err) = t.stop();
    assert!(status.success(), "{err:?}");
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        of_type(&records, "transition").is_empty(),
        "stuck mode is quiet: {records:#?}"
    );
    let stuck: Vec<&Value> = of_type(&records, "stuck")
        .into_iter()
        .filter(|v| ours(v))
        .collect();
    assert_eq!(stuck.len(), 1, "{stuck:#?}");
    let s = stuck[0];
    assert_eq!(
        (
            s["state"].as_str(),
            s["report"].as_u64(),
            s["age_at_least"].as_bool()
        ),
        (Some("CLOSE_WAIT"), Some(1), Some(false))
    );
    assert!(s["age_ns"].as_u64().unwrap() >= 2_000_000_000);
    assert_eq!(s["owner"]["pid"].as_u64(), Some(std::process::id().into()));
    assert_eq!(
        (s["sport"].as_u64(), s["role"].as_str()),
        (Some(addr.port().into()), Some("server"))
    );
    assert_eq!(
        s["states"],
        serde_json::json!(["LISTEN", "SYN_RECV", "ESTABLISHED", "CLOSE_WAIT"])
    );
    let u = *of_type(&records, "unstuck")
        .iter()
        .find(|u| u["sock"] == s["sock"])
        .unwrap();
    assert_eq!(
        (u["state"].as_str(), u["new"].as_str()),
        (Some("CLOSE_WAIT"), Some("LAST_ACK"))
    );
    assert_eq!(u["sock"], s["sock"]);
    // The exit summary, by owner and state (nothing of ours is stuck any more).
    let sum = of_type(&records, "stuck_summary");
    assert_eq!(
        (sum.len(), sum[0]["threshold_ns"].as_u64()),
        (1, Some(2_000_000_000))
    );
    let me = std::process::id();
    assert!(
        sum[0]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["owner"]["pid"] != me),
        "{sum:#?}"
    );
    assert!(
        err.iter()
            .any(|l| l.contains("reporting connections stuck for 2.00s")),
        "{err:?}"
    );
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn a_socket_stuck_before_the_tracer_started_is_seeded_and_reported() {
    let (listener, addr) = bound(false);
    listener.listen(1).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let client = TcpStream::connect(addr).unwrap();
    let (server, _) = listener.accept().unwrap();
    drop(client);
    thread::sleep(Duration::from_millis(100)); // server: CLOSE_WAIT, before the tracer
    let t = Tracer::start(&[
        "-o",
        "json",
        "--stuck",
        "1s",
        "--quiet",
        "-p",
        &addr.port().to_string(),
    ]);
    t.wait_json(1, |v| {
        v["type"] == "stuck" && v["state"] == "CLOSE_WAIT" && v["sport"] == addr.port()
    });
    // SIGUSR1: a summary now.
    // SAFETY: kill with our child's pid and a valid signal.
    unsafe { libc::kill(t.child.id() as i32, libc::SIGUSR1) };
    t.wait_json(1, |v| v["type"] == "stuck_summary");
    let (status, out, _) = t.stop();
    assert!(status.success());
    drop(server);
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The server's CLOSE_WAIT (the client's orphaned FIN_WAIT2 is stuck too, with no owner:
    // it was closed, no process holds it).
    let s = *of_type(&records, "stuck")
        .iter()
        .find(|s| s["state"] == "CLOSE_WAIT" && s["sport"] == addr.port())
        .unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(
        (s["seen_from"].as_str(), s["age_at_least"].as_bool()),
        (Some("dump"), Some(true))
    );
    assert!(
        s["sock"].is_null(),
        "no event yet: the kernel address is not known"
    );
    assert_eq!(s["sport"].as_u64(), Some(addr.port().into()));
    assert_eq!(s["owner"]["pid"].as_u64(), Some(std::process::id().into()));
    assert_eq!(s["owner"]["source"], "procfs");
    let sum = of_type(&records, "stuck_summary")[0];
    let g = sum["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["state"] == "CLOSE_WAIT" && g["owner"]["pid"] == std::process::id())
        .unwrap_or_else(|| panic!("{sum:#?}"));
    assert_eq!(
        (
            g["state"].as_str(),
            g["count"].as_u64(),
            g["oldest_at_least"].as_bool()
        ),
        (Some("CLOSE_WAIT"), Some(1), Some(true))
    );
    assert_eq!(g["owner"]["pid"].as_u64(), Some(std::process::id().into()));
}

/// A FIN_WAIT1 stuck behind a peer that stopped reading: the stuck report says why (what
/// `ss -ti` shows: bytes unsent, the peer's zero window, probes), with the same send queue
/// as `ss` for that socket.
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn a_stuck_fin_wait1_says_why() {
    let (listener, addr) = bound(false);
    listener.set_recv_buffer_size(4096).unwrap();
    let t = Tracer::start(&[
        "-o",
        "json",
        "--stuck",
        "1s",
        "-p",
        &addr.port().to_string(),
    ]);
    t.wait_stderr("attached", Duration::from_secs(5));
    listener.listen(4).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let client = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    client.set_send_buffer_size(65536).unwrap();
    client.connect(&addr.into()).unwrap();
    let (server, _) = listener.accept().unwrap(); // never reads
    let cport = client.local_addr().unwrap().as_socket().unwrap().port();
    client.set_nonblocking(true).unwrap();
    let chunk = [0u8; 16384];
    let mut written = 0usize;
    let start = Instant::now();
    loop {
        match std::io::Write::write(&mut &client, &chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Let the peer's window close, then try once more.
                thread::sleep(Duration::from_millis(50));
                if std::io::Write::write(&mut &client, &chunk).is_err() {
                    break;
                }
            }
            Err(e) => panic!("write: {e}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "wrote {written} bytes"
        );
    }
    drop(client); // close(): FIN_WAIT1, the FIN queued behind the unsent bytes
    let p = u64::from(cport);
    let is_report =
        |v: &Value| v["type"] == "stuck" && v["sport"] == p && v["state"] == "FIN_WAIT1";
    t.wait_json(1, is_report);
    // ss for the same socket, right after.
    let ss = Command::new("ss")
        .args([
            "-tnH",
            "state",
            "fin-wait-1",
            "sport",
            "=",
            &format!(":{cport}"),
        ])
        .output_locked()
        .unwrap();
    let ss = String::from_utf8_lossy(&ss.stdout).to_string();
    let (status, out, err) = t.stop();
    drop(server);
    drop(listener);
    assert!(status.success(), "{err:?}");
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let r = records.iter().find(|v| is_report(v)).unwrap();
    let why = &r["why"];
    assert!(why.is_object(), "{r:#}");
    let send_q = why["send_queue"].as_u64().unwrap();
    assert!(send_q > 0, "{why:#}");
    assert_eq!(why["snd_wnd"], 0, "the peer's window is closed: {why:#}");
    let text = why["text"].as_str().unwrap();
    assert!(text.contains("peer window 0"), "{text}");
    // `ss -tn` columns: Recv-Q Send-Q Local Peer.
    let ss_send_q: u64 = ss
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("ss: {ss:?}"));
    assert_eq!(
        send_q, ss_send_q,
        "tracer's send queue and ss's: {why:#}\n{ss}"
    );
}
