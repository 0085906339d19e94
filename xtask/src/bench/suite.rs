//! `cargo xtask bench`: the workloads, the interleaved runs, the report files.
use std::{
    collections::BTreeMap,
    fs,
    path::Path,
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::loadgen;

use super::{
    BenchArgs, Tool,
    report::{Report, human_count, listen_port, machine_facts, markdown, summarise},
    run::{Ctx, RunResult, Workload, install_peers, run_one, tracer_binary, unavailable},
    tracefs::{BpfStats, ensure_tracefs, require_root},
};

pub fn bench(root: &Path, cargo: &mut Command, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    require_root()?;
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    let out = root.join(&args.out);
    let runs_dir = out.join("runs");
    fs::create_dir_all(&runs_dir).with_context(|| format!("creating {}", runs_dir.display()))?;
    let mut tools: Vec<Tool> = if args.tools.is_empty() {
        Tool::ALL.to_vec()
    } else {
        args.tools.clone()
    };
    if args.compare.is_some() {
        tools.push(Tool::CompareJson);
    }
    tools.sort();
    tools.dedup();
    if args.peers {
        install_peers(&tools)?;
    }
    let tracer = if tools.iter().any(|t| t.is_tracer()) || args.orphans.is_some() {
        Some(tracer_binary(root, cargo, args.tracer.as_deref(), &out)?)
    } else {
        None
    };
    let mut skipped: BTreeMap<Tool, String> = BTreeMap::new();
    for &t in &tools {
        if let Some(why) = unavailable(t) {
            eprintln!("bench: skipping {}: {why}", t.name());
            skipped.insert(t, why);
        }
    }
    ensure_tracefs()?;
    let _stats = BpfStats::enable()?;
    let compare = match &args.compare {
        Some(p) => {
            let dst = out.join("tracer-compare");
            fs::copy(p, &dst)
                .with_context(|| format!("copying {} to {}", p.display(), dst.display()))?;
            Some(dst)
        }
        None => None,
    };
    let ctx = Ctx {
        tracer,
        compare,
        runs_dir,
        keep_output: args.keep_output,
        only_ports: args.only_ports,
        family: args.shape.family,
    };

    let base = |conns: u64| loadgen::Args {
        conns,
        shape: args.shape,
        port: listen_port(),
        rate: None,
        hold: None,
        orphans: false,
        max_secs: 600.0,
        no_netns: false,
        child: false,
        progress: 0.0,
    };
    let mut workloads = Vec::new();
    let default_scale = [100_000];
    let scales: &[u64] = if args.scales.is_empty()
        && args.sustained.is_none()
        && args.open.is_none()
        && args.burst.is_none()
        && args.orphans.is_none()
    {
        &default_scale
    } else {
        &args.scales
    };
    for &n in scales {
        workloads.push(Workload {
            name: format!("churn {}", human_count(n)),
            gen_args: base(n),
            tools: tools.clone(),
            reps: args.reps,
        });
    }
    if let Some(rate) = args.sustained {
        let n = (rate * args.sustained_secs).round() as u64;
        if n == 0 {
            bail!("--sustained × --sustained-secs makes no connection");
        }
        let mut g = base(n);
        g.rate = Some(rate);
        g.max_secs = args.sustained_secs * 3.0 + 30.0;
        workloads.push(Workload {
            name: format!("sustained {rate:.0}/s × {:.0}s", args.sustained_secs),
            gen_args: g,
            tools: tools
                .iter()
                .copied()
                .filter(|t| {
                    matches!(
                        t,
                        Tool::Untraced | Tool::TracerJson | Tool::CompareJson | Tool::Tcpstates
                    )
                })
                .collect(),
            reps: 1,
        });
    }
    if let Some(n) = args.open {
        let mut g = base(n);
        g.hold = Some(3.0);
        workloads.push(Workload {
            name: format!("{} open at once", human_count(n)),
            gen_args: g,
            tools: tools
                .iter()
                .copied()
                .filter(|t| matches!(t, Tool::Untraced | Tool::TracerJson | Tool::CompareJson))
                .collect(),
            reps: 1,
        });
    }

    if let Some(n) = args.burst {
        let mut g = base(n);
        g.hold = Some(args.burst_hold);
        workloads.push(Workload {
            name: format!("burst {}", human_count(n)),
            gen_args: g,
            tools: tools.clone(),
            reps: args.reps,
        });
    }

    let started = Instant::now();
    let mut results: Vec<RunResult> = Vec::new();
    for w in &workloads {
        let active: Vec<Tool> = w
            .tools
            .iter()
            .copied()
            .filter(|t| !skipped.contains_key(t))
            .collect();
        for rep in 0..w.reps {
            // Rotate the order each rep so no tool always runs first (or after the same one).
            let k = rep as usize % active.len().max(1);
            let order: Vec<Tool> = active[k..].iter().chain(&active[..k]).copied().collect();
            for tool in order {
                if skipped.contains_key(&tool) {
                    continue;
                }
                eprintln!(
                    "bench: [{:>5.0}s] {} rep {}/{}: {}",
                    started.elapsed().as_secs_f64(),
                    w.name,
                    rep + 1,
                    w.reps,
                    tool.name()
                );
                match run_one(&ctx, w, tool, rep) {
                    Ok(r) => {
                        eprintln!("bench:   {}", r.one_line());
                        results.push(r);
                    }
                    Err(e) => {
                        // A peer that cannot start is skipped from then on, with the reason.
                        eprintln!("bench:   {} failed: {e:#}", tool.name());
                        if tool == Tool::Untraced {
                            return Err(e).context("the untraced baseline failed");
                        }
                        skipped.insert(tool, format!("{e:#}"));
                    }
                }
            }
        }
    }

    let mut orphan_runs = Vec::new();
    if let (Some(n), Some(tracer)) = (args.orphans, ctx.tracer.as_deref()) {
        if !(args.orphans_hold >= 5.0 && args.orphans_hold.is_finite()) {
            bail!("--orphans-hold must be at least 5 s (the CPU is taken over its quiet part)");
        }
        for rep in 0..args.reps {
            // Interleaved, the order turned each rep.
            let mut kinds = [("orphans", true), ("held open", false)];
            if rep % 2 == 1 {
                kinds.reverse();
            }
            for (kind, orphans) in kinds {
                let mut g = base(n);
                g.hold = Some(args.orphans_hold);
                g.orphans = orphans;
                eprintln!(
                    "bench: [{:>5.0}s] {kind} {} rep {}/{}",
                    started.elapsed().as_secs_f64(),
                    human_count(n),
                    rep + 1,
                    args.reps
                );
                let r = super::orphans::run(tracer, &g, kind, rep + 1)
                    .with_context(|| format!("the {kind} run"))?;
                eprintln!(
                    "bench:   CPU in the hold {:?} %, RSS {:?} MiB, {:?} dumps (longest {:?} ms, {:?} sockets), {} ends reported, latency p50 {:?} p99 {:?} max {:?} ms {}",
                    r.hold_cpu_pct,
                    r.hold_rss_mib,
                    r.dumps,
                    r.dump_longest_ms,
                    r.dump_longest_sockets,
                    r.time_wait_reports,
                    r.latency_p50_ms,
                    r.latency_p99_ms,
                    r.latency_max_ms,
                    r.notes.join("; ")
                );
                orphan_runs.push(r);
            }
        }
    }

    let report = Report {
        machine: machine_facts(ctx.tracer.as_deref()),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        wall_s: started.elapsed().as_secs_f64(),
        skipped: skipped
            .iter()
            .map(|(t, why)| (t.name().to_string(), why.clone()))
            .collect(),
        summary: summarise(&workloads, &results),
        runs: results,
        orphans: orphan_runs,
    };
    let md = markdown(&report);
    fs::write(out.join("results.md"), &md).context("writing results.md")?;
    fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&report).context("encoding results")?,
    )
    .context("writing results.json")?;
    println!("{md}");
    eprintln!(
        "bench: wrote {} and results.json",
        out.join("results.md").display()
    );
    Ok(ExitCode::SUCCESS)
}
