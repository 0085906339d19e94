//! `tracer top` driven in tmux (send-keys, capture-pane) against real loopback sockets.
use crate::harness::*;

/// A tmux session running one command, killed on drop (failure included).
struct Tmux(String);

impl Tmux {
    fn start(tag: &str, cmd: &str) -> Self {
        let name = format!("tracer-{tag}-{}", std::process::id());
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                "100",
                "-y",
                "30",
                cmd,
            ])
            .status_locked()
            .expect("tmux (install tmux)");
        assert!(ok.success());
        Self(name)
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output_locked()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        let ok = Command::new("tmux")
            .args(["send-keys", "-t", &self.0, keys])
            .status_locked()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits until the screen satisfies `pred` (10 s at most); returns it.
    fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no {what} within 10 s:\n{s}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status_locked();
    }
}

fn top_command(port: u16) -> String {
    format!(
        "{} top --stuck 1s -p {port}; echo EXITED $?; sleep 60",
        env!("CARGO_BIN_EXE_tracer")
    )
}

/// A CLOSE_WAIT leak shows in the states (as many as `ss` counts), in the diagram's arrows
/// and in the stuck list with its owner; `q` quits, gives the terminal back and writes the
/// stop line after it.
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn top_shows_a_close_wait_leak_and_quits_on_q() {
    let (listener, addr) = bound(false);
    let port = addr.port();
    let tmux = Tmux::start("top", &top_command(port));
    tmux.wait("dashboard", |s| s.contains("sockets now"));
    listener.listen(4).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let client = TcpStream::connect(addr).unwrap();
    let (server, _) = listener.accept().unwrap();
    drop(client); // the server never closes: CLOSE_WAIT
    let me = std::process::id().to_string();
    // (Only this port is traced: `-p`.)
    let screen = tmux.wait("the stuck CLOSE_WAIT", |s| {
        s.lines()
            .any(|l| l.contains("CLOSE_WAIT") && l.contains(&me))
    });
    let ss = Command::new("ss")
        .args([
            "-tanH",
            "state",
            "close-wait",
            "sport",
            "=",
            &format!(":{port}"),
        ])
        .output_locked()
        .unwrap();
    let in_ss = String::from_utf8_lossy(&ss.stdout).lines().count();
    assert_eq!(in_ss, 1);
    let shown = screen
        .lines()
        .find_map(|l| {
            let l = l.trim_start_matches('│');
            l.strip_prefix("CLOSE_WAIT")?
                .split_whitespace()
                .next()?
                .parse::<usize>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no CLOSE_WAIT count:\n{screen}"));
    assert_eq!(shown, in_ss, "{screen}");
    let arrow = screen
        .split("ESTAB→CLOSE_WAIT")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no ESTAB→CLOSE_WAIT arrow:\n{screen}"));
    assert_eq!(arrow, "1", "{screen}");
    tmux.keys("q");
    let after = tmux.wait("the exit", |s| s.contains("EXITED"));
    assert!(after.contains("EXITED 0"), "{after}");
    assert!(
        after.contains("tracer: stopped (SIGINT)"),
        "stderr after the terminal: {after}"
    );
    assert!(
        !after.contains("sockets now"),
        "the terminal given back: {after}"
    );
    drop((server, listener));
}

/// SIGTERM gives the terminal back too.
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn top_gives_the_terminal_back_on_sigterm() {
    let (_listener, addr) = bound(false);
    let port = addr.port();
    let tmux = Tmux::start("top-term", &top_command(port));
    tmux.wait("dashboard", |s| s.contains("sockets now"));
    let pids = Command::new("pgrep")
        .args(["-f", &format!("tracer top --stuck 1s -p {port}$")])
        .output_locked()
        .unwrap();
    let pids = String::from_utf8_lossy(&pids.stdout).to_string();
    let pid: i32 = pids
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no tracer top process: {pids:?}"));
    // SAFETY: a signal to the tracer this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let after = tmux.wait("the exit", |s| s.contains("EXITED"));
    assert!(after.contains("tracer: stopped (SIGTERM)"), "{after}");
    assert!(!after.contains("sockets now"), "{after}");
}

/// The terminal going away (its window closed: tmux killed) ends `tracer top`: nothing is
/// left running (the terminal library would spin on the dead terminal).
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn top_ends_when_its_terminal_goes_away() {
    let (_listener, addr) = bound(false);
    let port = addr.port();
    let tmux = Tmux::start("top-hup", &top_command(port));
    tmux.wait("dashboard", |s| s.contains("sockets now"));
    let pids = Command::new("pgrep")
        .args(["-f", &format!("tracer top --stuck 1s -p {port}$")])
        .output_locked()
        .unwrap();
    let pid: i32 = String::from_utf8_lossy(&pids.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("the tracer top process");
    drop(tmux);
    let start = Instant::now();
    // SAFETY: signal 0 only checks that the process exists.
    while unsafe { libc::kill(pid, 0) } == 0 {
        if start.elapsed() > Duration::from_secs(10) {
            // SAFETY: as above; do not leave it running.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("tracer top still running 10 s after its terminal went away");
        }
        thread::sleep(Duration::from_millis(100));
    }
}
