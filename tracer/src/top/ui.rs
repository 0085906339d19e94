//! The dashboard's terminal: a thread that owns it (alternate screen, raw mode), draws the
//! [`Dashboard`] every interval and reads the keys; and the stderr tracer writes meanwhile,
//! kept and written out once the terminal is given back (it would tear the screen).
use std::{
    io::{self, Read as _, Seek as _, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use ratatui::crossterm::event::{self, Event, KeyEventKind};

use super::{
    Dashboard,
    keys::{Action, View},
    panels,
};

pub(super) struct Ui {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Says the drawing thread ended (a join that can time out).
    done: std::sync::mpsc::Receiver<()>,
    stderr: Option<StderrKept>,
}

/// Longest wait for the drawing thread at exit: it checks for a stop every 100 ms, but a
/// terminal that is gone can hold it in the terminal library; tracer exits anyway.
const JOIN_WAIT: Duration = Duration::from_secs(1);

impl Ui {
    pub(super) fn start(
        shared: Arc<Mutex<Dashboard>>,
        interval: Duration,
        color: bool,
    ) -> io::Result<Self> {
        let stderr = StderrKept::start()?;
        // ratatui::init: alternate screen, raw mode, and a panic hook that gives the terminal
        // back before the panic message.
        let terminal = ratatui::try_init()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let (tx, done) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tracer-top".into())
            .spawn(move || {
                run(terminal, &shared, &stop2, interval, color);
                let _ = tx.send(());
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
            done,
            stderr: Some(stderr),
        })
    }

    /// Whether the drawing thread still runs (it stops when the terminal goes away).
    pub(super) fn running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops drawing, gives the terminal back as it was, then writes out what was kept from
    /// stderr.
    pub(super) fn stop(mut self) {
        self.end();
    }

    fn end(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::Relaxed);
            if self.done.recv_timeout(JOIN_WAIT).is_ok() {
                let _ = t.join();
            }
            ratatui::restore();
        }
        if let Some(s) = self.stderr.take() {
            s.finish();
        }
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        self.end();
    }
}

fn run(
    mut terminal: ratatui::DefaultTerminal,
    shared: &Mutex<Dashboard>,
    stop: &AtomicBool,
    interval: Duration,
    color: bool,
) {
    let mut view = View::default();
    // The copy drawn: taken when the sink published a new one (not while paused).
    let mut snapshot = Dashboard::default();
    let mut next_draw = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // A new publication is drawn at once (a replay at speed publishes faster than the
        // interval); otherwise the screen is drawn again each interval and on keys.
        if !view.paused {
            let d = shared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if d.generation != snapshot.generation {
                snapshot.clone_from(&d);
                drop(d);
                view.sync(&snapshot);
                next_draw = Instant::now();
            }
        }
        if Instant::now() >= next_draw {
            if terminal
                .draw(|f| panels::render(f, &snapshot, &view, color))
                .is_err()
            {
                break;
            }
            next_draw = Instant::now() + interval.min(Duration::from_secs(1));
        }
        // A terminal that went away (its window closed, tmux killed): crossterm's reader
        // would spin on it. Stop drawing; the hangup stops tracer itself.
        if terminal_gone() {
            break;
        }
        // Short polls, so a stop or a key is seen at once.
        let wait = next_draw
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        match event::poll(wait) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => break,
        }
        let Ok(ev) = event::read() else { break };
        match ev {
            Event::Key(k) if k.kind == KeyEventKind::Press => {
                let auto = terminal
                    .size()
                    .is_ok_and(|s| panels::auto_diagram(s.width, s.height));
                match view.key(k, &snapshot, auto) {
                    Action::Quit => quit(),
                    Action::Redraw => next_draw = Instant::now(),
                    Action::None => {}
                }
            }
            Event::Resize(..) => next_draw = Instant::now(),
            _ => {}
        }
    }
}

/// Whether the terminal hung up: stdin reports POLLHUP, POLLERR or POLLNVAL.
fn terminal_gone() -> bool {
    let mut fds = [libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
    n > 0 && fds[0].revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// `q`: the same as Ctrl-C anywhere else, so every exit path is the one the live loop has
/// (final records, counters, the terminal given back); a replay's handler of SIGINT stops
/// it the same way.
fn quit() {
    super::request_quit();
    // SAFETY: raising a signal at this process; the live loop (and a replay with --top)
    // handles SIGINT.
    unsafe { libc::raise(libc::SIGINT) };
}

/// stderr sent to an anonymous file while the dashboard owns the terminal, then written to
/// the real stderr.
struct StderrKept {
    saved: OwnedFd,
    kept: std::fs::File,
}

impl StderrKept {
    fn start() -> io::Result<Self> {
        // SAFETY: memfd_create with a valid C string; the fd is owned below.
        let fd = unsafe { libc::memfd_create(c"tracer-top-stderr".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        let kept = unsafe { std::fs::File::from_raw_fd(fd) };
        // SAFETY: dup of our own stderr.
        let saved = unsafe { libc::dup(2) };
        if saved < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        let saved = unsafe { OwnedFd::from_raw_fd(saved) };
        // SAFETY: both fds are valid; this replaces fd 2.
        if unsafe { libc::dup2(kept.as_raw_fd(), 2) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { saved, kept })
    }

    fn finish(mut self) {
        let _ = io::stderr().flush();
        // SAFETY: both fds are valid; this puts the real stderr back on fd 2.
        unsafe { libc::dup2(self.saved.as_raw_fd(), 2) };
        let mut text = Vec::new();
        if self.kept.rewind().is_ok() {
            let _ = self.kept.read_to_end(&mut text);
        }
        let _ = io::stderr().write_all(&text);
    }
}
