use crate::harness::*;

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn owner_of_a_socket_older_than_the_tracer_comes_from_proc() {
    // A connection established before the tracer starts: the server side's later
    // transitions all run in softirq, so its owner can only come from sock_diag + /proc.
    let (listener, addr) = bound(false);
    listener.listen(1).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let client = TcpStream::connect(addr).unwrap();
    let (server, _) = listener.accept().unwrap();
    let t = Tracer::start(&["-o", "json", "-p", &addr.port().to_string()]);
    client.shutdown(std::net::Shutdown::Write).unwrap(); // server: ESTABLISHED -> CLOSE_WAIT
    thread::sleep(Duration::from_millis(1500)); // one owner-lookup round
    let client = Socket::from(client);
    client.set_linger(Some(Duration::ZERO)).unwrap();
    drop(client); // RST: server CLOSE_WAIT -> CLOSE, in softirq
    t.wait_json(1, |v| {
        v["type"] == "connection" && v["states"][0] == "ESTABLISHED" && v["sport"] == addr.port()
    });
    let (status, out, _) = t.stop();
    assert!(status.success());
    drop(server);
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let server = records
        .iter()
        .find(|v| v["type"] == "connection" && v["sport"] == addr.port())
        .unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(states(server), ["ESTABLISHED", "CLOSE_WAIT", "CLOSE"]);
    assert_eq!(
        (server["role"].as_str(), server["incomplete"].as_bool()),
        (Some("unknown"), Some(true))
    );
    assert_eq!(server["close"], "reset_received");
    assert_eq!(
        server["owner"]["pid"].as_u64(),
        Some(std::process::id().into()),
        "{server}"
    );
    assert_eq!(server["owner"]["source"], "procfs");
    // Its first transition happened before the lookup: no owner yet, said as null.
    let first = records
        .iter()
        .find(|v| v["type"] == "transition" && v["sock"] == server["sock"])
        .unwrap();
    assert!(first["owner"].is_null(), "{first}");
}

/// Runs `filter` around: a listener (ours) on P, one connection from this process and one
/// from a `bash` child (`/dev/tcp`). Returns the connection records.
fn owner_filtered(filter: &[String]) -> (Vec<Value>, u16) {
    let (listener, addr) = bound(false);
    let port = addr.port().to_string();
    let mut args: Vec<&str> = vec!["-o", "json", "--no-timewait", "-p", &port];
    args.extend(filter.iter().map(String::as_str));
    let t = Tracer::start(&args);
    listener.listen(4).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let ours = TcpStream::connect(addr).unwrap();
    let (s1, _) = listener.accept().unwrap();
    let mut bash = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port}; read -t 5 -u 3 x; exec 3>&-"
        ))
        .spawn_locked()
        .unwrap();
    let (mut s2, _) = listener.accept().unwrap();
    // No child may hold these sockets while they close (see FORK): a child of another test
    // forked at that moment would be the closing task, and the owner filter would drop the
    // connection (seen once in CI: the listener and the last accepted socket missing).
    let no_fork = FORK
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    drop(ours);
    drop(s1);
    s2.write_all(b"x\n").unwrap();
    assert!(bash.wait().unwrap().success());
    let mut b = [0u8; 1];
    let _ = s2.read(&mut b);
    drop(s2);
    drop(listener);
    drop(no_fork);
    thread::sleep(Duration::from_millis(300));
    let (status, out, err) = t.stop();
    assert!(status.success(), "{err:?}");
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        of_type(&records, "connection")
            .into_iter()
            .cloned()
            .collect(),
        addr.port(),
    )
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn owner_filters_pid_comm_and_cgroup() {
    let me = std::process::id();
    let owners = |c: &[Value]| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = c
            .iter()
            .map(|c| {
                (
                    c["role"].as_str().unwrap().into(),
                    c["owner"]["comm"].as_str().unwrap_or("?").into(),
                )
            })
            .collect();
        v.sort();
        v
    };
    // --pid: everything this process owns (listener, its client, both accepted sockets), not
    // the bash client.
    let (c, _) = owner_filtered(&["--pid".into(), me.to_string()]);
    assert_eq!(c.len(), 4, "{c:#?}");
    assert!(c.iter().all(|c| c["owner"]["pid"] == me), "{c:#?}");
    assert!(!owners(&c).iter().any(|(_, comm)| comm == "bash"));
    // --comm bash: only the bash client.
    let (c, port) = owner_filtered(&["--comm".into(), "bash".into()]);
    assert_eq!(owners(&c), [("client".to_string(), "bash".to_string())]);
    assert_eq!(c[0]["dport"].as_u64(), Some(port.into()));
    // --cgroup: ours lets everything through; an empty cgroup nothing.
    let cg = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = cg
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap()
        .to_string();
    let (c, _) = owner_filtered(&["--cgroup".into(), path]);
    assert_eq!(c.len(), 5, "{c:#?}");
    // An empty cgroup, under the cgroup2 mount wherever it is (/sys/fs/cgroup/unified on a
    // hybrid host, where /sys/fs/cgroup is the v1 tmpfs): nothing. Removed even on failure.
    let empty = TestCgroups::new("empty");
    let (c, _) = owner_filtered(&["--cgroup".into(), empty.base.display().to_string()]);
    assert!(c.is_empty(), "{c:#?}");
}
