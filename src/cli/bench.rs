//! `cprkit bench`: times, side by side in one run, a VMM's full matrix, the
//! kit's fault-free trial, and a bare handover (no interposer, no observation).
//! Figures, not a test: this machine is small and noisy.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use cprkit_harness::bare;
use cprkit_harness::trialdir::RunRoot;
use cprkit_suite::runner::{RunOptions, Verdicts, plan, run_all, run_one};

use super::{adapters, load_cases};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub fn run(vmm: &str, jobs: usize, samples: usize) -> Result<ExitCode> {
    let samples = samples.max(1);
    let cases = load_cases()?;
    let refvmm = adapters(&[vmm.to_string()])?;
    let root = RunRoot::new().context("creating the run directory")?;
    let opts = RunOptions::default();

    // Interleave the two small measurements so that noise hits both alike.
    let no_fault = plan(
        &refvmm,
        &cases,
        Some(&format!("{vmm}::memory-running/no-fault")),
    );
    let one = no_fault
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
    for _ in 0..samples {
        let r = run_one(one, root.path(), &opts);
        if let Verdicts::Error(e) = &r.verdicts {
            return Err(anyhow!("kit trial: {e}"));
        }
        kit.push(r.elapsed);
        if let Some(p) = with_device.first() {
            let r = run_one(p, root.path(), &opts);
            if let Verdicts::Error(e) = &r.verdicts {
                return Err(anyhow!("kit trial with a device: {e}"));
            }
            kit_device.push(r.elapsed);
        }
        let b = bare::handover(refvmm[0].as_ref(), root.path())?;
        whole.push(b.whole);
        handover.push(b.handover);
    }

    let matrix = plan(&refvmm, &cases, None);
    let started = Instant::now();
    let results = run_all(&matrix, jobs, root.path(), &opts, &|_| {});
    let wall = started.elapsed();
    let bad = results
        .iter()
        .filter(|r| !matches!(r.verdicts, Verdicts::Judged { .. }))
        .count();

    let (kit, whole, handover) = (median(kit), median(whole), median(handover));
    println!("cprkit bench: {vmm}, {jobs} jobs, medians of {samples} samples");
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
    Ok(ExitCode::SUCCESS)
}
