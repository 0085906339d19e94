//! The ladder drawn for a terminal: a column per end, time flowing down.
use std::fmt::Write as _;

use super::{Arrow, Column, Ladder, Side};
use crate::decode::TcpState;
use crate::units::human_ns;

/// Width of a state column.
const STATE_W: usize = 13;

/// Width of the space between the two columns, where the arrows go.
const MID_W: usize = 34;

/// Width of the time column.
const TIME_W: usize = 10;

/// The diagram for a terminal (monospace, UTF-8).
pub fn render(l: &Ladder) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "── {}  (started {})", l.title, l.started);
    let _ = writeln!(
        s,
        "{:>TIME_W$}  {:<w$}{}",
        "",
        l.left.label,
        l.right.label,
        w = STATE_W + MID_W + 2
    );
    if !l.left.detail.is_empty() || !l.right.detail.is_empty() {
        let _ = writeln!(
            s,
            "{:>TIME_W$}  {:<w$}{}",
            "",
            l.left.detail,
            l.right.detail,
            w = STATE_W + MID_W + 2
        );
    }
    let initial = |c: &Column| c.initial.map_or("", TcpState::name);
    let _ = writeln!(
        s,
        "{:>TIME_W$}  {:<STATE_W$} {:MID_W$} {}",
        "",
        initial(&l.left),
        "",
        initial(&l.right)
    );
    for r in &l.rows {
        let state = r.state.map_or("", TcpState::name);
        let (lstate, rstate) = match r.side {
            Side::Left => (state, ""),
            Side::Right => ("", state),
        };
        // A context event (no state) is marked `!`, as in the timelines.
        let note = r.note.as_ref().map(|n| {
            if r.state.is_some() {
                n.clone()
            } else {
                format!("! {n}")
            }
        });
        let (mid, tail) = match (&r.arrow, r.side, note) {
            (Some(a), _, note) => (arrow_text(a), note),
            // The left column's notes go next to it, in the middle.
            (None, Side::Left, Some(n)) => (n, None),
            (None, _, note) => (String::new(), note),
        };
        let mut line = format!(
            "{:>TIME_W$}  {:<STATE_W$} {} {:<STATE_W$}",
            format!("+{}", human_ns(r.offset_ns)),
            lstate,
            pad(&mid, MID_W),
            rstate
        );
        if let Some(t) = tail {
            line.push_str("  ");
            line.push_str(&t);
        }
        let _ = writeln!(s, "{}", line.trim_end());
    }
    for f in &l.footer {
        let _ = writeln!(s, "{:>TIME_W$}  {f}", "");
    }
    s
}

/// `── SYN ─────────▶` or `◀──────── SYN-ACK ──`, [`MID_W`] wide.
fn arrow_text(a: &Arrow) -> String {
    let label = format!(" {} ", a.label);
    let n = label.chars().count();
    let dashes = MID_W.saturating_sub(n + 1);
    match a.from {
        Side::Left => format!("──{label}{}▶", "─".repeat(dashes.saturating_sub(2))),
        Side::Right => format!("◀{}{label}──", "─".repeat(dashes.saturating_sub(2))),
    }
}

/// Pads to `w` characters (not bytes: the arrows are multi-byte).
fn pad(s: &str, w: usize) -> String {
    let n = s.chars().count();
    format!("{s}{}", " ".repeat(w.saturating_sub(n)))
}
