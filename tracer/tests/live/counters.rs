//! What each connection carried, from the kernel's `tcp_sock` at its close.
use crate::harness::*;

/// A transfer of a known size each way, closed by either side: each end's record says
/// exactly those data bytes, sent (acked) and received.
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn bytes_each_way_are_exact_on_both_ends() {
    const UP: usize = 100_000;
    const DOWN: usize = 50_000;
    for first in [FirstCloser::Client, FirstCloser::Server] {
        let (listener, addr) = bound(false);
        let t = Tracer::start(&["-o", "json", "-p", &addr.port().to_string()]);
        t.wait_stderr("attached", Duration::from_secs(5));
        listener.listen(4).unwrap();
        let listener: std::net::TcpListener = listener.into();
        let mut client = TcpStream::connect(addr).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let cport = client.local_addr().unwrap().port();
        let up = thread::spawn(move || {
            client.write_all(&vec![1u8; UP]).unwrap();
            let mut got = vec![0u8; DOWN];
            client.read_exact(&mut got).unwrap();
            client
        });
        let mut got = vec![0u8; UP];
        server.read_exact(&mut got).unwrap();
        server.write_all(&vec![2u8; DOWN]).unwrap();
        let mut client = up.join().unwrap();
        let mut b = [0u8; 1];
        match first {
            FirstCloser::Client => {
                drop(client);
                assert_eq!(server.read(&mut b).unwrap(), 0);
                drop(server);
            }
            FirstCloser::Server => {
                drop(server);
                assert_eq!(client.read(&mut b).unwrap(), 0);
                drop(client);
            }
        }
        drop(listener);
        t.wait_json(3, |v| v["type"] == "connection");
        let (status, out, err) = t.stop();
        assert!(status.success(), "{err:?}");
        let records: Vec<Value> = out
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let conns = conns(&records);
        let p = u64::from(cport);
        let client = conns
            .iter()
            .find(|c| c["role"] == "client" && c["sport"] == p)
            .expect("the client's record");
        let server = conns
            .iter()
            .find(|c| c["role"] == "server" && c["dport"] == p)
            .expect("the server's record");
        let n = |c: &Value, k: &str| c["tcp"][k].as_u64();
        let first_name = if first == FirstCloser::Client {
            "client"
        } else {
            "server"
        };
        assert_eq!(
            (n(client, "bytes_sent"), n(client, "bytes_received")),
            (Some(UP as u64), Some(DOWN as u64)),
            "{first_name} closed first: client {client:#}"
        );
        assert_eq!(
            (n(server, "bytes_sent"), n(server, "bytes_received")),
            (Some(DOWN as u64), Some(UP as u64)),
            "{first_name} closed first: server {server:#}"
        );
        for c in [client, server] {
            let srtt = n(c, "srtt_us").unwrap();
            assert!(
                (1..20_000).contains(&srtt),
                "loopback srtt {srtt} µs: {c:#}"
            );
            assert!(n(c, "segs_out").unwrap() > 0 && n(c, "segs_in").unwrap() > 0);
            assert_eq!(n(c, "retrans_total"), Some(0), "{c:#}");
            assert!(n(c, "cwnd").unwrap() > 0);
        }
        assert!(n(client, "handshake_rtt_us").is_some(), "{client:#}");
    }
}

/// Bytes written and not yet acked by the peer (`SIOCOUTQ`).
fn unacked(s: &TcpStream) -> i32 {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (= TIOCOUTQ) on a TCP socket writes one int.
    let rc = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    assert_eq!(rc, 0, "SIOCOUTQ: {}", std::io::Error::last_os_error());
    n
}

/// Segments dropped at random by nftables in the peer's namespace: the client's record
/// counts exactly the retransmits the kernel's `tcp:tcp_retransmit_skb` reported for its
/// port (a tracefs instance of its own), and its `tcp` counters say exactly as many
/// retransmitted segments and bytes.
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn retransmits_forced_by_drops_match_the_kernels_count() {
    require_root();
    let pair = NsPair::new("rtx", 7);
    let b_addr = pair.b_addr;
    let listener = pair
        .b
        .run(move || std::net::TcpListener::bind((b_addr, 0)).unwrap());
    let addr = listener.local_addr().unwrap();
    let port = addr.port();
    let t = Tracer::start(&["-o", "json", "--no-timewait", "-p", &port.to_string()]);
    t.wait_stderr("attached", Duration::from_secs(5));
    let mut client = pair.a.run(move || {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    });
    let (mut server, _) = listener.accept().unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let cport = client.local_addr().unwrap().port();
    // Since Linux 6.16 the tracepoint fires for every attempt, with `err`: counted apart.
    // Before, it has no `err` (and fires for the retransmits made): all count as made.
    let with_err =
        std::fs::read_to_string("/sys/kernel/tracing/events/tcp/tcp_retransmit_skb/format")
            .unwrap()
            .contains("field:int err;");
    let (ok_filter, failed_filter) = if with_err {
        (
            format!("sport == {cport} && err == 0"),
            format!("sport == {cport} && err != 0"),
        )
    } else {
        // Nothing matches the second: no port is 0 here.
        (
            format!("sport == {cport}"),
            "sport == 0 && dport == 0".to_string(),
        )
    };
    let rtx_ok = TracefsCount::event(
        &format!("rtx-ok-{cport}"),
        "tcp/tcp_retransmit_skb",
        &ok_filter,
    );
    let rtx_failed = TracefsCount::event(
        &format!("rtx-failed-{cport}"),
        "tcp/tcp_retransmit_skb",
        &failed_filter,
    );
    let drops = NftTable::new(
        &pair.b,
        "tracer_rtx",
        &format!(
            "chain input {{ type filter hook input priority 0; policy accept; tcp dport {port} numgen random mod 5 == 0 drop; }}"
        ),
    );
    // One 100-byte write at a time, each only once everything before it was acked: every
    // segment in flight is a lone 100-byte skb, so each retransmit is of exactly one
    // segment (no TSO, nothing to collapse with) and 100 bytes.
    const N: usize = 50;
    let reader = thread::spawn(move || {
        let mut got = vec![0u8; N * 100];
        server.read_exact(&mut got).unwrap();
        server
    });
    let start = Instant::now();
    for _ in 0..N {
        while unacked(&client) > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the drops stalled the connection"
            );
            thread::sleep(Duration::from_millis(1));
        }
        client.write_all(&[7u8; 100]).unwrap();
    }
    let mut server = reader.join().unwrap();
    drop(drops);
    drop(client);
    let mut b = [0u8; 1];
    assert_eq!(server.read(&mut b).unwrap(), 0);
    drop(server);
    let p = u64::from(cport);
    t.wait_json(1, |v| v["type"] == "connection" && v["sport"] == p);
    let (status, out, err) = t.stop();
    drop(listener);
    assert!(status.success(), "{err:?}");
    let ok = rtx_ok.count_of("tcp/tcp_retransmit_skb") as u64;
    let failed = rtx_failed.count_of("tcp/tcp_retransmit_skb") as u64;
    let kernel = ok + failed;
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let c = conns(&records)
        .into_iter()
        .find(|c| c["sport"] == p)
        .unwrap();
    assert!(
        kernel > 0,
        "a fifth of the segments dropped: no retransmit? {c:#}"
    );
    // Exact, unless the kernel skipped some of tracer's runs (recursion misses are counted
    // for every TCP event on the host, and other tests run beside this one).
    let misses: u64 = of_type(&records, "lost")
        .iter()
        .filter(|l| l["cause"] == "recursion")
        .map(|l| l["count"].as_u64().unwrap())
        .sum();
    let seen = c["retransmits"].as_u64().unwrap();
    assert!(
        seen <= kernel && seen + misses >= kernel,
        "{seen} retransmits on the record, {kernel} from the tracepoint, {misses} runs skipped: {c:#}"
    );
    if misses == 0 {
        assert_eq!(seen, kernel, "{c:#}");
    }
    // The kernel's own count. __tcp_retransmit_skb adds the skb's segment count to
    // total_retrans (and its length to bytes_retrans) once it gets past its checks, then
    // transmits; the tracepoint fires on every attempt, with `err`. An attempt that failed
    // a check (-EBUSY: the original still in a queue of this host, -EAGAIN, -ENOMEM,
    // -EHOSTUNREACH) counts nowhere; one whose transmit failed counts in both. With one
    // 1-segment, 100-byte skb per attempt: total_retrans = attempts with err 0 plus the
    // failed transmits, bytes_retrans 100 times that.
    let total = c["tcp"]["retrans_total"].as_u64().unwrap();
    let bytes = c["tcp"]["bytes_retrans"].as_u64().unwrap();
    eprintln!("retransmits: tracepoint {ok} ok + {failed} failed, tcp_sock total_retrans {total}");
    assert!(
        (ok..=ok + failed).contains(&total),
        "tcp.retrans_total {total}, tracepoint {ok} ok and {failed} failed: {c:#}"
    );
    if failed == 0 {
        assert_eq!(total, ok, "{c:#}");
    }
    assert_eq!(bytes, 100 * total, "{c:#}");
    assert_eq!(
        c["tcp"]["bytes_sent"].as_u64(),
        Some((N * 100) as u64),
        "{c:#}"
    );
}

/// A link that delays every packet by 25 ms each way (a TUN relay between two namespaces:
/// this kernel has no `sch_netem`), so every round trip takes at least 50 ms: both ends'
/// smoothed RTT, minimum RTT and handshake RTT are within a band above it.
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn rtt_on_a_delayed_link_is_within_the_band_on_both_ends() {
    require_root();
    const ONE_WAY: Duration = Duration::from_millis(25);
    const RTT_US: u64 = 2 * 25_000;
    let pair = DelayedPair::new("dly", 9, ONE_WAY);
    let b_addr = pair.b_addr;
    let listener = pair
        .b
        .run(move || std::net::TcpListener::bind((b_addr, 0)).unwrap());
    let addr = listener.local_addr().unwrap();
    // TIME_WAIT lookups on: the client is an orphaned FIN_WAIT2 when its counters are read
    // (it closed, the server's FIN is 25 ms away), and only sock_diag tells.
    let t = Tracer::start(&["-o", "json", "-p", &addr.port().to_string()]);
    t.wait_stderr("attached", Duration::from_secs(5));
    let mut client = pair.a.run(move || {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    });
    let (mut server, _) = listener.accept().unwrap();
    server.set_nodelay(true).unwrap();
    for s in [&client, &server] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    // Over the delayed link: from a's end of it.
    assert_eq!(client.local_addr().unwrap().ip(), pair.a_addr);
    let cport = client.local_addr().unwrap().port();
    // Request and response, 20 rounds: each side's data is acked by the other's next
    // segment, sent as soon as it is read, so every RTT sample is one trip through the
    // relay both ways (a delayed ACK would add up to 40 ms to a sample).
    const ROUNDS: usize = 20;
    let echo = thread::spawn(move || {
        let mut buf = [0u8; 1000];
        for _ in 0..ROUNDS {
            server.read_exact(&mut buf).unwrap();
            server.write_all(&buf).unwrap();
        }
        // The client's FIN (with the ACK of the last response), then ours.
        assert_eq!(server.read(&mut buf).unwrap(), 0);
        drop(server);
    });
    let mut buf = [7u8; 1000];
    for _ in 0..ROUNDS {
        client.write_all(&buf).unwrap();
        client.read_exact(&mut buf).unwrap();
    }
    drop(client);
    echo.join().unwrap();
    let p = u64::from(cport);
    t.wait_json(2, |v| {
        v["type"] == "connection" && (v["sport"] == p || v["dport"] == p)
    });
    let (status, out, err) = t.stop();
    drop(listener);
    assert!(status.success(), "{err:?}");
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let conns = conns(&records);
    let client = conns
        .iter()
        .find(|c| c["role"] == "client" && c["sport"] == p)
        .expect("the client's record");
    let server = conns
        .iter()
        .find(|c| c["role"] == "server" && c["dport"] == p)
        .expect("the server's record");
    let n = |c: &Value, k: &str| {
        c["tcp"][k]
            .as_u64()
            .unwrap_or_else(|| panic!("tcp.{k}: {c:#}"))
    };
    // The bands. Below: nothing crosses the relay early, so no RTT sample (and no
    // smoothed or minimum RTT made of them) is under 50 ms. Above: the relay thread's
    // wake-up after each packet's due time and the two ends' processing, on a machine that
    // may be busy: a few ms for the least of 2 × 20 samples, 10 ms for their smoothed mean
    // and for the handshake's single sample.
    let within = |what: &str, v: u64, slack: u64, c: &Value| {
        assert!(
            (RTT_US..=RTT_US + slack).contains(&v),
            "{what} {v} µs, want {RTT_US}..={} µs: {c:#}",
            RTT_US + slack
        );
    };
    for (who, c) in [("client", client), ("server", server)] {
        within(&format!("{who} min_rtt_us"), n(c, "min_rtt_us"), 5_000, c);
        within(&format!("{who} srtt_us"), n(c, "srtt_us"), 10_000, c);
        // With every sample in the band, the deviation is at most its width.
        assert!(n(c, "rttvar_us") <= 10_000, "{who}: {c:#}");
        assert_eq!(n(c, "bytes_sent"), (ROUNDS * 1000) as u64, "{who}: {c:#}");
        assert_eq!(
            n(c, "bytes_received"),
            (ROUNDS * 1000) as u64,
            "{who}: {c:#}"
        );
        assert!(n(c, "delivery_rate_bytes_per_s") > 0, "{who}: {c:#}");
    }
    // The client's: its time in SYN_SENT (the tracepoint's times), µs.
    within(
        "client handshake_rtt_us",
        n(client, "handshake_rtt_us"),
        10_000,
        client,
    );
    // The server's: the kernel's RTT sample of its SYN-ACK (tcp_check_req: from the
    // SYN-ACK's send time to the handshake's ACK, µs), read as it became ESTABLISHED.
    within(
        "server handshake_rtt_us",
        n(server, "handshake_rtt_us"),
        10_000,
        server,
    );
}
