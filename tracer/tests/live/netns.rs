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
