//! What every live test shares: the tracer under test, sockets on loopback, the fork lock.

pub use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

pub use serde_json::Value;
pub use socket2::{Domain, Socket, Type};

/// Child processes hold a copy of every open file descriptor between their fork and their
/// exec. A socket this process closes in that window is really closed (its FIN sent, its
/// `close()` transition run) by the child at its exec: the kernel then reports the child as
/// the task, and an owner assertion fails. Tests run in parallel, so spawning takes this
/// lock exclusively and closing a connection whose owner is checked takes it shared.
pub static FORK: std::sync::RwLock<()> = std::sync::RwLock::new(());

pub trait Locked {
    fn spawn_locked(&mut self) -> std::io::Result<Child>;
    fn output_locked(&mut self) -> std::io::Result<std::process::Output>;
    fn status_locked(&mut self) -> std::io::Result<std::process::ExitStatus>;
}

impl Locked for Command {
    fn spawn_locked(&mut self) -> std::io::Result<Child> {
        let _g = FORK
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.spawn()
    }
    fn output_locked(&mut self) -> std::io::Result<std::process::Output> {
        // As `output()` does: nothing in, both outputs collected.
        self.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.spawn_locked()?.wait_with_output()
    }
    fn status_locked(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.spawn_locked()?.wait()
    }
}

pub const NEEDS_ROOT: &str = "needs root and a BPF-capable kernel: run `cargo xtask test`";

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "{NEEDS_ROOT}");
}

/// A running tracer whose stdout and stderr are collected line by line.
pub struct Tracer {
    pub child: Child,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

pub fn collect(r: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    lines
}

impl Tracer {
    /// Starts the tracer and waits until it says it is attached.
    pub fn start(args: &[&str]) -> Self {
        Self::start_cmd(Command::new(env!("CARGO_BIN_EXE_tracer")).args(args))
    }

    /// [`Tracer::start`] with a command the test has set up further (its environment).
    pub fn start_cmd(cmd: &mut Command) -> Self {
        require_root();
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn_locked()
            .expect("spawn tracer");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let t = Self {
            child,
            stdout,
            stderr,
        };
        t.wait_stderr(
            "attached to sock:inet_sock_set_state",
            Duration::from_secs(30),
        );
        t
    }

    pub fn wait_stderr(&self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while !self
            .stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
        {
            assert!(
                start.elapsed() < timeout,
                "tracer did not print {needle:?} within {timeout:?}; stderr: {:?}",
                self.stderr.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `n` JSON records satisfy `pred`.
    pub fn wait_json(&self, n: usize, pred: impl Fn(&Value) -> bool) {
        let start = Instant::now();
        loop {
            let count = self.json().iter().filter(|v| pred(v)).count();
            if count >= n {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "only {count} of {n} expected records after 10s; stdout: {:#?}",
                self.stdout.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn json(&self) -> Vec<Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// SIGINT, then the exit status and stderr.
    pub fn stop(mut self) -> (std::process::ExitStatus, Vec<String>, Vec<String>) {
        // SAFETY: kill with a valid pid of our own child and a valid signal number.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = wait_timeout(&mut self.child, Duration::from_secs(10));
        thread::sleep(Duration::from_millis(50)); // let the reader threads see EOF
        let out = self.stdout.lock().unwrap().clone();
        let err = self.stderr.lock().unwrap().clone();
        (status, out, err)
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The kernel's counts in tracer's exit line (`tracer: stopped (…): N transitions, E context
/// events, …, lost L (…)…, filtered out in the kernel: X of M TCP events`). `transitions` and
/// `context_events` are the records that arrived from the kernel and passed the port and
/// address filters again in user space (the owner filters only decide what is printed), so
/// with kernel filters on they are what the kernel submitted; `filtered_out` and `seen` are
/// the kernel's own counters (M = TCP events its programs saw, X = M − submitted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopCounts {
    pub transitions: u64,
    pub context_events: u64,
    pub lost: u64,
    pub filtered_out: u64,
    pub seen: u64,
}

impl StopCounts {
    /// From a stopped tracer's stderr; panics (naming the line) if a count is missing.
    pub fn from_stderr(err: &[String]) -> Self {
        let line = err
            .iter()
            .find(|l| l.starts_with("tracer: stopped"))
            .unwrap_or_else(|| panic!("no exit line in {err:#?}"));
        let before = |needle: &str| -> u64 {
            let head = &line[..line
                .find(needle)
                .unwrap_or_else(|| panic!("no `{needle}` in {line}"))];
            head.rsplit(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no number before `{needle}` in {line}"))
        };
        let after = |needle: &str| -> u64 {
            let tail = &line[line
                .find(needle)
                .unwrap_or_else(|| panic!("no `{needle}` in {line}"))
                + needle.len()..];
            tail.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no number after `{needle}` in {line}"))
        };
        Self {
            transitions: before(" transitions,"),
            context_events: before(" context events"),
            lost: after(", lost "),
            filtered_out: after("filtered out in the kernel: "),
            seen: before(" TCP events"),
        }
    }

    /// What the kernel's programs submitted: M − X.
    pub fn submitted(&self) -> u64 {
        self.seen - self.filtered_out
    }
}

/// Whether the tracer said it attached the accept program (accepted sockets are then
/// reported, one record each, and counted as submitted by the kernel).
pub fn accept_attached(err: &[String]) -> bool {
    err.iter()
        .any(|l| l.starts_with("tracer: accepting processes from"))
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(
            start.elapsed() < timeout,
            "tracer did not exit within {timeout:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A listening socket bound (not yet listening) to an ephemeral port, so the tracer can be
/// started with that port before `listen()` emits CLOSE → LISTEN.
pub fn bound(v6: bool) -> (Socket, SocketAddr) {
    let (domain, addr): (Domain, SocketAddr) = if v6 {
        (Domain::IPV6, (Ipv6Addr::LOCALHOST, 0).into())
    } else {
        (Domain::IPV4, (Ipv4Addr::LOCALHOST, 0).into())
    };
    let s = Socket::new(domain, Type::STREAM, None).unwrap();
    s.bind(&addr.into()).unwrap();
    let local = s.local_addr().unwrap().as_socket().unwrap();
    (s, local)
}

#[derive(Clone, Copy, PartialEq)]
pub enum FirstCloser {
    Client,
    Server,
}

/// One complete connection: listen, connect, accept, a byte each way, close in the given
/// order (each side waits for the other's FIN when it closes second), close the listener.
/// Returns the client's local port.
pub fn one_connection(listener: Socket, addr: SocketAddr, first: FirstCloser) -> u16 {
    listener.listen(16).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let mut client = TcpStream::connect(addr).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let cport = client.local_addr().unwrap().port();
    client.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    server.read_exact(&mut b).unwrap();
    server.write_all(b"y").unwrap();
    client.read_exact(&mut b).unwrap();
    let (first_s, mut second_s) = match first {
        FirstCloser::Client => (client, server),
        FirstCloser::Server => (server, client),
    };
    // No child may hold these sockets while they close (see FORK).
    let _no_fork = FORK
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // A plain close(): shutdown() first would add the kernel's FIN_WAIT1 → FIN_WAIT1.
    drop(first_s);
    // The second closer sees EOF (the FIN), then closes.
    assert_eq!(second_s.read(&mut b).unwrap(), 0);
    drop(second_s);
    drop(listener);
    cport
}

/// A connection the client closes first and the server `delay` later.
pub fn client_closes_first(listener: Socket, addr: SocketAddr, delay: Duration) -> u16 {
    listener.listen(4).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let client = TcpStream::connect(addr).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let cport = client.local_addr().unwrap().port();
    drop(client);
    let mut b = [0u8; 1];
    assert_eq!(server.read(&mut b).unwrap(), 0);
    thread::sleep(delay);
    drop(server);
    drop(listener);
    cport
}

/// How a client's and an accepted socket's timelines begin, and how the side that closes
/// first (active) and second (passive) end.
pub const CLIENT_OPEN: [&str; 2] = ["CLOSE", "SYN_SENT"];
pub const SERVER_OPEN: [&str; 2] = ["LISTEN", "SYN_RECV"];
pub const ACTIVE_CLOSE: [&str; 4] = ["ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "CLOSE"];
pub const PASSIVE_CLOSE: [&str; 4] = ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSE"];

pub fn timeline(head: &[&str], tail: &[&str]) -> Vec<String> {
    head.iter().chain(tail).map(|s| s.to_string()).collect()
}

pub fn states(v: &Value) -> Vec<String> {
    v["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

pub fn conns(records: &[Value]) -> Vec<&Value> {
    records
        .iter()
        .filter(|v| v["type"] == "connection")
        .collect()
}

/// Records with `"type": ty`.
pub fn of_type<'a>(records: &'a [Value], ty: &str) -> Vec<&'a Value> {
    records.iter().filter(|v| v["type"] == ty).collect()
}

/// A network namespace for one test (`ip netns add`), removed on drop.
pub struct Netns(String);

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!("tracer-{tag}-{}", std::process::id());
        let ok = |c: &mut Command| assert!(c.status_locked().unwrap().success(), "{c:?}");
        ok(Command::new("ip").args(["netns", "add", &name]));
        ok(Command::new("ip").args(["netns", "exec", &name, "ip", "link", "set", "lo", "up"]));
        Self(name)
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }

    /// Runs `f` on a thread that has entered this namespace (sockets it creates live there).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            // SAFETY: a valid namespace fd; setns changes only this thread's namespace.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .status_locked();
    }
}

/// An independent count of `sock:inet_sock_set_state` events: a tracefs instance with the
/// event enabled and filtered to one port. Removed on drop.
pub struct TracefsCount(std::path::PathBuf);

impl TracefsCount {
    pub fn new(port: u16) -> Self {
        Self::with_buffer(port, 16_384)
    }

    /// With a buffer of `kb` KiB per CPU (it must hold every event: they are read back).
    pub fn with_buffer(port: u16, kb: u32) -> Self {
        let dir = std::path::PathBuf::from(format!(
            "/sys/kernel/tracing/instances/tracer-test-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("buffer_size_kb"), kb.to_string()).unwrap();
        let ev = dir.join("events/sock/inet_sock_set_state");
        std::fs::write(
            ev.join("filter"),
            format!("sport == {port} || dport == {port}"),
        )
        .unwrap();
        std::fs::write(ev.join("enable"), "1").unwrap();
        Self(dir)
    }

    pub fn count(&self) -> usize {
        self.count_of("sock/inet_sock_set_state")
    }

    /// Another event, `category/name` (e.g. `tcp/tcp_retransmit_skb`), filtered by `filter`,
    /// counted in an instance of its own (`tag` names it).
    pub fn event(tag: &str, event: &str, filter: &str) -> Self {
        let dir = std::path::PathBuf::from(format!(
            "/sys/kernel/tracing/instances/tracer-test-{}-{tag}",
            std::process::id()
        ));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("buffer_size_kb"), "4096").unwrap();
        let ev = dir.join("events").join(event);
        std::fs::write(ev.join("filter"), filter).unwrap();
        std::fs::write(ev.join("enable"), "1").unwrap();
        Self(dir)
    }

    /// How many times `event` (as given to [`Self::event`]) fired; stops counting.
    pub fn count_of(&self, event: &str) -> usize {
        std::fs::write(self.0.join("events").join(event).join("enable"), "0").unwrap();
        let text = std::fs::read_to_string(self.0.join("trace")).unwrap();
        assert!(
            !text.contains("LOST"),
            "the counting instance itself lost events"
        );
        let name = event.rsplit('/').next().unwrap_or(event);
        text.lines()
            .filter(|l| l.contains(&format!("{name}:")))
            .count()
    }
}

impl Drop for TracefsCount {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tracer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Where cgroup2 is mounted, from /proc/self/mountinfo (read here on its own, not through
/// tracer's code): /sys/fs/cgroup on a pure v2 host, /sys/fs/cgroup/unified on a hybrid one.
pub fn cgroup2_root() -> std::path::PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let (fields, fs) = l.split_once(" - ")?;
            fs.starts_with("cgroup2 ")
                .then(|| fields.split(' ').nth(4).unwrap().replace("\\040", " "))
        })
        .expect("a cgroup2 mount (these tests need one)")
        .into()
}

/// Cgroup v2 directories for one test under `<cgroup2 root>/tracer-test-<pid>-<tag>`. On
/// drop (failure included): the processes still in them go back to the root cgroup, then
/// the directories are removed, leaves first.
pub struct TestCgroups {
    pub root: std::path::PathBuf,
    pub base: std::path::PathBuf,
    created: Vec<std::path::PathBuf>,
}

impl TestCgroups {
    pub fn new(tag: &str) -> Self {
        let root = cgroup2_root();
        let base = root.join(format!("tracer-test-{}-{tag}", std::process::id()));
        std::fs::create_dir(&base).unwrap();
        Self {
            root,
            base,
            created: Vec::new(),
        }
    }

    /// Creates `rel` (and the directories above it) under the base; returns its directory.
    pub fn add(&mut self, rel: &str) -> std::path::PathBuf {
        let mut dir = self.base.clone();
        for c in rel.split('/') {
            dir.push(c);
            if !dir.exists() {
                std::fs::create_dir(&dir).unwrap();
                self.created.push(dir.clone());
            }
        }
        dir
    }

    /// Its cgroup path (`/tracer-test-…/x.service`), as /proc/PID/cgroup shows it.
    pub fn path_of(&self, dir: &std::path::Path) -> String {
        format!("/{}", dir.strip_prefix(&self.root).unwrap().display())
    }

    /// Moves process `pid` into the cgroup at `dir`.
    pub fn enter(dir: &std::path::Path, pid: u32) {
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", dir.display()));
    }
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        let dirs: Vec<_> = self
            .created
            .iter()
            .rev()
            .chain([&self.base])
            .cloned()
            .collect();
        for d in &dirs {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
            }
        }
        for d in &dirs {
            // A process just killed may take a moment to leave.
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A child process killed (and reaped) on drop.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a command that must succeed (output shown if it does not).
pub fn run_ok(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output_locked()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two network namespaces joined by a veth pair: `a` at 10.231.`net`.1/24, `b` at
/// 10.231.`net`.2/24. Nothing leaves the machine; dropping it removes both namespaces (and
/// with them the veth pair and anything configured inside).
pub struct NsPair {
    pub a: Netns,
    pub b: Netns,
    pub a_addr: Ipv4Addr,
    pub b_addr: Ipv4Addr,
}

impl NsPair {
    pub fn new(tag: &str, net: u8) -> Self {
        let a = Netns::new(&format!("{tag}-a"));
        let b = Netns::new(&format!("{tag}-b"));
        let (a_addr, b_addr) = (
            Ipv4Addr::new(10, 231, net, 1),
            Ipv4Addr::new(10, 231, net, 2),
        );
        run_ok(&[
            "ip", "-n", &a.0, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns",
            &b.0,
        ]);
        for (ns, dev, addr) in [(&a, "va", a_addr), (&b, "vb", b_addr)] {
            run_ok(&[
                "ip",
                "-n",
                &ns.0,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                dev,
            ]);
            run_ok(&["ip", "-n", &ns.0, "link", "set", dev, "up"]);
        }
        Self {
            a,
            b,
            a_addr,
            b_addr,
        }
    }
}

impl Netns {
    pub fn name(&self) -> &str {
        &self.0
    }

    /// `ip netns exec NS ARGS…`, which must succeed.
    pub fn exec(&self, args: &[&str]) {
        let mut all = vec!["ip", "netns", "exec", &self.0];
        all.extend_from_slice(args);
        run_ok(&all);
    }
}

/// An nftables table in a namespace (`nft -f` of `body` inside `table ip NAME { … }`),
/// deleted on drop.
pub struct NftTable<'a> {
    ns: &'a Netns,
    name: String,
}

impl<'a> NftTable<'a> {
    pub fn new(ns: &'a Netns, name: &str, body: &str) -> Self {
        let script = format!("table ip {name} {{\n{body}\n}}\n");
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn_locked()
            .expect("nft (install nftables)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft -f: {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            ns,
            name: name.into(),
        }
    }
}

impl Drop for NftTable<'_> {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.ns.name(),
                "nft",
                "delete",
                "table",
                "ip",
                &self.name,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status_locked();
    }
}

/// Two network namespaces joined by a link that delays every packet by `delay` each way: a
/// TUN device in each (`a` at 10.232.`net`.1, `b` at 10.232.`net`.2, point to point) and a
/// relay thread per direction that reads each packet from one device and writes it to the
/// other `delay` after it read it (this kernel has no `sch_netem`). A packet is never
/// forwarded early, so every round trip takes at least twice `delay`; the relay's own
/// lateness (its wake-up on a busy machine) only adds. Dropping it stops the relays, then
/// removes both namespaces (and the devices with them).
pub struct DelayedPair {
    stop: Arc<std::sync::atomic::AtomicBool>,
    relays: Vec<thread::JoinHandle<()>>,
    pub a: Netns,
    pub b: Netns,
    pub a_addr: Ipv4Addr,
    pub b_addr: Ipv4Addr,
}

/// A TUN device (IFF_TUN | IFF_NO_PI: bare IP packets) named `name`, created in the calling
/// thread's network namespace, non-blocking.
fn open_tun(name: &str) -> std::fs::File {
    use std::os::{fd::AsRawFd, unix::fs::OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")
        .expect("/dev/net/tun (the tun driver)");
    // SAFETY: ifreq is plain old data; all zeros is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF with a valid ifreq on an open /dev/net/tun descriptor.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    assert_eq!(
        rc,
        0,
        "TUNSETIFF {name}: {}",
        std::io::Error::last_os_error()
    );
    f
}

/// Moves packets from `from` to `to`, each `delay` after it was read, until `stop`.
fn relay(
    from: std::fs::File,
    to: std::fs::File,
    delay: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::{collections::VecDeque, os::fd::AsRawFd, sync::atomic::Ordering};
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        // Sleep until the next packet is due or one arrives (at most 10 ms, to see `stop`).
        let wait = queue.front().map_or(Duration::from_millis(10), |(due, _)| {
            due.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(10))
        });
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: wait.as_nanos() as libc::c_long,
        };
        let mut pfd = libc::pollfd {
            fd: from.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a valid timespec, no signal mask.
        unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        loop {
            match (&from).read(&mut buf) {
                Ok(n) => queue.push_back((Instant::now() + delay, buf[..n].to_vec())),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return, // the device went away
            }
        }
        let now = Instant::now();
        while queue.front().is_some_and(|(due, _)| *due <= now) {
            let (_, p) = queue.pop_front().expect("checked");
            // A full device queue drops the packet, as a real link would.
            let _ = (&to).write(&p);
        }
    }
}

impl DelayedPair {
    pub fn new(tag: &str, net: u8, delay: Duration) -> Self {
        let a = Netns::new(&format!("{tag}-a"));
        let b = Netns::new(&format!("{tag}-b"));
        let (a_addr, b_addr) = (
            Ipv4Addr::new(10, 232, net, 1),
            Ipv4Addr::new(10, 232, net, 2),
        );
        let ta = a.run(|| open_tun("tdelay"));
        let tb = b.run(|| open_tun("tdelay"));
        for (ns, local, peer) in [(&a, a_addr, b_addr), (&b, b_addr, a_addr)] {
            run_ok(&[
                "ip",
                "-n",
                &ns.0,
                "addr",
                "add",
                &local.to_string(),
                "peer",
                &format!("{peer}/32"),
                "dev",
                "tdelay",
            ]);
            run_ok(&["ip", "-n", &ns.0, "link", "set", "tdelay", "up"]);
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ta2, tb2) = (ta.try_clone().unwrap(), tb.try_clone().unwrap());
        let relays = [(ta, tb), (tb2, ta2)]
            .into_iter()
            .map(|(from, to)| {
                let stop = stop.clone();
                thread::spawn(move || relay(from, to, delay, stop))
            })
            .collect();
        Self {
            stop,
            relays,
            a,
            b,
            a_addr,
            b_addr,
        }
    }
}

impl Drop for DelayedPair {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in self.relays.drain(..) {
            let _ = r.join();
        }
    }
}

/// Whether the kernel has sock:inet_sk_error_report (5.15+), which carries a socket's error
/// (`ECONNREFUSED`, `ECONNRESET`). Without it (5.10) tracer must say so on stderr; the
/// connections then have no `error`.
pub fn error_reports(stderr: &[String]) -> bool {
    let there =
        std::path::Path::new("/sys/kernel/tracing/events/sock/inet_sk_error_report").exists();
    if !there {
        assert!(
            stderr
                .iter()
                .any(|l| l.contains("context events unavailable: sock:inet_sk_error_report")),
            "{stderr:?}"
        );
    }
    there
}

/// Whether the running kernel is at least `major.minor` (from uname's release).
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}
