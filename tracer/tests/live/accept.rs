//! Owners of accepted sockets in pre-fork servers: the process whose accept() returned the
//! socket (a worker), not the master that owns the listener and that the socket's softirq
//! transitions would only ever name.
use crate::harness::*;

/// Pids of `pid`'s children, from /proc.
fn children(pid: u32) -> Vec<u32> {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: kill with a pid this test started and a valid signal number.
    unsafe { libc::kill(pid as i32, sig) };
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on 127.0.0.1:`port` (connections made before the
/// tracer starts, so they are not in its output).
fn wait_listening(port: u16, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what} is not listening on {port}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Debian's nginx with its own configuration in a temporary directory (never the system's
/// service): a master and two workers on 127.0.0.1:`port`. Stopped (master and workers) and
/// its directory removed on drop.
struct Nginx {
    master: Option<Child>,
    dir: std::path::PathBuf,
    port: u16,
    workers: Vec<u32>,
}

impl Nginx {
    /// `locations`: extra `location` blocks of the server.
    fn start(locations: &str) -> Self {
        require_root();
        assert!(
            std::path::Path::new("/usr/sbin/nginx").exists(),
            "nginx missing: `cargo xtask test` installs nginx-light"
        );
        let dir = temp_dir("accept-nginx");
        let port = free_port();
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 2;\nuser root;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\nevents {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             \x20 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             \x20 server {{\n    listen 127.0.0.1:{port};\n    location / {{ return 200 \"ok\\n\"; }}\n    {locations}\n  }}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let master = Command::new("/usr/sbin/nginx")
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(&dir)
            .stdin(Stdio::null())
            .spawn_locked()
            .unwrap();
        let mut n = Self {
            master: Some(master),
            dir,
            port,
            workers: Vec::new(),
        };
        let pid = n.master_pid();
        let start = Instant::now();
        while n.workers.len() < 2 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nginx did not start its two workers: {:?}",
                std::fs::read_to_string(n.dir.join("error.log"))
            );
            thread::sleep(Duration::from_millis(20));
            n.workers = children(pid);
        }
        wait_listening(port, "nginx");
        n
    }

    fn master_pid(&self) -> u32 {
        self.master.as_ref().unwrap().id()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut m) = self.master.take() {
            let workers = children(m.id());
            kill(m.id(), libc::SIGTERM); // a fast shutdown: the workers go too
            let start = Instant::now();
            while m.try_wait().ok().flatten().is_none() && start.elapsed() < Duration::from_secs(5)
            {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = m.kill();
            let _ = m.wait();
            for w in workers.iter().chain(&self.workers) {
                kill(*w, libc::SIGKILL);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A pre-fork server made here (perl, which every Debian has): the parent binds and listens
/// on 127.0.0.1, forks `workers` children that accept and never close what they accept, and
/// never accepts itself. Master and children are killed on drop.
struct PreFork {
    master: Option<Child>,
    port: u16,
    workers: Vec<u32>,
}

const PREFORK: &str = r#"
use Socket;
socket(my $l, PF_INET, SOCK_STREAM, getprotobyname('tcp')) or die "socket: $!";
bind($l, sockaddr_in(0, inet_aton('127.0.0.1'))) or die "bind: $!";
listen($l, 16) or die "listen: $!";
my ($port) = sockaddr_in(getsockname($l));
my @kids;
for (1 .. $ARGV[0]) {
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        my @held;
        while (1) { my $c; accept($c, $l) and push @held, $c; }
    }
    push @kids, $pid;
}
$| = 1;
print "$port @kids\n";
close(STDOUT);
sleep 1000 while 1;
"#;

impl PreFork {
    fn start(workers: usize) -> Self {
        let mut master = Command::new("perl")
            .arg("-e")
            .arg(PREFORK)
            .arg(workers.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn_locked()
            .unwrap();
        let mut line = String::new();
        BufReader::new(master.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut words = line.split_whitespace().map(|w| w.parse::<u32>().unwrap());
        let port = u16::try_from(words.next().expect("perl printed its port")).unwrap();
        let workers: Vec<u32> = words.collect();
        Self {
            master: Some(master),
            port,
            workers,
        }
    }

    fn master_pid(&self) -> u32 {
        self.master.as_ref().unwrap().id()
    }
}

impl Drop for PreFork {
    fn drop(&mut self) {
        for w in &self.workers {
            kill(*w, libc::SIGKILL);
        }
        if let Some(mut m) = self.master.take() {
            let _ = m.kill();
            let _ = m.wait();
        }
    }
}

/// Connects to `port` and waits `hold` (long enough for the server to accept).
fn connect(port: u16, hold: Duration) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    thread::sleep(hold);
    s
}

/// Closes `s` with a RST (SO_LINGER 0).
fn reset(s: TcpStream) {
    let s = Socket::from(s);
    s.set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
}

fn records(out: &[String]) -> Vec<Value> {
    out.iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The server side's connection record of the connection from local port `client_port`.
fn server_record(records: &[Value], port: u16, client_port: u16) -> Value {
    records
        .iter()
        .find(|v| v["type"] == "connection" && v["sport"] == port && v["dport"] == client_port)
        .unwrap_or_else(|| panic!("no server record for :{client_port}: {records:#?}"))
        .clone()
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn a_forked_child_that_accepts_owns_the_socket_exactly() {
    let err = forked_child_owns(&[]);
    // Kernels from 5.11 on (this one: 6.18) take the BTF-pointer walk; older ones (the VM
    // matrix's 5.10) the helper's reads.
    let btf_walk = kernel_at_least(5, 11);
    assert!(
        err.iter()
            .any(|l| l.starts_with("tracer: accepting processes from")
                && l.ends_with("(file table through BTF pointers)") == btf_walk),
        "{err:?}"
    );
}

/// The same with a read per socket field (where the kernel's `__sk_common` is not laid out
/// as the one-copy read expects).
#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn a_forked_child_owns_the_socket_with_the_field_by_field_reads() {
    let err = forked_child_owns(&["--force-portable"]);
    assert!(
        err.iter()
            .any(|l| l.starts_with("tracer: accepting processes from")
                && !l.contains("BTF pointers")),
        "{err:?}"
    );
}

/// Returns the tracer's stderr.
fn forked_child_owns(extra: &[&str]) -> Vec<String> {
    let server = PreFork::start(1);
    let (port, child) = (server.port, server.workers[0]);
    wait_listening(port, "the pre-fork server");
    thread::sleep(Duration::from_millis(100));
    let p = port.to_string();
    let mut args = vec!["-o", "json", "--no-timewait", "-p", &p];
    args.extend_from_slice(extra);
    let t = Tracer::start(&args);
    t.wait_stderr("accepting processes from", Duration::from_secs(5));
    let c = connect(port, Duration::from_millis(300));
    let client_port = c.local_addr().unwrap().port();
    reset(c);
    t.wait_json(1, |v| {
        v["type"] == "connection" && v["sport"] == port && v["dport"] == client_port
    });
    let (status, out, err) = t.stop();
    assert!(status.success(), "{err:?}");
    let records = records(&out);
    let s = server_record(&records, port, client_port);
    assert_eq!(
        (s["owner"]["pid"].as_u64(), s["owner"]["source"].as_str()),
        (Some(child.into()), Some("accept")),
        "the child {child}, not the master {}: {s}",
        server.master_pid()
    );
    assert_eq!(s["owner"]["comm"], "perl");
    assert_eq!(s["close"], "reset_received");
    assert_eq!(states(&s), ["LISTEN", "SYN_RECV", "ESTABLISHED", "CLOSE"]);
    // The accept itself is no record of its own; the transitions after it name the child.
    assert!(records.iter().all(|v| v["type"] != "accept"));
    let last = records
        .iter()
        .rfind(|v| v["type"] == "transition" && v["sock"] == s["sock"])
        .unwrap();
    assert_eq!(last["owner"]["pid"].as_u64(), Some(child.into()), "{last}");
    err
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn an_nginx_worker_owns_a_connection_the_client_reset() {
    let nginx = Nginx::start("");
    let port = nginx.port;
    let t = Tracer::start(&["-o", "json", "--no-timewait", "-p", &port.to_string()]);
    let c = connect(port, Duration::from_millis(300));
    let client_port = c.local_addr().unwrap().port();
    reset(c);
    t.wait_json(1, |v| {
        v["type"] == "connection" && v["sport"] == port && v["dport"] == client_port
    });
    let (status, out, err) = t.stop();
    assert!(status.success(), "{err:?}");
    let s = server_record(&records(&out), port, client_port);
    let master = nginx.master_pid();
    let workers = children(master);
    let pid = s["owner"]["pid"].as_u64().unwrap() as u32;
    assert!(
        workers.contains(&pid) && pid != master,
        "owner {pid} is not a worker {workers:?} of master {master}: {s}"
    );
    assert_eq!(s["owner"]["source"], "accept", "{s}");
    assert_eq!(s["owner"]["comm"], "nginx", "{s}");
    assert_eq!(s["close"], "reset_received", "{s}");
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn a_close_wait_held_by_an_nginx_worker_is_reported_stuck_with_the_worker() {
    // nginx proxies to an upstream that never answers (a listener nobody accepts from) and,
    // with proxy_ignore_client_abort, does not look at the client while it waits: the
    // client's half-close leaves nginx's side in CLOSE_WAIT, held by the worker.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = upstream.local_addr().unwrap().port();
    let nginx = Nginx::start(&format!(
        "location /slow {{ proxy_pass http://127.0.0.1:{up}; proxy_ignore_client_abort on; proxy_read_timeout 60s; proxy_connect_timeout 60s; }}"
    ));
    let port = nginx.port;
    let t = Tracer::start(&["stuck", "2s", "-o", "json", "-p", &port.to_string()]);
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let client_port = c.local_addr().unwrap().port();
    let ours =
        move |v: &Value| v["type"] == "stuck" && v["sport"] == port && v["dport"] == client_port;
    t.wait_json(1, ours);
    let (status, out, err) = t.stop();
    assert!(status.success(), "{err:?}");
    drop(c);
    let records = records(&out);
    let s = records.iter().find(|v| ours(v)).unwrap();
    assert_eq!(s["state"], "CLOSE_WAIT", "{s}");
    let master = nginx.master_pid();
    let workers = children(master);
    let pid = s["owner"]["pid"].as_u64().unwrap() as u32;
    assert!(
        workers.contains(&pid) && pid != master,
        "owner {pid} is not a worker {workers:?} of master {master}: {s}"
    );
    assert_eq!(s["owner"]["source"], "accept", "{s}");
    drop(upstream);
}

#[test]
#[ignore = "needs root and a BPF-capable kernel: run `cargo xtask test`"]
fn a_close_wait_held_by_a_forked_worker_is_stuck_with_that_worker_and_pid_follows_it() {
    let server = PreFork::start(2);
    let port = server.port;
    wait_listening(port, "the pre-fork server");
    thread::sleep(Duration::from_millis(100));
    // --pid of both workers (not the master): the kernel's owner map learns them at accept.
    let port_s = port.to_string();
    let pids: Vec<String> = server.workers.iter().map(u32::to_string).collect();
    let mut args = vec!["stuck", "2s", "-o", "json", "-p", &port_s];
    for p in &pids {
        args.extend(["--pid", p.as_str()]);
    }
    let t = Tracer::start(&args);
    let c = connect(port, Duration::from_millis(300));
    c.shutdown(std::net::Shutdown::Write).unwrap(); // the worker never closes: CLOSE_WAIT
    let client_port = c.local_addr().unwrap().port();
    let ours =
        move |v: &Value| v["type"] == "stuck" && v["sport"] == port && v["dport"] == client_port;
    t.wait_json(1, ours);
    let (status, out, err) = t.stop();
    assert!(status.success(), "{err:?}");
    drop(c);
    let records = records(&out);
    let s = records.iter().find(|v| ours(v)).unwrap();
    let pid = s["owner"]["pid"].as_u64().unwrap() as u32;
    assert!(
        server.workers.contains(&pid),
        "owner {pid} is not a worker {:?} (master {}): {s}",
        server.workers,
        server.master_pid()
    );
    assert_eq!(
        (s["state"].as_str(), s["owner"]["source"].as_str()),
        (Some("CLOSE_WAIT"), Some("accept")),
        "{s}"
    );
}
