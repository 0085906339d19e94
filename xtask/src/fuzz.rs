//! `cargo xtask test --fuzz`: a bounded run of every cargo-fuzz target in tracer/fuzz/.
//!
//! Installs cargo-fuzz when missing, builds the targets once (libFuzzer, AddressSanitizer,
//! debug assertions and overflow checks), then runs each for `--fuzz-seconds` from its seed
//! corpus (tracer/fuzz/seeds/TARGET, committed) and its working corpus
//! (tracer/fuzz/corpus/TARGET, kept between runs, not committed). A crash, a panic, an
//! allocation over the malloc limit or an RSS over the RSS limit fails the run; the input is
//! left in tracer/fuzz/artifacts/TARGET/ and cargo-fuzz prints how to reproduce it.
//!
//! cargo-fuzz needs `-Z` flags: it runs on rustup `nightly` when installed, otherwise on the
//! default (stable) toolchain with `RUSTC_BOOTSTRAP=1`. The build does not need the eBPF
//! toolchain: cargo-fuzz passes `--cfg fuzzing`, and tracer/build.rs then skips the eBPF build.
use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::status;

/// The fuzz targets (`[[bin]]`s of tracer/fuzz/Cargo.toml) and the largest input each gets
/// (libFuzzer `-max_len`). Adding a target: one line here.
const TARGETS: &[(&str, usize)] = &[
    // A ring-buffer record is 112 bytes; room for trailing bytes.
    ("decode", 256),
    // Real format files are 0.5–2 KiB.
    ("format", 8192),
    // Recordings: a header and a few dozen ~400-byte lines.
    ("replay", 16384),
];

/// cargo-fuzz release installed when it is missing (builds with Rust 1.95).
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// libFuzzer limits: RSS, and any single allocation (inputs are a few KiB at most).
const RSS_LIMIT_MB: u32 = 2048;
const MALLOC_LIMIT_MB: u32 = 512;
/// Seconds one input may take before it counts as a hang.
const INPUT_TIMEOUT_S: u32 = 10;

#[derive(clap::Args, Clone, Debug)]
pub(crate) struct FuzzArgs {
    /// After the tests, run each cargo-fuzz target (tracer/fuzz) for --fuzz-seconds; installs
    /// cargo-fuzz when missing.
    #[arg(long)]
    pub fuzz: bool,
    /// Only the fuzz targets, no tests (implies --fuzz).
    #[arg(long)]
    pub fuzz_only: bool,
    /// How long each fuzz target runs.
    #[arg(long, value_name = "N", default_value_t = 60)]
    pub fuzz_seconds: u32,
}

/// Builds and runs every target for `--fuzz-seconds`; nothing unless `--fuzz`/`--fuzz-only`.
pub(crate) fn run(root: &Path, args: &FuzzArgs) -> anyhow::Result<()> {
    if !(args.fuzz || args.fuzz_only) {
        return Ok(());
    }
    if args.fuzz_seconds == 0 {
        bail!("--fuzz-seconds must be at least 1");
    }
    ensure_cargo_fuzz()?;
    let dir = root.join("tracer");
    let fuzz_dir = dir.join("fuzz");
    let nightly = has_nightly();
    let cargo_fuzz = |sub: &str| {
        let mut c = if nightly {
            let mut c = Command::new("rustup");
            c.args(["run", "nightly", "cargo"]);
            c
        } else {
            // The toolchain cargo picks (default or RUSTUP_TOOLCHAIN); cargo-fuzz's `-Z` flags
            // need this on a stable compiler.
            let mut c = Command::new("cargo");
            c.env("RUSTC_BOOTSTRAP", "1");
            c
        };
        // Release, with debug assertions and overflow checks; address sanitizer (default).
        c.args(["fuzz", sub, "--debug-assertions", "--target-dir"])
            .arg(fuzz_dir.join("target"))
            .current_dir(&dir);
        c
    };
    eprintln!(
        "xtask: building the fuzz targets ({}) with cargo-fuzz on {}",
        TARGETS.iter().map(|t| t.0).collect::<Vec<_>>().join(", "),
        if nightly {
            "rustup nightly"
        } else {
            "the default toolchain with RUSTC_BOOTSTRAP=1 (no rustup nightly)"
        }
    );
    status(&mut cargo_fuzz("build"))?;

    let mut results = Vec::new();
    for &(target, max_len) in TARGETS {
        let corpus = fuzz_dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        let mut c = cargo_fuzz("run");
        c.arg(target).arg(&corpus);
        let seeds = fuzz_dir.join("seeds").join(target);
        if seeds.is_dir() {
            c.arg(&seeds);
        }
        c.arg("--").args([
            format!("-max_total_time={}", args.fuzz_seconds),
            format!("-max_len={max_len}"),
            format!("-rss_limit_mb={RSS_LIMIT_MB}"),
            format!("-malloc_limit_mb={MALLOC_LIMIT_MB}"),
            format!("-timeout={INPUT_TIMEOUT_S}"),
            "-print_final_stats=1".into(),
        ]);
        let dict = fuzz_dir.join("dicts").join(format!("{target}.dict"));
        if dict.is_file() {
            c.arg(format!("-dict={}", dict.display()));
        }
        eprintln!(
            "xtask: fuzzing `{target}` for {} s (max_len {max_len})",
            args.fuzz_seconds
        );
        results.push((target, run_target(&mut c)?));
    }

    eprintln!(
        "xtask: fuzzing summary ({} s per target):",
        args.fuzz_seconds
    );
    let mut failed = Vec::new();
    for (target, r) in &results {
        let show = |n: Option<u64>| n.map_or("?".into(), |n| n.to_string());
        eprintln!(
            "xtask:   {target:<12} {:<4}  {} runs, {} exec/s, corpus {} inputs",
            if r.ok { "ok" } else { "FAIL" },
            show(r.runs),
            show(r.rate),
            show(r.corpus),
        );
        if !r.ok {
            failed.push(*target);
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzz target(s) {} failed: the input is in tracer/fuzz/artifacts/TARGET/ (see the output above for how to reproduce it)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// What one libFuzzer run reported.
struct Outcome {
    ok: bool,
    runs: Option<u64>,
    rate: Option<u64>,
    corpus: Option<u64>,
}

/// Runs one target, passing its output through and picking the final stats out of it.
fn run_target(cmd: &mut Command) -> anyhow::Result<Outcome> {
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let mut out = Outcome {
        ok: false,
        runs: None,
        rate: None,
        corpus: None,
    };
    let stderr = child.stderr.take().context("no stderr")?;
    for line in BufReader::new(stderr).split(b'\n') {
        let line = line.context("reading cargo fuzz output")?;
        let line = String::from_utf8_lossy(&line);
        eprintln!("{line}");
        let num = |s: &str| s.trim().parse::<u64>().ok();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            // `-print_final_stats=1`, also after a crash.
            ["stat::number_of_executed_units:", n] => out.runs = num(n),
            ["stat::average_exec_per_sec:", n] => out.rate = num(n),
            // `#384764  DONE  cov: 602 ft: 1987 corp: 518/204Kb ...`
            [n, _, ..] if n.starts_with('#') => {
                if let Some(c) = words.iter().skip_while(|w| **w != "corp:").nth(1) {
                    out.corpus = c.split('/').next().and_then(num);
                }
            }
            _ => {}
        }
    }
    out.ok = child.wait().context("waiting for cargo fuzz")?.success();
    Ok(out)
}

/// Whether rustup has an undated `nightly` (what `rustup run nightly` uses).
fn has_nightly() -> bool {
    crate::toolchain::rustup_toolchains().is_ok_and(|ts| {
        ts.iter().any(|t| match t.strip_prefix("nightly") {
            Some("") => true,
            // `nightly-x86_64-unknown-linux-gnu`, not a dated `nightly-2025-01-01-…`.
            Some(rest) => rest
                .strip_prefix('-')
                .is_some_and(|r| !r.starts_with(|c: char| c.is_ascii_digit())),
            None => false,
        })
    })
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success());
    if let Some(o) = installed {
        eprintln!(
            "xtask: {} already installed, skipping",
            String::from_utf8_lossy(&o.stdout).trim()
        );
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (cargo install, 2–3 minutes)");
    status(Command::new("cargo").args([
        "install",
        "--locked",
        &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
    ]))
}
