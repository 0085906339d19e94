use crate::harness::*;

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn family_filter_is_applied_in_the_kernel() {
    // -6 with an IPv4 connection on the filtered port: nothing may come through.
    let (listener, addr) = bound(false);
    let kernel = TracefsCount::new(addr.port());
    let t = Tracer::start(&["-o", "json", "-6", "-p", &addr.port().to_string()]);
    one_connection(listener, addr, FirstCloser::Client);
    thread::sleep(Duration::from_millis(300));
    let (status, out, err) = t.stop();
    assert!(status.success());
    assert!(
        out.is_empty(),
        "IPv4 events passed an IPv6-only filter: {out:?}"
    );
    let counts = StopCounts::from_stderr(&err);
    assert_eq!(counts.transitions, 0, "{err:?}");
    assert_eq!(counts.context_events, 0, "{err:?}");
    // The kernel did see the connection's transitions (tracefs) and dropped them itself:
    // each is counted as filtered out there (with whatever else the host did meanwhile), or
    // as a recursion miss where the kernel skipped the program.
    let kernel = kernel.count() as u64;
    assert!(kernel >= 10, "tracefs saw only {kernel} transitions");
    assert!(
        counts.filtered_out + counts.lost >= kernel,
        "{counts:?} vs {kernel}"
    );
    assert_eq!(counts.submitted(), 0, "{counts:?}");
}

/// Two listeners on two loopback addresses; returns the records a tracer with `filter` saw.
fn filtered(filter: &[&str]) -> (Vec<Value>, SocketAddr, SocketAddr, Vec<String>) {
    let (records, a1, a2, err, _) = filtered_counted(filter);
    (records, a1, a2, err)
}

/// [`filtered`], and the transitions the kernel emitted on each listener's port (tracefs:
/// ground truth, whatever tracer did).
fn filtered_counted(
    filter: &[&str],
) -> (Vec<Value>, SocketAddr, SocketAddr, Vec<String>, [usize; 2]) {
    let l1 = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    l1.bind(&SocketAddr::from((Ipv4Addr::new(127, 0, 0, 1), 0)).into())
        .unwrap();
    let a1 = l1.local_addr().unwrap().as_socket().unwrap();
    let l2 = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    l2.bind(&SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), 0)).into())
        .unwrap();
    let a2 = l2.local_addr().unwrap().as_socket().unwrap();
    let (p1, p2) = (a1.port().to_string(), a2.port().to_string());
    // The test's own ports always: other traffic on the host must not count.
    let mut args = vec!["-o", "json", "--no-events", "--no-timewait"];
    args.extend_from_slice(filter);
    let mut owned = Vec::new();
    for a in &args {
        owned.push(a.replace("P1", &p1).replace("P2", &p2));
    }
    let argv: Vec<&str> = owned.iter().map(String::as_str).collect();
    let (k1, k2) = (TracefsCount::new(a1.port()), TracefsCount::new(a2.port()));
    let t = Tracer::start(&argv);
    one_connection(l1, a1, FirstCloser::Client);
    one_connection(l2, a2, FirstCloser::Client);
    thread::sleep(Duration::from_millis(300));
    let (status, out, err) = t.stop();
    assert!(status.success(), "{err:?}");
    let kernel = [k1.count(), k2.count()];
    (
        out.iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        a1,
        a2,
        err,
        kernel,
    )
}

/// (role, local port) of every connection record.
fn roles(records: &[Value]) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = of_type(records, "connection")
        .iter()
        .map(|c| {
            (
                c["role"].as_str().unwrap().to_string(),
                c["sport"].as_u64().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn filters_let_through_exactly_the_expected_connections() {
    // --addr: only the connection on 127.0.0.2 (both of its ends, and its listener).
    let (r, _, a2, err, [k1, k2]) =
        filtered_counted(&["-p", "P1", "-p", "P2", "--addr", "127.0.0.2/32"]);
    let got = roles(&r);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        of_type(&r, "connection")
            .iter()
            .all(|c| c["saddr"] == "127.0.0.2" || c["daddr"] == "127.0.0.2"),
        "{r:#?}"
    );
    assert!(got.contains(&("listener".into(), a2.port().into())));
    // Filtered in the kernel, by the numbers. Each connection is 12 transitions (the
    // listener's 2, each side's 5), as the kernel itself counted them.
    assert_eq!([k1, k2], [12, 12], "{err:?}");
    let c = StopCounts::from_stderr(&err);
    assert_eq!(c.lost, 0, "{c:?}");
    // What arrived from the kernel: exactly the 127.0.0.2 connection's transitions (the port
    // and address filters run again in user space, but only drop what the kernel let by).
    assert_eq!(c.transitions, k2 as u64, "{c:?}");
    assert_eq!(c.context_events, 0, "--no-events: {c:?}");
    // The kernel's counters: it submitted those, and no accept record (this process made
    // the listener it accepted from: the record would name the owner user space already
    // has); it saw at least both connections' transitions and filtered out at least the
    // 127.0.0.1 one's.
    assert!(accept_attached(&err), "{err:?}");
    assert_eq!(c.submitted(), c.transitions, "{c:?}");
    assert!(c.seen >= (k1 + k2) as u64, "{c:?}");
    assert!(c.filtered_out >= k1 as u64, "{c:?}");

    // --lport: the listener and the server side of P2 only (their local port is P2).
    let (r, _, a2, _) = filtered(&["--lport", "P2"]);
    assert_eq!(
        roles(&r),
        [
            ("listener".to_string(), u64::from(a2.port())),
            ("server".to_string(), a2.port().into())
        ]
    );

    // --rport: the client side of P1 only.
    let (r, a1, _, _) = filtered(&["--rport", "P1"]);
    let c = of_type(&r, "connection");
    assert_eq!(c.len(), 1, "{c:#?}");
    assert_eq!(
        (c[0]["role"].as_str(), c[0]["dport"].as_u64()),
        (Some("client"), Some(a1.port().into()))
    );

    // --state: only connections that went through CLOSE_WAIT (the servers: clients closed first).
    let (r, a1, a2, _) = filtered(&["-p", "P1", "-p", "P2", "--state", "CLOSE_WAIT"]);
    let mut want = vec![
        ("server".to_string(), u64::from(a1.port())),
        ("server".to_string(), a2.port().into()),
    ];
    want.sort();
    assert_eq!(roles(&r), want);
    assert!(
        of_type(&r, "transition")
            .iter()
            .all(|t| t["sport"] == a1.port() || t["sport"] == a2.port())
    );
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn invalid_filter_values_exit_2_before_loading_anything() {
    for args in [
        ["--addr", "10.0.0.0/99"],
        ["--state", "HALF_OPEN"],
        ["--rport", "70000"],
        ["--stuck", "never"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
            .args(args)
            .output_locked()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(args[1].split('/').next().unwrap()), "{err}");
        assert!(!err.contains("attached"), "{err}");
    }
}
