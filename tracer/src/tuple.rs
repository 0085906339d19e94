//! The four-tuple: one type for a socket's two ends across decode, table, filters and views.
//! (The JSON schema keeps its flat `saddr`/`sport`/`daddr`/`dport` keys; this is only the
//! in-memory shape.)
use std::net::{IpAddr, Ipv4Addr};

/// One end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub port: u16,
}

impl Endpoint {
    pub const fn new(addr: IpAddr, port: u16) -> Self {
        Self { addr, port }
    }

    /// `0.0.0.0:0`: nothing known yet.
    pub const UNSPECIFIED: Self = Self::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
}

/// A socket's local and remote ends, as the kernel reports them (`saddr`/`sport` are the
/// local side, `daddr`/`dport` the remote).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    pub local: Endpoint,
    pub remote: Endpoint,
}

impl Tuple {
    pub const fn new(saddr: IpAddr, sport: u16, daddr: IpAddr, dport: u16) -> Self {
        Self {
            local: Endpoint::new(saddr, sport),
            remote: Endpoint::new(daddr, dport),
        }
    }

    /// Both ports known: a tuple that names one connection (a client's local port is still 0
    /// at `CLOSE -> SYN_SENT`).
    pub const fn is_complete(&self) -> bool {
        self.local.port != 0 && self.remote.port != 0
    }

    /// The same connection as the other end sees it.
    pub const fn reversed(&self) -> Self {
        Self {
            local: self.remote,
            remote: self.local,
        }
    }
}

/// A four-tuple within one network namespace: what names a connection on a host with
/// containers, where every namespace may have its own `10.0.0.2:8080`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NsTuple {
    /// Inode of the network namespace; 0 when unknown (a recording made before tracer read
    /// it, or a kernel without BTF).
    pub netns: u32,
    pub tuple: Tuple,
}

impl NsTuple {
    pub const fn new(netns: u32, tuple: Tuple) -> Self {
        Self { netns, tuple }
    }
}
