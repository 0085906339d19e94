//! The eBPF toolchain: chosen in the same order as `tracer/build.rs`, installed when missing.
//! 1. `TRACER_EBPF_TOOLCHAIN` (a rustup toolchain name), if set;
//! 2. rustup `nightly` with the `rust-src` component (the standard aya path);
//! 3. Debian's Rust (`rustc-web`, `cargo-web`, `libstd-rust-web-dev-bpf`: a stable compiler
//!    with a prebuilt `core` for bpfel-unknown-none), linked into rustup as `tracer-debian`.
//!
//! Then `bpf-linker`, built against the LLVM of the chosen compiler (`llvm-N-dev`).
use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{apt_install, deb_installed, status};

/// Must match `DEBIAN_TOOLCHAIN` in tracer/build.rs.
const DEBIAN_TOOLCHAIN: &str = "tracer-debian";
const DEBIAN_RUST_PACKAGES: [&str; 3] = ["rustc-web", "cargo-web", "libstd-rust-web-dev-bpf"];
/// bpf-linker release known to build with Rust 1.95/1.96 and LLVM 21–23.
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_LLVM: [u32; 3] = [21, 22, 23];

/// Installs what is missing and returns the eBPF toolchain's rustup name.
pub(crate) fn setup() -> anyhow::Result<String> {
    ensure_cargo_bin_on_path();
    let toolchain = choose_toolchain()?;
    let llvm = llvm_major(&toolchain)?;
    ensure_bpf_linker(llvm)?;
    Ok(toolchain)
}

fn choose_toolchain() -> anyhow::Result<String> {
    if let Some(t) = env::var("TRACER_EBPF_TOOLCHAIN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        eprintln!("xtask: eBPF toolchain: `{t}` (TRACER_EBPF_TOOLCHAIN)");
        return Ok(t);
    }
    if nightly_has_rust_src() {
        eprintln!("xtask: eBPF toolchain: rustup nightly with rust-src (skipping Debian's Rust)");
        return Ok("nightly".into());
    }
    let missing: Vec<&str> = DEBIAN_RUST_PACKAGES
        .iter()
        .copied()
        .filter(|p| !deb_installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!(
            "xtask: Debian's Rust for BPF already installed ({})",
            DEBIAN_RUST_PACKAGES.join(", ")
        );
    } else {
        eprintln!(
            "xtask: no rustup nightly with rust-src: installing Debian's Rust with a prebuilt core for BPF: {}",
            missing.join(" ")
        );
        apt_install(&missing)?;
    }
    if !Path::new("/usr/bin/rustc").is_file() {
        bail!(
            "/usr/bin/rustc missing after installing {}",
            DEBIAN_RUST_PACKAGES.join(", ")
        );
    }
    if rustup_toolchains()?.iter().any(|t| t == DEBIAN_TOOLCHAIN) {
        eprintln!("xtask: rustup toolchain `{DEBIAN_TOOLCHAIN}` already linked to /usr");
    } else {
        eprintln!(
            "xtask: linking Debian's Rust into rustup: rustup toolchain link {DEBIAN_TOOLCHAIN} /usr"
        );
        status(Command::new("rustup").args(["toolchain", "link", DEBIAN_TOOLCHAIN, "/usr"]))?;
    }
    Ok(DEBIAN_TOOLCHAIN.into())
}

fn nightly_has_rust_src() -> bool {
    Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .is_some_and(|s| {
            Path::new(&s)
                .join("lib/rustlib/src/rust/library/core")
                .is_dir()
        })
}

pub(crate) fn rustup_toolchains() -> anyhow::Result<Vec<String>> {
    let out = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .context("running `rustup toolchain list` (is rustup installed?)")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect())
}

/// The LLVM major version of a toolchain's rustc (`rustc -vV`: `LLVM version: 22.1.8`).
fn llvm_major(toolchain: &str) -> anyhow::Result<u32> {
    let out = Command::new("rustup")
        .args(["run", toolchain, "rustc", "-vV"])
        .output()
        .with_context(|| format!("running rustc of toolchain `{toolchain}`"))?;
    if !out.status.success() {
        bail!(
            "toolchain `{toolchain}` has no working rustc: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next()?.parse().ok())
        .with_context(|| format!("no LLVM version in `rustc -vV` of toolchain `{toolchain}`"))
}

fn ensure_bpf_linker(llvm: u32) -> anyhow::Result<()> {
    if let Some(path) = find_on_path("bpf-linker") {
        match linked_llvm_major(&path) {
            Some(m) if m != llvm => eprintln!(
                "xtask: {} uses LLVM {m} but the eBPF compiler uses LLVM {llvm}: reinstalling it",
                path.display()
            ),
            _ => {
                eprintln!(
                    "xtask: bpf-linker already installed ({}), skipping",
                    path.display()
                );
                return Ok(());
            }
        }
    }
    if !BPF_LINKER_LLVM.contains(&llvm) {
        bail!(
            "the eBPF compiler uses LLVM {llvm}, but bpf-linker {BPF_LINKER_VERSION} supports LLVM {BPF_LINKER_LLVM:?}: install bpf-linker for LLVM {llvm} yourself, or use another toolchain (TRACER_EBPF_TOOLCHAIN)"
        );
    }
    let dev = format!("llvm-{llvm}-dev");
    if deb_installed(&dev) {
        eprintln!("xtask: {dev} already installed");
    } else {
        eprintln!("xtask: installing {dev} (bpf-linker links against the compiler's LLVM)");
        apt_install(&[dev.as_str()])?;
    }
    eprintln!(
        "xtask: installing bpf-linker {BPF_LINKER_VERSION} for LLVM {llvm} (cargo install, about a minute)"
    );
    status(
        Command::new("cargo")
            .args([
                "install",
                "--locked",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{llvm}"),
                "--force",
            ])
            .env("LLVM_PREFIX", format!("/usr/lib/llvm-{llvm}")),
    )
}

/// The LLVM a dynamically linked bpf-linker uses (`libLLVM.so.22.1`, `libLLVM-21.so`).
fn linked_llvm_major(bin: &Path) -> Option<u32> {
    let out = Command::new("ldd").arg(bin).output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let name = l.split_whitespace().next()?;
        let rest = name.strip_prefix("libLLVM")?;
        let digits: String = rest
            .trim_start_matches(['.', '-', 's', 'o'])
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    })
}
fn ensure_cargo_bin_on_path() {
    // `cargo install` puts bpf-linker in ~/.cargo/bin; make sure it is found afterwards.
    let Some(home) = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
    else {
        return;
    };
    let bin = home.join("bin");
    let path = env::var_os("PATH").unwrap_or_default();
    if !env::split_paths(&path).any(|p| p == bin) {
        let joined = env::join_paths(std::iter::once(bin).chain(env::split_paths(&path)));
        if let Ok(joined) = joined {
            // SAFETY: xtask is single-threaded at this point.
            unsafe { env::set_var("PATH", joined) };
        }
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
