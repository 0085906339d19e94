//! `tracer top` driven in tmux (send-keys, capture-pane) against real loopback sockets, and
//! a recording played into it (`tracer replay FILE --top`).
use std::collections::BTreeMap;

use tracer::{
    decode::TcpState,
    diagram::{self, canvas},
};

use crate::harness::*;

/// A tmux session running one command, on a tmux server of its own (`-L`: tests start
/// sessions in parallel, and concurrent first sessions racing to start one shared server
/// fail now and then), killed on drop (failure included).
struct Tmux(String);

fn tmux(socket: &str) -> Command {
    let mut c = Command::new("tmux");
    c.args(["-L", socket]);
    c
}

impl Tmux {
    /// 100 × 30: the list of transitions (the diagram needs 32 rows beside the rest).
    fn start(tag: &str, cmd: &str) -> Self {
        Self::sized(tag, cmd, 100, 30)
    }

    fn sized(tag: &str, cmd: &str, w: u16, h: u16) -> Self {
        let name = format!("tracer-{tag}-{}", std::process::id());
        let ok = tmux(&name)
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                &w.to_string(),
                "-y",
                &h.to_string(),
                cmd,
            ])
            .status_locked()
            .expect("tmux (install tmux)");
        assert!(ok.success());
        Self(name)
    }

    fn screen(&self) -> String {
        let out = tmux(&self.0)
            .args(["capture-pane", "-p", "-t", &self.0])
            .output_locked()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        let ok = tmux(&self.0)
            .args(["send-keys", "-t", &self.0, keys])
            .status_locked()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits until the screen satisfies `pred` (10 s at most); returns it.
    fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_for(what, Duration::from_secs(10), pred)
    }

    fn wait_for(&self, what: &str, max: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(start.elapsed() < max, "no {what} within {max:?}:\n{s}");
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = tmux(&self.0).arg("kill-server").status_locked();
    }
}

fn top_command(port: u16) -> String {
    format!(
        "{} top --stuck 1s -p {port}; echo EXITED $?; sleep 60",
        env!("CARGO_BIN_EXE_tracer")
    )
}

/// Each arrow's count as the diagram on `screen` shows it (by the diagram's names:
/// `CLOSED`), read at its label's place in the layout, and the other arrows' from the
/// `also:` rows under it. `None` when no diagram is on the screen.
fn diagram_counts(screen: &str) -> Option<BTreeMap<(String, String), u64>> {
    let lay = canvas::layout();
    let rows: Vec<Vec<char>> = screen.lines().map(|l| l.chars().collect()).collect();
    let text = |r: &[char]| r.iter().collect::<String>();
    // The top CLOSED is alone on its row.
    let top = lay.nodes.iter().find(|n| n.y == 0)?;
    let (y0, x0) = rows.iter().enumerate().find_map(|(y, r)| {
        let t = text(r);
        (t.trim_matches(|c| c == '│' || c == ' ') == "CLOSED")
            .then(|| {
                (
                    y,
                    r.windows(6)
                        .position(|w| w.iter().collect::<String>() == "CLOSED"),
                )
            })
            .and_then(|(y, x)| Some((y, x? - top.x)))
    })?;
    let number = |s: &str| -> Option<u64> {
        s.trim_matches(|c: char| c == '─' || c == ' ')
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let mut out = BTreeMap::new();
    for l in &lay.labels {
        let row = rows.get(y0 + l.y)?;
        let slot: String = row.get(x0 + l.x..x0 + l.x + l.width)?.iter().collect();
        let (_, old, new) = canvas::ARROWS[l.arrow];
        out.insert(
            (
                diagram::name(old).to_string(),
                diagram::name(new).to_string(),
            ),
            number(&slot)?,
        );
    }
    for r in rows.iter().skip(y0 + lay.height) {
        let t = text(r);
        let t = t.trim_matches(|c| c == '│' || c == ' ');
        let t = t.strip_prefix("also:").unwrap_or(t);
        if !t.contains('→') {
            break;
        }
        for item in t.split("  ").filter(|i| i.contains('→')) {
            let (pair, rest) = item.trim().split_once(' ')?;
            let (old, new) = pair.split_once('→')?;
            out.insert((old.to_string(), new.to_string()), number(rest)?);
        }
    }
    Some(out)
}

/// The counts every drawn arrow must show (0 where `taken` has none), and the others taken.
fn expected(taken: &[((TcpState, TcpState), u64)]) -> BTreeMap<(String, String), u64> {
    let mut want: BTreeMap<(String, String), u64> = canvas::ARROWS
        .iter()
        .map(|&(_, o, n)| ((diagram::name(o).into(), diagram::name(n).into()), 0))
        .collect();
    for &((o, n), k) in taken {
        *want
            .entry((diagram::name(o).into(), diagram::name(n).into()))
            .or_default() += k;
    }
    want
}

/// A server left in CLOSE_WAIT: the client closed, the server never will (until dropped).
fn close_wait_leak(listener: Socket, addr: SocketAddr) -> (TcpStream, std::net::TcpListener, u16) {
    listener.listen(4).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let client = TcpStream::connect(addr).unwrap();
    let (server, _) = listener.accept().unwrap();
    let cport = client.local_addr().unwrap().port();
    drop(client);
    (server, listener, cport)
}

/// The rows of the connections list (stuck and recently closed) on `screen`.
fn conn_rows(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .filter(|l| l.contains('→') && l.contains(":"))
        .collect()
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

/// N connections on one port: the diagram (the default at 100 × 40) shows each arrow of
/// their handshake and teardown exactly N times (FIN_WAIT2 -> TIME_WAIT from sock_diag),
/// the listener's once, the handoff to the timewait socket among the other arrows, and
/// nothing else; `d` switches to the list with the same counts, and back.
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn top_arrows_count_each_transition_of_n_connections() {
    use TcpState::*;
    const N: u64 = 5;
    let (listener, addr) = bound(false);
    let port = addr.port();
    let tmux = Tmux::sized("top-arrows", &top_command(port), 100, 40);
    tmux.wait("the diagram", |s| diagram_counts(s).is_some());
    listener.listen(16).unwrap();
    let listener: std::net::TcpListener = listener.into();
    for _ in 0..N {
        let client = TcpStream::connect(addr).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        drop(client);
        let mut b = [0u8; 1];
        assert_eq!(server.read(&mut b).unwrap(), 0);
        drop(server);
    }
    let want = expected(&[
        ((Close, Listen), 1),
        ((Close, SynSent), N),
        ((SynSent, Established), N),
        ((Listen, SynRecv), N),
        ((SynRecv, Established), N),
        ((Established, FinWait1), N),
        ((FinWait1, FinWait2), N),
        ((FinWait2, Close), N),
        ((FinWait2, TimeWait), N),
        ((Established, CloseWait), N),
        ((CloseWait, LastAck), N),
        ((LastAck, Close), N),
    ]);
    // TIME_WAIT is confirmed by sock_diag a moment after the close.
    let screen = tmux.wait_for("every arrow at its count", Duration::from_secs(20), |s| {
        diagram_counts(s).as_ref() == Some(&want)
    });
    // (The boxes' counts are not checked here: the start-up dump seeds sockets of every
    // namespace, and another one may hold a socket with this port number.)
    assert!(screen.contains("ESTABLISHED "), "{screen}");
    tmux.keys("d");
    let list = tmux.wait("the list", |s| s.contains("d: diagram"));
    let listed = |name: &str| -> u64 {
        list.split(name)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name}:\n{list}"))
    };
    for name in [
        "CLOSE→SYN_SENT",
        "SYN_SENT→ESTAB",
        "LISTEN→SYN_RECV",
        "SYN_RECV→ESTAB",
        "ESTAB→FIN_WAIT1",
        "FIN_WAIT1→FIN_WAIT2",
        "FIN_WAIT2→TIME_WAIT",
        "FIN_WAIT2→CLOSE ",
        "ESTAB→CLOSE_WAIT",
        "CLOSE_WAIT→LAST_ACK",
        "LAST_ACK→CLOSE",
    ] {
        assert_eq!(listed(name), N, "{name}:\n{list}");
    }
    assert_eq!(listed("CLOSE→LISTEN"), 1, "{list}");
    tmux.keys("d");
    tmux.wait("the diagram again", |s| {
        diagram_counts(s).as_ref() == Some(&want)
    });
    drop(listener);
}

/// `/` and a port narrow the connections list to that port's (the other leak's row goes,
/// its client too); Esc brings them back.
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn top_filter_narrows_the_stuck_list() {
    let (la, aa) = bound(false);
    let (lb, ab) = bound(false);
    let (pa, pb) = (aa.port(), ab.port());
    let cmd = format!(
        "{} top --stuck 1s -p {pa} -p {pb}; echo EXITED $?; sleep 60",
        env!("CARGO_BIN_EXE_tracer")
    );
    let tmux = Tmux::start("top-filter", &cmd);
    tmux.wait("dashboard", |s| s.contains("sockets now"));
    let leak_a = close_wait_leak(la, aa);
    let leak_b = close_wait_leak(lb, ab);
    let stuck_on = |s: &str, p: u16| {
        conn_rows(s)
            .iter()
            .any(|l| l.contains("CLOSE_WAIT") && l.contains(&format!(":{p}→")))
    };
    tmux.wait("both leaks stuck", |s| stuck_on(s, pa) && stuck_on(s, pb));
    tmux.keys("/");
    tmux.keys(&pa.to_string());
    tmux.keys("Enter");
    let screen = tmux.wait("the filter", |s| {
        s.contains(&format!("filter: {pa}")) && !stuck_on(s, pb)
    });
    assert!(stuck_on(&screen, pa), "{screen}");
    // Left: the server's CLOSE_WAIT and its client (an orphaned FIN_WAIT2 once stuck, later
    // closed), both with port A.
    let (a, b) = (format!(":{pa}"), pb.to_string());
    let rows = conn_rows(&screen);
    assert!(
        rows.iter().all(|l| l.contains(&a) && !l.contains(&b)),
        "only port {pa} listed:\n{screen}"
    );
    tmux.keys("Escape");
    let screen = tmux.wait("the filter cleared", |s| stuck_on(s, pa) && stuck_on(s, pb));
    assert!(!screen.contains("filter:"), "{screen}");
    drop((leak_a, leak_b));
}

/// Enter on the stuck connection (the first row, selected) shows its timeline, as the text
/// output prints it, and its ladder; Esc closes it.
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn top_enter_shows_the_timeline_of_the_stuck_connection() {
    let (listener, addr) = bound(false);
    let port = addr.port();
    let tmux = Tmux::start("top-enter", &top_command(port));
    tmux.wait("dashboard", |s| s.contains("sockets now"));
    let leak = close_wait_leak(listener, addr);
    let cport = leak.2;
    tmux.wait("the stuck CLOSE_WAIT", |s| {
        conn_rows(s).iter().any(|l| l.contains("CLOSE_WAIT"))
    });
    tmux.keys("Enter");
    let head = format!("server 127.0.0.1:{port} -> 127.0.0.1:{cport}");
    let screen = tmux.wait("the timeline", |s| s.contains(&head));
    assert!(screen.contains("timeline and ladder"), "{screen}");
    let states: Vec<&str> = screen
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| ["LISTEN", "SYN_RECV", "ESTABLISHED", "CLOSE_WAIT"].contains(w))
        })
        .collect();
    for s in ["LISTEN", "SYN_RECV", "ESTABLISHED", "CLOSE_WAIT"] {
        assert!(states.contains(&s), "{s} not in the timeline:\n{screen}");
    }
    assert!(screen.contains("(started "), "no ladder:\n{screen}");
    tmux.keys("Escape");
    tmux.wait("the pane closed", |s| !s.contains("timeline and ladder"));
    drop(leak);
}

/// A recording played into the dashboard as fast as it goes: every arrow shows the count of
/// that transition in the recording (as `tracer replay -o json` lists them), the last frame
/// stays until `q`, which gives the terminal back.
#[test]
#[ignore = "needs tmux: run `cargo xtask test`"]
fn replay_top_shows_the_recordings_counts_and_quits_on_q() {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mixed.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["replay", fixture, "-o", "json"])
        .output_locked()
        .unwrap();
    assert!(out.status.success());
    let mut taken: BTreeMap<(String, String), u64> = BTreeMap::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        if v["type"] == "transition" {
            let name = |k: &str| match v[k].as_str().unwrap() {
                "CLOSE" => "CLOSED".to_string(),
                n => n.to_string(),
            };
            *taken.entry((name("old"), name("new"))).or_default() += 1;
        }
    }
    let total: u64 = taken.values().sum();
    assert_eq!(
        total, 180,
        "the fixture's transitions (tracepoint and sock_diag)"
    );
    let mut want = expected(&[]);
    want.extend(taken);
    let cmd = format!(
        "{} replay {fixture} --top --speed 0; echo EXITED $?; sleep 60",
        env!("CARGO_BIN_EXE_tracer")
    );
    let tmux = Tmux::sized("replay-top", &cmd, 100, 40);
    let screen = tmux.wait("the last frame", |s| s.contains(" END "));
    assert_eq!(diagram_counts(&screen).as_ref(), Some(&want), "{screen}");
    thread::sleep(Duration::from_millis(500));
    assert!(tmux.screen().contains(" END "), "held until q");
    tmux.keys("q");
    let after = tmux.wait("the exit", |s| s.contains("EXITED"));
    assert!(after.contains("EXITED 0"), "{after}");
    assert!(after.contains("tracer: replayed 271 lines"), "{after}");
    assert!(!after.contains(" END "), "the terminal given back: {after}");
}
