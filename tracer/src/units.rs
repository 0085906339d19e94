//! The shared vocabulary of every view: durations (`1.25ms`), endpoints (`addr:port`), socket
//! addresses and numbers, written straight into byte buffers (the hot paths write no
//! `format!`). Imports nothing above `decode`.
use std::{
    io::{self, Write as _},
    net::IpAddr,
};

use crate::{decode::SockAddr, tuple::Endpoint};

/// `n` in exactly `width` (at most 20) decimal digits, zero-padded (its low digits if
/// longer).
pub(crate) fn put_zero_padded(b: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut out = [b'0'; 20];
    let width = width.min(out.len());
    for d in out[..width].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    b.extend_from_slice(&out[..width]);
}

/// `1.25ms`, `52.3µs`, `3.20s`, `2m05s`: short and unambiguous.
/// `512B`, `1.5KiB`, `4.0MiB`, `2.3GiB`: a byte count for people (binary units).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= size {
            return format!("{:.1}{unit}", n as f64 / size as f64);
        }
    }
    format!("{n}B")
}

pub fn human_ns(ns: u64) -> String {
    let mut b = Vec::with_capacity(16);
    put_human_ns(&mut b, ns);
    // Only UTF-8 is written.
    String::from_utf8_lossy(&b).into_owned()
}

/// [`human_ns`] as it was written with float formatting: the reference for the integer one,
/// and what it falls back to where the two could round differently.
pub(crate) fn human_ns_float(ns: u64) -> String {
    let f = ns as f64;
    match ns {
        0..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{:.1}µs", f / 1e3),
        1_000_000..=999_999_999 => format!("{:.2}ms", f / 1e6),
        1_000_000_000..=59_999_999_999 => format!("{:.2}s", f / 1e9),
        _ => {
            let s = ns / 1_000_000_000;
            if s < 3600 {
                format!("{}m{:02}s", s / 60, s % 60)
            } else {
                format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
            }
        }
    }
}

/// [`human_ns`] appended to `b`, in integers: a duration is in most text rows and timeline
/// lines, and float formatting cost more than the rest of the row.
pub(crate) fn put_human_ns(b: &mut Vec<u8>, ns: u64) {
    // The unit of the last digit shown (in ns), the digits after the point, the suffix.
    let (unit, decimals, suffix): (u64, usize, &[u8]) = match ns {
        0..=999 => {
            put_u64(b, ns);
            b.extend_from_slice(b"ns");
            return;
        }
        1_000..=999_999 => (100, 1, "µs".as_bytes()),
        1_000_000..=999_999_999 => (10_000, 2, b"ms"),
        1_000_000_000..=59_999_999_999 => (10_000_000, 2, b"s"),
        _ => {
            b.extend_from_slice(human_ns_float(ns).as_bytes());
            return;
        }
    };
    if ns % unit == unit / 2 {
        // Exactly half-way in decimal: which way it goes depends on the float's binary
        // value, so ask the float formatter, as before. Elsewhere the decimal value is far
        // enough from a half (at least 1e-6 relative) that the float's error cannot matter.
        b.extend_from_slice(human_ns_float(ns).as_bytes());
        return;
    }
    let r = (ns + unit / 2) / unit;
    let scale = if decimals == 1 { 10 } else { 100 };
    put_u64(b, r / scale);
    b.push(b'.');
    put_zero_padded(b, r % scale, decimals);
    b.extend_from_slice(suffix);
}

/// `0x…` as [`SockAddr`]'s `Display` writes it (16 hex digits).
pub(crate) fn put_sock_text(b: &mut Vec<u8>, s: SockAddr) {
    b.extend_from_slice(b"0x");
    hex16(b, s.0);
}

/// [`endpoint`] appended to `b`.
pub(crate) fn put_endpoint(b: &mut Vec<u8>, e: Endpoint) {
    if e.addr.is_ipv6() {
        b.push(b'[');
        let _ = ip(b, e.addr);
        b.push(b']');
    } else {
        let _ = ip(b, e.addr);
    }
    b.push(b':');
    put_u64(b, e.port.into());
}

/// `addr:port`, an IPv6 address in brackets.
pub fn endpoint(e: Endpoint) -> String {
    let mut b = Vec::with_capacity(48);
    put_endpoint(&mut b, e);
    // Only ASCII is written.
    String::from_utf8_lossy(&b).into_owned()
}

/// `n` as 16 lowercase hex digits (put together on the stack and appended at once: one
/// capacity check instead of sixteen).
pub(crate) fn hex16(b: &mut Vec<u8>, n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, d) in out.iter_mut().enumerate() {
        *d = DIGITS[((n >> ((15 - i) * 4)) & 0xf) as usize];
    }
    b.extend_from_slice(&out);
}

// ---- Hand-written JSON pieces. Each writes what serde_json writes for the same value. ----

pub(crate) fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

pub(crate) fn put_i64(b: &mut Vec<u8>, v: i64) {
    b.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Each byte value's decimal digits (unused ones zero) and their count.
pub(crate) const OCTETS: [[u8; 4]; 256] = {
    let mut t = [[0u8; 4]; 256];
    let mut v = 0;
    while v < 256 {
        let d = [(v / 100) as u8, (v / 10 % 10) as u8, (v % 10) as u8];
        t[v] = if v >= 100 {
            [b'0' + d[0], b'0' + d[1], b'0' + d[2], 3]
        } else if v >= 10 {
            [b'0' + d[1], b'0' + d[2], 0, 2]
        } else {
            [b'0' + d[2], 0, 0, 1]
        };
        v += 1;
    }
    t
};

/// An address as its `Display` writes it; IPv4 without the formatting machinery.
pub(crate) fn ip(b: &mut Vec<u8>, a: IpAddr) -> io::Result<()> {
    match a {
        IpAddr::V4(v4) => {
            // At most 15 bytes, put together on the stack from the octets' digits
            // ([`OCTETS`]) and appended at once.
            let mut out = [0u8; 16];
            let mut n = 0;
            for o in v4.octets() {
                let [d0, d1, d2, len] = OCTETS[usize::from(o)];
                out[n..n + 4].copy_from_slice(&[d0, d1, d2, b'.']);
                n += usize::from(len);
                out[n] = b'.';
                n += 1;
            }
            b.extend_from_slice(&out[..n - 1]);
            Ok(())
        }
        IpAddr::V6(v6) => write!(b, "{v6}"),
    }
}
