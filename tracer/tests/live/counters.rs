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

/// Segments dropped at random by nftables in the peer's namespace: the client's record
/// counts exactly the retransmits the kernel's `tcp:tcp_retransmit_skb` reported for its
/// port (a tracefs instance of its own), and its `tcp` counters say it retransmitted.
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
    let rtx = TracefsCount::event(
        &format!("rtx-{cport}"),
        "tcp/tcp_retransmit_skb",
        &format!("sport == {cport}"),
    );
    let drops = NftTable::new(
        &pair.b,
        "tracer_rtx",
        &format!(
            "chain input {{ type filter hook input priority 0; policy accept; tcp dport {port} numgen random mod 5 == 0 drop; }}"
        ),
    );
    const N: usize = 100;
    let reader = thread::spawn(move || {
        let mut got = vec![0u8; N * 100];
        server.read_exact(&mut got).unwrap();
        server
    });
    for _ in 0..N {
        client.write_all(&[7u8; 100]).unwrap();
        thread::sleep(Duration::from_millis(2));
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
    let kernel = rtx.count_of("tcp/tcp_retransmit_skb") as u64;
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
    let total = c["tcp"]["retrans_total"].as_u64().unwrap();
    eprintln!("retransmits: tracepoint {kernel}, tcp_sock total_retrans {total}");
    assert!(
        total > 0 && total <= kernel,
        "tcp.retrans_total {total}, tracepoint {kernel}: {c:#}"
    );
    assert_eq!(
        c["tcp"]["bytes_sent"].as_u64(),
        Some((N * 100) as u64),
        "{c:#}"
    );
}
