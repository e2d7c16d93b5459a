//! `cprkit bench`: times, side by side in one run, a VMM's full matrix, the
//! kit's fault-free trial, and a bare handover (no interposer, no observation).
//! Figures, not a test: this machine is small and noisy.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use cprkit_harness::bare;
use cprkit_suite::runner::{Planned, RunOptions, Verdicts, plan};

use super::interrupt;
use super::pool::Jobs;
use super::run::run_trials;
use super::{RunDir, adapters, load_cases};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// One trial on a worker thread (so that a signal is seen while it runs); `None`
/// if a signal kept it from running.
fn one(p: &Planned, root: &Path, opts: &RunOptions) -> Result<Option<Duration>> {
    let trials = run_trials(
        std::slice::from_ref(p),
        Jobs::Fixed(1),
        root,
        opts,
        &mut |_| {},
    );
    let r = trials.results.into_iter().next().expect("one trial");
    match &r.verdicts {
        Verdicts::NotRun(_) if trials.stopped.is_some() => Ok(None),
        Verdicts::Error(e) => Err(anyhow!("{}: {e}", r.name())),
        _ => Ok(Some(r.elapsed)),
    }
}

pub fn run(vmm: &str, jobs: Jobs, samples: usize) -> Result<ExitCode> {
    let samples = samples.max(1);
    let cases = load_cases()?;
    let refvmm = adapters(&[vmm.to_string()])?;
    let root = RunDir::new()?;
    let opts = RunOptions::default();

    // Interleave the two small measurements so that noise hits both alike.
    let no_fault = plan(
        &refvmm,
        &cases,
        Some(&format!("{vmm}::memory-running/no-fault")),
    );
    let one_trial = no_fault
        .first()
        .ok_or_else(|| anyhow!("no memory-running case"))?;
    // The same handover with the kit's vhost-user device, where a case has it.
    let with_device = plan(
        &refvmm,
        &cases,
        Some(&format!("{vmm}::vhost-user-running/no-fault")),
    );
    let (mut kit, mut kit_device, mut whole, mut handover) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let stopped = || interrupt::STOP.count() > 0;
    for _ in 0..samples {
        let Some(t) = one(one_trial, root.path(), &opts)? else {
            break;
        };
        kit.push(t);
        if let Some(p) = with_device.first() {
            let Some(t) = one(p, root.path(), &opts)? else {
                break;
            };
            kit_device.push(t);
        }
        if stopped() {
            break;
        }
        let b = bare::handover(refvmm[0].as_ref(), root.path())?;
        whole.push(b.whole);
        handover.push(b.handover);
        if stopped() {
            break;
        }
    }

    let matrix = plan(&refvmm, &cases, None);
    let mut wall = None;
    let mut bad = 0;
    if !stopped() {
        let started = Instant::now();
        let trials = run_trials(&matrix, jobs, root.path(), &opts, &mut |_| {});
        if trials.stopped.is_none() {
            wall = Some(started.elapsed());
        }
        bad = trials
            .results
            .iter()
            .filter(|r| !matches!(r.verdicts, Verdicts::Judged { .. }))
            .count();
    }
    drop(root);

    let taken = whole.len();
    println!("cprkit bench: {vmm}, {jobs} jobs, medians of {taken} samples");
    if let Some(wall) = wall {
        println!(
            "  {:<44} {:>10}",
            "full matrix (wall)",
            format!("{:.2} s", wall.as_secs_f64())
        );
        println!(
            "  {:<44} {:>10}",
            format!("  trials ({bad} not judged)"),
            matrix.len()
        );
        println!(
            "  {:<44} {:>10}",
            "  mean per trial (wall / trials)",
            ms(wall / matrix.len().max(1) as u32)
        );
    }
    // None when a signal came before the first whole sample.
    if taken > 0 {
        let (kit, whole, handover) = (median(kit), median(whole), median(handover));
        println!(
            "  {:<44} {:>10}",
            "kit trial, memory-running/no-fault",
            ms(kit)
        );
        if !kit_device.is_empty() {
            println!(
                "  {:<44} {:>10}",
                "kit trial, vhost-user-running/no-fault",
                ms(median(kit_device))
            );
        }
        println!(
            "  {:<44} {:>10}",
            "bare handover, start to target running",
            ms(whole)
        );
        println!(
            "  {:<44} {:>10}",
            "bare handover, migrate to target running",
            ms(handover)
        );
        println!(
            "  {:<44} {:>9.2}x",
            "kit trial / bare handover",
            kit.as_secs_f64() / whole.as_secs_f64()
        );
    }
    if let Some(code) = interrupt::exit_code() {
        let sig = interrupt::STOP
            .signal()
            .map(interrupt::name)
            .unwrap_or_default();
        println!(
            "interrupted by {sig}: {taken} of {samples} samples taken, the full matrix {}",
            if wall.is_some() { "timed" } else { "not timed" }
        );
        return Ok(code);
    }
    Ok(ExitCode::SUCCESS)
}
