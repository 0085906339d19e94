//! `cargo xtask dist`: the release tarball, and the Debian package built from the same files.
use std::{
    env,
    fmt::Write as _,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::status;

/// Lays out the release in target/dist/NAME/ and packs it; returns the tarball's path.
pub(crate) fn tarball(root: &Path) -> anyhow::Result<PathBuf> {
    let name = format!(
        "tracer-{}-{}-linux",
        env!("CARGO_PKG_VERSION"),
        env::consts::ARCH
    );
    let out = root.join("target/dist");
    let dir = out.join(&name);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let bin = root.join("target/release/tracer");
    let put = |rel: &str, bytes: &[u8]| -> anyhow::Result<()> {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().context("no parent")?)?;
        fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))
    };
    let run = |args: &[&str]| -> anyhow::Result<Vec<u8>> {
        let o = Command::new(&bin)
            .args(args)
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        if !o.status.success() {
            bail!(
                "tracer {args:?} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(o.stdout)
    };
    put(
        "bin/tracer",
        &fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?,
    )?;
    fs::set_permissions(dir.join("bin/tracer"), fs::Permissions::from_mode(0o755))?;
    put("share/man/man1/tracer.1", &run(&["man"])?)?;
    put(
        "share/bash-completion/completions/tracer",
        &run(&["completions", "bash"])?,
    )?;
    put(
        "share/zsh/site-functions/_tracer",
        &run(&["completions", "zsh"])?,
    )?;
    put(
        "share/fish/vendor_completions.d/tracer.fish",
        &run(&["completions", "fish"])?,
    )?;
    for (src, dst) in [
        ("dist/tracer.service", "lib/systemd/system/tracer.service"),
        ("LICENSE-MIT", "LICENSE-MIT"),
        ("LICENSE-APACHE", "LICENSE-APACHE"),
        ("README.md", "README.md"),
    ] {
        put(
            dst,
            &fs::read(root.join(src)).with_context(|| format!("reading {src}"))?,
        )?;
    }
    let tarball = out.join(format!("{name}.tar.gz"));
    status(
        Command::new("tar")
            .arg("-czf")
            .arg(&tarball)
            .arg("-C")
            .arg(&out)
            .arg(&name),
    )?;
    Ok(tarball)
}

/// Where the unit file (dist/tracer.service) expects the binary: the tarball's layout,
/// unpacked under /usr/local. The package installs it in /usr/bin and says so in its unit.
const UNIT_BINARY: &str = "/usr/local/bin/tracer";

/// Builds target/dist/tracer_VERSION_ARCH.deb from the release binary: the binary (stripped) in
/// /usr/bin,
/// the man page, bash/zsh/fish completions, the systemd unit (not enabled or started), and the
/// licences in /usr/share/doc/tracer/copyright. Its dependencies are computed from the binary
/// (see [`depends`]). Returns the package's path.
pub(crate) fn deb(root: &Path) -> anyhow::Result<PathBuf> {
    let version = env!("CARGO_PKG_VERSION");
    let arch = match env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => bail!("no Debian architecture name known for {a}"),
    };
    let out = root.join("target/dist");
    let name = format!("tracer_{version}_{arch}");
    let dir = out.join("deb").join(&name);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let bin = root.join("target/release/tracer");
    // Directories 0755, files 0644 (the binary 0755), whatever the umask; dpkg-deb
    // --root-owner-group makes them root's.
    let put = |rel: &str, bytes: &[u8], mode: u32| -> anyhow::Result<()> {
        let p = dir.join(rel);
        let mut d = p.parent().context("no parent")?;
        fs::create_dir_all(d)?;
        while d.starts_with(&dir) {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755))?;
            d = d.parent().context("no parent")?;
        }
        fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", p.display()))
    };
    let run = |args: &[&str]| -> anyhow::Result<Vec<u8>> {
        let o = Command::new(&bin)
            .args(args)
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        if !o.status.success() {
            bail!(
                "tracer {args:?} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(o.stdout)
    };
    let read = |rel: &str| -> anyhow::Result<String> {
        fs::read_to_string(root.join(rel)).with_context(|| format!("reading {rel}"))
    };

    // Stripped as dh_strip would (Debian policy; the release profile keeps the symbols). The
    // embedded eBPF object is data, not debug information: it stays.
    put("usr/bin/tracer", b"", 0o755)?;
    status(
        Command::new("strip")
            .args([
                "--strip-unneeded",
                "--remove-section=.comment",
                "--remove-section=.note",
                "-o",
            ])
            .arg(dir.join("usr/bin/tracer"))
            .arg(&bin),
    )?;
    fs::set_permissions(
        dir.join("usr/bin/tracer"),
        fs::Permissions::from_mode(0o755),
    )?;
    put(
        "usr/share/man/man1/tracer.1.gz",
        &gzip(&run(&["man"])?)?,
        0o644,
    )?;
    put(
        "usr/share/bash-completion/completions/tracer",
        &run(&["completions", "bash"])?,
        0o644,
    )?;
    put(
        "usr/share/zsh/vendor-completions/_tracer",
        &run(&["completions", "zsh"])?,
        0o644,
    )?;
    put(
        "usr/share/fish/vendor_completions.d/tracer.fish",
        &run(&["completions", "fish"])?,
        0o644,
    )?;
    let unit = read("dist/tracer.service")?;
    if !unit.contains(&format!("ExecStart={UNIT_BINARY} ")) {
        bail!("dist/tracer.service does not start {UNIT_BINARY}: update xtask's dist");
    }
    put(
        "lib/systemd/system/tracer.service",
        unit.replace(UNIT_BINARY, "/usr/bin/tracer").as_bytes(),
        0o644,
    )?;
    put(
        "usr/share/doc/tracer/copyright",
        copyright(&read("LICENSE-MIT")?, &read("LICENSE-APACHE")?).as_bytes(),
        0o644,
    )?;
    let maintainer = maintainer();
    put(
        "usr/share/doc/tracer/changelog.gz",
        &gzip(
            format!(
                "tracer ({version}) unstable; urgency=medium\n\n  * Built by `cargo xtask dist` from the tracer sources.\n\n -- {maintainer}  {}\n",
                changelog_date()?
            )
            .as_bytes(),
        )?,
        0o644,
    )?;

    // DEBIAN/: md5sums of every file, then the control file.
    let mut files = Vec::new();
    list_files(&dir, &dir, &mut files)?;
    files.sort();
    let md5 = Command::new("md5sum")
        .args(&files)
        .current_dir(&dir)
        .output()
        .context("running md5sum")?;
    if !md5.status.success() {
        bail!("md5sum failed: {}", String::from_utf8_lossy(&md5.stderr));
    }
    put("DEBIAN/md5sums", &md5.stdout, 0o644)?;
    let installed_kib: u64 = files
        .iter()
        .map(|f| fs::metadata(dir.join(f)).map(|m| m.len().div_ceil(1024)))
        .sum::<Result<u64, _>>()?;
    let control = format!(
        "Package: tracer\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: {maintainer}\n\
         Installed-Size: {installed_kib}\n\
         Depends: {}\n\
         Section: net\n\
         Priority: optional\n\
         Description: the Linux kernel's TCP state machine, live (eBPF)\n \
         An eBPF program on the tracepoint sock:inet_sock_set_state streams every TCP\n \
         state transition to tracer, which prints each transition and, when a socket\n \
         closes, its whole timeline: every state and how long it lasted, the owning\n \
         process, how it ended, and the resets, retransmits and errors along the way.\n \
         It finds stuck connections (a CLOSE_WAIT leak, by process), filters in the\n \
         kernel, and exports Prometheus metrics (see the tracer.service unit).\n",
        depends(&bin)?
    );
    put("DEBIAN/control", control.as_bytes(), 0o644)?;

    let deb = out.join(format!("{name}.deb"));
    status(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&dir)
            .arg(&deb),
    )?;
    Ok(deb)
}

/// The package's `Depends`, from the binary's own `DT_NEEDED` libraries and the newest symbol
/// version it uses of each (what dpkg-shlibdeps would say, without its source-tree set-up):
/// glibc (`libc.so.6`, `libm.so.6`, the loader) → `libc6 (>= newest GLIBC_x.y)`; `libgcc_s.so.1`
/// → `libgcc-s1 (>= newest GCC_x.y)`. Any other library is an error: the package promises to
/// need nothing but the C runtime.
///
/// Why libgcc-s1 is kept: Rust's standard library links `libgcc_s.so.1` for unwinding and
/// backtraces on the gnu targets, so the binary needs it directly, and Debian declares every
/// directly linked library's package (dpkg-shlibdeps would write the same line). It costs no
/// one anything: `libc6` itself `Depends: libgcc-s1` (bookworm's libc6 2.36; `.ci/run` checks
/// that on the machine), so any system with libc already has it. Dropping the need instead
/// (a static libgcc_eh, panic=abort) would change how the release binary is built for no
/// difference a user could see.
fn depends(bin: &Path) -> anyhow::Result<String> {
    let tool = |args: &[&str]| -> anyhow::Result<String> {
        let o = Command::new(args[0])
            .args(&args[1..])
            .arg(bin)
            .output()
            .with_context(|| format!("running {} (binutils)", args[0]))?;
        if !o.status.success() {
            bail!("{args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let dynamic = tool(&["readelf", "-d", "-W"])?;
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    let glibc = [
        "libc.so.6",
        "libm.so.6",
        "ld-linux-x86-64.so.2",
        "ld-linux-aarch64.so.1",
    ];
    if let Some(other) = needed
        .iter()
        .find(|n| !glibc.contains(n) && **n != "libgcc_s.so.1")
    {
        bail!("the binary needs {other}: the package only declares libc6 and libgcc-s1");
    }
    let symbols = tool(&["objdump", "-T"])?;
    let newest = |prefix: &str| -> Option<String> {
        symbols
            .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
            .filter_map(|w| w.strip_prefix(prefix))
            .filter_map(|v| {
                let parts: Vec<u32> = v
                    .split('.')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .ok()?;
                Some(parts)
            })
            .max()
            .map(|mut v| {
                // GCC_4.2.0 → 4.2: the version dpkg's symbols files give libgcc-s1.
                v.truncate(2);
                v.iter().map(u32::to_string).collect::<Vec<_>>().join(".")
            })
    };
    let libc = newest("GLIBC_").context("no GLIBC_ symbol versions in the binary")?;
    let mut deps = format!("libc6 (>= {libc})");
    if needed.contains(&"libgcc_s.so.1") {
        let gcc = newest("GCC_").unwrap_or_else(|| "3.0".into());
        let _ = write!(deps, ", libgcc-s1 (>= {gcc})");
    }
    Ok(deps)
}

/// `DEBFULLNAME <DEBEMAIL>` (the Debian tools' convention) when both are set.
fn maintainer() -> String {
    match (env::var("DEBFULLNAME"), env::var("DEBEMAIL")) {
        (Ok(n), Ok(e)) if !n.is_empty() && !e.is_empty() => format!("{n} <{e}>"),
        _ => "tracer developers <tracer@localhost>".into(),
    }
}

/// The last commit's date (RFC 2822), so the package does not change with the clock; now when
/// there is no git history.
fn changelog_date() -> anyhow::Result<String> {
    let git = Command::new("git")
        .args(["log", "-1", "--format=%cD"])
        .output();
    if let Ok(o) = git
        && o.status.success()
        && !o.stdout.is_empty()
    {
        return Ok(String::from_utf8_lossy(&o.stdout).trim().to_string());
    }
    let o = Command::new("date")
        .arg("-R")
        .output()
        .context("running date")?;
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// `gzip -9n`: no name or time stamp in the header (Debian policy for man pages and docs).
fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut child = Command::new("gzip")
        .arg("-9nc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running gzip")?;
    let mut stdin = child.stdin.take().context("gzip stdin")?;
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let o = child.wait_with_output().context("running gzip")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("gzip writer panicked"))??;
    if !o.status.success() {
        bail!("gzip failed");
    }
    Ok(o.stdout)
}

/// Every file under `dir`, relative to `base`, except DEBIAN/.
fn list_files(base: &Path, dir: &Path, out: &mut Vec<String>) -> anyhow::Result<()> {
    for e in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = e?.path();
        let rel = p.strip_prefix(base)?.to_string_lossy().into_owned();
        if rel == "DEBIAN" {
            continue;
        }
        if p.is_dir() {
            list_files(base, &p, out)?;
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

/// /usr/share/doc/tracer/copyright in the machine-readable format, with both licence texts.
fn copyright(mit: &str, apache: &str) -> String {
    // In a paragraph's body every line is indented by one space, an empty line is " .".
    let body = |text: &str| -> String {
        text.trim_end()
            .lines()
            .map(|l| {
                if l.trim().is_empty() {
                    " .\n".to_string()
                } else {
                    format!(" {l}\n")
                }
            })
            .collect()
    };
    // The holder as LICENSE-MIT names it (`Copyright (c) 2026 The tracer authors`).
    let holder = mit
        .lines()
        .find_map(|l| l.trim().strip_prefix("Copyright (c) "))
        .unwrap_or("The tracer authors");
    format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: tracer\n\
         \n\
         Files: *\n\
         Copyright: {}\n\
         License: MIT or Apache-2.0\n\
         \n\
         License: MIT\n{}\n\
         License: Apache-2.0\n{}",
        holder,
        body(mit),
        body(apache)
    )
}
