use crate::harness::*;

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn runs_with_only_its_capabilities() {
    // What dist/tracer.service grants: uid 0 with the capabilities of its
    // CapabilityBoundingSet= (read from the unit itself, so the two cannot drift apart).
    let unit = include_str!("../../../dist/tracer.service");
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit has a CapabilityBoundingSet=")
        .split_whitespace()
        .map(|c| {
            format!(
                "+{}",
                c.strip_prefix("CAP_")
                    .expect("a capability name")
                    .to_lowercase()
            )
        })
        .collect();
    assert!(caps.contains(&"+bpf".to_string()), "{caps:?}");
    let (listener, addr) = bound(false);
    let mut child = Command::new("setpriv");
    child
        .args([
            &format!("--bounding-set=-all,{}", caps.join(",")),
            "--inh-caps=-all",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_tracer"))
        // As the unit runs it: the priority comes from systemd's Nice=.
        .args(["-o", "json", "--nice", "0", "-p", &addr.port().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // And with the unit's LimitMEMLOCK=infinity (kernels before 5.11 charge BPF maps to
    // it, and without CAP_SYS_RESOURCE tracer cannot raise it itself). Best effort: where
    // this test's own root lacks CAP_SYS_RESOURCE (a container), the limit stays as it is,
    // which only matters on those older kernels.
    // SAFETY: setrlimit is async-signal-safe; it runs in the child between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt as _;
        child.pre_exec(|| {
            let inf = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            let _ = libc::setrlimit(libc::RLIMIT_MEMLOCK, &inf);
            Ok(())
        });
    }
    let mut child = child.spawn_locked().expect("setpriv (util-linux)");
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
