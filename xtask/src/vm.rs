//! `cargo xtask vm-test`: the privileged tests on other kernels, under QEMU.
//!
//! KVM guests fail on the machines this was built on, so the guests run under software
//! emulation (`-accel tcg`); Debian's cloud kernels boot to `/init` in a few seconds there.
//! Each kernel comes from its Debian package (`apt-get download` + `dpkg-deb -x`, nothing is
//! installed on the host): 6.1 and 6.12 from the host's bookworm sources, 5.10 from bullseye
//! through a separate apt configuration under target/vm/apt-bullseye (its own sources, lists
//! and cache, no apt.conf.d hooks; signatures checked against the system's Debian keyring), so
//! the host's apt state is untouched. The initramfs holds a static busybox, the tracer binary and the
//! integration-test binary with their shared libraries, and the two sock_diag modules (built
//! as modules in those kernels). `/init` mounts what a real system has, except tracefs, which
//! tracer mounts itself, and runs the tests.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{apt_install, deb_installed, status};

/// Tests that need what the initramfs does not carry (nginx with its configuration, tmux
/// with a terminal, man) or take minutes under emulation (TIME_WAIT lasts 60 s; 21,000
/// held connections, whose 120 s allowance to open is set for a real machine), skipped in
/// the guests.
const SKIP: [&str; 5] = [
    "nginx",
    "top::",
    "time_wait_is_followed",
    "completions_and_man",
    "burst::",
];

/// `TRACER_VM_TESTS`: run only the tests whose names contain it (and show the guest
/// kernel's messages), to look into one failure.
fn test_filter() -> Option<String> {
    std::env::var("TRACER_VM_TESTS").ok().filter(|f| {
        !f.is_empty()
            && f.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    })
}

/// Host tools the tests drive, carried into the guest with their libraries.
const GUEST_TOOLS: [&str; 9] = [
    "/usr/bin/unshare",
    "/usr/bin/bash",
    "/usr/bin/perl",
    "/usr/bin/ip",
    "/usr/bin/ss",
    "/usr/sbin/nft",
    "/usr/bin/setpriv",
    "/usr/sbin/sysctl",
    "/usr/bin/env",
];
/// perl-base's modules.
const PERL_BASE: &str = "/usr/lib/x86_64-linux-gnu/perl-base";

/// Where a kernel package is downloaded from.
#[derive(Clone, Debug)]
enum Archive {
    /// The host's apt sources.
    Host,
    /// Debian bullseye, through the apt configuration file at this path (`APT_CONFIG`).
    Bullseye(PathBuf),
}

impl Archive {
    fn apt(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        if let Archive::Bullseye(conf) = self {
            c.env("APT_CONFIG", conf);
        }
        c
    }
}

/// A private apt configuration for Debian bullseye, which has the 5.10 kernels bookworm
/// lacks, updated once; returns the path of its configuration file. APT_CONFIG is read
/// before apt.conf.d, so `Dir::Etc::Parts` keeps the host's snippets (and their
/// update hooks) out.
fn bullseye(dir: &Path) -> anyhow::Result<Archive> {
    let base = dir.join("apt-bullseye");
    for d in ["lists/partial", "cache/archives/partial", "apt.conf.d"] {
        fs::create_dir_all(base.join(d))?;
    }
    let b = base.display();
    let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    fs::write(
        base.join("sources.list"),
        format!(
            "deb [signed-by={keyring}] http://deb.debian.org/debian bullseye main\n\
             deb [signed-by={keyring}] http://deb.debian.org/debian-security bullseye-security main\n"
        ),
    )?;
    let conf = base.join("apt.conf");
    fs::write(
        &conf,
        format!(
            "Dir::Etc::SourceList \"{b}/sources.list\";\n\
             Dir::Etc::SourceParts \"/dev/null\";\n\
             Dir::Etc::Parts \"{b}/apt.conf.d\";\n\
             Dir::Etc::Preferences \"/dev/null\";\n\
             Dir::Etc::PreferencesParts \"/dev/null\";\n\
             Dir::State::Lists \"{b}/lists\";\n\
             Dir::Cache \"{b}/cache\";\n\
             Acquire::Languages \"none\";\n"
        ),
    )?;
    let archive = Archive::Bullseye(conf);
    eprintln!("xtask: apt-get update for bullseye (5.10 kernels) in {b}");
    status(archive.apt("apt-get").args(["-q", "update"]))?;
    Ok(archive)
}

pub fn run(root: &Path, toolchain: &str, kernels: Vec<String>) -> anyhow::Result<ExitCode> {
    let host_tools = ["qemu-system-x86", "busybox-static", "xz-utils"];
    let missing: Vec<&str> = host_tools
        .iter()
        .copied()
        .filter(|p| !deb_installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!("xtask: {} already installed", host_tools.join(", "));
    } else {
        eprintln!("xtask: installing {} for the VM tests", missing.join(" "));
        apt_install(&missing)?;
    }
    let dir = root.join("target/vm");
    fs::create_dir_all(&dir)?;
    let mut rows = Vec::new();
    let kernels = if kernels.is_empty() {
        default_kernels(&dir, &mut rows)?
    } else {
        // Packages the host's sources do not have are looked up in bullseye.
        let mut old = None;
        let mut v = Vec::new();
        for pkg in kernels {
            let known = Command::new("apt-cache")
                .args(["show", &pkg])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            let archive = if known {
                Archive::Host
            } else {
                if old.is_none() {
                    old = Some(bullseye(&dir)?);
                }
                old.clone().context("bullseye")?
            };
            v.push((pkg, archive));
        }
        v
    };
    let (tracer, live) = build_tests(root, toolchain)?;
    for (pkg, archive) in &kernels {
        eprintln!("xtask: kernel {pkg}");
        let row = match test_kernel(&dir, pkg, archive, &tracer, &live) {
            Ok(r) => r,
            Err(e) => (pkg.clone(), format!("error: {e:#}")),
        };
        eprintln!("xtask: {}: {}", row.0, row.1);
        rows.push(row);
    }
    let mut table = String::from("| kernel | result |\n|---|---|\n");
    for (k, r) in &rows {
        table.push_str(&format!("| {k} | {r} |\n"));
    }
    fs::write(dir.join("results.md"), &table)?;
    println!("{table}");
    let ok = rows.iter().all(|(_, r)| r.starts_with("pass"));
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The newest bullseye 5.10 and bookworm 6.1 and 6.12 cloud kernels the archives have. If
/// bullseye cannot be reached, its row in the results says so and the others still run.
fn default_kernels(
    dir: &Path,
    rows: &mut Vec<(String, String)>,
) -> anyhow::Result<Vec<(String, Archive)>> {
    let mut v = Vec::new();
    match bullseye(dir).and_then(|a| {
        let pkg = newest_cloud_kernels(
            &a,
            "^linux-image-5\\.10\\.0-.*-cloud-amd64$",
            &["linux-image-5.10.0-"],
        )?
        .pop()
        .context("no linux-image-5.10.0-*-cloud-amd64 in bullseye")?;
        Ok((pkg, a))
    }) {
        Ok(k) => v.push(k),
        Err(e) => {
            eprintln!("xtask: no 5.10 kernel: {e:#}");
            rows.push(("5.10 (Debian 11)".into(), format!("error: {e:#}")));
        }
    }
    let host = newest_cloud_kernels(
        &Archive::Host,
        "^linux-image-6\\.(1\\.0|12\\.).*-cloud-amd64$",
        &["linux-image-6.1.0-", "linux-image-6.12."],
    )?;
    if host.is_empty() {
        bail!("no linux-image-6.1/6.12 cloud kernels found by apt-cache (run apt-get update?)");
    }
    v.extend(host.into_iter().map(|p| (p, Archive::Host)));
    Ok(v)
}

/// For each prefix, the newest signed cloud kernel package matching `pattern`.
fn newest_cloud_kernels(
    archive: &Archive,
    pattern: &str,
    prefixes: &[&str],
) -> anyhow::Result<Vec<String>> {
    let out = archive
        .apt("apt-cache")
        .args(["search", "--names-only", pattern])
        .output()
        .context("apt-cache search")?;
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|n| !n.contains("dbg") && !n.contains("unsigned"))
        .collect();
    let newest = |prefix: &str| -> Option<String> {
        let mut v: Vec<&String> = names.iter().filter(|n| n.starts_with(prefix)).collect();
        v.sort_by_key(|n| {
            n.trim_start_matches(prefix)
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|x| x.parse::<u64>().ok())
                .collect::<Vec<_>>()
        });
        v.last().map(|s| s.to_string())
    };
    Ok(prefixes.iter().filter_map(|p| newest(p)).collect())
}

/// Builds the tracer binary and the integration tests; returns their paths.
fn build_tests(root: &Path, toolchain: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cargo = || {
        let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        c.env("TRACER_EBPF_TOOLCHAIN", toolchain).current_dir(root);
        c
    };
    // The executables' paths come from cargo's messages: CARGO_TARGET_DIR may move them.
    let executable = |out: &std::process::Output, name: &str, kind: &str| -> Option<PathBuf> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&format!("\"name\":\"{name}\"")) && l.contains(kind))
            .find_map(|l| {
                let at = l.find("\"executable\":\"")? + "\"executable\":\"".len();
                Some(PathBuf::from(&l[at..at + l[at..].find('"')?]))
            })
    };
    let out = cargo()
        .args([
            "build",
            "-p",
            "tracer",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("building tracer")?;
    if !out.status.success() {
        bail!("building tracer failed ({})", out.status);
    }
    let tracer = executable(&out, "tracer", "\"kind\":[\"bin\"]")
        .context("the tracer executable was not built")?;
    let out = cargo()
        .args([
            "test",
            "-p",
            "tracer",
            "--test",
            "live",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("building the integration tests")?;
    if !out.status.success() {
        bail!("building the integration tests failed ({})", out.status);
    }
    let live = executable(&out, "live", "\"kind\":[\"test\"]")
        .context("the live test executable was not built")?;
    Ok((tracer, live))
}

fn test_kernel(
    dir: &Path,
    pkg: &str,
    archive: &Archive,
    tracer: &Path,
    live: &Path,
) -> anyhow::Result<(String, String)> {
    let kdir = dir.join(pkg);
    if !kdir.join("boot").is_dir() {
        status(
            archive
                .apt("apt-get")
                .args(["download", pkg])
                .current_dir(dir),
        )?;
        let deb = fs::read_dir(dir)?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|f| f.to_str())
                    .is_some_and(|f| f.starts_with(&format!("{pkg}_")) && f.ends_with(".deb"))
            })
            .with_context(|| format!("{pkg}: downloaded .deb not found"))?;
        status(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&kdir))?;
    }
    let vmlinuz = fs::read_dir(kdir.join("boot"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with("vmlinuz-"))
        })
        .context("no vmlinuz in the package")?;
    let release = vmlinuz
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or("")
        .trim_start_matches("vmlinuz-")
        .to_string();
    let initrd = dir.join(format!("{release}.cpio.gz"));
    build_initramfs(&kdir, &initrd, tracer, live)?;
    let log = dir.join(format!("{release}.log"));
    let logf = fs::File::create(&log)?;
    let st = Command::new("timeout")
        .args([
            "1500",
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            "1024",
            "-smp",
            "2",
        ])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(&vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        // With a test filter (debugging one test), the kernel's own messages too.
        .args([
            "-append",
            if test_filter().is_some() {
                "console=ttyS0 panic=-1"
            } else {
                "console=ttyS0 panic=-1 quiet"
            },
        ])
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .status()
        .context("running qemu-system-x86_64")?;
    let text = String::from_utf8_lossy(&fs::read(&log)?).into_owned();
    let summary = text
        .lines()
        .rev()
        .find(|l| l.contains("test result:"))
        .map(str::trim)
        .unwrap_or("");
    let result = if text.contains("VMTEST rc=0") {
        format!("pass ({})", summary.trim_start_matches("test result: ok. "))
    } else if summary.is_empty() {
        format!("fail: no test result (qemu {st}); see {}", log.display())
    } else {
        let failed: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("test ") && l.ends_with("FAILED"))
            .map(|l| {
                l.trim_start_matches("test ")
                    .trim_end_matches(" ... FAILED")
            })
            .collect();
        format!(
            "fail ({summary}; failed: {}); see {}",
            failed.join(", "),
            log.display()
        )
    };
    Ok((release, result))
}

fn build_initramfs(kdir: &Path, out: &Path, tracer: &Path, live: &Path) -> anyhow::Result<()> {
    let root = out.with_extension("root");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    let put = |rel: &Path, from: &Path| -> anyhow::Result<()> {
        let to = root.join(rel.strip_prefix("/").unwrap_or(rel));
        fs::create_dir_all(to.parent().context("no parent")?)?;
        fs::copy(from, &to).with_context(|| format!("copying {}", from.display()))?;
        Ok(())
    };
    for d in ["proc", "sys", "dev", "tmp", "run", "mod", "bin"] {
        fs::create_dir_all(root.join(d))?;
    }
    put(Path::new("/bin/busybox"), Path::new("/bin/busybox"))?;
    for applet in [
        "sh", "mount", "mkdir", "insmod", "poweroff", "echo", "uname", "cat", "sleep", "true",
        "kill", "ls", "rm",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    // The host tools the tests drive (namespaces, nftables, ss, a pre-fork perl server, bash
    // clients), at their host paths with their libraries, so those tests run on the guest
    // kernels too. Tests needing what the guest cannot carry are in SKIP.
    let mut carried: Vec<PathBuf> = Vec::new();
    for tool in GUEST_TOOLS {
        let p = Path::new(tool);
        if p.exists() {
            let real = fs::canonicalize(p)?;
            put(p, &real)?;
            carried.push(p.to_path_buf());
        } else {
            eprintln!(
                "xtask: {tool} is not on this host: the tests that need it fail in the guests"
            );
        }
    }
    // perl's core modules (Socket, POSIX, IO::Socket) are perl-base's.
    for dir in walk(Path::new(PERL_BASE)) {
        put(&dir, &dir)?;
    }
    // The test binary runs the tracer at the path it was built with (CARGO_BIN_EXE_tracer).
    // Nothing is mounted over it in the guest: /tmp stays the initramfs's own (writable)
    // directory, so a checkout under /tmp (CI clones) still finds its tracer there.
    put(tracer, tracer)?;
    put(Path::new("/live"), live)?;
    let ldd = Command::new("ldd")
        .arg(tracer)
        .arg(live)
        .args(&carried)
        .output()
        .context("ldd")?;
    let mut libs: Vec<String> = String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/') && !w.ends_with(':'))
        .map(str::to_string)
        .collect();
    libs.sort();
    libs.dedup();
    for l in libs {
        let real = fs::canonicalize(&l)?;
        put(Path::new(&l), &real)?;
    }
    let modules = modules_in_order(kdir, &GUEST_MODULES)?;
    for (name, bytes) in &modules {
        fs::write(root.join("mod").join(format!("{name}.ko")), bytes)?;
    }
    let insmod: String = modules
        .iter()
        .map(|(name, _)| format!("insmod /mod/{name}.ko\n"))
        .collect();
    let init = format!(
        "#!/bin/sh\n\
         mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev\n\
         mkdir -p /sys/fs/cgroup; mount -t cgroup2 none /sys/fs/cgroup\n\
         export PATH=/usr/sbin:/usr/bin:/sbin:/bin\n\
         {insmod}\
         ip link set lo up\n\
         echo \"VMTEST kernel $(uname -r)\"\n\
         /live --include-ignored --test-threads=1 {} {filter} 2>&1\n\
         echo \"VMTEST rc=$?\"\n\
         poweroff -f\n",
        SKIP.iter()
            .map(|s| format!("--skip {s}"))
            .collect::<Vec<_>>()
            .join(" "),
        filter = test_filter().unwrap_or_default(),
    );
    fs::write(root.join("init"), init)?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(root.join("init"), fs::Permissions::from_mode(0o755))?;
    }
    status(
        Command::new("sh")
            .arg("-c")
            .arg("cd \"$0\" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 > \"$1\"")
            .arg(&root)
            .arg(out),
    )?;
    fs::remove_dir_all(&root)?;
    Ok(())
}

/// The kernel modules the tests need that Debian's cloud kernels build as modules: sock_diag
/// for TCP, veth and tun for the namespace pairs and the delayed link, nftables with what the
/// fault tests use (drop, reject with an ICMP error, numgen). Loaded in /init after their
/// dependencies; a module the kernel has built in is not in the package, and needs no
/// loading.
const GUEST_MODULES: [&str; 9] = [
    "inet_diag",
    "tcp_diag",
    "veth",
    "tun",
    "nf_tables",
    "nft_reject_inet",
    "nft_reject_ipv4",
    "nft_reject_ipv6",
    "nft_numgen",
];

/// `wanted` and the modules they depend on (the `depends=` of their `.modinfo`), each after
/// its dependencies, decompressed: (name, bytes). Names the package lacks are built in.
fn modules_in_order(kdir: &Path, wanted: &[&str]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let files: std::collections::HashMap<String, PathBuf> = walk(&kdir.join("lib/modules"))
        .into_iter()
        .filter_map(|p| {
            let f = p.file_name()?.to_str()?;
            let name = f.strip_suffix(".ko.xz").or_else(|| f.strip_suffix(".ko"))?;
            Some((name.replace('-', "_"), p.clone()))
        })
        .collect();
    fn visit(
        name: &str,
        files: &std::collections::HashMap<String, PathBuf>,
        out: &mut Vec<(String, Vec<u8>)>,
        seen: &mut std::collections::HashSet<String>,
    ) -> anyhow::Result<()> {
        if !seen.insert(name.to_string()) {
            return Ok(());
        }
        let Some(path) = files.get(name) else {
            return Ok(()); // built in
        };
        let bytes = if path.extension().is_some_and(|e| e == "xz") {
            let o = Command::new("xz")
                .arg("-dc")
                .arg(path)
                .output()
                .context("xz")?;
            anyhow::ensure!(o.status.success(), "xz -dc {}", path.display());
            o.stdout
        } else {
            fs::read(path)?
        };
        for dep in module_depends(&bytes) {
            visit(&dep, files, out, seen)?;
        }
        out.push((name.to_string(), bytes));
        Ok(())
    }
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for m in wanted {
        visit(m, &files, &mut out, &mut seen)?;
    }
    for m in ["inet_diag", "tcp_diag"] {
        anyhow::ensure!(
            out.iter().any(|(n, _)| n == m),
            "module {m} not in the kernel package"
        );
    }
    Ok(out)
}

/// The module names in a module's `depends=` (its `.modinfo` section: NUL-separated
/// `key=value` strings).
fn module_depends(ko: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = ko.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let rest = &ko[at + KEY.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| d.replace('-', "_"))
        .collect()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::module_depends;

    #[test]
    fn a_modules_depends_come_from_its_modinfo() {
        let ko = b"\x7fELF...\0license=GPL\0depends=nfnetlink,nf-reject-ipv4\0retpoline=Y\0";
        assert_eq!(module_depends(ko), ["nfnetlink", "nf_reject_ipv4"]);
        assert!(module_depends(b"\0license=GPL\0depends=\0name=veth\0").is_empty());
        assert!(module_depends(b"no modinfo here").is_empty());
    }
}
