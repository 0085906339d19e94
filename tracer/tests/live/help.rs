use crate::harness::*;

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
    // In order: the `--record` example makes the file the `replay` example reads. Paths the
    // examples name under /tmp move into a directory of this run: a file left there by
    // someone else (or an earlier run) must not make the test fail, nor be replaced.
    let dir = temp_dir("help");
    for mut args in examples {
        for a in &mut args {
            if let Some(name) = a.strip_prefix("/tmp/") {
                *a = dir.join(name).display().to_string();
            }
        }
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
    let _ = std::fs::remove_dir_all(&dir);
}
