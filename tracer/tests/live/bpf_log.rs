//! `--bpf-log`: the program's own log reaches stderr without `RUST_LOG`, and only with the flag.
use crate::harness::*;

/// One connection on the test's port with `extra` flags and no `RUST_LOG`; returns the lines
/// the port, the lines the program logged (`tracer: bpf: …`), the exit counts and the kernel's
/// (tracefs) count.
fn logged(extra: &[&str]) -> (u16, Vec<String>, StopCounts, usize) {
    let (listener, addr) = bound(false);
    let port = addr.port().to_string();
    let mut args = vec!["-o", "json", "-p", &port];
    args.extend_from_slice(extra);
    let kernel = TracefsCount::new(addr.port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tracer"));
    cmd.args(&args).env_remove("RUST_LOG");
    let t = Tracer::start_cmd(&mut cmd);
    one_connection(listener, addr, FirstCloser::Client);
    if extra.contains(&"--bpf-log") {
        t.wait_stderr("tracer: bpf:", Duration::from_secs(10));
    }
    thread::sleep(Duration::from_millis(300));
    let (status, _, err) = t.stop();
    assert!(status.success(), "{err:?}");
    let lines = err
        .iter()
        .filter(|l| l.starts_with("tracer: bpf:"))
        .cloned()
        .collect();
    (
        addr.port(),
        lines,
        StopCounts::from_stderr(&err),
        kernel.count(),
    )
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn bpf_log_shows_the_programs_line_once_without_rust_log() {
    let (port, lines, counts, kernel) = logged(&["--bpf-log"]);
    // The first transition through the port filter is the listener's listen(): CLOSE (7) →
    // LISTEN (10) on the test's port, no remote port. Later transitions do not log again.
    assert_eq!(
        lines,
        vec![format!(
            "tracer: bpf: info log is live: first transition sport {port} dport 0 state 7 -> 10"
        )]
    );
    // The whole connection was traced (the log costs no events).
    all_arrived(&counts, kernel);
}

/// Every transition of the connection (tracefs) arrived; on a busy host the kernel may skip
/// a few, counted as recursion misses (host-wide, so not exact): then only the bounds.
fn all_arrived(counts: &StopCounts, kernel: usize) {
    let kernel = kernel as u64;
    assert!(kernel >= 10, "tracefs saw only {kernel} transitions");
    if counts.lost == 0 {
        assert_eq!(counts.transitions, kernel, "{counts:?}");
    } else {
        assert!(
            counts.transitions <= kernel && kernel <= counts.transitions + counts.lost,
            "{counts:?} vs tracefs {kernel}"
        );
    }
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn without_bpf_log_the_program_logs_nothing() {
    let (_, lines, counts, kernel) = logged(&[]);
    assert_eq!(lines, Vec::<String>::new());
    // Not silence for want of events: every transition of the connection arrived.
    all_arrived(&counts, kernel);
}
