//! `cargo xtask`: set up the eBPF toolchain, build, run and test tracer.
//!
//! Every command first makes sure the eBPF toolchain is there, installing what is missing
//! (idempotent: it says what it installs and what it skips); see [`toolchain`] for the order
//! in which it is chosen.
use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

mod bench;
mod dist;
mod fuzz;
mod loadgen;
mod toolchain;
mod vm;

#[derive(Parser)]
#[command(about = "Build, run and test tracer; installs the eBPF toolchain when missing")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the eBPF build needs (nothing else).
    Setup,
    /// Set up, then `cargo build --release` (leaves target/release/tracer).
    Build,
    /// Set up, build, and run tracer as root (through `sudo -E` when not root).
    Run {
        /// Arguments for tracer, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Set up, then every test: unit tests and the privileged tests against the real kernel.
    Test {
        /// Only the unit tests (no root, no kernel).
        #[arg(long)]
        unit_only: bool,
        #[command(flatten)]
        fuzz: fuzz::FuzzArgs,
    },
    /// Set up, then `cargo fmt --check` and clippy with -D warnings (host crates and eBPF crate).
    Lint,
    /// Set up, then run the privileged tests on other kernels under QEMU (software emulation):
    /// Debian's cloud kernels, extracted from their packages, with the test binaries in an
    /// initramfs. Prints a table kernel → result and writes target/vm/results.md.
    VmTest {
        /// Debian kernel packages to test (default: the newest 5.10 (bullseye), 6.1 and 6.12 cloud
        /// kernels).
        #[arg(long = "kernel", value_name = "PACKAGE")]
        kernels: Vec<String>,
    },
    /// Set up, build release, and pack target/dist/tracer-VERSION-ARCH-linux.tar.gz (binary,
    /// man page, shell completions, systemd unit, licences, README) and the Debian package
    /// target/dist/tracer_VERSION_ARCH.deb.
    Dist,
    /// Set up, build release, then benchmark tracer against untraced runs and the peers
    /// (libbpf-tools tcpstates, bcc, bpftrace, perf) under loopback load; writes
    /// target/bench/results.md and results.json.
    Bench(bench::BenchArgs),
    /// Set up, build release, then run tracer against 1,000,000 loopback connections and
    /// report its peak RSS and its RSS after the churn, what it captured against a tracefs
    /// count, and each BPF program's runs and recursion misses.
    Soak(bench::SoakArgs),
    /// The load generator the benchmarks run (one JSON line on stdout).
    #[command(hide = true)]
    Loadgen(loadgen::Args),
}

/// The live tests that flood the host with events, run alone after the others (test-name
/// filter: the `burst` module).
const HEAVY_TESTS: &str = "burst::";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // The generator is spawned many times by the benchmarks: no set-up, no cd.
    if let Cmd::Loadgen(args) = &cli.cmd {
        return loadgen::main(args);
    }
    let root = workspace_root()?;
    env::set_current_dir(&root).with_context(|| format!("cd {}", root.display()))?;
    let toolchain = toolchain::setup()?;
    let cargo = || {
        let mut c = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        c.env("TRACER_EBPF_TOOLCHAIN", &toolchain);
        c
    };
    match cli.cmd {
        Cmd::Setup => {}
        Cmd::Build => status(cargo().args(["build", "--release"]))?,
        Cmd::Run { args } => {
            status(cargo().args(["build", "--release"]))?;
            let bin = root.join("target/release/tracer");
            let mut cmd = if is_root() {
                Command::new(&bin)
            } else {
                eprintln!("xtask: tracer needs root: re-running it with `sudo -E`");
                let mut c = Command::new("sudo");
                c.arg("-E").arg(&bin);
                c
            };
            let st = cmd
                .args(&args)
                .status()
                .with_context(|| format!("running {}", bin.display()))?;
            return Ok(ExitCode::from(st.code().unwrap_or(1).clamp(0, 255) as u8));
        }
        Cmd::Test { unit_only, fuzz } => {
            if fuzz.fuzz_only {
                eprintln!("xtask: --fuzz-only: skipping the tests");
            } else if unit_only {
                let missing: Vec<&str> = UNIT_TEST_PACKAGES
                    .iter()
                    .copied()
                    .filter(|p| !deb_installed(p))
                    .collect();
                if !missing.is_empty() {
                    apt_install(&missing)?;
                }
                status(cargo().args(["test", "--workspace", "--exclude", "tracer-ebpf"]))?;
            } else {
                // The privileged tests are #[ignore]d for a plain `cargo test`; run them all here.
                // tracer/tests/svg_browser.rs renders the SVG ladders in headless Chromium.
                // What the tests drive: real servers and clients, and failures made with
                // nftables inside namespaces the tests create (iproute2 for `ip netns`).
                let missing: Vec<&str> = TEST_PACKAGES
                    .iter()
                    .copied()
                    .filter(|p| !deb_installed(p))
                    .collect();
                if !missing.is_empty() {
                    apt_install(&missing)?;
                    if missing.contains(&"nginx-light") {
                        // Debian starts the packaged nginx on port 80; the tests run their
                        // own, each with its own configuration, in their own namespaces.
                        let _ = Command::new("systemctl")
                            .args(["disable", "--now", "nginx"])
                            .status();
                    }
                }
                // Two runs: everything but the bursts, tests in parallel; then the bursts
                // alone. A burst (tens of thousands of connections closed at once) makes the
                // kernel skip other tracers' program runs on the same CPUs (recursion
                // misses), which the tests with exact counts cannot tell from a bug.
                let runs: [Vec<&str>; 2] = [
                    vec![
                        "test",
                        "--workspace",
                        "--exclude",
                        "tracer-ebpf",
                        "--",
                        "--include-ignored",
                        "--skip",
                        HEAVY_TESTS,
                    ],
                    vec![
                        "test",
                        "-p",
                        "tracer",
                        "--test",
                        "live",
                        "--",
                        "--include-ignored",
                        HEAVY_TESTS,
                    ],
                ];
                if !is_root() {
                    eprintln!(
                        "xtask: the integration tests load eBPF programs: re-running cargo test with `sudo -E`"
                    );
                    status(cargo().args([
                        "test",
                        "--workspace",
                        "--exclude",
                        "tracer-ebpf",
                        "--no-run",
                    ]))?;
                }
                for args in &runs {
                    let mut c = cargo();
                    c.args(args);
                    if is_root() {
                        status(&mut c)?;
                    } else {
                        let mut s = Command::new("sudo");
                        s.arg("-E")
                            .arg("env")
                            .arg(format!("PATH={}", env::var("PATH").unwrap_or_default()));
                        s.arg(c.get_program()).args(c.get_args());
                        s.env("TRACER_EBPF_TOOLCHAIN", &toolchain);
                        status(&mut s)?;
                    }
                }
            }
            fuzz::run(&root, &fuzz)?;
        }
        Cmd::VmTest { kernels } => return vm::run(&root, &toolchain, kernels),
        Cmd::Bench(args) => return bench::bench(&root, &mut cargo(), &args),
        Cmd::Soak(args) => return bench::soak(&root, &mut cargo(), &args),
        Cmd::Loadgen(args) => return loadgen::main(&args),
        Cmd::Dist => {
            status(cargo().args(["build", "--release"]))?;
            let tarball = dist::tarball(&root)?;
            eprintln!("xtask: wrote {}", tarball.display());
            let deb = dist::deb(&root)?;
            eprintln!("xtask: wrote {}", deb.display());
        }
        Cmd::Lint => {
            status(cargo().args(["fmt", "--all", "--check"]))?;
            status(cargo().args([
                "clippy",
                "--workspace",
                "--exclude",
                "tracer-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))?;
            // The eBPF crate on the host target: same source, checked by the host clippy
            // (panic=abort: it is no_std with its own panic handler).
            status(cargo().args([
                "clippy",
                "-p",
                "tracer-ebpf",
                "--",
                "-C",
                "panic=abort",
                "-D",
                "warnings",
            ]))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = env::var_os("CARGO_MANIFEST_DIR").context("run me through `cargo xtask`")?;
    Ok(Path::new(&manifest)
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf())
}

/// Debian packages the privileged tests use: headless Chromium renders the SVG ladders;
/// nginx and curl are the real server and client; nftables makes drops, rejects and loss in
/// the tests' own namespaces; iproute2 creates them; tmux drives `tracer top`. And
/// [`UNIT_TEST_PACKAGES`].
const TEST_PACKAGES: &[&str] = &[
    "chromium",
    "nginx-light",
    "tmux",
    "curl",
    "nftables",
    "iproute2",
    "bpftool",
];

/// Debian packages the unit tests use: bpftool reads the kernel's BTF for the test that
/// checks the loader's struct offsets against it.
const UNIT_TEST_PACKAGES: &[&str] = &["bpftool"];

pub(crate) fn deb_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

pub(crate) fn apt_install(pkgs: &[&str]) -> anyhow::Result<()> {
    let sudo = !is_root();
    let apt = |args: &[&str]| {
        let mut c = if sudo {
            Command::new("sudo")
        } else {
            Command::new("apt-get")
        };
        if sudo {
            c.arg("apt-get");
        }
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    if Command::new("which")
        .arg("apt-get")
        .stdout(Stdio::null())
        .status()
        .map_or(true, |s| !s.success())
    {
        bail!(
            "apt-get not found: install {} with your package manager",
            pkgs.join(" ")
        );
    }
    status(&mut apt(&["update", "-q"]))?;
    status(apt(&["install", "-y", "-q", "--no-install-recommends"]).args(pkgs))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

pub(crate) fn status(cmd: &mut Command) -> anyhow::Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}
