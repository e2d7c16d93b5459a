//! `cprkit certify --vmm V --profile P --out DIR`: runs every trial of the
//! cases of profile P on V and writes the certification bundle to DIR
//! (report.md, report.json, junit.xml, timelines/; docs/certification.md).
//!
//! As in Kubernetes conformance, nothing may be skipped: a trial that cannot
//! run (not run on this host, or a kit error) fails the certification with its
//! reason, and known violations excuse nothing. A profile without any case
//! is not certified either: there is nothing to certify it by.
//!
//! Exit status: 0 certified, 1 not certified, 2 usage or environment error
//! (unknown VMM or profile, unreadable cases, DIR not writable), 130 or 143
//! when SIGINT or SIGTERM stopped it (not certified; no bundle is written).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use cprkit_harness::leaks::Census;
use cprkit_report::{Host, LeakCheck, Report, Vmm, write_bundle};
use cprkit_suite::Profile;
use cprkit_suite::runner::{RunOptions, Verdicts, plan};

use super::interrupt;
use super::pool::Jobs;
use super::run::{print_leaks, run_with_progress};
use super::{RunDir, adapters, load_cases};

pub fn run(vmm: &str, profile: Profile, out: &Path, jobs: Jobs, keep: bool) -> Result<ExitCode> {
    let adapter = adapters(&[vmm.to_string()])?;
    let cases: Vec<_> = load_cases()?
        .into_iter()
        .filter(|c| c.profile == profile)
        .collect();
    let planned = plan(&adapter, &cases, None);
    cprkit_report::bundle::prepare(out)
        .with_context(|| format!("preparing the bundle directory {}", out.display()))?;
    eprintln!(
        "cprkit certify: {vmm}, profile {profile}: {} cases, {} trials",
        cases.len(),
        planned.len()
    );
    let before = Census::take();
    let root = RunDir::new()?;
    let trials = run_with_progress(&planned, jobs, root.path(), &RunOptions { keep });
    let leaks = trials.leaks(&before, root.path());
    drop(root);
    print_leaks(&leaks);
    let results = &trials.results;

    if let (Some(line), Some(code)) = (trials.interrupted(), interrupt::exit_code()) {
        // A certification is of a whole run: what ran is counted, no bundle.
        let count = |f: fn(&Verdicts) -> bool| results.iter().filter(|r| f(&r.verdicts)).count();
        println!(
            "cprkit certify: {vmm}, profile {profile}: {line}; {} judged, {} errors",
            count(|v| matches!(v, Verdicts::Judged { .. })),
            count(|v| matches!(v, Verdicts::Error(_)))
        );
        println!("verdict: NOT CERTIFIED (interrupted)");
        println!("bundle: not written ({} holds no report)", out.display());
        return Ok(code);
    }

    let mut report = Report::certification(
        Vmm {
            name: vmm.to_string(),
            version: adapter[0].version(),
        },
        profile,
        Host::this(),
        results,
        leaks.as_ref().map(|leaks| LeakCheck {
            clean: leaks.is_clean(),
            text: leaks.to_string(),
        }),
    );
    write_bundle(out, &mut report, results)
        .with_context(|| format!("writing the bundle to {}", out.display()))?;

    let s = &report.summary;
    println!(
        "cprkit certify: {vmm} ({}), profile {profile}, contract {}",
        report.vmms[0].version, report.contract_version
    );
    println!(
        "{} trials: {} passed, {} failed, {} errors, {} not run",
        s.trials, s.passed, s.failed, s.errors, s.not_run
    );
    for why in &report.reasons {
        println!("  {why}");
    }
    println!("verdict: {}", report.verdict.name().to_uppercase());
    println!(
        "bundle: {} (report.md, report.json, junit.xml, timelines/)",
        out.display()
    );
    Ok(interrupt::status(report.verdict.is_ok()))
}
