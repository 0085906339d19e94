//! The state diagram as an SVG picture (`--diagram FILE`): the layout of [`super::canvas`],
//! each cell scaled to a box of [`CW`] × [`RH`] px, the states as boxes with the median time
//! spent in them, every arrow with its count; then the arrows the kernel took that the
//! classic diagram lacks, with what they mean.
//!
//! A standalone SVG 1.1 document like the ladder's (no scripts, no external fonts). For
//! tests and scripts: each state is a `<g class="state" data-state="NAME">` (its box, its
//! `<text class="name">` and `<text class="median">`), each drawn arrow a `<g class="arrow"
//! data-from="OLD" data-to="NEW" data-count="N">` with its `<text class="label">`, each
//! other arrow a `<text class="other" data-from data-to data-count>`.
use std::fmt::{self, Write as _};

use super::{
    Collector,
    canvas::{ARROWS, Align, Dir, Layout, Shape, layout},
    compact, name,
};
use crate::{
    decode::TcpState,
    svgdoc::{self, Esc, INK, LINE, MUTED, Px, state_color, text_w},
    units::human_ns,
};

/// Font sizes, px.
const FS: f64 = 13.0;
const FS_SMALL: f64 = 11.0;
const FS_TITLE: f64 = 15.0;
/// A template cell: wider than a glyph of [`FS`] (7.9 px), so texts that fit their cells
/// in the terminal fit them here.
pub const CW: f64 = 8.6;
/// A template row: room for a state's box (two lines of text) and the lines between.
pub const RH: f64 = 50.0;
/// A state's box: its height, and how far it reaches beyond its cells on either side.
const BH: f64 = 38.0;
const PAD: f64 = 5.0;
const MARGIN: f64 = 20.0;
/// Between two lines of text under the diagram.
const LINE_H: f64 = 17.0;

/// What the kernel's own arrows mean (those the classic diagram does not have).
pub fn meaning(old: TcpState, new: TcpState) -> &'static str {
    use TcpState::*;
    match (old, new) {
        (FinWait2, Close) | (Closing, Close) => {
            "handed to a timewait socket (its TIME_WAIT comes from sock_diag)"
        }
        (FinWait1, Close) => "handed to a timewait socket at once (FIN and ACK together), or reset",
        (Established, Close) => "reset: sent or received",
        (SynSent, Close) => "connect() failed: refused, unreachable or timed out",
        (SynRecv, Close) => "a handshake given up or reset",
        (Listen, Close) => "a listener closed",
        (CloseWait, Close) => "reset, or closed with unread data",
        (LastAck, Close) => "the last ACK arrived",
        (SynSent, SynRecv) => "simultaneous open",
        (FinWait1, TimeWait) => "FIN and ACK at once (from sock_diag)",
        (_, Close) => "closed",
        _ => "",
    }
}

/// The SVG document of the diagram in `c`; `title` and `subtitle` head it.
pub fn render(c: &Collector, title: &str, subtitle: &str) -> String {
    let mut s = String::with_capacity(32 << 10);
    // Writing to a String cannot fail.
    let _ = draw(c, title, subtitle, &mut s);
    s
}

const FOOTER: [&str; 2] = [
    "counts: transitions seen (FIN_WAIT2/CLOSING -> TIME_WAIT and TIME_WAIT -> CLOSED from sock_diag)",
    "median: time spent in the state by the connections that left it",
];

/// A cell's left edge and a row's top edge.
fn cx(x: f64) -> f64 {
    MARGIN + x * CW
}

struct Grid {
    top: f64,
}

impl Grid {
    fn ry(&self, y: f64) -> f64 {
        self.top + y * RH
    }
}

/// Where a line leaving the cell at (`x`, `y`) towards `d` ends: the cell's edge, or the
/// box of a state it touches there.
fn reach(lay: &Layout, g: &Grid, x: usize, y: usize, d: Dir) -> (f64, f64) {
    let (mx, my) = (cx(x as f64 + 0.5), g.ry(y as f64 + 0.5));
    let node_at = |nx: isize, ny: isize| {
        lay.nodes
            .iter()
            .find(|n| n.y as isize == ny && (n.x as isize..(n.x + n.width) as isize).contains(&nx))
    };
    let (xi, yi) = (x as isize, y as isize);
    let gap = (RH - BH) / 2.0;
    match d {
        Dir::Up => match node_at(xi, yi - 1) {
            Some(_) => (mx, g.ry(y as f64) - gap),
            None => (mx, g.ry(y as f64)),
        },
        Dir::Down => match node_at(xi, yi + 1) {
            Some(_) => (mx, g.ry(y as f64 + 1.0) + gap),
            None => (mx, g.ry(y as f64 + 1.0)),
        },
        Dir::Left => match node_at(xi - 1, yi).or_else(|| node_at(xi - 2, yi)) {
            Some(n) => (cx((n.x + n.width) as f64) + PAD, my),
            None => (cx(x as f64), my),
        },
        Dir::Right => match node_at(xi + 1, yi).or_else(|| node_at(xi + 2, yi)) {
            Some(n) => (cx(n.x as f64) - PAD, my),
            None => (cx(x as f64 + 1.0), my),
        },
    }
}

fn draw(c: &Collector, title: &str, subtitle: &str, s: &mut String) -> fmt::Result {
    let lay = layout();
    let g = Grid {
        top: MARGIN + FS_TITLE + 20.0 + 18.0,
    };
    let others = c.arrows.others();
    let others_lines: Vec<String> = others
        .iter()
        .map(|(o, n, a)| {
            format!(
                "{} -> {}: {}, {}",
                name(*o),
                name(*n),
                a.total,
                meaning(*o, *n)
            )
        })
        .collect();
    let grid_bottom = g.ry(lay.height as f64);
    let others_head = "also taken (the kernel's own arrows, not in the classic diagram):";
    let others_top = grid_bottom + 22.0;
    let footer_top = if others.is_empty() {
        others_top
    } else {
        others_top + LINE_H * (others.len() as f64 + 1.0) + 10.0
    };
    let height = (footer_top + LINE_H * (FOOTER.len() as f64 - 1.0) + MARGIN).ceil();
    let mut width = cx(lay.width as f64) + MARGIN;
    for (t, size) in [
        (title, FS_TITLE),
        (subtitle, FS_SMALL),
        (others_head, FS_SMALL),
    ]
    .into_iter()
    .chain(others_lines.iter().map(|l| (l.as_str(), FS_SMALL)))
    .chain(FOOTER.iter().map(|l| (*l, FS_SMALL)))
    {
        width = width.max(MARGIN + text_w(t, size) + MARGIN);
    }
    svgdoc::open(
        s,
        (width.ceil(), height),
        FS,
        title,
        "The TCP state machine as RFC 793 draws it, with how often the kernel took each arrow and the median time spent in each state, drawn by tracer.",
        &[("head", INK), ("head-idle", LINE)],
        9,
    )?;
    writeln!(
        s,
        r#"<text class="title" x="{}" y="{}" font-size="{}" font-weight="bold">{}</text>"#,
        Px(MARGIN),
        Px(MARGIN + FS_TITLE),
        Px(FS_TITLE),
        Esc(title)
    )?;
    writeln!(
        s,
        r#"<text class="subtitle" x="{}" y="{}" font-size="{}" fill="{MUTED}">{}</text>"#,
        Px(MARGIN),
        Px(MARGIN + FS_TITLE + 20.0),
        Px(FS_SMALL),
        Esc(subtitle)
    )?;

    for (i, &(_, from, to)) in ARROWS.iter().enumerate() {
        draw_arrow(s, lay, &g, c, i, from, to)?;
    }
    for n in &lay.nodes {
        let (bx, by) = (cx(n.x as f64) - PAD, g.ry(n.y as f64) + (RH - BH) / 2.0);
        let bw = n.width as f64 * CW + 2.0 * PAD;
        let color = state_color(n.state);
        let median = (n.state != TcpState::Close)
            .then(|| c.median(n.state))
            .flatten();
        writeln!(
            s,
            r##"<g class="state" data-state="{}"><rect x="{}" y="{}" width="{}" height="{}" rx="5" fill="#f6f8fa" stroke="{color}" stroke-width="1.5"/>"##,
            name(n.state),
            Px(bx),
            Px(by),
            Px(bw),
            Px(BH),
        )?;
        let name_y = if median.is_some() {
            by + 16.0
        } else {
            by + BH / 2.0 + 4.5
        };
        writeln!(
            s,
            r#"<text class="name" x="{}" y="{}" font-weight="bold" fill="{color}">{}</text>"#,
            Px(bx + PAD),
            Px(name_y),
            name(n.state)
        )?;
        if let Some((m, count)) = median {
            writeln!(
                s,
                r#"<text class="median" x="{}" y="{}" font-size="{}" fill="{MUTED}"><title>median of {count} measured</title>median {}</text>"#,
                Px(bx + PAD),
                Px(by + 31.0),
                Px(FS_SMALL),
                Esc(&human_ns(m))
            )?;
        }
        writeln!(s, "</g>")?;
    }

    if !others.is_empty() {
        writeln!(
            s,
            r#"<text class="others" x="{}" y="{}" font-size="{}" font-weight="bold">{}</text>"#,
            Px(MARGIN),
            Px(others_top),
            Px(FS_SMALL),
            Esc(others_head)
        )?;
        for (i, ((o, n, a), line)) in others.iter().zip(&others_lines).enumerate() {
            writeln!(
                s,
                r#"<text class="other" data-from="{}" data-to="{}" data-count="{}" x="{}" y="{}" font-size="{}">{}</text>"#,
                name(*o),
                name(*n),
                a.total,
                Px(MARGIN),
                Px(others_top + LINE_H * (i as f64 + 1.0)),
                Px(FS_SMALL),
                Esc(line)
            )?;
        }
    }
    for (i, line) in FOOTER.iter().enumerate() {
        writeln!(
            s,
            r#"<text class="footer" x="{}" y="{}" font-size="{}" fill="{MUTED}">{}</text>"#,
            Px(MARGIN),
            Px(footer_top + LINE_H * i as f64),
            Px(FS_SMALL),
            Esc(line)
        )?;
    }
    writeln!(s, "</svg>")
}

/// One arrow: its line (a path through its cells), its arrowhead, its label.
fn draw_arrow(
    s: &mut String,
    lay: &Layout,
    g: &Grid,
    c: &Collector,
    i: usize,
    from: TcpState,
    to: TcpState,
) -> fmt::Result {
    let count = c.arrows.get(from, to).total;
    let (color, marker, dash) = if count > 0 {
        (INK, "head", "")
    } else {
        (LINE, "head-idle", r#" stroke-dasharray="4 3""#)
    };
    let mut path = String::new();
    let mut head = None;
    let seg = |p: &mut String, a: (f64, f64), b: (f64, f64)| {
        let _ = write!(p, "M{},{} L{},{} ", Px(a.0), Px(a.1), Px(b.0), Px(b.1));
    };
    for l in lay.lines.iter().filter(|l| l.arrow == i) {
        let mid = (cx(l.x as f64 + 0.5), g.ry(l.y as f64 + 0.5));
        for (on, d) in l
            .links
            .iter()
            .zip([Dir::Up, Dir::Down, Dir::Left, Dir::Right])
        {
            if *on {
                seg(&mut path, mid, reach(lay, g, l.x, l.y, d));
            }
        }
        if let Shape::Head(d) = l.shape {
            head = Some((mid, reach(lay, g, l.x, l.y, d)));
        }
    }
    let slot = lay.labels.iter().find(|l| l.arrow == i);
    if let Some(l) = slot.filter(|l| l.align == Align::Inline) {
        let y = g.ry(l.y as f64 + 0.5);
        seg(
            &mut path,
            (cx(l.x as f64), y),
            (cx((l.x + l.width) as f64), y),
        );
    }
    writeln!(
        s,
        r#"<g class="arrow" data-from="{}" data-to="{}" data-count="{count}"><title>{} -> {}: {count}</title>"#,
        name(from),
        name(to),
        name(from),
        name(to),
    )?;
    writeln!(
        s,
        r#"<path d="{}" fill="none" stroke="{color}" stroke-width="1.5"{dash}/>"#,
        path.trim_end()
    )?;
    if let Some((a, b)) = head {
        writeln!(
            s,
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{color}" stroke-width="1.5"{dash} marker-end="url(#{marker})"/>"#,
            Px(a.0),
            Px(a.1),
            Px(b.0),
            Px(b.1)
        )?;
    }
    if let Some(l) = slot {
        let text = if count < 1_000_000_000_000 {
            count.to_string()
        } else {
            compact(count)
        };
        let y = g.ry(l.y as f64 + 0.5);
        let (x, anchor) = match l.align {
            Align::Inline => (cx(l.x as f64 + l.width as f64 / 2.0), "middle"),
            Align::Left => (cx(l.x as f64), "start"),
            Align::Right => (cx((l.x + l.width) as f64), "end"),
        };
        if l.align == Align::Inline {
            // The line runs under the label: a white patch behind the text.
            let tw = text_w(&text, FS) + 8.0;
            writeln!(
                s,
                r##"<rect x="{}" y="{}" width="{}" height="16" fill="#ffffff"/>"##,
                Px(x - tw / 2.0),
                Px(y - 8.0),
                Px(tw)
            )?;
        }
        writeln!(
            s,
            r#"<text class="label" x="{}" y="{}" text-anchor="{anchor}" fill="{color}">{text}</text>"#,
            Px(x),
            Px(y + 4.5),
        )?;
    }
    writeln!(s, "</g>")
}

/// A sample for tests and the README: a busy loopback host's counts.
pub fn sample() -> Collector {
    use TcpState::*;
    let mut c = Collector::new();
    let counts: [((TcpState, TcpState), u64); 18] = [
        ((Close, Listen), 2),
        ((Close, SynSent), 20_571),
        ((SynSent, Established), 20_565),
        ((Listen, SynRecv), 20_565),
        ((SynRecv, Established), 20_565),
        ((Established, FinWait1), 20_560),
        ((Established, CloseWait), 20_560),
        ((FinWait1, FinWait2), 20_558),
        ((FinWait1, Closing), 2),
        ((Closing, TimeWait), 2),
        ((CloseWait, LastAck), 20_559),
        ((LastAck, Close), 20_559),
        ((FinWait2, Close), 20_558),
        ((FinWait2, TimeWait), 18_205),
        ((TimeWait, Close), 4),
        ((Established, Close), 5),
        ((SynSent, Close), 6),
        ((Closing, Close), 2),
    ];
    for ((o, n), k) in counts {
        for _ in 0..k {
            c.arrows.count(o, n);
        }
    }
    let spans: [(TcpState, u64); 9] = [
        (SynSent, 48_000),
        (SynRecv, 31_000),
        (Established, 1_250_000),
        (FinWait1, 40_000),
        (FinWait2, 52_000),
        (CloseWait, 61_000),
        (LastAck, 45_000),
        (TimeWait, 60_000_000_000),
        (Listen, 12_300_000_000),
    ];
    for (st, ns) in spans {
        for k in 0..3 {
            c.spent(st, ns + k);
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_arrow_count_and_median_is_in_the_picture() {
        let c = sample();
        let svg = render(&c, "The TCP state machine", "a sample");
        roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{e}:\n{svg}"));
        for (_, o, n) in ARROWS {
            let count = c.arrows.get(o, n).total;
            let g = format!(
                r#"<g class="arrow" data-from="{}" data-to="{}" data-count="{count}">"#,
                name(o),
                name(n)
            );
            assert!(svg.contains(&g), "{g}");
        }
        assert!(svg.contains(">median 1.25ms</text>"), "{svg}");
        assert!(svg.contains(">median 1m00s</text>"), "{svg}");
        assert!(svg.contains(r#"data-from="FIN_WAIT2" data-to="CLOSED" data-count="20558""#));
        assert!(svg.contains("handed to a timewait socket"));
        assert_eq!(svg.matches(r#"<g class="state""#).count(), 12);
    }
}
