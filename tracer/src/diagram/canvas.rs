//! The diagram's layout, a template of character cells, and its drawing as text.
//!
//! In [`TEMPLATE`] a state's name followed by `~`s is a box (the `~`s hold its count of
//! sockets now), a lowercase letter is a cell of that letter's arrow ([`ARROWS`]) and an
//! uppercase one a cell of its label. The lines' shapes (`─ │ ┘ └`, the arrowheads) are
//! worked out from which cells touch: a line's end under or beside a state connects to it,
//! and becomes an arrowhead when that state is where the arrow goes. The template is 78
//! cells wide: it fits an 80-column terminal inside a border. [`layout`] parses it once;
//! [`render`] draws it with counts as a grid of [`Cell`]s (the dashboard styles them) and
//! the SVG draws the same [`Layout`].
use std::sync::LazyLock;

use super::{Arrows, STATES, compact, label, name};
use crate::decode::TcpState;

/// The classic diagram, 78 × 10.
pub const TEMPLATE: [&str; 10] = [
    "                                 CLOSED",
    "                     AAAAAAAAAAAA a  bbbbbbbBBBBBBBBBBBBBBbbbb SYN_SENT~~~~~~",
    "                                LISTEN~~~~~~                    e EEEEEEEEEEEE",
    "  SYN_RECV~~~~~~ ccCCCCCCCCCCCCCCcc                             e",
    "    ddddddddddDDDDDDDDDDDDDDddddddddddd ESTABLISHED~~~~~~ eeeeeee",
    "             FIN_WAIT1~~~~~~ fFFFFFFFFFFFFFFfgGGGGGGGGGGGGGGg CLOSE_WAIT~~~~~~",
    " HHHHHHHHHHHH h  iIIIIIIIIIIIIIIii CLOSING~~~~~~               k KKKKKKKKKKKK",
    "             FIN_WAIT2~~~~~~         j JJJJJJJJJJJJ           LAST_ACK~~~~~~",
    "               llLLLLLLLLLLLLLLllll TIME_WAIT~~~~~~            m MMMMMMMMMMMM",
    "                                     nNNNNNNNNNNNNNNNn CLOSED mm",
];

/// Width of [`TEMPLATE`].
pub const WIDTH: usize = 78;

/// The arrows drawn, by their letter in [`TEMPLATE`]: the classic diagram's, as the kernel
/// reports them (`FIN_WAIT2 -> TIME_WAIT`, `CLOSING -> TIME_WAIT` and `TIME_WAIT -> CLOSE`
/// come from sock_diag: the tracepoint sees the handoff to the timewait socket as `-> CLOSE`).
pub const ARROWS: [(char, TcpState, TcpState); 14] = {
    use TcpState::*;
    [
        ('a', Close, Listen),
        ('b', Close, SynSent),
        ('c', Listen, SynRecv),
        ('d', SynRecv, Established),
        ('e', SynSent, Established),
        ('f', Established, FinWait1),
        ('g', Established, CloseWait),
        ('h', FinWait1, FinWait2),
        ('i', FinWait1, Closing),
        ('j', Closing, TimeWait),
        ('k', CloseWait, LastAck),
        ('l', FinWait2, TimeWait),
        ('m', LastAck, Close),
        ('n', TimeWait, Close),
    ]
};

/// Whether the drawing has the arrow `old -> new`.
pub fn drawn(old: TcpState, new: TcpState) -> bool {
    ARROWS.iter().any(|&(_, o, n)| o == old && n == new)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Up,
    Down,
    Left,
    Right,
}

/// What a line cell looks like: the directions it connects to, or an arrowhead pointing
/// into the state it touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Line {
        up: bool,
        down: bool,
        left: bool,
        right: bool,
    },
    Head(Dir),
}

impl Shape {
    pub fn char(self) -> char {
        match self {
            Self::Head(Dir::Up) => '▲',
            Self::Head(Dir::Down) => '▼',
            Self::Head(Dir::Left) => '◀',
            Self::Head(Dir::Right) => '▶',
            Self::Line {
                up,
                down,
                left,
                right,
            } => match (up, down, left, right) {
                (true, false, true, false) => '┘',
                (true, false, false, true) => '└',
                (false, true, true, false) => '┐',
                (false, true, false, true) => '┌',
                (_, _, false, false) => '│',
                (false, false, _, _) => '─',
                _ => '┼',
            },
        }
    }
}

/// A state's box.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node {
    pub state: TcpState,
    pub x: usize,
    pub y: usize,
    /// Cells, the count's room included.
    pub width: usize,
    /// Cells of the count (the `~`s); 0 for CLOSED.
    pub count_width: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineCell {
    pub x: usize,
    pub y: usize,
    /// Index in [`ARROWS`].
    pub arrow: usize,
    pub shape: Shape,
    /// What it connects to, the arrowhead's direction aside: `[up, down, left, right]`.
    pub links: [bool; 4],
}

/// Where a label's text goes in its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// Beside a vertical line on its left: the text against the line.
    Right,
    /// Beside a vertical line on its right.
    Left,
    /// In a horizontal line: centred, the line around it.
    Inline,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LabelSlot {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub arrow: usize,
    pub align: Align,
}

/// The parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub width: usize,
    pub height: usize,
    pub nodes: Vec<Node>,
    pub lines: Vec<LineCell>,
    pub labels: Vec<LabelSlot>,
}

/// What occupies a template cell.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Empty,
    Node(usize),
    Line(usize),
    Label(usize),
}

/// The names a template may hold, each a state.
const NAMES: [(&str, TcpState); 11] = {
    use TcpState::*;
    [
        ("CLOSE_WAIT", CloseWait),
        ("CLOSED", Close),
        ("CLOSING", Closing),
        ("ESTABLISHED", Established),
        ("FIN_WAIT1", FinWait1),
        ("FIN_WAIT2", FinWait2),
        ("LAST_ACK", LastAck),
        ("LISTEN", Listen),
        ("SYN_RECV", SynRecv),
        ("SYN_SENT", SynSent),
        ("TIME_WAIT", TimeWait),
    ]
};

/// [`TEMPLATE`], parsed once.
pub fn layout() -> &'static Layout {
    static LAYOUT: LazyLock<Layout> = LazyLock::new(|| parse(&TEMPLATE));
    &LAYOUT
}

fn arrow_of(c: char) -> Option<usize> {
    let lower = c.to_ascii_lowercase();
    ARROWS.iter().position(|&(l, _, _)| l == lower)
}

/// Parses a template (see the module's documentation). Characters it does not know are
/// left blank.
pub fn parse(rows: &[&str]) -> Layout {
    let height = rows.len();
    let width = rows.iter().map(|r| r.chars().count()).max().unwrap_or(0);
    let chars: Vec<Vec<char>> = rows
        .iter()
        .map(|r| {
            let mut v: Vec<char> = r.chars().collect();
            v.resize(width, ' ');
            v
        })
        .collect();
    let mut grid = vec![vec![Slot::Empty; width]; height];
    let mut nodes = Vec::new();
    let mut labels: Vec<LabelSlot> = Vec::new();
    let mut line_at = Vec::new();
    for (y, row) in chars.iter().enumerate() {
        let text: String = row.iter().collect();
        let mut x = 0;
        while x < width {
            let rest = text.chars().skip(x).collect::<String>();
            if let Some(&(n, state)) = NAMES.iter().find(|(n, _)| rest.starts_with(n)) {
                let count_width = rest[n.len()..].chars().take_while(|&c| c == '~').count();
                let w = n.len() + count_width;
                for cell in &mut grid[y][x..x + w] {
                    *cell = Slot::Node(nodes.len());
                }
                nodes.push(Node {
                    state,
                    x,
                    y,
                    width: w,
                    count_width,
                });
                x += w;
                continue;
            }
            let c = row[x];
            match arrow_of(c) {
                Some(a) if c.is_ascii_lowercase() => {
                    grid[y][x] = Slot::Line(a);
                    line_at.push((x, y, a));
                }
                Some(a) => {
                    match labels.last_mut() {
                        Some(l) if l.y == y && l.arrow == a && l.x + l.width == x => l.width += 1,
                        _ => labels.push(LabelSlot {
                            x,
                            y,
                            width: 1,
                            arrow: a,
                            align: Align::Inline,
                        }),
                    }
                    grid[y][x] = Slot::Label(a);
                }
                None => {}
            }
            x += 1;
        }
    }
    let at = |x: isize, y: isize| -> Slot {
        if x < 0 || y < 0 {
            return Slot::Empty;
        }
        grid.get(y as usize)
            .and_then(|r| r.get(x as usize))
            .copied()
            .unwrap_or(Slot::Empty)
    };
    // A label beside a vertical line is aligned against it; one in a line sits inside it.
    for l in &mut labels {
        let (x0, x1, y) = (l.x as isize, (l.x + l.width) as isize, l.y as isize);
        let is_line = |s: Slot| s == Slot::Line(l.arrow);
        l.align = if is_line(at(x0 - 1, y)) || is_line(at(x1, y)) {
            Align::Inline
        } else if is_line(at(x1 + 1, y)) {
            Align::Right
        } else {
            Align::Left
        };
    }
    let mut lines = Vec::new();
    for (x, y, a) in line_at {
        let (xi, yi) = (x as isize, y as isize);
        let (_, from, to) = ARROWS[a];
        let same = |s: Slot| s == Slot::Line(a) || s == Slot::Label(a);
        let mut up = at(xi, yi - 1) == Slot::Line(a);
        let mut down = at(xi, yi + 1) == Slot::Line(a);
        let mut left = same(at(xi - 1, yi));
        let mut right = same(at(xi + 1, yi));
        let mut shape = None;
        // An end of the line: it joins the state it touches (above or below it, or beside
        // it across one blank cell).
        if [up, down, left, right].iter().filter(|&&b| b).count() <= 1 {
            let node = |s: Slot| match s {
                Slot::Node(i) => Some(nodes[i].state),
                _ => None,
            };
            let beside = |dx: isize| match at(xi + dx, yi) {
                Slot::Empty => node(at(xi + 2 * dx, yi)),
                s => node(s),
            };
            for (dir, st) in [
                (Dir::Up, node(at(xi, yi - 1))),
                (Dir::Down, node(at(xi, yi + 1))),
                (Dir::Left, beside(-1)),
                (Dir::Right, beside(1)),
            ] {
                match st {
                    Some(s) if s == to => shape = Some(Shape::Head(dir)),
                    Some(s) if s == from => match dir {
                        Dir::Up => up = true,
                        Dir::Down => down = true,
                        Dir::Left => left = true,
                        Dir::Right => right = true,
                    },
                    _ => {}
                }
            }
        }
        lines.push(LineCell {
            x,
            y,
            arrow: a,
            links: [up, down, left, right],
            shape: shape.unwrap_or(Shape::Line {
                up,
                down,
                left,
                right,
            }),
        });
    }
    Layout {
        width,
        height,
        nodes,
        lines,
        labels,
    }
}

/// What a drawn cell shows, for styling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Blank,
    /// A state's name or count.
    Node,
    /// A line or label of an arrow; `hot`: taken in the last rate window.
    Arrow {
        hot: bool,
    },
    /// The list of the other arrows: a heading.
    OtherTitle,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cell {
    pub ch: char,
    pub kind: Kind,
}

const BLANK: Cell = Cell {
    ch: ' ',
    kind: Kind::Blank,
};

/// A drawn diagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canvas {
    pub rows: Vec<Vec<Cell>>,
}

impl Canvas {
    /// The diagram as plain text, each row trimmed on the right.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for r in &self.rows {
            let line: String = r.iter().map(|c| c.ch).collect();
            s.push_str(line.trim_end());
            s.push('\n');
        }
        s
    }

    fn put(&mut self, x: usize, y: usize, text: &str, kind: Kind) {
        let Some(row) = self.rows.get_mut(y) else {
            return;
        };
        for (i, ch) in text.chars().enumerate() {
            if let Some(c) = row.get_mut(x + i) {
                *c = Cell { ch, kind };
            }
        }
    }
}

/// The diagram with `states` (sockets in each state now) in the boxes and each arrow's
/// count (and rate, when hot) on it; then, in at most `other_rows` rows of `width` cells
/// (at least [`WIDTH`]), the arrows taken that it does not draw.
pub fn render(arrows: &Arrows, states: &[u64; STATES], other_rows: usize, width: usize) -> Canvas {
    let lay = layout();
    let width = width.max(lay.width);
    let mut c = Canvas {
        rows: vec![vec![BLANK; width]; lay.height],
    };
    let arrow = |i: usize| {
        let (_, o, n) = ARROWS[i];
        arrows.get(o, n)
    };
    for l in &lay.lines {
        let kind = Kind::Arrow {
            hot: arrow(l.arrow).hot(),
        };
        c.put(l.x, l.y, &l.shape.char().to_string(), kind);
    }
    for l in &lay.labels {
        let a = arrow(l.arrow);
        let kind = Kind::Arrow { hot: a.hot() };
        let room = if l.align == Align::Inline {
            l.width.saturating_sub(2)
        } else {
            l.width
        };
        let text = label(&a, room.max(1));
        let n = text.chars().count();
        let (fill, start) = match l.align {
            Align::Inline => ('─', (l.width.saturating_sub(n)) / 2),
            Align::Left => (' ', 0),
            Align::Right => (' ', l.width.saturating_sub(n)),
        };
        let mut slot: Vec<char> = vec![fill; l.width];
        if l.align == Align::Inline && n + 2 <= l.width {
            slot[start - 1] = ' ';
            slot[start + n] = ' ';
        }
        for (i, ch) in text.chars().enumerate() {
            if let Some(s) = slot.get_mut(start + i) {
                *s = ch;
            }
        }
        c.put(l.x, l.y, &slot.iter().collect::<String>(), kind);
    }
    for nd in &lay.nodes {
        let text = if nd.count_width == 0 {
            name(nd.state).to_string()
        } else {
            format!("{} {}", name(nd.state), compact(states[nd.state as usize]))
        };
        let n = text.chars().count().min(nd.width);
        c.put(nd.x, nd.y, &text, Kind::Node);
        // A shorter text than the box leaves room: a line beside it on the right (across
        // the blank cell) is drawn up to the text, its arrowhead moved to the text.
        let end = nd.x + nd.width;
        if n < nd.width
            && let Some(l) = lay.lines.iter().find(|l| l.y == nd.y && l.x == end + 1)
        {
            let kind = Kind::Arrow {
                hot: arrow(l.arrow).hot(),
            };
            let from = nd.x + n + 1;
            let run: String = std::iter::repeat_n('─', end + 2 - from).collect();
            c.put(from, nd.y, &run, kind);
            if l.shape == Shape::Head(Dir::Left) {
                c.put(from, nd.y, "◀", kind);
            }
        }
    }
    others(&mut c, arrows, other_rows, width);
    c
}

/// The arrows taken that the diagram lacks, as `also: FIN_WAIT2→CLOSED 20571 4004/s  …`
/// rows under it; what does not fit is counted (`+2 more`).
fn others(c: &mut Canvas, arrows: &Arrows, max_rows: usize, width: usize) {
    let list = arrows.others();
    if list.is_empty() || max_rows == 0 {
        return;
    }
    const LEAD: &str = "also: ";
    let items: Vec<(String, bool)> = list
        .iter()
        .map(|(o, n, a)| {
            (
                format!("{}→{} {}", name(*o), name(*n), label(a, 12)),
                a.hot(),
            )
        })
        .collect();
    let mut rows: Vec<Vec<(String, bool)>> = vec![Vec::new()];
    let mut used = LEAD.len();
    for (i, item) in items.iter().enumerate() {
        let len = item.0.chars().count() + 2;
        if used + len > width {
            if rows.len() == max_rows {
                // No room left: the rest counted at the end of the last row.
                let more = format!("+{} more", items.len() - i);
                let last = rows.last_mut().map_or(0, |r| r.len());
                while used + more.len() > width
                    && let Some(r) = rows.last_mut()
                    && r.len() > 1
                {
                    if let Some((t, _)) = r.pop() {
                        used -= t.chars().count() + 2;
                    }
                }
                let dropped = last - rows.last().map_or(0, |r| r.len());
                let more = format!("+{} more", items.len() - i + dropped);
                if let Some(r) = rows.last_mut() {
                    r.push((more, false));
                }
                break;
            }
            rows.push(Vec::new());
            used = LEAD.len();
        }
        if let Some(r) = rows.last_mut() {
            r.push(item.clone());
        }
        used += len;
    }
    for (i, row) in rows.into_iter().enumerate() {
        let y = c.rows.len();
        c.rows.push(vec![BLANK; width]);
        if i == 0 {
            c.put(0, y, LEAD, Kind::OtherTitle);
        }
        let mut x = LEAD.len();
        for (text, hot) in row {
            c.put(x, y, &text, Kind::Arrow { hot });
            x += text.chars().count() + 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TcpState::*;

    fn states(pairs: &[(TcpState, u64)]) -> [u64; STATES] {
        let mut s = [0; STATES];
        for &(st, n) in pairs {
            s[st as usize] = n;
        }
        s
    }

    #[test]
    fn the_template_parses_into_every_state_and_arrow() {
        let lay = layout();
        assert_eq!((lay.width, lay.height), (WIDTH, TEMPLATE.len()));
        let mut names: Vec<&str> = lay.nodes.iter().map(|n| name(n.state)).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "CLOSED",
                "CLOSED",
                "CLOSE_WAIT",
                "CLOSING",
                "ESTABLISHED",
                "FIN_WAIT1",
                "FIN_WAIT2",
                "LAST_ACK",
                "LISTEN",
                "SYN_RECV",
                "SYN_SENT",
                "TIME_WAIT"
            ]
        );
        for (i, (letter, from, to)) in ARROWS.iter().enumerate() {
            let cells: Vec<&LineCell> = lay.lines.iter().filter(|l| l.arrow == i).collect();
            // Exactly one arrowhead, touching the state it points into; and one end joined
            // to the state it leaves.
            let heads: Vec<&LineCell> = cells
                .iter()
                .copied()
                .filter(|l| matches!(l.shape, Shape::Head(_)))
                .collect();
            assert_eq!(heads.len(), 1, "arrow {letter}: {heads:?}");
            let Shape::Head(dir) = heads[0].shape else {
                unreachable!()
            };
            let (hx, hy) = (heads[0].x as isize, heads[0].y as isize);
            let (dx, dy, reach) = match dir {
                Dir::Up => (0, -1, 1),
                Dir::Down => (0, 1, 1),
                Dir::Left => (-1, 0, 2),
                Dir::Right => (1, 0, 2),
            };
            let target = lay.nodes.iter().find(|n| {
                let (x, y) = (hx + dx * reach, hy + dy * reach);
                n.y as isize == y && (n.x as isize..(n.x + n.width) as isize).contains(&x)
            });
            assert_eq!(target.map(|n| n.state), Some(*to), "arrow {letter}");
            // Vertical ends meet a state's name, not the room for its count.
            if dy != 0 {
                let t = target.unwrap();
                assert!(heads[0].x < t.x + name(t.state).len(), "arrow {letter}");
            }
            let joined = cells.iter().any(|l| match l.shape {
                Shape::Line { up: true, .. } => lay.nodes.iter().any(|n| {
                    n.state == *from
                        && n.y + 1 == l.y
                        && (n.x..n.x + name(n.state).len()).contains(&l.x)
                }),
                _ => false,
            }) || cells.len() == 1;
            assert!(joined, "arrow {letter} leaves no {from:?}");
            assert_eq!(
                lay.labels.iter().filter(|l| l.arrow == i).count(),
                1,
                "arrow {letter}: one label"
            );
        }
        // No label too narrow for a five-digit count and a rate (`37479 3999/s`), inline
        // ones with a blank on either side.
        for l in &lay.labels {
            let need = if l.align == Align::Inline { 14 } else { 12 };
            assert!(l.width >= need, "{l:?}");
        }
    }

    #[test]
    fn an_idle_diagram() {
        let c = render(&Arrows::default(), &[0; STATES], 2, WIDTH);
        let want = [
            "                                 CLOSED",
            "                                0 ▼  └─────────── 0 ─────────▶ SYN_SENT 0",
            "                                LISTEN 0                        │ 0",
            "  SYN_RECV 0 ◀────────── 0 ───────┘                             │",
            "    └────────────── 0 ────────────────▶ ESTABLISHED 0 ◀─────────┘",
            "             FIN_WAIT1 0 ◀───────── 0 ──────┘└───── 0 ──────▶ CLOSE_WAIT 0",
            "            0 ▼  └───── 0 ───────▶ CLOSING 0                   ▼ 0",
            "             FIN_WAIT2 0             ▼ 0                      LAST_ACK 0",
            "               └────── 0 ─────────▶ TIME_WAIT 0                │ 0",
            "                                     └────── 0 ──────▶ CLOSED ◀┘",
        ]
        .map(|l| format!("{l}\n"))
        .concat();
        assert_eq!(c.text(), want, "\n{}", c.text());
    }

    #[test]
    fn counts_rates_hot_arrows_and_the_others() {
        let mut a = Arrows::default();
        for _ in 0..20_571 {
            a.count(Close, SynSent);
            a.count(FinWait2, Close);
        }
        for _ in 0..3 {
            a.count(Established, Close);
        }
        a.count(Close, Listen);
        a.take_rates(5.0);
        for _ in 0..3 {
            a.count(SynSent, Close);
        }
        let s = states(&[(Listen, 3), (Established, 123_456), (CloseWait, 1)]);
        let c = render(&a, &s, 2, WIDTH);
        let text = c.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0].trim(), "CLOSED");
        assert!(
            lines[1].contains("0.2/s ▼") && lines[1].contains("── 20571 4114/s ───▶ SYN_SENT 0"),
            "{text}"
        );
        assert!(lines[2].contains("LISTEN 3"), "{text}");
        assert!(lines[4].contains("ESTABLISHED 123k ◀"), "{text}");
        assert_eq!(
            &lines[10..],
            [
                "also: FIN_WAIT2→CLOSED 20571 4114/s  ESTABLISHED→CLOSED 3 0.6/s",
                "      SYN_SENT→CLOSED 3"
            ],
            "{text}"
        );
        // Hot: the arrow taken in the last window, its line and its label; not the others.
        let hot = |y: usize, x: usize| c.rows[y][x].kind == Kind::Arrow { hot: true };
        let b = layout()
            .lines
            .iter()
            .find(|l| ARROWS[l.arrow].0 == 'b')
            .unwrap();
        assert!(hot(b.y, b.x));
        let d = layout()
            .lines
            .iter()
            .find(|l| ARROWS[l.arrow].0 == 'd')
            .unwrap();
        assert!(!hot(d.y, d.x));
        assert_eq!(c.rows[2][32].kind, Kind::Node);
    }

    #[test]
    fn the_other_arrows_wrap_and_count_what_does_not_fit() {
        let mut a = Arrows::default();
        let others = [
            (FinWait2, Close),
            (Established, Close),
            (SynSent, Close),
            (Listen, Close),
            (Closing, Close),
            (FinWait1, Close),
            (CloseWait, Close),
            (SynRecv, Close),
        ];
        for (i, (o, n)) in others.iter().enumerate() {
            for _ in 0..(100 - i) {
                a.count(*o, *n);
            }
        }
        let c = render(&a, &[0; STATES], 2, WIDTH);
        let text = c.text();
        let extra: Vec<&str> = text.lines().skip(TEMPLATE.len()).collect();
        assert_eq!(extra.len(), 2, "{text}");
        assert!(extra.iter().all(|l| l.chars().count() <= WIDTH), "{text}");
        assert!(extra[0].starts_with("also: FIN_WAIT2→CLOSED 100"), "{text}");
        let shown = extra.iter().map(|l| l.matches('→').count()).sum::<usize>();
        let more: usize = extra[1]
            .rsplit_once('+')
            .and_then(|(_, m)| m.strip_suffix(" more")?.parse().ok())
            .unwrap_or_else(|| panic!("no count of the rest: {text}"));
        assert_eq!(shown + more, others.len(), "{text}");
        // Wider: all of them.
        let c = render(&a, &[0; STATES], 2, 200);
        assert!(!c.text().contains("more"), "{}", c.text());
    }
}
