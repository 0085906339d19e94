//! Sinks: how transitions, finished connections and losses are shown. Adding a view means
//! adding a [`Sink`]; the table does not change.
use std::io;

use chrono::{DateTime, Utc};

use crate::{
    cgroup::Names,
    clock::WallClock,
    decode::{Context, LostCause, Transition},
    table::{Conn, DiagTransition, Owner, StuckGroup, StuckReport, Unstuck},
};

mod json;
#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;
mod text;
#[cfg(test)]
mod writer_tests;

pub use json::{Json, SCHEMA_VERSION};
pub use text::{Text, timeline_block};

pub trait Sink {
    /// The cgroup cache owners' cgroup ids are looked up in (path, unit, container, pod);
    /// the pipeline hands over its own when it takes the sink. A sink that shows no owner
    /// identity ignores it.
    fn use_cgroups(&mut self, _names: &Names) {}
    fn transition(
        &mut self,
        t: &Transition,
        in_old_ns: Option<u64>,
        owner: Option<&Owner>,
    ) -> io::Result<()>;
    fn event(&mut self, c: &Context, owner: Option<&Owner>) -> io::Result<()>;
    fn diag_transition(&mut self, d: &DiagTransition) -> io::Result<()>;
    fn connection(&mut self, c: &Conn) -> io::Result<()>;
    fn stuck(&mut self, r: &StuckReport) -> io::Result<()>;
    /// A connection reported stuck moved on (`new` is its new state) at `ts_ns`.
    fn unstuck(&mut self, t: &Transition, u: &Unstuck, owner: Option<&Owner>) -> io::Result<()>;
    fn stuck_summary(&mut self, groups: &[StuckGroup], threshold_ns: u64) -> io::Result<()>;
    /// `count` new losses of one cause; `total` so far for that cause.
    fn lost(&mut self, cause: LostCause, count: u64, total: u64) -> io::Result<()>;
    /// A connection drawn as a ladder (`--view ladder`; text only).
    fn ladder(&mut self, l: &crate::ladder::Ladder) -> io::Result<()>;
    /// `--summary`, at exit and on SIGUSR1.
    fn summary(&mut self, s: &crate::summary::Summary) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
    /// Once a second (the pipeline's tick): the table as it is now, for a view that shows
    /// its state (`tracer top`). Nothing for the others.
    fn refresh(&mut self, _table: &crate::table::Table, _now_ns: u64) -> io::Result<()> {
        Ok(())
    }
    /// Whether it shows the stuck reports ([`Self::stuck`]); a view that lists stuck
    /// connections itself says no, and the pipeline does not look for them every tick.
    fn shows_stuck_reports(&self) -> bool {
        true
    }
    /// A replay is about to play `what` into a view that shows it (`tracer replay FILE
    /// --top`). Nothing for the others.
    fn replaying(&mut self, _what: &str) {}
    /// A replay has ended: a view that shows the table's state shows the last one and stays
    /// up until the user is done with it. Nothing for the others.
    fn hold(&mut self, _table: &crate::table::Table, _now_ns: u64) -> io::Result<()> {
        Ok(())
    }
}

/// The last wall-clock second a sink formatted: formatting a date (and looking up the time
/// zone) costs more than the rest of a record, and records come many per second.
struct SecondCache(std::cell::RefCell<CachedSecond>);

struct CachedSecond {
    /// The monotonic times that fall in the cached second: `[start, end)`; empty at first.
    start: u64,
    end: u64,
    text: String,
}

impl SecondCache {
    fn new() -> Self {
        Self(std::cell::RefCell::new(CachedSecond {
            start: 0,
            end: 0,
            text: String::new(),
        }))
    }

    /// Appends the second holding `ts_ns` as `format` writes it (run only when the second
    /// changes) and returns the nanoseconds within that second. Within the cached second
    /// this is a range check and a copy: the wall-clock arithmetic runs once a second.
    fn write(
        &self,
        b: &mut Vec<u8>,
        clock: &WallClock,
        ts_ns: u64,
        format: impl FnOnce(DateTime<Utc>) -> String,
    ) -> u64 {
        let mut cache = self.0.borrow_mut();
        if !(cache.start..cache.end).contains(&ts_ns) {
            // The wall time in ns, as `WallClock::utc` computes it.
            let wall = i64::try_from(clock.offset_ns() + i128::from(ts_ns)).unwrap_or(i64::MAX);
            let nanos = wall.rem_euclid(1_000_000_000) as u64;
            // The monotonic start of this wall second; none (nothing cached) if it would
            // be before boot.
            let (start, end) = match ts_ns.checked_sub(nanos) {
                Some(start) => (start, start.saturating_add(1_000_000_000)),
                None => (0, 0),
            };
            *cache = CachedSecond {
                start,
                end,
                text: format(clock.utc(ts_ns)),
            };
            b.extend_from_slice(cache.text.as_bytes());
            return nanos;
        }
        b.extend_from_slice(cache.text.as_bytes());
        ts_ns - cache.start
    }
}
