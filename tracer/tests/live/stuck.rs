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

/// Bytes received and not yet read (`SIOCINQ`).
fn unread(s: &impl std::os::fd::AsRawFd) -> u64 {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCINQ (= FIONREAD) on a TCP socket writes one int.
    let rc = unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "SIOCINQ: {}", std::io::Error::last_os_error());
    n as u64
}

/// `ss -tinH state STATE sport = :PORT` for one socket: its queues (first line, `Recv-Q
/// Send-Q Local Peer`: a state filter drops the State column) and its `tcp_info` fields
/// (`key:value`, and `delivery_rate Nbps`), as ss prints them.
fn ss_info(state: &str, sport: u16) -> (u64, u64, std::collections::HashMap<String, String>) {
    let out = Command::new("ss")
        .args(["-tinH", "state", state, "sport", "=", &format!(":{sport}")])
        .output_locked()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines();
    let first: Vec<&str> = lines
        .next()
        .unwrap_or_else(|| panic!("ss found no {state} socket on port {sport}: {text:?}"))
        .split_whitespace()
        .collect();
    let q = |i: usize| first[i].parse::<u64>().unwrap_or_else(|_| panic!("{text}"));
    let (recv_q, send_q) = (q(0), q(1));
    assert_eq!(lines_of(&text), 2, "one socket: {text}");
    let words: Vec<&str> = lines.flat_map(str::split_whitespace).collect();
    let mut kv = std::collections::HashMap::new();
    for (i, w) in words.iter().enumerate() {
        if let Some((k, v)) = w.split_once(':') {
            kv.insert(k.to_string(), v.to_string());
        } else if *w == "delivery_rate" {
            let v = words[i + 1].trim_end_matches("bps");
            kv.insert("delivery_rate".to_string(), v.to_string());
        }
    }
    (recv_q, send_q, kv)
}

fn lines_of(text: &str) -> usize {
    text.lines().filter(|l| !l.trim().is_empty()).count()
}

/// A value ss printed in milliseconds (`rtt:0.052/0.026`, `minrtt:0.012`: `%g` of µs / 1000,
/// six significant digits, exact to the µs below 1000 s), in µs.
fn ss_ms_as_us(v: &str) -> u64 {
    (v.parse::<f64>().unwrap_or_else(|_| panic!("{v:?}")) * 1000.0).round() as u64
}

/// A FIN_WAIT1 stuck behind a peer that stopped reading: the stuck report says why (what
/// `ss -ti` shows: bytes unsent, the peer's zero window, probes), with the same send queue
/// and unsent bytes as `ss` for that socket, and exactly the bytes written that the peer
/// has not got.
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
                match std::io::Write::write(&mut &client, &chunk) {
                    Ok(n) => written += n,
                    Err(_) => break,
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
    // ss for the same socket, right after, and what the peer holds. Nothing moves between
    // these reads and tracer's: the peer's window is closed and it never reads, so the
    // client only sends zero-window probes, which carry no new data.
    let (_, ss_send_q, ss) = ss_info("fin-wait-1", cport);
    let peer_holds = unread(&server);
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
    let unsent = why["notsent_bytes"].as_u64().unwrap();
    assert_eq!(why["snd_wnd"], 0, "the peer's window is closed: {why:#}");
    assert_eq!(
        send_q, ss_send_q,
        "tracer's send queue and ss's: {why:#}\n{ss:?}"
    );
    // ss prints `notsent:N` when N > 0 (tcpi_notsent_bytes).
    let ss_unsent: u64 = ss.get("notsent").map_or(0, |v| v.parse().unwrap());
    assert_eq!(
        unsent, ss_unsent,
        "tracer's unsent bytes and ss's: {why:#}\n{ss:?}"
    );
    // Sequence space: every byte written, and the FIN (1), is either still in the send
    // queue (sent and not acked, or not sent: `unsent`) or acked, and the acked ones are
    // all in the peer's receive queue (it never reads).
    assert_eq!(
        send_q + peer_holds,
        written as u64 + 1,
        "send queue {send_q} + the peer's {peer_holds} unread vs {written} written + the FIN: {why:#}"
    );
    assert!(
        unsent > 0 && unsent <= send_q,
        "bytes behind a closed window are unsent: {why:#}"
    );
    let text = why["text"].as_str().unwrap();
    let want = format!("{} unsent", human(unsent));
    assert!(
        text.starts_with(&want) && text.contains("peer window 0"),
        "{text:?}, want it to start with {want:?}"
    );
}

/// tracer's `human_bytes`, for the text of a report.
fn human(n: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= size {
            return format!("{:.1}{unit}", n as f64 / size as f64);
        }
    }
    format!("{n}B")
}

/// A connection that moved data both ways and sits in CLOSE_WAIT (the peer closed, the
/// application did not): its stuck report's `why` is what `ss -tin` shows for the same
/// socket, field by field; then closed with a RST, its connection record's `tcp` is what
/// ss showed too.
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn a_stuck_sockets_why_and_counters_are_what_ss_shows() {
    const UP: usize = 100_000;
    const DOWN: usize = 50_000;
    let (listener, addr) = bound(false);
    let t = Tracer::start(&[
        "-o",
        "json",
        "--stuck",
        "1s",
        "--no-timewait",
        "-p",
        &addr.port().to_string(),
    ]);
    t.wait_stderr("attached", Duration::from_secs(5));
    listener.listen(4).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let mut client = TcpStream::connect(addr).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let sport = addr.port();
    client.write_all(&vec![1u8; UP]).unwrap();
    let mut got = vec![0u8; UP];
    server.read_exact(&mut got).unwrap();
    server.write_all(&vec![2u8; DOWN]).unwrap();
    let mut got = vec![0u8; DOWN];
    client.read_exact(&mut got).unwrap();
    drop(client); // the server: CLOSE_WAIT, for good (it never reads the end or closes)
    let closed = Instant::now();
    let p = u64::from(sport);
    let is_report =
        |v: &Value| v["type"] == "stuck" && v["sport"] == p && v["state"] == "CLOSE_WAIT";
    t.wait_json(1, is_report);
    let (ss_recv_q, ss_send_q, ss) = ss_info("close-wait", sport);
    let waited_ms = closed.elapsed().as_millis() as u64;
    // Then close it with a RST (SO_LINGER 0): tcp_disconnect moves it to CLOSE, where the
    // counters are read, before it sends the RST.
    let server = Socket::from(server);
    server.set_linger(Some(Duration::ZERO)).unwrap();
    drop(server);
    t.wait_json(1, |v| {
        v["type"] == "connection" && v["sport"] == p && v["role"] == "server"
    });
    let (status, out, err) = t.stop();
    drop(listener);
    assert!(status.success(), "{err:?}");
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let r = records.iter().find(|v| is_report(v)).unwrap();
    let why = &r["why"];
    let w = |k: &str| {
        why[k]
            .as_u64()
            .unwrap_or_else(|| panic!("why.{k}: {why:#}"))
    };
    let s = |k: &str| -> u64 {
        // ss leaves out a counter that is 0.
        ss.get(k)
            .map_or(0, |v| v.parse().unwrap_or_else(|_| panic!("{k}: {v}")))
    };
    let ctx = format!("tracer {why:#}\nss {ss:?}");
    // `retrans:CURRENT/TOTAL`, printed when either is non-zero.
    let ss_total_retrans: u64 = ss
        .get("retrans")
        .and_then(|v| v.split_once('/'))
        .map_or(0, |(_, t)| t.parse().unwrap());
    // The socket is idle from before tracer's read to after ss's: the peer closed after
    // everything was acked both ways, no timer is pending (no data in flight, no
    // keepalive), so no segment moves and none of these can change. Exact.
    let (rtt, rttvar) = ss["rtt"].split_once('/').unwrap();
    for (name, ours, theirs) in [
        ("rtt", w("rtt_us"), ss_ms_as_us(rtt)),
        ("rttvar", w("rttvar_us"), ss_ms_as_us(rttvar)),
        ("minrtt", w("min_rtt_us"), ss_ms_as_us(&ss["minrtt"])),
        ("cwnd", w("cwnd"), s("cwnd")),
        ("bytes_acked", w("bytes_acked"), s("bytes_acked")),
        ("bytes_received", w("bytes_received"), s("bytes_received")),
        ("segs_out", w("segs_out"), s("segs_out")),
        ("segs_in", w("segs_in"), s("segs_in")),
        ("unacked", w("unacked"), s("unacked")),
        ("notsent", w("notsent_bytes"), s("notsent")),
        ("snd_wnd", w("snd_wnd"), s("snd_wnd")),
        ("total_retrans", w("total_retrans"), ss_total_retrans),
        ("send-q", w("send_queue"), ss_send_q),
        ("recv-q", w("recv_queue"), ss_recv_q),
        // ss -n prints it as bits per second, `%.0f` of bytes × 8.
        (
            "delivery_rate",
            w("delivery_rate_bytes_per_s") * 8,
            s("delivery_rate"),
        ),
    ] {
        assert_eq!(ours, theirs, "{name}: {ctx}");
    }
    // What it moved, in sequence space: the data and the peer's FIN (also still unread:
    // recv-q 1).
    assert_eq!(
        (w("bytes_acked"), w("bytes_received"), w("recv_queue")),
        (DOWN as u64, UP as u64 + 1, 1),
        "{ctx}"
    );
    // Times since the last data are read at different moments: ss's is later by the time
    // between the two reads, which is less than the time since the peer closed (tracer's
    // read came after that, ss's before `waited_ms` was taken); ms truncation adds 1.
    for (name, ours, theirs) in [
        ("lastsnd", w("last_data_sent_ms"), s("lastsnd")),
        ("lastrcv", w("last_data_recv_ms"), s("lastrcv")),
    ] {
        assert!(
            theirs >= ours && theirs - ours <= waited_ms + 1,
            "{name}: ss {theirs} ms, tracer {ours} ms, {waited_ms} ms apart at most: {ctx}"
        );
    }
    // The record at the close: the counters as ss showed them (nothing moved: the RST is
    // sent after they are read). Data bytes: no SYN of its own in bytes_acked (accepted),
    // the peer's FIN taken out of bytes_received.
    let c = conns(&records)
        .into_iter()
        .find(|c| c["sport"] == p && c["role"] == "server")
        .unwrap();
    let tcp = &c["tcp"];
    let n = |k: &str| tcp[k].as_u64().unwrap_or_else(|| panic!("tcp.{k}: {c:#}"));
    assert_eq!(c["close"], "reset_sent", "{c:#}");
    for (name, ours, theirs) in [
        ("srtt_us", n("srtt_us"), ss_ms_as_us(rtt)),
        ("rttvar_us", n("rttvar_us"), ss_ms_as_us(rttvar)),
        ("min_rtt_us", n("min_rtt_us"), ss_ms_as_us(&ss["minrtt"])),
        ("cwnd", n("cwnd"), s("cwnd")),
        ("segs_out", n("segs_out"), s("segs_out")),
        ("segs_in", n("segs_in"), s("segs_in")),
        ("retrans_total", n("retrans_total"), ss_total_retrans),
        ("bytes_sent", n("bytes_sent"), s("bytes_acked")),
        (
            "bytes_received",
            n("bytes_received"),
            s("bytes_received") - 1,
        ),
        (
            "delivery_rate",
            n("delivery_rate_bytes_per_s") * 8,
            s("delivery_rate"),
        ),
    ] {
        assert_eq!(ours, theirs, "{name}: record {c:#}\nss {ss:?}");
    }
}
