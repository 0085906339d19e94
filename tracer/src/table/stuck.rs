//! Stuck connections: which states can be stuck, and the reports of those that are.
use std::collections::HashMap;

use super::{Conn, Owner, Table};
use crate::decode::{Comm, SockAddr, TcpState};

/// Stuck reports of a socket in its current state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StuckTrack {
    /// Reports made in this state.
    pub reports: u32,
    /// Report again once the age reaches this (doubling: AGE, 2×AGE, 4×AGE, …).
    pub next_age_ns: u64,
}

/// States in which a connection can be stuck: waiting on the peer or on the application.
pub const STUCK_STATES: [TcpState; 7] = [
    TcpState::SynSent,
    TcpState::SynRecv,
    TcpState::FinWait1,
    TcpState::FinWait2,
    TcpState::CloseWait,
    TcpState::LastAck,
    TcpState::Closing,
];

/// A connection that has stayed in one state longer than the threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StuckReport {
    pub conn: Conn,
    pub state: TcpState,
    pub age_ns: u64,
    /// The socket predates the tracer: the real age is at least `age_ns`.
    pub age_at_least: bool,
    /// 1 for the first report in this state, then 2, 3, … as it ages.
    pub report: u32,
}

/// A stuck connection that finally moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unstuck {
    pub state: TcpState,
    pub age_ns: u64,
    pub age_at_least: bool,
    pub reports: u32,
}

/// Stuck connections of one owner in one state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StuckGroup {
    pub owner: Option<Owner>,
    pub state: TcpState,
    pub count: u64,
    pub oldest_ns: u64,
    /// Some of them predate the tracer: `oldest_ns` is a lower bound.
    pub oldest_at_least: bool,
}

impl Table {
    /// Connections that have been in a stuck-prone state for at least `threshold_ns`, each
    /// reported when it crosses the threshold and again at 2×, 4×, 8×… (back-off).
    pub fn stuck(&mut self, now_ns: u64, threshold_ns: u64) -> Vec<StuckReport> {
        let mut out = Vec::new();
        for c in self.conns.values_mut().chain(self.seeded.values_mut()) {
            let Some(next) = c.stuck_due(now_ns, threshold_ns) else {
                continue;
            };
            let state = c.last_state();
            let (age_ns, age_at_least) = c.age(now_ns);
            c.stuck.reports += 1;
            // The next report when the age doubles (at least one threshold later).
            c.stuck.next_age_ns = (age_ns.saturating_mul(2)).max(next.saturating_add(threshold_ns));
            out.push(StuckReport {
                conn: (**c).clone(),
                state,
                age_ns,
                age_at_least,
                report: c.stuck.reports,
            });
        }
        // Orphaned FIN_WAIT2s: closed by their owner, the peer's FIN still awaited.
        for h in self
            .closing
            .values_mut()
            .chain(self.displaced.values_mut())
            .filter(|h| h.orphaned())
        {
            let c = &mut h.conn;
            let Some(age_ns) = c.orphan_age(now_ns) else {
                continue;
            };
            let next = if c.stuck.next_age_ns == 0 {
                threshold_ns
            } else {
                c.stuck.next_age_ns
            };
            if age_ns < next {
                continue;
            }
            c.stuck.reports += 1;
            c.stuck.next_age_ns = (age_ns.saturating_mul(2)).max(next.saturating_add(threshold_ns));
            out.push(StuckReport {
                conn: (**c).clone(),
                state: TcpState::FinWait2,
                age_ns,
                age_at_least: false,
                report: c.stuck.reports,
            });
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.age_ns));
        out
    }

    /// The open sockets [`Self::stuck`] would report at `now_ns` (seeded ones, which have
    /// no address yet, left out), without counting a report.
    pub fn stuck_due(&self, now_ns: u64, threshold_ns: u64) -> Vec<SockAddr> {
        self.conns
            .values()
            .filter(|c| c.stuck_due(now_ns, threshold_ns).is_some())
            .map(|c| c.sock)
            .collect()
    }

    /// Every connection stuck for at least `threshold_ns` now, grouped by owner and state,
    /// largest groups first.
    pub fn stuck_groups(
        &self,
        now_ns: u64,
        threshold_ns: u64,
        keep: impl Fn(&Conn) -> bool,
    ) -> Vec<StuckGroup> {
        let mut groups: HashMap<(Option<(u32, Comm)>, TcpState), StuckGroup> = HashMap::new();
        let orphans = self
            .closing
            .values()
            .chain(self.displaced.values())
            .filter(|h| h.orphaned())
            .filter_map(|h| {
                Some((
                    &*h.conn,
                    TcpState::FinWait2,
                    h.conn.orphan_age(now_ns)?,
                    false,
                ))
            });
        for (c, state, age, at_least) in self
            .conns
            .values()
            .chain(self.seeded.values())
            .map(|c| {
                let (age, at_least) = c.age(now_ns);
                (&**c, c.last_state(), age, at_least)
            })
            .chain(orphans)
            .filter(|(c, ..)| keep(c))
        {
            if !STUCK_STATES.contains(&state) || age < threshold_ns {
                continue;
            }
            let key = (c.owner.map(|o| (o.pid, o.comm)), state);
            let g = groups.entry(key).or_insert(StuckGroup {
                owner: c.owner,
                state,
                count: 0,
                oldest_ns: 0,
                oldest_at_least: false,
            });
            g.count += 1;
            if age > g.oldest_ns {
                g.oldest_ns = age;
                g.oldest_at_least = at_least;
            }
        }
        let mut v: Vec<StuckGroup> = groups.into_values().collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(b.oldest_ns.cmp(&a.oldest_ns)));
        v
    }
}

impl Conn {
    /// Whether it is due for a stuck report at `now_ns` (in a stuck-prone state, and as old
    /// as the next report's age): that age, or `None`.
    fn stuck_due(&self, now_ns: u64, threshold_ns: u64) -> Option<u64> {
        if !STUCK_STATES.contains(&self.last_state()) {
            return None;
        }
        let next = if self.stuck.next_age_ns == 0 {
            threshold_ns
        } else {
            self.stuck.next_age_ns
        };
        (self.age(now_ns).0 >= next).then_some(next)
    }
}
