use crate::harness::*;

/// `tracer_...{labels} value` from an exposition text.
fn metric(text: &str, line_prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {line_prefix:?} in:\n{text}"))
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn prometheus_metrics_match_the_events() {
    let (listener, addr) = bound(false);
    let t = Tracer::start(&[
        "--metrics",
        "127.0.0.1:0",
        "--quiet",
        "--stuck",
        "1s",
        "-p",
        &addr.port().to_string(),
    ]);
    let url = {
        let err = t.stderr.lock().unwrap().clone();
        let line = err
            .iter()
            .find(|l| l.contains("Prometheus metrics on "))
            .unwrap_or_else(|| panic!("{err:?}"));
        line.split("metrics on ").nth(1).unwrap().trim().to_string()
    };
    // One connection closed normally, and one accepted socket left in CLOSE_WAIT (stuck).
    listener.listen(4).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let c1 = TcpStream::connect(addr).unwrap();
    let (mut s1, _) = listener.accept().unwrap();
    drop(c1);
    let mut b = [0u8; 1];
    assert_eq!(s1.read(&mut b).unwrap(), 0);
    drop(s1);
    let c2 = TcpStream::connect(addr).unwrap();
    let (s2, _) = listener.accept().unwrap();
    drop(c2);
    thread::sleep(Duration::from_millis(2500)); // past --stuck, records released, gauges refreshed
    let scrape = || ureq::get(&url).call().unwrap().into_string().unwrap();
    let text = scrape();
    // Counters from the events: two clients closed first, two servers went through
    // CLOSE_WAIT; one server is still there.
    let tr = |o: &str, n: &str| {
        metric(
            &text,
            &format!("tracer_tcp_transitions_total{{old=\"{o}\",new=\"{n}\"}}"),
        )
    };
    assert_eq!(tr("CLOSE", "SYN_SENT"), 2.0);
    assert_eq!(tr("ESTABLISHED", "CLOSE_WAIT"), 2.0);
    assert_eq!(tr("CLOSE_WAIT", "LAST_ACK"), 1.0);
    assert_eq!(tr("CLOSE", "LISTEN"), 1.0);
    assert_eq!(
        metric(
            &text,
            "tracer_tcp_connections_total{role=\"server\",close=\"passive\"}"
        ),
        1.0
    );
    // The second client is an orphaned FIN_WAIT2 (its peer never closes): not finished yet,
    // still in FIN_WAIT2.
    assert_eq!(
        metric(
            &text,
            "tracer_tcp_connections_total{role=\"client\",close=\"active\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&text, "tracer_tcp_connections_open{state=\"FIN_WAIT2\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "tracer_tcp_connections_open{state=\"CLOSE_WAIT\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "tracer_tcp_connections_open{state=\"LISTEN\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "tracer_tcp_connections_stuck{state=\"CLOSE_WAIT\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "tracer_tcp_connections_stuck{state=\"FIN_WAIT2\"}"),
        1.0
    );
    // Histograms are fed by finished connections: the first client (the orphan is not).
    assert_eq!(metric(&text, "tracer_tcp_handshake_seconds_count"), 1.0);
    assert_eq!(metric(&text, "tracer_tcp_close_wait_seconds_count"), 1.0);
    assert!(text.contains("tracer_tcp_time_wait_seconds_count"));
    assert!(text.ends_with("# EOF\n"));
    drop(s2);
    drop(listener);
    let (status, _, _) = t.stop();
    assert!(status.success());
}
