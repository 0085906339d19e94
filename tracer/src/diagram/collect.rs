//! `--diagram FILE`: what the SVG at exit needs, gathered over the whole run: every arrow's
//! count and the time connections spent in each state (a histogram per state: bounded, at
//! most [`STATES`] of them, whatever the number of connections).
use hdrhistogram::Histogram;

use super::{Arrows, STATES};
use crate::{
    decode::{TcpState, Transition},
    table::{Conn, DiagTransition},
};

/// Longest time kept exactly (longer ones are clamped): one day.
const MAX_NS: u64 = 86_400 * 1_000_000_000;

#[derive(Default)]
pub struct Collector {
    pub arrows: Arrows,
    /// Time in each state, by state number; made at the first duration of that state.
    times: Vec<Option<Histogram<u64>>>,
    pub first_ns: Option<u64>,
    pub last_ns: u64,
}

impl Collector {
    pub fn new() -> Self {
        Self {
            times: (0..STATES).map(|_| None).collect(),
            ..Self::default()
        }
    }

    fn seen(&mut self, ts: u64) {
        self.first_ns.get_or_insert(ts);
        self.last_ns = self.last_ns.max(ts);
    }

    pub fn transition(&mut self, t: &Transition) {
        self.seen(t.ts_ns);
        self.arrows.count(t.old, t.new);
    }

    /// A TIME_WAIT transition from sock_diag: its arrow, and for `TIME_WAIT -> CLOSE` the
    /// time spent in TIME_WAIT.
    pub fn diag(&mut self, d: &DiagTransition) {
        self.seen(d.ts_ns);
        self.arrows.count(d.old, d.new);
        if d.old == TcpState::TimeWait
            && let Some(ns) = d.in_old_ns
        {
            self.spent(TcpState::TimeWait, ns);
        }
    }

    /// A finished connection: the time it spent in each state it left.
    pub fn connection(&mut self, c: &Conn) {
        for (state, d) in c.states.iter().zip(c.durations()) {
            if let Some(ns) = d {
                self.spent(*state, ns);
            }
        }
    }

    /// `ns` spent in `s` by one connection.
    pub fn spent(&mut self, s: TcpState, ns: u64) {
        let Some(slot) = self.times.get_mut(s as usize) else {
            return;
        };
        if slot.is_none() {
            // 1 ns to a day, 3 significant digits: the median within 0.1%.
            *slot = Histogram::new_with_bounds(1, MAX_NS, 3).ok();
        }
        if let Some(h) = slot {
            // Clamped into the histogram's range, so `record` cannot fail.
            let _ = h.record(ns.clamp(1, MAX_NS));
        }
    }

    /// The median time spent in `s` and how many times it was measured.
    pub fn median(&self, s: TcpState) -> Option<(u64, u64)> {
        let h = self.times.get(s as usize)?.as_ref()?;
        (!h.is_empty()).then(|| (h.value_at_quantile(0.5), h.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::tr;

    #[test]
    fn medians_of_the_states_left_and_counts_of_the_arrows() {
        use TcpState::*;
        let mut t = crate::table::Table::new();
        let mut c = Collector::new();
        let evs = [
            tr(1, 1_000, Close, SynSent, 0, 80),
            tr(1, 3_000, SynSent, Established, 5, 80),
            tr(1, 10_000, Established, FinWait1, 5, 80),
            tr(1, 10_500, FinWait1, FinWait2, 5, 80),
            tr(1, 20_000, FinWait2, Close, 5, 80),
        ];
        for e in &evs {
            c.transition(e);
            for done in t.apply(e).finished {
                c.connection(&done);
            }
        }
        for done in t.expire(u64::MAX) {
            c.connection(&done);
        }
        assert_eq!(c.arrows.get(SynSent, Established).total, 1);
        assert_eq!(c.arrows.sum(), 5);
        assert_eq!(c.median(SynSent), Some((2_000, 1)));
        // Three significant digits.
        assert_eq!(
            c.median(Established).map(|(m, n)| (m / 10, n)),
            Some((700, 1))
        );
        assert_eq!(c.median(FinWait2).map(|(m, n)| (m / 10, n)), Some((950, 1)));
        assert_eq!(c.median(Listen), None);
        assert_eq!((c.first_ns, c.last_ns), (Some(1_000), 20_000));
    }
}
