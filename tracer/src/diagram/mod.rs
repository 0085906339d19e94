//! The TCP state machine as the classic diagram (RFC 793 figure 6, Stevens' TCP/IP
//! Illustrated figure 18.12): CLOSED at the top, the handshake's LISTEN, SYN_SENT, SYN_RECV
//! down to ESTABLISHED, the active close (FIN_WAIT1, FIN_WAIT2, CLOSING, TIME_WAIT) on the
//! left, the passive close (CLOSE_WAIT, LAST_ACK) on the right, back to CLOSED. Each arrow
//! carries how often the kernel took it.
//!
//! [`canvas`] holds the layout (a template of character cells) and draws it as text
//! (`tracer top`); [`svg`] draws the same layout as an SVG picture (`--diagram FILE`), with
//! the median time spent in each state from a [`Collector`]. The arrows the kernel takes
//! that the classic diagram lacks (a reset's `ESTABLISHED -> CLOSE`, the handoff to a
//! timewait socket's `FIN_WAIT2 -> CLOSE`) are listed under it.
use crate::decode::TcpState;

pub mod canvas;
mod collect;
pub mod svg;

pub use collect::Collector;

/// Array size for per-state tables: a state's number is its index (`TcpState as usize`).
pub const STATES: usize = 13;

/// One arrow (`old -> new`): how often it was taken.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Arrow {
    /// Since the start.
    pub total: u64,
    /// Since the last rate was taken ([`Arrows::take_rates`]).
    pub now: u64,
    /// Per second over the last rate window.
    pub rate: f64,
}

impl Arrow {
    /// Taken in the last rate window.
    pub fn hot(&self) -> bool {
        self.rate > 0.0
    }
}

/// Every arrow's counts, by `[old][new]`: counting one is an index, no lookup.
#[derive(Clone, Debug, PartialEq)]
pub struct Arrows(Box<[[Arrow; STATES]; STATES]>);

impl Default for Arrows {
    fn default() -> Self {
        Self(Box::new([[Arrow::default(); STATES]; STATES]))
    }
}

impl Arrows {
    pub fn count(&mut self, old: TcpState, new: TcpState) {
        let a = &mut self.0[old as usize][new as usize];
        a.total += 1;
        a.now += 1;
    }

    pub fn get(&self, old: TcpState, new: TcpState) -> Arrow {
        self.0[old as usize][new as usize]
    }

    /// Turns the counts since the last call into rates over `secs`.
    pub fn take_rates(&mut self, secs: f64) {
        for a in self.0.iter_mut().flatten() {
            a.rate = if secs > 0.0 { a.now as f64 / secs } else { 0.0 };
            a.now = 0;
        }
    }

    /// The arrows taken at least once, in the order of [`TcpState::ALL`].
    pub fn taken(&self) -> impl Iterator<Item = (TcpState, TcpState, Arrow)> + '_ {
        TcpState::ALL.into_iter().flat_map(move |old| {
            TcpState::ALL.into_iter().filter_map(move |new| {
                let a = self.get(old, new);
                (a.total > 0).then_some((old, new, a))
            })
        })
    }

    /// The arrows taken that the drawing lacks, most taken first.
    pub fn others(&self) -> Vec<(TcpState, TcpState, Arrow)> {
        let mut v: Vec<_> = self
            .taken()
            .filter(|(o, n, _)| !canvas::drawn(*o, *n))
            .collect();
        v.sort_by_key(|a| std::cmp::Reverse(a.2.total));
        v
    }

    /// All transitions counted.
    pub fn sum(&self) -> u64 {
        self.0.iter().flatten().map(|a| a.total).sum()
    }
}

/// A state's name in the diagram: the RFC's `CLOSED` for the kernel's `CLOSE`.
pub const fn name(s: TcpState) -> &'static str {
    match s {
        TcpState::Close => "CLOSED",
        other => other.name(),
    }
}

/// A count in at most five characters: exact up to 99999, then `123k`, `1.2M`, `12M`,
/// `123M`, `1.2G`.
pub fn compact(n: u64) -> String {
    match n {
        0..=99_999 => n.to_string(),
        100_000..=999_999 => format!("{}k", n / 1_000),
        _ => {
            let (v, unit) = if n >= 1_000_000_000 {
                (n as f64 / 1e9, "G")
            } else {
                (n as f64 / 1e6, "M")
            };
            if v < 9.95 {
                format!("{v:.1}{unit}")
            } else {
                format!("{}{unit}", v as u64)
            }
        }
    }
}

/// A rate in at most six characters with `/s`: `0.5/s`, `4004/s`, `12k/s`.
pub fn rate(r: f64) -> String {
    if r < 9.95 {
        format!("{r:.1}/s")
    } else if r < 9_999.5 {
        format!("{}/s", r.round() as u64)
    } else {
        format!("{}k/s", (r / 1e3) as u64)
    }
}

/// An arrow's label: its count, and its rate when it was taken in the last window and
/// `width` leaves room.
pub fn label(a: &Arrow, width: usize) -> String {
    let count = compact(a.total);
    if a.hot() {
        let full = format!("{count} {}", rate(a.rate));
        if full.chars().count() <= width {
            return full;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_fit_their_columns() {
        assert_eq!(compact(0), "0");
        assert_eq!(compact(99_999), "99999");
        assert_eq!(compact(100_000), "100k");
        assert_eq!(compact(999_999), "999k");
        assert_eq!(compact(1_000_000), "1.0M");
        assert_eq!(compact(12_345_678), "12M");
        assert_eq!(compact(123_456_789), "123M");
        assert_eq!(compact(4_200_000_000), "4.2G");
        for n in [
            0,
            9,
            99_999,
            100_000,
            999_999,
            1_000_000,
            9_949_999,
            999_999_999,
        ] {
            assert!(compact(n).len() <= 5, "{n}: {}", compact(n));
        }
        assert_eq!(rate(0.5), "0.5/s");
        assert_eq!(rate(4004.2), "4004/s");
        assert_eq!(rate(12_345.0), "12k/s");
        assert_eq!(rate(999_999.0), "999k/s");
        let hot = Arrow {
            total: 20_571,
            now: 0,
            rate: 4004.0,
        };
        assert_eq!(label(&hot, 12), "20571 4004/s");
        assert_eq!(label(&hot, 11), "20571");
        assert_eq!(label(&Arrow { rate: 0.0, ..hot }, 12), "20571");
    }

    #[test]
    fn arrows_count_rate_and_split_into_drawn_and_others() {
        use TcpState::*;
        let mut a = Arrows::default();
        for _ in 0..4 {
            a.count(Established, FinWait1);
        }
        a.count(Established, Close);
        a.count(FinWait2, Close);
        a.count(FinWait2, Close);
        a.take_rates(2.0);
        let e = a.get(Established, FinWait1);
        assert_eq!((e.total, e.now, e.rate), (4, 0, 2.0));
        assert_eq!(a.sum(), 7);
        let others: Vec<_> = a
            .others()
            .into_iter()
            .map(|(o, n, x)| (o, n, x.total))
            .collect();
        assert_eq!(others, [(FinWait2, Close, 2), (Established, Close, 1)]);
        a.take_rates(1.0);
        assert!(!a.get(Established, FinWait1).hot());
    }
}
