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
            // `exec sleep`: the process holding the socket keeps the pid the test moved into
            // the cgroup (a `sleep` child would hold it too, and either could be reported).
            .arg(format!(
                "read go; exec 3<>/dev/tcp/127.0.0.1/{}; echo connected; exec sleep 30",
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

/// A small TCP program in its own process (perl, which every Debian has), so that two
/// namespaces' sockets have different owners. Modes, on 127.0.0.1 with the client bound to
/// local port CPORT (so two namespaces can have the very same 4-tuple):
/// - `refused CPORT PORT`: connect() to a port nobody listens on; prints the errno.
/// - `full CPORT PORT`: listen on PORT, connect, accept; prints `connected`; on a line from
///   stdin the client closes first, the server after the client's FIN; prints `closed`;
///   then waits for stdin to close (holding its namespace for the tracer's lookups).
/// - `leak CPORT PORT`: as `full`, but only the client closes: the accepted socket stays in
///   CLOSE_WAIT; prints `leaking`, then waits for stdin to close.
const PEER: &str = r#"
use strict; use Socket;
$| = 1;
my ($mode, $cport, $port) = @ARGV;
my $lo = inet_aton('127.0.0.1');
sub tcp {
    socket(my $s, PF_INET, SOCK_STREAM, getprotobyname('tcp')) or die "socket: $!";
    setsockopt($s, SOL_SOCKET, SO_REUSEADDR, pack('l', 1)) or die "SO_REUSEADDR: $!";
    return $s;
}
my $c = tcp();
bind($c, sockaddr_in($cport, $lo)) or die "bind $cport: $!";
if ($mode eq 'refused') {
    connect($c, sockaddr_in($port, $lo)) and die "connected to $port";
    print 0 + $!, "
";
    exit 0;
}
my $l = tcp();
bind($l, sockaddr_in($port, $lo)) or die "bind $port: $!";
listen($l, 4) or die "listen: $!";
connect($c, sockaddr_in($port, $lo)) or die "connect: $!";
accept(my $s, $l) or die "accept: $!";
if ($mode eq 'leak') {
    close($c);
    close($l);
    print "leaking
";
    my @rest = <STDIN>;
    exit 0;
}
print "connected
";
my $go = <STDIN>;
close($c);
my $b;
sysread($s, $b, 1);
close($s);
close($l);
print "closed
";
my @rest = <STDIN>;
"#;

/// A [`PEER`] process, started in a namespace by `launcher` (`ip netns exec NS`, or
/// `unshare -n`), killed on drop.
struct Peer {
    kid: KillOnDrop,
    out: BufReader<std::process::ChildStdout>,
}

impl Peer {
    fn start(launcher: &[&str], mode: &str, cport: u16, port: u16) -> Self {
        let mut kid = Command::new(launcher[0])
            .args(&launcher[1..])
            .args(["perl", "-e", PEER, mode])
            .args([cport.to_string(), port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn_locked()
            .unwrap();
        let out = BufReader::new(kid.stdout.take().unwrap());
        Self {
            kid: KillOnDrop(kid),
            out,
        }
    }

    /// `ip netns exec NS`: the process is perl itself (exec'ed), with the pid spawned.
    fn in_netns(ns: &Netns, mode: &str, cport: u16, port: u16) -> Self {
        Self::start(&["ip", "netns", "exec", ns.name()], mode, cport, port)
    }

    /// A namespace of its own that only this process holds (`unshare -n`, no bind mount,
    /// as Docker and containerd make them): found through /proc/PID/ns/net only.
    fn unshared(mode: &str, cport: u16, port: u16) -> Self {
        Self::start(
            &[
                "unshare",
                "-n",
                "--",
                "sh",
                "-c",
                "ip link set lo up && exec \"$@\"",
                "sh",
            ],
            mode,
            cport,
            port,
        )
    }

    fn pid(&self) -> u32 {
        self.kid.0.id()
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.out.read_line(&mut l).unwrap();
        l.trim().to_string()
    }

    fn expect(&mut self, want: &str) {
        assert_eq!(self.line(), want, "peer {}", self.pid());
    }

    fn go(&mut self) {
        self.kid
            .0
            .stdin
            .as_mut()
            .unwrap()
            .write_all(b"go\n")
            .unwrap();
    }

    /// Closes its stdin: it exits.
    fn finish(mut self) {
        drop(self.kid.0.stdin.take());
        wait_timeout(&mut self.kid.0, Duration::from_secs(5));
    }

    /// Its network namespace's inode (while it runs).
    fn netns(&self) -> u64 {
        ns_inode(&format!("/proc/{}/ns/net", self.pid()))
    }
}

/// A port this test keeps for itself on the host: no other test's tracer filters on it while
/// this one runs (the namespaces' ports are their own, but `-p` matches in all of them).
fn reserved_port() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p = l.local_addr().unwrap().port();
    (l, p)
}

/// Two namespaces, the very same 4-tuple in each (client 127.0.0.1:C -> 127.0.0.1:P), owned
/// by two different processes; at the same moment as B's connection is established, A's
/// connect() with that tuple is refused. Each namespace's transitions, owners, errors, close
/// classes and TIME_WAIT are its own, in JSON and in the text rows (which name each
/// namespace at their end). With error reports matched by tuple (the classic tracepoint)
/// A's ECONNREFUSED was lost: two namespaces had the tuple.
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn identical_tuples_in_two_namespaces_are_told_apart() {
    let (a, b) = (Netns::new("same-a"), Netns::new("same-b"));
    let (ia, ib) = (ns_inode(&a.path()), ns_inode(&b.path()));
    let (_hold_p, port) = reserved_port();
    let (_hold_c, cport) = reserved_port();
    let p = port.to_string();
    let json = Tracer::start(&["-o", "json", "-p", &p]);
    let text = Tracer::start(&["--no-timeline", "-p", &p]);
    // The fallback where raw tracepoints are refused: the classic error report, by tuple.
    let classic = Tracer::start(&["-o", "json", "--force-portable", "-p", &p]);
    json.wait_stderr("accepting processes from", Duration::from_secs(5));
    let mut in_b = Peer::in_netns(&b, "full", cport, port);
    in_b.expect("connected");
    let mut refused = Peer::in_netns(&a, "refused", cport, port);
    assert_eq!(refused.line(), libc::ECONNREFUSED.to_string());
    let refused_pid = refused.pid();
    refused.finish();
    let mut in_a = Peer::in_netns(&a, "full", cport, port);
    in_a.expect("connected");
    for peer in [&mut in_a, &mut in_b] {
        peer.go();
        peer.expect("closed");
    }
    // Per namespace: listener, server, client; and A's refused client.
    json.wait_json(7, |v| v["type"] == "connection");
    let (pa, pb) = (u64::from(in_a.pid()), u64::from(in_b.pid()));
    let (status, out, err) = json.stop();
    let (tstatus, tout, terr) = text.stop();
    let (cstatus, cout, cerr) = classic.stop();
    assert!(cstatus.success(), "{cerr:?}");
    in_a.finish();
    in_b.finish();
    assert!(status.success() && tstatus.success(), "{err:?}\n{terr:?}");
    // Kernels before 5.15 have no error reports at all (tracer says so): the refused
    // connect then has no error, in either namespace.
    let reports = error_reports(&err);
    if reports {
        assert!(
            err.iter()
                .any(|l| l.contains("inet_sk_error_report (raw tracepoint")),
            "error reports with their socket on this kernel: {err:?}"
        );
    }
    let records = parse(&out);
    let tuple = |v: &Value, role: &str| {
        let (l, r) = if role == "client" {
            (cport, port)
        } else {
            (port, cport)
        };
        v["sport"] == u64::from(l) && v["dport"] == u64::from(r)
    };
    for (ns, owner, transitions) in [(ia, pa, 14), (ib, pb, 12)] {
        let mine: Vec<&Value> = records
            .iter()
            .filter(|v| v["netns"].as_u64() == Some(ns))
            .collect();
        assert_eq!(
            mine.iter()
                .filter(|v| v["type"] == "transition" && v["source"] == "tracepoint")
                .count(),
            transitions,
            "namespace {ns}: {mine:#?}"
        );
        let conns: Vec<&&Value> = mine.iter().filter(|v| v["type"] == "connection").collect();
        let full: Vec<&&&Value> = conns
            .iter()
            .filter(|c| c["owner"]["pid"].as_u64() == Some(owner))
            .collect();
        assert_eq!(
            full.len(),
            3,
            "listener, server, client of {owner} in {ns}: {conns:#?}"
        );
        let client = full
            .iter()
            .find(|c| c["role"] == "client")
            .expect("the client");
        assert!(tuple(client, "client"), "{client:#}");
        assert_eq!(states(client), timeline(&CLIENT_OPEN, &ACTIVE_CLOSE));
        assert_eq!(
            (client["close"].as_str(), &client["error"]),
            (Some("active"), &Value::Null),
            "{client:#}"
        );
        assert_eq!(client["time_wait"]["confirmed"], true, "{client:#}");
        let server = full
            .iter()
            .find(|c| c["role"] == "server")
            .expect("the server");
        assert!(tuple(server, "server"), "{server:#}");
        assert_eq!(states(server), timeline(&SERVER_OPEN, &PASSIVE_CLOSE));
        assert_eq!(server["error"], Value::Null, "{server:#}");
        // The timewait socket in this namespace only.
        let tw: Vec<&&Value> = mine
            .iter()
            .filter(|v| v["source"] == "sock_diag" && v["new"] == "TIME_WAIT")
            .collect();
        assert_eq!(tw.len(), 1, "{tw:#?}");
        assert!(tuple(tw[0], "client"));
    }
    // A's refused connect, with A's error, and no error anywhere in B.
    let refused: Vec<&Value> = of_type(&records, "connection")
        .into_iter()
        .filter(|c| c["owner"]["pid"].as_u64() == Some(refused_pid.into()))
        .collect();
    assert_eq!(refused.len(), 1, "{records:#?}");
    let r = refused[0];
    assert_eq!(r["netns"].as_u64(), Some(ia), "{r:#}");
    assert!(tuple(r, "client"), "{r:#}");
    assert_eq!(states(r), ["CLOSE", "SYN_SENT", "CLOSE"]);
    assert_eq!(
        (r["close"].as_str(), r["error"].as_str()),
        (Some("refused"), reports.then_some("ECONNREFUSED")),
        "{r:#}"
    );
    let errors: Vec<&Value> = records
        .iter()
        .filter(|v| v["type"] == "event" && v["kind"] == "error")
        .collect();
    assert_eq!(errors.len(), usize::from(reports), "{errors:#?}");
    if reports {
        assert_eq!(
            (errors[0]["sock"].as_str(), errors[0]["netns"].as_u64()),
            (r["sock"].as_str(), Some(ia))
        );
    }

    // The classic tracepoint's report says the tuple and no namespace: two namespaces had
    // that tuple at that moment, so it is attributed to neither (said at start-up), and the
    // rest is the same.
    assert!(
        !reports
            || cerr.iter().any(|l| l.starts_with(
                "tracer: warning: error reports from the classic tracepoint (the raw one was refused: --force-portable)"
            )),
        "{cerr:?}"
    );
    let classic = parse(&cout);
    let r = of_type(&classic, "connection")
        .into_iter()
        .find(|c| c["owner"]["pid"].as_u64() == Some(refused_pid.into()))
        .expect("the refused client");
    assert_eq!(
        (r["netns"].as_u64(), r["close"].as_str(), &r["error"]),
        (Some(ia), Some("refused"), &Value::Null),
        "{r:#}"
    );
    assert_eq!(
        of_type(&classic, "connection")
            .iter()
            .filter(|c| c["error"] != Value::Null)
            .count(),
        0
    );
    assert_eq!(of_type(&classic, "connection").len(), 7);

    // Text: every row of these sockets names its namespace at its end (the tracer runs in
    // the host's), with the same counts as JSON.
    let ends_with_ns = |l: &String, ns: u64| l.ends_with(&format!("  netns {ns}"));
    let rows = |ns: u64| -> Vec<&String> {
        tout.iter()
            .filter(|l| ends_with_ns(l, ns) && l.contains(" -> ") && !l.contains("(sock_diag)"))
            .collect()
    };
    assert_eq!(rows(ia).len(), 14, "{tout:#?}");
    assert_eq!(rows(ib).len(), 12, "{tout:#?}");
    let text_errors: Vec<&String> = tout.iter().filter(|l| l.contains("! error")).collect();
    assert_eq!(text_errors.len(), usize::from(reports), "{tout:#?}");
    if reports {
        assert!(
            text_errors[0].contains("! error ECONNREFUSED") && ends_with_ns(text_errors[0], ia),
            "{}",
            text_errors[0]
        );
    }
    // Every row of a socket of ours names its namespace (a RST sent without a socket has
    // none to name: its SOCK column is `-`).
    let p_col = format!(":{port} ");
    for l in tout
        .iter()
        .filter(|l| l.contains(&p_col) && l.split_whitespace().nth(1) != Some("-"))
    {
        assert!(ends_with_ns(l, ia) || ends_with_ns(l, ib), "{l}");
    }
}

/// The file descriptors of process `pid` that hold network namespace `inode`.
fn holds_netns(pid: u32, inode: u64) -> bool {
    let want = format!("net:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_str() == Some(want.as_str())))
}

/// The client record with local port `cport` in namespace `ns`, from a running tracer.
fn client_in(t: &Tracer, ns: u64, cport: u16) -> Value {
    t.wait_json(1, |v| {
        v["type"] == "connection"
            && v["role"] == "client"
            && v["netns"].as_u64() == Some(ns)
            && v["sport"] == u64::from(cport)
    });
    t.json()
        .into_iter()
        .find(|v| {
            v["type"] == "connection"
                && v["role"] == "client"
                && v["netns"].as_u64() == Some(ns)
                && v["sport"] == u64::from(cport)
        })
        .unwrap()
}

/// Namespaces made as Docker and containerd make them: `unshare -n`, held by the process in
/// it and by nothing in /run/netns. The tracer finds each through /proc/PID/ns/net and
/// confirms its TIME_WAIT there. When that process exits, its namespace is released at the
/// next scan (here the one a new namespace's first lookup starts), without a word on stderr.
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn namespaces_held_only_by_a_process_are_found_and_released_when_it_exits() {
    let (_hold_p, port) = reserved_port();
    let (_hold_c, cport) = reserved_port();
    let t = Tracer::start(&["-o", "json", "-p", &port.to_string()]);
    t.wait_stderr("accepting processes from", Duration::from_secs(5));
    let mut first = Peer::unshared("full", cport, port);
    first.expect("connected");
    let ns1 = first.netns();
    assert_ne!(ns1, ns_inode("/proc/self/ns/net"));
    assert!(
        std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .all(|e| ns_inode(&e.path().display().to_string()) != ns1),
        "no bind mount of the namespace"
    );
    first.go();
    first.expect("closed");
    let c = client_in(&t, ns1, cport);
    assert_eq!(c["time_wait"]["confirmed"], true, "{c:#}");
    assert_eq!(
        c["owner"]["pid"].as_u64(),
        Some(first.pid().into()),
        "{c:#}"
    );
    let tracer = t.child.id();
    assert!(holds_netns(tracer, ns1), "the registry holds the namespace");
    // The process exits: the namespace lives on only through the tracer's handle.
    first.finish();
    // A new container: its first lookup scans /proc, which releases the dead one.
    let mut second = Peer::unshared("full", cport, port);
    second.expect("connected");
    let ns2 = second.netns();
    assert_ne!(ns1, ns2);
    second.go();
    second.expect("closed");
    let c = client_in(&t, ns2, cport);
    assert_eq!(c["time_wait"]["confirmed"], true, "{c:#}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while holds_netns(tracer, ns1) {
        assert!(
            Instant::now() < deadline,
            "namespace {ns1} still held by the tracer"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert!(holds_netns(tracer, ns2));
    second.finish();
    let (status, _, err) = t.stop();
    assert!(status.success(), "{err:?}");
    // Not an error, nor worth a warning (but the kernel's own lack of error reports,
    // before 5.15).
    for l in err
        .iter()
        .filter(|l| !l.contains("context events unavailable: sock:inet_sk_error_report"))
    {
        assert!(
            !(l.starts_with("tracer: warning")
                || l.starts_with("Error")
                || ["stopped:", "cannot", "could not"]
                    .iter()
                    .any(|w| l.contains(w))),
            "{l}\n{err:#?}"
        );
    }
    let stop = StopCounts::from_stderr(&err);
    assert_eq!(stop.transitions, 24, "two connections of 12: {err:?}");
    let line = err
        .iter()
        .find(|l| l.starts_with("tracer: stopped"))
        .unwrap();
    assert!(
        line.contains("ring buffer full 0") && line.contains("unreadable 0"),
        "{line}"
    );
}

/// A CLOSE_WAIT leak older than the tracer, in a namespace only its process holds (no bind
/// mount): `tracer stuck` dumps that namespace too (found through /proc) and names the
/// process.
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn stuck_finds_a_leak_in_a_namespace_held_only_by_its_process() {
    let (_hold_p, port) = reserved_port();
    let (_hold_c, cport) = reserved_port();
    let mut leak = Peer::unshared("leak", cport, port);
    leak.expect("leaking");
    let ns = leak.netns();
    let t = Tracer::start(&["stuck", "1s", "-o", "json", "-p", &port.to_string()]);
    let p = u64::from(port);
    t.wait_json(1, |v| {
        v["type"] == "stuck" && v["sport"] == p && v["state"] == "CLOSE_WAIT"
    });
    let (status, out, err) = t.stop();
    let pid = leak.pid();
    leak.finish();
    assert!(status.success(), "{err:?}");
    let records = parse(&out);
    let s = records
        .iter()
        .find(|v| v["type"] == "stuck" && v["sport"] == p && v["state"] == "CLOSE_WAIT")
        .unwrap();
    assert_eq!(s["netns"].as_u64(), Some(ns), "{s:#}");
    assert_eq!(s["dport"].as_u64(), Some(cport.into()), "{s:#}");
    assert_eq!(s["seen_from"], "dump", "{s:#}");
    assert_eq!(s["owner"]["pid"].as_u64(), Some(pid.into()), "{s:#}");
}
