use crate::harness::*;

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
            assert!(
                st.success(),
                "signal {sig}: {st:?}; stderr:\n{}",
                t.stderr.lock().unwrap().join("\n")
            );
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
