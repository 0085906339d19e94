//! What the keys do: the view's state ([`View`]) and its changes, pure (no terminal), so
//! every key is unit-tested.
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::model::{Dashboard, Entry, EntryKey, Grouping, Query, Sort, detail};

/// A connection's timeline and ladder, shown over the dashboard (`Enter`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Detail {
    pub lines: Vec<String>,
    /// The first line shown, and the first column.
    pub scroll: usize,
    pub hscroll: usize,
}

/// Everything the keys change.
#[derive(Clone, Debug, Default)]
pub struct View {
    pub paused: bool,
    pub sort: Sort,
    pub help: bool,
    /// `d`: the diagram (true) or the list of transitions (false); `None` until `d` is
    /// pressed: whichever fits the terminal ([`super::panels::auto_diagram`]).
    pub diagram: Option<bool>,
    pub grouping: Grouping,
    /// The `/` filter in force.
    pub filter: Option<Query>,
    /// What is being typed after `/` (the filter follows it as it is typed).
    pub editing: Option<String>,
    /// The selected row of the connections list, and which connection it is (kept across
    /// refreshes, whose lists differ).
    pub selected: usize,
    pub selected_key: Option<EntryKey>,
    pub detail: Option<Detail>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing changed.
    None,
    Redraw,
    Quit,
}

/// Rows a page key moves.
const PAGE: usize = 10;

impl View {
    /// Whether the diagram is shown, `auto` being what fits the terminal.
    pub fn shows_diagram(&self, auto: bool) -> bool {
        self.diagram.unwrap_or(auto)
    }

    /// After a new snapshot: the selection follows its connection (or stays at its row when
    /// that one is gone).
    pub fn sync(&mut self, d: &Dashboard) {
        let entries = d.entries(self.filter.as_ref());
        if let Some(k) = self.selected_key
            && let Some(i) = entries.iter().position(|e| d.entry_key(*e) == Some(k))
        {
            self.selected = i;
            return;
        }
        self.selected = self.selected.min(entries.len().saturating_sub(1));
        self.selected_key = entries.get(self.selected).and_then(|e| d.entry_key(*e));
    }

    fn select(&mut self, d: &Dashboard, to: usize) {
        let entries = d.entries(self.filter.as_ref());
        self.selected = to.min(entries.len().saturating_sub(1));
        self.selected_key = entries.get(self.selected).and_then(|e| d.entry_key(*e));
    }

    /// The selected connection's row, if the list has one.
    pub fn selected_entry(&self, d: &Dashboard) -> Option<Entry> {
        d.entries(self.filter.as_ref()).get(self.selected).copied()
    }

    fn set_filter(&mut self, text: Option<&str>, d: &Dashboard) {
        self.filter = text.and_then(Query::new);
        self.selected_key = None;
        self.select(d, 0);
    }

    /// One key press on dashboard `d`; `auto_diagram`: whether the diagram is what fits.
    pub fn key(&mut self, k: KeyEvent, d: &Dashboard, auto_diagram: bool) -> Action {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if let Some(text) = &mut self.editing {
            match k.code {
                KeyCode::Char(c) => text.push(c),
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Enter => {
                    self.editing = None;
                    return Action::Redraw;
                }
                KeyCode::Esc => {
                    self.editing = None;
                    self.set_filter(None, d);
                    return Action::Redraw;
                }
                _ => return Action::None,
            }
            let text = text.clone();
            self.set_filter(Some(&text), d);
            return Action::Redraw;
        }
        if let Some(det) = &mut self.detail {
            let last = det.lines.len().saturating_sub(1);
            match k.code {
                KeyCode::Esc | KeyCode::Enter => self.detail = None,
                KeyCode::Up | KeyCode::Char('k') => det.scroll = det.scroll.saturating_sub(1),
                KeyCode::Down | KeyCode::Char('j') => det.scroll = (det.scroll + 1).min(last),
                KeyCode::PageUp => det.scroll = det.scroll.saturating_sub(PAGE),
                KeyCode::PageDown => det.scroll = (det.scroll + PAGE).min(last),
                KeyCode::Left | KeyCode::Char('h') => {
                    det.hscroll = det.hscroll.saturating_sub(PAGE);
                }
                KeyCode::Right | KeyCode::Char('l') => {
                    let widest = det.lines.iter().map(|l| l.chars().count()).max();
                    det.hscroll = (det.hscroll + PAGE).min(widest.unwrap_or(0));
                }
                KeyCode::Char('q') => return Action::Quit,
                _ => return Action::None,
            }
            return Action::Redraw;
        }
        match k.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('p') => self.paused = !self.paused,
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Char('?') => self.help = !self.help,
            KeyCode::Char('d') => self.diagram = Some(!self.shows_diagram(auto_diagram)),
            KeyCode::Char('n') => self.grouping = self.grouping.next(),
            KeyCode::Char('/') => {
                self.editing = Some(
                    self.filter
                        .as_ref()
                        .map_or_else(String::new, |q| q.text().to_string()),
                );
            }
            KeyCode::Esc if self.help => self.help = false,
            KeyCode::Esc if self.filter.is_some() => self.set_filter(None, d),
            KeyCode::Down | KeyCode::Char('j') => self.select(d, self.selected + 1),
            KeyCode::Up | KeyCode::Char('k') => self.select(d, self.selected.saturating_sub(1)),
            KeyCode::PageDown => self.select(d, self.selected + PAGE),
            KeyCode::PageUp => self.select(d, self.selected.saturating_sub(PAGE)),
            KeyCode::Home => self.select(d, 0),
            KeyCode::End => self.select(d, usize::MAX),
            KeyCode::Enter => {
                let Some(c) = self.selected_entry(d).and_then(|e| d.conn(e)) else {
                    return Action::None;
                };
                self.detail = Some(Detail {
                    lines: detail(d, c).lines().map(str::to_string).collect(),
                    scroll: 0,
                    hscroll: 0,
                });
            }
            _ => return Action::None,
        }
        Action::Redraw
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        decode::TcpState::*,
        table::{Table, tests::tr},
        top::model::STUCK_ROWS,
    };

    fn press(v: &mut View, d: &Dashboard, code: KeyCode) -> Action {
        v.key(KeyEvent::from(code), d, true)
    }

    fn typed(v: &mut View, d: &Dashboard, s: &str) {
        for c in s.chars() {
            press(v, d, KeyCode::Char(c));
        }
    }

    /// Two stuck CLOSE_WAITs on ports 8080 and 9090, and their finished clients.
    fn dashboard() -> Dashboard {
        let mut t = Table::new();
        let mut d = Dashboard::default();
        for (k, port) in [(0u64, 8080u16), (10, 9090)] {
            let cport = 5000 + k as u16;
            for e in [
                tr(1 + k, 10 + k, Close, SynSent, 0, port),
                tr(1 + k, 20 + k, SynSent, Established, cport, port),
                tr(2 + k, 25 + k, Listen, SynRecv, port, cport),
                tr(2 + k, 30 + k, SynRecv, Established, port, cport),
                tr(1 + k, 40 + k, Established, FinWait1, cport, port),
                tr(2 + k, 41 + k, Established, CloseWait, port, cport),
                tr(1 + k, 42 + k, FinWait1, FinWait2, cport, port),
                tr(1 + k, 50 + k, FinWait2, Close, cport, port),
            ] {
                t.apply(&e);
            }
        }
        for c in t.expire(u64::MAX) {
            d.recent.push_front(*c);
        }
        d.stuck = t.stuck_rows(10_000_000_000, 1_000_000_000, STUCK_ROWS);
        d
    }

    #[test]
    fn the_filter_narrows_the_list_as_it_is_typed_and_esc_clears_it() {
        let d = dashboard();
        let mut v = View::default();
        assert_eq!(d.entries(v.filter.as_ref()).len(), 4);
        assert_eq!(press(&mut v, &d, KeyCode::Char('/')), Action::Redraw);
        typed(&mut v, &d, "9090");
        assert_eq!(v.editing.as_deref(), Some("9090"));
        let shown = d.entries(v.filter.as_ref());
        assert_eq!(shown.len(), 2);
        assert!(shown.iter().all(|e| {
            let c = d.conn(*e).unwrap();
            c.tuple.local.port == 9090 || c.tuple.remote.port == 9090
        }));
        // `q` is a character while typing.
        typed(&mut v, &d, "q");
        assert!(d.entries(v.filter.as_ref()).is_empty());
        press(&mut v, &d, KeyCode::Backspace);
        press(&mut v, &d, KeyCode::Enter);
        assert_eq!(
            (v.editing.as_ref(), v.filter.as_ref().map(Query::text)),
            (None, Some("9090"))
        );
        assert_eq!(press(&mut v, &d, KeyCode::Esc), Action::Redraw);
        assert!(v.filter.is_none());
        assert_eq!(
            press(&mut v, &d, KeyCode::Esc),
            Action::None,
            "nothing left to clear"
        );
        assert_eq!(press(&mut v, &d, KeyCode::Char('q')), Action::Quit);
    }

    #[test]
    fn selection_moves_follows_its_connection_and_enter_shows_it() {
        let mut d = dashboard();
        let mut v = View::default();
        v.sync(&d);
        assert_eq!(v.selected_entry(&d), Some(Entry::Stuck(0)));
        press(&mut v, &d, KeyCode::Down);
        press(&mut v, &d, KeyCode::Char('j'));
        assert_eq!(v.selected_entry(&d), Some(Entry::Recent(0)));
        press(&mut v, &d, KeyCode::End);
        press(&mut v, &d, KeyCode::Down);
        assert_eq!(v.selected_entry(&d), Some(Entry::Recent(1)));
        press(&mut v, &d, KeyCode::Char('k'));
        let chosen = d.conn(v.selected_entry(&d).unwrap()).unwrap().sock;
        // The next refresh lists the stuck ones in another order: the selection follows.
        d.stuck.reverse();
        d.recent.make_contiguous().reverse();
        v.sync(&d);
        assert_eq!(d.conn(v.selected_entry(&d).unwrap()).unwrap().sock, chosen);
        press(&mut v, &d, KeyCode::Home);
        assert_eq!(press(&mut v, &d, KeyCode::Enter), Action::Redraw);
        let det = v.detail.clone().expect("a detail pane");
        let text = det.lines.join("\n");
        assert!(text.contains("server 127.0.0.1:9090"), "{text}");
        assert!(text.contains("CLOSE_WAIT"), "{text}");
        press(&mut v, &d, KeyCode::Down);
        assert_eq!(v.detail.as_ref().map(|d| d.scroll), Some(1));
        press(&mut v, &d, KeyCode::Esc);
        assert!(v.detail.is_none());
        press(&mut v, &d, KeyCode::Enter);
        press(&mut v, &d, KeyCode::Enter);
        assert!(v.detail.is_none(), "Enter closes it too");
    }

    #[test]
    fn d_switches_diagram_and_list_n_cycles_the_grouping() {
        let d = Dashboard::default();
        let mut v = View::default();
        assert!(v.shows_diagram(true) && !v.shows_diagram(false));
        v.key(KeyEvent::from(KeyCode::Char('d')), &d, true);
        assert!(!v.shows_diagram(true));
        v.key(KeyEvent::from(KeyCode::Char('d')), &d, true);
        assert!(v.shows_diagram(false), "once chosen, whatever the size");
        assert_eq!(v.grouping, Grouping::Host);
        for want in [Grouping::Netns, Grouping::Container, Grouping::Host] {
            press(&mut v, &d, KeyCode::Char('n'));
            assert_eq!(v.grouping, want);
        }
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        v.editing = Some(String::new());
        assert_eq!(v.key(ctrl_c, &d, true), Action::Quit);
        // Nothing selected, nothing to show.
        let mut v = View::default();
        assert_eq!(press(&mut v, &d, KeyCode::Enter), Action::None);
    }
}
