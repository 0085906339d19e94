use crate::harness::*;

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn losses_are_counted_captured_plus_lost_is_what_the_kernel_emitted() {
    // A 4 KiB ring buffer (about 34 events) and a burst of connections while the tracer is
    // stopped (SIGSTOP: its reader is fast enough to keep up with a 4 KiB ring otherwise):
    // most events cannot be handed over, and every one of them must be counted.
    let (listener, addr) = bound(false);
    let port = addr.port();
    let count = TracefsCount::new(port);
    let t = Tracer::start(&[
        "-o",
        "json",
        "--no-events",
        "--no-timewait",
        "--ring-buffer-size",
        "4K",
        "--poll-interval",
        "1s",
        "-p",
        &port.to_string(),
    ]);
    listener.listen(128).unwrap();
    let listener: std::net::TcpListener = listener.into();
    // Connections open across the gap: their handshakes are seen, their first close steps
    // are lost, their last ones seen again: timelines with a hole, to be marked incomplete.
    let mut open = Vec::new();
    for _ in 0..3 {
        let c = TcpStream::connect(addr).unwrap();
        let (s, _) = listener.accept().unwrap();
        open.push((c, s));
    }
    thread::sleep(Duration::from_millis(1200));
    let n = 300;
    // No child may hold these sockets while they close (see FORK).
    let no_fork = FORK
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // SAFETY: signals to our own child process.
    unsafe { libc::kill(t.child.id() as i32, libc::SIGSTOP) };
    for _ in 0..n {
        let c = TcpStream::connect(addr).unwrap();
        let (s, _) = listener.accept().unwrap();
        drop(c);
        drop(s);
    }
    for (c, _) in &open {
        c.shutdown(std::net::Shutdown::Write).unwrap();
    }
    // SAFETY: as above.
    unsafe { libc::kill(t.child.id() as i32, libc::SIGCONT) };
    // The reader polls once a second: let it empty the ring before the last steps.
    thread::sleep(Duration::from_millis(1500));
    for (c, s) in open {
        drop(s);
        drop(c);
    }
    drop(no_fork);
    drop(listener);
    thread::sleep(Duration::from_millis(1500));
    let (status, out, err) = t.stop();
    assert!(status.success(), "{err:?}");
    let emitted = count.count();
    assert!(
        emitted >= 10 * n,
        "the kernel emitted {emitted} events for {n} connections"
    );
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let captured = of_type(&records, "transition").len();
    let lost: u64 = of_type(&records, "lost")
        .iter()
        .map(|l| l["count"].as_u64().unwrap())
        .sum();
    assert!(lost > 0, "a 4 KiB buffer must have overflowed: {err:?}");
    // Runs the kernel skipped (recursion) are counted for every TCP event on the host,
    // whatever its port: other tests' traffic on the same CPUs adds to them. Without any,
    // the sum is exact; with some, what was dropped for this port lies between.
    let misses: u64 = of_type(&records, "lost")
        .iter()
        .filter(|l| l["cause"] == "recursion")
        .map(|l| l["count"].as_u64().unwrap())
        .sum();
    let (captured_u, emitted_u) = (captured as u64, emitted as u64);
    assert!(
        captured_u + lost - misses <= emitted_u && emitted_u <= captured_u + lost,
        "captured {captured} + lost {lost} (of which {misses} recursion misses, host-wide) vs emitted {emitted}"
    );
    if misses == 0 {
        assert_eq!(captured_u + lost, emitted_u);
    }
    // Reported live (`lost` records) and in the exit line.
    let line = err.iter().find(|l| l.contains("stopped")).unwrap();
    assert!(line.contains(&format!("lost {lost} ")), "{line}");
    // Timelines that lost events say so.
    let conns = of_type(&records, "connection");
    assert!(
        conns.iter().any(|c| c["incomplete"] == true),
        "some timelines must be marked incomplete"
    );
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn the_connection_table_is_bounded() {
    let (listener, addr) = bound(false);
    let t = Tracer::start(&[
        "-o",
        "json",
        "--no-events",
        "--max-connections",
        "5",
        "-p",
        &addr.port().to_string(),
    ]);
    listener.listen(64).unwrap();
    let listener: std::net::TcpListener = listener.into();
    // 10 connections held open: 21 sockets (listener, 10 clients, 10 servers) for a cap of 5.
    let held: Vec<_> = (0..10)
        .map(|_| {
            (
                TcpStream::connect(addr).unwrap(),
                listener.accept().unwrap().0,
            )
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let (status, out, err) = t.stop();
    drop(held);
    assert!(status.success());
    let line = err.iter().find(|l| l.contains("stopped")).unwrap();
    assert!(
        line.contains("16 evicted to stay within --max-connections")
            && line.contains(" 5 still open"),
        "{line}"
    );
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let evicted = of_type(&records, "connection");
    assert_eq!(
        evicted.len(),
        16,
        "evicted timelines are reported, marked incomplete"
    );
    assert!(
        evicted.iter().all(|c| c["incomplete"] == true
            && c["states"].as_array().unwrap().last().unwrap() != "CLOSE")
    );
}
