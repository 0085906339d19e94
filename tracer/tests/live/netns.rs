use crate::harness::*;

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn netns_filter_selects_the_sockets_namespace() {
    let ns = Netns::new("netns");
    // The same port in both namespaces: only the namespace tells them apart.
    let (root_listener, root_addr) = bound(false);
    let port = root_addr.port();
    let (ns_listener, ns_addr) = ns.run(move || {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into())
            .unwrap();
        let a = s.local_addr().unwrap().as_socket().unwrap();
        (s, a)
    });
    let inode = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(ns.path()).unwrap().ino()
    };
    let t = Tracer::start(&[
        "-o",
        "json",
        "--no-timewait",
        "--netns-path",
        &ns.path(),
        "-p",
        &port.to_string(),
    ]);
    t.wait_stderr(&format!("netns {inode}"), Duration::from_secs(1));
    let root_client = one_connection(root_listener, root_addr, FirstCloser::Client);
    let ns_client = ns.run(move || one_connection(ns_listener, ns_addr, FirstCloser::Client));
    t.wait_json(3, |v| v["type"] == "connection");
    thread::sleep(Duration::from_millis(200));
    let (status, out, err) = t.stop();
    assert!(status.success(), "{err:?}");
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let conns = of_type(&records, "connection");
    assert_eq!(
        conns.len(),
        3,
        "only the namespace's client, server and listener: {conns:#?}"
    );
    let client = conns.iter().find(|c| c["role"] == "client").unwrap();
    assert_eq!(client["sport"].as_u64(), Some(ns_client.into()));
    assert_ne!(ns_client, root_client);
    assert_eq!(of_type(&records, "transition").len(), 12);
}

/// The inode of a namespace file.
fn ns_inode(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).unwrap().ino()
}

fn parse(out: &[String]) -> Vec<Value> {
    out.iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every record about a socket carries its namespace, and the TIME_WAIT of an active closer
/// in another namespace is confirmed there, for the very first close of the run (the kernel
/// hands it to a timewait socket in FIN_WAIT2 first; that must not end the lookup), and when
/// the peer closes 300 ms later.
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn time_wait_is_confirmed_in_the_sockets_own_namespace() {
    let ns = Netns::new("tw");
    let inode = ns_inode(&ns.path());
    let host = ns_inode("/proc/self/ns/net");
    let (listener, addr) = ns.run(|| bound(false));
    let port = addr.port();
    let t = Tracer::start(&["-o", "json", "-p", &port.to_string()]);
    t.wait_stderr("attached", Duration::from_secs(5));
    let first = ns.run(move || client_closes_first(listener, addr, Duration::from_millis(0)));
    let (listener2, addr2) = ns.run(move || {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into())
            .unwrap();
        (s, SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    });
    let second = ns.run(move || client_closes_first(listener2, addr2, Duration::from_millis(300)));
    t.wait_json(6, |v| v["type"] == "connection");
    let (status, out, err) = t.stop();
    assert!(status.success(), "{err:?}");
    let records = parse(&out);
    for r in &records {
        if ["transition", "event", "connection"].contains(&r["type"].as_str().unwrap_or("")) {
            assert_eq!(r["netns"].as_u64(), Some(inode), "{r}");
        }
    }
    assert_ne!(inode, host);
    for cport in [first, second] {
        let c = of_type(&records, "connection")
            .into_iter()
            .find(|c| c["role"] == "client" && c["sport"] == cport)
            .unwrap_or_else(|| panic!("client {cport}: {records:#?}"));
        assert_eq!(
            c["time_wait"]["confirmed"], true,
            "client {cport} closed first: {c:#}\n{err:?}"
        );
        let tw: Vec<&Value> = of_type(&records, "transition")
            .into_iter()
            .filter(|v| v["source"] == "sock_diag" && v["sport"] == cport)
            .collect();
        assert_eq!(tw.len(), 1, "one -> TIME_WAIT for {cport}: {tw:#?}");
        assert_eq!(
            (tw[0]["old"].as_str(), tw[0]["new"].as_str()),
            (Some("FIN_WAIT2"), Some("TIME_WAIT"))
        );
        assert_eq!(tw[0]["netns"].as_u64(), Some(inode));
    }
}

/// The first active close of a run in the tracer's own namespace is confirmed too (it was
/// not: the first lookup ran while the timewait socket was still in FIN_WAIT2).
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn the_first_close_of_a_run_gets_its_time_wait() {
    let (listener, addr) = bound(false);
    let t = Tracer::start(&["-o", "json", "-p", &addr.port().to_string()]);
    t.wait_stderr("attached", Duration::from_secs(5));
    let cport = client_closes_first(listener, addr, Duration::from_millis(100));
    t.wait_json(3, |v| v["type"] == "connection");
    let (status, out, err) = t.stop();
    assert!(status.success(), "{err:?}");
    let records = parse(&out);
    let c = of_type(&records, "connection")
        .into_iter()
        .find(|c| c["role"] == "client" && c["sport"] == cport)
        .expect("the client's record");
    assert_eq!(c["time_wait"]["confirmed"], true, "{c:#}");
    let host = ns_inode("/proc/self/ns/net");
    assert_eq!(c["netns"].as_u64(), Some(host));
}

/// A CLOSE_WAIT leak older than the tracer, in another namespace: the start-up dump covers
/// every namespace, and the owner is found from the inode sock_diag gives there.
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn stuck_sees_an_older_leak_in_another_namespace_with_its_owner() {
    let ns = Netns::new("leak");
    let inode = ns_inode(&ns.path());
    let (server, port) = ns.run(|| {
        let (listener, addr) = bound(false);
        listener.listen(1).unwrap();
        let listener: std::net::TcpListener = listener.into();
        let client = TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        drop(client); // the peer closes; the server never does: CLOSE_WAIT
        (server, addr.port())
    });
    thread::sleep(Duration::from_millis(100));
    let t = Tracer::start(&["stuck", "1s", "-o", "json", "-p", &port.to_string()]);
    let p = u64::from(port);
    t.wait_json(1, |v| {
        v["type"] == "stuck" && v["sport"] == p && v["state"] == "CLOSE_WAIT"
    });
    let (status, out, err) = t.stop();
    drop(server);
    assert!(status.success(), "{err:?}");
    let records = parse(&out);
    let s = of_type(&records, "stuck")
        .into_iter()
        .find(|v| v["sport"] == p)
        .expect("the leak is reported");
    assert_eq!(s["netns"].as_u64(), Some(inode), "{s:#}");
    assert_eq!(s["seen_from"], "dump");
    assert_eq!(
        s["owner"]["pid"].as_u64(),
        Some(u64::from(std::process::id())),
        "{s:#}"
    );
    assert!(
        err.iter().any(|l| l.contains("network namespaces")),
        "the start-up line counts namespaces: {err:?}"
    );
}

/// The same port in two namespaces, no namespace filter: each side's transitions, owner
/// and TIME_WAIT are its own.
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn two_namespaces_with_the_same_ports_are_told_apart() {
    let ns = Netns::new("twins");
    let inode = ns_inode(&ns.path());
    let host = ns_inode("/proc/self/ns/net");
    let (root_listener, root_addr) = bound(false);
    let port = root_addr.port();
    let (ns_listener, ns_addr) = ns.run(move || {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into())
            .unwrap();
        let a = s.local_addr().unwrap().as_socket().unwrap();
        (s, a)
    });
    let t = Tracer::start(&["-o", "json", "-p", &port.to_string()]);
    t.wait_stderr("attached", Duration::from_secs(5));
    let root_client = one_connection(root_listener, root_addr, FirstCloser::Client);
    let ns_client = ns.run(move || one_connection(ns_listener, ns_addr, FirstCloser::Client));
    t.wait_json(6, |v| v["type"] == "connection");
    let (status, out, err) = t.stop();
    assert!(status.success(), "{err:?}");
    let records = parse(&out);
    let me = u64::from(std::process::id());
    for (netns, cport) in [(host, root_client), (inode, ns_client)] {
        let mine: Vec<&Value> = records
            .iter()
            .filter(|v| v["netns"].as_u64() == Some(netns))
            .collect();
        assert_eq!(
            mine.iter()
                .filter(|v| v["type"] == "transition" && v["source"] == "tracepoint")
                .count(),
            12,
            "namespace {netns}: {mine:#?}"
        );
        let conns: Vec<&&Value> = mine.iter().filter(|v| v["type"] == "connection").collect();
        assert_eq!(conns.len(), 3, "client, server, listener in {netns}");
        for c in &conns {
            assert_eq!(c["owner"]["pid"].as_u64(), Some(me), "{c:#}");
        }
        let client = conns
            .iter()
            .find(|c| c["role"] == "client")
            .expect("a client");
        assert_eq!(client["sport"].as_u64(), Some(cport.into()));
        assert_eq!(client["time_wait"]["confirmed"], true, "{client:#}");
    }
}

/// A container in miniature: a process in its own network namespace and in a Docker-style
/// cgroup scope holds a CLOSE_WAIT leak made before the tracer starts. `tracer stuck` finds
/// it in the start-up dump of that namespace, with the process and its container id.
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn stuck_names_a_containers_leak_with_its_pid_and_container_id() {
    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let mut cg = TestCgroups::new("ctr");
    let dir = cg.add(&format!("docker-{ID}.scope"));
    let ns = Netns::new("ctr");
    let inode = ns_inode(&ns.path());
    let (listener, addr) = ns.run(|| {
        let (l, a) = bound(false);
        l.listen(1).unwrap();
        (l, a)
    });
    let name = ns.path().trim_start_matches("/run/netns/").to_string();
    let mut kid = KillOnDrop(
        Command::new("ip")
            .args(["netns", "exec", &name, "bash", "-c"])
            .arg(format!(
                "read go; exec 3<>/dev/tcp/127.0.0.1/{}; echo connected; sleep 30",
                addr.port()
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn_locked()
            .unwrap(),
    );
    let pid = kid.0.id();
    TestCgroups::enter(&dir, pid);
    kid.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let mut line = String::new();
    BufReader::new(kid.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "connected");
    let listener: std::net::TcpListener = listener.into();
    let (server, peer) = listener.accept().unwrap();
    drop(server); // our FIN: the process's socket goes to CLOSE_WAIT and stays there
    thread::sleep(Duration::from_millis(100));
    let t = Tracer::start(&["stuck", "1s", "-o", "json", "-p", &addr.port().to_string()]);
    let cport = u64::from(peer.port());
    t.wait_json(1, |v| {
        v["type"] == "stuck" && v["sport"] == cport && v["state"] == "CLOSE_WAIT"
    });
    let (status, out, err) = t.stop();
    drop(kid);
    drop(listener);
    assert!(status.success(), "{err:?}");
    let records = parse(&out);
    let s = records
        .iter()
        .find(|v| v["type"] == "stuck" && v["sport"] == cport)
        .unwrap();
    assert_eq!(s["netns"].as_u64(), Some(inode), "{s:#}");
    assert_eq!(s["seen_from"], "dump");
    assert_eq!(s["owner"]["pid"].as_u64(), Some(u64::from(pid)), "{s:#}");
    assert_eq!(s["owner"]["container_id"], ID, "{s:#}");
    drop(cg);
}
