//! `tracer demo`: opens one connection on loopback while tracing it, then shows it as a
//! ladder. One command that teaches the TCP state machine from the real kernel.
use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    thread::sleep,
    time::Duration,
};

use anyhow::Context as _;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use crate::cli::Scenario;

/// After the scenario, how long the tracer waits at most for its sockets to be reported
/// (the client's TIME_WAIT lookup is the slowest, ≤ 1.5 s).
pub const SETTLE: Duration = Duration::from_secs(3);

pub struct Demo {
    scenario: Scenario,
    pause: Duration,
    /// Bound, not yet listening: the port is known before the kernel filter is set, and
    /// `listen()` happens while tracing, so the listener's own transitions show too.
    socket: Option<Socket>,
    port: u16,
    /// Set by the tracer once it has seen a socket enter CLOSING (`simultaneous`).
    pub crossed: Arc<AtomicBool>,
}

impl Demo {
    pub fn prepare(scenario: Scenario, pause: Duration) -> anyhow::Result<Self> {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
            .context("creating the demo's socket")?;
        socket
            .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .context("binding the demo's socket to 127.0.0.1")?;
        let port = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port())
            .context("reading the demo socket's port")?;
        eprintln!(
            "tracer: demo `{}`: {}, on 127.0.0.1:{port}, pausing {} between steps",
            scenario_name(scenario),
            scenario.describe(),
            crate::units::human_ns(pause.as_nanos().min(u128::from(u64::MAX)) as u64)
        );
        Ok(Self {
            scenario,
            pause,
            socket: Some(socket),
            port,
            crossed: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs the scenario on a blocking thread.
    pub fn start(&mut self) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        let (scenario, pause, port) = (self.scenario, self.pause, self.port);
        let crossed = self.crossed.clone();
        let socket = self.socket.take();
        let (tx, rx) = tokio::sync::oneshot::channel();
        // A thread of its own, named, so the diagram's owner reads `tracer-demo`.
        let spawned = std::thread::Builder::new()
            .name("tracer-demo".into())
            .spawn(move || {
                let r = match socket {
                    Some(s) => run(scenario, pause, s, port, &crossed),
                    None => Err(anyhow::anyhow!("the demo scenario was started twice")),
                };
                let _ = tx.send(r);
            });
        tokio::spawn(async move {
            spawned.context("starting the demo thread")?;
            rx.await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the demo thread ended without a result")))
        })
    }

    /// What to look at, printed after the diagram.
    pub fn epilogue(&self) -> &'static str {
        match self.scenario {
            Scenario::Normal => {
                "tracer: demo: the three-way handshake (SYN, SYN-ACK, ACK), then the four-way teardown: the client closed first (FIN_WAIT1, FIN_WAIT2, then TIME_WAIT for 60 s), the server went CLOSE_WAIT until its application closed, then LAST_ACK. Try `tracer demo server-first`, `reset`, `refused`."
            }
            Scenario::ServerFirst => {
                "tracer: demo: the server closed first, so it is the server that went FIN_WAIT1, FIN_WAIT2 and TIME_WAIT, while the client sat in CLOSE_WAIT until it closed too. TIME_WAIT always lands on the side that closes first."
            }
            Scenario::Reset => {
                "tracer: demo: with SO_LINGER 0, close() sends a RST and frees the socket at once: no FIN exchange, no TIME_WAIT; the server learns of it as ECONNRESET."
            }
            Scenario::Refused => {
                "tracer: demo: nobody listened on the port, so the kernel answered the SYN with a RST: SYN_SENT -> CLOSE and ECONNREFUSED for connect()."
            }
            Scenario::Simultaneous => {
                "tracer: demo: both ends sent their FIN before receiving the other's: each went FIN_WAIT1 -> CLOSING (a FIN arrived while its own was unacknowledged) -> CLOSE, and both, having closed actively, hold a TIME_WAIT. On loopback the FINs cross only sometimes; the tries where they did not are not drawn."
            }
        }
    }
}

fn scenario_name(s: Scenario) -> String {
    use clap::ValueEnum as _;
    s.to_possible_value()
        .map_or_else(|| format!("{s:?}"), |v| v.get_name().to_string())
}

fn run(
    scenario: Scenario,
    pause: Duration,
    socket: Socket,
    port: u16,
    crossed: &AtomicBool,
) -> anyhow::Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    if scenario == Scenario::Refused {
        // The socket stays bound without listening: the port is ours, and a SYN to it is
        // answered with a RST.
        sleep(pause);
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e).context("connect() failed, but not with ECONNREFUSED"),
            Ok(_) => anyhow::bail!("connect() to a port nobody listens on succeeded"),
        }
        sleep(pause);
        drop(socket);
        return Ok(());
    }
    socket.listen(16).context("listen() on the demo socket")?;
    sleep(pause);
    if scenario == Scenario::Simultaneous {
        simultaneous(&socket, addr, crossed)?;
        sleep(pause);
        drop(socket);
        return Ok(());
    }
    let mut client = TcpStream::connect(addr).context("connect() to the demo listener")?;
    let (server, _) = socket.accept().context("accept() on the demo listener")?;
    let mut server: TcpStream = server.into();
    sleep(pause);
    // A request and a reply: data moves in ESTABLISHED, no state changes.
    client.write_all(b"hello\n").context("client write")?;
    let mut buf = [0u8; 6];
    server.read_exact(&mut buf).context("server read")?;
    server.write_all(b"hi\n").context("server write")?;
    let mut buf = [0u8; 3];
    client.read_exact(&mut buf).context("client read")?;
    sleep(pause);
    match scenario {
        Scenario::Normal => {
            drop(client);
            sleep(pause);
            drop(server);
        }
        Scenario::ServerFirst => {
            drop(server);
            sleep(pause);
            drop(client);
        }
        Scenario::Reset => {
            SockRef::from(&client)
                .set_linger(Some(Duration::ZERO))
                .context("SO_LINGER 0 on the client")?;
            drop(client);
            sleep(pause);
            drop(server);
        }
        Scenario::Refused | Scenario::Simultaneous => {}
    }
    sleep(pause);
    drop(socket);
    Ok(())
}

/// Most tries at a simultaneous close (about 1 in 6 crossed on a 2-core machine here).
const SIMULTANEOUS_TRIES: u32 = 100;

/// Connections whose ends call shutdown(SHUT_WR) at the same instant from two threads, until
/// one's FINs cross (its state passes CLOSING).
fn simultaneous(listener: &Socket, addr: SocketAddr, crossed: &AtomicBool) -> anyhow::Result<()> {
    for i in 0..SIMULTANEOUS_TRIES {
        // The FINs cross only if one arrives while the other end is inside its own
        // shutdown() (holding its socket lock): sweep a small head start over the tries,
        // given to either side in turn.
        let head_start = Duration::from_nanos(u64::from(i / 2 % 25) * 400);
        let client_waits = i % 2 == 0;
        let client = TcpStream::connect(addr).context("connect() to the demo listener")?;
        let (server, _) = listener.accept().context("accept() on the demo listener")?;
        let server: TcpStream = server.into();
        // A spinning barrier: std's Barrier wakes the waiter through the scheduler, tens of
        // microseconds after the other thread is already past it.
        let ready = std::sync::atomic::AtomicU32::new(0);
        let barrier = || {
            ready.fetch_add(1, Ordering::AcqRel);
            while ready.load(Ordering::Acquire) < 2 {
                std::hint::spin_loop();
            }
        };
        let shut = std::thread::scope(|s| {
            let other = s.spawn(|| {
                barrier();
                if !client_waits {
                    spin(head_start);
                }
                server.shutdown(std::net::Shutdown::Write)
            });
            barrier();
            if client_waits {
                spin(head_start);
            }
            let mine = client.shutdown(std::net::Shutdown::Write);
            let theirs = other
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the server thread panicked")));
            mine.and(theirs)
        });
        shut.context("shutdown()")?;
        drop((client, server));
        // The tracer itself says whether this try went through CLOSING (a socket's own
        // state cannot tell: both ends of an ordinary close also end in CLOSE).
        for _ in 0..CROSSED_WAIT_STEPS {
            if crossed.load(Ordering::Relaxed) {
                return Ok(());
            }
            sleep(Duration::from_millis(5));
        }
    }
    anyhow::bail!(
        "the FINs did not cross in {SIMULTANEOUS_TRIES} tries (this needs 2 CPUs or more)"
    )
}

/// Busy-waits `d` (sleeping would take far longer than the microseconds needed).
fn spin(d: Duration) {
    let t = std::time::Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// How long a try waits for the tracer's verdict: 40 × 5 ms (the reader polls every 10 ms).
const CROSSED_WAIT_STEPS: u32 = 40;
