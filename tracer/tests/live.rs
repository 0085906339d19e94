//! Privileged integration tests: the real tracer binary, the real eBPF program, the real
//! kernel, real sockets on loopback. They assert exact per-socket state sequences.
//!
//! `#[ignore]`d for a plain `cargo test` (they need root); `cargo xtask test` runs them. Each
//! test filters on its own ports, so other traffic on the host cannot disturb it, and they
//! can run in parallel.
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use socket2::{Domain, Socket, Type};

/// Child processes hold a copy of every open file descriptor between their fork and their
/// exec. A socket this process closes in that window is really closed (its FIN sent, its
/// `close()` transition run) by the child at its exec: the kernel then reports the child as
/// the task, and an owner assertion fails. Tests run in parallel, so spawning takes this
/// lock exclusively and closing a connection whose owner is checked takes it shared.
static FORK: std::sync::RwLock<()> = std::sync::RwLock::new(());

trait Locked {
    fn spawn_locked(&mut self) -> std::io::Result<Child>;
    fn output_locked(&mut self) -> std::io::Result<std::process::Output>;
    fn status_locked(&mut self) -> std::io::Result<std::process::ExitStatus>;
}

impl Locked for Command {
    fn spawn_locked(&mut self) -> std::io::Result<Child> {
        let _g = FORK
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.spawn()
    }
    fn output_locked(&mut self) -> std::io::Result<std::process::Output> {
        // As `output()` does: nothing in, both outputs collected.
        self.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.spawn_locked()?.wait_with_output()
    }
    fn status_locked(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.spawn_locked()?.wait()
    }
}

const NEEDS_ROOT: &str = "needs root and a BPF-capable kernel: run `cargo xtask test`";

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "{NEEDS_ROOT}");
}

/// A running tracer whose stdout and stderr are collected line by line.
struct Tracer {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(r: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    lines
}

impl Tracer {
    /// Starts the tracer and waits until it says it is attached.
    fn start(args: &[&str]) -> Self {
        require_root();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tracer"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn_locked()
            .expect("spawn tracer");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let t = Self {
            child,
            stdout,
            stderr,
        };
        t.wait_stderr(
            "attached to sock:inet_sock_set_state",
            Duration::from_secs(30),
        );
        t
    }

    fn wait_stderr(&self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while !self
            .stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
        {
            assert!(
                start.elapsed() < timeout,
                "tracer did not print {needle:?} within {timeout:?}; stderr: {:?}",
                self.stderr.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `n` JSON records satisfy `pred`.
    fn wait_json(&self, n: usize, pred: impl Fn(&Value) -> bool) {
        let start = Instant::now();
        loop {
            let count = self.json().iter().filter(|v| pred(v)).count();
            if count >= n {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "only {count} of {n} expected records after 10s; stdout: {:#?}",
                self.stdout.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn json(&self) -> Vec<Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// SIGINT, then the exit status and stderr.
    fn stop(mut self) -> (std::process::ExitStatus, Vec<String>, Vec<String>) {
        // SAFETY: kill with a valid pid of our own child and a valid signal number.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = wait_timeout(&mut self.child, Duration::from_secs(10));
        thread::sleep(Duration::from_millis(50)); // let the reader threads see EOF
        let out = self.stdout.lock().unwrap().clone();
        let err = self.stderr.lock().unwrap().clone();
        (status, out, err)
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(
            start.elapsed() < timeout,
            "tracer did not exit within {timeout:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A listening socket bound (not yet listening) to an ephemeral port, so the tracer can be
/// started with that port before `listen()` emits CLOSE → LISTEN.
fn bound(v6: bool) -> (Socket, SocketAddr) {
    let (domain, addr): (Domain, SocketAddr) = if v6 {
        (Domain::IPV6, (Ipv6Addr::LOCALHOST, 0).into())
    } else {
        (Domain::IPV4, (Ipv4Addr::LOCALHOST, 0).into())
    };
    let s = Socket::new(domain, Type::STREAM, None).unwrap();
    s.bind(&addr.into()).unwrap();
    let local = s.local_addr().unwrap().as_socket().unwrap();
    (s, local)
}

#[derive(Clone, Copy, PartialEq)]
enum FirstCloser {
    Client,
    Server,
}

/// One complete connection: listen, connect, accept, a byte each way, close in the given
/// order (each side waits for the other's FIN when it closes second), close the listener.
/// Returns the client's local port.
fn one_connection(listener: Socket, addr: SocketAddr, first: FirstCloser) -> u16 {
    listener.listen(16).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let mut client = TcpStream::connect(addr).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let cport = client.local_addr().unwrap().port();
    client.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    server.read_exact(&mut b).unwrap();
    server.write_all(b"y").unwrap();
    client.read_exact(&mut b).unwrap();
    let (first_s, mut second_s) = match first {
        FirstCloser::Client => (client, server),
        FirstCloser::Server => (server, client),
    };
    // No child may hold these sockets while they close (see FORK).
    let _no_fork = FORK
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // A plain close(): shutdown() first would add the kernel's FIN_WAIT1 → FIN_WAIT1.
    drop(first_s);
    // The second closer sees EOF (the FIN), then closes.
    assert_eq!(second_s.read(&mut b).unwrap(), 0);
    drop(second_s);
    drop(listener);
    cport
}

/// How a client's and an accepted socket's timelines begin, and how the side that closes
/// first (active) and second (passive) end.
const CLIENT_OPEN: [&str; 2] = ["CLOSE", "SYN_SENT"];
const SERVER_OPEN: [&str; 2] = ["LISTEN", "SYN_RECV"];
const ACTIVE_CLOSE: [&str; 4] = ["ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "CLOSE"];
const PASSIVE_CLOSE: [&str; 4] = ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSE"];

fn timeline(head: &[&str], tail: &[&str]) -> Vec<String> {
    head.iter().chain(tail).map(|s| s.to_string()).collect()
}

fn states(v: &Value) -> Vec<String> {
    v["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn conns(records: &[Value]) -> Vec<&Value> {
    records
        .iter()
        .filter(|v| v["type"] == "connection")
        .collect()
}

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
fn family_filter_is_applied_in_the_kernel() {
    // -6 with an IPv4 connection on the filtered port: nothing may come through.
    let (listener, addr) = bound(false);
    let t = Tracer::start(&["-o", "json", "-6", "-p", &addr.port().to_string()]);
    one_connection(listener, addr, FirstCloser::Client);
    thread::sleep(Duration::from_millis(300));
    let (status, out, err) = t.stop();
    assert!(status.success());
    assert!(
        out.is_empty(),
        "IPv4 events passed an IPv6-only filter: {out:?}"
    );
    assert!(err.iter().any(|l| l.contains("0 transitions")), "{err:?}");
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
fn stops_after_duration_and_when_stdout_closes() {
    // --duration: exits 0 on its own.
    let mut t = Tracer::start(&["-o", "json", "-p", "9", "--duration", "1"]);
    let st = wait_timeout(&mut t.child, Duration::from_secs(10));
    assert!(st.success(), "{st:?}");
    t.wait_stderr("stopped (duration reached)", Duration::from_secs(2));

    // A closed stdout (`tracer | head -1`): exits 0, quietly, once it next writes.
    let (listener, addr) = bound(false);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["-o", "json", "-p", &addr.port().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_locked()
        .unwrap();
    let stderr = collect(child.stderr.take().unwrap());
    let start = Instant::now();
    while !stderr
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("attached"))
    {
        assert!(start.elapsed() < Duration::from_secs(30));
        thread::sleep(Duration::from_millis(20));
    }
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    listener.listen(1).unwrap();
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("\"new\":\"LISTEN\""), "{first}");
    drop(stdout); // like `head -1` exiting
    drop(listener); // one more event to write: LISTEN -> CLOSE
    let st = wait_timeout(&mut child, Duration::from_secs(10));
    assert!(st.success(), "{st:?}");
    thread::sleep(Duration::from_millis(50));
    let err = stderr.lock().unwrap().join("\n");
    assert!(err.contains("stopped (stdout closed)"), "{err}");
    assert!(!err.contains("tracer: error"), "{err}");
}

/// A listener port with nothing listening: connect() is refused with a RST.
/// Whether the kernel has sock:inet_sk_error_report (5.15+), which carries a socket's error
/// (`ECONNREFUSED`, `ECONNRESET`). Without it (5.10) tracer must say so on stderr; the
/// connections then have no `error`.
fn error_reports(stderr: &[String]) -> bool {
    let there =
        std::path::Path::new("/sys/kernel/tracing/events/sock/inet_sk_error_report").exists();
    if !there {
        assert!(
            stderr
                .iter()
                .any(|l| l.contains("context events unavailable: sock:inet_sk_error_report")),
            "{stderr:?}"
        );
    }
    there
}

fn refused(v6: bool) {
    let (s, addr) = bound(v6);
    drop(s); // free the port again: nobody listens there
    let t = Tracer::start(&["-o", "json", "-p", &addr.port().to_string()]);
    let err = TcpStream::connect(addr).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    t.wait_json(1, |v| v["type"] == "connection");
    let (status, out, stderr) = t.stop();
    assert!(status.success());
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let c = conns(&records);
    assert_eq!(c.len(), 1, "{c:#?}");
    let c = c[0];
    assert_eq!(states(c), ["CLOSE", "SYN_SENT", "CLOSE"]);
    assert_eq!(
        (c["role"].as_str(), c["close"].as_str()),
        (Some("client"), Some("refused"))
    );
    let errors = error_reports(&stderr);
    if errors {
        assert_eq!(c["error"], "ECONNREFUSED");
    } else {
        assert!(c["error"].is_null(), "{c}");
    }
    assert_eq!(c["resets_received"], 1);
    let kinds: Vec<&str> = c["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"receive_reset") && kinds.contains(&"error") == errors,
        "{kinds:?}"
    );
    assert!(c["time_wait"].is_null());
    // The RST the kernel answered with has no socket: still shown, as an event, on kernels
    // whose tcp_send_reset fires without a socket (6.10+, where it carries sockaddrs).
    let socketless_resets =
        std::fs::read_to_string("/sys/kernel/tracing/events/tcp/tcp_send_reset/format")
            .is_ok_and(|f| f.contains("saddr[28]"));
    if socketless_resets {
        assert!(
            records
                .iter()
                .any(|v| v["type"] == "event" && v["kind"] == "send_reset" && v["sock"].is_null()),
            "{records:#?}"
        );
    }
    // Live event records too, with the owner of the socket.
    let rr = records
        .iter()
        .find(|v| v["type"] == "event" && v["kind"] == "receive_reset")
        .unwrap();
    assert_eq!(rr["owner"]["pid"].as_u64(), Some(std::process::id().into()));
    assert_eq!(rr["sock"], c["sock"]);
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn ipv4_refused() {
    refused(false);
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn ipv6_refused() {
    refused(true);
}

/// The client aborts with SO_LINGER 0: it sends a RST, the server receives it.
fn reset(v6: bool) {
    let (listener, addr) = bound(v6);
    let t = Tracer::start(&["-o", "json", "-p", &addr.port().to_string()]);
    listener.listen(1).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let client = TcpStream::connect(addr).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let client = Socket::from(client);
    client.set_linger(Some(Duration::ZERO)).unwrap();
    drop(client);
    let mut b = [0u8; 1];
    let e = server.read(&mut b).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
    drop(server);
    drop(listener);
    t.wait_json(3, |v| v["type"] == "connection");
    let (status, out, stderr) = t.stop();
    assert!(status.success());
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let c = conns(&records);
    let by_role = |role: &str| *c.iter().find(|c| c["role"] == role).unwrap();
    let (client, server) = (by_role("client"), by_role("server"));
    assert_eq!(
        states(client),
        ["CLOSE", "SYN_SENT", "ESTABLISHED", "CLOSE"]
    );
    assert_eq!(client["close"], "reset_sent", "{client}");
    assert_eq!(client["resets_sent"], 1);
    assert_eq!(
        states(server),
        ["LISTEN", "SYN_RECV", "ESTABLISHED", "CLOSE"]
    );
    assert_eq!(server["close"], "reset_received", "{server}");
    if error_reports(&stderr) {
        assert_eq!(server["error"], "ECONNRESET", "{records:#?}");
    } else {
        assert!(server["error"].is_null(), "{server}");
    }
    assert!(client["time_wait"].is_null() && server["time_wait"].is_null());
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn ipv4_reset() {
    reset(false);
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn ipv6_reset() {
    reset(true);
}

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

/// Records with `"type": ty`.
fn of_type<'a>(records: &'a [Value], ty: &str) -> Vec<&'a Value> {
    records.iter().filter(|v| v["type"] == ty).collect()
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn a_close_wait_leak_is_reported_by_pid_within_age_plus_one_second() {
    let (listener, addr) = bound(false);
    let t = Tracer::start(&["stuck", "2s", "-o", "json", "-p", &addr.port().to_string()]);
    listener.listen(1).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let client = TcpStream::connect(addr).unwrap();
    let (server, _) = listener.accept().unwrap();
    drop(client); // the peer closes; our "application" never does: CLOSE_WAIT
    let closed = Instant::now();
    // Other sockets on the host may share the port number (an orphan left by another test):
    // this one is the server side of our connection.
    let port = u64::from(addr.port());
    let ours = move |v: &Value| v["sport"] == port && v["role"] == "server";
    t.wait_json(1, |v| v["type"] == "stuck" && ours(v));
    let waited = closed.elapsed();
    assert!(
        waited <= Duration::from_secs(3),
        "reported after {waited:?}, AGE is 2s"
    );
    drop(server); // it finally moves: CLOSE_WAIT -> LAST_ACK
    t.wait_json(1, |v| v["type"] == "unstuck" && v["sport"] == port);
    let (status, out, err) = t.stop();
    assert!(status.success(), "{err:?}");
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        of_type(&records, "transition").is_empty(),
        "stuck mode is quiet: {records:#?}"
    );
    let stuck: Vec<&Value> = of_type(&records, "stuck")
        .into_iter()
        .filter(|v| ours(v))
        .collect();
    assert_eq!(stuck.len(), 1, "{stuck:#?}");
    let s = stuck[0];
    assert_eq!(
        (
            s["state"].as_str(),
            s["report"].as_u64(),
            s["age_at_least"].as_bool()
        ),
        (Some("CLOSE_WAIT"), Some(1), Some(false))
    );
    assert!(s["age_ns"].as_u64().unwrap() >= 2_000_000_000);
    assert_eq!(s["owner"]["pid"].as_u64(), Some(std::process::id().into()));
    assert_eq!(
        (s["sport"].as_u64(), s["role"].as_str()),
        (Some(addr.port().into()), Some("server"))
    );
    assert_eq!(
        s["states"],
        serde_json::json!(["LISTEN", "SYN_RECV", "ESTABLISHED", "CLOSE_WAIT"])
    );
    let u = *of_type(&records, "unstuck")
        .iter()
        .find(|u| u["sock"] == s["sock"])
        .unwrap();
    assert_eq!(
        (u["state"].as_str(), u["new"].as_str()),
        (Some("CLOSE_WAIT"), Some("LAST_ACK"))
    );
    assert_eq!(u["sock"], s["sock"]);
    // The exit summary, by owner and state (nothing of ours is stuck any more).
    let sum = of_type(&records, "stuck_summary");
    assert_eq!(
        (sum.len(), sum[0]["threshold_ns"].as_u64()),
        (1, Some(2_000_000_000))
    );
    let me = std::process::id();
    assert!(
        sum[0]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["owner"]["pid"] != me),
        "{sum:#?}"
    );
    assert!(
        err.iter()
            .any(|l| l.contains("reporting connections stuck for 2.00s")),
        "{err:?}"
    );
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn a_socket_stuck_before_the_tracer_started_is_seeded_and_reported() {
    let (listener, addr) = bound(false);
    listener.listen(1).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let client = TcpStream::connect(addr).unwrap();
    let (server, _) = listener.accept().unwrap();
    drop(client);
    thread::sleep(Duration::from_millis(100)); // server: CLOSE_WAIT, before the tracer
    let t = Tracer::start(&[
        "-o",
        "json",
        "--stuck",
        "1s",
        "--quiet",
        "-p",
        &addr.port().to_string(),
    ]);
    t.wait_json(1, |v| {
        v["type"] == "stuck" && v["state"] == "CLOSE_WAIT" && v["sport"] == addr.port()
    });
    // SIGUSR1: a summary now.
    // SAFETY: kill with our child's pid and a valid signal.
    unsafe { libc::kill(t.child.id() as i32, libc::SIGUSR1) };
    t.wait_json(1, |v| v["type"] == "stuck_summary");
    let (status, out, _) = t.stop();
    assert!(status.success());
    drop(server);
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The server's CLOSE_WAIT (the client's orphaned FIN_WAIT2 is stuck too, with no owner:
    // it was closed, no process holds it).
    let s = *of_type(&records, "stuck")
        .iter()
        .find(|s| s["state"] == "CLOSE_WAIT" && s["sport"] == addr.port())
        .unwrap_or_else(|| panic!("{records:#?}"));
    assert_eq!(
        (s["seen_from"].as_str(), s["age_at_least"].as_bool()),
        (Some("dump"), Some(true))
    );
    assert!(
        s["sock"].is_null(),
        "no event yet: the kernel address is not known"
    );
    assert_eq!(s["sport"].as_u64(), Some(addr.port().into()));
    assert_eq!(s["owner"]["pid"].as_u64(), Some(std::process::id().into()));
    assert_eq!(s["owner"]["source"], "procfs");
    let sum = of_type(&records, "stuck_summary")[0];
    let g = sum["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["state"] == "CLOSE_WAIT" && g["owner"]["pid"] == std::process::id())
        .unwrap_or_else(|| panic!("{sum:#?}"));
    assert_eq!(
        (
            g["state"].as_str(),
            g["count"].as_u64(),
            g["oldest_at_least"].as_bool()
        ),
        (Some("CLOSE_WAIT"), Some(1), Some(true))
    );
    assert_eq!(g["owner"]["pid"].as_u64(), Some(std::process::id().into()));
}

/// Two listeners on two loopback addresses; returns the records a tracer with `filter` saw.
fn filtered(filter: &[&str]) -> (Vec<Value>, SocketAddr, SocketAddr, Vec<String>) {
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
    let t = Tracer::start(&argv);
    one_connection(l1, a1, FirstCloser::Client);
    one_connection(l2, a2, FirstCloser::Client);
    thread::sleep(Duration::from_millis(300));
    let (status, out, err) = t.stop();
    assert!(status.success(), "{err:?}");
    (
        out.iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        a1,
        a2,
        err,
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
    let (r, _, a2, err) = filtered(&["-p", "P1", "-p", "P2", "--addr", "127.0.0.2/32"]);
    let got = roles(&r);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        of_type(&r, "connection")
            .iter()
            .all(|c| c["saddr"] == "127.0.0.2" || c["daddr"] == "127.0.0.2"),
        "{r:#?}"
    );
    assert!(got.contains(&("listener".into(), a2.port().into())));
    // Filtered in the kernel: the program saw more TCP events than it submitted.
    let line = err.iter().find(|l| l.contains("stopped")).unwrap();
    assert!(line.contains("filtered out in the kernel"), "{line}");

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
    let empty = format!("/sys/fs/cgroup/tracer-test-{me}");
    std::fs::create_dir(&empty).unwrap();
    let (c, _) = owner_filtered(&["--cgroup".into(), empty.clone()]);
    std::fs::remove_dir(&empty).unwrap();
    assert!(c.is_empty(), "{c:#?}");
}

/// A network namespace for one test (`ip netns add`), removed on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("tracer-{tag}-{}", std::process::id());
        let ok = |c: &mut Command| assert!(c.status_locked().unwrap().success(), "{c:?}");
        ok(Command::new("ip").args(["netns", "add", &name]));
        ok(Command::new("ip").args(["netns", "exec", &name, "ip", "link", "set", "lo", "up"]));
        Self(name)
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }

    /// Runs `f` on a thread that has entered this namespace (sockets it creates live there).
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            // SAFETY: a valid namespace fd; setns changes only this thread's namespace.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .status_locked();
    }
}

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

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn time_wait_is_followed_to_its_end() {
    // TIME_WAIT lasts 60 s on Linux (fixed): this test waits for it.
    let (listener, addr) = bound(false);
    let t = Tracer::start(&["-o", "json", "--no-events", "-p", &addr.port().to_string()]);
    let cport = one_connection(listener, addr, FirstCloser::Client);
    let is = |v: &Value, old: &str, new: &str| {
        v["source"] == "sock_diag" && v["old"] == old && v["new"] == new && v["sport"] == cport
    };
    t.wait_json(1, |v| is(v, "FIN_WAIT2", "TIME_WAIT"));
    let start = Instant::now();
    while !t.json().iter().any(|v| is(v, "TIME_WAIT", "CLOSE")) {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "TIME_WAIT did not end within 90 s"
        );
        thread::sleep(Duration::from_millis(250));
    }
    let (status, out, _) = t.stop();
    assert!(status.success());
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tw = records
        .iter()
        .find(|v| is(v, "FIN_WAIT2", "TIME_WAIT"))
        .unwrap();
    let end = records
        .iter()
        .find(|v| is(v, "TIME_WAIT", "CLOSE"))
        .unwrap();
    let expires = tw["expires_ns"].as_u64().unwrap();
    let ended = end["ts_ns"].as_u64().unwrap();
    // Seen gone after the timer, within the timer wheel's slack: a 60 s kernel timer lands
    // in a wheel level with ~4 s granularity, plus up to 1 s between dumps.
    assert!(
        ended + 100_000_000 >= expires && ended <= expires + 6_000_000_000,
        "expires {expires}, ended {ended}"
    );
    assert_eq!(end["sock"], tw["sock"]);
}

/// `tracer_...{labels} value` from an exposition text.
fn metric(text: &str, line_prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {line_prefix:?} in:\n{text}"))
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn prometheus_metrics_match_the_events() {
    let (listener, addr) = bound(false);
    let t = Tracer::start(&[
        "--metrics",
        "127.0.0.1:0",
        "--quiet",
        "--stuck",
        "1s",
        "-p",
        &addr.port().to_string(),
    ]);
    let url = {
        let err = t.stderr.lock().unwrap().clone();
        let line = err
            .iter()
            .find(|l| l.contains("Prometheus metrics on "))
            .unwrap_or_else(|| panic!("{err:?}"));
        line.split("metrics on ").nth(1).unwrap().trim().to_string()
    };
    // One connection closed normally, and one accepted socket left in CLOSE_WAIT (stuck).
    listener.listen(4).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let c1 = TcpStream::connect(addr).unwrap();
    let (mut s1, _) = listener.accept().unwrap();
    drop(c1);
    let mut b = [0u8; 1];
    assert_eq!(s1.read(&mut b).unwrap(), 0);
    drop(s1);
    let c2 = TcpStream::connect(addr).unwrap();
    let (s2, _) = listener.accept().unwrap();
    drop(c2);
    thread::sleep(Duration::from_millis(2500)); // past --stuck, records released, gauges refreshed
    let scrape = || ureq::get(&url).call().unwrap().into_string().unwrap();
    let text = scrape();
    // Counters from the events: two clients closed first, two servers went through
    // CLOSE_WAIT; one server is still there.
    let tr = |o: &str, n: &str| {
        metric(
            &text,
            &format!("tracer_tcp_transitions_total{{old=\"{o}\",new=\"{n}\"}}"),
        )
    };
    assert_eq!(tr("CLOSE", "SYN_SENT"), 2.0);
    assert_eq!(tr("ESTABLISHED", "CLOSE_WAIT"), 2.0);
    assert_eq!(tr("CLOSE_WAIT", "LAST_ACK"), 1.0);
    assert_eq!(tr("CLOSE", "LISTEN"), 1.0);
    assert_eq!(
        metric(
            &text,
            "tracer_tcp_connections_total{role=\"server\",close=\"passive\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "tracer_tcp_connections_total{role=\"client\",close=\"active\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(&text, "tracer_tcp_connections_open{state=\"CLOSE_WAIT\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "tracer_tcp_connections_open{state=\"LISTEN\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "tracer_tcp_connections_stuck{state=\"CLOSE_WAIT\"}"),
        1.0
    );
    assert_eq!(metric(&text, "tracer_tcp_handshake_seconds_count"), 2.0);
    assert_eq!(metric(&text, "tracer_tcp_close_wait_seconds_count"), 1.0);
    assert!(text.contains("tracer_tcp_time_wait_seconds_count"));
    assert!(text.ends_with("# EOF\n"));
    drop(s2);
    drop(listener);
    let (status, _, _) = t.stop();
    assert!(status.success());
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn runs_with_only_its_capabilities() {
    // What dist/tracer.service grants: uid 0 with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN.
    let (listener, addr) = bound(false);
    let mut child = Command::new("setpriv")
        .args([
            "--bounding-set=-all,+bpf,+perfmon,+net_admin",
            "--inh-caps=-all",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_tracer"))
        // As the unit runs it: the priority comes from systemd's Nice=.
        .args(["-o", "json", "--nice", "0", "-p", &addr.port().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_locked()
        .expect("setpriv (util-linux)");
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    let t = Tracer {
        child,
        stdout: out,
        stderr: err,
    };
    t.wait_stderr("attached", Duration::from_secs(30));
    one_connection(listener, addr, FirstCloser::Client);
    t.wait_json(3, |v| v["type"] == "connection");
    let (status, out, err) = t.stop();
    assert!(status.success(), "{err:?}");
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let client = of_type(&records, "connection")
        .into_iter()
        .find(|c| c["role"] == "client")
        .unwrap();
    assert_eq!(
        client["time_wait"]["confirmed"], true,
        "sock_diag works with CAP_NET_ADMIN"
    );
    assert_eq!(
        client["owner"]["pid"].as_u64(),
        Some(std::process::id().into())
    );

    // Without CAP_BPF: one clear sentence naming the fix, exit 1, nothing attached.
    let o = Command::new("setpriv")
        .args([
            "--bounding-set=-all,+perfmon,+net_admin",
            "--inh-caps=-all",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_tracer"))
        .args(["-p", "9"])
        .output_locked()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("missing CAP_BPF") && e.contains("run it with sudo"),
        "{e}"
    );
}

#[test]
fn completions_and_man_page_need_no_privileges() {
    let man = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .arg("man")
        .output_locked()
        .unwrap();
    assert!(man.status.success());
    assert!(String::from_utf8_lossy(&man.stdout).contains(".TH tracer 1"));
    let bash = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["completions", "bash"])
        .output_locked()
        .unwrap();
    assert!(bash.status.success());
    assert!(String::from_utf8_lossy(&bash.stdout).contains("complete"));
}

/// An independent count of `sock:inet_sock_set_state` events: a tracefs instance with the
/// event enabled and filtered to one port. Removed on drop.
struct TracefsCount(std::path::PathBuf);

impl TracefsCount {
    fn new(port: u16) -> Self {
        let dir = std::path::PathBuf::from(format!(
            "/sys/kernel/tracing/instances/tracer-test-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("buffer_size_kb"), "16384").unwrap();
        let ev = dir.join("events/sock/inet_sock_set_state");
        std::fs::write(
            ev.join("filter"),
            format!("sport == {port} || dport == {port}"),
        )
        .unwrap();
        std::fs::write(ev.join("enable"), "1").unwrap();
        Self(dir)
    }

    fn count(&self) -> usize {
        std::fs::write(self.0.join("events/sock/inet_sock_set_state/enable"), "0").unwrap();
        let text = std::fs::read_to_string(self.0.join("trace")).unwrap();
        assert!(
            !text.contains("LOST"),
            "the counting instance itself lost events"
        );
        text.lines()
            .filter(|l| l.contains("inet_sock_set_state:"))
            .count()
    }
}

impl Drop for TracefsCount {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

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
    assert_eq!(
        captured as u64 + lost,
        emitted as u64,
        "captured {captured} + lost {lost} != emitted {emitted}"
    );
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

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn without_time_wait_lookups_an_active_closer_is_reported_at_once() {
    // With lookups, an active closer's record waits (up to 1.5 s) for sock_diag to confirm
    // its TIME_WAIT. Without them it must not wait for a lookup nobody makes.
    let (listener, addr) = bound(false);
    let t = Tracer::start(&[
        "-o",
        "json",
        "--no-timewait",
        "-p",
        &addr.port().to_string(),
    ]);
    let cport = one_connection(listener, addr, FirstCloser::Client);
    let closed = Instant::now();
    t.wait_json(1, |v| v["type"] == "connection" && v["sport"] == cport);
    let waited = closed.elapsed();
    let (status, _, err) = t.stop();
    assert!(status.success(), "{err:?}");
    assert!(
        waited < Duration::from_millis(700),
        "the client's record came {waited:?} after its close"
    );
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn a_small_ring_wraps_many_times_without_garbling_a_record() {
    // A 16 KiB ring holds about 136 events: 200 connections go round it about 18 times, and
    // every lap has one record straddling the end (tracer maps the data pages once and joins
    // that record's two pieces). Paced so the reader keeps up: nothing may be lost.
    let (listener, addr) = bound(false);
    let port = addr.port();
    let t = Tracer::start(&[
        "-o",
        "json",
        "--no-events",
        "--no-timewait",
        "--ring-buffer-size",
        "16K",
        "-p",
        &port.to_string(),
    ]);
    listener.listen(128).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let n = 200;
    for _ in 0..n {
        let c = TcpStream::connect(addr).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        // No child may hold these sockets while they close (see FORK).
        let no_fork = FORK
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        drop(c);
        // The server sees the FIN, then closes: the passive side's exact sequence.
        assert_eq!(s.read(&mut [0u8; 1]).unwrap(), 0);
        drop(s);
        drop(no_fork);
        thread::sleep(Duration::from_millis(2));
    }
    drop(listener);
    thread::sleep(Duration::from_millis(300));
    let (status, out, err) = t.stop();
    assert!(status.success(), "{err:?}");
    assert!(
        !err.iter().any(|l| l.contains("decoder")),
        "garbled records: {err:?}"
    );
    let records: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Paced so the reader keeps up here; under emulation (vm-test) it may not: then every
    // missing event must be reported lost, and the timelines it cut marked incomplete.
    let lost: usize = of_type(&records, "lost")
        .iter()
        .map(|l| l["count"].as_u64().unwrap() as usize)
        .sum();
    assert_eq!(
        of_type(&records, "transition").len() + lost,
        10 * n + 2,
        "{err:?}"
    );
    let conns = of_type(&records, "connection");
    let complete = |role: &str| -> Vec<Vec<String>> {
        conns
            .iter()
            .filter(|c| c["role"] == role && c["incomplete"] == false)
            .map(|c| states(c))
            .collect()
    };
    let client = timeline(&CLIENT_OPEN, &ACTIVE_CLOSE);
    let server = timeline(&SERVER_OPEN, &PASSIVE_CLOSE);
    // A garbled record would break a timeline: every complete one is exact.
    let (clients, servers) = (complete("client"), complete("server"));
    assert!(clients.iter().all(|s| *s == client), "{clients:?}");
    assert!(servers.iter().all(|s| *s == server), "{servers:?}");
    if lost == 0 {
        assert_eq!((clients.len(), servers.len()), (n, n));
    } else {
        assert!(clients.len() + servers.len() > n, "{err:?}");
    }
}

/// Ids of the BPF programs a process holds (from /proc/PID/fdinfo: `prog_id:`).
fn prog_ids(pid: u32) -> Vec<u32> {
    let mut ids = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .flatten()
    {
        if let Ok(info) = std::fs::read_to_string(e.path())
            && let Some(id) = info.lines().find_map(|l| l.strip_prefix("prog_id:"))
        {
            ids.push(id.trim().parse().unwrap());
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn loaded_ids() -> Vec<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect()
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn nothing_stays_attached_after_sigint_sigterm_sighup_or_sigkill() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGKILL] {
        let mut t = Tracer::start(&["-p", "9"]);
        let ids = prog_ids(t.child.id());
        assert!(
            ids.len() >= 2,
            "the transition program and context programs: {ids:?}"
        );
        assert!(ids.iter().all(|id| loaded_ids().contains(id)));
        // SAFETY: kill with our child's pid and a valid signal.
        unsafe { libc::kill(t.child.id() as i32, sig) };
        let st = wait_timeout(&mut t.child, Duration::from_secs(10));
        if sig == libc::SIGKILL {
            assert!(!st.success());
        } else {
            assert!(st.success(), "signal {sig}: {st:?}");
        }
        // Links and programs are owned by file descriptors: the kernel drops them with the
        // process, even after SIGKILL (freed after an RCU grace period).
        let start = Instant::now();
        while ids.iter().any(|id| loaded_ids().contains(id)) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "signal {sig}: programs {ids:?} still loaded"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
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

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn every_help_example_works() {
    let help = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .arg("--help")
        .output_locked()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let examples: Vec<Vec<String>> = help
        .split("Examples:")
        .nth(1)
        .expect("an Examples section")
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("tracer"))
        .filter_map(|l| {
            let cmd = l.split("   ").next().unwrap().trim();
            // A pipeline into another program: the tracer part is covered by the others.
            (!cmd.contains('|')).then(|| cmd.split_whitespace().skip(1).map(String::from).collect())
        })
        .collect();
    assert!(examples.len() >= 7, "{examples:?}");
    assert!(
        examples
            .iter()
            .any(|a| a.first().is_some_and(|c| c == "replay"))
            && examples
                .iter()
                .any(|a| a.first().is_some_and(|c| c == "demo")),
        "{examples:?}"
    );
    // In order: the `--record` example makes the file the `replay` example reads.
    for mut args in examples {
        let replay = args.first().is_some_and(|c| c == "replay");
        if !replay {
            // Each runs for one second (a demo may end sooner).
            match args.iter().position(|a| a == "--duration") {
                Some(i) => args[i + 1] = "1".into(),
                None => args.extend(["--duration".into(), "1".into()]),
            }
        }
        let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
            .args(&args)
            .output_locked()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "tracer {args:?}: {err}");
        if replay {
            assert!(err.contains("tracer: replaying"), "tracer {args:?}: {err}");
            continue;
        }
        assert!(
            err.contains("attached to sock:inet_sock_set_state")
                && (err.contains("stopped (duration reached)")
                    || err.contains("stopped (demo done)")),
            "tracer {args:?}: {err}"
        );
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tracer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn a_recording_replays_to_the_same_connection_records() {
    let dir = temp_dir("record");
    let rec = dir.join("run.jsonl");
    let (listener, addr) = bound(false);
    let port = addr.port().to_string();
    let t = Tracer::start(&[
        "-o",
        "json",
        "-p",
        &port,
        "--summary",
        "--record",
        rec.to_str().unwrap(),
    ]);
    // Two connections on one listener, one closed by each side, then a refused one.
    listener.listen(16).unwrap();
    let listener: std::net::TcpListener = listener.into();
    for first in [FirstCloser::Client, FirstCloser::Server] {
        let mut client = TcpStream::connect(addr).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let mut b = [0u8; 1];
        let (a, mut b2) = match first {
            FirstCloser::Client => (client, server),
            FirstCloser::Server => (server, client),
        };
        drop(a);
        assert_eq!(b2.read(&mut b).unwrap(), 0);
        drop(b2);
        client = TcpStream::connect(addr).unwrap();
        server = listener.accept().unwrap().0;
        drop((client, server));
    }
    drop(listener);
    assert!(TcpStream::connect(addr).is_err());
    t.wait_json(6, |v| v["type"] == "connection");
    let (status, out, err) = t.stop();
    assert!(status.success(), "{err:?}");

    let live: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let replayed = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["replay", rec.to_str().unwrap(), "-o", "json", "--summary"])
        .output_locked()
        .unwrap();
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    let replayed: Vec<Value> = String::from_utf8(replayed.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The same connection records, field for field (times included: the recording keeps
    // the clock offset), in the same order; and the same summary.
    let pick = |v: &[Value], ty: &str| -> Vec<Value> {
        v.iter().filter(|r| r["type"] == ty).cloned().collect()
    };
    let (lc, rc) = (pick(&live, "connection"), pick(&replayed, "connection"));
    assert!(lc.len() >= 6, "{lc:#?}");
    assert_eq!(lc, rc);
    assert_eq!(pick(&live, "summary"), pick(&replayed, "summary"));
    // And the same transitions, TIME_WAIT ones from sock_diag included.
    assert_eq!(pick(&live, "transition"), pick(&replayed, "transition"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn demo_scenarios_draw_their_ladders_and_svgs() {
    require_root();
    // Per scenario: the client's states, the server's, and the arrows in order.
    type Case<'a> = (&'a str, &'a [&'a str], &'a [&'a str], &'a [&'a str]);
    let cases: [Case; 4] = [
        (
            "normal",
            &[
                "SYN_SENT",
                "ESTABLISHED",
                "FIN_WAIT1",
                "FIN_WAIT2",
                "CLOSE",
                "TIME_WAIT",
            ],
            &["SYN_RECV", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSE"],
            &["SYN", "SYN-ACK", "ACK", "FIN", "ACK", "FIN", "ACK"],
        ),
        (
            "server-first",
            &["SYN_SENT", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSE"],
            &[
                "SYN_RECV",
                "ESTABLISHED",
                "FIN_WAIT1",
                "FIN_WAIT2",
                "CLOSE",
                "TIME_WAIT",
            ],
            &["SYN", "SYN-ACK", "ACK", "FIN", "ACK", "FIN", "ACK"],
        ),
        (
            "reset",
            &["SYN_SENT", "ESTABLISHED", "CLOSE"],
            &["SYN_RECV", "ESTABLISHED", "CLOSE"],
            &["SYN", "SYN-ACK", "ACK", "RST"],
        ),
        ("refused", &["SYN_SENT", "CLOSE"], &[], &["SYN", "RST"]),
    ];
    for (scenario, client, server, arrows) in cases {
        let dir = temp_dir(&format!("demo-{scenario}"));
        let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
            .args(["demo", scenario, "--color", "never", "--svg"])
            .arg(&dir)
            .output_locked()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{scenario}: {err}");
        assert!(err.contains("stopped (demo done)"), "{scenario}: {err}");
        // The ladder's rows: time, then the client's column (14 wide), the middle, the
        // server's column.
        let ladder: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("── 127.0.0.1"))
            .skip(1)
            .take_while(|l| !l.starts_with("──"))
            .filter(|l| l.trim_start().starts_with('+'))
            .collect();
        let col = |l: &str, from: usize, to: usize| -> String {
            l.chars()
                .skip(from)
                .take(to - from)
                .collect::<String>()
                .trim()
                .to_string()
        };
        let left: Vec<String> = ladder
            .iter()
            .map(|l| col(l, 12, 26))
            .filter(|s| !s.is_empty() && !s.starts_with('!'))
            .collect();
        let right: Vec<String> = ladder
            .iter()
            .map(|l| col(l, 61, 75))
            .filter(|s| !s.is_empty() && !s.starts_with('!'))
            .collect();
        let got_arrows: Vec<String> = ladder
            .iter()
            .map(|l| col(l, 26, 61))
            .filter(|m| m.contains('▶') || m.contains('◀'))
            .map(|m| m.trim_matches(|c| "─▶◀ ".contains(c)).to_string())
            .collect();
        assert_eq!(left, client, "{scenario} client column:\n{text}");
        assert_eq!(right, server, "{scenario} server column:\n{text}");
        assert_eq!(got_arrows, arrows, "{scenario} arrows:\n{text}");
        let svgs: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(svgs.len(), 1, "{scenario}: one diagram");
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // The FINs cross after a few tries (the order of the rows varies from run to run); that
    // takes two CPUs running both ends at once.
    if thread::available_parallelism().map_or(1, usize::from) < 2 {
        eprintln!("skipping `demo simultaneous`: it needs 2 CPUs");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["demo", "simultaneous", "--color", "never"])
        .output_locked()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("close simultaneous").count(), 2, "{text}");
    assert_eq!(text.matches("CLOSING").count(), 2, "{text}");
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn a_memlock_limit_it_cannot_raise_is_named_where_the_kernel_charges_it() {
    require_root();
    // RLIMIT_MEMLOCK fixed at `limit` (no CAP_SYS_RESOURCE to raise it): kernels before 5.11
    // charge BPF maps to it, later ones do not.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let charges = (v.next().unwrap_or(0), v.next().unwrap_or(0)) < (5, 11);
    let run = |limit: libc::rlim_t| {
        const CAP_SYS_RESOURCE: libc::c_ulong = 24;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tracer"));
        cmd.args(["-o", "json", "-p", "9", "--duration", "1"]);
        // SAFETY: setrlimit and prctl are async-signal-safe and touch only the child.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                let l = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_MEMLOCK, &l) != 0
                    || libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_RESOURCE, 0, 0, 0) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let o = cmd.output_locked().unwrap();
        (o.status, String::from_utf8_lossy(&o.stderr).into_owned())
    };
    // 64 KiB, the old default.
    let (status, e) = run(64 << 10);
    if charges {
        assert_eq!(status.code(), Some(1), "{e}");
        assert!(
            e.contains(&format!("the kernel ({}) charges BPF maps", release.trim()))
                && e.contains("RLIMIT_MEMLOCK (currently 64 KiB, could not be raised")
                && e.contains("ulimit -l unlimited")
                && e.contains("--ring-buffer-size"),
            "{e}"
        );
        let errors: Vec<&str> = e.lines().filter(|l| l.contains("error")).collect();
        assert!(
            errors.len() == 1 && errors[0].contains("RLIMIT_MEMLOCK"),
            "one error line: {e}"
        );
        // The limit was the only problem: a large enough one works.
        let (status, e) = run(256 << 20);
        assert!(status.success(), "{e}");
    } else {
        assert!(
            status.success(),
            "the memory cgroup is charged, not memlock: {e}"
        );
    }
}
