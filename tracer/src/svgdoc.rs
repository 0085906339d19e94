//! What the SVG pictures share (the ladder, `--svg DIR`; the state diagram, `--diagram
//! FILE`): text escaped for XML, coordinates written short, the fonts and the colours.
use std::fmt::{self, Write as _};

use crate::decode::TcpState;

/// Monospace first (the layout assumes fixed-width glyphs), from what Linux, macOS and
/// Windows have; every viewer has a generic `monospace`.
pub const FONT: &str = "'DejaVu Sans Mono', Menlo, Consolas, 'Liberation Mono', monospace";
/// Advance of one glyph of those fonts, as a fraction of the font size (DejaVu Sans Mono
/// and Liberation Mono: 0.60; a little more, to be safe with the others).
pub const CHAR_W: f64 = 0.61;

pub const INK: &str = "#24292f";
pub const MUTED: &str = "#57606a";
pub const LINE: &str = "#8c959f";

/// The start of a picture, up to its content: the XML declaration, the `<svg>` element
/// (`w` × `h` px, the fonts at `font_size`, the ink), its `title` (escaped) and `desc` (a
/// literal of ours, written as is), the arrowhead markers (`(id, colour)`, `marker_size` px
/// square) and a white background.
pub fn open(
    s: &mut String,
    (w, h): (f64, f64),
    font_size: f64,
    title: &str,
    desc: &str,
    markers: &[(&str, &str)],
    marker_size: u32,
) -> fmt::Result {
    let (w, h) = (Px(w), Px(h));
    writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="{FONT}" font-size="{}" fill="{INK}">"#,
        Px(font_size)
    )?;
    writeln!(s, "<title>{}</title>", Esc(title))?;
    writeln!(s, "<desc>{desc}</desc>")?;
    writeln!(s, "<defs>")?;
    for (id, color) in markers {
        writeln!(
            s,
            r#"<marker id="{id}" viewBox="0 0 10 10" refX="10" refY="5" markerUnits="userSpaceOnUse" markerWidth="{marker_size}" markerHeight="{marker_size}" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>"#
        )?;
    }
    writeln!(s, "</defs>")?;
    writeln!(
        s,
        r##"<rect class="background" x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>"##
    )
}

/// Width of `text` at `size` px in the monospace font.
pub fn text_w(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * CHAR_W
}

/// A coordinate, to 0.1 px, without a trailing `.0`.
pub struct Px(pub f64);

impl fmt::Display for Px {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tenths = (self.0 * 10.0).round() / 10.0;
        if tenths.fract() == 0.0 {
            write!(f, "{}", tenths as i64)
        } else {
            write!(f, "{tenths:.1}")
        }
    }
}

/// Text for XML content and attribute values: markup characters escaped, characters XML
/// 1.0 forbids replaced by U+FFFD, line breaks and tabs made spaces (each text is one line).
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for ch in self.0.chars() {
            match ch {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                '\'' => f.write_str("&#39;")?,
                '\t' | '\n' | '\r' => f.write_char(' ')?,
                c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {
                    f.write_char('\u{FFFD}')?;
                }
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Green when data can flow, blue while opening, amber while closing, grey when closed.
pub const fn state_color(s: TcpState) -> &'static str {
    use TcpState::*;
    match s {
        Established => "#1a7f37",
        SynSent | SynRecv | NewSynRecv => "#0550ae",
        FinWait1 | FinWait2 | CloseWait | LastAck | Closing | TimeWait => "#9a6700",
        Close | Listen => MUTED,
    }
}
