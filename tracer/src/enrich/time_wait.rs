//! Active closers' TIME_WAIT, confirmed in the kernel's timewait table of the socket's own
//! namespace, and followed to its end.
use std::collections::{HashMap, HashSet};

use super::{Lookup, Namespaces, TwSocket};
use crate::{
    decode::TcpState,
    table::{DiagTransition, NsTuple, Table, TimeWait},
};

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
        for p in pending {
            let key = NsTuple::new(p.netns, p.tuple);
            // A namespace that could not be looked up confirms nothing; one not found yet
            // (a container that just started) is looked up again while the record waits.
            let found = match tw.get(&p.netns) {
                Some(Dump::Got(dump)) => dump.get(&p.tuple).copied(),
                Some(Dump::Later) => continue,
                _ => None,
            };
            if found.is_some_and(|s| s.state == TcpState::FinWait2) {
                // Handed over but still waiting for the peer's FIN: TIME_WAIT is yet to
                // come. Looked up again at the next dump, while the record waits.
                continue;
            }
            let confirmed = found.map(|s| TimeWait {
                confirmed: true,
                expires_ns: Some(now_ns + u64::from(s.expires_ms) * 1_000_000),
            });
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
                ts_ns: now_ns,
                sock: p.sock,
                netns: p.netns,
                family: p.family,
                tuple: p.tuple,
                old: p.from,
                new: TcpState::TimeWait,
                expires_ns,
                in_old_ns: None,
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
