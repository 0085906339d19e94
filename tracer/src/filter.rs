//! What the user asked to see. The port, address and family filters run in the kernel (so
//! filtered-out events never reach the ring buffer); this is their user-space mirror, used
//! for sockets that do not come through the kernel program (the start-up sock_diag dump) and
//! to fill the kernel maps. `--state` is a connection-level filter and can only be applied
//! here.
use std::{fmt, net::IpAddr, str::FromStr};

use crate::{
    decode::{Family, TcpState},
    table::Owner,
    tuple::Tuple,
};

/// Bit in the `PORTS` map value: the port may match the socket's local port.
pub const PORT_LOCAL: u8 = 1;
/// Bit in the `PORTS` map value: the port may match the remote port.
pub const PORT_REMOTE: u8 = 2;

/// An address prefix, `10.0.0.0/8`, `fd00::/8`, or a single address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{a}` is not an IPv4 or IPv6 address (in `{s}`)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(|| {
                format!("`{p}` is not a prefix length from 0 to {max} (in `{s}`)")
            })?,
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    /// The key in the kernel's LPM trie: 16 bytes, IPv4 as `::ffff:a.b.c.d` (so one trie
    /// serves both families), with the prefix length over those 128 bits.
    pub fn lpm_key(&self) -> (u32, [u8; 16]) {
        match self.addr {
            IpAddr::V4(a) => (96 + u32::from(self.prefix), a.to_ipv6_mapped().octets()),
            IpAddr::V6(a) => (u32::from(self.prefix), a.octets()),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (plen, key) = self.lpm_key();
        let bits = match ip {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
        let (k, b) = (u128::from_be_bytes(key), u128::from_be_bytes(bits));
        let mask = if plen == 0 {
            0
        } else {
            u128::MAX << (128 - plen)
        };
        k & mask == b & mask
    }
}

/// The user's filters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Either side.
    pub ports: Vec<u16>,
    pub lports: Vec<u16>,
    pub rports: Vec<u16>,
    pub family: Option<Family>,
    /// Either side's address in one of these.
    pub cidrs: Vec<Cidr>,
    /// Connections that pass through one of these states.
    pub states: Vec<TcpState>,
    /// Owner filters: process ids, command names, cgroup v2 ids.
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub cgroups: Vec<CgroupId>,
    /// Network namespace inodes (the socket's namespace).
    pub netns: Vec<u32>,
}

/// The inode of a network namespace file (`/run/netns/NAME`, `/proc/PID/ns/net`).
pub fn netns_inode(path: &str) -> Result<u32, String> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).map_err(|e| format!("network namespace `{path}`: {e}"))?;
    u32::try_from(m.ino())
        .map_err(|_| format!("network namespace `{path}`: inode {} out of range", m.ino()))
}

/// A cgroup v2 directory and its id (the directory's inode, what the kernel reports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupId {
    pub path: String,
    pub id: u64,
}

/// Where cgroup v2 is mounted.
pub const CGROUP2_ROOT: &str = "/sys/fs/cgroup";

impl FromStr for CgroupId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        use std::os::unix::fs::MetadataExt as _;
        // `/sys/fs/cgroup/system.slice/x.service`, or relative to it: `system.slice/x.service`.
        let path = if s.starts_with(CGROUP2_ROOT) {
            s.to_string()
        } else {
            format!("{CGROUP2_ROOT}/{}", s.trim_start_matches('/'))
        };
        let meta = std::fs::metadata(&path).map_err(|e| format!("cgroup `{s}`: {path}: {e}"))?;
        if !meta.is_dir() {
            return Err(format!("cgroup `{s}`: {path} is not a cgroup directory"));
        }
        Ok(Self {
            path,
            id: meta.ino(),
        })
    }
}

/// A `comm` as the kernel stores it: at most 15 bytes, NUL-padded to 16.
pub fn comm_key(comm: &str) -> [u8; 16] {
    let mut k = [0u8; 16];
    let b = comm.as_bytes();
    let n = b.len().min(15);
    k[..n].copy_from_slice(&b[..n]);
    k
}

impl Filter {
    /// Entries for the kernel's `PORTS` map: port → [`PORT_LOCAL`] | [`PORT_REMOTE`].
    pub fn port_flags(&self) -> Vec<(u16, u8)> {
        let mut m = std::collections::BTreeMap::new();
        for &p in &self.ports {
            *m.entry(p).or_insert(0) |= PORT_LOCAL | PORT_REMOTE;
        }
        for &p in &self.lports {
            *m.entry(p).or_insert(0) |= PORT_LOCAL;
        }
        for &p in &self.rports {
            *m.entry(p).or_insert(0) |= PORT_REMOTE;
        }
        m.into_iter().collect()
    }

    /// What the kernel program lets through, for a socket's tuple.
    pub fn matches_tuple(&self, family: Family, t: &Tuple) -> bool {
        let (saddr, sport, daddr, dport) =
            (t.local.addr, t.local.port, t.remote.addr, t.remote.port);
        if self.family.is_some_and(|f| f != family) {
            return false;
        }
        let port_filter =
            !(self.ports.is_empty() && self.lports.is_empty() && self.rports.is_empty());
        // The same rule as the PORTS map bits: local port with PORT_LOCAL, remote with PORT_REMOTE.
        let local = self.ports.contains(&sport) || self.lports.contains(&sport);
        let remote = self.ports.contains(&dport) || self.rports.contains(&dport);
        if port_filter && !local && !remote {
            return false;
        }
        self.cidrs.is_empty()
            || self
                .cidrs
                .iter()
                .any(|c| c.contains(saddr) || c.contains(daddr))
    }

    /// The filters in a few words, for the start-up line; empty when there are none.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let list = |v: &[u16]| v.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        if !self.ports.is_empty() {
            parts.push(format!("ports {}", list(&self.ports)));
        }
        if !self.lports.is_empty() {
            parts.push(format!("local ports {}", list(&self.lports)));
        }
        if !self.rports.is_empty() {
            parts.push(format!("remote ports {}", list(&self.rports)));
        }
        if !self.cidrs.is_empty() {
            let c: Vec<String> = self.cidrs.iter().map(Cidr::to_string).collect();
            parts.push(format!("addresses {}", c.join(",")));
        }
        match self.family {
            Some(Family::Ipv4) => parts.push("IPv4 only".into()),
            Some(Family::Ipv6) => parts.push("IPv6 only".into()),
            None => {}
        }
        if !self.states.is_empty() {
            let s: Vec<&str> = self.states.iter().map(|s| s.name()).collect();
            parts.push(format!("connections through {}", s.join(",")));
        }
        if !self.pids.is_empty() {
            parts.push(format!(
                "owner pid {}",
                self.pids
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
        if !self.comms.is_empty() {
            parts.push(format!("owner comm {}", self.comms.join(",")));
        }
        if !self.netns.is_empty() {
            let n: Vec<String> = self.netns.iter().map(u32::to_string).collect();
            parts.push(format!("netns {}", n.join(",")));
        }
        if !self.cgroups.is_empty() {
            parts.push(format!(
                "owner cgroup {}",
                self.cgroups
                    .iter()
                    .map(|c| c.path.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
        parts.join(", ")
    }

    pub fn has_owner_filter(&self) -> bool {
        !self.pids.is_empty() || !self.comms.is_empty() || !self.cgroups.is_empty()
    }

    /// The owner filters (`--pid`, `--comm`, `--cgroup`), all of those given. A socket whose
    /// owner is not known (yet) is not shown while owner filters are on.
    pub fn matches_owner(&self, owner: Option<&Owner>) -> bool {
        if !self.has_owner_filter() {
            return true;
        }
        let Some(o) = owner else { return false };
        (self.pids.is_empty() || self.pids.contains(&o.pid))
            && (self.comms.is_empty() || self.comms.iter().any(|c| comm_key(c) == o.comm.0))
            && (self.cgroups.is_empty() || self.cgroups.iter().any(|c| c.id == o.cgroup_id))
    }

    /// Whether a connection with these states so far is shown (`--state`).
    pub fn matches_states(&self, states: &[TcpState]) -> bool {
        self.states.is_empty() || states.iter().any(|s| self.states.contains(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_and_match_both_families() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains(ip("10.1.200.3")) && !c.contains(ip("10.2.0.1")));
        assert!(
            c.contains(ip("::ffff:10.1.0.9")),
            "a v4-mapped address on a dual-stack socket"
        );
        assert_eq!(
            c.lpm_key(),
            (
                112,
                ip("::ffff:10.1.0.0")
                    .to_string()
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets()
            )
        );
        let h: Cidr = "::1".parse().unwrap();
        assert_eq!(h.prefix, 128);
        assert!(h.contains(ip("::1")) && !h.contains(ip("127.0.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("1.2.3.4")) && !all.contains(ip("fd00::1")));
        assert!("10.0.0.0/33".parse::<Cidr>().unwrap_err().contains("`33`"));
        assert!("nope/8".parse::<Cidr>().unwrap_err().contains("`nope`"));
        assert_eq!("fd00::/8".parse::<Cidr>().unwrap().to_string(), "fd00::/8");
    }

    #[test]
    fn ports_local_remote_and_either() {
        let f = Filter {
            ports: vec![80],
            lports: vec![8080],
            rports: vec![443, 80],
            ..Default::default()
        };
        assert_eq!(f.port_flags(), [(80, 3), (443, 2), (8080, 1)]);
        let lo = ip("127.0.0.1");
        assert!(f.matches_tuple(Family::Ipv4, &Tuple::new(lo, 8080, lo, 1)));
        assert!(
            !f.matches_tuple(Family::Ipv4, &Tuple::new(lo, 1, lo, 8080)),
            "8080 only as the local port"
        );
        assert!(f.matches_tuple(Family::Ipv4, &Tuple::new(lo, 1, lo, 443)));
        assert!(
            !f.matches_tuple(Family::Ipv4, &Tuple::new(lo, 443, lo, 1)),
            "443 only as the remote port"
        );
        assert!(
            f.matches_tuple(Family::Ipv4, &Tuple::new(lo, 80, lo, 1))
                && f.matches_tuple(Family::Ipv4, &Tuple::new(lo, 1, lo, 80))
        );
        let v6 = Filter {
            family: Some(Family::Ipv6),
            ..Default::default()
        };
        assert!(!v6.matches_tuple(Family::Ipv4, &Tuple::new(lo, 1, lo, 2)));
    }

    #[test]
    fn owner_filters() {
        use crate::{decode::Comm, table::OwnerSource};
        let o = Owner {
            pid: 7,
            comm: Comm(comm_key("nginx")),
            uid: 0,
            cgroup_id: 99,
            source: OwnerSource::Event,
        };
        assert!(Filter::default().matches_owner(None));
        let f = Filter {
            pids: vec![7, 8],
            ..Default::default()
        };
        assert!(f.matches_owner(Some(&o)) && !f.matches_owner(None));
        let f = Filter {
            comms: vec!["nginx".into()],
            pids: vec![8],
            ..Default::default()
        };
        assert!(!f.matches_owner(Some(&o)), "all given filters must match");
        let f = Filter {
            cgroups: vec![CgroupId {
                path: "x".into(),
                id: 99,
            }],
            ..Default::default()
        };
        assert!(f.matches_owner(Some(&o)));
        assert_eq!(comm_key("a-very-long-command-name")[15], 0);
        assert!(
            "/sys/fs/cgroup".parse::<CgroupId>().is_ok(),
            "the root cgroup exists"
        );
        assert!(
            "no/such/cgroup"
                .parse::<CgroupId>()
                .unwrap_err()
                .contains("no/such/cgroup")
        );
    }

    #[test]
    fn states_filter_connections_that_pass_through() {
        use TcpState::*;
        let f = Filter {
            states: vec![CloseWait],
            ..Default::default()
        };
        assert!(f.matches_states(&[Established, CloseWait, LastAck]));
        assert!(!f.matches_states(&[Established, FinWait1]));
        assert!(Filter::default().matches_states(&[]));
    }
}
