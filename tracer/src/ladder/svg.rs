//! The ladder view as an SVG sequence diagram (`--svg DIR`): the same content as
//! [`super::text::render`], for a browser or a slide.
//!
//! A standalone SVG 1.1 document: no scripts, no external fonts or stylesheets, presentation
//! attributes only (so viewers without CSS support draw it the same). Rows are evenly spaced
//! and the real offsets are written at the left: the gaps between events range from
//! nanoseconds to minutes, so a diagram drawn to scale would squash most of them into a line.
//!
//! For tests and users' scripts, every state label is a `<text class="state"
//! data-side="left|right">` (the initial states also carry `data-initial="true"`) and every
//! arrow a `<g class="arrow" data-from="left|right">` holding its line and its label.
use std::fmt::{self, Write as _};

use crate::{
    decode::TcpState,
    ladder::{Arrow, Column, Ladder, Row, Side},
    svgdoc::{self, Esc, INK, LINE, MUTED, Px, state_color, text_w},
    units::human_ns,
};

/// Font sizes, px.
const FS: f64 = 13.0;
const FS_SMALL: f64 = 11.0;
const FS_TITLE: f64 = 15.0;
const MARGIN: f64 = 20.0;
/// Vertical distance between two rows.
const ROW_H: f64 = 30.0;
/// Extra height of a row that has both an arrow and a note (the note goes under the line).
const NOTE_H: f64 = 12.0;
/// Between a lifeline and the text beside it.
const GAP: f64 = 10.0;
/// Radius of the dot on a lifeline where its side changes state.
const MARK_R: f64 = 3.5;
/// The narrowest space between the lifelines.
const MIN_MID: f64 = 300.0;

const RST: &str = "#cf222e";

/// The SVG document of a ladder.
pub fn render(l: &Ladder) -> String {
    let mut s = String::with_capacity(8 << 10);
    // Writing to a String cannot fail.
    let _ = draw(l, &mut s);
    s
}

const fn side_name(s: Side) -> &'static str {
    match s {
        Side::Left => "left",
        Side::Right => "right",
    }
}

fn time_label(offset_ns: u64) -> String {
    format!("+{}", human_ns(offset_ns))
}

/// Horizontal positions.
struct Layout {
    /// Right edge of the time offsets.
    time_x: f64,
    left_x: f64,
    right_x: f64,
    width: f64,
}

impl Layout {
    fn new(l: &Ladder) -> Self {
        let time_w = l
            .rows
            .iter()
            .map(|r| text_w(&time_label(r.offset_ns), FS_SMALL))
            .fold(text_w("+0ns", FS_SMALL), f64::max);
        let state_w = TcpState::ALL
            .iter()
            .map(|s| text_w(s.name(), FS))
            .fold(0.0, f64::max);
        let header_w = |c: &Column| {
            let initial = c.initial.map_or(0.0, |s| text_w(s.name(), FS) + 12.0);
            text_w(&c.label, FS)
                .max(text_w(&c.detail, FS_SMALL))
                .max(initial)
        };
        let (head_l, head_r) = (header_w(&l.left), header_w(&l.right));

        let time_x = MARGIN + time_w;
        let left_x = (time_x + 14.0 + state_w + GAP).max(MARGIN + head_l / 2.0);
        let mut mid = MIN_MID.max((head_l + head_r) / 2.0 + 30.0);
        for r in &l.rows {
            if let Some(a) = &r.arrow {
                mid = mid.max(text_w(a.label, FS) + 60.0);
            }
            if let Some(n) = &r.note {
                mid = mid.max(text_w(n, FS_SMALL) + 2.0 * GAP + 20.0);
            }
        }
        let right_x = left_x + mid;
        let mut width = (right_x + GAP + state_w).max(right_x + head_r / 2.0) + MARGIN;
        let started = format!("started {}", l.started);
        let lines = [(l.title.as_str(), FS_TITLE), (started.as_str(), FS_SMALL)];
        for (text, size) in lines
            .into_iter()
            .chain(l.footer.iter().map(|f| (f.as_str(), FS_SMALL)))
        {
            width = width.max(MARGIN + text_w(text, size) + MARGIN);
        }
        Self {
            time_x,
            left_x,
            right_x,
            width: width.ceil(),
        }
    }

    const fn x(&self, side: Side) -> f64 {
        match side {
            Side::Left => self.left_x,
            Side::Right => self.right_x,
        }
    }
}

/// Where each row's line is, and where the lifelines end.
fn row_ys(rows: &[Row], first: f64) -> (Vec<f64>, f64) {
    let mut ys = Vec::with_capacity(rows.len());
    let mut y = first;
    for r in rows {
        ys.push(y);
        y += ROW_H;
        if r.arrow.is_some() && r.note.is_some() {
            y += NOTE_H;
        }
    }
    (ys, y - ROW_H + 22.0)
}

fn draw(l: &Ladder, s: &mut String) -> fmt::Result {
    let lay = Layout::new(l);
    // Top to bottom: title, start, column headers, initial states, rows, footer.
    let title_y = MARGIN + FS_TITLE;
    let started_y = title_y + 20.0;
    let label_y = started_y + 32.0;
    let detail_y = label_y + 16.0;
    let initial_top = detail_y + 10.0;
    let initial_h = 22.0;
    let lifeline_top = initial_top + initial_h;
    let (ys, lifeline_bottom) = row_ys(&l.rows, lifeline_top + 28.0);
    let footer_y = lifeline_bottom + 26.0;
    let height = (footer_y + 17.0 * l.footer.len().saturating_sub(1) as f64 + MARGIN).ceil();
    svgdoc::open(
        s,
        (lay.width, height),
        FS,
        &format!("TCP ladder: {}", l.title),
        "Sequence diagram of one TCP connection drawn by tracer from the kernel's state changes (sock:inet_sock_set_state); the arrows are inferred from them.",
        &[("head", INK), ("head-rst", RST)],
        10,
    )?;

    writeln!(
        s,
        r#"<text class="title" x="{}" y="{}" font-size="{}" font-weight="bold">{}</text>"#,
        Px(MARGIN),
        Px(title_y),
        Px(FS_TITLE),
        Esc(&l.title)
    )?;
    writeln!(
        s,
        r#"<text class="started" x="{}" y="{}" font-size="{}" fill="{MUTED}">started {}</text>"#,
        Px(MARGIN),
        Px(started_y),
        Px(FS_SMALL),
        Esc(&l.started)
    )?;

    // Column headers, initial states and lifelines.
    for (side, col) in [(Side::Left, &l.left), (Side::Right, &l.right)] {
        let x = Px(lay.x(side));
        let name = side_name(side);
        writeln!(
            s,
            r#"<text class="column" data-side="{name}" x="{x}" y="{}" text-anchor="middle" font-weight="bold">{}</text>"#,
            Px(label_y),
            Esc(&col.label)
        )?;
        if !col.detail.is_empty() {
            writeln!(
                s,
                r#"<text class="detail" data-side="{name}" x="{x}" y="{}" text-anchor="middle" font-size="{}" fill="{MUTED}">{}</text>"#,
                Px(detail_y),
                Px(FS_SMALL),
                Esc(&col.detail)
            )?;
        }
        let dash = if col.initial.is_none() {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let top = if col.initial.is_some() {
            lifeline_top
        } else {
            initial_top
        };
        writeln!(
            s,
            r#"<line class="lifeline" data-side="{name}" x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="{LINE}" stroke-width="1.5"{dash}/>"#,
            Px(top),
            Px(lifeline_bottom)
        )?;
        if let Some(state) = col.initial {
            let bw = text_w(state.name(), FS) + 12.0;
            writeln!(
                s,
                r##"<rect class="initial" data-side="{name}" x="{}" y="{}" width="{}" height="{}" rx="4" fill="#f6f8fa" stroke="{LINE}"/>"##,
                Px(lay.x(side) - bw / 2.0),
                Px(initial_top),
                Px(bw),
                Px(initial_h)
            )?;
            writeln!(
                s,
                r#"<text class="state" data-side="{name}" data-initial="true" x="{x}" y="{}" text-anchor="middle" font-weight="bold" fill="{}">{}</text>"#,
                Px(initial_top + 15.5),
                state_color(state),
                state.name()
            )?;
        }
    }

    for (r, &y) in l.rows.iter().zip(&ys) {
        draw_row(s, &lay, r, y)?;
    }

    for (i, line) in l.footer.iter().enumerate() {
        writeln!(
            s,
            r#"<text class="footer" x="{}" y="{}" font-size="{}" fill="{MUTED}">{}</text>"#,
            Px(MARGIN),
            Px(footer_y + 17.0 * i as f64),
            Px(FS_SMALL),
            Esc(line)
        )?;
    }
    writeln!(s, "</svg>")
}

fn draw_row(s: &mut String, lay: &Layout, r: &Row, y: f64) -> fmt::Result {
    let name = side_name(r.side);
    let x = lay.x(r.side);
    writeln!(
        s,
        r#"<text class="time" x="{}" y="{}" text-anchor="end" font-size="{}" fill="{MUTED}">{}</text>"#,
        Px(lay.time_x),
        Px(y + 4.0),
        Px(FS_SMALL),
        Esc(&time_label(r.offset_ns))
    )?;
    if let Some(a) = &r.arrow {
        // Stop short of the receiver's state mark, so the head does not cover it.
        let mark_at_head = r.state.is_some() && r.side != a.from;
        draw_arrow(s, lay, a, y, mark_at_head)?;
    }
    if let Some(state) = r.state {
        // Left states to the left of the left lifeline, right states to the right of the
        // right one: the middle is for the arrows.
        let (tx, anchor, box_x) = match r.side {
            Side::Left => (x - GAP, "end", x - GAP - text_w(state.name(), FS) - 5.0),
            Side::Right => (x + GAP, "start", x + GAP - 5.0),
        };
        if state == TcpState::TimeWait {
            writeln!(
                s,
                r##"<rect class="timewait" data-side="{name}" x="{}" y="{}" width="{}" height="20" rx="3" fill="#fff8c5" stroke="{}" stroke-dasharray="4 3"/>"##,
                Px(box_x),
                Px(y - 10.0),
                Px(text_w(state.name(), FS) + 10.0),
                state_color(state)
            )?;
        }
        writeln!(
            s,
            r#"<circle class="mark" data-side="{name}" cx="{}" cy="{}" r="{}" fill="{}"/>"#,
            Px(x),
            Px(y),
            Px(MARK_R),
            state_color(state)
        )?;
        writeln!(
            s,
            r#"<text class="state" data-side="{name}" x="{}" y="{}" text-anchor="{anchor}" font-weight="bold" fill="{}">{}</text>"#,
            Px(tx),
            Px(y + 4.5),
            state_color(state),
            state.name()
        )?;
    }
    if let Some(note) = &r.note {
        // In the middle, against this side's lifeline; under the line when there is an arrow.
        let ny = if r.arrow.is_some() { y + 16.0 } else { y + 4.0 };
        let (nx, anchor) = match r.side {
            Side::Left => (x + GAP, "start"),
            Side::Right => (x - GAP, "end"),
        };
        writeln!(
            s,
            r#"<text class="note" data-side="{name}" x="{}" y="{}" text-anchor="{anchor}" font-size="{}" font-style="italic" fill="{MUTED}">{}</text>"#,
            Px(nx),
            Px(ny),
            Px(FS_SMALL),
            Esc(note)
        )?;
    }
    Ok(())
}

fn draw_arrow(s: &mut String, lay: &Layout, a: &Arrow, y: f64, short: bool) -> fmt::Result {
    let (x1, mut x2) = (lay.x(a.from), lay.x(a.from.other()));
    if short {
        x2 -= (x2 - x1).signum() * MARK_R;
    }
    let (color, marker) = if a.label == "RST" {
        (RST, "head-rst")
    } else {
        (INK, "head")
    };
    let to = side_name(a.from.other());
    writeln!(
        s,
        r#"<g class="arrow" data-from="{}" data-to="{to}"><title>{} (inferred from the state change)</title><line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{color}" stroke-width="1.5" marker-end="url(#{marker})"/><text class="label" x="{}" y="{}" text-anchor="middle" fill="{color}">{}</text></g>"#,
        side_name(a.from),
        Esc(a.label),
        Px(x1),
        Px(y),
        Px(x2),
        Px(y),
        Px((x1 + x2) / 2.0),
        Px(y - 6.0),
        Esc(a.label)
    )
}

/// A real loopback connection (client closes first), as `ladder::build` made it: for tests
/// and examples.
#[doc(hidden)]
pub fn sample_ladder() -> Ladder {
    use TcpState::*;
    let row = |offset_ns: u64,
               side: Side,
               state: Option<TcpState>,
               arrow: Option<(Side, &'static str)>,
               note: Option<&str>| Row {
        offset_ns,
        side,
        state,
        arrow: arrow.map(|(from, label)| Arrow { from, label }),
        note: note.map(str::to_string),
    };
    let (l, r) = (Side::Left, Side::Right);
    Ladder {
        title: "127.0.0.1:52940 -> 127.0.0.1:8080".into(),
        started: "2026-11-23 22:01:09.992247".into(),
        left: Column {
            label: "client 127.0.0.1:52940".into(),
            detail: "pid 7767 python3".into(),
            initial: Some(Close),
        },
        right: Column {
            label: "server 127.0.0.1:8080".into(),
            detail: "pid 7702 python3".into(),
            initial: Some(Listen),
        },
        rows: vec![
            row(0, l, Some(SynSent), Some((l, "SYN")), None),
            row(49_400, l, Some(Established), Some((r, "SYN-ACK")), None),
            row(49_400, l, None, Some((l, "ACK")), None),
            row(58_000, r, Some(SynRecv), None, None),
            row(64_000, r, Some(Established), None, None),
            row(2_230_000, l, Some(FinWait1), Some((l, "FIN")), None),
            row(2_240_000, r, Some(CloseWait), Some((r, "ACK")), None),
            row(2_250_000, r, Some(LastAck), Some((r, "FIN")), None),
            row(2_260_000, l, Some(FinWait2), None, None),
            row(2_270_000, l, Some(Close), Some((l, "ACK")), None),
            row(
                2_270_000,
                l,
                Some(TimeWait),
                None,
                Some("timewait socket, expires in 60.00s"),
            ),
            row(2_280_000, r, Some(Close), None, None),
        ],
        footer: vec![
            "client 127.0.0.1:52940: close active, lifetime 2.27ms".into(),
            "server 127.0.0.1:8080: close passive, lifetime 2.28ms".into(),
            "arrows are inferred from the state changes: the tracepoint sees states, not packets"
                .into(),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVG_NS: &str = "http://www.w3.org/2000/svg";

    fn parse(svg: &str) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("not well-formed: {e}\n{svg}"))
    }

    fn has_class(n: &roxmltree::Node, class: &str) -> bool {
        n.attribute("class")
            .is_some_and(|c| c.split_whitespace().any(|c| c == class))
    }

    fn num(n: &roxmltree::Node, attr: &str) -> f64 {
        n.attribute(attr)
            .unwrap_or_else(|| panic!("no {attr}"))
            .parse()
            .unwrap()
    }

    /// (side, name, y) of every state label, in document order.
    fn states(doc: &roxmltree::Document) -> Vec<(String, String, f64)> {
        doc.descendants()
            .filter(|n| n.has_tag_name("text") && has_class(n, "state"))
            .map(|n| {
                (
                    n.attribute("data-side").unwrap().to_string(),
                    n.text().unwrap().to_string(),
                    num(&n, "y"),
                )
            })
            .collect()
    }

    fn texts(doc: &roxmltree::Document) -> Vec<String> {
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .map(|n| n.text().unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn standalone_svg_document() {
        let svg = render(&sample_ladder());
        let doc = parse(&svg);
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(root.tag_name().namespace(), Some(SVG_NS));
        assert_eq!(root.attribute("version"), Some("1.1"));
        let (w, h) = (num(&root, "width"), num(&root, "height"));
        assert_eq!(
            root.attribute("viewBox"),
            Some(format!("0 0 {} {}", Px(w), Px(h)).as_str())
        );
        // 12 rows of 30 px and more: the height follows the rows.
        assert!(h > 12.0 * ROW_H, "{h}");
        assert!(root.attribute("font-family").unwrap().contains("monospace"));
        let bg = root
            .children()
            .find(|n| n.has_tag_name("rect"))
            .expect("a background rect");
        assert_eq!(bg.attribute("fill"), Some("#ffffff"));
        assert_eq!((num(&bg, "width"), num(&bg, "height")), (w, h));
        for bad in [
            "<script",
            "href=\"http",
            "@import",
            "<image",
            "<foreignObject",
        ] {
            assert!(!svg.contains(bad), "{bad}");
        }
        // Every element's coordinates inside the picture.
        for n in doc.descendants().filter(|n| n.is_element()) {
            for (a, max) in [
                ("x", w),
                ("x1", w),
                ("x2", w),
                ("y", h),
                ("y1", h),
                ("y2", h),
            ] {
                if let Some(v) = n.attribute(a).and_then(|v| v.parse::<f64>().ok()) {
                    assert!((0.0..=max).contains(&v), "{a}={v} of {n:?}");
                }
            }
        }
    }

    #[test]
    fn more_rows_make_a_taller_picture() {
        let mut l = sample_ladder();
        let h = |l: &Ladder| num(&parse(&render(l)).root_element(), "height");
        let before = h(&l);
        l.rows.extend(l.rows.clone());
        assert_eq!(h(&l), before + 12.0 * ROW_H);
    }

    #[test]
    fn same_content_as_the_text_ladder() {
        let l = sample_ladder();
        let svg = render(&l);
        let doc = parse(&svg);
        let texts = texts(&doc);
        let mut want = vec![
            l.title.clone(),
            format!("started {}", l.started),
            l.left.label.clone(),
            l.left.detail.clone(),
            l.right.label.clone(),
            l.right.detail.clone(),
            "+0ns".into(),
            "+49.4µs".into(),
            "+2.28ms".into(),
            "timewait socket, expires in 60.00s".into(),
        ];
        want.extend(l.footer.iter().cloned());
        for w in want {
            assert!(texts.contains(&w), "{w:?} missing from {texts:?}");
        }
        // One time label per row.
        let times = doc.descendants().filter(|n| has_class(n, "time")).count();
        assert_eq!(times, l.rows.len());
    }

    #[test]
    fn states_in_row_order_on_their_side() {
        let l = sample_ladder();
        let svg = render(&l);
        let doc = parse(&svg);
        let got = states(&doc);
        let names = |side: &str| -> Vec<String> {
            got.iter()
                .filter(|(s, _, _)| s == side)
                .map(|(_, n, _)| n.clone())
                .collect()
        };
        assert_eq!(
            names("left"),
            [
                "CLOSE",
                "SYN_SENT",
                "ESTABLISHED",
                "FIN_WAIT1",
                "FIN_WAIT2",
                "CLOSE",
                "TIME_WAIT"
            ]
        );
        assert_eq!(
            names("right"),
            [
                "LISTEN",
                "SYN_RECV",
                "ESTABLISHED",
                "CLOSE_WAIT",
                "LAST_ACK",
                "CLOSE"
            ]
        );
        for side in ["left", "right"] {
            let ys: Vec<f64> = got
                .iter()
                .filter(|(s, _, _)| s == side)
                .map(|(_, _, y)| *y)
                .collect();
            assert!(ys.windows(2).all(|w| w[0] < w[1]), "{side}: {ys:?}");
        }
        // Left states left of the left lifeline, right ones right of the right lifeline.
        let lifeline = |side: &str| {
            let n = doc
                .descendants()
                .find(|n| has_class(n, "lifeline") && n.attribute("data-side") == Some(side))
                .unwrap();
            num(&n, "x1")
        };
        for n in doc
            .descendants()
            .filter(|n| has_class(n, "state") && n.attribute("data-initial").is_none())
        {
            match n.attribute("data-side") {
                Some("left") => assert!(num(&n, "x") < lifeline("left")),
                _ => assert!(num(&n, "x") > lifeline("right")),
            }
        }
        // TIME_WAIT stands out.
        assert_eq!(
            doc.descendants()
                .filter(|n| has_class(n, "timewait"))
                .count(),
            1
        );
    }

    #[test]
    fn one_arrow_per_row_arrow_pointing_away_from_the_sender() {
        let l = sample_ladder();
        let svg = render(&l);
        let doc = parse(&svg);
        let arrows: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("g") && has_class(n, "arrow"))
            .collect();
        let want: Vec<&Arrow> = l.rows.iter().filter_map(|r| r.arrow.as_ref()).collect();
        assert_eq!(arrows.len(), want.len());
        let mut last_y = 0.0;
        for (g, a) in arrows.iter().zip(want) {
            assert_eq!(g.attribute("data-from"), Some(side_name(a.from)));
            let line = g.children().find(|n| n.has_tag_name("line")).unwrap();
            let label = g.children().find(|n| n.has_tag_name("text")).unwrap();
            assert_eq!(label.text(), Some(a.label));
            assert!(line.attribute("marker-end").unwrap().starts_with("url(#"));
            let (x1, x2) = (num(&line, "x1"), num(&line, "x2"));
            match a.from {
                Side::Left => assert!(x1 < x2, "{a:?}"),
                Side::Right => assert!(x1 > x2, "{a:?}"),
            }
            let y = num(&line, "y1");
            assert!(y > last_y);
            last_y = y;
            // The label above its line, between the lifelines.
            assert!(num(&label, "y") < y);
            assert!((x1.min(x2)..x1.max(x2)).contains(&num(&label, "x")));
        }
    }

    #[test]
    fn remote_column_has_a_dashed_lifeline() {
        let mut l = sample_ladder();
        l.right = Column {
            label: "remote 192.0.2.1:443".into(),
            detail: "not on this host".into(),
            initial: None,
        };
        l.rows.retain(|r| r.side == Side::Left);
        let svg = render(&l);
        let doc = parse(&svg);
        let lifeline = |side: &str| {
            doc.descendants()
                .find(|n| has_class(n, "lifeline") && n.attribute("data-side") == Some(side))
                .unwrap()
        };
        assert!(lifeline("right").attribute("stroke-dasharray").is_some());
        assert!(lifeline("left").attribute("stroke-dasharray").is_none());
        assert!(states(&doc).iter().all(|(side, _, _)| side == "left"));
    }

    #[test]
    fn text_is_escaped() {
        let mut l = sample_ladder();
        l.title = r#"a<b & "c" 'd'> </svg>"#.into();
        l.left.detail = "pid 1 <script>&amp;".into();
        l.rows[0].note = Some("tab\there\u{1}\u{0}".into());
        l.footer.push("]]> <!-- -->".into());
        let svg = render(&l);
        let doc = parse(&svg);
        let texts = texts(&doc);
        for want in [
            r#"a<b & "c" 'd'> </svg>"#,
            "pid 1 <script>&amp;",
            "tab here\u{FFFD}\u{FFFD}",
            "]]> <!-- -->",
        ] {
            assert!(texts.iter().any(|t| t == want), "{want:?} not in {texts:?}");
        }
        assert!(!svg.contains("<script"));
        assert_eq!(
            doc.root_element()
                .children()
                .find(|n| n.has_tag_name("title"))
                .and_then(|n| n.text()),
            Some(r#"TCP ladder: a<b & "c" 'd'> </svg>"#)
        );
    }

    #[test]
    fn wide_labels_widen_the_picture() {
        let mut l = sample_ladder();
        let w = |l: &Ladder| num(&parse(&render(l)).root_element(), "width");
        let before = w(&l);
        l.left.label = format!(
            "client [2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:52940 {}",
            "x".repeat(40)
        );
        let svg = render(&l);
        let doc = parse(&svg);
        let header = doc
            .descendants()
            .find(|n| has_class(n, "column") && n.attribute("data-side") == Some("left"))
            .unwrap();
        let half = text_w(&l.left.label, FS) / 2.0;
        assert!(num(&header, "x") - half >= MARGIN - 0.1);
        assert!(w(&l) > before);
    }

    #[test]
    fn coordinates_are_short() {
        assert_eq!(Px(12.0).to_string(), "12");
        assert_eq!(Px(12.04).to_string(), "12");
        assert_eq!(Px(12.25).to_string(), "12.3");
        assert_eq!(Px(0.1 + 0.2).to_string(), "0.3");
    }
}
