use crate::harness::*;

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
    // The kernel sends each close of a connection that moved data (a synchronized state ->
    // CLOSE) with its counters in one ring record; the recording keeps them as two events,
    // the counters (kind 9) right after their transition (kind 1), as before.
    let events: Vec<Value> = std::fs::read_to_string(&rec)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "event")
        .collect();
    let synchronized = [1, 4, 5, 8, 9, 11];
    let closes: Vec<usize> = (0..events.len())
        .filter(|&i| {
            let e = &events[i];
            e["kind"] == 1
                && e["newstate"] == 7
                && synchronized.contains(&e["oldstate"].as_u64().unwrap())
        })
        .collect();
    // Two connections closed by each side: four ends each time.
    assert_eq!(closes.len(), 8, "{events:#?}");
    for &i in &closes {
        let (close, stats) = (&events[i], &events[i + 1]);
        assert_eq!(stats["kind"], 9, "{close} then {stats}");
        assert_eq!(
            (&stats["sock"], &stats["ts_ns"]),
            (&close["sock"], &close["ts_ns"])
        );
    }
    assert_eq!(events.iter().filter(|e| e["kind"] == 9).count(), 8);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `tracer --record PATH` (and `extra`) started with umask 0, one connection on its own port,
/// stopped; returns the exit status and stderr. A refused path ends it before it attaches.
fn record_under_umask_0(path: &std::path::Path, extra: &[&str]) -> (bool, Vec<String>) {
    use std::os::unix::process::CommandExt as _;
    let (listener, addr) = bound(false);
    let port = addr.port().to_string();
    let mut args = vec![
        "-o",
        "json",
        "-p",
        &port,
        "--record",
        path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tracer"));
    cmd.args(&args);
    // SAFETY: umask is async-signal-safe and only changes the child's file-creation mask.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_locked()
        .expect("spawn tracer");
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    let mut t = Tracer {
        child,
        stdout,
        stderr,
    };
    let start = Instant::now();
    loop {
        let err = t.stderr.lock().unwrap().clone();
        if err
            .iter()
            .any(|l| l.contains("attached to sock:inet_sock_set_state"))
        {
            break;
        }
        if let Some(st) = t.child.try_wait().unwrap() {
            thread::sleep(Duration::from_millis(50)); // let the reader threads see EOF
            return (st.success(), t.stderr.lock().unwrap().clone());
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "tracer neither attached nor exited: {err:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    one_connection(listener, addr, FirstCloser::Client);
    t.wait_json(3, |v| v["type"] == "connection");
    let (status, _, err) = t.stop();
    (status.success(), err)
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

/// The connection records a recording replays to (`--view connections`).
fn replays(path: &std::path::Path) -> usize {
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args([
            "replay",
            path.to_str().unwrap(),
            "-o",
            "json",
            "--view",
            "connections",
        ])
        .output_locked()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.contains(r#""type":"connection""#))
        .count()
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn a_recording_is_private_and_never_replaces_a_file_or_follows_a_link() {
    let dir = temp_dir("record-files");
    let refused = |path: &std::path::Path, what: &str| {
        format!(
            "tracer: error: creating the recording {p}: {p} already exists ({what}): tracer does \
             not write over files or through links; pass --force to replace it, or choose \
             another path",
            p = path.display()
        )
    };

    // A new recording: mode 0600 although the umask would allow 0666.
    let rec = dir.join("new.jsonl");
    let (ok, err) = record_under_umask_0(&rec, &[]);
    assert!(ok, "{err:?}");
    assert_eq!(mode(&rec), 0o600);
    assert_eq!(
        replays(&rec),
        3,
        "the recording holds the listener and both ends"
    );

    // A symlink planted at the path: refused with the one error, its target untouched, the
    // link left as it was.
    let victim = dir.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let link = dir.join("link.jsonl");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let (ok, err) = record_under_umask_0(&link, &[]);
    assert!(!ok);
    assert_eq!(err, vec![refused(&link, "a symbolic link")]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(std::fs::read_link(&link).unwrap(), victim);

    // An existing file: refused the same way, its content unchanged.
    let old = dir.join("old.jsonl");
    std::fs::write(&old, b"mine").unwrap();
    let (ok, err) = record_under_umask_0(&old, &[]);
    assert!(!ok);
    assert_eq!(err, vec![refused(&old, "a file")]);
    assert_eq!(std::fs::read(&old).unwrap(), b"mine");

    // --force replaces the file (a new private one, the recording in it) ...
    let (ok, err) = record_under_umask_0(&old, &["--force"]);
    assert!(ok, "{err:?}");
    assert!(std::fs::symlink_metadata(&old).unwrap().is_file());
    assert_eq!(mode(&old), 0o600);
    assert_eq!(replays(&old), 3);
    // ... and the link itself, never what it points to.
    let (ok, err) = record_under_umask_0(&link, &["--force"]);
    assert!(ok, "{err:?}");
    assert!(std::fs::symlink_metadata(&link).unwrap().is_file());
    assert_eq!(mode(&link), 0o600);
    assert_eq!(replays(&link), 3);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    std::fs::remove_dir_all(&dir).unwrap();
}
