//! Active closers' TIME_WAIT, confirmed in the kernel's timewait table of the socket's own
//! namespace, and followed to its end; orphaned FIN_WAIT2s (those the tracer saw close and
//! those from the start-up dump) followed the same way until the peer's FIN or their timer.
//!
//! A dump that fails confirms and ends nothing: what waits on it waits on (its deadline
//! still applies) and that namespace is asked again after a back-off. Only a namespace that
//! is gone ends its orphans, and only a kernel that cannot answer at all (no `inet_diag`)
//! stops the lookups.
use std::{
    collections::{HashMap, HashSet},
    io,
    time::Instant,
};

use super::{Lookup, Namespaces, TwSocket};
use crate::{
    clock::thread_cpu_ns,
    decode::TcpState,
    table::{DiagTransition, NsTuple, Orphan, OrphanEnd, OrphanHow, Table, TimeWait, Tuple},
};

/// How long TIME_WAIT lasts on Linux (`TCP_TIMEWAIT_LEN`, a constant): a timewait socket's
/// timer says when its TIME_WAIT began.
const TIME_WAIT_LEN_NS: u64 = 60_000_000_000;

/// A TIME_WAIT that began this long after the handoff began with a FIN that came later:
/// the timer's start has jiffy precision (1–10 ms).
const HANDOFF_SLACK_NS: u64 = 20_000_000;

/// A timewait socket in FIN_WAIT2 gone this long before its timer's end still timed out:
/// the round's clock (the pipeline's) can be behind the kernel's.
const ORPHAN_EARLY_NS: u64 = 1_500_000_000;

/// Orphaned FIN_WAIT2s followed at once (their records held until the peer's FIN or their
/// timer: ~350 bytes each); beyond this a new one is reported at once, its end unknown.
pub const MAX_ORPHANS: usize = 262_144;

/// Timewait sockets followed until they end; beyond this only their start is reported.
pub const MAX_TRACKED: usize = 65_536;

/// A namespace whose dump failed is asked again after this, doubled at each failure in a
/// row up to [`RETRY_MAX_NS`]: a transient failure costs one interval, a lasting one a dump
/// every half minute, not one every batch.
const RETRY_FIRST_NS: u64 = 1_000_000_000;
const RETRY_MAX_NS: u64 = 30_000_000_000;

/// What asking one namespace for its timewait sockets gave.
pub enum TwLookup {
    /// Its timewait sockets (both substates).
    Got(HashMap<Tuple, TwSocket>),
    /// The dump failed.
    Failed(io::Error),
    /// Nobody holds the namespace any more: it has no sockets left.
    Gone,
    /// It exists but cannot be entered: it will never answer.
    Refused,
    /// Not found yet (a container that just started): ask again later.
    Pending,
}

/// Where the timewait sockets of a namespace come from: the namespace registry, live; a
/// stand-in in tests.
pub trait TimeWaitSource {
    fn time_wait(&mut self, netns: u32) -> TwLookup;
}

impl TimeWaitSource for Namespaces {
    fn time_wait(&mut self, netns: u32) -> TwLookup {
        match self.lookup(netns) {
            Lookup::Diag(d) => match d.time_wait() {
                Ok(m) => TwLookup::Got(m),
                Err(e) => TwLookup::Failed(e),
            },
            Lookup::Gone => TwLookup::Gone,
            Lookup::Refused => TwLookup::Refused,
            Lookup::Pending => TwLookup::Pending,
        }
    }
}

/// What one namespace's timewait dump gave, for this round.
enum Dump {
    Got(HashMap<Tuple, TwSocket>),
    /// Nothing can be learned this round (the dump failed, it backs off after failures,
    /// or the namespace is not found yet): confirms and ends nothing; asked again later.
    Later,
    /// It can never be looked up: lookups waiting on it end unknown.
    Refused,
}

/// Failures in a row of one namespace's dump, and when to ask it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Backoff {
    failures: u32,
    retry_at_ns: u64,
}

impl Backoff {
    /// After one more failure at `now_ns`.
    fn failed(prev: Option<Self>, now_ns: u64) -> Self {
        let failures = prev.map_or(1, |b| b.failures.saturating_add(1));
        let wait = RETRY_FIRST_NS
            .checked_shl(failures - 1)
            .unwrap_or(RETRY_MAX_NS)
            .min(RETRY_MAX_NS);
        Self {
            failures,
            retry_at_ns: now_ns.saturating_add(wait),
        }
    }
}

/// What the dumps cost and how they went, for the exit line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpStats {
    /// Dumps answered (one per namespace and round).
    pub dumps: u64,
    /// Dumps that failed (retried after a back-off).
    pub failed: u64,
    pub total_ns: u64,
    /// The CPU time they took (the kernel's filling included), which a busy host does not
    /// stretch as it does their duration.
    pub cpu_ns: u64,
    /// The longest dump, and how many timewait sockets it listed.
    pub longest_ns: u64,
    pub longest_sockets: usize,
}

impl DumpStats {
    fn answered(&mut self, took_ns: u64, cpu_ns: u64, sockets: usize) {
        self.dumps += 1;
        self.total_ns = self.total_ns.saturating_add(took_ns);
        self.cpu_ns = self.cpu_ns.saturating_add(cpu_ns);
        if took_ns > self.longest_ns {
            self.longest_ns = took_ns;
            self.longest_sockets = sockets;
        }
    }

    /// "57 dumps, 1.20ms on average (0.95ms of CPU), longest 48.2ms (100000 timewait
    /// sockets)".
    pub fn describe(&self) -> String {
        use crate::units::human_ns;
        format!(
            "{} dump{}, {} on average ({} of CPU), longest {} ({} timewait socket{})",
            self.dumps,
            plural(self.dumps),
            human_ns(self.total_ns / self.dumps.max(1)),
            human_ns(self.cpu_ns / self.dumps.max(1)),
            human_ns(self.longest_ns),
            self.longest_sockets,
            plural(self.longest_sockets as u64),
        )
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

struct Tracked {
    end: DiagTransition,
}

/// Confirms active closers' TIME_WAIT and follows it to its end.
#[derive(Default)]
pub struct TimeWaitTracker {
    last_dump_ns: Option<u64>,
    /// How many timewait sockets the last dumps returned (sets the dump rate).
    last_size: usize,
    /// How long the last dumps took (sets the dump rate).
    last_dump_cost_ns: u64,
    tracked: HashMap<NsTuple, Tracked>,
    /// Timewait sockets confirmed but not followed (over [`MAX_TRACKED`]).
    pub untracked: u64,
    /// Orphaned FIN_WAIT2s not followed (over [`MAX_ORPHANS`]).
    pub orphans_untracked: u64,
    /// Namespaces whose last dump failed.
    backoff: HashMap<u32, Backoff>,
    pub stats: DumpStats,
}

impl TimeWaitTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Timewait sockets still followed (at exit: still in TIME_WAIT).
    pub fn tracked(&self) -> usize {
        self.tracked.len()
    }

    /// How long to wait after a dump before the next one. Each dump walks the kernel's
    /// whole socket hash table (every namespace's sockets, however few match), so its cost
    /// grows with the host's socket count, not with ours: at 50 ms intervals under churn it
    /// cost 15 % of the reader's CPU here. So the interval follows the last dump's own
    /// duration (at most ~1 % of the time in dumps), between 200 ms and 900 ms: every
    /// closed record waits up to [`crate::table::TIME_WAIT_WAIT_NS`] (1.5 s) for its lookup,
    /// which leaves it at least one lookup even at the longest interval.
    fn min_interval_ns(&self) -> u64 {
        let mut ns = self.last_dump_cost_ns.saturating_mul(100);
        if self.last_size > 10_000 {
            // A TIME_WAIT storm of our own makes each reply large too.
            ns = ns.max(900_000_000);
        }
        ns.clamp(200_000_000, 900_000_000)
    }

    /// Looks up pending closers and ends of followed timewait sockets, when due; returns the
    /// transitions learned (→ TIME_WAIT, TIME_WAIT → CLOSE, an orphan's FIN_WAIT2 → CLOSE).
    /// An error only when this kernel cannot answer sock_diag dumps at all: a failed dump
    /// is retried (said once on stderr, counted in [`Self::stats`]).
    pub fn poll(
        &mut self,
        now_ns: u64,
        table: &mut Table,
        source: &mut impl TimeWaitSource,
    ) -> io::Result<Vec<DiagTransition>> {
        let mut out = Vec::new();
        // Cheap checks first: this runs after every batch, the table can hold many records.
        let since = self.last_dump_ns.map(|l| now_ns.saturating_sub(l));
        let (for_pending, for_tracked) = match since {
            None => (true, true),
            Some(s) => (
                s >= self.min_interval_ns(),
                !self.tracked.is_empty() && s >= 1_000_000_000,
            ),
        };
        if !for_pending && !for_tracked {
            return Ok(out);
        }
        let pending: Vec<_> = table.time_wait_pending().collect();
        if pending.is_empty() && !for_tracked {
            return Ok(out);
        }
        // One dump per namespace that has something to look up.
        let mut wanted: HashSet<u32> = pending.iter().map(|p| p.netns).collect();
        if for_tracked {
            wanted.extend(self.tracked.keys().map(|t| t.netns));
        }
        let started = Instant::now();
        // Namespace → its timewait sockets, or why not.
        let mut tw: HashMap<u32, Dump> = HashMap::new();
        for ns in wanted {
            let dump = self.dump(ns, now_ns, source)?;
            tw.insert(ns, dump);
        }
        self.last_dump_cost_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_dump_ns = Some(now_ns);
        self.last_size = tw
            .values()
            .map(|d| match d {
                Dump::Got(m) => m.len(),
                _ => 0,
            })
            .sum();
        self.learn(now_ns, table, &pending, &tw, &mut out);
        Ok(out)
    }

    /// One namespace's dump, unless it is backing off after failures.
    fn dump(&mut self, ns: u32, now_ns: u64, source: &mut impl TimeWaitSource) -> io::Result<Dump> {
        if self
            .backoff
            .get(&ns)
            .is_some_and(|b| now_ns < b.retry_at_ns)
        {
            return Ok(Dump::Later);
        }
        let (started, cpu) = (Instant::now(), thread_cpu_ns());
        Ok(match source.time_wait(ns) {
            TwLookup::Got(m) => {
                let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                let cpu = thread_cpu_ns().saturating_sub(cpu);
                self.stats.answered(took, cpu, m.len());
                self.backoff.remove(&ns);
                Dump::Got(m)
            }
            TwLookup::Failed(e) if super::unavailable(&e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "this kernel cannot list timewait sockets ({e}): load the tcp_diag module (modprobe tcp_diag)"
                    ),
                ));
            }
            TwLookup::Failed(e) => {
                self.stats.failed += 1;
                if self.stats.failed == 1 {
                    eprintln!(
                        "tracer: warning: a sock_diag dump of timewait sockets failed ({e}, network namespace {ns}): TIME_WAIT and orphaned FIN_WAIT2 lookups there wait and retry with back-off; failures are counted at exit"
                    );
                }
                let b = Backoff::failed(self.backoff.get(&ns).copied(), now_ns);
                self.backoff.insert(ns, b);
                Dump::Later
            }
            // A namespace nobody holds any more has no sockets left.
            TwLookup::Gone => Dump::Got(HashMap::new()),
            TwLookup::Refused => Dump::Refused,
            TwLookup::Pending => Dump::Later,
        })
    }

    /// What this round's dumps say of the pending records and the followed timewait
    /// sockets.
    fn learn(
        &mut self,
        now_ns: u64,
        table: &mut Table,
        pending: &[crate::table::PendingTimeWait],
        tw: &HashMap<u32, Dump>,
        out: &mut Vec<DiagTransition>,
    ) {
        let mut orphans = pending
            .iter()
            .filter(|p| p.orphan.is_some_and(|o| o.end.is_none()))
            .count();
        for p in pending {
            let key = NsTuple::new(p.netns, p.tuple);
            // When it was handed over: the close the tracer saw; unknown (0) for an orphan
            // from the start-up dump.
            let handoff = p.orphan.map_or(p.closed_ns, |o| o.handoff_ns);
            // Only a dump that answered confirms or ends anything. One that failed, or a
            // namespace not found yet (a container that just started), leaves the record
            // waiting (until its deadline) for the next one; one that can never be looked
            // up leaves a closer's TIME_WAIT unknown at once.
            let found = match tw.get(&p.netns) {
                Some(Dump::Got(dump)) => dump.get(&p.tuple).copied(),
                Some(Dump::Refused) if p.orphan.is_none() => {
                    table.set_time_wait(p.sock, key, None);
                    continue;
                }
                _ => continue,
            };
            // As of when the kernel said it (the pipeline's clock, `now_ns`, can be a batch
            // behind); never before this round.
            let expires_in = |s: TwSocket| {
                s.expires_ns()
                    .max(now_ns + u64::from(s.expires_ms) * 1_000_000)
            };
            match found {
                Some(s) if s.state == TcpState::FinWait2 => {
                    // Handed over but still waiting for the peer's FIN: followed, as an
                    // orphaned FIN_WAIT2, until TIME_WAIT or its timer's end.
                    if p.orphan.is_none() && orphans >= MAX_ORPHANS {
                        // Not followed: released now, its end unknown (counted, reported).
                        self.orphans_untracked += 1;
                        table.set_time_wait(p.sock, key, None);
                        continue;
                    }
                    if p.orphan.is_none_or(|o| o.expires_ns.is_none()) {
                        if p.orphan.is_none() {
                            orphans += 1;
                        }
                        table.set_orphan(
                            p.sock,
                            key,
                            Orphan {
                                handoff_ns: handoff,
                                expires_ns: Some(expires_in(s)),
                                end: None,
                            },
                        );
                    }
                    continue;
                }
                None if p.orphan.is_some() => {
                    // Gone while in FIN_WAIT2: its timer ended it (the peer never sent
                    // FIN), or something else did before the timer.
                    let expires = p.orphan.and_then(|o| o.expires_ns);
                    // Its timer, read from the kernel, says when (to the jiffy): the
                    // pipeline's clock may still be a batch short of it.
                    let (how, at) = match expires {
                        Some(e) if now_ns.saturating_add(ORPHAN_EARLY_NS) >= e => {
                            (OrphanHow::Timeout, e)
                        }
                        _ => (OrphanHow::Gone, now_ns),
                    };
                    table.set_orphan(
                        p.sock,
                        key,
                        Orphan {
                            handoff_ns: handoff,
                            expires_ns: expires,
                            end: Some(OrphanEnd { ts_ns: at, how }),
                        },
                    );
                    out.push(DiagTransition {
                        ts_ns: at,
                        sock: p.sock,
                        netns: p.netns,
                        family: p.family,
                        tuple: p.tuple,
                        old: TcpState::FinWait2,
                        new: TcpState::Close,
                        expires_ns: None,
                        in_old_ns: p.from_ns.map(|f| at.saturating_sub(f)),
                        owner: p.owner,
                    });
                    continue;
                }
                _ => {}
            }
            let confirmed = found.map(|s| TimeWait {
                confirmed: true,
                expires_ns: Some(expires_in(s)),
            });
            // The peer's FIN came after the handoff: the connection was an orphaned
            // FIN_WAIT2 until then, and TIME_WAIT began at the FIN (the peer's own LAST_ACK
            // when it is on this host, else the TIME_WAIT timer's start).
            let fin = confirmed.and_then(|c| {
                let began = c.expires_ns?.saturating_sub(TIME_WAIT_LEN_NS);
                match p.peer_fin_ns {
                    Some(at) => Some((at, true)),
                    None => (p.orphan.is_some() || began > p.closed_ns + HANDOFF_SLACK_NS)
                        .then_some((began.max(handoff).min(now_ns), false)),
                }
            });
            if let Some((at, peer)) = fin {
                table.set_orphan(
                    p.sock,
                    key,
                    Orphan {
                        handoff_ns: handoff,
                        expires_ns: p.orphan.and_then(|o| o.expires_ns),
                        end: Some(OrphanEnd {
                            ts_ns: at,
                            how: OrphanHow::Fin { peer },
                        }),
                    },
                );
            }
            table.set_time_wait(
                p.sock,
                key,
                confirmed.or(Some(TimeWait {
                    confirmed: false,
                    expires_ns: None,
                })),
            );
            let Some(TimeWait { expires_ns, .. }) = confirmed else {
                continue;
            };
            let start = DiagTransition {
                ts_ns: fin.map_or(now_ns, |f| f.0),
                sock: p.sock,
                netns: p.netns,
                family: p.family,
                tuple: p.tuple,
                old: p.from,
                new: TcpState::TimeWait,
                expires_ns,
                in_old_ns: fin.and_then(|(at, _)| Some(at.saturating_sub(p.from_ns?))),
                owner: p.owner,
            };
            out.push(start);
            if self.tracked.len() < MAX_TRACKED {
                let end = DiagTransition {
                    old: TcpState::TimeWait,
                    new: TcpState::Close,
                    expires_ns: None,
                    ..start
                };
                self.tracked.insert(key, Tracked { end });
            } else {
                self.untracked += 1;
            }
        }
        let gone: Vec<NsTuple> = self
            .tracked
            .keys()
            .filter(|t| match tw.get(&t.netns) {
                Some(Dump::Got(dump)) => !dump.contains_key(&t.tuple),
                _ => false,
            })
            .copied()
            .collect();
        for t in gone {
            if let Some(mut tr) = self.tracked.remove(&t) {
                tr.end.in_old_ns = Some(now_ns.saturating_sub(tr.end.ts_ns));
                tr.end.ts_ns = now_ns;
                out.push(tr.end);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        decode::{Comm, Family, SockAddr, TcpState::*},
        table::{CloseClass, OwnerSource, Seed, SeenFrom, tests::NETNS, tests::tr},
    };

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000 * MS;

    /// Answers each dump with what the test put in `next` (then: not found yet), counting
    /// the dumps asked for.
    #[derive(Default)]
    struct Fake {
        next: Option<TwLookup>,
        asked: usize,
    }

    impl Fake {
        fn answer(&mut self, l: TwLookup) -> &mut Self {
            self.next = Some(l);
            self
        }
    }

    impl TimeWaitSource for Fake {
        fn time_wait(&mut self, netns: u32) -> TwLookup {
            assert_eq!(netns, NETNS);
            self.asked += 1;
            self.next.take().unwrap_or(TwLookup::Pending)
        }
    }

    fn lo() -> std::net::IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    /// The client's side 127.0.0.1:5 -> :80.
    fn client() -> Tuple {
        Tuple::new(lo(), 5, lo(), 80)
    }

    /// A timewait socket of the client's tuple.
    fn timewait(state: TcpState, expires_ms: u32) -> TwLookup {
        TwLookup::Got(
            [(
                client(),
                TwSocket {
                    state,
                    expires_ms,
                    read_ns: 0,
                },
            )]
            .into(),
        )
    }

    fn eio() -> TwLookup {
        TwLookup::Failed(io::Error::from_raw_os_error(libc::EIO))
    }

    /// Client 1 closes first at 10 ms; its FIN is acked and it is handed over at 11 ms.
    fn closed_client(t: &mut Table) {
        t.apply(&tr(1, 0, Close, SynSent, 0, 80));
        t.apply(&tr(1, MS, SynSent, Established, 5, 80));
        t.apply(&tr(2, MS, Listen, SynRecv, 80, 5));
        t.apply(&tr(2, MS, SynRecv, Established, 80, 5));
        t.apply(&tr(1, 10 * MS, Established, FinWait1, 5, 80));
        t.apply(&tr(2, 10 * MS, Established, CloseWait, 80, 5));
        t.apply(&tr(1, 11 * MS, FinWait1, FinWait2, 5, 80));
        t.apply(&tr(1, 11 * MS, FinWait2, Close, 5, 80));
    }

    fn orphans_stuck(t: &mut Table, now: u64) -> Vec<(u64, bool)> {
        t.stuck(now, S)
            .into_iter()
            .filter(|r| r.conn.orphan.is_some())
            .map(|r| (r.age_ns, r.age_at_least))
            .collect()
    }

    /// The bug: a dump that failed was read as "no timewait socket", which ended every
    /// orphan it should have listed (`gone`, or `timeout` near its timer) and marked every
    /// closer's TIME_WAIT not found. Now nothing is learned from it: the next dump, after a
    /// back-off, says.
    #[test]
    fn a_failed_dump_ends_no_orphan_and_confirms_nothing() {
        let mut t = Table::new();
        closed_client(&mut t);
        let mut tw = TimeWaitTracker::new();
        let mut src = Fake::default();
        // Found in FIN_WAIT2 (its timer: 60 s).
        let out = tw
            .poll(20 * MS, &mut t, src.answer(timewait(FinWait2, 60_000)))
            .unwrap();
        assert!(out.is_empty());
        assert_eq!(orphans_stuck(&mut t, 2 * S), [(2 * S - 11 * MS, false)]);
        // The dump fails: the orphan stays, still stuck, still waiting for its end.
        let out = tw.poll(3 * S, &mut t, src.answer(eio())).unwrap();
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(tw.stats.failed, 1);
        let p: Vec<_> = t.time_wait_pending().collect();
        assert_eq!(p.len(), 1);
        assert!(p[0].orphan.is_some_and(|o| o.end.is_none()));
        assert_eq!(
            t.stuck_groups(4 * S, S, |_| true).len(),
            2,
            "CLOSE_WAIT and FIN_WAIT2"
        );
        // Backing off: not asked again within a second...
        assert_eq!(src.asked, 2);
        tw.poll(3 * S + 500 * MS, &mut t, &mut src).unwrap();
        assert_eq!(src.asked, 2);
        // ...then asked: a second failure in a row waits two seconds.
        tw.poll(4 * S, &mut t, src.answer(eio())).unwrap();
        tw.poll(5 * S, &mut t, &mut src).unwrap();
        assert_eq!((src.asked, tw.stats.failed), (3, 2));
        // Answered again: still in FIN_WAIT2, nothing changes; then gone near its timer.
        let out = tw
            .poll(6 * S, &mut t, src.answer(timewait(FinWait2, 54_000)))
            .unwrap();
        assert!(out.is_empty());
        assert_eq!(tw.stats.dumps, 2);
        let out = tw
            .poll(60 * S, &mut t, src.answer(TwLookup::Got(HashMap::new())))
            .unwrap();
        assert_eq!(
            out.iter().map(|d| (d.old, d.new)).collect::<Vec<_>>(),
            [(FinWait2, Close)]
        );
        let c = t
            .expire(61 * S)
            .into_iter()
            .find(|c| c.sock.0 == 1)
            .unwrap();
        assert_eq!(c.close, Some(CloseClass::OrphanTimeout));
    }

    /// A closer's TIME_WAIT lookup that meets a failed dump is not concluded "not found":
    /// it waits for the next dump (and at most its deadline).
    #[test]
    fn a_failed_dump_leaves_a_time_wait_lookup_waiting() {
        let mut t = Table::new();
        closed_client(&mut t);
        let mut tw = TimeWaitTracker::new();
        let mut src = Fake::default();
        tw.poll(20 * MS, &mut t, src.answer(eio())).unwrap();
        assert_eq!(t.time_wait_pending().count(), 1);
        let out = tw
            .poll(S + 20 * MS, &mut t, src.answer(timewait(TimeWait, 59_000)))
            .unwrap();
        assert_eq!(
            out.iter().map(|d| (d.old, d.new)).collect::<Vec<_>>(),
            [(FinWait2, TimeWait)]
        );
        let c = t.expire(2 * S).into_iter().find(|c| c.sock.0 == 1).unwrap();
        assert_eq!(c.time_wait.map(|tw| tw.confirmed), Some(true));
    }

    /// Only a kernel that cannot answer at all stops the lookups (one clear error); a
    /// namespace that is gone ends its orphans.
    #[test]
    fn no_inet_diag_stops_the_lookups_and_a_gone_namespace_ends_its_orphans() {
        let mut t = Table::new();
        closed_client(&mut t);
        let mut tw = TimeWaitTracker::new();
        let mut src = Fake::default();
        tw.poll(20 * MS, &mut t, src.answer(timewait(FinWait2, 60_000)))
            .unwrap();
        let no_diag = TwLookup::Failed(io::Error::new(
            io::ErrorKind::NotFound,
            super::super::SockDiagError(io::Error::from_raw_os_error(libc::ENOENT)),
        ));
        let e = tw.poll(S, &mut t, src.answer(no_diag)).unwrap_err();
        assert!(e.to_string().contains("tcp_diag"), "{e}");
        let out = tw.poll(2 * S, &mut t, src.answer(TwLookup::Gone)).unwrap();
        assert_eq!(out.len(), 1);
        let c = t.expire(3 * S).into_iter().find(|c| c.sock.0 == 1).unwrap();
        assert_eq!(
            c.orphan.and_then(|o| o.end).map(|e| (e.how, e.ts_ns)),
            Some((OrphanHow::Gone, 2 * S))
        );
    }

    fn seed_orphan(t: &mut Table, now: u64, expires_ns: u64) {
        t.seed(
            Seed {
                netns: NETNS,
                family: Family::Ipv4,
                tuple: client(),
                state: FinWait2,
                owner: None,
                orphan: true,
            },
            now,
        );
        t.set_orphan(
            SockAddr(0),
            NsTuple::new(NETNS, client()),
            Orphan {
                handoff_ns: 0,
                expires_ns: Some(expires_ns),
                end: None,
            },
        );
    }

    /// The bug: an orphan from the start-up dump was an open socket that only the
    /// once-a-minute prune looked at: moved to TIME_WAIT (or ended) it was still reported
    /// stuck in FIN_WAIT2 for up to a minute. Now it follows the same lookups as those the
    /// tracer saw close: its end is learned at the next dump, where it is known (here the
    /// peer's FIN, on this host: its LAST_ACK).
    #[test]
    fn an_orphan_from_the_start_up_dump_is_followed_to_its_end() {
        for peer_on_this_host in [true, false] {
            let mut t = Table::new();
            seed_orphan(&mut t, 10 * S, 40 * S);
            // Its peer, from the dump too, in CLOSE_WAIT.
            let server = Tuple::new(lo(), 80, lo(), 5);
            t.seed(
                Seed {
                    netns: NETNS,
                    family: Family::Ipv4,
                    tuple: server,
                    state: CloseWait,
                    owner: Some(crate::table::Owner {
                        pid: 42,
                        comm: Comm::default(),
                        uid: 0,
                        cgroup_id: 0,
                        source: OwnerSource::Procfs,
                    }),
                    orphan: false,
                },
                10 * S,
            );
            assert_eq!(orphans_stuck(&mut t, 12 * S), [(2 * S, true)]);
            let mut tw = TimeWaitTracker::new();
            let mut src = Fake::default();
            tw.poll(12 * S, &mut t, src.answer(timewait(FinWait2, 28_000)))
                .unwrap();
            assert!(
                orphans_stuck(&mut t, 13 * S).is_empty(),
                "again at twice the age"
            );
            // The peer closes at 20 s; the next dump finds TIME_WAIT.
            if peer_on_this_host {
                t.apply(&tr(9, 20 * S, CloseWait, LastAck, 80, 5));
            }
            let out = tw
                .poll(
                    20 * S + 300 * MS,
                    &mut t,
                    src.answer(timewait(TimeWait, 59_900)),
                )
                .unwrap();
            // The FIN: the peer's LAST_ACK, else the TIME_WAIT timer's start.
            let fin = if peer_on_this_host {
                20 * S
            } else {
                20 * S + 300 * MS + 59_900 * MS - TIME_WAIT_LEN_NS
            };
            assert_eq!(
                out.iter()
                    .map(|d| (d.sock.0, d.old, d.new, d.ts_ns))
                    .collect::<Vec<_>>(),
                [(0, FinWait2, TimeWait, fin)]
            );
            // Not stuck any more, at once.
            assert!(orphans_stuck(&mut t, 50 * S).is_empty());
            assert!(
                t.stuck_groups(21 * S, S, |_| true)
                    .iter()
                    .all(|g| g.state != FinWait2)
            );
            let u = t
                .orphan_moved(SockAddr(0), NsTuple::new(NETNS, client()), fin, |_| true)
                .expect("it was reported stuck");
            assert_eq!(
                (u.state, u.age_ns, u.age_at_least, u.reports),
                (FinWait2, fin - 10 * S, true, 1)
            );
            let c = t
                .expire(21 * S)
                .into_iter()
                .find(|c| c.sock.0 == 0)
                .unwrap();
            assert_eq!(c.states.as_slice(), [FinWait2, Close]);
            assert_eq!(
                (c.end_ns(), c.seen_from, c.incomplete),
                (fin, SeenFrom::Dump, true)
            );
            assert_eq!(c.time_wait.map(|w| w.confirmed), Some(true));
            let o = c.orphan.unwrap();
            assert_eq!(
                (o.handoff_ns, o.end.map(|e| e.how)),
                (
                    0,
                    Some(OrphanHow::Fin {
                        peer: peer_on_this_host
                    })
                )
            );
            assert_eq!(c.close, Some(CloseClass::Active));
        }
    }

    /// An orphan from the start-up dump whose timer ends it: `orphan_timeout`, when its
    /// timer said; and one still waiting at exit leaves no record (as the open sockets from
    /// the dump do).
    #[test]
    fn an_orphan_from_the_start_up_dump_times_out() {
        let mut t = Table::new();
        seed_orphan(&mut t, 10 * S, 40 * S);
        let mut tw = TimeWaitTracker::new();
        let mut src = Fake::default();
        let out = tw
            .poll(
                40 * S + 200 * MS,
                &mut t,
                src.answer(TwLookup::Got(HashMap::new())),
            )
            .unwrap();
        assert_eq!(
            out.iter()
                .map(|d| (d.old, d.new, d.ts_ns))
                .collect::<Vec<_>>(),
            [(FinWait2, Close, 40 * S)]
        );
        let c = t.expire(41 * S).pop().unwrap();
        assert_eq!(
            (c.close, c.end_ns()),
            (Some(CloseClass::OrphanTimeout), 40 * S)
        );

        let mut t = Table::new();
        seed_orphan(&mut t, 10 * S, 40 * S);
        t.forget_waiting_seeded();
        assert!(t.flush().is_empty());
    }

    #[test]
    fn back_off_doubles_up_to_half_a_minute() {
        let mut b = None;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let n = Backoff::failed(b, 100 * S);
            waits.push((n.retry_at_ns - 100 * S) / S);
            b = Some(n);
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
