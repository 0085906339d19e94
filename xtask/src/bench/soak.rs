//! `cargo xtask soak`: tracer against a long churn; its RSS during and after, its capture of
//! the generator's transitions against tracefs, each program's runs and recursion misses.
use std::{
    fmt::Write as _,
    fs::{self, File},
    path::Path,
    process::{Command, ExitCode},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::loadgen;

use super::{
    SoakArgs,
    proc::{Proc, miss_loses, prog_name, prog_stats, status_kib},
    report::{listen_port, machine_facts},
    run::{run_loadgen, tracer_binary},
    tracefs::{BpfStats, TraceCount, ensure_tracefs, require_root},
};

pub fn soak(root: &Path, cargo: &mut Command, args: &SoakArgs) -> anyhow::Result<ExitCode> {
    require_root()?;
    let out = root.join(&args.out);
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let tracer = tracer_binary(root, cargo, args.tracer.as_deref(), &out)?;
    ensure_tracefs()?;
    let gen_args = loadgen::Args {
        conns: args.conns,
        shape: loadgen::Shape::plain(args.concurrency),
        port: listen_port(),
        rate: None,
        hold: None,
        orphans: false,
        max_secs: args.max_secs,
        no_netns: false,
        child: false,
        progress: 10.0,
    };
    let counter = TraceCount::new(&gen_args)?;
    // As the bench does: the programs' run counts, beside their recursion misses (counted
    // either way), say whether a transition the tracer lacks reached its program at all.
    let _stats = BpfStats::enable()?;
    let stdout =
        File::create(&args.output).with_context(|| format!("opening {}", args.output.display()))?;
    let mut targs: Vec<String> = vec!["-o".into(), "json".into()];
    // Only the generator's ports (filtered in the kernel), so that tracer's transition count
    // is what it captured of the transitions the tracefs instance counts on those ports.
    let ports = gen_args.port..=(u64::from(gen_args.port) + gen_args.listeners() - 1) as u16;
    if !args.all_ports {
        for p in ports {
            targs.extend(["-p".into(), p.to_string()]);
        }
    }
    targs.extend(args.tracer_args.iter().cloned());
    eprintln!(
        "soak: {} {} > {}",
        tracer.display(),
        targs.join(" "),
        args.output.display()
    );
    let mut proc = Proc::spawn(Command::new(&tracer).args(&targs), stdout)?;
    let attached = proc.wait_for_stderr("tracer: attached to", Duration::from_secs(30))?;
    eprintln!(
        "soak: tracer attached after {attached:.3}s; starting {} connections",
        args.conns
    );

    // Sample RSS once a second in the background while the churn runs.
    let pid = proc.pid;
    let progs_before = prog_stats(pid);
    let samples: Arc<Mutex<Vec<(f64, u64)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t0 = Instant::now();
    let sampler = {
        let samples = Arc::clone(&samples);
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(rss) = status_kib(pid, "VmRSS:")
                    && let Ok(mut s) = samples.lock()
                {
                    s.push((t0.elapsed().as_secs_f64(), rss));
                }
                thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let gen_result = run_loadgen(&gen_args);
    let churn_end = t0.elapsed().as_secs_f64();
    let lg = match gen_result {
        Ok(g) => g,
        Err(e) => {
            proc.interrupt();
            return Err(e);
        }
    };
    eprintln!(
        "soak: generator done: {} connections in {:.1}s ({:.0}/s); watching RSS for {:.0}s",
        lg.conns, lg.elapsed_s, lg.conns_per_s, args.after_secs
    );
    thread::sleep(Duration::from_secs_f64(args.after_secs.max(1.0)));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sampler.join();
    let hwm_kib = status_kib(pid, "VmHWM:");
    // Each program's runs and recursion misses from the attach to the end of the watch.
    let progs: Vec<(u64, String, u64, u64)> = prog_stats(pid)
        .into_iter()
        .map(|(id, s1)| {
            let s0 = progs_before.get(&id).copied().unwrap_or_default();
            (
                id,
                prog_name(id),
                s1.run_cnt.saturating_sub(s0.run_cnt),
                s1.recursion_misses.saturating_sub(s0.recursion_misses),
            )
        })
        .collect();
    let exit = proc.stop(Duration::from_secs(60))?;
    let kernel = counter.count()?;
    drop(counter);
    let summary = exit.summary_line.clone().unwrap_or_default();
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let during_max = samples
        .iter()
        .filter(|(t, _)| *t <= churn_end)
        .map(|&(_, r)| r)
        .max();
    let after: Vec<(f64, u64)> = samples
        .iter()
        .copied()
        .filter(|(t, _)| *t > churn_end + 1.0)
        .collect();
    let after_first = after.first().map(|&(_, r)| r);
    let after_last = after.last().map(|&(_, r)| r);
    let mib =
        |k: Option<u64>| k.map_or_else(|| "?".into(), |k| format!("{:.1}", k as f64 / 1024.0));
    let growing = match (after_first, after_last) {
        (Some(a), Some(b)) => b > a + a / 50, // more than 2% up while idle
        _ => false,
    };
    let mut md = String::new();
    let _ = writeln!(md, "| figure | value |\n|---|---|");
    let _ = writeln!(
        md,
        "| connections | {} in {:.1}s ({:.0}/s, {} failed{}) |",
        lg.conns,
        lg.elapsed_s,
        lg.conns_per_s,
        lg.failed,
        if lg.timed_out {
            ", stopped by --max-secs"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "| transitions emitted (tracefs) | {kernel} (expected {}) |",
        lg.expected_transitions
    );
    if args.all_ports {
        let _ = writeln!(
            md,
            "| tracer transitions (all TCP on the host: not comparable with tracefs) | {} |",
            exit.transitions
                .map_or_else(|| "?".into(), |t| t.to_string())
        );
    } else {
        let _ = writeln!(
            md,
            "| tracer transitions on the generator's ports (`-p`): captured / tracefs | {} / {kernel}{} |",
            exit.transitions
                .map_or_else(|| "?".into(), |t| t.to_string()),
            exit.transitions
                .filter(|_| kernel > 0)
                .map_or_else(String::new, |t| format!(
                    " ({:.3}%, {} missing)",
                    t as f64 * 100.0 / kernel as f64,
                    kernel.saturating_sub(t)
                ))
        );
    }
    let _ = writeln!(
        md,
        "| tracer lost | {} |",
        exit.lost.map_or_else(|| "?".into(), |t| t.to_string())
    );
    let _ = writeln!(
        md,
        "| peak RSS (VmHWM) | {} MiB |",
        mib(hwm_kib.or(exit.maxrss_kib))
    );
    let _ = writeln!(
        md,
        "| highest RSS sampled during the churn | {} MiB |",
        mib(during_max)
    );
    let _ = writeln!(md, "| RSS 1 s after the churn | {} MiB |", mib(after_first));
    let _ = writeln!(
        md,
        "| RSS {:.0} s after the churn | {} MiB |",
        args.after_secs,
        mib(after_last)
    );
    let _ = writeln!(
        md,
        "| still growing after the churn | {} |",
        if growing { "YES" } else { "no" }
    );
    let _ = writeln!(md, "| tracer CPU | {:.1} s |", exit.cpu_total_s);
    let _ = writeln!(
        md,
        "\nRuns and recursion misses by program (a miss is a run the kernel skipped because another BPF program was running on that CPU; from `/proc/PID/fdinfo`, attach to stop; each miss loses what that program would have sent):\n\n| program | runs | recursion misses | a miss loses |\n|---|---|---|---|"
    );
    for (id, name, runs, misses) in &progs {
        let _ = writeln!(
            md,
            "| `{name}` (id {id}) | {runs} | {misses} | {} |",
            miss_loses(name)
        );
    }
    // The transition program runs for every TCP transition on the host: its runs plus its
    // misses are what reached it, set against what the kernel emitted on the generator's
    // ports; and what tracer lacks beyond its misses was lost without a count.
    if let Some((_, _, runs, misses)) = progs
        .iter()
        .find(|(_, name, _, _)| name.starts_with("inet_sock_set"))
    {
        let _ = writeln!(
            md,
            "\n`inet_sock_set_state` runs + misses: {} (every TCP transition on the host; tracefs counted {kernel} on the generator's ports).",
            runs + misses
        );
        if let (false, Some(t)) = (args.all_ports, exit.transitions) {
            let missing = kernel.saturating_sub(t);
            let _ = writeln!(
                md,
                "Transitions on the generator's ports missing from tracer: {missing}; its recursion misses: {misses}; so at least {} were lost without being counted.",
                missing.saturating_sub(*misses)
            );
        }
    }
    let _ = writeln!(md, "\ntracer's exit line: `{summary}`");
    let soak_json = serde_json::json!({
        "machine": machine_facts(Some(&tracer)),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "generator": lg,
        "kernel_transitions": kernel,
        "tracer_transitions": exit.transitions,
        "tracer_filtered_to_generator_ports": !args.all_ports,
        "programs": progs
            .iter()
            .map(|(id, name, runs, misses)| serde_json::json!({
                "id": id, "name": name, "runs": runs, "recursion_misses": misses,
            }))
            .collect::<Vec<_>>(),
        "tracer_lost": exit.lost,
        "vm_hwm_kib": hwm_kib,
        "ru_maxrss_kib": exit.maxrss_kib,
        "rss_samples_kib": samples,
        "churn_end_s": churn_end,
        "rss_growing_after_churn": growing,
        "tracer_cpu_s": exit.cpu_total_s,
        "tracer_summary": summary,
    });
    fs::write(out.join("soak.md"), &md).context("writing soak.md")?;
    fs::write(
        out.join("soak.json"),
        serde_json::to_string_pretty(&soak_json).context("encoding soak.json")?,
    )
    .context("writing soak.json")?;
    println!("{md}");
    eprintln!("soak: wrote {}", out.join("soak.md").display());
    Ok(if growing {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
