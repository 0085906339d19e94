//! Drawing the dashboard: where each panel goes for the terminal's size ([`plan`]), and the
//! panels themselves.
//!
//! Two layouts share the screen with the same lists: the state machine as the classic
//! diagram ([`crate::diagram::canvas`]) or as a list of its arrows (`d` switches). The
//! diagram is the default where it fits beside everything else (80 × 32 and more); in a
//! smaller terminal (80 × 24) it can still be asked for: the states panel then gives way
//! (the diagram's boxes carry the same counts) and the health figures move to the title.
use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Clear, Paragraph, Sparkline, Wrap},
};

use super::{
    Dashboard,
    keys::View,
    model::{Entry, Grouping, Sort},
};
use crate::{
    decode::TcpState,
    diagram::{
        self,
        canvas::{self, Canvas, Kind},
    },
    units::{endpoint, human_bytes, human_ns},
};

/// Rows of the states and health panels.
const TOP_H: u16 = 8;
/// Rows of the list of transitions.
const LIST_H: u16 = 9;
/// Fewest rows of the lists under the diagram in the full layout.
const BOTTOM_MIN: u16 = 8;
/// Rows for the arrows the diagram lacks: in the full layout, in the compact one.
const OTHERS_TALL: usize = 3;
const OTHERS_COMPACT: usize = 2;

/// Rows of the diagram's panel: the template, the other arrows, the border.
fn diagram_h(others: usize) -> u16 {
    (canvas::TEMPLATE.len() + others + 2) as u16
}

/// Whether the diagram fits beside every other panel: what is shown until `d` is pressed.
pub fn auto_diagram(w: u16, h: u16) -> bool {
    usize::from(w) >= canvas::WIDTH + 2 && h >= 1 + TOP_H + diagram_h(OTHERS_TALL) + BOTTOM_MIN
}

/// Where the panels go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub head: Rect,
    /// The states and health panels (none in the compact diagram layout).
    pub states: Option<Rect>,
    pub health: Option<Rect>,
    /// The diagram, or the list of transitions.
    pub machine: Rect,
    /// Stuck and recently closed connections.
    pub conns: Rect,
    /// Remotes (or, in the compact layout, the groups of sockets).
    pub side: Rect,
}

/// The layout for `area`: the diagram (`machine_h` rows) or the list of transitions.
pub fn plan(area: Rect, diagram: bool, machine_h: u16) -> Plan {
    let full = !diagram || area.height >= 1 + TOP_H + machine_h + BOTTOM_MIN;
    let machine_h = if diagram { machine_h } else { LIST_H };
    let (head, top, machine, bottom) = if full {
        let [head, top, machine, bottom] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(TOP_H),
            Constraint::Length(machine_h),
            Constraint::Min(4),
        ])
        .areas(area);
        (head, Some(top), machine, bottom)
    } else {
        let [head, machine, bottom] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(machine_h),
            Constraint::Min(3),
        ])
        .areas(area);
        (head, None, machine, bottom)
    };
    let split = |r: Rect, left: u16| {
        let [a, b] = Layout::horizontal([
            Constraint::Percentage(left),
            Constraint::Percentage(100 - left),
        ])
        .areas(r);
        (a, b)
    };
    let (states, health) = match top.map(|t| split(t, 60)) {
        Some((a, b)) => (Some(a), Some(b)),
        None => (None, None),
    };
    // The connections' rows are the longest (the remotes' fit in 24 columns at 80).
    let (conns, side) = split(bottom, 70);
    Plan {
        head,
        states,
        health,
        machine,
        conns,
        side,
    }
}

fn styled(color: bool, c: Color) -> Style {
    if color {
        Style::default().fg(c)
    } else {
        Style::default()
    }
}

fn hot_style(color: bool) -> Style {
    styled(color, Color::Green).add_modifier(Modifier::BOLD)
}

pub fn render(f: &mut Frame, d: &Dashboard, view: &View, color: bool) {
    let area = f.area();
    let auto = auto_diagram(area.width, area.height);
    let diagram = view.shows_diagram(auto);
    let roomy = area.height >= 1 + TOP_H + diagram_h(OTHERS_TALL) + BOTTOM_MIN;
    let others = if roomy { OTHERS_TALL } else { OTHERS_COMPACT };
    let p = plan(area, diagram, diagram_h(others));
    render_head(f, p.head, d, view, p.states.is_none());
    if let Some(r) = p.states {
        render_states(f, r, d, view.grouping, color);
    }
    if let Some(r) = p.health {
        render_health(f, r, d);
    }
    if diagram {
        render_diagram(f, p.machine, d, others, color);
    } else {
        render_list(f, p.machine, d, color);
    }
    render_conns(f, p.conns, d, view, color);
    if p.states.is_none() && view.grouping != Grouping::Host {
        render_states(f, p.side, d, view.grouping, color);
    } else {
        render_remotes(f, p.side, d, view);
    }
    if view.help {
        render_help(f, area);
    }
    if let Some(det) = &view.detail {
        let r = Rect::new(
            area.x + 1,
            area.y + 1,
            area.width.saturating_sub(2),
            area.height.saturating_sub(2),
        );
        f.render_widget(Clear, r);
        let lines: Vec<Line> = det.lines.iter().map(|l| Line::from(l.as_str())).collect();
        f.render_widget(
            Paragraph::new(lines)
                .scroll((
                    u16::try_from(det.scroll).unwrap_or(u16::MAX),
                    u16::try_from(det.hscroll).unwrap_or(u16::MAX),
                ))
                .block(
                    Block::default()
                        .borders(Borders::ALL)
                        .title(" connection: timeline and ladder · ↑↓←→ scroll · Esc close "),
                ),
            r,
        );
    }
}

fn render_head(f: &mut Frame, area: Rect, d: &Dashboard, view: &View, with_health: bool) {
    // The source's name first; the rest (time, END, PAUSED, health, keys) after it.
    let mut parts = vec![String::new()];
    parts.push(human_ns(d.now_ns.saturating_sub(d.first_ns)));
    parts.push(format!("stuck ≥ {}", human_ns(d.threshold_ns)));
    if let Some(text) = &view.editing {
        parts.push(format!("filter: {text}█ (Enter keep, Esc clear)"));
    } else if let Some(q) = &view.filter {
        parts.push(format!("filter: {}", q.text()));
    }
    if d.ended {
        parts.push("END".into());
    }
    if view.paused {
        parts.push("PAUSED".into());
    }
    if with_health {
        let lost: u64 = d.lost.values().sum();
        let eps = match d.events_per_s {
            r if r < 1e3 => format!("{r:.0}"),
            r if r < 1e6 => format!("{:.1}k", r / 1e3),
            r => format!("{:.1}M", r / 1e6),
        };
        parts.push(format!(
            "{eps} ev/s lost {} CPU {:.0}%",
            diagram::compact(lost),
            d.cpu_share * 100.0
        ));
    }
    // In the compact layout the health takes the room of the quit key (the help has it).
    parts.push(
        if with_health {
            "? help"
        } else {
            "q quit ? help"
        }
        .into(),
    );
    // A long recording path gives way: the states and keys after it must stay on the line.
    let rest: usize = parts[1..].iter().map(|p| p.chars().count() + 3).sum();
    let room = usize::from(area.width).saturating_sub(rest + " tracer ".len());
    parts[0] = match &d.source {
        Some(src) => format!(" tracer {}", keep_end(src, room)),
        None => " tracer top".to_string(),
    };
    f.render_widget(
        Paragraph::new(parts.join(" · ")).style(Style::default().add_modifier(Modifier::BOLD)),
        area,
    );
}

/// `text` in at most `max` columns: whole, or `…` and its end (a path's end names the file).
fn keep_end(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        return text.to_string();
    }
    let tail: String = text.chars().skip(n + 1 - max.max(1)).collect();
    format!("…{tail}")
}

/// Sockets now: per state with a sparkline of each (host-wide), or per group.
fn render_states(f: &mut Frame, area: Rect, d: &Dashboard, grouping: Grouping, color: bool) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" sockets now, {} (n) ", grouping.name()));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let groups = match grouping {
        Grouping::Host => None,
        Grouping::Netns => Some(&d.by_netns),
        Grouping::Container => Some(&d.by_container),
    };
    if let Some(groups) = groups {
        let mut lines = Vec::new();
        for g in groups.iter().take(usize::from(inner.height)) {
            let mut states: Vec<(TcpState, u64)> = TcpState::ALL
                .iter()
                .map(|s| (*s, g.states[*s as usize]))
                .filter(|(_, n)| *n > 0)
                .collect();
            states.sort_by_key(|s| std::cmp::Reverse(s.1));
            let list: Vec<String> = states
                .iter()
                .map(|(s, n)| format!("{} {}", short(*s), diagram::compact(*n)))
                .collect();
            let key = format!("{}{}", g.key, if g.own { " (tracer's)" } else { "" });
            lines.push(Line::from(vec![
                Span::styled(
                    format!("{key:<18}"),
                    Style::default().add_modifier(Modifier::BOLD),
                ),
                Span::raw(format!(
                    "{:>7}  {}",
                    diagram::compact(g.total()),
                    list.join(" ")
                )),
            ]));
        }
        if lines.is_empty() {
            lines.push(Line::from("no TCP sockets followed yet"));
        }
        f.render_widget(Paragraph::new(lines), inner);
        return;
    }
    // The states that have sockets, most first, with a sparkline of each.
    let mut shown: Vec<(TcpState, u64)> = TcpState::ALL
        .iter()
        .map(|s| (*s, d.states[*s as usize]))
        .filter(|(_, n)| *n > 0)
        .collect();
    shown.sort_by_key(|s| std::cmp::Reverse(s.1));
    if shown.is_empty() {
        f.render_widget(Paragraph::new("no TCP sockets followed yet"), inner);
        return;
    }
    for (i, (s, n)) in shown.iter().take(usize::from(inner.height)).enumerate() {
        let row = Rect::new(inner.x, inner.y + i as u16, inner.width, 1);
        let [label, spark] =
            Layout::horizontal([Constraint::Length(22), Constraint::Min(1)]).areas(row);
        f.render_widget(Paragraph::new(format!("{:<12}{n:>9}", s.name())), label);
        let data: Vec<u64> = d
            .history
            .get(s)
            .map(|h| {
                let skip = h.len().saturating_sub(usize::from(spark.width));
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

/// The classic diagram, centred when the panel is wider.
fn render_diagram(f: &mut Frame, area: Rect, d: &Dashboard, others: usize, color: bool) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" the state machine: sockets now, transitions (total, per second) · d: list ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let pad = usize::from(inner.width).saturating_sub(canvas::WIDTH) / 2;
    let width = usize::from(inner.width)
        .saturating_sub(2 * pad)
        .max(canvas::WIDTH);
    let c = canvas::render(&d.arrows, &d.states, others, width);
    let lines = canvas_lines(&c, pad, color);
    f.render_widget(Paragraph::new(lines), inner);
}

/// A drawn diagram as styled lines: state names bold, the arrows taken in the last window
/// (and their labels) bold and green.
pub fn canvas_lines(c: &Canvas, pad: usize, color: bool) -> Vec<Line<'static>> {
    let style = |k: Kind| match k {
        Kind::Node | Kind::OtherTitle => Style::default().add_modifier(Modifier::BOLD),
        Kind::Arrow { hot: true } => hot_style(color),
        Kind::Arrow { hot: false } | Kind::Blank => Style::default(),
    };
    c.rows
        .iter()
        .map(|row| {
            let mut spans = vec![Span::raw(" ".repeat(pad))];
            let mut run = String::new();
            let mut kind = Kind::Blank;
            for cell in row {
                if style(cell.kind) != style(kind) && !run.is_empty() {
                    spans.push(Span::styled(std::mem::take(&mut run), style(kind)));
                }
                kind = cell.kind;
                run.push(cell.ch);
            }
            let run = run.trim_end().to_string();
            if !run.is_empty() {
                spans.push(Span::styled(run, style(kind)));
            }
            Line::from(spans)
        })
        .collect()
}

/// The arrows taken so far as a list, in the order of a connection's life, in two columns.
fn render_list(f: &mut Frame, area: Rect, d: &Dashboard, color: bool) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" the state machine: transitions since start, per second now · d: diagram ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let drawn = canvas::ARROWS
        .iter()
        .map(|&(_, o, n)| (o, n, d.arrows.get(o, n)));
    let others = d.arrows.others();
    let mut lines = Vec::new();
    for (old, new, a) in drawn.chain(others) {
        if a.total == 0 {
            continue;
        }
        let hot = a.hot();
        let style = if hot {
            hot_style(color)
        } else {
            Style::default()
        };
        let rate = if hot {
            format!("{}/s", count(a.rate.round() as u64))
        } else {
            String::new()
        };
        let name = format!("{}→{}", short(old), short(new));
        lines.push(Line::from(Span::styled(
            format!("{name:<21}{:>7}{rate:>9}", count(a.total)),
            style,
        )));
    }
    if lines.is_empty() {
        f.render_widget(Paragraph::new("no transitions yet"), inner);
        return;
    }
    let rows = usize::from(inner.height.max(1));
    if lines.len() > 2 * rows {
        // What does not fit is counted: the diagram lists them all.
        let more = lines.len() - (2 * rows - 1);
        lines.truncate(2 * rows - 1);
        lines.push(Line::from(format!("+{more} more (d: diagram)")));
    }
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

/// A state's name short enough for four columns in 80: `ESTABLISHED` → `ESTAB`.
fn short(s: TcpState) -> &'static str {
    match s {
        TcpState::Established => "ESTAB",
        other => other.name(),
    }
}

/// Stuck connections, oldest first, then the recently closed, most recent first; the
/// selected one highlighted.
fn render_conns(f: &mut Frame, area: Rect, d: &Dashboard, view: &View, color: bool) {
    let entries = d.entries(view.filter.as_ref());
    let stuck = entries
        .iter()
        .filter(|e| matches!(e, Entry::Stuck(_)))
        .count();
    let block = Block::default().borders(Borders::ALL).title(format!(
        " stuck ≥ {}: {stuck} · recent: {} · ↑↓ Enter ",
        human_ns(d.threshold_ns),
        entries.len() - stuck
    ));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let height = usize::from(inner.height).max(1);
    let first = view.selected.saturating_sub(height - 1);
    let owner = |o: Option<&crate::table::Owner>| {
        o.map_or_else(
            || "owner unknown".to_string(),
            |o| format!("{} {}", o.pid, o.comm.as_str()),
        )
    };
    // Both ends where there is room; else the local port only (the address is this host's).
    let wide = inner.width >= 80;
    let ends = |t: &crate::table::Tuple| {
        if wide {
            format!("{}→{}", endpoint(t.local), endpoint(t.remote))
        } else {
            format!(":{}→{}", t.local.port, endpoint(t.remote))
        }
    };
    let mut lines = Vec::new();
    for (i, e) in entries.iter().enumerate().skip(first).take(height) {
        let mut line = match *e {
            Entry::Stuck(k) => {
                let r = &d.stuck[k];
                let why = if r.orphaned { " closed, no FIN" } else { "" };
                Line::from(vec![
                    Span::styled(
                        format!("{:<10}", r.state.name()),
                        styled(color, Color::Red).add_modifier(Modifier::BOLD),
                    ),
                    Span::raw(format!(
                        "{}{:>6} {} {}{why}",
                        if r.age_at_least { "≥" } else { " " },
                        human_ns(r.age_ns),
                        owner(r.owner.as_ref()),
                        ends(&r.tuple),
                    )),
                ])
            }
            Entry::Recent(k) => {
                let c = &d.recent[k];
                Line::from(vec![
                    Span::styled(
                        format!("{:<10}", close_short(c.close)),
                        styled(color, Color::DarkGray),
                    ),
                    Span::raw(format!(
                        " {:>6} {} {}",
                        human_ns(c.lifetime_ns()),
                        owner(c.owner.as_ref()),
                        ends(&c.tuple),
                    )),
                ])
            }
        };
        if i == view.selected && view.detail.is_none() {
            line = line.style(Style::default().add_modifier(Modifier::REVERSED));
        }
        lines.push(line);
    }
    if lines.is_empty() {
        lines.push(Line::from(if view.filter.is_some() {
            "none match the filter"
        } else {
            "none"
        }));
    }
    f.render_widget(Paragraph::new(lines), inner);
}

/// How a connection ended, in the list's first column (10 cells).
fn close_short(k: Option<crate::table::CloseClass>) -> &'static str {
    use crate::table::CloseClass::*;
    match k {
        Some(Active) => "active",
        Some(Passive) => "passive",
        Some(Simultaneous) => "simultan.",
        Some(ResetSent) => "RST sent",
        Some(ResetReceived) => "RST recv",
        Some(Refused) => "refused",
        Some(Unreachable) => "unreachabl",
        Some(Timeout) => "timeout",
        Some(OrphanTimeout) => "orphan t/o",
        Some(ListenerClosed) => "listener",
        Some(Unknown) | None => "closed",
    }
}

fn render_remotes(f: &mut Frame, area: Rect, d: &Dashboard, view: &View) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" remotes: {} ", view.sort.name()));
    let n = usize::from(area.height.saturating_sub(2));
    let mut lines = Vec::new();
    for (name, r) in d.top_remotes(view.sort, n, view.filter.as_ref()) {
        let value = match view.sort {
            Sort::Connections => r.connections.to_string(),
            Sort::Resets => r.resets.to_string(),
            Sort::Retransmits => r.retransmits.to_string(),
            Sort::Bytes => human_bytes(r.bytes),
        };
        lines.push(Line::from(format!("{value:>6} {name}")));
    }
    if lines.is_empty() {
        lines.push(Line::from("none yet"));
    }
    f.render_widget(Paragraph::new(lines).block(block), area);
}

fn render_help(f: &mut Frame, area: Rect) {
    let text = [
        "q, Ctrl-C      quit",
        "p              pause / resume the display",
        "d              the state diagram or the list of transitions",
        "n              sockets now: host-wide, per network namespace,",
        "               per container",
        "s              sort the remotes: connections, resets,",
        "               retransmits, bytes",
        "/              filter the lists (stuck, recently closed,",
        "               remotes) by port, address or command;",
        "               Esc clears it",
        "↑↓ j k         select a connection; Enter: its timeline and",
        "               ladder (Esc or Enter closes it)",
        "?              this help",
        "",
        "Sockets now and the arrows are host-wide, / does not narrow",
        "them: give -p, --comm, --container... on the command line.",
        "Arrows: transitions since start, and their rate over the last",
        "second (bold when taken).",
    ];
    let w = area.width.min(66);
    let h = area.height.min(text.len() as u16 + 2);
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(text.iter().map(|l| Line::from(*l)).collect::<Vec<_>>())
            .block(Block::default().borders(Borders::ALL).title(" help "))
            .wrap(Wrap { trim: false }),
        r,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::{Terminal, backend::TestBackend};

    fn screen(d: &Dashboard, view: &View, w: u16, h: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| render(f, d, view, false)).unwrap();
        let buf = t.backend().buffer().clone();
        let mut s = String::new();
        for y in 0..h {
            for x in 0..w {
                s.push_str(buf[(x, y)].symbol());
            }
            s.push('\n');
        }
        s
    }

    fn busy() -> Dashboard {
        use TcpState::*;
        let mut d = Dashboard::default();
        for (o, n, k) in [
            (Close, SynSent, 20),
            (SynSent, Established, 20),
            (Established, FinWait1, 19),
            (FinWait2, Close, 19),
            (Established, Close, 1),
        ] {
            for _ in 0..k {
                d.arrows.count(o, n);
            }
        }
        d.arrows.take_rates(1.0);
        d.states[Established as usize] = 3;
        d.states[Listen as usize] = 2;
        d
    }

    #[test]
    fn the_layout_picks_the_diagram_where_it_fits() {
        assert!(!auto_diagram(80, 24));
        assert!(auto_diagram(80, 32));
        assert!(!auto_diagram(79, 60));
        let full = plan(Rect::new(0, 0, 100, 40), true, diagram_h(OTHERS_TALL));
        assert!(full.states.is_some());
        assert_eq!(full.machine.height, 15);
        let small = plan(Rect::new(0, 0, 80, 24), true, diagram_h(OTHERS_COMPACT));
        assert_eq!(small.states, None);
        assert_eq!((small.machine.y, small.machine.height), (1, 14));
        assert_eq!(small.conns.height, 9);
        let list = plan(Rect::new(0, 0, 80, 24), false, 0);
        assert_eq!(list.machine.height, LIST_H);
    }

    #[test]
    fn the_diagram_is_readable_at_80_by_24() {
        let d = busy();
        let view = View {
            diagram: Some(true),
            ..View::default()
        };
        let s = screen(&d, &view, 80, 24);
        let lines: Vec<&str> = s.lines().collect();
        assert!(lines[0].contains("ev/s"), "{s}");
        assert!(lines[2].contains("CLOSED"), "{s}");
        assert!(lines[3].contains("── 20 20/s ──────▶ SYN_SENT 0"), "{s}");
        assert!(lines[6].contains("ESTABLISHED 3"), "{s}");
        assert!(lines[12].contains("also: FIN_WAIT2→CLOSED 19 19/s"), "{s}");
        assert!(lines[1].contains("· d: list ─"), "the title fits: {s}");
        assert!(lines[15].contains("↑↓ Enter ─"), "{s}");
        assert!(lines[15].contains("stuck"), "{s}");
        // Every line fits: nothing cut at the border.
        assert!(lines.iter().all(|l| l.chars().count() == 80));
        assert!(lines[3].ends_with('│'), "{s}");
    }

    #[test]
    fn a_long_recording_path_leaves_the_end_and_the_keys_on_the_head_line() {
        assert_eq!(keep_end("replay /tmp/x.jsonl", 40), "replay /tmp/x.jsonl");
        assert_eq!(keep_end("replay /tmp/x.jsonl", 8), "…x.jsonl");
        let mut d = busy();
        d.source = Some(format!(
            "replay /tmp/{}/fixtures/mixed.jsonl",
            "d".repeat(60)
        ));
        d.ended = true;
        let view = View {
            diagram: Some(true),
            ..View::default()
        };
        let s = screen(&d, &view, 100, 40);
        let head = s.lines().next().unwrap();
        assert!(head.contains(" · END · q quit ? help"), "{head}");
        assert!(head.contains("…"), "{head}");
        assert!(head.contains("mixed.jsonl"), "{head}");
    }

    #[test]
    fn the_list_and_the_groups() {
        let mut d = busy();
        d.by_netns = vec![super::super::model::Group {
            key: "4026531840".into(),
            own: true,
            states: d.states,
        }];
        let mut view = View {
            diagram: Some(false),
            grouping: Grouping::Netns,
            ..View::default()
        };
        let s = screen(&d, &view, 80, 24);
        assert!(
            s.contains("CLOSE→SYN_SENT") && s.contains("ESTAB→CLOSE"),
            "{s}"
        );
        assert!(s.contains("4026531840 (tracer's)"), "{s}");
        assert!(s.contains("ESTAB 3 LISTEN 2"), "{s}");
        view.help = true;
        let s = screen(&d, &view, 80, 24);
        assert!(s.contains("host-wide"), "{s}");
    }
}
