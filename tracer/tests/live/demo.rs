use crate::harness::*;

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
