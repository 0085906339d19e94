use crate::harness::*;

/// Runs one connection and returns all JSON records and the client port.
fn traced_connection(
    v6: bool,
    first: FirstCloser,
    extra: &[&str],
) -> (Vec<Value>, u16, u16, Vec<String>) {
    let (listener, addr) = bound(v6);
    let port = addr.port();
    let port_s = port.to_string();
    let mut args = vec!["-o", "json", "--port", &port_s];
    args.extend_from_slice(extra);
    let t = Tracer::start(&args);
    if extra.contains(&"--force-portable") {
        t.wait_stderr(
            "inet_sock_set_state_portable program",
            Duration::from_secs(1),
        );
    }
    let cport = one_connection(listener, addr, first);
    t.wait_json(3, |v| v["type"] == "connection");
    let (status, out, err) = t.stop();
    assert!(status.success(), "tracer exit: {status:?}; stderr {err:?}");
    let records = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (records, port, cport, err)
}

fn assert_connection(v6: bool, first: FirstCloser, extra: &[&str]) {
    let (records, port, cport, err) = traced_connection(v6, first, extra);
    let loopback = if v6 { "::1" } else { "127.0.0.1" };
    let family = if v6 { "ipv6" } else { "ipv4" };

    let transitions: Vec<&Value> = records
        .iter()
        .filter(|v| v["type"] == "transition" && v["source"] == "tracepoint")
        .collect();
    assert_eq!(
        transitions.len(),
        12,
        "12 transitions for one connection + listener: {transitions:#?}"
    );
    for t in &transitions {
        assert_eq!(t["family"], family);
        assert!(
            t["sport"] == port || t["dport"] == port,
            "filter let through {t}"
        );
        assert!(t["sock"].as_str().unwrap().starts_with("0x"));
        assert!(t["time"].as_str().unwrap().ends_with('Z'));
        assert!(t["ts_ns"].as_u64().unwrap() > 0);
    }
    // The client's first transition has no local port yet; the kernel fills it later.
    let syn = transitions.iter().find(|t| t["new"] == "SYN_SENT").unwrap();
    assert_eq!(
        (
            syn["old"].as_str(),
            syn["sport"].as_u64(),
            syn["in_old_ns"].is_null()
        ),
        (Some("CLOSE"), Some(0), true)
    );

    let conns = conns(&records);
    assert_eq!(conns.len(), 3, "client, server and listener: {conns:#?}");
    let by_role = |role: &str| {
        *conns
            .iter()
            .find(|c| c["role"] == role)
            .unwrap_or_else(|| panic!("no {role}: {conns:#?}"))
    };
    let (client, server, listener) = (by_role("client"), by_role("server"), by_role("listener"));

    let (c_tail, s_tail) = match first {
        FirstCloser::Client => (ACTIVE_CLOSE, PASSIVE_CLOSE),
        FirstCloser::Server => (PASSIVE_CLOSE, ACTIVE_CLOSE),
    };
    assert_eq!(states(client), timeline(&CLIENT_OPEN, &c_tail));
    assert_eq!(states(server), timeline(&SERVER_OPEN, &s_tail));
    assert_eq!(states(listener), ["CLOSE", "LISTEN", "CLOSE"]);

    // The 4-tuple, filled in as it became known.
    assert_eq!(
        (client["sport"].as_u64(), client["dport"].as_u64()),
        (Some(cport.into()), Some(port.into()))
    );
    assert_eq!(
        (server["sport"].as_u64(), server["dport"].as_u64()),
        (Some(port.into()), Some(cport.into()))
    );
    for c in [client, server] {
        assert_eq!(
            (c["saddr"].as_str(), c["daddr"].as_str()),
            (Some(loopback), Some(loopback))
        );
        assert_eq!(c["family"], family);
        assert_eq!(c["incomplete"], false);
        let d = c["durations_ns"].as_array().unwrap();
        assert_eq!(d.len(), 5);
        assert!(d[0].is_null(), "time in the initial state is unknown");
        let sum: u64 = d[1..].iter().map(|x| x.as_u64().unwrap()).sum();
        assert_eq!(sum, c["lifetime_ns"].as_u64().unwrap());
        assert_eq!(
            c["end_ns"].as_u64().unwrap() - c["start_ns"].as_u64().unwrap(),
            sum
        );
    }
    assert!(
        err.iter()
            .any(|l| l.contains("stopped (SIGINT): 12 transitions, ")
                && l.contains(" 3 connections closed, 0 still open")
                && l.contains("lost 0 ")),
        "{err:?}"
    );

    // Who: the owner is this test process, learned from its own connect/listen/close, and
    // carried to the softirq transitions; accepted sockets inherit the listener's first.
    let me = std::process::id();
    for c in [client, server, listener] {
        assert_eq!(c["owner"]["pid"].as_u64(), Some(me.into()), "{c}");
        assert_eq!(c["owner"]["source"], "event", "{c}");
    }
    let accept = transitions
        .iter()
        .find(|t| t["old"] == "LISTEN" && t["new"] == "SYN_RECV")
        .unwrap();
    assert_eq!(
        (
            accept["owner"]["pid"].as_u64(),
            accept["owner"]["source"].as_str()
        ),
        (Some(me.into()), Some("inherited"))
    );
    for t in &transitions {
        assert_eq!(
            t["owner"]["pid"].as_u64(),
            Some(me.into()),
            "every transition has its owner: {t}"
        );
    }

    // How it ended.
    let (c_close, s_close) = match first {
        FirstCloser::Client => ("active", "passive"),
        FirstCloser::Server => ("passive", "active"),
    };
    assert_eq!(
        (client["close"].as_str(), server["close"].as_str()),
        (Some(c_close), Some(s_close))
    );
    assert_eq!(listener["close"], "listener_closed");

    // TIME_WAIT, which the tracepoint never shows, confirmed by sock_diag for the active closer.
    let active = if first == FirstCloser::Client {
        client
    } else {
        server
    };
    assert_eq!(active["time_wait"]["confirmed"], true, "{active}");
    let expires = active["time_wait"]["expires_ns"].as_u64().unwrap();
    let left = expires - active["end_ns"].as_u64().unwrap();
    assert!(
        (50_000_000_000..=61_000_000_000).contains(&left),
        "TIME_WAIT expires in {left} ns"
    );
    let tw: Vec<&Value> = records
        .iter()
        .filter(|v| v["source"] == "sock_diag")
        .collect();
    assert_eq!(tw.len(), 1, "{tw:#?}");
    assert_eq!(
        (tw[0]["old"].as_str(), tw[0]["new"].as_str()),
        (Some("FIN_WAIT2"), Some("TIME_WAIT"))
    );
    assert_eq!(tw[0]["sock"], active["sock"]);
    let passive = if first == FirstCloser::Client {
        server
    } else {
        client
    };
    assert!(passive["time_wait"].is_null(), "{passive}");
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn ipv4_client_closes_first() {
    assert_connection(false, FirstCloser::Client, &[]);
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn ipv4_server_closes_first() {
    assert_connection(false, FirstCloser::Server, &[]);
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn ipv6_client_closes_first() {
    assert_connection(true, FirstCloser::Client, &[]);
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn ipv6_server_closes_first() {
    assert_connection(true, FirstCloser::Server, &[]);
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn portable_program_gives_the_same_timelines() {
    // The fallback for kernels whose record layout differs, loaded and verified for real here.
    assert_connection(false, FirstCloser::Client, &["--force-portable"]);
    assert_connection(true, FirstCloser::Server, &["--force-portable"]);
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn listener_open_and_close_alone() {
    let (listener, addr) = bound(false);
    let t = Tracer::start(&["-o", "json", "-p", &addr.port().to_string()]);
    listener.listen(1).unwrap();
    drop(listener);
    t.wait_json(1, |v| v["type"] == "connection");
    let (status, out, _) = t.stop();
    assert!(status.success());
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let pairs: Vec<(String, String)> = records
        .iter()
        .filter(|v| v["type"] == "transition" && v["source"] == "tracepoint")
        .map(|v| {
            (
                v["old"].as_str().unwrap().into(),
                v["new"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("CLOSE".into(), "LISTEN".into()),
            ("LISTEN".into(), "CLOSE".into())
        ]
    );
    let c = conns(&records);
    assert_eq!((c.len(), c[0]["role"].as_str()), (1, Some("listener")));
    assert_eq!(c[0]["sport"].as_u64(), Some(addr.port().into()));
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn text_output_shows_transitions_and_a_timeline() {
    let (listener, addr) = bound(false);
    let port = addr.port();
    let t = Tracer::start(&["--port", &port.to_string(), "--color", "never"]);
    let cport = one_connection(listener, addr, FirstCloser::Client);
    let start = Instant::now();
    while !t
        .stdout
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains(" listener listening on "))
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:#?}",
            t.stdout.lock().unwrap()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let (status, out, _) = t.stop();
    assert!(status.success());
    assert!(out[0].starts_with("TIME "), "header first: {out:?}");
    let text = out.join("\n");
    assert!(!text.contains('\x1b'), "--color never");
    for needle in [
        "CLOSE -> LISTEN".to_string(),
        "CLOSE -> SYN_SENT".into(),
        "FIN_WAIT2 -> CLOSE".into(),
        "LAST_ACK -> CLOSE".into(),
        format!("client 127.0.0.1:{cport} -> 127.0.0.1:{port}"),
        format!("server 127.0.0.1:{port} -> 127.0.0.1:{cport}"),
    ] {
        assert!(text.contains(&needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn destroy_events_carry_the_sockets_tuple_with_both_programs() {
    // tcp_destroy_sock is read by direct loads (2-byte-aligned addresses put together from
    // u16 words) where the layout is the known one, by bpf_probe_read_kernel otherwise
    // (`--force-portable`): both must give every socket's own tuple.
    for extra in [&[][..], &["--force-portable"][..]] {
        for v6 in [false, true] {
            let (listener, addr) = bound(v6);
            let port = addr.port().to_string();
            let mut args = vec!["-o", "json", "--no-timewait", "-p", &port];
            args.extend_from_slice(extra);
            let t = Tracer::start(&args);
            let cport = one_connection(listener, addr, FirstCloser::Client);
            t.wait_json(3, |v| v["type"] == "event" && v["kind"] == "destroy");
            let (status, out, err) = t.stop();
            assert!(status.success(), "{err:?}");
            let ip = addr.ip().to_string();
            let destroys: Vec<(String, u64, String, u64)> = out
                .iter()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .filter(|v| v["type"] == "event" && v["kind"] == "destroy")
                .map(|v| {
                    (
                        v["saddr"].as_str().unwrap().to_string(),
                        v["sport"].as_u64().unwrap(),
                        v["daddr"].as_str().unwrap().to_string(),
                        v["dport"].as_u64().unwrap(),
                    )
                })
                .collect();
            let (p, c) = (u64::from(addr.port()), u64::from(cport));
            let any = if v6 { "::" } else { "0.0.0.0" }.to_string();
            for want in [
                (ip.clone(), c, ip.clone(), p),
                (ip.clone(), p, ip.clone(), c),
                (ip.clone(), p, any, 0),
            ] {
                assert!(
                    destroys.contains(&want),
                    "{extra:?} v6={v6}: no destroy event {want:?} in {destroys:?}"
                );
            }
        }
    }
}
