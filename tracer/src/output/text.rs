//! The text sink: tcpstates-like rows, and a timeline block per finished connection.
use std::io::{self, Write};

use anstyle::{AnsiColor, Style};
use chrono::Local;

use super::{SecondCache, Sink};
use crate::{
    cgroup::Names,
    clock::WallClock,
    decode::{Comm, Context, ContextKind, LostCause, SockAddr, TcpState, Transition, errno_name},
    table::{
        Conn, DiagTransition, Note, Owner, Role, SeenFrom, StuckGroup, StuckReport, TimeWait,
        Unstuck,
    },
    tuple::Endpoint,
    units::*,
};

/// Human-readable lines, tcpstates-like, plus a timeline block per finished connection.
pub struct Text<W: Write> {
    pub(super) out: W,
    clock: WallClock,
    color: bool,
    timelines: bool,
    /// `--columns`: one line per connection instead of its timeline block.
    columns: bool,
    columns_header_done: bool,
    pub(super) header_done: bool,
    /// The line being written (reused: no allocation per row).
    line: Vec<u8>,
    /// The timeline block being written (reused likewise).
    block: Vec<u8>,
    /// The last wall-clock second shown, as local `HH:MM:SS`.
    second: SecondCache,
    /// Owners' cgroup ids → unit, container, pod (the short form after an owner).
    names: Names,
}

impl<W: Write> Text<W> {
    pub fn new(out: W, clock: WallClock, color: bool, timelines: bool) -> Self {
        Self {
            out,
            clock,
            color,
            timelines,
            columns: false,
            columns_header_done: false,
            header_done: false,
            line: Vec::with_capacity(256),
            block: Vec::with_capacity(1024),
            second: SecondCache::new(),
            names: Names::new(),
        }
    }

    /// `--columns`: one line per finished connection (tcplife-like) instead of its block.
    pub fn with_columns(mut self, on: bool) -> Self {
        self.columns = on;
        self
    }

    /// `sep` and `[tag]` after an owner: the short form of its cgroup identity
    /// (`nginx.service`, `ctr 3f2a9c1b7d0e pod 1a2b3c4d`) when its cgroup is known and names
    /// a unit or a container; nothing otherwise, so hosts without either print as they
    /// always did.
    fn put_owner_tag(&self, b: &mut Vec<u8>, owner: Option<&Owner>, sep: &[u8]) {
        let Some(identity) = owner.and_then(|o| self.names.get(o.cgroup_id)) else {
            return;
        };
        if let Some(t) = &identity.tag {
            b.extend_from_slice(sep);
            b.push(b'[');
            b.extend_from_slice(t.as_bytes());
            b.push(b']');
        }
    }

    /// `owner PID (COMM) [tag]`, or `fallback`.
    fn owner_words(&self, owner: Option<&Owner>, lead: &str, fallback: &str) -> String {
        match owner {
            None => fallback.to_string(),
            Some(o) => {
                let mut b = format!("{lead}{} ({})", o.pid, o.comm).into_bytes();
                self.put_owner_tag(&mut b, owner, b" ");
                String::from_utf8_lossy(&b).into_owned()
            }
        }
    }

    pub(super) fn style(&self, s: Style) -> Style {
        if self.color { s } else { Style::new() }
    }

    pub(super) fn state_style(&self, s: TcpState) -> Style {
        use TcpState::*;
        let c = match s {
            SynSent | SynRecv | NewSynRecv | Listen => AnsiColor::Cyan,
            Established => AnsiColor::Green,
            FinWait1 | FinWait2 | CloseWait | LastAck | Closing | TimeWait => AnsiColor::Yellow,
            Close => AnsiColor::Red,
        };
        self.style(Style::new().fg_color(Some(c.into())))
    }

    fn header(&mut self) -> io::Result<()> {
        if !self.header_done {
            let b = self.style(Style::new().bold());
            writeln!(self.out, "{b}{TEXT_HEADER}{b:#}")?;
            self.header_done = true;
        }
        Ok(())
    }

    /// TIME, SOCK, PID, COMM, LOCAL, REMOTE: the owner when known, else `*` and the task on
    /// the CPU.
    #[allow(clippy::too_many_arguments)]
    fn prefix(
        &self,
        ts_ns: u64,
        sock: Option<SockAddr>,
        owner: Option<&Owner>,
        on_cpu: Option<(u32, &Comm)>,
        local: Endpoint,
        remote: Endpoint,
    ) -> String {
        let mut b = Vec::with_capacity(128);
        self.write_prefix(&mut b, ts_ns, sock, owner, on_cpu, local, remote);
        // Only UTF-8 is written.
        String::from_utf8_lossy(&b).into_owned()
    }

    /// [`Self::prefix`] appended to `b`, without formatting machinery: a row per event.
    #[allow(clippy::too_many_arguments)]
    fn write_prefix(
        &self,
        b: &mut Vec<u8>,
        ts_ns: u64,
        sock: Option<SockAddr>,
        owner: Option<&Owner>,
        on_cpu: Option<(u32, &Comm)>,
        local: Endpoint,
        remote: Endpoint,
    ) {
        // Local `%H:%M:%S%.6f`.
        let nanos = self.second.write(b, &self.clock, ts_ns, |t| {
            t.with_timezone(&Local).format("%H:%M:%S").to_string()
        });
        b.push(b'.');
        put_zero_padded(b, nanos / 1_000, 6);
        b.push(b' ');
        let start = b.len();
        match sock {
            Some(s) => put_sock_text(b, s),
            None => b.push(b'-'),
        }
        pad(b, start, 18);
        b.push(b' ');
        // PID and COMM: the owner's, else `*` and the task on the CPU, else `-`.
        let who = match (owner, on_cpu) {
            (Some(o), _) => Some((o.pid, "", &o.comm)),
            (None, Some((pid, comm))) => Some((pid, "*", comm)),
            (None, None) => None,
        };
        let start = b.len();
        match who {
            Some((pid, _, _)) => put_u64(b, pid.into()),
            None => b.push(b'-'),
        }
        pad(b, start, 7);
        b.push(b' ');
        let start = b.len();
        match who {
            Some((_, mark, comm)) => {
                b.extend_from_slice(mark.as_bytes());
                b.extend_from_slice(comm.as_str().as_bytes());
            }
            None => b.push(b'-'),
        }
        pad(b, start, 16);
        for e in [local, remote] {
            b.push(b' ');
            let start = b.len();
            put_endpoint(b, e);
            pad(b, start, ADDR_W);
        }
    }

    /// `text` in style `s` (nothing around it without colour), as `{s}{text}{s:#}`.
    fn put_styled(&self, b: &mut Vec<u8>, s: Style, text: &[u8]) {
        if self.color {
            let _ = write!(b, "{s}");
            b.extend_from_slice(text);
            let _ = write!(b, "{s:#}");
        } else {
            b.extend_from_slice(text);
        }
    }

    /// The timeline block of a finished connection, written without `format!` or
    /// allocations (it was most of the text output's cost); the same bytes as the
    /// `format!` version it replaced (a test compares).
    fn write_block(&self, b: &mut Vec<u8>, c: &Conn) {
        // The header line, bold.
        let mut head = Vec::with_capacity(160);
        head.extend_from_slice("── ".as_bytes());
        put_sock_text(&mut head, c.sock);
        head.push(b' ');
        head.extend_from_slice(c.role.name().as_bytes());
        head.push(b' ');
        if c.role == Role::Listener {
            head.extend_from_slice(b"listening on ");
            put_endpoint(&mut head, c.tuple.local);
        } else {
            put_endpoint(&mut head, c.tuple.local);
            head.extend_from_slice(b" -> ");
            put_endpoint(&mut head, c.tuple.remote);
        }
        if crate::enrich::netns::is_foreign(c.netns) {
            head.extend_from_slice(b" netns ");
            put_u64(&mut head, c.netns.into());
        }
        if let Some(o) = c.owner {
            head.extend_from_slice(b"  owner ");
            put_u64(&mut head, o.pid.into());
            head.extend_from_slice(b" (");
            head.extend_from_slice(o.comm.as_str().as_bytes());
            head.push(b')');
            self.put_owner_tag(&mut head, Some(&o), b" ");
        }
        if let Some(k) = c.close {
            head.extend_from_slice(b"  close ");
            head.extend_from_slice(k.name().as_bytes());
        }
        head.extend_from_slice(b"  lifetime ");
        put_human_ns(&mut head, c.lifetime_ns());
        if let Some(words) = tcp_words(c) {
            head.extend_from_slice(b"  ");
            head.extend_from_slice(words.as_bytes());
        }
        if c.incomplete {
            head.extend_from_slice(b"  (incomplete: events before or within it were not seen)");
        }
        self.put_styled(b, self.style(Style::new().bold()), &head);
        b.push(b'\n');

        let dim = self.style(Style::new().dimmed());
        let start = c.start_ns();
        // `   ` then the offset from the start (`?` if unknown), right-aligned in 10, dim.
        let offset = |b: &mut Vec<u8>, ts: Option<u64>| {
            b.extend_from_slice(b"   ");
            self.put_styled(b, dim, &offset_column(ts, start));
        };
        // States and context events, in time order (an event at the same time as a state
        // comes after it).
        let mut notes = c.notes.iter().peekable();
        let emit_notes =
            |b: &mut Vec<u8>,
             until: Option<u64>,
             notes: &mut std::iter::Peekable<std::slice::Iter<'_, Note>>| {
                while let Some(n) = notes.next_if(|n| until.is_none_or(|u| n.ts_ns < u)) {
                    offset(b, Some(n.ts_ns));
                    b.extend_from_slice(b"  ! ");
                    put_describe(b, n.kind, n.state, n.value);
                    b.push(b'\n');
                }
            };
        let mut durations = c.durations();
        let handoff = orphan_note(c);
        let last = c.states.len() - 1;
        for (i, (state, entered)) in c.states.iter().zip(c.entered_ns.iter()).enumerate() {
            if let Some((ts, text)) = handoff.filter(|_| i == last) {
                emit_notes(b, Some(ts), &mut notes);
                offset(b, Some(ts));
                b.extend_from_slice(b"  ! ");
                b.extend_from_slice(text.as_bytes());
                b.push(b'\n');
            }
            if entered.is_some() {
                emit_notes(b, entered, &mut notes);
            }
            offset(b, entered);
            b.extend_from_slice(b"  ");
            // The name left-aligned in 12, as `{:<12}` pads (a longer one as it is).
            let name = state.name().as_bytes();
            let mut padded = [b' '; 12];
            let shown: &[u8] = match padded.get_mut(..name.len()) {
                Some(p) => {
                    p.copy_from_slice(name);
                    &padded
                }
                None => name,
            };
            self.put_styled(b, self.state_style(*state), shown);
            b.push(b' ');
            match durations.next() {
                Some(Some(d)) => put_human_ns(b, d),
                Some(None) => b.push(b'?'),
                None => {}
            }
            // The line ends trimmed, as `trim_end` left it.
            while b.last() == Some(&b' ') {
                b.pop();
            }
            b.push(b'\n');
        }
        emit_notes(b, None, &mut notes);
        if c.notes_dropped > 0 {
            b.extend_from_slice(b"   ");
            b.extend_from_slice(&[b' '; 10]);
            b.extend_from_slice("  ! … ".as_bytes());
            put_u64(b, c.notes_dropped.into());
            b.extend_from_slice(b" more events not kept\n");
        }
        if let Some(TimeWait {
            confirmed: true,
            expires_ns,
        }) = c.time_wait
        {
            b.extend_from_slice(b"   ");
            b.extend_from_slice(&offset_column(Some(c.end_ns()), start));
            b.extend_from_slice(b"  ");
            self.put_styled(b, self.state_style(TcpState::TimeWait), b"TIME_WAIT   ");
            b.push(b' ');
            if let Some(e) = expires_ns {
                b.extend_from_slice(b"(expires in ");
                put_human_ns(b, e.saturating_sub(c.end_ns()));
                b.push(b')');
            }
            b.push(b'\n');
        }
    }

    fn state_pair(&self, old: TcpState, new: TcpState) -> String {
        let (os, ns) = (self.state_style(old), self.state_style(new));
        // Pad the plain names, then wrap them in colour, so columns line up either way.
        let width = old.name().len() + 4 + new.name().len();
        format!(
            "{os}{old}{os:#} -> {ns}{new}{ns:#}{}",
            " ".repeat(28usize.saturating_sub(width))
        )
    }
}

/// A connection's timeline block as the text output prints it, without colour: for a view
/// that shows one connection on demand (`tracer top`). An open connection's ends at its
/// current state.
pub fn timeline_block(c: &Conn, names: &Names) -> String {
    let mut t = Text::new(Vec::new(), WallClock::fixed(0), false, true);
    t.names = names.clone();
    let mut b = Vec::with_capacity(1024);
    t.write_block(&mut b, c);
    String::from_utf8_lossy(&b).into_owned()
}

/// Endpoint column width: any IPv4 endpoint and most IPv6 ones; longer ones push the row.
pub(super) const ADDR_W: usize = 26;

const TEXT_HEADER: &str = "TIME            SOCK               PID     COMM             LOCAL                      REMOTE                     TRANSITION                   IN OLD";

impl<W: Write> Sink for Text<W> {
    fn use_cgroups(&mut self, names: &Names) {
        self.names = names.clone();
    }

    fn transition(
        &mut self,
        t: &Transition,
        in_old_ns: Option<u64>,
        owner: Option<&Owner>,
    ) -> io::Result<()> {
        self.header()?;
        let mut b = std::mem::take(&mut self.line);
        b.clear();
        self.write_prefix(
            &mut b,
            t.ts_ns,
            Some(t.sock),
            owner,
            Some((t.task.pid, &t.task.comm)),
            t.tuple.local,
            t.tuple.remote,
        );
        b.push(b' ');
        if self.color {
            b.extend_from_slice(self.state_pair(t.old, t.new).as_bytes());
        } else {
            let start = b.len();
            b.extend_from_slice(t.old.name().as_bytes());
            b.extend_from_slice(b" -> ");
            b.extend_from_slice(t.new.name().as_bytes());
            pad(&mut b, start, 28);
        }
        b.push(b' ');
        match in_old_ns {
            Some(ns) => put_human_ns(&mut b, ns),
            None => b.push(b'-'),
        }
        self.put_owner_tag(&mut b, owner, b"  ");
        put_netns(&mut b, t.netns);
        b.push(b'\n');
        let r = self.out.write_all(&b);
        self.line = b;
        r
    }

    fn event(&mut self, c: &Context, owner: Option<&Owner>) -> io::Result<()> {
        if c.kind == ContextKind::Destroy {
            // One per socket, right after its CLOSE: shown in the timeline block, not here.
            return Ok(());
        }
        self.header()?;
        let prefix = self.prefix(
            c.ts_ns,
            c.sock,
            owner,
            Some((c.task.pid, &c.task.comm)),
            c.tuple.local,
            c.tuple.remote,
        );
        let w = self.style(Style::new().fg_color(Some(AnsiColor::Magenta.into())));
        let mut tag = Vec::new();
        self.put_owner_tag(&mut tag, owner, b"  ");
        put_netns(&mut tag, c.netns);
        writeln!(
            self.out,
            "{prefix} {w}! {}{w:#}{}",
            describe(c.kind, c.state, c.value),
            String::from_utf8_lossy(&tag)
        )
    }

    fn diag_transition(&mut self, d: &DiagTransition) -> io::Result<()> {
        self.header()?;
        let prefix = self.prefix(
            d.ts_ns,
            Some(d.sock),
            d.owner.as_ref(),
            None,
            d.tuple.local,
            d.tuple.remote,
        );
        let pair = self.state_pair(d.old, d.new);
        let note = match d.expires_ns {
            Some(e) => format!(
                "(sock_diag) expires in {}",
                human_ns(e.saturating_sub(d.ts_ns))
            ),
            None => "(sock_diag) timewait socket gone".into(),
        };
        let mut tag = Vec::new();
        self.put_owner_tag(&mut tag, d.owner.as_ref(), b"  ");
        put_netns(&mut tag, d.netns);
        writeln!(
            self.out,
            "{prefix} {pair} {note}{}",
            String::from_utf8_lossy(&tag)
        )
    }

    fn connection(&mut self, c: &Conn) -> io::Result<()> {
        if self.columns {
            let mut line = String::new();
            if !self.columns_header_done {
                self.columns_header_done = true;
                line.push_str(&columns_header());
                line.push('\n');
            }
            line.push_str(&columns_row(c));
            line.push('\n');
            return self.out.write_all(line.as_bytes());
        }
        if !self.timelines {
            return Ok(());
        }
        let mut b = std::mem::take(&mut self.block);
        b.clear();
        self.write_block(&mut b, c);
        let r = self.out.write_all(&b);
        self.block = b;
        r
    }

    fn stuck(&mut self, r: &StuckReport) -> io::Result<()> {
        let c = &r.conn;
        let w = self.style(Style::new().fg_color(Some(AnsiColor::Red.into())).bold());
        let sock = if c.sock.0 == 0 {
            "(from dump)".to_string()
        } else {
            c.sock.to_string()
        };
        let owner = self.owner_words(c.owner.as_ref(), "owner ", "owner unknown");
        let at_least = if r.age_at_least { "at least " } else { "" };
        let again = if r.report > 1 {
            format!(" (report {})", r.report)
        } else {
            String::new()
        };
        let path: Vec<&str> = c.states.iter().map(|s| s.name()).collect();
        let netns = if crate::enrich::netns::is_foreign(c.netns) {
            format!(" netns {}", c.netns)
        } else {
            String::new()
        };
        // An orphaned FIN_WAIT2: its owner is done with it, the peer is what is stuck. Say
        // who closed it only where that is known: the tracer saw the close and who made it.
        let why = match (&c.orphan, c.owner, c.seen_from) {
            (None, ..) => String::new(),
            (Some(_), Some(o), SeenFrom::Events) => format!(
                "\n      why: closed by pid {} ({}); the peer never sent FIN",
                o.pid, o.comm
            ),
            (Some(_), None, SeenFrom::Events) => {
                "\n      why: closed under tracer, by a process it could not name; the peer never sent FIN".to_string()
            }
            // A closed socket is held by no process: /proc cannot name who closed it.
            (Some(_), _, SeenFrom::Dump) => {
                "\n      why: closed before tracer started (no process holds a closed socket: who closed it is unknown); the peer never sent FIN".to_string()
            }
        };
        let why = match r.info.map(|i| i.why(r.state)) {
            Some(text) if !text.is_empty() => format!("{why}\n      why: {text}"),
            _ => why,
        };
        writeln!(
            self.out,
            "{w}STUCK{w:#} {sock} {} -> {}{netns} in {} for {at_least}{}  {owner}{again}\n      so far: {}{why}",
            endpoint(c.tuple.local),
            endpoint(c.tuple.remote),
            r.state,
            human_ns(r.age_ns),
            path.join(" -> "),
        )
    }

    fn unstuck(&mut self, t: &Transition, u: &Unstuck, owner: Option<&Owner>) -> io::Result<()> {
        let g = self.style(Style::new().fg_color(Some(AnsiColor::Green.into())).bold());
        let owner = self.owner_words(owner, "  owner ", "");
        let at_least = if u.age_at_least { "at least " } else { "" };
        let sock = if t.sock.0 == 0 {
            "(from dump)".to_string()
        } else {
            t.sock.to_string()
        };
        // As in the stuck report it answers.
        let netns = if crate::enrich::netns::is_foreign(t.netns) {
            format!(" netns {}", t.netns)
        } else {
            String::new()
        };
        writeln!(
            self.out,
            "{g}MOVED{g:#} {sock} {} -> {}{netns}: {} -> {} after {at_least}{}{owner}",
            endpoint(t.tuple.local),
            endpoint(t.tuple.remote),
            u.state,
            t.new,
            human_ns(u.age_ns),
        )
    }

    fn stuck_summary(&mut self, groups: &[StuckGroup], threshold_ns: u64) -> io::Result<()> {
        let b = self.style(Style::new().bold());
        if groups.is_empty() {
            return writeln!(
                self.out,
                "{b}No connection stuck for {} or more.{b:#}",
                human_ns(threshold_ns)
            );
        }
        writeln!(
            self.out,
            "{b}Stuck connections ({} or more), by owner and state:{b:#}",
            human_ns(threshold_ns)
        )?;
        for g in groups {
            let who = self.owner_words(g.owner.as_ref(), "pid ", "owner unknown:");
            let at_least = if g.oldest_at_least { "at least " } else { "" };
            writeln!(
                self.out,
                "  {who} holds {} socket{} in {}, oldest {at_least}{}",
                g.count,
                if g.count == 1 { "" } else { "s" },
                g.state,
                human_ns(g.oldest_ns)
            )?;
        }
        Ok(())
    }

    fn lost(&mut self, cause: LostCause, count: u64, total: u64) -> io::Result<()> {
        let w = self.style(Style::new().fg_color(Some(AnsiColor::Red.into())).bold());
        writeln!(
            self.out,
            "{w}LOST {count} events ({}), {total} so far{w:#}",
            cause.describe()
        )
    }

    fn ladder(&mut self, l: &crate::ladder::Ladder) -> io::Result<()> {
        self.out
            .write_all(crate::ladder::text::render(l).as_bytes())
    }

    fn summary(&mut self, s: &crate::summary::Summary) -> io::Result<()> {
        self.out.write_all(s.render_text().as_bytes())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A timeline's offset column: `+` and the time since `start` (`?` if unknown),
/// right-aligned in 10 characters, as `{:>10}` pads (by characters: `µ` is two bytes).
fn offset_column(ts: Option<u64>, start: u64) -> Vec<u8> {
    let mut o = Vec::with_capacity(16);
    match ts {
        Some(e) => {
            o.push(b'+');
            put_human_ns(&mut o, e.saturating_sub(start));
        }
        None => o.push(b'?'),
    }
    let chars = std::str::from_utf8(&o).map_or(o.len(), |s| s.chars().count());
    let mut padded = vec![b' '; 10usize.saturating_sub(chars)];
    padded.extend_from_slice(&o);
    padded
}

/// What a context event says, in a few words (`RST received`, `error ECONNREFUSED`).
pub(super) fn describe(kind: ContextKind, state: Option<TcpState>, value: i32) -> String {
    let mut b = Vec::with_capacity(32);
    put_describe(&mut b, kind, state, value);
    // Only UTF-8 is written.
    String::from_utf8_lossy(&b).into_owned()
}

/// [`describe`] appended to `b`.
fn put_describe(b: &mut Vec<u8>, kind: ContextKind, state: Option<TcpState>, value: i32) {
    let in_state = |b: &mut Vec<u8>| {
        if let Some(s) = state {
            b.extend_from_slice(b" in ");
            b.extend_from_slice(s.name().as_bytes());
        }
    };
    match kind {
        ContextKind::SendReset => {
            b.extend_from_slice(b"RST sent");
            in_state(b);
        }
        ContextKind::ReceiveReset => b.extend_from_slice(b"RST received"),
        ContextKind::Retransmit if state == Some(TcpState::SynSent) => {
            b.extend_from_slice(b"SYN retransmitted");
        }
        ContextKind::Retransmit => {
            b.extend_from_slice(b"retransmit");
            in_state(b);
        }
        ContextKind::RetransmitSynack => b.extend_from_slice(b"SYN-ACK retransmitted"),
        ContextKind::Error => {
            b.extend_from_slice(b"error ");
            b.extend_from_slice(errno_name(value).as_bytes());
        }
        ContextKind::Destroy => b.extend_from_slice(b"socket freed"),
    }
}

/// `  netns N` after a row of a socket in another network namespace than the tracer's (a
/// container's): at the end, so the columns stay where they are, and nothing at all in the
/// common case (one comparison per row).
fn put_netns(b: &mut Vec<u8>, netns: u32) {
    if crate::enrich::netns::is_foreign(netns) {
        b.extend_from_slice(b"  netns ");
        put_u64(b, netns.into());
    }
}

/// Spaces after what was written since `start`, up to `width` characters (as `{:<width}`
/// pads: by characters, not bytes).
fn pad(b: &mut Vec<u8>, start: usize, width: usize) {
    let written = &b[start..];
    let chars = if written.is_ascii() {
        written.len()
    } else {
        String::from_utf8_lossy(written).chars().count()
    };
    b.resize(b.len() + width.saturating_sub(chars), b' ');
}

/// The line a timeline shows where an active closer was handed to a timewait socket still
/// in FIN_WAIT2 (before its final CLOSE, which is where that FIN_WAIT2 ended): when, and what
/// became of it.
pub(super) fn orphan_note(c: &Conn) -> Option<(u64, &'static str)> {
    use crate::table::OrphanHow;
    let o = c.orphan.as_deref().filter(|o| o.handoff_ns != 0)?;
    if c.last_state() != TcpState::Close {
        return None;
    }
    let text = match o.end.map(|e| e.how) {
        Some(OrphanHow::Fin { .. }) => {
            "handed to a timewait socket in FIN_WAIT2 (sock_diag from here); the peer's FIN came later"
        }
        Some(OrphanHow::Timeout) => {
            "handed to a timewait socket in FIN_WAIT2 (sock_diag from here); the peer never sent FIN: the FIN_WAIT2 timer ended it"
        }
        Some(OrphanHow::Gone) => {
            "handed to a timewait socket in FIN_WAIT2 (sock_diag from here); it ended before its timer, without the peer's FIN"
        }
        None => {
            "handed to a timewait socket in FIN_WAIT2 (sock_diag from here); still waiting for the peer's FIN"
        }
    };
    Some((o.handoff_ns, text))
}

/// What a connection carried, for its timeline header: `tx 1.2MiB rx 3.4KiB rtt 52µs
/// retrans 3` (what the kernel has; the retransmits only when there were some).
pub(super) fn tcp_words(c: &Conn) -> Option<String> {
    use tracer_common::stat;
    let t = c.tcp.as_deref()?;
    let has = |bit: u32| t.present & bit != 0;
    let mut w = Vec::new();
    let (tx, rx) = c.data_bytes();
    if let Some(tx) = tx {
        w.push(format!("tx {}", crate::units::human_bytes(tx)));
    }
    if let Some(rx) = rx {
        w.push(format!("rx {}", crate::units::human_bytes(rx)));
    }
    if has(stat::SRTT) {
        w.push(format!(
            "rtt {}",
            human_ns(u64::from(t.srtt_us >> 3) * 1_000)
        ));
    }
    if has(stat::TOTAL_RETRANS) && t.total_retrans > 0 {
        w.push(format!("retrans {}", t.total_retrans));
    }
    (!w.is_empty()).then(|| w.join(" "))
}

/// The `--columns` header.
pub(super) fn columns_header() -> String {
    format!(
        "{:<7} {:<15} {:<8} {:<40} {:<40} {:>9} {:>9} {:>9} {:>7} {:>10} {}",
        "PID", "COMM", "ROLE", "LOCAL", "REMOTE", "TX", "RX", "RTT", "RETRANS", "LIFETIME", "CLOSE"
    )
}

/// One finished connection in `--columns`: the owner, both ends, what it carried, how long
/// it lived and how it ended (`-` where unknown).
pub(super) fn columns_row(c: &Conn) -> String {
    use tracer_common::stat;
    let (pid, comm) = c.owner.map_or_else(
        || ("-".to_string(), "-".to_string()),
        |o| (o.pid.to_string(), o.comm.as_str().into_owned()),
    );
    let (tx, rx) = c.data_bytes();
    let bytes = |v: Option<u64>| v.map_or_else(|| "-".into(), crate::units::human_bytes);
    let rtt = c
        .tcp
        .as_deref()
        .filter(|t| t.present & stat::SRTT != 0)
        .map_or_else(
            || "-".into(),
            |t| human_ns(u64::from(t.srtt_us >> 3) * 1_000),
        );
    let retrans = c
        .tcp
        .as_deref()
        .map_or(u64::from(c.retransmits), |t| u64::from(t.total_retrans));
    let remote = if c.role == Role::Listener {
        "-".to_string()
    } else {
        endpoint(c.tuple.remote)
    };
    let mut row = format!(
        "{pid:<7} {comm:<15} {:<8} {:<40} {remote:<40} {:>9} {:>9} {rtt:>9} {retrans:>7} {:>10} {}",
        c.role.name(),
        endpoint(c.tuple.local),
        bytes(tx),
        bytes(rx),
        human_ns(c.lifetime_ns()),
        c.close.map_or("-", |k| k.name()),
    );
    // After the last column: the others stay aligned.
    let mut ns = Vec::new();
    put_netns(&mut ns, c.netns);
    row.push_str(&String::from_utf8_lossy(&ns));
    row
}
