//! The JSON Lines sink (schema in the README). Hot records are written by hand; the serde
//! structs they must match byte for byte are in `reference` (tests only).
use std::{
    io::{self, Write},
    net::IpAddr,
};

use serde::{Serialize, ser::SerializeStruct as _};

use super::{SecondCache, Sink};
use crate::{
    cgroup::{Identity, Names},
    clock::WallClock,
    decode::{
        Comm, Context, ContextKind, Family, LostCause, SockAddr, Task, TcpState, Transition,
        errno_name,
    },
    table::{
        CloseClass, Conn, DiagTransition, Owner, OwnerSource, Role, SeenFrom, StuckGroup,
        StuckReport, Unstuck,
    },
    tuple::Tuple,
    units::*,
};

mod connection;

/// The JSON Lines schema version (`"v"` in every record). Bumped when a key changes meaning or
/// disappears; adding keys does not bump it.
pub const SCHEMA_VERSION: u32 = 1;

/// Bytes of records [`Json`] collects before writing them out.
const JSON_CHUNK: usize = 64 << 10;

/// JSON Lines, one object per record (schema in the README).
pub struct Json<W: Write> {
    out: W,
    clock: WallClock,
    /// Records not yet written: each is formatted straight into it, and it goes to `out`
    /// in chunks of [`JSON_CHUNK`] (one copy less than a record buffer plus a `BufWriter`).
    buf: Vec<u8>,
    /// The last second formatted (`2026-11-23T22:01:09`).
    second: SecondCache,
    owners: OwnerCache,
    /// Owners' cgroup ids → path, unit, container, pod.
    pub(super) names: Names,
}

impl<W: Write> Json<W> {
    pub fn new(out: W, clock: WallClock) -> Self {
        Self {
            out,
            clock,
            buf: Vec::with_capacity(JSON_CHUNK + 4096),
            second: SecondCache::new(),
            owners: OwnerCache::new(),
            names: Names::new(),
        }
    }

    /// An owner for the serde records, with its cgroup's identity.
    fn owner_json<'a>(&self, owner: Option<&'a Owner>) -> Option<OwnerJson<'a>> {
        owner.map(|o| OwnerJson {
            owner: o,
            identity: self.names.get(o.cgroup_id),
        })
    }

    /// Everything written so far, with what is still buffered.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.flush_buf()?;
        Ok(self.out)
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Appends one record, written by `f` (a failed one leaves nothing behind), and writes
    /// the buffer out once it holds a chunk.
    fn record(&mut self, f: impl FnOnce(&Self, &mut Vec<u8>) -> io::Result<()>) -> io::Result<()> {
        let mut b = std::mem::take(&mut self.buf);
        let start = b.len();
        let r = f(self, &mut b);
        if r.is_err() {
            b.truncate(start);
        }
        self.buf = b;
        r?;
        if self.buf.len() >= JSON_CHUNK {
            self.flush_buf()?;
        }
        Ok(())
    }

    /// One record through serde: `{"v":1,…}` then a newline. Every record leads with the
    /// schema version.
    pub(super) fn emit<T: Serialize>(&mut self, v: &T) -> io::Result<()> {
        /// `{"v":1,` with [`SCHEMA_VERSION`].
        const LEAD: &[u8] = b"{\"v\":1,";
        const _: () = assert!(SCHEMA_VERSION == 1, "update LEAD");
        self.record(|_, b| {
            let start = b.len();
            serde_json::to_writer(&mut *b, v)?;
            b.push(b'\n');
            // `v` is a non-empty struct, serialised as `{…}`: its `{` gives way to the version.
            if b.get(start) == Some(&b'{') {
                b.splice(start..=start, LEAD.iter().copied());
            }
            Ok(())
        })
    }

    /// A transition record's keys from its start through `in_old_ns`, the same for both
    /// sources.
    fn transition_head(
        &self,
        b: &mut Vec<u8>,
        ts_ns: u64,
        (sock, netns): (SockAddr, u32),
        (family, tuple): (Family, &Tuple),
        (old, new): (TcpState, TcpState),
        in_old_ns: Option<u64>,
    ) -> io::Result<()> {
        b.extend_from_slice(b"{\"v\":1,\"type\":\"transition\",\"time\":\"");
        self.write_time(b, ts_ns);
        b.extend_from_slice(b"\",\"ts_ns\":");
        put_u64(b, ts_ns);
        b.extend_from_slice(b",\"sock\":");
        put_sock(b, sock);
        put_netns(b, netns);
        put_tuple(b, Some(family), tuple)?;
        b.extend_from_slice(b",\"old\":\"");
        b.extend_from_slice(old.name().as_bytes());
        b.extend_from_slice(b"\",\"new\":\"");
        b.extend_from_slice(new.name().as_bytes());
        b.extend_from_slice(b"\",\"in_old_ns\":");
        put_opt_u64(b, in_old_ns);
        Ok(())
    }

    /// The transition record, written by hand: it is most of the output at high rates, and
    /// this is several times cheaper than serde's generic path (no per-field escaping of
    /// known-safe keys, no allocations). Same bytes as [`TransitionJson`] (a test compares).
    fn fast_transition(
        &mut self,
        t: &Transition,
        in_old_ns: Option<u64>,
        owner: Option<&Owner>,
    ) -> io::Result<()> {
        self.record(|this, b| {
            this.transition_head(
                b,
                t.ts_ns,
                (t.sock, t.netns),
                (t.family, &t.tuple),
                (t.old, t.new),
                in_old_ns,
            )?;
            put_task(b, &t.task, t.cpu)?;
            b.extend_from_slice(b",\"owner\":");
            this.owners.put(b, owner, &this.names)?;
            b.extend_from_slice(b",\"source\":\"tracepoint\"}\n");
            Ok(())
        })
    }

    /// A transition learned from sock_diag (→ TIME_WAIT, TIME_WAIT → CLOSE: two per active
    /// closer on a busy host) by hand, as [`Self::fast_transition`]; the same bytes as
    /// [`TransitionJson`] with `source` `sock_diag` (a test compares).
    fn fast_diag_transition(&mut self, d: &DiagTransition) -> io::Result<()> {
        self.record(|this, b| {
            this.transition_head(
                b,
                d.ts_ns,
                (d.sock, d.netns),
                (d.family, &d.tuple),
                (d.old, d.new),
                d.in_old_ns,
            )?;
            b.extend_from_slice(
                b",\"pid\":null,\"tid\":null,\"comm\":null,\"cpu\":null,\"owner\":",
            );
            this.owners.put(b, d.owner.as_ref(), &this.names)?;
            b.extend_from_slice(b",\"source\":\"sock_diag\"");
            if let Some(e) = d.expires_ns {
                b.extend_from_slice(b",\"expires_ns\":");
                put_u64(b, e);
            }
            b.extend_from_slice(b"}\n");
            Ok(())
        })
    }

    /// The context event record by hand, as [`Self::fast_transition`]; same bytes as
    /// [`EventJson`] (a test compares).
    fn fast_event(&mut self, c: &Context, owner: Option<&Owner>) -> io::Result<()> {
        self.record(|this, b| {
            b.extend_from_slice(b"{\"v\":1,\"type\":\"event\",\"kind\":\"");
            b.extend_from_slice(c.kind.name().as_bytes());
            b.extend_from_slice(b"\",\"time\":\"");
            this.write_time(b, c.ts_ns);
            b.extend_from_slice(b"\",\"ts_ns\":");
            put_u64(b, c.ts_ns);
            b.extend_from_slice(b",\"sock\":");
            match c.sock {
                Some(s) => put_sock(b, s),
                None => b.extend_from_slice(b"null"),
            }
            put_netns(b, c.netns);
            put_tuple(b, c.family, &c.tuple)?;
            b.extend_from_slice(b",\"state\":");
            put_opt_name(b, c.state.map(TcpState::name));
            put_errno(b, c.kind, c.value)?;
            b.extend_from_slice(b",\"value\":");
            put_i64(b, c.value.into());
            put_task(b, &c.task, c.cpu)?;
            b.extend_from_slice(b",\"owner\":");
            this.owners.put(b, owner, &this.names)?;
            b.extend_from_slice(b"}\n");
            Ok(())
        })
    }

    /// [`Self::time`] appended to `b` without allocating.
    fn write_time(&self, b: &mut Vec<u8>, ts_ns: u64) {
        let nanos = self.second.write(b, &self.clock, ts_ns, |t| {
            t.format("%Y-%m-%dT%H:%M:%S").to_string()
        });
        b.push(b'.');
        put_zero_padded(b, nanos, 9);
        b.push(b'Z');
    }

    /// RFC 3339 UTC with nanoseconds, as `to_rfc3339_opts(Nanos, true)` writes it.
    pub(super) fn time(&self, ts_ns: u64) -> String {
        let mut b = Vec::with_capacity(32);
        self.write_time(&mut b, ts_ns);
        // Only ASCII is written.
        String::from_utf8_lossy(&b).into_owned()
    }
}

fn put_opt_u64(b: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(v) => put_u64(b, v),
        None => b.extend_from_slice(b"null"),
    }
}

/// `s` between quotes, as is: a name of ours (a state, a kind, a class) or a string already
/// found [`plain`], which JSON needs no escapes for.
fn put_name(b: &mut Vec<u8>, name: &str) {
    b.push(b'"');
    b.extend_from_slice(name.as_bytes());
    b.push(b'"');
}

fn put_opt_name(b: &mut Vec<u8>, name: Option<&str>) {
    match name {
        Some(n) => put_name(b, n),
        None => b.extend_from_slice(b"null"),
    }
}

/// `"0x…"`: a socket address as [`SockAddr`]'s `Display` writes it.
/// `,"netns":INODE`, or `null` when unknown (0).
fn put_netns(b: &mut Vec<u8>, netns: u32) {
    b.extend_from_slice(b",\"netns\":");
    if netns == 0 {
        b.extend_from_slice(b"null");
    } else {
        put_u64(b, netns.into());
    }
}

/// A namespace inode for serde: `None` (null) when unknown.
pub(super) fn netns_of(netns: u32) -> Option<u32> {
    (netns != 0).then_some(netns)
}

fn put_sock(b: &mut Vec<u8>, s: SockAddr) {
    b.push(b'"');
    put_sock_text(b, s);
    b.push(b'"');
}

/// Bytes a JSON string may hold as they are: printable ASCII but `"` and `\\`.
const PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0x20;
    while c < 0x7f {
        t[c] = c != b'"' as usize && c != b'\\' as usize;
        c += 1;
    }
    t
};

/// Whether JSON can hold `bytes` as they are (see [`PLAIN`]).
fn plain(bytes: &[u8]) -> bool {
    bytes.iter().all(|&c| PLAIN[usize::from(c)])
}

/// `s` as a JSON string. The common case (plain ASCII) is copied; anything else goes
/// through serde_json's escaping.
fn put_str(b: &mut Vec<u8>, s: &str) -> io::Result<()> {
    if plain(s.as_bytes()) {
        put_name(b, s);
        Ok(())
    } else {
        Ok(serde_json::to_writer(b, s)?)
    }
}

/// A task name as a JSON string ([`Comm::as_str`]). Nearly every one is plain ASCII: that is
/// checked and copied in one pass, without UTF-8 validation or a string; anything else goes
/// through [`Comm::as_str`] and serde's escaping.
fn put_comm(b: &mut Vec<u8>, c: &Comm) -> io::Result<()> {
    // Quotes and up to 16 bytes, put together on the stack as they are checked.
    let mut out = [b'"'; 18];
    let mut n = 0;
    for &x in &c.0 {
        if x == 0 {
            break;
        }
        if !PLAIN[usize::from(x)] {
            return put_str(b, &c.as_str());
        }
        n += 1;
        out[n] = x;
    }
    b.extend_from_slice(&out[..n + 2]);
    Ok(())
}

const fn source_name(s: OwnerSource) -> &'static str {
    s.name()
}

fn put_opt_str(b: &mut Vec<u8>, s: Option<&str>) -> io::Result<()> {
    match s {
        Some(s) => put_str(b, s),
        None => {
            b.extend_from_slice(b"null");
            Ok(())
        }
    }
}

/// An owner object: `{"pid","comm","uid","cgroup_id","cgroup","unit","container_id",
/// "pod_uid","source"}`, the four after `cgroup_id` from its cgroup's `identity` (null
/// when not known).
fn put_owner(b: &mut Vec<u8>, o: &Owner, identity: Option<&Identity>) -> io::Result<()> {
    b.extend_from_slice(b"{\"pid\":");
    put_u64(b, o.pid.into());
    b.extend_from_slice(b",\"comm\":");
    put_comm(b, &o.comm)?;
    b.extend_from_slice(b",\"uid\":");
    put_u64(b, o.uid.into());
    b.extend_from_slice(b",\"cgroup_id\":");
    put_u64(b, o.cgroup_id);
    match identity {
        None => b.extend_from_slice(
            b",\"cgroup\":null,\"unit\":null,\"container_id\":null,\"pod_uid\":null",
        ),
        Some(i) => {
            b.extend_from_slice(b",\"cgroup\":");
            put_str(b, &i.path)?;
            b.extend_from_slice(b",\"unit\":");
            put_opt_str(b, i.unit.as_deref())?;
            b.extend_from_slice(b",\"container_id\":");
            put_opt_str(b, i.container_id.as_deref())?;
            b.extend_from_slice(b",\"pod_uid\":");
            put_opt_str(b, i.pod_uid.as_deref())?;
        }
    }
    b.extend_from_slice(b",\"source\":\"");
    b.extend_from_slice(source_name(o.source).as_bytes());
    b.extend_from_slice(b"\"}");
    Ok(())
}

/// An owner in the records written through serde: the same object as [`put_owner`].
pub(super) struct OwnerJson<'a> {
    owner: &'a Owner,
    identity: Option<std::sync::Arc<Identity>>,
}

impl Serialize for OwnerJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (o, i) = (self.owner, self.identity.as_deref());
        let mut st = s.serialize_struct("Owner", 9)?;
        st.serialize_field("pid", &o.pid)?;
        st.serialize_field("comm", &o.comm)?;
        st.serialize_field("uid", &o.uid)?;
        st.serialize_field("cgroup_id", &o.cgroup_id)?;
        st.serialize_field("cgroup", &i.map(|i| &i.path))?;
        st.serialize_field("unit", &i.and_then(|i| i.unit.as_ref()))?;
        st.serialize_field("container_id", &i.and_then(|i| i.container_id.as_ref()))?;
        st.serialize_field("pod_uid", &i.and_then(|i| i.pod_uid.as_ref()))?;
        st.serialize_field("source", source_name(o.source))?;
        st.end()
    }
}

/// `,"pid":…,"tid":…,"comm":…,"cpu":…`: the task on the CPU (the owner follows it).
fn put_task(b: &mut Vec<u8>, task: &Task, cpu: u32) -> io::Result<()> {
    b.extend_from_slice(b",\"pid\":");
    put_u64(b, task.pid.into());
    b.extend_from_slice(b",\"tid\":");
    put_u64(b, task.tid.into());
    b.extend_from_slice(b",\"comm\":");
    put_comm(b, &task.comm)?;
    b.extend_from_slice(b",\"cpu\":");
    put_u64(b, cpu.into());
    Ok(())
}

/// An owner object as [`put_owner`] wrote it, for the owner and cgroup identity it was
/// written for.
type OwnerSlot = (Option<Owner>, Option<std::sync::Arc<Identity>>, Vec<u8>);

/// Owner objects as [`put_owner`] wrote them, in slots picked by pid and source: a
/// process's sockets repeat its owner in every record (an accepted socket's inherited one
/// beside it), so most records copy it instead of formatting nine fields again. A slot is
/// written again when its owner's cgroup becomes known.
struct OwnerCache(std::cell::RefCell<[OwnerSlot; OWNER_SLOTS]>);

const OWNER_SLOTS: usize = 16;

impl OwnerCache {
    fn new() -> Self {
        Self(std::cell::RefCell::new(std::array::from_fn(|_| {
            (None, None, Vec::new())
        })))
    }

    /// Appends `owner` (or `null`) as [`put_owner`] writes it, with its cgroup's identity
    /// from `names`.
    fn put(&self, b: &mut Vec<u8>, owner: Option<&Owner>, names: &Names) -> io::Result<()> {
        let Some(o) = owner else {
            b.extend_from_slice(b"null");
            return Ok(());
        };
        let identity = names.get(o.cgroup_id);
        let mut slots = self.0.borrow_mut();
        let i = (o.pid as usize * 3 + o.source as usize) % OWNER_SLOTS;
        let (cached, cached_identity, bytes) = &mut slots[i];
        let same_identity = match (&identity, &*cached_identity) {
            (None, None) => true,
            (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        };
        if *cached != Some(*o) || !same_identity {
            bytes.clear();
            if let Err(e) = put_owner(bytes, o, identity.as_deref()) {
                *cached = None;
                return Err(e);
            }
            *cached = Some(*o);
            *cached_identity = identity;
        }
        b.extend_from_slice(bytes);
        Ok(())
    }
}

/// `,"family":…,"saddr":…,"sport":…,"daddr":…,"dport":…`
fn put_tuple(b: &mut Vec<u8>, family: Option<Family>, t: &Tuple) -> io::Result<()> {
    b.extend_from_slice(match family {
        Some(Family::Ipv4) => b",\"family\":\"ipv4\",\"saddr\":\"".as_slice(),
        Some(Family::Ipv6) => b",\"family\":\"ipv6\",\"saddr\":\"",
        None => b",\"family\":null,\"saddr\":\"",
    });
    ip(b, t.local.addr)?;
    b.extend_from_slice(b"\",\"sport\":");
    put_u64(b, t.local.port.into());
    b.extend_from_slice(b",\"daddr\":\"");
    ip(b, t.remote.addr)?;
    b.extend_from_slice(b"\",\"dport\":");
    put_u64(b, t.remote.port.into());
    Ok(())
}

/// `,"errno":"…"` for error reports (skipped otherwise, as serde skips `None`).
fn put_errno(b: &mut Vec<u8>, kind: ContextKind, value: i32) -> io::Result<()> {
    if let Some(e) = errno_of(kind, value) {
        b.extend_from_slice(b",\"errno\":");
        put_str(b, &e)?;
    }
    Ok(())
}

pub(super) fn errno_of(kind: ContextKind, value: i32) -> Option<String> {
    (kind == ContextKind::Error).then(|| errno_name(value))
}

#[derive(Serialize)]
struct StuckJson<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    sock: Option<SockAddr>,
    netns: Option<u32>,
    state: TcpState,
    age_ns: u64,
    /// The socket predates the tracer: it has been stuck at least `age_ns`.
    age_at_least: bool,
    report: u32,
    owner: Option<OwnerJson<'a>>,
    family: Family,
    saddr: IpAddr,
    sport: u16,
    daddr: IpAddr,
    dport: u16,
    role: Role,
    states: &'a [TcpState],
    seen_from: SeenFrom,
    /// Closed by its owner, handed to a timewait socket that awaits the peer's FIN.
    orphaned: bool,
    /// What `ss -ti` showed of it when reported (live, full sockets only).
    why: Option<WhyJson>,
}

#[derive(Serialize)]
struct WhyJson {
    text: String,
    #[serde(flatten)]
    info: crate::table::SockInfo,
}

#[derive(Serialize)]
struct UnstuckJson<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    time: String,
    ts_ns: u64,
    /// Null for a socket from the start-up dump that never had an event (an orphaned
    /// FIN_WAIT2 that existed before the tracer), as in `stuck`.
    sock: Option<SockAddr>,
    netns: Option<u32>,
    state: TcpState,
    new: TcpState,
    age_ns: u64,
    age_at_least: bool,
    reports: u32,
    owner: Option<OwnerJson<'a>>,
    family: Family,
    saddr: IpAddr,
    sport: u16,
    daddr: IpAddr,
    dport: u16,
}

#[derive(Serialize)]
struct StuckSummaryJson<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    threshold_ns: u64,
    groups: Vec<StuckGroupJson<'a>>,
}

#[derive(Serialize)]
struct StuckGroupJson<'a> {
    owner: Option<OwnerJson<'a>>,
    state: TcpState,
    count: u64,
    oldest_ns: u64,
    oldest_at_least: bool,
}

#[derive(Serialize)]
struct LostJson {
    #[serde(rename = "type")]
    ty: &'static str,
    count: u64,
    cause: LostCause,
    total: u64,
}

impl<W: Write> Sink for Json<W> {
    fn use_cgroups(&mut self, names: &Names) {
        self.names = names.clone();
    }

    fn transition(
        &mut self,
        t: &Transition,
        in_old_ns: Option<u64>,
        owner: Option<&Owner>,
    ) -> io::Result<()> {
        self.fast_transition(t, in_old_ns, owner)
    }

    fn event(&mut self, c: &Context, owner: Option<&Owner>) -> io::Result<()> {
        self.fast_event(c, owner)
    }

    fn diag_transition(&mut self, d: &DiagTransition) -> io::Result<()> {
        self.fast_diag_transition(d)
    }

    fn connection(&mut self, c: &Conn) -> io::Result<()> {
        self.fast_connection(c)
    }

    fn stuck(&mut self, r: &StuckReport) -> io::Result<()> {
        let c = &r.conn;
        self.emit(&StuckJson {
            ty: "stuck",
            sock: (c.sock.0 != 0).then_some(c.sock),
            netns: netns_of(c.netns),
            state: r.state,
            age_ns: r.age_ns,
            age_at_least: r.age_at_least,
            report: r.report,
            owner: self.owner_json(c.owner.as_ref()),
            family: c.family,
            saddr: c.tuple.local.addr,
            sport: c.tuple.local.port,
            daddr: c.tuple.remote.addr,
            dport: c.tuple.remote.port,
            role: c.role,
            states: &c.states,
            seen_from: c.seen_from,
            orphaned: c.orphan.is_some(),
            why: r.info.map(|info| WhyJson {
                text: info.why(r.state),
                info,
            }),
        })
    }

    fn unstuck(&mut self, t: &Transition, u: &Unstuck, owner: Option<&Owner>) -> io::Result<()> {
        self.emit(&UnstuckJson {
            ty: "unstuck",
            time: self.time(t.ts_ns),
            ts_ns: t.ts_ns,
            sock: (t.sock.0 != 0).then_some(t.sock),
            netns: netns_of(t.netns),
            state: u.state,
            new: t.new,
            age_ns: u.age_ns,
            age_at_least: u.age_at_least,
            reports: u.reports,
            owner: self.owner_json(owner),
            family: t.family,
            saddr: t.tuple.local.addr,
            sport: t.tuple.local.port,
            daddr: t.tuple.remote.addr,
            dport: t.tuple.remote.port,
        })
    }

    fn stuck_summary(&mut self, groups: &[StuckGroup], threshold_ns: u64) -> io::Result<()> {
        self.emit(&StuckSummaryJson {
            ty: "stuck_summary",
            threshold_ns,
            groups: groups
                .iter()
                .map(|g| StuckGroupJson {
                    owner: self.owner_json(g.owner.as_ref()),
                    state: g.state,
                    count: g.count,
                    oldest_ns: g.oldest_ns,
                    oldest_at_least: g.oldest_at_least,
                })
                .collect(),
        })
    }

    fn lost(&mut self, cause: LostCause, count: u64, total: u64) -> io::Result<()> {
        self.emit(&LostJson {
            ty: "lost",
            count,
            cause,
            total,
        })
    }

    /// The ladder view is text only (the CLI refuses `--view ladder -o json`); the JSON
    /// connection records carry the same states and times.
    fn ladder(&mut self, _l: &crate::ladder::Ladder) -> io::Result<()> {
        Ok(())
    }

    fn summary(&mut self, s: &crate::summary::Summary) -> io::Result<()> {
        self.emit(&s.record_json())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_buf()?;
        self.out.flush()
    }
}
