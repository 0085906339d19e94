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

use ratatui::{
    Frame,
    crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Clear, Paragraph, Sparkline, Wrap},
};

use super::{Dashboard, Sort};
use crate::{
    decode::TcpState,
    units::{endpoint, human_bytes, human_ns},
};

/// The arrows of the state diagram, in the order of a connection's life: the handshake, the
/// active close, the passive close, and the rest.
const DIAGRAM: [(&str, &[(TcpState, TcpState)]); 4] = {
    use TcpState::*;
    [
        (
            "open",
            &[
                (Close, Listen),
                (Close, SynSent),
                (SynSent, Established),
                (Listen, SynRecv),
                (SynRecv, Established),
            ],
        ),
        (
            "active close",
            &[
                (Established, FinWait1),
                (FinWait1, FinWait2),
                (FinWait2, Close),
                (FinWait2, TimeWait),
                (TimeWait, Close),
            ],
        ),
        (
            "passive close",
            &[
                (Established, CloseWait),
                (CloseWait, LastAck),
                (LastAck, Close),
            ],
        ),
        (
            "other",
            &[
                (FinWait1, Closing),
                (Closing, Close),
                (SynSent, Close),
                (SynRecv, Close),
                (Established, Close),
                (CloseWait, Close),
                (Listen, Close),
            ],
        ),
    ]
};

/// What the keys changed.
#[derive(Clone, Copy, Debug, Default)]
struct View {
    paused: bool,
    sort: Sort,
    help: bool,
}

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
    let mut frozen: Option<Dashboard> = None;
    let mut next_draw = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= next_draw {
            let snapshot = match (&frozen, view.paused) {
                (Some(f), true) => f.clone(),
                _ => shared
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone(),
            };
            if view.paused && frozen.is_none() {
                frozen = Some(snapshot.clone());
            }
            if terminal
                .draw(|f| render(f, &snapshot, &view, color))
                .is_err()
            {
                break;
            }
            next_draw = Instant::now() + interval;
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
                let ctrl_c =
                    k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c');
                match k.code {
                    _ if ctrl_c => quit(),
                    KeyCode::Char('q') | KeyCode::Esc => quit(),
                    KeyCode::Char('p') => {
                        view.paused = !view.paused;
                        frozen = None;
                    }
                    KeyCode::Char('s') => view.sort = view.sort.next(),
                    KeyCode::Char('?') => view.help = !view.help,
                    _ => continue,
                }
                next_draw = Instant::now();
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
/// (final records, counters, the terminal given back).
fn quit() {
    // SAFETY: raising a signal at this process; the live loop handles SIGINT.
    unsafe { libc::raise(libc::SIGINT) };
}

fn styled(color: bool, c: Color) -> Style {
    if color {
        Style::default().fg(c)
    } else {
        Style::default()
    }
}

fn render(f: &mut Frame, d: &Dashboard, view: &View, color: bool) {
    let area = f.area();
    let [head, top, mid, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Min(4),
    ])
    .areas(area);
    let since = human_ns(d.now_ns.saturating_sub(d.first_ns));
    let title = format!(
        " tracer top · {since} · stuck ≥ {} · {}q quit  p pause  s sort  ? help",
        human_ns(d.threshold_ns),
        if view.paused { "PAUSED · " } else { "" }
    );
    f.render_widget(
        Paragraph::new(title).style(Style::default().add_modifier(Modifier::BOLD)),
        head,
    );
    let [states, health] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(top);
    render_states(f, states, d, color);
    render_health(f, health, d);
    render_diagram(f, mid, d, color);
    let [stuck, remotes] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(bottom);
    render_stuck(f, stuck, d, color);
    render_remotes(f, remotes, d, view.sort);
    if view.help {
        let w = area.width.min(60);
        let h = area.height.min(10);
        let r = Rect::new(
            area.x + (area.width - w) / 2,
            area.y + (area.height - h) / 2,
            w,
            h,
        );
        f.render_widget(Clear, r);
        f.render_widget(
            Paragraph::new(vec![
                Line::from("q, Esc, Ctrl-C  quit"),
                Line::from("p               pause / resume the display"),
                Line::from("s               sort the remotes: connections, resets,"),
                Line::from("                retransmits, bytes"),
                Line::from("?               this help"),
                Line::from("Counts are sockets now; arrows count transitions since start"),
                Line::from("and their rate over the last interval."),
            ])
            .block(Block::default().borders(Borders::ALL).title(" help "))
            .wrap(Wrap { trim: true }),
            r,
        );
    }
}

fn render_states(f: &mut Frame, area: Rect, d: &Dashboard, color: bool) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" sockets now ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    // The states that have sockets, most first, with a sparkline of each.
    let mut shown: Vec<(TcpState, u64)> = d
        .states
        .iter()
        .map(|(s, n)| (*s, *n))
        .filter(|(_, n)| *n > 0)
        .collect();
    shown.sort_by_key(|s| std::cmp::Reverse(s.1));
    if shown.is_empty() {
        f.render_widget(Paragraph::new("no TCP sockets followed yet"), inner);
        return;
    }
    for (i, (s, n)) in shown.iter().take(inner.height as usize).enumerate() {
        let row = Rect::new(inner.x, inner.y + i as u16, inner.width, 1);
        let [label, spark] =
            Layout::horizontal([Constraint::Length(22), Constraint::Min(1)]).areas(row);
        f.render_widget(Paragraph::new(format!("{:<12}{n:>9}", s.name())), label);
        let data: Vec<u64> = d
            .history
            .get(s)
            .map(|h| {
                let skip = h.len().saturating_sub(spark.width as usize);
                h.iter().skip(skip).copied().collect()
            })
            .unwrap_or_default();
        f.render_widget(
            Sparkline::default()
                .data(&data)
                .style(styled(color, Color::Cyan)),
            spark,
        );
    }
}

fn render_health(f: &mut Frame, area: Rect, d: &Dashboard) {
    let lost: u64 = d.lost.values().sum();
    let mut lines = vec![
        Line::from(format!("events/s     {:>10.0}", d.events_per_s)),
        Line::from(format!("events       {:>10}", d.events)),
        Line::from(format!("tracer CPU   {:>9.1}%", d.cpu_share * 100.0)),
        Line::from(format!("lost         {lost:>10}")),
    ];
    for (cause, n) in &d.lost {
        lines.push(Line::from(format!("  {cause:<22}{n:>8}")));
    }
    let closed: u64 = d.closed.values().sum();
    lines.push(Line::from(format!("closed       {closed:>10}")));
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" health ")),
        area,
    );
}

fn render_diagram(f: &mut Frame, area: Rect, d: &Dashboard, color: bool) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" the state machine: transitions since start, per second now ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    // The arrows taken so far, in the order of a connection's life, in two columns.
    let mut lines = Vec::new();
    for (_, arrows) in DIAGRAM.iter() {
        for (old, new) in *arrows {
            let Some(a) = d.arrows.get(&(*old, *new)).copied().filter(|a| a.total > 0) else {
                continue;
            };
            let hot = a.rate > 0.0;
            let style = if hot {
                styled(color, Color::Green).add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            };
            let rate = if hot {
                format!("{}/s", count(a.rate.round() as u64))
            } else {
                String::new()
            };
            let name = format!("{}→{}", short(*old), short(*new));
            lines.push(Line::from(Span::styled(
                format!("{name:<21}{:>7}{rate:>9}", count(a.total)),
                style,
            )));
        }
    }
    if lines.is_empty() {
        f.render_widget(Paragraph::new("no transitions yet"), inner);
        return;
    }
    let rows = inner.height.max(1) as usize;
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(inner);
    let rest = lines.split_off(rows.min(lines.len()));
    f.render_widget(Paragraph::new(lines), left);
    f.render_widget(Paragraph::new(rest), right);
}

/// `999`, `21.8k`, `1.2M`: a count in at most six characters.
fn count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// A state's name short enough for four columns in 80: `SYN_SENT` → `SYN_SENT`,
/// `ESTABLISHED` → `ESTAB`.
fn short(s: TcpState) -> &'static str {
    match s {
        TcpState::Established => "ESTAB",
        TcpState::CloseWait => "CLOSE_WAIT",
        TcpState::TimeWait => "TIME_WAIT",
        other => other.name(),
    }
}

fn render_stuck(f: &mut Frame, area: Rect, d: &Dashboard, color: bool) {
    let block = Block::default().borders(Borders::ALL).title(format!(
        " stuck ≥ {}: {} ",
        human_ns(d.threshold_ns),
        d.stuck.len()
    ));
    let mut lines = Vec::new();
    for r in &d.stuck {
        let owner = r.owner.map_or_else(
            || "owner unknown".to_string(),
            |o| format!("{} {}", o.pid, o.comm.as_str()),
        );
        let why = if r.orphaned { " closed, no FIN" } else { "" };
        lines.push(Line::from(vec![
            Span::styled(
                format!("{:<11}", r.state.name()),
                styled(color, Color::Red).add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!(
                "{}{:>8}  {owner:<22} {}→{}{why}",
                if r.age_at_least { "≥" } else { " " },
                human_ns(r.age_ns),
                endpoint(r.tuple.local),
                endpoint(r.tuple.remote),
            )),
        ]));
    }
    if lines.is_empty() {
        lines.push(Line::from("none"));
    }
    f.render_widget(Paragraph::new(lines).block(block), area);
}

fn render_remotes(f: &mut Frame, area: Rect, d: &Dashboard, sort: Sort) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" top remotes by {} ", sort.name()));
    let n = area.height.saturating_sub(2) as usize;
    let mut lines = Vec::new();
    for (name, r) in d.top_remotes(sort, n) {
        let value = match sort {
            Sort::Connections => r.connections.to_string(),
            Sort::Resets => r.resets.to_string(),
            Sort::Retransmits => r.retransmits.to_string(),
            Sort::Bytes => human_bytes(r.bytes),
        };
        lines.push(Line::from(format!("{value:>9}  {name}")));
    }
    if lines.is_empty() {
        lines.push(Line::from("none yet"));
    }
    f.render_widget(Paragraph::new(lines).block(block), area);
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
