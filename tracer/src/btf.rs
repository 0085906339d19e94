//! Struct member offsets from the kernel's BTF (`/sys/kernel/btf/vmlinux`), for the few
//! fields the eBPF programs read through a pointer: a socket's network namespace, and the
//! way from the current task to the socket it just accepted.
//!
//! Why a small reader here: aya-obj parses BTF but keeps member offsets private, and the
//! maintained BTF crate (btf-rs) is LGPL, which does not suit this MIT/Apache project. Only
//! what is needed is implemented: walk the type section, find a struct or union by name, and a
//! member's byte offset (through anonymous nested members).
use std::collections::HashMap;

use anyhow::{Context as _, bail};

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Debug)]
struct Member {
    name: String,
    type_id: u32,
    /// Bits from the start of the struct.
    bit_offset: u32,
}

#[derive(Clone, Debug)]
struct Type {
    kind: u32,
    name: String,
    /// Referenced type for typedef/const/volatile/…
    type_id: u32,
    members: Vec<Member>,
}

/// The parsed type section: enough to answer "offset of `member` in `struct name`".
pub struct Btf {
    /// Index = type id (0 is void).
    types: Vec<Type>,
    by_name: HashMap<String, Vec<u32>>,
}

fn u16_at(b: &[u8], at: usize) -> anyhow::Result<u16> {
    let s = b.get(at..at + 2).context("BTF truncated")?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> anyhow::Result<u32> {
    let s = b.get(at..at + 4).context("BTF truncated")?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl Btf {
    pub fn from_sys_fs() -> anyhow::Result<Self> {
        let path = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(path).with_context(|| {
            format!("reading {path}: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF), which the netns filter needs")
        })?;
        Self::parse(&data).with_context(|| format!("parsing {path}"))
    }

    /// Parses raw little-endian BTF.
    pub fn parse(b: &[u8]) -> anyhow::Result<Self> {
        if u16_at(b, 0)? != MAGIC {
            bail!("not little-endian BTF (bad magic)");
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let type_off = hdr_len + u32_at(b, 8)? as usize;
        let type_len = u32_at(b, 12)? as usize;
        let str_off = hdr_len + u32_at(b, 16)? as usize;
        let str_len = u32_at(b, 20)? as usize;
        let strings = b
            .get(str_off..str_off + str_len)
            .context("BTF string section out of bounds")?;
        let name = |off: u32| -> String {
            let s = strings.get(off as usize..).unwrap_or_default();
            let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
            String::from_utf8_lossy(&s[..end]).into_owned()
        };
        let mut types = vec![Type {
            kind: 0,
            name: String::new(),
            type_id: 0,
            members: Vec::new(),
        }];
        let mut at = type_off;
        let end = type_off + type_len;
        while at < end {
            let name_off = u32_at(b, at)?;
            let info = u32_at(b, at + 4)?;
            let size_or_type = u32_at(b, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut t = Type {
                kind,
                name: name(name_off),
                type_id: size_or_type,
                members: Vec::new(),
            };
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => at += 4,
                KIND_ARRAY => at += 12,
                KIND_STRUCT | KIND_UNION => {
                    for _ in 0..vlen {
                        let off = u32_at(b, at + 8)?;
                        t.members.push(Member {
                            name: name(u32_at(b, at)?),
                            type_id: u32_at(b, at + 4)?,
                            bit_offset: if kind_flag { off & 0x00ff_ffff } else { off },
                        });
                        at += 12;
                    }
                }
                KIND_ENUM | KIND_FUNC_PROTO => at += 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => at += 12 * vlen,
                _ => {}
            }
            types.push(t);
        }
        let mut by_name: HashMap<String, Vec<u32>> = HashMap::new();
        for (id, t) in types.iter().enumerate() {
            if matches!(t.kind, KIND_STRUCT | KIND_UNION) && !t.name.is_empty() {
                by_name.entry(t.name.clone()).or_default().push(id as u32);
            }
        }
        Ok(Self { types, by_name })
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize).map(|t| t.kind) {
                Some(KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG) => {
                    id = self.types[id as usize].type_id;
                }
                _ => break,
            }
        }
        id
    }

    /// Bit offset and type of `member` within type `id`, looking inside anonymous members.
    fn find(&self, id: u32, member: &str, depth: u32) -> Option<(u32, u32)> {
        let t = self.types.get(self.resolve(id) as usize)?;
        if depth > 8 || !matches!(t.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        if let Some(m) = t.members.iter().find(|m| m.name == member) {
            return Some((m.bit_offset, m.type_id));
        }
        t.members
            .iter()
            .filter(|m| m.name.is_empty())
            .find_map(|m| {
                self.find(m.type_id, member, depth + 1)
                    .map(|(o, ty)| (o + m.bit_offset, ty))
            })
    }

    /// Byte offset of `member` in `struct`/`union` `name`.
    pub fn member_offset(&self, name: &str, member: &str) -> anyhow::Result<u32> {
        self.path_offset(name, &[member])
    }

    /// Byte offset of a nested member, `name.path[0].path[1]…` (each step inside the type of
    /// the previous member, so typedefs of anonymous structs work).
    pub fn path_offset(&self, name: &str, path: &[&str]) -> anyhow::Result<u32> {
        let ids = self
            .by_name
            .get(name)
            .with_context(|| format!("no struct `{name}` in the kernel's BTF"))?;
        let walk = |start: u32| -> Option<u32> {
            let (mut bits, mut ty) = (0u32, start);
            for m in path {
                let (o, t) = self.find(ty, m, 0)?;
                bits += o;
                ty = t;
            }
            Some(bits)
        };
        let bits = ids.iter().find_map(|&id| walk(id)).with_context(|| {
            format!(
                "struct `{name}` has no member `{}` in the kernel's BTF",
                path.join(".")
            )
        })?;
        if bits % 8 != 0 {
            bail!("`{name}.{}` is a bitfield", path.join("."));
        }
        Ok(bits / 8)
    }
}

/// Where a socket's network namespace inode is: `*(sk + skc_net)` is the `struct net *`, and
/// the inode is the u32 at `net + net_inum`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetnsOffsets {
    pub skc_net: u32,
    pub net_inum: u32,
}

pub fn netns_offsets(btf: &Btf) -> anyhow::Result<NetnsOffsets> {
    // sk->__sk_common.skc_net is a `possible_net_t`, a typedef of an anonymous struct
    // holding `struct net *net`.
    let skc_net = btf.path_offset("sock", &["__sk_common", "skc_net", "net"])?;
    let net_inum = btf.path_offset("net", &["ns", "inum"])?;
    Ok(NetnsOffsets { skc_net, net_inum })
}

/// A socket's identity fields (see [`tracer_common::SockOffsets`]), `enabled` set, and
/// `head` when `__sk_common` is laid out as [`tracer_common::SockHead`] (one copy). `Err`
/// names the first member this kernel does not have (or has as a bitfield, e.g.
/// `sk_protocol` before 5.6).
pub fn sock_offsets(btf: &Btf) -> anyhow::Result<tracer_common::SockOffsets> {
    let sk = |m: &str| btf.path_offset("sock", &["__sk_common", m]);
    let netns = netns_offsets(btf)?;
    let mut o = tracer_common::SockOffsets {
        skc_daddr: sk("skc_daddr")?,
        skc_rcv_saddr: sk("skc_rcv_saddr")?,
        skc_dport: sk("skc_dport")?,
        skc_num: sk("skc_num")?,
        skc_family: sk("skc_family")?,
        skc_state: sk("skc_state")?,
        skc_net: netns.skc_net,
        skc_v6_daddr: sk("skc_v6_daddr")?,
        skc_v6_rcv_saddr: sk("skc_v6_rcv_saddr")?,
        net_inum: netns.net_inum,
        sk_protocol: btf.member_offset("sock", "sk_protocol")?,
        sk_err: btf.member_offset("sock", "sk_err")?,
        inet_sport: btf.member_offset("inet_sock", "inet_sport")?,
        _pad: 0,
        head: 0,
        enabled: 1,
    };
    o.head = u32::from(o.matches_head());
    Ok(o)
}

/// The path from the current task to an accepted socket and the socket fields the accept
/// program reads (see [`tracer_common::AcceptOffsets`]), `enabled` set. `Err` names the first
/// member this kernel does not have.
pub fn accept_offsets(btf: &Btf) -> anyhow::Result<tracer_common::AcceptOffsets> {
    let fdt_max_fds = btf.member_offset("fdtable", "max_fds")?;
    let fdt_fd = btf.member_offset("fdtable", "fd")?;
    Ok(tracer_common::AcceptOffsets {
        task_files: btf.member_offset("task_struct", "files")?,
        files_fdt: btf.member_offset("files_struct", "fdt")?,
        fdt_max_fds,
        fdt_fd,
        file_private_data: btf.member_offset("file", "private_data")?,
        socket_sk: btf.member_offset("socket", "sk")?,
        fdt_pair: u32::from(fdt_fd == fdt_max_fds + 8),
        enabled: 1,
        sock: sock_offsets(btf)?,
    })
}

/// The offsets of the `tcp_sock` counters the stats read takes (see
/// [`tracer_common::TcpStatsOffsets`]); a field this kernel lacks is 0 and named in the
/// returned list. `Err` when there is no `struct tcp_sock` at all.
pub fn tcp_stats_offsets(
    btf: &Btf,
) -> anyhow::Result<(tracer_common::TcpStatsOffsets, Vec<&'static str>)> {
    btf.member_offset("tcp_sock", "srtt_us")
        .or_else(|_| btf.member_offset("tcp_sock", "snd_cwnd"))
        .context("struct tcp_sock")?;
    let mut missing = Vec::new();
    let mut get = |m: &'static str| match btf.member_offset("tcp_sock", m) {
        Ok(o) => o,
        Err(_) => {
            missing.push(m);
            0
        }
    };
    let mut o = tracer_common::TcpStatsOffsets {
        bytes_acked: get("bytes_acked"),
        bytes_received: get("bytes_received"),
        bytes_retrans: get("bytes_retrans"),
        segs_out: get("segs_out"),
        segs_in: get("segs_in"),
        total_retrans: get("total_retrans"),
        srtt_us: get("srtt_us"),
        mdev_us: get("mdev_us"),
        min_rtt: 0,
        snd_cwnd: get("snd_cwnd"),
        rate_delivered: get("rate_delivered"),
        rate_interval_us: get("rate_interval_us"),
        mss_cache: get("mss_cache"),
        enabled: 1,
    };
    // `struct minmax rtt_min { struct minmax_sample s[3]; }`: the minimum is `s[0].v`.
    match btf
        .path_offset("tcp_sock", &["rtt_min", "s"])
        .and_then(|s| Ok(s + btf.member_offset("minmax_sample", "v")?))
    {
        Ok(off) => o.min_rtt = off,
        Err(_) => missing.push("rtt_min"),
    }
    Ok((o, missing))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BTF blob: `struct inner { int a; int inum; }`, `struct outer { int x; struct
    /// { struct inner ns; }; }` (the anonymous member at 8 bytes).
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0inner\0a\0inum\0outer\0x\0ns\0";
        let s = |name: &str| -> u32 {
            let hay = strings
                .windows(name.len() + 1)
                .position(|w| &w[..name.len()] == name.as_bytes() && w[name.len()] == 0);
            hay.unwrap() as u32
        };
        let mut types = Vec::new();
        let mut push = |v: &[u32]| {
            v.iter()
                .for_each(|x| types.extend_from_slice(&x.to_le_bytes()))
        };
        // 1: int (size 4) + int data
        push(&[s("int"), KIND_INT << 24, 4, 32]);
        // 2: struct inner, 2 members
        push(&[
            s("inner"),
            (KIND_STRUCT << 24) | 2,
            8,
            s("a"),
            1,
            0,
            s("inum"),
            1,
            32,
        ]);
        // 3: anonymous struct { struct inner ns; }
        push(&[0, (KIND_STRUCT << 24) | 1, 8, s("ns"), 2, 0]);
        // 4: struct outer { int x; <anon> at 64 bits }
        push(&[
            s("outer"),
            (KIND_STRUCT << 24) | 2,
            16,
            s("x"),
            1,
            0,
            0,
            3,
            64,
        ]);
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&[1, 0]);
        for v in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&types);
        b.extend_from_slice(strings);
        b
    }

    #[test]
    fn offsets_through_anonymous_members() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.member_offset("inner", "inum").unwrap(), 4);
        assert_eq!(btf.member_offset("outer", "ns").unwrap(), 8);
        assert_eq!(btf.path_offset("outer", &["ns", "inum"]).unwrap(), 12);
        assert!(
            btf.member_offset("outer", "nope")
                .unwrap_err()
                .to_string()
                .contains("no member `nope`")
        );
        assert!(
            btf.member_offset("missing", "x")
                .unwrap_err()
                .to_string()
                .contains("no struct `missing`")
        );
        assert!(Btf::parse(&[0u8; 24]).is_err());
    }

    /// This kernel's BTF as `bpftool btf dump file … format raw` prints it (libbpf's parser,
    /// not ours), by type id.
    struct RawDump(HashMap<u32, RawType>);

    struct RawType {
        kind: String,
        name: String,
        /// `type_id=` of a typedef or qualifier.
        target: u32,
        /// (name, type id, bit offset); `(anon)` for anonymous members.
        members: Vec<(String, u32, u32)>,
    }

    impl RawDump {
        fn load() -> Self {
            let vmlinux = "/sys/kernel/btf/vmlinux";
            assert!(
                std::path::Path::new(vmlinux).exists(),
                "{vmlinux} missing: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF), so the \
                 loader's struct offsets cannot be checked on it"
            );
            let bpftool = ["/usr/sbin/bpftool", "/sbin/bpftool", "/usr/bin/bpftool"]
                .into_iter()
                .find(|p| std::path::Path::new(p).exists())
                .expect("bpftool not found: install Debian's `bpftool` (`cargo xtask test` does)");
            let out = std::process::Command::new(bpftool)
                .args(["btf", "dump", "file", vmlinux, "format", "raw"])
                .output()
                .expect("running bpftool");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            let field = |l: &str, key: &str| -> Option<u32> {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(key)?.parse().ok())
            };
            let quoted = |l: &str| l.split('\'').nth(1).unwrap_or("").to_string();
            let mut types = HashMap::new();
            let mut current: Option<u32> = None;
            for l in text.lines() {
                if let Some(rest) = l.strip_prefix('[') {
                    let (id, rest) = rest.split_once("] ").unwrap();
                    let id: u32 = id.parse().unwrap();
                    let kind = rest.split_whitespace().next().unwrap().to_string();
                    types.insert(
                        id,
                        RawType {
                            kind,
                            name: quoted(rest),
                            target: field(rest, "type_id=").unwrap_or(0),
                            members: Vec::new(),
                        },
                    );
                    current = Some(id);
                } else if let (Some(id), Some(m)) = (current, l.strip_prefix('\t')) {
                    let (Some(ty), Some(bits)) = (field(m, "type_id="), field(m, "bits_offset="))
                    else {
                        continue; // enum values, function parameters
                    };
                    types
                        .get_mut(&id)
                        .unwrap()
                        .members
                        .push((quoted(m), ty, bits));
                }
            }
            Self(types)
        }

        /// Bit offset of `path` inside type `id` (through typedefs, qualifiers and anonymous
        /// members), and the member's type.
        fn walk(&self, mut id: u32, path: &[&str]) -> Option<(u32, u32)> {
            let mut bits = 0;
            for m in path {
                let (o, t) = self.member(id, m)?;
                bits += o;
                id = t;
            }
            Some((bits, id))
        }

        fn member(&self, id: u32, name: &str) -> Option<(u32, u32)> {
            let t = self.0.get(&id)?;
            match t.kind.as_str() {
                "TYPEDEF" | "CONST" | "VOLATILE" | "RESTRICT" | "TYPE_TAG" => {
                    self.member(t.target, name)
                }
                "STRUCT" | "UNION" => {
                    t.members
                        .iter()
                        .find(|(n, _, _)| n == name)
                        .map(|&(_, t, o)| (o, t))
                        .or_else(|| {
                            t.members.iter().filter(|(n, _, _)| n == "(anon)").find_map(
                                |&(_, t, o)| self.member(t, name).map(|(o2, t2)| (o + o2, t2)),
                            )
                        })
                }
                _ => None,
            }
        }

        /// Byte offset of `strukt.path…`, from the first struct of that name that has it.
        fn offset(&self, strukt: &str, path: &[&str]) -> u32 {
            let bits = self
                .0
                .iter()
                .filter(|(_, t)| t.kind == "STRUCT" && t.name == strukt)
                .find_map(|(&id, _)| self.walk(id, path).map(|(b, _)| b))
                .unwrap_or_else(|| panic!("bpftool: no {strukt}.{}", path.join(".")));
            assert_eq!(bits % 8, 0, "{strukt}.{} is a bitfield", path.join("."));
            bits / 8
        }
    }

    #[test]
    fn this_kernels_offsets_match_bpftool() {
        // Every offset the loader takes from the running kernel's BTF, against bpftool's
        // reading of the same BTF. Fails (does not skip) where either is missing.
        let btf = Btf::from_sys_fs().expect("reading /sys/kernel/btf/vmlinux");
        let raw = RawDump::load();
        let n = netns_offsets(&btf).unwrap();
        assert_eq!(
            (n.skc_net, n.net_inum),
            (
                raw.offset("sock", &["__sk_common", "skc_net", "net"]),
                raw.offset("net", &["ns", "inum"])
            ),
            "netns offsets (sock.__sk_common.skc_net.net, net.ns.inum)"
        );
        let a = accept_offsets(&btf).unwrap();
        let sk = |m: &str| raw.offset("sock", &["__sk_common", m]);
        let want = [
            (
                "task_files",
                a.task_files,
                raw.offset("task_struct", &["files"]),
            ),
            (
                "files_fdt",
                a.files_fdt,
                raw.offset("files_struct", &["fdt"]),
            ),
            (
                "fdt_max_fds",
                a.fdt_max_fds,
                raw.offset("fdtable", &["max_fds"]),
            ),
            ("fdt_fd", a.fdt_fd, raw.offset("fdtable", &["fd"])),
            (
                "file_private_data",
                a.file_private_data,
                raw.offset("file", &["private_data"]),
            ),
            ("socket_sk", a.socket_sk, raw.offset("socket", &["sk"])),
        ];
        for (field, ours, theirs) in want {
            assert_eq!(ours, theirs, "AcceptOffsets.{field}: ours vs bpftool");
        }
        assert_eq!((a.enabled, a.fdt_pair), (1, 1));
        // Every field of AcceptOffsets is compared (6 offsets above, `fdt_pair`, `enabled`,
        // the SockOffsets below).
        assert_eq!(
            std::mem::size_of::<tracer_common::AcceptOffsets>(),
            (want.len() + 2) * 4 + std::mem::size_of::<tracer_common::SockOffsets>()
        );
        let o = a.sock;
        let want = [
            ("skc_daddr", o.skc_daddr, sk("skc_daddr")),
            ("skc_rcv_saddr", o.skc_rcv_saddr, sk("skc_rcv_saddr")),
            ("skc_dport", o.skc_dport, sk("skc_dport")),
            ("skc_num", o.skc_num, sk("skc_num")),
            ("skc_family", o.skc_family, sk("skc_family")),
            ("skc_state", o.skc_state, sk("skc_state")),
            (
                "skc_net",
                o.skc_net,
                raw.offset("sock", &["__sk_common", "skc_net", "net"]),
            ),
            ("skc_v6_daddr", o.skc_v6_daddr, sk("skc_v6_daddr")),
            (
                "skc_v6_rcv_saddr",
                o.skc_v6_rcv_saddr,
                sk("skc_v6_rcv_saddr"),
            ),
            ("net_inum", o.net_inum, raw.offset("net", &["ns", "inum"])),
            (
                "sk_protocol",
                o.sk_protocol,
                raw.offset("sock", &["sk_protocol"]),
            ),
            ("sk_err", o.sk_err, raw.offset("sock", &["sk_err"])),
            (
                "inet_sport",
                o.inet_sport,
                raw.offset("inet_sock", &["inet_sport"]),
            ),
        ];
        for (field, ours, theirs) in want {
            assert_eq!(ours, theirs, "SockOffsets.{field}: ours vs bpftool");
        }
        // Every field of SockOffsets is compared (13 offsets; `_pad`, `head`, `enabled`).
        assert_eq!(
            std::mem::size_of::<tracer_common::SockOffsets>(),
            (want.len() + 3) * 4
        );
        // struct sock_common's head, stable for years: the address pair, the port pair, the
        // family, the state, the namespace, the IPv6 addresses: one copy.
        assert_eq!((o.head, o.enabled), (1, 1), "{o:?}");
    }

    #[test]
    fn this_kernels_tcp_stats_offsets_match_bpftool() {
        // Every `tcp_sock` counter offset the loader takes from the running kernel's BTF,
        // against bpftool's reading of the same BTF. Fails (does not skip) without either.
        let btf = Btf::from_sys_fs().expect("reading /sys/kernel/btf/vmlinux");
        let raw = RawDump::load();
        let (o, missing) = tcp_stats_offsets(&btf).unwrap();
        // This kernel (6.18) has every counter; an older one may lack some (then reported).
        assert!(
            missing.is_empty(),
            "counters missing from tcp_sock: {missing:?}"
        );
        let tp = |m: &str| raw.offset("tcp_sock", &[m]);
        let want = [
            ("bytes_acked", o.bytes_acked, tp("bytes_acked")),
            ("bytes_received", o.bytes_received, tp("bytes_received")),
            ("bytes_retrans", o.bytes_retrans, tp("bytes_retrans")),
            ("segs_out", o.segs_out, tp("segs_out")),
            ("segs_in", o.segs_in, tp("segs_in")),
            ("total_retrans", o.total_retrans, tp("total_retrans")),
            ("srtt_us", o.srtt_us, tp("srtt_us")),
            ("mdev_us", o.mdev_us, tp("mdev_us")),
            // `rtt_min.s[0].v`: the array starts at `s`, its first sample's value at `v`.
            (
                "min_rtt",
                o.min_rtt,
                raw.offset("tcp_sock", &["rtt_min", "s"]) + raw.offset("minmax_sample", &["v"]),
            ),
            ("snd_cwnd", o.snd_cwnd, tp("snd_cwnd")),
            ("rate_delivered", o.rate_delivered, tp("rate_delivered")),
            (
                "rate_interval_us",
                o.rate_interval_us,
                tp("rate_interval_us"),
            ),
            ("mss_cache", o.mss_cache, tp("mss_cache")),
        ];
        for (field, ours, theirs) in want {
            assert_eq!(ours, theirs, "TcpStatsOffsets.{field}: ours vs bpftool");
        }
        assert_eq!(o.enabled, 1);
        // Every field of TcpStatsOffsets is compared above (13 u32 offsets and `enabled`).
        assert_eq!(
            std::mem::size_of::<tracer_common::TcpStatsOffsets>(),
            (want.len() + 1) * 4
        );
        // The pairs the kernel side reads in one go when adjacent: they are, here.
        assert_eq!(o.snd_cwnd, o.mss_cache + 4, "{o:?}");
        assert_eq!(o.rate_interval_us, o.rate_delivered + 4, "{o:?}");
        // And the close reads them all in two copies of the tcp_sock, not field by field.
        let spans = crate::source::stats_spans::plan(&o);
        assert!(spans.len.iter().all(|&l| l != 0), "{spans:?}");
    }
}
