use crate::harness::*;

/// A listener port with nothing listening: connect() is refused with a RST.
fn refused(v6: bool) {
    let (s, addr) = bound(v6);
    drop(s); // free the port again: nobody listens there
    let t = Tracer::start(&["-o", "json", "-p", &addr.port().to_string()]);
    let err = TcpStream::connect(addr).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    t.wait_json(1, |v| v["type"] == "connection");
    let (status, out, stderr) = t.stop();
    assert!(status.success());
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let c = conns(&records);
    assert_eq!(c.len(), 1, "{c:#?}");
    let c = c[0];
    assert_eq!(states(c), ["CLOSE", "SYN_SENT", "CLOSE"]);
    assert_eq!(
        (c["role"].as_str(), c["close"].as_str()),
        (Some("client"), Some("refused"))
    );
    let errors = error_reports(&stderr);
    if errors {
        assert_eq!(c["error"], "ECONNREFUSED");
    } else {
        assert!(c["error"].is_null(), "{c}");
    }
    assert_eq!(c["resets_received"], 1);
    let kinds: Vec<&str> = c["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"receive_reset") && kinds.contains(&"error") == errors,
        "{kinds:?}"
    );
    assert!(c["time_wait"].is_null());
    // The RST the kernel answered with has no socket: still shown, as an event, on kernels
    // whose tcp_send_reset fires without a socket (6.10+, where it carries sockaddrs).
    let socketless_resets =
        std::fs::read_to_string("/sys/kernel/tracing/events/tcp/tcp_send_reset/format")
            .is_ok_and(|f| f.contains("saddr[28]"));
    if socketless_resets {
        assert!(
            records
                .iter()
                .any(|v| v["type"] == "event" && v["kind"] == "send_reset" && v["sock"].is_null()),
            "{records:#?}"
        );
    }
    // Live event records too, with the owner of the socket.
    let rr = records
        .iter()
        .find(|v| v["type"] == "event" && v["kind"] == "receive_reset")
        .unwrap();
    assert_eq!(rr["owner"]["pid"].as_u64(), Some(std::process::id().into()));
    assert_eq!(rr["sock"], c["sock"]);
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn ipv4_refused() {
    refused(false);
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn ipv6_refused() {
    refused(true);
}

/// The client aborts with SO_LINGER 0: it sends a RST, the server receives it.
fn reset(v6: bool) {
    let (listener, addr) = bound(v6);
    let t = Tracer::start(&["-o", "json", "-p", &addr.port().to_string()]);
    listener.listen(1).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let client = TcpStream::connect(addr).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let client = Socket::from(client);
    client.set_linger(Some(Duration::ZERO)).unwrap();
    drop(client);
    let mut b = [0u8; 1];
    let e = server.read(&mut b).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
    drop(server);
    drop(listener);
    t.wait_json(3, |v| v["type"] == "connection");
    let (status, out, stderr) = t.stop();
    assert!(status.success());
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let c = conns(&records);
    let by_role = |role: &str| *c.iter().find(|c| c["role"] == role).unwrap();
    let (client, server) = (by_role("client"), by_role("server"));
    assert_eq!(
        states(client),
        ["CLOSE", "SYN_SENT", "ESTABLISHED", "CLOSE"]
    );
    assert_eq!(client["close"], "reset_sent", "{client}");
    assert_eq!(client["resets_sent"], 1);
    assert_eq!(
        states(server),
        ["LISTEN", "SYN_RECV", "ESTABLISHED", "CLOSE"]
    );
    assert_eq!(server["close"], "reset_received", "{server}");
    if error_reports(&stderr) {
        assert_eq!(server["error"], "ECONNRESET", "{records:#?}");
    } else {
        assert!(server["error"].is_null(), "{server}");
    }
    assert!(client["time_wait"].is_null() && server["time_wait"].is_null());
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn ipv4_reset() {
    reset(false);
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn ipv6_reset() {
    reset(true);
}

/// The connection record of the client at local port `cport`.
fn client_record(records: &[Value], cport: u16) -> &Value {
    conns(records)
        .into_iter()
        .find(|c| c["role"] == "client" && c["sport"].as_u64() == Some(cport.into()))
        .unwrap_or_else(|| panic!("no client record for port {cport}: {records:#?}"))
}

/// A peer that vanishes: an established connection from namespace A to B, then B drops all
/// TCP to the server port. The client writes, retransmits, and gives up after
/// tcp_retries2 (3 in A): ETIMEDOUT. The server then closes: A has no socket for its FIN
/// and answers with RSTs of no socket (the first within the client record's grace period),
/// dropped until B lets TCP in again. The client's record is a `timeout`, not `reset_sent`.
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn a_peer_that_vanishes_is_a_timeout() {
    require_root();
    let pair = NsPair::new("vanish", 1);
    pair.a
        .exec(&["sysctl", "-q", "-w", "net.ipv4.tcp_retries2=3"]);
    let b_addr = pair.b_addr;
    let listener = pair
        .b
        .run(move || std::net::TcpListener::bind((b_addr, 0)).unwrap());
    let addr = listener.local_addr().unwrap();
    let port = addr.port();
    let t = Tracer::start(&["-o", "json", "--no-timewait", "-p", &port.to_string()]);
    let mut client = pair
        .a
        .run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap());
    let (mut server, _) = listener.accept().unwrap();
    let cport = client.local_addr().unwrap().port();
    client.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    server.read_exact(&mut b).unwrap();

    let drop_tcp = NftTable::new(
        &pair.b,
        "tracer_vanish",
        &format!(
            "chain input {{ type filter hook input priority 0; policy accept; tcp dport {port} drop; }}"
        ),
    );
    client.write_all(b"lost").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let started = Instant::now();
    let err = client.read(&mut b).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ETIMEDOUT),
        "{err} after {:?}",
        started.elapsed()
    );
    // The server's FIN now meets no socket in A.
    drop(server);
    drop(client);
    thread::sleep(Duration::from_millis(300));
    drop(drop_tcp);
    t.wait_json(1, |v| {
        v["type"] == "connection"
            && v["role"] == "client"
            && v["sport"].as_u64() == Some(cport.into())
    });
    // The server's FIN retransmit, answered now; its record ends with that RST.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !t
        .json()
        .iter()
        .any(|v| v["type"] == "connection" && v["role"] == "server")
    {
        assert!(
            Instant::now() < deadline,
            "no server record: {:#?}",
            t.json()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let (status, out, stderr) = t.stop();
    assert!(status.success(), "{stderr:?}");
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let c = client_record(&records, cport);
    assert_eq!(
        states(c),
        ["CLOSE", "SYN_SENT", "ESTABLISHED", "CLOSE"],
        "{c:#}"
    );
    assert_eq!(c["saddr"], pair.a_addr.to_string(), "{c:#}");
    assert_eq!(c["close"], "timeout", "{c:#}");
    if error_reports(&stderr) {
        assert_eq!(c["error"], "ETIMEDOUT", "{c:#}");
    }
    assert!(c["retransmits"].as_u64().unwrap() > 0, "{c:#}");
    assert_eq!(c["resets_sent"], 0, "{c:#}");
    assert!(c["time_wait"].is_null(), "{c:#}");
    // A did answer with RSTs of no socket, on the client's tuple: live events only.
    let sockless: Vec<&Value> = records
        .iter()
        .filter(|v| {
            v["type"] == "event"
                && v["kind"] == "send_reset"
                && v["sock"].is_null()
                && v["sport"].as_u64() == Some(cport.into())
        })
        .collect();
    let socketless_resets =
        std::fs::read_to_string("/sys/kernel/tracing/events/tcp/tcp_send_reset/format")
            .is_ok_and(|f| f.contains("saddr[28]"));
    if socketless_resets {
        assert!(!sockless.is_empty(), "{records:#?}");
    }
    assert!(
        c["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["kind"] != "send_reset"),
        "{c:#}"
    );
    let server = conns(&records)
        .into_iter()
        .find(|v| v["role"] == "server")
        .unwrap();
    assert_eq!(server["close"], "reset_received", "{server:#}");
}

/// A connect() answered by an ICMP host unreachable (nftables in B rejects the SYN): the
/// kernel reports EHOSTUNREACH in SYN_SENT, and the record is `unreachable`.
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn an_icmp_host_unreachable_connect_is_unreachable() {
    require_root();
    let pair = NsPair::new("unreach", 2);
    let b_addr = pair.b_addr;
    // A port of B's that nobody will reach.
    let held = pair
        .b
        .run(move || std::net::TcpListener::bind((b_addr, 0)).unwrap());
    let addr = held.local_addr().unwrap();
    let port = addr.port();
    let _reject = NftTable::new(
        &pair.b,
        "tracer_unreach",
        &format!(
            "chain input {{ type filter hook input priority 0; policy accept; tcp dport {port} reject with icmp type host-unreachable; }}"
        ),
    );
    let t = Tracer::start(&["-o", "json", "--no-timewait", "-p", &port.to_string()]);
    // A blocking connect(): the first ICMP error meets the socket while connect() still
    // holds it (veth answers at once), and is only kept (sk_err_soft); the SYN retransmit's
    // one, a second later, ends the connect. tcp_syn_retries bounds the wait.
    pair.a
        .exec(&["sysctl", "-q", "-w", "net.ipv4.tcp_syn_retries=2"]);
    let err = pair.a.run(move || TcpStream::connect(addr).unwrap_err());
    assert_eq!(err.raw_os_error(), Some(libc::EHOSTUNREACH), "{err}");
    t.wait_json(1, |v| v["type"] == "connection" && v["role"] == "client");
    let (status, out, stderr) = t.stop();
    assert!(status.success(), "{stderr:?}");
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let c = conns(&records);
    assert_eq!(c.len(), 1, "{c:#?}");
    let c = c[0];
    assert_eq!(states(c), ["CLOSE", "SYN_SENT", "CLOSE"], "{c:#}");
    assert_eq!(c["daddr"], b_addr.to_string(), "{c:#}");
    if error_reports(&stderr) {
        assert_eq!(c["error"], "EHOSTUNREACH", "{c:#}");
        assert_eq!(c["close"], "unreachable", "{c:#}");
    }
    assert_eq!(c["resets_received"], 0, "{c:#}");
    drop(held);
}

/// Keepalive probes unanswered: an idle established connection (SO_KEEPALIVE, idle 1 s,
/// probes 1 s apart, 2 of them) whose peer's namespace drops everything to the server
/// port. The kernel's keepalive timer gives up (tcp_keepalive_timer): it sends a RST on the
/// socket (tcp_send_active_reset, reason "keepalive timeout"), then tcp_write_err: ETIMEDOUT.
/// No retransmission (probes are not retransmits, and no data was pending). The record is a
/// `timeout`, as with retransmissions exhausted: the timer's own RST does not make it
/// `reset_sent`.
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn unanswered_keepalive_probes_are_a_timeout() {
    require_root();
    let pair = NsPair::new("keepalive", 3);
    let b_addr = pair.b_addr;
    let listener = pair
        .b
        .run(move || std::net::TcpListener::bind((b_addr, 0)).unwrap());
    let addr = listener.local_addr().unwrap();
    let port = addr.port();
    let t = Tracer::start(&["-o", "json", "--no-timewait", "-p", &port.to_string()]);
    let client = pair.a.run(move || {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_tcp_keepalive(
            &socket2::TcpKeepalive::new()
                .with_time(Duration::from_secs(1))
                .with_interval(Duration::from_secs(1))
                .with_retries(2),
        )
        .unwrap();
        s.set_keepalive(true).unwrap();
        s.connect_timeout(&addr.into(), Duration::from_secs(5))
            .unwrap();
        TcpStream::from(s)
    });
    let (server, _) = listener.accept().unwrap();
    let cport = client.local_addr().unwrap().port();
    let drop_tcp = NftTable::new(
        &pair.b,
        "tracer_keepalive",
        &format!(
            "chain input {{ type filter hook input priority 0; policy accept; tcp dport {port} drop; }}"
        ),
    );
    // Idle 1 s, then 2 probes 1 s apart, then the timer's last round: about 3-4 s.
    let mut client = client;
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut b = [0u8; 1];
    let err = client.read(&mut b).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ETIMEDOUT),
        "{err} after {:?}",
        started.elapsed()
    );
    t.wait_json(1, |v| {
        v["type"] == "connection"
            && v["role"] == "client"
            && v["sport"].as_u64() == Some(cport.into())
    });
    let (status, out, stderr) = t.stop();
    drop(client);
    drop(drop_tcp);
    drop(server);
    assert!(status.success(), "{stderr:?}");
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let c = client_record(&records, cport);
    assert_eq!(
        states(c),
        ["CLOSE", "SYN_SENT", "ESTABLISHED", "CLOSE"],
        "{c:#}"
    );
    if error_reports(&stderr) {
        assert_eq!(
            (c["close"].as_str(), c["error"].as_str()),
            (Some("timeout"), Some("ETIMEDOUT")),
            "{c:#}"
        );
    } else {
        // Before 5.15 nothing reports the ETIMEDOUT: the keepalive timer's RST is all
        // there is to see.
        assert_eq!(
            (c["close"].as_str(), &c["error"]),
            (Some("reset_sent"), &Value::Null),
            "{c:#}"
        );
    }
    assert_eq!(c["retransmits"], 0, "{c:#}");
    assert_eq!(c["resets_sent"], 1, "{c:#}");
    assert_eq!(c["resets_received"], 0, "{c:#}");
    let kinds: Vec<(&str, &str)> = c["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["state"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    // The raw error report knows the socket's state; the classic one does not; before 5.15
    // there is none.
    let raw = stderr.iter().any(|l| l.contains("(raw tracepoint"));
    let mut want = vec![("send_reset", "ESTABLISHED")];
    if error_reports(&stderr) {
        want.push(("error", if raw { "CLOSE" } else { "-" }));
    }
    assert_eq!(kinds, want, "{c:#}");
}
