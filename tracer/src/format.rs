//! The tracepoint's record layout, read from tracefs rather than guessed.
//!
//! The fast eBPF program reads fields at compile-time offsets (`tracer_common::layout`); this
//! module parses the running kernel's `format` file and decides whether those offsets are
//! right, whether the portable program (runtime offsets) is needed, or whether the kernel
//! lacks something, in which case the error names the field.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use tracer_common::{ABSENT, CtxLayout, RuntimeLayout};

/// One `field:` line of a tracefs `format` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// C declaration without the name, e.g. `__u8` for `__u8 saddr[4]`.
    pub ty: String,
    pub name: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

/// Parses the `field:` lines of a tracefs `format` file (common header fields included).
pub fn parse(text: &str) -> anyhow::Result<Vec<Field>> {
    let mut fields = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let parse_line = || -> Option<Field> {
            let mut parts = rest.split(';').map(str::trim);
            let decl = parts.next()?;
            let mut offset = None;
            let mut size = None;
            let mut signed = false;
            for p in parts {
                if let Some(v) = p.strip_prefix("offset:") {
                    offset = v.parse().ok();
                } else if let Some(v) = p.strip_prefix("size:") {
                    size = v.parse().ok();
                } else if let Some(v) = p.strip_prefix("signed:") {
                    signed = v == "1";
                }
            }
            // `const void * skaddr`, `__u8 saddr[4]`, `__data_loc char[] name`: the name is the
            // last identifier, before any array suffix. ASCII separators only: the slicing
            // below assumes a one-byte separator.
            let decl = decl.trim();
            let base = decl.split('[').next()?.trim_end();
            let split = base.rfind(|c: char| c.is_ascii_whitespace() || c == '*')?;
            let name = base[split + 1..].to_string();
            let ty = base[..=split].trim().to_string();
            if name.is_empty() {
                return None;
            }
            Some(Field {
                ty,
                name,
                offset: offset?,
                size: size?,
                signed,
            })
        };
        match parse_line() {
            Some(f) => fields.push(f),
            None => bail!("line {}: cannot parse field description {line:?}", n + 1),
        }
    }
    if fields.is_empty() {
        bail!("no `field:` lines: not a tracefs format file");
    }
    Ok(fields)
}

/// Which program reads the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The record has the compile-time layout: direct loads.
    Fast,
    /// Another layout: the portable program, with these offsets.
    Portable(RuntimeLayout),
}

/// The layout the fast program expects.
pub const FAST: RuntimeLayout = tracer_common::FAST_LAYOUT;

/// Checks every field the program reads (name and size) and picks the program.
pub fn choose(fields: &[Field]) -> anyhow::Result<Choice> {
    let find = |name: &str, sizes: &[u32]| -> anyhow::Result<&Field> {
        let f = fields
            .iter()
            .find(|f| f.name == name)
            .with_context(|| format!("the tracepoint has no field `{name}`"))?;
        if !sizes.contains(&f.size) {
            bail!(
                "field `{name}` is {} bytes, expected {}",
                f.size,
                sizes
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(" or ")
            );
        }
        Ok(f)
    };
    let protocol = find("protocol", &[1, 2])?;
    let l = RuntimeLayout {
        skaddr: find("skaddr", &[8])?.offset,
        oldstate: find("oldstate", &[4])?.offset,
        newstate: find("newstate", &[4])?.offset,
        sport: find("sport", &[2])?.offset,
        dport: find("dport", &[2])?.offset,
        family: find("family", &[2])?.offset,
        protocol: protocol.offset,
        protocol_size: protocol.size,
        saddr: find("saddr", &[4])?.offset,
        daddr: find("daddr", &[4])?.offset,
        saddr_v6: find("saddr_v6", &[16])?.offset,
        daddr_v6: find("daddr_v6", &[16])?.offset,
    };
    Ok(if l == FAST {
        Choice::Fast
    } else {
        Choice::Portable(l)
    })
}

/// The layout of a context tracepoint (resets, retransmits, errors, destroys). Every field is
/// optional, but those present must have the size the program reads.
pub fn ctx_layout(fields: &[Field]) -> anyhow::Result<CtxLayout> {
    let opt = |names: &[&str], sizes: &[u32]| -> anyhow::Result<i32> {
        let Some(f) = fields.iter().find(|f| names.contains(&f.name.as_str())) else {
            return Ok(ABSENT);
        };
        if !sizes.contains(&f.size) {
            bail!(
                "field `{}` is {} bytes, expected {:?}",
                f.name,
                f.size,
                sizes
            );
        }
        i32::try_from(f.offset)
            .with_context(|| format!("field `{}` offset {} too large", f.name, f.offset))
    };
    let mut l = CtxLayout {
        skaddr: opt(&["skaddr"], &[8])?,
        state: opt(&["state"], &[4])?,
        value: opt(&["error", "err", "reason"], &[4])?,
        family: opt(&["family"], &[2])?,
        sport: opt(&["sport"], &[2])?,
        dport: opt(&["dport"], &[2])?,
        saddr: opt(&["saddr"], &[4, 28])?,
        daddr: opt(&["daddr"], &[4, 28])?,
        saddr_v6: opt(&["saddr_v6"], &[16])?,
        daddr_v6: opt(&["daddr_v6"], &[16])?,
        protocol: opt(&["protocol"], &[2])?,
        sockaddr: 0,
        enabled: 1,
        _pad: 0,
    };
    let size = |name: &str| fields.iter().find(|f| f.name == name).map(|f| f.size);
    if size("saddr") == Some(28) {
        // `__u8 saddr[sizeof(struct sockaddr_in6)]` (tcp_send_reset since 6.10).
        if size("daddr") != Some(28) {
            bail!("`saddr` is a sockaddr but `daddr` is not");
        }
        l.sockaddr = 1;
    } else if size("daddr") == Some(28) {
        bail!("`daddr` is a sockaddr but `saddr` is not");
    }
    if l.skaddr == ABSENT && l.sport == ABSENT && l.sockaddr == 0 {
        bail!("neither a socket address nor ports: nothing to attach the event to");
    }
    Ok(l)
}

/// Reads the context layout of `category:name`; `Err` says why it cannot be used.
pub fn read_ctx_layout(dir: &Path, category: &str, name: &str) -> anyhow::Result<CtxLayout> {
    let path = dir.join("events").join(category).join(name).join("format");
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "tracepoint {category}:{name} not found on this kernel ({})",
            kernel_release()
        )
    })?;
    let fields = parse(&text).with_context(|| format!("parsing {}", path.display()))?;
    ctx_layout(&fields)
        .with_context(|| format!("{category}:{name} has a layout tracer cannot read"))
}

/// Checks that `syscalls:NAME` (a syscall exit) has `long ret` where the accept program reads
/// it ([`tracer_common::SYSCALL_RET`], 8 bytes); `Err` says why it cannot be used.
pub fn check_syscall_exit(dir: &Path, name: &str) -> anyhow::Result<()> {
    let path = dir.join("events/syscalls").join(name).join("format");
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "tracepoint syscalls:{name} not found on this kernel ({}; CONFIG_FTRACE_SYSCALLS)",
            kernel_release()
        )
    })?;
    let fields = parse(&text).with_context(|| format!("parsing {}", path.display()))?;
    syscall_ret_fits(&fields).with_context(|| format!("syscalls:{name}"))
}

fn syscall_ret_fits(fields: &[Field]) -> anyhow::Result<()> {
    match fields.iter().find(|f| f.name == "ret") {
        None => bail!("no field `ret`"),
        Some(f) if f.offset != tracer_common::SYSCALL_RET || f.size != 8 => bail!(
            "`ret` is {} bytes at offset {}, expected 8 at {}",
            f.size,
            f.offset,
            tracer_common::SYSCALL_RET
        ),
        Some(_) => Ok(()),
    }
}

/// Where tracefs is mounted (checked in the usual places).
const TRACEFS_DIRS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Finds tracefs, mounting it at /sys/kernel/tracing when it is not mounted (safe: it is the
/// kernel's own tracing interface; perf, bpftrace and aya need it too). Returns the directory
/// and whether it was mounted by us.
pub fn tracefs() -> anyhow::Result<(PathBuf, bool)> {
    for dir in TRACEFS_DIRS {
        if Path::new(dir).join("events").is_dir() {
            return Ok((PathBuf::from(dir), false));
        }
    }
    let dir = TRACEFS_DIRS[0];
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL in literal");
    let (src, target, fstype) = (c("tracefs"), c(dir), c("tracefs"));
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; `data` may
    // be NULL for tracefs.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        // Another process (a second tracer, perf, bpftrace) may have mounted it between our
        // check and our mount: the kernel then refuses a second mount of the same tracefs on
        // the same directory (EBUSY). That is not an error: it is mounted.
        if Path::new(dir).join("events").is_dir() {
            return Ok((PathBuf::from(dir), false));
        }
        bail!(
            "tracefs is not mounted and mounting it at {dir} failed ({err}): mount it with `mount -t tracefs tracefs {dir}` (needs root)"
        );
    }
    Ok((PathBuf::from(dir), true))
}

/// Reads and checks the layout of `category:name` under tracefs `dir`.
pub fn read_choice(dir: &Path, category: &str, name: &str) -> anyhow::Result<Choice> {
    let path = dir.join("events").join(category).join(name).join("format");
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "tracepoint {category}:{name} not found ({}): this kernel ({}) does not have it; it exists since Linux 4.16",
            path.display(),
            kernel_release()
        )
    })?;
    let fields = parse(&text).with_context(|| format!("parsing {}", path.display()))?;
    choose(&fields).with_context(|| {
        format!(
            "{category}:{name} on this kernel ({}) does not have a layout tracer can read ({})",
            kernel_release(),
            path.display()
        )
    })
}

/// `uname -r`.
pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown release".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/formats")
            .join(name);
        fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn parses_this_kernels_format() {
        let fields = parse(&fixture("linux-6.18-inet_sock_set_state.format")).unwrap();
        assert_eq!(fields.len(), 4 + 11);
        assert_eq!(
            fields[4],
            Field {
                ty: "const void *".into(),
                name: "skaddr".into(),
                offset: 8,
                size: 8,
                signed: false
            }
        );
        let saddr = fields.iter().find(|f| f.name == "saddr_v6").unwrap();
        assert_eq!(
            (saddr.ty.as_str(), saddr.offset, saddr.size),
            ("__u8", 40, 16)
        );
        assert!(fields.iter().find(|f| f.name == "oldstate").unwrap().signed);
        assert_eq!(choose(&fields).unwrap(), Choice::Fast);
    }

    #[test]
    fn pre_5_6_protocol_u8_needs_the_portable_program() {
        let fields = parse(&fixture("linux-5.4-inet_sock_set_state.format")).unwrap();
        let Choice::Portable(l) = choose(&fields).unwrap() else {
            panic!("expected portable")
        };
        assert_eq!((l.protocol, l.protocol_size), (30, 1));
        assert_eq!((l.saddr, l.daddr, l.saddr_v6, l.daddr_v6), (31, 35, 39, 55));
    }

    #[test]
    fn larger_common_header_needs_the_portable_program() {
        let fields = parse(&fixture(
            "linux-rt-larger-header-inet_sock_set_state.format",
        ))
        .unwrap();
        let Choice::Portable(l) = choose(&fields).unwrap() else {
            panic!("expected portable")
        };
        assert_eq!(
            (l.skaddr, l.protocol, l.protocol_size, l.daddr_v6),
            (16, 38, 2, 64)
        );
    }

    #[test]
    fn a_missing_field_is_named() {
        let text = fixture("linux-6.18-inet_sock_set_state.format")
            .lines()
            .filter(|l| !l.contains(" family;"))
            .collect::<Vec<_>>()
            .join("\n");
        let err = choose(&parse(&text).unwrap()).unwrap_err().to_string();
        assert_eq!(err, "the tracepoint has no field `family`");
    }

    #[test]
    fn a_wrong_size_is_named() {
        let text = fixture("linux-6.18-inet_sock_set_state.format").replace(
            "field:__u16 sport;\toffset:24;\tsize:2;",
            "field:__u32 sport;\toffset:24;\tsize:4;",
        );
        let err = choose(&parse(&text).unwrap()).unwrap_err().to_string();
        assert_eq!(err, "field `sport` is 4 bytes, expected 2");
    }

    #[test]
    fn context_layouts_of_this_kernel() {
        let l = ctx_layout(&parse(&fixture("linux-6.18-tcp_send_reset.format")).unwrap()).unwrap();
        assert_eq!(
            (l.skaddr, l.state, l.value, l.sockaddr, l.saddr, l.daddr),
            (16, 24, 28, 1, 32, 60)
        );
        assert_eq!((l.family, l.sport, l.protocol), (ABSENT, ABSENT, ABSENT));
        let l = ctx_layout(&parse(&fixture("linux-6.18-inet_sk_error_report.format")).unwrap())
            .unwrap();
        assert_eq!(
            (l.skaddr, l.value, l.protocol, l.family, l.sport, l.saddr_v6),
            (ABSENT, 8, 18, 16, 12, 28)
        );
        assert_eq!(l.sockaddr, 0);
        let l =
            ctx_layout(&parse(&fixture("linux-6.18-tcp_retransmit_skb.format")).unwrap()).unwrap();
        assert_eq!(
            (l.skaddr, l.state, l.value, l.saddr, l.daddr_v6),
            (16, 24, 76, 34, 58)
        );
        for f in [
            "tcp_receive_reset",
            "tcp_retransmit_synack",
            "tcp_destroy_sock",
        ] {
            let l =
                ctx_layout(&parse(&fixture(&format!("linux-6.18-{f}.format"))).unwrap()).unwrap();
            assert_eq!(l.skaddr, 8, "{f}");
            assert_eq!(l.enabled, 1);
        }
        // The direct-load program's constant layout is this kernel's, field for field.
        let l =
            ctx_layout(&parse(&fixture("linux-6.18-tcp_destroy_sock.format")).unwrap()).unwrap();
        assert_eq!(l, tracer_common::CtxLayout::DESTROY_FAST);
    }

    #[test]
    fn syscall_exit_ret_is_checked() {
        let f = |off: u32, size: u32| {
            parse(&format!(
                "\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:long ret;\toffset:{off};\tsize:{size};\tsigned:1;\n"
            ))
            .unwrap()
        };
        assert!(syscall_ret_fits(&f(16, 8)).is_ok());
        let e = syscall_ret_fits(&f(12, 4)).unwrap_err().to_string();
        assert!(e.contains("4 bytes at offset 12"), "{e}");
        assert!(syscall_ret_fits(&[]).is_err());
        // This kernel's, when tracefs is there.
        if Path::new("/sys/kernel/tracing/events/syscalls/sys_exit_accept4").is_dir() {
            for name in tracer_common::names::ACCEPT_TRACEPOINTS {
                check_syscall_exit(Path::new("/sys/kernel/tracing"), name).unwrap();
            }
        }
    }

    #[test]
    fn garbage_is_rejected_with_the_line() {
        assert!(
            parse("name: x\nformat:\n")
                .unwrap_err()
                .to_string()
                .contains("no `field:`")
        );
        let err = parse("format:\n\tfield:int;\toffset:0;\tsize:4;\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("line 2:"), "{err}");
        let err = parse("\tfield:int x;\toffset:zero;\tsize:4;\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("line 1:"), "{err}");
    }
}
