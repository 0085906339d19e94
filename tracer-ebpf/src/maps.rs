//! The maps and the globals every program shares. The names are the contract with the loader
//! (`tracer_common::names`); a test in the loader checks them against the built object.
use aya_ebpf::{
    Global,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{AddrKey, Config, Counters, KOwner, NetnsOffsets, STATS_SCRATCH_SIZE, kind};

/// The loader resizes it (`--ring-buffer-size`) before loading.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

#[map]
pub(crate) static COUNTERS: PerCpuArray<Counters> =
    PerCpuArray::with_max_entries(kind::COUNT as u32, 0);

/// `--bpf-log`'s one "the log is alive" line (transition.rs): 0 until a transition logged it.
/// Touched only when the loader turned the log on; the loader never reads it.
#[map]
pub(crate) static LOGGED: Array<u32> = Array::with_max_entries(1, 0);

/// Ports of `--port`/`--lport`/`--rport`; the loader sizes it to the number of ports.
#[map]
pub(crate) static PORTS: HashMap<u16, u8> = HashMap::with_max_entries(1, 0);

/// Socket → owner, learned from process-context transitions (only with owner filters).
#[map]
pub(crate) static OWNERS: LruHashMap<u64, KOwner> = LruHashMap::with_max_entries(65536, 0);

/// Listening port → owner, for accepted sockets to inherit.
#[map]
pub(crate) static LISTEN_OWNERS: LruHashMap<u16, KOwner> = LruHashMap::with_max_entries(4096, 0);

/// (namespace inode << 16 | listening port) → the tgid that made the listener, 0 when
/// several processes did (`SO_REUSEPORT`, or one closed and another listened): an accepted
/// socket whose accepting process is that tgid already has it as owner (inherited from the
/// listener in user space), and its accept record is skipped. Only listeners whose
/// `CLOSE -> LISTEN` was submitted are in it (user space knows those).
#[map]
pub(crate) static LISTEN_TGIDS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(4096, 0);

#[map]
pub(crate) static PIDS: HashMap<u32, u8> = HashMap::with_max_entries(1, 0);
#[map]
pub(crate) static COMMS: HashMap<[u8; 16], u8> = HashMap::with_max_entries(1, 0);
#[map]
pub(crate) static CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(1, 0);

/// Address prefixes of `--addr`; the loader sizes it to the number of prefixes.
#[map]
pub(crate) static ADDRS: LpmTrie<AddrKey, u8> = LpmTrie::with_max_entries(1, 0);

#[unsafe(no_mangle)]
pub(crate) static CONFIG: Global<Config> = Global::new(Config {
    wakeup_bytes: 0,
    family: 0,
    filter_ports: 0,
    filter_addrs: 0,
    filter_owner: 0,
    filter_netns: 0,
    read_netns: 0,
    _pad: 0,
});

#[unsafe(no_mangle)]
pub(crate) static NETNS_OFFSETS: Global<NetnsOffsets> = Global::new(NetnsOffsets {
    skc_net: 0,
    net_inum: 0,
});

/// Network namespace inodes of `--netns`.
#[map]
pub(crate) static NETNS: HashMap<u32, u8> = HashMap::with_max_entries(1, 0);

/// Where the counters' spans of a closing `tcp_sock` are copied (`tracer_common::TcpStatsSpans`).
/// Only the `inet_sock_set_state` program uses it, and the kernel never nests a program with
/// itself on a CPU: one writer at a time.
#[map]
pub(crate) static STATS_SCRATCH: PerCpuArray<[u8; STATS_SCRATCH_SIZE]> =
    PerCpuArray::with_max_entries(1, 0);
