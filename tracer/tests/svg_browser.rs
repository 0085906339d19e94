//! The SVG pictures (the ladder, `--svg DIR`; the state diagram, `--diagram FILE`) as a user
//! sees them: opened in a real browser, headless
//! Chromium (Debian's `chromium`).
//!
//! - `screenshot_shows_the_diagram`: Chromium opens the `.svg` file itself and takes a
//!   screenshot; the PNG must show the whole picture (ink from the title to the footer,
//!   coloured state names) and every arrowhead at the receiving end of its arrow.
//! - `states_laid_out_in_order`: the SVG inlined in an HTML page whose script writes where
//!   Chromium laid out every text (`--dump-dom`); the states must read top to bottom in the
//!   order of the connection on each side, beside their own lifeline, and no text may overlap
//!   another or be clipped by the picture's edges.
//!
//! - `state_diagram_screenshot_shows_the_machine` and `state_diagram_laid_out_without_overlaps`:
//!   the same for the state diagram (`--diagram FILE`): painted, an arrowhead at the end of
//!   every arrow, every state named, every label its arrow's count, no text over another or
//!   clipped.
//!
//! `#[ignore]`d for a plain `cargo test` (they need Chromium); `cargo xtask test` installs
//! `chromium` and runs them. The files they write (SVG, HTML, PNG) stay in
//! `target/tmp/svg_browser/` for a look.
use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer::{
    decode::TcpState,
    ladder::{Arrow, Column, Ladder, Row, Side, svg},
};

const NEEDS_CHROMIUM: &str = "needs Chromium: install it (`apt-get install chromium` on Debian) or run `cargo xtask test`, which does; CHROMIUM=/path/to/binary picks another";
/// A cold start of Chromium takes a few seconds; far more means it hangs.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(120);

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return p.into();
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find_map(find_on_path)
        .unwrap_or_else(|| panic!("no chromium on PATH: {NEEDS_CHROMIUM}"))
}

/// A fresh directory for one test's files.
fn workdir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("svg_browser")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn file_url(p: &Path) -> String {
    format!("file://{}", p.canonicalize().unwrap().display())
}

/// Runs headless Chromium with its own profile in `dir`; returns its stdout.
fn run_chromium(dir: &Path, args: &[String]) -> String {
    let bin = chromium();
    let stderr_path = dir.join("chromium.stderr");
    let mut child = Command::new(&bin)
        .args([
            "--headless",
            // Root and containers: Chromium's sandbox needs user namespaces it may not get.
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-sync",
            "--mute-audio",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}; {NEEDS_CHROMIUM}", bin.display()));
    let mut stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} {args:?} still running after {CHROMIUM_TIMEOUT:?}; stderr in {}",
                bin.display(),
                stderr_path.display()
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    let out = reader.join().unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        status.success(),
        "{} {args:?} failed ({status}):\n{stderr}",
        bin.display()
    );
    out
}

/// The picture's size from the root element.
fn svg_size(svg: &str) -> (u32, u32) {
    let doc = roxmltree::Document::parse(svg).unwrap();
    let root = doc.root_element();
    let n = |a: &str| root.attribute(a).unwrap().parse::<f64>().unwrap().ceil() as u32;
    (n("width"), n("height"))
}

struct Image {
    width: u32,
    height: u32,
    rgb: Vec<[u8; 3]>,
}

impl Image {
    fn read(path: &Path) -> Self {
        let file = std::fs::File::open(path)
            .unwrap_or_else(|e| panic!("Chromium wrote no screenshot {}: {e}", path.display()));
        let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        let samples = info.color_type.samples();
        let rgb = buf[..info.buffer_size()]
            .chunks_exact(samples)
            .map(|p| match samples {
                1 | 2 => [p[0]; 3],
                _ => [p[0], p[1], p[2]],
            })
            .collect();
        Self {
            width: info.width,
            height: info.height,
            rgb,
        }
    }

    fn at(&self, x: u32, y: u32) -> [u8; 3] {
        self.rgb[(y * self.width + x) as usize]
    }

    /// Pixels in `[x0, x1) × [y0, y1)` (clamped to the image) for which `f` holds.
    fn count(
        &self,
        (x0, x1): (f64, f64),
        (y0, y1): (f64, f64),
        f: impl Fn([u8; 3]) -> bool,
    ) -> usize {
        let clamp = |v: f64, max: u32| (v.max(0.0) as u32).min(max);
        let (x0, x1) = (clamp(x0, self.width), clamp(x1, self.width));
        let (y0, y1) = (clamp(y0, self.height), clamp(y1, self.height));
        (y0..y1)
            .flat_map(|y| (x0..x1).map(move |x| (x, y)))
            .filter(|&(x, y)| f(self.at(x, y)))
            .count()
    }
}

fn is_ink(p: [u8; 3]) -> bool {
    p.iter().any(|&c| c < 200)
}

fn is_dark(p: [u8; 3]) -> bool {
    p.iter().map(|&c| u32::from(c)).sum::<u32>() < 300
}

/// ESTABLISHED's green.
fn is_green(p: [u8; 3]) -> bool {
    let [r, g, b] = p.map(i32::from);
    g > r + 40 && g > b + 30
}

/// `svg` as Chromium paints it at its own size (`name`.svg and .png in `workdir(name)`),
/// checked painted as every picture of ours is: not blank nor smeared, the title in the top
/// tenth, the footer in the bottom one, ESTABLISHED green.
fn screenshot_painted(name: &str, svg: &str) -> Image {
    let dir = workdir(name);
    let file = dir.join(format!("{name}.svg"));
    std::fs::write(&file, svg).unwrap();
    let (w, h) = svg_size(svg);
    let shot = dir.join(format!("{name}.png"));
    run_chromium(
        &dir,
        &[
            format!("--screenshot={}", shot.display()),
            format!("--window-size={w},{h}"),
            file_url(&file),
        ],
    );
    let img = Image::read(&shot);
    eprintln!("screenshot: {}", shot.display());
    assert_eq!((img.width, img.height), (w, h));

    let all = (0.0, f64::from(w));
    let total = (w * h) as usize;
    let ink = img.count(all, (0.0, f64::from(h)), is_ink);
    assert!(
        ink > total / 100 && ink < total / 3,
        "{ink} of {total} pixels not white: blank or smeared"
    );
    let tenth = f64::from(h) / 10.0;
    assert!(img.count(all, (0.0, tenth), is_dark) > 100, "no title");
    assert!(
        img.count(all, (f64::from(h) - tenth, f64::from(h)), is_ink) > 100,
        "no footer: the bottom of the picture is not painted"
    );
    assert!(
        img.count(all, (0.0, f64::from(h)), is_green) > 50,
        "no green ESTABLISHED"
    );
    img
}

#[test]
#[ignore = "needs chromium"]
fn screenshot_shows_the_diagram() {
    let svg = svg::render(&svg::sample_ladder());
    let img = screenshot_painted("ladder", &svg);

    // Each arrowhead at the receiver's lifeline: far more ink there than at the sender's
    // end, where there is only the shaft.
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let mut arrows = 0;
    for line in doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("arrow"))
        .filter_map(|g| g.children().find(|n| n.has_tag_name("line")))
    {
        let n = |a: &str| line.attribute(a).unwrap().parse::<f64>().unwrap();
        let (x1, x2, y) = (n("x1"), n("x2"), n("y1"));
        let dir = (x2 - x1).signum();
        let span = |from: f64, to: f64| (from.min(to), from.max(to));
        let ys = (y - 6.0, y + 7.0);
        let head = img.count(span(x2 - dir * 11.0, x2 - dir * 3.0), ys, is_dark);
        let tail = img.count(span(x1 + dir * 5.0, x1 + dir * 13.0), ys, is_dark);
        assert!(
            head >= tail + 20,
            "arrow at y={y} from x={x1} to x={x2}: {head} dark pixels at the head, {tail} at the tail"
        );
        arrows += 1;
    }
    assert_eq!(arrows, 7);
}

/// One side of a connection whose other end is not on this host, reset by the peer, with
/// long IPv6 labels and a note on a row that also has an arrow: the layout's awkward cases.
fn remote_reset_ladder() -> Ladder {
    use TcpState::*;
    let row = |offset_ns, state, arrow: Option<(Side, &'static str)>, note: Option<&str>| Row {
        offset_ns,
        side: Side::Left,
        state,
        arrow: arrow.map(|(from, label)| Arrow { from, label }),
        note: note.map(str::to_string),
    };
    let (l, r) = (Side::Left, Side::Right);
    Ladder {
        title: "[2001:db8:aaaa:bbbb:cccc:dddd:eeee:1]:52940 -> [2001:db8::2]:443".into(),
        started: "2026-11-23 22:01:09.992247".into(),
        left: Column {
            label: "client [2001:db8:aaaa:bbbb:cccc:dddd:eeee:1]:52940".into(),
            detail: "pid 4242 curl <&> \"quoted\"".into(),
            initial: Some(Close),
        },
        right: Column {
            label: "remote [2001:db8::2]:443".into(),
            detail: "not on this host".into(),
            initial: None,
        },
        rows: vec![
            row(0, Some(SynSent), Some((l, "SYN")), None),
            row(812_345, Some(Established), Some((r, "SYN-ACK")), None),
            row(812_345, None, Some((l, "ACK")), None),
            row(1_500_000, None, None, Some("retransmit")),
            row(61_250_000_000, Some(Close), Some((r, "RST")), Some("RST received")),
        ],
        footer: vec![
            "client [2001:db8:aaaa:bbbb:cccc:dddd:eeee:1]:52940: close reset_received, lifetime 1m01s".into(),
            "arrows are inferred from the state changes: the tracepoint sees states, not packets".into(),
            "the other end is not on this host (or was filtered out)".into(),
        ],
    }
}

/// A text as Chromium laid it out, in px from the picture's top left corner.
#[derive(Debug)]
struct Laid {
    class: String,
    side: String,
    text: String,
    /// An initial state, under the column's header.
    initial: bool,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

struct Layout {
    width: f64,
    height: f64,
    texts: Vec<Laid>,
    /// x of the left and right lifelines.
    lifelines: (f64, f64),
}

/// `svg` inline in a page whose `script` writes JSON into `<pre id="layout">`, loaded by
/// Chromium (`--dump-dom`, in `workdir(name)`, as `kind`.svg): that JSON.
fn dom_layout(name: &str, kind: &str, svg: &str, script: &str) -> Value {
    let dir = workdir(name);
    std::fs::write(dir.join(format!("{kind}.svg")), svg).unwrap();
    let (w, h) = svg_size(svg);
    let inline = svg.split_once("?>").map_or(svg, |(_, rest)| rest);
    let html = format!(
        r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{kind} layout</title>
<style>html, body {{ margin: 0; padding: 0; background: #fff; }}</style></head>
<body>{inline}
<pre id="layout"></pre>
<script>
{script}</script></body></html>
"#
    );
    let page = dir.join("layout.html");
    std::fs::write(&page, html).unwrap();
    let dom = run_chromium(
        &dir,
        &[
            "--dump-dom".into(),
            format!("--window-size={},{}", w + 100, h + 100),
            file_url(&page),
        ],
    );
    std::fs::write(dir.join("dom.html"), &dom).unwrap();
    let json = dom
        .split_once(r#"<pre id="layout">"#)
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map(|(j, _)| {
            j.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&")
        })
        .filter(|j| !j.is_empty())
        .unwrap_or_else(|| panic!("the page's script wrote no layout:\n{dom}"));
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

/// Every text's box, and the lifelines' x, from the picture's top left corner.
const LADDER_LAYOUT_JS: &str = r#"(() => {
  const svg = document.querySelector('svg');
  const page = svg.getBoundingClientRect();
  const box = (e) => {
    const r = e.getBoundingClientRect();
    return { left: r.left - page.left, right: r.right - page.left,
              top: r.top - page.top, bottom: r.bottom - page.top };
  };
  const out = { width: page.width, height: page.height, texts: [], lifelines: {} };
  for (const t of svg.querySelectorAll('text')) {
    out.texts.push(Object.assign({
      class: t.getAttribute('class') || '',
      side: t.getAttribute('data-side') || '',
      text: t.textContent,
      initial: t.hasAttribute('data-initial'),
    }, box(t)));
  }
  for (const line of svg.querySelectorAll('line.lifeline')) {
    const b = box(line);
    out.lifelines[line.getAttribute('data-side')] = (b.left + b.right) / 2;
  }
  document.getElementById('layout').textContent = JSON.stringify(out);
})();
"#;

/// Every text's box and what it labels (a state's box, or an arrow `FROM>TO`).
const DIAGRAM_TEXTS_JS: &str = r#"(() => {
  const svg = document.querySelector('svg');
  const page = svg.getBoundingClientRect();
  const out = { width: page.width, height: page.height, texts: [] };
  for (const t of svg.querySelectorAll('text')) {
    const r = t.getBoundingClientRect();
    const g = t.closest('g');
    out.texts.push({
      class: t.getAttribute('class') || '',
      side: g ? (g.getAttribute('data-state') || ((g.getAttribute('data-from') || '') + '>' + (g.getAttribute('data-to') || ''))) : '',
      text: Array.from(t.childNodes).filter(n => n.nodeType === 3).map(n => n.textContent).join(''),
      left: r.left - page.left, right: r.right - page.left,
      top: r.top - page.top, bottom: r.bottom - page.top });
  }
  document.getElementById('layout').textContent = JSON.stringify(out);
})();
"#;

/// Where Chromium puts every text of the picture.
fn layout_in_chromium(name: &str, l: &Ladder) -> Layout {
    let svg = svg::render(l);
    let v = dom_layout(name, "ladder", &svg, LADDER_LAYOUT_JS);
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("no {k} in {v}"));
    let s = |v: &Value, k: &str| v[k].as_str().unwrap().to_string();
    Layout {
        width: f(&v, "width"),
        height: f(&v, "height"),
        texts: v["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| Laid {
                class: s(t, "class"),
                side: s(t, "side"),
                text: s(t, "text"),
                initial: t["initial"].as_bool().unwrap(),
                left: f(t, "left"),
                right: f(t, "right"),
                top: f(t, "top"),
                bottom: f(t, "bottom"),
            })
            .collect(),
        lifelines: (f(&v["lifelines"], "left"), f(&v["lifelines"], "right")),
    }
}

/// What any ladder must look like: states top to bottom beside their own lifeline, arrow
/// labels between the lifelines, no text overlapping another or clipped.
fn check_layout(l: &Ladder, lay: &Layout) {
    let (w, h) = svg_size(&svg::render(l));
    assert_eq!((lay.width, lay.height), (f64::from(w), f64::from(h)));
    let (left_x, right_x) = lay.lifelines;
    assert!(left_x < right_x);
    const SLACK: f64 = 0.5;
    for t in &lay.texts {
        assert!(
            t.left >= -SLACK
                && t.top >= -SLACK
                && t.right <= lay.width + SLACK
                && t.bottom <= lay.height + SLACK,
            "clipped by the picture's edges ({} x {}): {t:?}",
            lay.width,
            lay.height
        );
        assert!(t.right > t.left && t.bottom > t.top, "not drawn: {t:?}");
    }
    for (i, a) in lay.texts.iter().enumerate() {
        for b in &lay.texts[i + 1..] {
            let dx = a.right.min(b.right) - a.left.max(b.left);
            let dy = a.bottom.min(b.bottom) - a.top.max(b.top);
            assert!(
                dx <= SLACK || dy <= SLACK,
                "overlapping texts:\n  {a:?}\n  {b:?}"
            );
        }
    }
    for side in ["left", "right"] {
        let states: Vec<&Laid> = lay
            .texts
            .iter()
            .filter(|t| t.class == "state" && t.side == side)
            .collect();
        assert!(
            states.windows(2).all(|p| p[0].bottom <= p[1].top + SLACK),
            "{side} states not top to bottom: {states:#?}"
        );
    }
    // The initial states centred on their lifeline, the others beside it, outside.
    for t in lay.texts.iter().filter(|t| t.class == "state") {
        let x = if t.side == "left" { left_x } else { right_x };
        let ok = match (t.initial, t.side.as_str()) {
            (true, _) => ((t.left + t.right) / 2.0 - x).abs() < 1.0,
            (false, "left") => t.right < left_x,
            (false, _) => t.left > right_x,
        };
        assert!(ok, "{t:?} not beside its lifeline ({left_x}, {right_x})");
    }
    for t in lay.texts.iter().filter(|t| t.class == "label") {
        assert!(
            t.left > left_x && t.right < right_x,
            "arrow label {t:?} not between the lifelines ({left_x}, {right_x})"
        );
    }
    // Everything the model says is shown.
    let shown: Vec<&str> = lay.texts.iter().map(|t| t.text.as_str()).collect();
    let mut want = vec![
        l.title.as_str(),
        l.left.label.as_str(),
        l.right.label.as_str(),
        l.left.detail.as_str(),
        l.right.detail.as_str(),
    ];
    want.extend(l.footer.iter().map(String::as_str));
    want.extend(l.rows.iter().filter_map(|r| r.note.as_deref()));
    want.extend(
        l.rows
            .iter()
            .filter_map(|r| r.arrow.as_ref().map(|a| a.label)),
    );
    for w in want {
        assert!(shown.contains(&w), "{w:?} not shown: {shown:?}");
    }
}

fn names<'a>(lay: &'a Layout, side: &str) -> Vec<&'a str> {
    lay.texts
        .iter()
        .filter(|t| t.class == "state" && t.side == side)
        .map(|t| t.text.as_str())
        .collect()
}

#[test]
#[ignore = "needs chromium"]
fn states_laid_out_in_order() {
    let l = svg::sample_ladder();
    let lay = layout_in_chromium("layout", &l);
    check_layout(&l, &lay);
    assert_eq!(
        names(&lay, "left"),
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
        names(&lay, "right"),
        [
            "LISTEN",
            "SYN_RECV",
            "ESTABLISHED",
            "CLOSE_WAIT",
            "LAST_ACK",
            "CLOSE"
        ]
    );
}

#[test]
#[ignore = "needs chromium"]
fn remote_column_and_reset_laid_out() {
    let l = remote_reset_ladder();
    let lay = layout_in_chromium("layout-remote", &l);
    check_layout(&l, &lay);
    assert_eq!(
        names(&lay, "left"),
        ["CLOSE", "SYN_SENT", "ESTABLISHED", "CLOSE"]
    );
    assert!(names(&lay, "right").is_empty());
}

/// The state diagram (`--diagram FILE`) laid out by Chromium: every text inside the picture,
/// none over another.
struct Texts {
    width: f64,
    height: f64,
    texts: Vec<Laid>,
}

fn diagram_texts_in_chromium(name: &str, svg: &str) -> Texts {
    let v = dom_layout(name, "diagram", svg, DIAGRAM_TEXTS_JS);
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("no {k} in {v}"));
    let s = |v: &Value, k: &str| v[k].as_str().unwrap().to_string();
    Texts {
        width: f(&v, "width"),
        height: f(&v, "height"),
        texts: v["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| Laid {
                class: s(t, "class"),
                side: s(t, "side"),
                text: s(t, "text"),
                initial: false,
                left: f(t, "left"),
                right: f(t, "right"),
                top: f(t, "top"),
                bottom: f(t, "bottom"),
            })
            .collect(),
    }
}

/// The state diagram as Chromium paints it: not blank, the title at the top and the notes
/// at the bottom, ESTABLISHED green, every taken arrow with an arrowhead at its end.
#[test]
#[ignore = "needs chromium"]
fn state_diagram_screenshot_shows_the_machine() {
    use tracer::diagram::svg as dsvg;
    let svg = dsvg::render(&dsvg::sample(), "The TCP state machine", "a sample");
    let img = screenshot_painted("diagram-screenshot", &svg);
    // Each arrowhead: 7 px behind its tip (the triangle is 9 px long and wide), a strip
    // across the line is inked over 5 px or more, where a bare line would ink 2 or 3.
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let mut heads = 0;
    for g in doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("arrow"))
    {
        let Some(line) = g.children().find(|n| n.has_tag_name("line")) else {
            panic!("arrow {:?} has no head", g.attribute("data-to"));
        };
        let n = |a: &str| line.attribute(a).unwrap().parse::<f64>().unwrap();
        let (x1, y1, x2, y2) = (n("x1"), n("y1"), n("x2"), n("y2"));
        let len = ((x2 - x1).powi(2) + (y2 - y1).powi(2)).sqrt();
        let (ux, uy) = ((x2 - x1) / len, (y2 - y1) / len);
        let across = |back: f64| {
            let (cx, cy) = (x2 - ux * back, y2 - uy * back);
            if ux.abs() > uy.abs() {
                img.count((cx - 0.5, cx + 0.5), (cy - 7.0, cy + 7.0), |p| !is_white(p))
            } else {
                img.count((cx - 7.0, cx + 7.0), (cy - 0.5, cy + 0.5), |p| !is_white(p))
            }
        };
        let tip = across(6.5).max(across(7.5));
        assert!(
            tip >= 5,
            "arrow to {:?} ({x1},{y1})->({x2},{y2}): {tip} inked pixels across, 7 px behind the tip",
            g.attribute("data-to")
        );
        heads += 1;
    }
    assert_eq!(heads, 14);
}

fn is_white(p: [u8; 3]) -> bool {
    p.iter().all(|&c| c > 235)
}

/// Every text of the state diagram inside the picture and apart from the others; every
/// state named, every arrow's label its count.
#[test]
#[ignore = "needs chromium"]
fn state_diagram_laid_out_without_overlaps() {
    use tracer::diagram::svg as dsvg;
    let c = dsvg::sample();
    let svg = dsvg::render(
        &c,
        "The TCP state machine",
        "a sample: 20571 connections on loopback",
    );
    let lay = diagram_texts_in_chromium("diagram-layout", &svg);
    let (w, h) = svg_size(&svg);
    assert_eq!((lay.width, lay.height), (f64::from(w), f64::from(h)));
    const SLACK: f64 = 0.5;
    for t in &lay.texts {
        assert!(
            t.left >= -SLACK
                && t.top >= -SLACK
                && t.right <= lay.width + SLACK
                && t.bottom <= lay.height + SLACK,
            "clipped by the picture's edges ({} x {}): {t:?}",
            lay.width,
            lay.height
        );
        assert!(t.right > t.left && t.bottom > t.top, "not drawn: {t:?}");
    }
    for (i, a) in lay.texts.iter().enumerate() {
        for b in &lay.texts[i + 1..] {
            let dx = a.right.min(b.right) - a.left.max(b.left);
            let dy = a.bottom.min(b.bottom) - a.top.max(b.top);
            assert!(
                dx <= SLACK || dy <= SLACK,
                "overlapping texts:\n  {a:?}\n  {b:?}"
            );
        }
    }
    let names: Vec<&str> = lay
        .texts
        .iter()
        .filter(|t| t.class == "name")
        .map(|t| t.text.as_str())
        .collect();
    for s in [
        "CLOSED",
        "LISTEN",
        "SYN_SENT",
        "SYN_RECV",
        "ESTABLISHED",
        "FIN_WAIT1",
        "FIN_WAIT2",
        "CLOSING",
        "TIME_WAIT",
        "CLOSE_WAIT",
        "LAST_ACK",
    ] {
        assert!(names.contains(&s), "{s} not shown: {names:?}");
    }
    assert_eq!(names.iter().filter(|n| **n == "CLOSED").count(), 2);
    for (_, old, new) in tracer::diagram::canvas::ARROWS {
        let key = format!(
            "{}>{}",
            tracer::diagram::name(old),
            tracer::diagram::name(new)
        );
        let label = lay
            .texts
            .iter()
            .find(|t| t.class == "label" && t.side == key)
            .unwrap_or_else(|| panic!("no label for {key}"));
        assert_eq!(
            label.text,
            c.arrows.get(old, new).total.to_string(),
            "{key}"
        );
    }
    let medians = lay.texts.iter().filter(|t| t.class == "median").count();
    assert_eq!(medians, 9, "a median in each state measured");
    let others = lay.texts.iter().filter(|t| t.class == "other").count();
    assert_eq!(others, c.arrows.others().len());
    assert!(others >= 3);
}

/// An orphaned FIN_WAIT2's ladder, as the table builds it (`ladder::orphan_sample`): the
/// handoff's note on the client's line and the server's FIN at its LAST_ACK, laid out like
/// any other (nothing overlapping or clipped, states in order).
#[test]
#[ignore = "needs chromium"]
fn an_orphans_ladder_laid_out() {
    let l = tracer::ladder::orphan_sample();
    let lay = layout_in_chromium("layout-orphan", &l);
    check_layout(&l, &lay);
    assert_eq!(
        names(&lay, "left"),
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
        names(&lay, "right"),
        [
            "LISTEN",
            "SYN_RECV",
            "ESTABLISHED",
            "CLOSE_WAIT",
            "LAST_ACK",
            "CLOSE"
        ]
    );
    // The handoff's note, on the left, above the server's FIN label; the FIN label level
    // with LAST_ACK.
    let find = |class: &str, text: &str| {
        lay.texts
            .iter()
            .find(|t| t.class == class && t.text == text)
            .unwrap_or_else(|| panic!("no {class} {text:?}"))
    };
    let note = find("note", "handed to a timewait socket (FIN_WAIT2)");
    assert_eq!(note.side, "left");
    let last_ack = lay
        .texts
        .iter()
        .find(|t| t.class == "state" && t.side == "right" && t.text == "LAST_ACK")
        .unwrap();
    let fins: Vec<&Laid> = lay
        .texts
        .iter()
        .filter(|t| t.class == "label" && t.text == "FIN")
        .collect();
    assert_eq!(fins.len(), 2, "{fins:?}");
    let server_fin = fins[1];
    assert!(note.bottom <= server_fin.top, "{note:?} {server_fin:?}");
    assert!(
        server_fin.bottom > last_ack.top - 16.0 && server_fin.top < last_ack.bottom,
        "the server's FIN {server_fin:?} not beside its LAST_ACK {last_ack:?}"
    );
}
