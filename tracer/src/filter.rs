//! What the user asked to see. The port, address and family filters run in the kernel (so
//! filtered-out events never reach the ring buffer); this is their user-space mirror, used
//! for sockets that do not come through the kernel program (the start-up sock_diag dump) and
//! to fill the kernel maps. `--state` is a connection-level filter and can only be applied
//! here.
use std::{fmt, net::IpAddr, str::FromStr};

use crate::{
    cgroup::{self, Names},
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
    /// Container id prefixes (lower-case hex): in user space, from the owner's cgroup path.
    pub containers: Vec<String>,
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
    /// Its cgroup path, relative to the cgroup2 root: `/system.slice/x.service`.
    pub path: String,
    pub id: u64,
}

impl CgroupId {
    /// `--cgroup PATH` on a host whose cgroup2 is mounted at `mount` (none: an error that
    /// says so). PATH is a directory under the mount (`/sys/fs/cgroup/unified/x.slice` on a
    /// hybrid host), or a cgroup path relative to the cgroup2 root, with or without its
    /// leading `/` (`system.slice/x.service`, `/system.slice/x.service`, as the `0::` line
    /// of /proc/PID/cgroup shows it).
    pub fn parse(s: &str, mount: Option<&cgroup::Mount>) -> Result<Self, String> {
        use std::{os::unix::fs::MetadataExt as _, path::Path};
        let Some(m) = mount else {
            return Err(format!(
                "cgroup `{s}`: {}, and cgroup v2 ids are what the kernel reports for owners: there is nothing to filter on",
                cgroup::NOT_MOUNTED
            ));
        };
        let here = m.point.display();
        let given = Path::new(s);
        let (dir, path) = match given.strip_prefix(&m.point) {
            Ok(rel) if given.is_absolute() => {
                let rel = rel
                    .to_str()
                    .ok_or_else(|| format!("cgroup `{s}`: not UTF-8"))?;
                let rel = rel.trim_matches('/');
                let rel = if rel.is_empty() {
                    String::new()
                } else {
                    format!("/{rel}")
                };
                (given.to_path_buf(), m.cgroup_path(&rel))
            }
            _ => {
                let path = format!("/{}", s.trim_matches('/'));
                let dir = m.dir(&path).ok_or_else(|| {
                    format!("cgroup `{s}`: not in the cgroup2 hierarchy mounted at {here}")
                })?;
                (dir, path)
            }
        };
        let meta = match std::fs::metadata(&dir) {
            Ok(meta) => meta,
            Err(e) if given.is_absolute() && given.is_dir() => {
                return Err(format!(
                    "cgroup `{s}`: a directory, but not of cgroup2, which is mounted at {here} on this host ({} {e}); give the path under {here}, or relative to it as the `0::` line of /proc/PID/cgroup shows it (`system.slice/x.service`)",
                    dir.display()
                ));
            }
            Err(e) => {
                return Err(format!(
                    "cgroup `{s}`: {}: {e} (cgroup2 is mounted at {here})",
                    dir.display()
                ));
            }
        };
        if !cgroup::is_cgroup2_dir(&dir) {
            return Err(format!(
                "cgroup `{s}`: {} is not a cgroup v2 directory (cgroup2 is mounted at {here})",
                dir.display()
            ));
        }
        Ok(Self {
            path,
            id: meta.ino(),
        })
    }
}

impl FromStr for CgroupId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s, cgroup::mount())
    }
}

/// `--container ID_PREFIX`: lower-case hex, at least [`MIN_CONTAINER_PREFIX`] digits; a
/// Kubernetes `containerID` (`containerd://<id>`, `docker://<id>`, `cri-o://<id>`) is taken
/// as its id.
pub fn parse_container(s: &str) -> Result<String, String> {
    let id = s
        .split_once("://")
        .map_or(s, |(_, id)| id)
        .to_ascii_lowercase();
    if id.len() < MIN_CONTAINER_PREFIX || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "`{s}` is not a container id prefix: give at least {MIN_CONTAINER_PREFIX} hex digits of the id (`docker ps` shows 12, `crictl ps` 13)"
        ));
    }
    Ok(id)
}

/// Shortest `--container` prefix accepted.
pub const MIN_CONTAINER_PREFIX: usize = 4;

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
        if !self.containers.is_empty() {
            parts.push(format!(
                "owner container {} (in user space)",
                self.containers.join(",")
            ));
        }
        parts.join(", ")
    }

    /// The owner filters the kernel program applies too.
    pub fn has_kernel_owner_filter(&self) -> bool {
        !self.pids.is_empty() || !self.comms.is_empty() || !self.cgroups.is_empty()
    }

    pub fn has_owner_filter(&self) -> bool {
        self.has_kernel_owner_filter() || !self.containers.is_empty()
    }

    /// The owner filters the kernel applies too (`--pid`, `--comm`, `--cgroup`), all of those
    /// given. A socket whose owner is not known (yet) is not shown while they are on.
    pub fn matches_kernel_owner(&self, owner: Option<&Owner>) -> bool {
        if !self.has_kernel_owner_filter() {
            return true;
        }
        let Some(o) = owner else { return false };
        (self.pids.is_empty() || self.pids.contains(&o.pid))
            && (self.comms.is_empty() || self.comms.iter().any(|c| comm_key(c) == o.comm.0))
            && (self.cgroups.is_empty() || self.cgroups.iter().any(|c| c.id == o.cgroup_id))
    }

    /// `--container`, which only user space can apply (the kernel knows cgroup ids, not
    /// container ids): the owner's container id, from its cgroup path as `names` knows it,
    /// starts with one of the prefixes. An owner not known, or whose cgroup is not known
    /// (yet), or not a container's, does not match.
    pub fn matches_container(&self, owner: Option<&Owner>, names: &Names) -> bool {
        if self.containers.is_empty() {
            return true;
        }
        let Some(ident) = owner.and_then(|o| names.get(o.cgroup_id)) else {
            return false;
        };
        ident
            .container_id
            .as_deref()
            .is_some_and(|id| self.containers.iter().any(|p| id.starts_with(p.as_str())))
    }

    /// Every owner filter given: [`Self::matches_kernel_owner`] and
    /// [`Self::matches_container`].
    pub fn matches_owner(&self, owner: Option<&Owner>, names: &Names) -> bool {
        self.matches_kernel_owner(owner) && self.matches_container(owner, names)
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
        let names = Names::new();
        assert!(Filter::default().matches_owner(None, &names));
        let f = Filter {
            pids: vec![7, 8],
            ..Default::default()
        };
        assert!(f.matches_owner(Some(&o), &names) && !f.matches_owner(None, &names));
        let f = Filter {
            comms: vec!["nginx".into()],
            pids: vec![8],
            ..Default::default()
        };
        assert!(
            !f.matches_owner(Some(&o), &names),
            "all given filters must match"
        );
        let f = Filter {
            cgroups: vec![CgroupId {
                path: "x".into(),
                id: 99,
            }],
            ..Default::default()
        };
        assert!(f.matches_owner(Some(&o), &names));
        assert_eq!(comm_key("a-very-long-command-name")[15], 0);
    }

    #[test]
    fn container_filter_in_user_space() {
        use crate::{decode::Comm, table::OwnerSource};
        let id = "3f2a9c1b7d0e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c";
        let owner = |cgroup_id| Owner {
            pid: 7,
            comm: Comm(comm_key("nginx")),
            uid: 0,
            cgroup_id,
            source: OwnerSource::Event,
        };
        let names = Names::new();
        names.learn(5, Some(format!("/system.slice/docker-{id}.scope")));
        names.learn(6, Some("/system.slice/nginx.service".into()));
        let f = Filter {
            containers: vec!["0000".into(), "3f2a9c".into()],
            ..Default::default()
        };
        assert!(f.has_owner_filter() && !f.has_kernel_owner_filter());
        assert!(f.matches_owner(Some(&owner(5)), &names));
        assert!(!f.matches_owner(Some(&owner(6)), &names), "not a container");
        assert!(
            !f.matches_owner(Some(&owner(8)), &names),
            "cgroup not known"
        );
        assert!(!f.matches_owner(None, &names));
        assert!(
            f.matches_kernel_owner(None),
            "nothing for the kernel to check"
        );
        let f = Filter {
            containers: vec!["3f2a".into()],
            pids: vec![8],
            ..Default::default()
        };
        assert!(
            !f.matches_owner(Some(&owner(5)), &names),
            "combined: all must hold"
        );
        assert!(
            f.describe()
                .contains("owner container 3f2a (in user space)")
        );
        assert_eq!(parse_container("3F2A9C").unwrap(), "3f2a9c");
        assert_eq!(parse_container(&format!("containerd://{id}")).unwrap(), id);
        assert!(
            parse_container("3f2")
                .unwrap_err()
                .contains("at least 4 hex digits")
        );
        assert!(parse_container("nginx").is_err());
    }

    #[test]
    fn cgroup_paths_are_found_under_the_real_cgroup2_mount() {
        let none = CgroupId::parse("system.slice", None).unwrap_err();
        assert!(none.contains("no cgroup2 file system is mounted"), "{none}");
        let Some(m) = cgroup::mount() else {
            return; // a host without cgroup2: nothing more to check
        };
        let root = CgroupId::parse("/", Some(m)).unwrap();
        assert_eq!(root.path, "/");
        let abs = CgroupId::parse(m.point.to_str().unwrap(), Some(m)).unwrap();
        assert_eq!(abs, root, "the mount point is the root cgroup");
        let err = CgroupId::parse("no/such/cgroup", Some(m)).unwrap_err();
        assert!(
            err.contains("no/such/cgroup") && err.contains(&*m.point.to_string_lossy()),
            "{err}"
        );
        let err = CgroupId::parse("/proc", Some(m)).unwrap_err();
        assert!(err.contains("not of cgroup2"), "{err}");
        // A sample mount: relative and absolute forms give the same path.
        let sample = cgroup::Mount {
            point: m.point.clone(),
            root: "/".into(),
        };
        let a = CgroupId::parse("", Some(&sample)).unwrap();
        assert_eq!(a.path, "/");
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
