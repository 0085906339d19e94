use crate::harness::*;

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn a_small_ring_wraps_many_times_without_garbling_a_record() {
    // A 16 KiB ring holds about 136 events: 200 connections go round it about 18 times, and
    // every lap has one record straddling the end (tracer maps the data pages once and joins
    // that record's two pieces). Paced so the reader keeps up: nothing may be lost.
    let (listener, addr) = bound(false);
    let port = addr.port();
    let t = Tracer::start(&[
        "-o",
        "json",
        "--no-events",
        "--no-timewait",
        "--ring-buffer-size",
        "16K",
        "-p",
        &port.to_string(),
    ]);
    listener.listen(128).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let n = 200;
    for _ in 0..n {
        let c = TcpStream::connect(addr).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        // No child may hold these sockets while they close (see FORK).
        let no_fork = FORK
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        drop(c);
        // The server sees the FIN, then closes: the passive side's exact sequence.
        assert_eq!(s.read(&mut [0u8; 1]).unwrap(), 0);
        drop(s);
        drop(no_fork);
        thread::sleep(Duration::from_millis(2));
    }
    drop(listener);
    thread::sleep(Duration::from_millis(300));
    let (status, out, err) = t.stop();
    assert!(status.success(), "{err:?}");
    assert!(
        !err.iter().any(|l| l.contains("decoder")),
        "garbled records: {err:?}"
    );
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Paced so the reader keeps up here; under emulation (vm-test) it may not: then every
    // missing event must be reported lost, and the timelines it cut marked incomplete.
    let lost: usize = of_type(&records, "lost")
        .iter()
        .map(|l| l["count"].as_u64().unwrap() as usize)
        .sum();
    assert_eq!(
        of_type(&records, "transition").len() + lost,
        10 * n + 2,
        "{err:?}"
    );
    let conns = of_type(&records, "connection");
    let complete = |role: &str| -> Vec<Vec<String>> {
        conns
            .iter()
            .filter(|c| c["role"] == role && c["incomplete"] == false)
            .map(|c| states(c))
            .collect()
    };
    let client = timeline(&CLIENT_OPEN, &ACTIVE_CLOSE);
    let server = timeline(&SERVER_OPEN, &PASSIVE_CLOSE);
    // A garbled record would break a timeline: every complete one is exact.
    let (clients, servers) = (complete("client"), complete("server"));
    assert!(clients.iter().all(|s| *s == client), "{clients:?}");
    assert!(servers.iter().all(|s| *s == server), "{servers:?}");
    if lost == 0 {
        assert_eq!((clients.len(), servers.len()), (n, n));
    } else {
        assert!(clients.len() + servers.len() > n, "{err:?}");
    }
}
