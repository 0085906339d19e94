use crate::harness::*;

/// A listener port with nothing listening: connect() is refused with a RST.
/// Whether the kernel has sock:inet_sk_error_report (5.15+), which carries a socket's error
/// (`ECONNREFUSED`, `ECONNRESET`). Without it (5.10) tracer must say so on stderr; the
/// connections then have no `error`.
fn error_reports(stderr: &[String]) -> bool {
    let there =
        std::path::Path::new("/sys/kernel/tracing/events/sock/inet_sk_error_report").exists();
    if !there {
        assert!(
            stderr
                .iter()
                .any(|l| l.contains("context events unavailable: sock:inet_sk_error_report")),
            "{stderr:?}"
        );
    }
    there
}

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
