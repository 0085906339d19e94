//! Active closers' TIME_WAIT, confirmed in the kernel's timewait table of the socket's own
//! namespace, and followed to its end.
use std::collections::{HashMap, HashSet};

use super::{Lookup, Namespaces, TwSocket};
use crate::{
    decode::TcpState,
    table::{DiagTransition, NsTuple, Orphan, OrphanEnd, OrphanHow, Table, TimeWait},
};

/// How long TIME_WAIT lasts on Linux (`TCP_TIMEWAIT_LEN`, a constant): a timewait socket's
/// timer says when its TIME_WAIT began.
const TIME_WAIT_LEN_NS: u64 = 60_000_000_000;

/// A TIME_WAIT that began this long after the handoff began with a FIN that came later:
/// the timer's start has jiffy precision (1–10 ms).
const HANDOFF_SLACK_NS: u64 = 20_000_000;

/// A timewait socket in FIN_WAIT2 gone this long before its timer's end still timed out
/// (the dump's own timing).
const ORPHAN_EARLY_NS: u64 = 1_500_000_000;

/// Orphaned FIN_WAIT2s followed at once (their records held until the peer's FIN or their
/// timer: ~350 bytes each); beyond this a new one is reported at once, its end unknown.
pub const MAX_ORPHANS: usize = 262_144;

/// Timewait sockets followed until they end; beyond this only their start is reported.
pub const MAX_TRACKED: usize = 65_536;

/// What one namespace's timewait dump gave.
enum Dump {
    Got(HashMap<crate::table::Tuple, TwSocket>),
    /// It could not be looked up (refused, or the dump failed): confirms and ends nothing.
    Failed,
    /// Not found yet ([`Lookup::Pending`]): asked again at the next dump.
    Later,
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
    /// transitions learned (→ TIME_WAIT, TIME_WAIT → CLOSE).
    pub fn poll(
        &mut self,
        now_ns: u64,
        table: &mut Table,
        namespaces: &mut Namespaces,
    ) -> std::io::Result<Vec<DiagTransition>> {
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
        let started = std::time::Instant::now();
        // Namespace → its timewait sockets, or why not.
        let mut tw: HashMap<u32, Dump> = HashMap::new();
        for ns in wanted {
            let dump = match namespaces.lookup(ns) {
                Lookup::Diag(d) => match d.time_wait() {
                    Ok(m) => Dump::Got(m),
                    Err(e) if namespaces.is_own(ns) => return Err(e),
                    Err(_) => Dump::Failed,
                },
                // A namespace nobody holds any more has no sockets left.
                Lookup::Gone => Dump::Got(HashMap::new()),
                Lookup::Refused => Dump::Failed,
                Lookup::Pending => Dump::Later,
            };
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
        let mut orphans = pending
            .iter()
            .filter(|p| p.orphan.is_some_and(|o| o.end.is_none()))
            .count();
        for p in pending {
            let key = NsTuple::new(p.netns, p.tuple);
            // A namespace that could not be looked up confirms nothing; one not found yet
            // (a container that just started) is looked up again while the record waits.
            let found = match tw.get(&p.netns) {
                Some(Dump::Got(dump)) => dump.get(&p.tuple).copied(),
                Some(Dump::Later) => continue,
                _ => None,
            };
            let expires_in = |s: TwSocket| now_ns + u64::from(s.expires_ms) * 1_000_000;
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
                    if p.orphan.is_none() {
                        orphans += 1;
                        table.set_orphan(
                            p.sock,
                            key,
                            Orphan {
                                handoff_ns: p.closed_ns,
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
                    let (how, at) = match expires {
                        Some(e) if now_ns.saturating_add(ORPHAN_EARLY_NS) >= e => {
                            (OrphanHow::Timeout, e.min(now_ns))
                        }
                        _ => (OrphanHow::Gone, now_ns),
                    };
                    table.set_orphan(
                        p.sock,
                        key,
                        Orphan {
                            handoff_ns: p.closed_ns,
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
                        .then_some((began.clamp(p.closed_ns, now_ns), false)),
                }
            });
            if let Some((at, peer)) = fin {
                table.set_orphan(
                    p.sock,
                    key,
                    Orphan {
                        handoff_ns: p.closed_ns,
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
        Ok(out)
    }
}
