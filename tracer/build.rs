//! Builds `tracer-ebpf` for the BPF target with aya-build, so the loader can embed it.
//!
//! The eBPF toolchain is chosen in the same order as `cargo xtask` (which installs what is
//! missing and passes its choice in `TRACER_EBPF_TOOLCHAIN`):
//! 1. `TRACER_EBPF_TOOLCHAIN`, a rustup toolchain name;
//! 2. rustup `nightly` with `rust-src` (the standard aya path, with `-Z build-std=core`);
//! 3. `tracer-debian`: Debian's Rust (rustc-web + libstd-rust-web-dev-bpf, which ships a
//!    prebuilt `core` for bpfel) linked into rustup by `cargo xtask`.
//!
//! A fuzzing build (`--cfg fuzzing`, set by cargo-fuzz for tracer/fuzz) skips the eBPF build and
//! embeds an empty object instead.
//!
//! When none is usable, or `bpf-linker` is missing, the build stops with one message that names
//! `cargo xtask build` instead of a wall of nested cargo output.
use std::{env, path::Path, process::Command};

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// rustup name under which `cargo xtask` links Debian's Rust (must match xtask).
const DEBIAN_TOOLCHAIN: &str = "tracer-debian";
const HINT: &str = "run `cargo xtask build` once: it installs the eBPF toolchain (bpf-linker and a Rust that can build for bpfel-unknown-none) and then builds";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=TRACER_EBPF_TOOLCHAIN");
    println!("cargo:rerun-if-env-changed=RUSTC_BOOTSTRAP");

    if env::var_os("CARGO_CFG_FUZZING").is_some() {
        // cargo-fuzz (tracer/fuzz) builds the library with `--cfg fuzzing` and sanitizer
        // RUSTFLAGS, which the nested eBPF build would inherit and choke on. The fuzz targets
        // only use the pure modules (decode, format), so embed an empty object: loading it
        // fails, and nothing in a fuzz build loads it.
        let out = Path::new(&env::var_os("OUT_DIR").context("OUT_DIR not set")?).join("tracer");
        std::fs::write(&out, b"").with_context(|| format!("writing {}", out.display()))?;
        return Ok(());
    }

    let Some(toolchain) = choose_toolchain() else {
        println!(
            "cargo::error=no eBPF toolchain found (neither TRACER_EBPF_TOOLCHAIN, nor rustup nightly with rust-src, nor `{DEBIAN_TOOLCHAIN}`): {HINT}"
        );
        return Ok(());
    };
    if which_bpf_linker().is_none() {
        println!("cargo::error=bpf-linker not found on PATH: {HINT}");
        return Ok(());
    }
    if env::var_os("RUSTC_BOOTSTRAP").is_none() && !is_nightly(&toolchain) {
        // A stable compiler with a prebuilt `core`: aya-ebpf still needs its unstable
        // features. Naming the crate (not `1`) unlocks them for aya_ebpf alone and keeps
        // aya-build from asking for `-Z build-std`, which needs rust-src.
        // SAFETY: build scripts are single-threaded here; nothing reads the environment
        // concurrently.
        unsafe { env::set_var("RUSTC_BOOTSTRAP", "aya_ebpf") };
    }

    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "tracer-ebpf")
        .ok_or_else(|| anyhow!("tracer-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::Custom(&toolchain))
        .with_context(|| format!("building tracer-ebpf with toolchain `{toolchain}` failed (if the toolchain is broken: {HINT})"))
}

fn choose_toolchain() -> Option<String> {
    if let Ok(t) = env::var("TRACER_EBPF_TOOLCHAIN")
        && !t.is_empty()
    {
        return Some(t);
    }
    if nightly_has_rust_src() {
        return Some("nightly".into());
    }
    let list = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&list.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(DEBIAN_TOOLCHAIN))
        .then(|| DEBIAN_TOOLCHAIN.to_string())
}

fn nightly_has_rust_src() -> bool {
    Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .is_some_and(|sysroot| {
            Path::new(&sysroot)
                .join("lib/rustlib/src/rust/library/core")
                .is_dir()
        })
}

fn is_nightly(toolchain: &str) -> bool {
    Command::new("rustup")
        .args(["run", toolchain, "rustc", "-V"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("-nightly"))
}

fn which_bpf_linker() -> Option<std::path::PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|d| d.join("bpf-linker"))
        .find(|p| p.is_file())
}
