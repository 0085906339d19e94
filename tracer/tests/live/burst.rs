use crate::harness::*;

/// Connections held open, then closed at once.
const CONNS: usize = 21_000;
/// Processes holding them: each holds both ends of its share (two descriptors a connection),
/// under a descriptor limit that cannot be raised past 20,000 here.
const PROCS: usize = 3;

/// A child of this process (forked, no exec) holding `n` connections to `listener` in the
/// network namespace of the thread that forks it. It closes every descriptor it inherited
/// but the listener and its two pipes, opens its connections, writes a byte to `ready`, and
/// exits (the kernel closing all its sockets at once) when `go` reaches end of file.
fn holder(listener: i32, ready: i32, go: i32, addr: SocketAddr, n: usize) -> i32 {
    let _g = FORK
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // SAFETY: fork, then in the child only: descriptors closed, sockets opened with std
    // (glibc resets its allocator's locks in the child), and `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid > 0 {
        return pid;
    }
    // The child: nothing of the test's (other tests' sockets, the tracer's pipes) may be
    // held here.
    for fd in 3..20_000 {
        if fd != listener && fd != ready && fd != go {
            // SAFETY: closing descriptors this process does not use.
            unsafe { libc::close(fd) };
        }
    }
    let code = (|| -> std::io::Result<()> {
        let mut held = Vec::with_capacity(2 * n);
        for _ in 0..n {
            held.push(std::net::TcpStream::connect(addr)?);
            // SAFETY: accept(2) on the inherited listening socket.
            let s = unsafe { libc::accept(listener, std::ptr::null_mut(), std::ptr::null_mut()) };
            if s < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: a fresh descriptor, owned from here.
            held.push(unsafe { <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(s) });
        }
        // SAFETY: one byte to the parent, then block until it closes `go`.
        unsafe {
            libc::write(ready, [1u8].as_ptr().cast(), 1);
            let mut b = 0u8;
            while libc::read(go, (&raw mut b).cast(), 1) > 0 {}
        }
        // Exiting closes them all at once: the deploy that restarts everything.
        std::mem::forget(held);
        Ok(())
    })()
    .map_or(1, |()| 0);
    // SAFETY: leave without running the parent's atexit handlers or destructors.
    unsafe { libc::_exit(code) }
}

fn pipe() -> (i32, i32) {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (fds[0], fds[1])
}

/// What a burst run saw: the kernel's count (tracefs) and tracer's output and stderr.
struct Outcome {
    emitted: u64,
    /// Transition records from the tracepoint on the burst's port.
    captured: u64,
    /// Sum of the `lost` records, and of those whose cause is not a recursion miss.
    lost: u64,
    lost_full: u64,
    closed_conns: u64,
    err: Vec<String>,
}

/// `conns` connections held open by [`PROCS`] processes in a network namespace of the test's
/// own (their client ports and TIME_WAITs stay out of the host's ephemeral range), traced by
/// `tracer -o json -p PORT extra…`, then closed together by the exiting processes, as a
/// deploy does. With `pause_output` nobody reads tracer's output (a pipe) until the holders
/// have exited: its pipeline blocks on the write, and everything that arrives meanwhile waits
/// in the reader's queue or, once that is at its bound, in the ring.
fn burst(tag: &str, conns: usize, extra: &[&str], pause_output: bool) -> Outcome {
    require_root();
    let started = Instant::now();
    let ns = Netns::new(tag);
    let port = 64_000 + ((std::process::id() as usize + conns) % 900) as u16;
    let dir = temp_dir(tag);
    let out_path = dir.join("out.jsonl");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut args = vec![
        "-o".to_string(),
        "json".into(),
        "-p".into(),
        port.to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(&args)
        .stdout(if pause_output {
            Stdio::piped()
        } else {
            Stdio::from(out.try_clone().unwrap())
        })
        .stderr(Stdio::piped())
        .spawn_locked()
        .expect("spawn tracer");
    let paused = child.stdout.take();
    let stderr = collect(child.stderr.take().unwrap());
    let t = Tracer {
        child,
        stdout: Arc::new(Mutex::new(Vec::new())),
        stderr,
    };
    t.wait_stderr(
        "attached to sock:inet_sock_set_state",
        Duration::from_secs(30),
    );
    let count = TracefsCount::with_buffer(port, 65_536);
    let (ready_r, ready_w) = pipe();
    let (go_r, go_w) = pipe();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let (listener, pids) = ns.run(move || {
        let l = std::net::TcpListener::bind(addr).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&l);
        let pids: Vec<i32> = (0..PROCS)
            .map(|_| holder(fd, ready_w, go_r, addr, conns / PROCS))
            .collect();
        (l, pids)
    });
    // SAFETY: the children have their copies; ours are no longer needed.
    unsafe {
        libc::close(ready_w);
        libc::close(go_r);
    }
    let mut ready = 0;
    while ready < PROCS {
        let mut b = [0u8; 8];
        // SAFETY: reading into a local buffer.
        let n = unsafe { libc::read(ready_r, b.as_mut_ptr().cast(), b.len()) };
        assert!(n > 0, "a holder died before opening its connections");
        ready += n as usize;
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the connections took too long to open"
        );
    }
    eprintln!(
        "burst: {conns} connections open after {:?}",
        started.elapsed()
    );
    // Let the tracer take the openings, so the closes are the burst.
    thread::sleep(Duration::from_millis(1500));
    let closed = Instant::now();
    // SAFETY: closing our write end: every holder reads end of file and exits.
    unsafe { libc::close(go_w) };
    for pid in pids {
        let mut st = 0;
        // SAFETY: waiting for our own children.
        assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
        assert!(
            libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
            "holder {pid}: {st}"
        );
    }
    // SAFETY: as above.
    unsafe { libc::close(ready_r) };
    // The last ACKs land just after the exits; then the listener goes.
    thread::sleep(Duration::from_millis(100));
    drop(listener);
    // Paused: now the output is read (into the file), and the pipeline moves again.
    let copier = paused.map(|mut p| {
        let mut f = out.try_clone().unwrap();
        thread::spawn(move || std::io::copy(&mut p, &mut f))
    });
    // Wait for the output to stop growing (the pipeline works through the queue).
    let mut last = 0;
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_secs(2) {
        thread::sleep(Duration::from_millis(100));
        let len = std::fs::metadata(&out_path).unwrap().len();
        if len != last {
            last = len;
            since = Instant::now();
        }
        assert!(
            closed.elapsed() < Duration::from_secs(90),
            "tracer still writing 90 s after the burst"
        );
    }
    eprintln!(
        "burst: output quiet {:?} after the closes",
        closed.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(240),
        "took {:?}",
        started.elapsed()
    );
    let (status, _, err) = t.stop();
    assert!(status.success(), "{err:?}");
    if let Some(c) = copier {
        c.join().unwrap().unwrap();
    }
    let emitted = count.count() as u64;
    drop(ns);

    let text = std::fs::read_to_string(&out_path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let mut captured = 0u64;
    let mut lost = 0u64;
    let mut lost_full = 0u64;
    let mut closed_conns = 0u64;
    for l in text.lines() {
        let head = &l[..l.len().min(40)];
        if head.contains(r#""type":"transition""#) {
            // TIME_WAIT transitions learned from sock_diag are not the tracepoint's.
            if l.contains(r#""source":"tracepoint""#) {
                captured += 1;
            }
        } else if head.contains(r#""type":"connection""#) {
            closed_conns += 1;
        } else if head.contains(r#""type":"lost""#) {
            let v: Value = serde_json::from_str(l).unwrap();
            let n = v["count"].as_u64().unwrap();
            lost += n;
            if v["cause"] != "recursion" {
                lost_full += n;
            }
        }
    }
    assert!(
        emitted >= 8 * conns as u64,
        "the kernel emitted {emitted} transitions for {conns} connections"
    );
    Outcome {
        emitted,
        captured,
        lost,
        lost_full,
        closed_conns,
        err,
    }
}

/// The exit line's lost counts: (lost, ring buffer full, skipped by the kernel, unreadable).
fn exit_losses(err: &[String]) -> [u64; 4] {
    let line = err
        .iter()
        .find(|l| l.starts_with("tracer: stopped"))
        .unwrap_or_else(|| panic!("no exit line: {err:?}"));
    let after = |key: &str| -> u64 {
        let i = line
            .find(key)
            .unwrap_or_else(|| panic!("no `{key}` in {line}"))
            + key.len();
        line[i..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number after `{key}` in {line}"))
    };
    [
        after(", lost "),
        after("(ring buffer full "),
        after(", skipped by the kernel "),
        after(", unreadable "),
    ]
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn a_burst_of_closes_is_captured_whole_with_the_default_settings() {
    // 21,000 connections held open (42,000 sockets followed) and closed together: with the
    // default ring buffer and queue, tracer must take every transition, and anything missing
    // must be a reported recursion miss, never a full ring.
    let Outcome {
        emitted,
        captured,
        lost,
        lost_full,
        closed_conns,
        err,
    } = burst("burst", CONNS, &[], false);
    // Recursion misses are counted for every TCP event on the host, whatever its port:
    // other traffic can add a few. And one loss nothing counts (README, "Losses are
    // reported"): the kernel can drop a tracepoint hit before the program runs, without a
    // miss; the soak measured 0.009 % of transitions. At most 1 in 10,000 may be missing
    // beyond what was reported; seen here: 0 most runs, once 1 of 210,002.
    let misses = lost - lost_full;
    let uncounted = emitted.saturating_sub(captured + lost);
    assert!(
        captured + lost_full <= emitted && uncounted <= emitted / 10_000,
        "captured {captured} + lost {lost} ({misses} recursion misses, host-wide) vs emitted {emitted}: {uncounted} uncounted; {err:?}"
    );
    if uncounted > 0 {
        eprintln!("burst: {uncounted} of {emitted} transitions neither captured nor counted lost");
    }
    assert_eq!(
        lost_full, 0,
        "with the default ring buffer and queue, nothing may be lost but recursion misses: {err:?}"
    );
    if lost == 0 {
        assert!(
            closed_conns > 2 * CONNS as u64,
            "{closed_conns} connection records for {} sockets and the listener",
            2 * CONNS
        );
    }
    let line = err.iter().find(|l| l.contains("stopped")).unwrap();
    assert!(line.contains(&format!("lost {lost} ")), "{line}");
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn a_full_queue_leaves_records_in_the_ring_and_every_loss_is_counted() {
    // The reader's queue at its least (one 1 MiB chunk, about 9,000 records), a 16 KiB ring
    // (about 130), and the pipeline held up behind an output nobody reads until the holders
    // have exited: the reader fills its one chunk, finds the queue at its bound, leaves the
    // records in the ring, and the kernel counts what the full ring cannot take. Only the
    // transition program runs (no context, accept or counter records), so every loss is a
    // transition: what tracer captured and what it reported lost add up to the kernel's count.
    const QUEUED_CONNS: usize = 6_000;
    let o = burst(
        "burst-queue",
        QUEUED_CONNS,
        &[
            "--queue-size",
            "1MiB",
            "--ring-buffer-size",
            "16K",
            "--no-events",
            "--no-accept",
            "--no-counters",
            "--no-timewait",
        ],
        true,
    );
    let err = &o.err;
    let misses = o.lost - o.lost_full;
    // The losses are named: ring buffer full in the records and the exit line, and the queue
    // at its bound in a line of its own.
    assert!(
        o.lost_full > 1_000,
        "only {} lost to a full ring: the queue's bound was not reached; {err:?}",
        o.lost_full
    );
    assert_eq!(
        exit_losses(err),
        [o.lost, o.lost_full, misses, 0],
        "{err:?}"
    );
    let full = err
        .iter()
        .find_map(|l| l.strip_prefix("tracer: the reader's queue was full "))
        .unwrap_or_else(|| panic!("no queue-full line: {err:?}"));
    let times: u64 = full
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{full}"));
    assert!(times >= 1, "{full}");
    assert!(full.contains("(--queue-size 1 MiB)"), "{full}");
    // Everything the kernel put in the ring came out, however long it waited behind the
    // queue: the kernel's own count of what it submitted (seen − filtered out) is what was
    // captured.
    let c = StopCounts::from_stderr(err);
    assert_eq!(c.transitions, o.captured, "{err:?}");
    assert_eq!(c.submitted(), o.captured, "{c:?}; {err:?}");
    // Against the kernel's count (tracefs): nothing captured or counted twice, and every
    // transition missing from the output was reported lost. Recursion misses are counted
    // for every TCP transition on the host (other traffic can add a few), and the kernel can
    // drop an event before any program runs, without a count tracer could read (README,
    // "Losses are reported"): at most a small residue, named when it shows.
    assert!(
        o.captured + o.lost_full <= o.emitted,
        "captured {} + lost to a full ring {} > emitted {}; {err:?}",
        o.captured,
        o.lost_full,
        o.emitted
    );
    let uncounted = o.emitted.saturating_sub(o.captured + o.lost);
    assert!(
        uncounted * 100 <= o.emitted,
        "{uncounted} of {} transitions reached no run of the program and no recursion miss \
         (captured {}, lost {}: {} to a full ring, {misses} recursion misses); {err:?}",
        o.emitted,
        o.captured,
        o.lost,
        o.lost_full
    );
    if uncounted > 0 {
        eprintln!(
            "burst: {uncounted} of {} transitions dropped by the kernel before the program",
            o.emitted
        );
    } else if misses == 0 {
        assert_eq!(o.captured + o.lost_full, o.emitted, "{err:?}");
    }
}
