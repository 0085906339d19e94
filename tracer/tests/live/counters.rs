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
