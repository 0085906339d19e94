//! Owners' cgroup identity (path, unit, container, pod) and the filters on it, with real
//! cgroup v2 directories made under the cgroup2 mount, wherever it is (on a hybrid host
//! /sys/fs/cgroup/unified), and real processes moved into them.
use crate::harness::*;

/// A Docker container's id (systemd driver: `docker-<id>.scope`).
const DOCKER: &str = "3f2a9c1b7d0e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c";
/// A containerd (CRI) container's id, in a burstable Kubernetes pod.
const CRI: &str = "c0ffee00d00d4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c";
const POD_SLICE: &str = "kubepods-burstable-pod1234abcd_5678_90ab_cdef_001122334455.slice";
const POD_UID: &str = "1234abcd-5678-90ab-cdef-001122334455";

/// The three cgroups: a Docker scope, a pod's containerd scope, a systemd service.
fn rels() -> [String; 3] {
    [
        format!("docker-{DOCKER}.scope"),
        format!("{POD_SLICE}/cri-containerd-{CRI}.scope"),
        "tracer-test.service".to_string(),
    ]
}

/// A cgroup a client runs in: made before the tracer starts, or once it is attached (then
/// it is learned from the client's /proc/PID/cgroup or a later rescan).
enum Dir {
    Made(std::path::PathBuf),
    Later(String),
}

/// Starts a tracer with `extra` on a port of its own, then one `bash` client per cgroup
/// (`/dev/tcp`), each moved into its cgroup before it connects; our listener answers each.
/// Each client lives 300 ms past its answer, as a real one would: the tracer reads a new
/// cgroup's path from the owner's /proc/PID/cgroup when it meets the cgroup id (its reader
/// may take a poll interval to get there), and a client gone by then leaves its path to the
/// next rescan, which can come after the connection's record.
/// Returns the records, the clients' pids and cgroup directories in order, and stderr.
fn clients_in(
    cg: &mut TestCgroups,
    dirs: Vec<Dir>,
    extra: &[&str],
) -> (Vec<Value>, Vec<(u32, std::path::PathBuf)>, Vec<String>) {
    let (listener, addr) = bound(false);
    let port = addr.port().to_string();
    let mut args = vec!["-o", "json", "--no-timewait", "-p", &port];
    args.extend_from_slice(extra);
    let t = Tracer::start(&args);
    listener.listen(8).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let mut clients = Vec::new();
    for d in dirs {
        let dir = match d {
            Dir::Made(p) => p,
            Dir::Later(rel) => cg.add(&rel),
        };
        let mut kid = KillOnDrop(
            Command::new("bash")
                .arg("-c")
                .arg(format!(
                    "read go; exec 3<>/dev/tcp/127.0.0.1/{port}; echo x >&3; read -t 5 -u 3 y; sleep 0.3; exec 3>&-"
                ))
                .stdin(Stdio::piped())
                .spawn_locked()
                .unwrap(),
        );
        let pid = kid.0.id();
        TestCgroups::enter(&dir, pid);
        kid.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        let (mut s, _) = listener.accept().unwrap();
        let mut b = [0u8; 2];
        s.read_exact(&mut b).unwrap();
        s.write_all(b"y\n").unwrap();
        assert!(kid.0.wait().unwrap().success());
        // No child may hold the socket while it closes (see FORK).
        let no_fork = FORK
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = s.read(&mut b); // the client's FIN
        drop(s);
        drop(no_fork);
        clients.push((pid, dir));
    }
    drop(listener);
    thread::sleep(Duration::from_millis(300));
    let (status, out, err) = t.stop();
    assert!(status.success(), "{err:?}");
    let records = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (records, clients, err)
}

/// The client connection record of process `pid`.
fn client_of(records: &[Value], pid: u32) -> &Value {
    let c: Vec<&Value> = conns(records)
        .into_iter()
        .filter(|c| c["role"] == "client" && c["owner"]["pid"] == pid)
        .collect();
    assert_eq!(c.len(), 1, "one client record of {pid}: {records:#?}");
    c[0]
}

fn inode(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(dir).unwrap().ino()
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn owners_carry_the_identity_of_their_cgroup_live_and_in_a_replay() {
    let mut cg = TestCgroups::new("ident");
    let [docker, pod, service] = rels();
    // The Docker scope exists before the tracer (its first scan finds it); the others are
    // made while it runs.
    let first = cg.add(&docker);
    /// The recording's directory, removed even on failure.
    struct TempDir(std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = TempDir(temp_dir("cgroup-ident"));
    let rec = dir.0.join("cg.rec");
    let (records, clients, err) = clients_in(
        &mut cg,
        vec![Dir::Made(first), Dir::Later(pod), Dir::Later(service)],
        &["--record", rec.to_str().unwrap()],
    );
    let base = cg.path_of(&cg.base);
    let want = [
        (
            format!("{base}/docker-{DOCKER}.scope"),
            Some(format!("docker-{DOCKER}.scope")),
            Some(DOCKER),
            None,
        ),
        (
            format!("{base}/{POD_SLICE}/cri-containerd-{CRI}.scope"),
            Some(format!("cri-containerd-{CRI}.scope")),
            Some(CRI),
            Some(POD_UID),
        ),
        (
            format!("{base}/tracer-test.service"),
            Some("tracer-test.service".to_string()),
            None,
            None,
        ),
    ];
    for ((pid, dir), (path, unit, ctr, pod)) in clients.iter().zip(&want) {
        let o = &client_of(&records, *pid)["owner"];
        assert_eq!(o["cgroup_id"].as_u64(), Some(inode(dir)), "{o}");
        assert_eq!(o["cgroup"], *path, "{o}");
        assert_eq!(o["unit"].as_str(), unit.as_deref(), "{o}");
        assert_eq!(o["container_id"].as_str(), *ctr, "{o}");
        assert_eq!(o["pod_uid"].as_str(), *pod, "{o}");
    }
    // Our own sockets (listener, accepted ones): the cgroup this test runs in.
    let me = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let mine = me.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    let listener = conns(&records)
        .into_iter()
        .find(|c| c["role"] == "listener")
        .unwrap();
    assert_eq!(listener["owner"]["cgroup"], mine, "{listener}");
    assert!(!err.iter().any(|l| l.contains("no cgroup2")), "{err:?}");

    // The recording carries the identities: a replay (in no such cgroup, no root needed)
    // shows the same connection records, and the short form in text.
    let replayed: Vec<Value> = String::from_utf8(
        Command::new(env!("CARGO_BIN_EXE_tracer"))
            .args(["replay", rec.to_str().unwrap(), "-o", "json"])
            .output_locked()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    // (`time_wait` aside: a recording does not tell "not looked up" (--no-timewait, null
    // live) from "looked up, not found", which a replay shows.)
    let without_tw = |r: &[Value]| -> Vec<Value> {
        conns(r)
            .into_iter()
            .map(|c| {
                let mut c = c.clone();
                c.as_object_mut().unwrap().remove("time_wait");
                c
            })
            .collect()
    };
    assert_eq!(without_tw(&replayed), without_tw(&records));
    let text = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["replay", rec.to_str().unwrap(), "--view", "connections"])
        .args(["--color", "never"])
        .output_locked()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    for tag in [
        "[ctr 3f2a9c1b7d0e]".to_string(),
        "[ctr c0ffee00d00d pod 1234abcd]".to_string(),
        "[tracer-test.service]".to_string(),
    ] {
        assert!(text.contains(&format!("(bash) {tag}")), "{tag}: {text}");
    }
    let recording = std::fs::read_to_string(&rec).unwrap();
    assert!(
        recording.contains(&format!(
            r#"{{"type":"cgroup","id":{},"path":"{base}/docker-{DOCKER}.scope"}}"#,
            inode(&clients[0].1)
        )),
        "{recording}"
    );
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn container_filter_keeps_only_that_containers_sockets() {
    let mut cg = TestCgroups::new("ctr");
    let dirs = rels().map(|r| Dir::Made(cg.add(&r)));
    let (records, clients, err) = clients_in(&mut cg, dirs.into(), &["--container", &DOCKER[..8]]);
    let c = conns(&records);
    assert_eq!(c.len(), 1, "{c:#?}");
    assert_eq!(c[0]["owner"]["pid"], clients[0].0);
    assert_eq!(c[0]["owner"]["container_id"], DOCKER);
    // Every record with an owner is that container's.
    let owned: Vec<&Value> = records.iter().filter(|v| v["owner"].is_object()).collect();
    assert!(owned.len() > 1, "{records:#?}");
    for v in owned {
        assert_eq!(v["owner"]["container_id"], DOCKER, "{v}");
    }
    let attached = err.iter().find(|l| l.contains("attached")).unwrap();
    assert!(
        attached.contains(&format!("owner container {} (in user space)", &DOCKER[..8])),
        "{attached}"
    );
    // The pod's container, by its Kubernetes containerID form.
    let dirs = rels().map(|r| Dir::Made(cg.base.join(r)));
    let id = format!("containerd://{}", &CRI[..12]);
    let (records, clients, _) = clients_in(&mut cg, dirs.into(), &["--container", &id]);
    let c = conns(&records);
    assert_eq!(c.len(), 1, "{c:#?}");
    assert_eq!(
        (&c[0]["owner"]["pid"], &c[0]["owner"]["pod_uid"]),
        (&clients[1].0.into(), &POD_UID.into())
    );
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn cgroup_filter_takes_paths_relative_to_the_cgroup2_root_or_under_its_mount() {
    let mut cg = TestCgroups::new("filter");
    let made: Vec<std::path::PathBuf> = rels().iter().map(|r| cg.add(r)).collect();
    let dirs = || made.iter().cloned().map(Dir::Made).collect::<Vec<_>>();
    // Relative to the cgroup2 root, without a leading slash.
    let rel = cg.path_of(&made[2]);
    let (records, clients, _) = clients_in(&mut cg, dirs(), &["--cgroup", &rel[1..]]);
    let c = conns(&records);
    assert_eq!(c.len(), 1, "{c:#?}");
    assert_eq!(c[0]["owner"]["pid"], clients[2].0);
    assert_eq!(c[0]["owner"]["unit"], "tracer-test.service");
    // The directory under the mount (on a hybrid host, /sys/fs/cgroup/unified/…).
    let abs = made[0].to_str().unwrap().to_string();
    let (records, clients, _) = clients_in(&mut cg, dirs(), &["--cgroup", &abs]);
    let c = conns(&records);
    assert_eq!(c.len(), 1, "{c:#?}");
    assert_eq!(c[0]["owner"]["pid"], clients[0].0);
    // A directory that is not cgroup v2 (/sys/fs/cgroup/cpu on a hybrid host is v1), or no
    // such cgroup: exit 2 before anything is loaded, naming the mount found.
    let root = cg.root.display().to_string();
    for bad in ["/proc", "tracer-no-such-cgroup/x.service"] {
        let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
            .args(["--cgroup", bad])
            .output_locked()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains(bad) && e.contains(&root), "{e}");
        assert!(!e.contains("attached"), "{e}");
    }
}
