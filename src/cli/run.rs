//! `cprkit run`: runs the selected trials with progress on stderr, then prints
//! the verdict table and every violation with its evidence.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use cprkit_cases::runner::{RunOptions, TrialResult, Verdicts, plan, run_all};
use cprkit_harness::leaks::{FdCensus, Leaks};
use cprkit_harness::trialdir::RunRoot;

use super::table::{Expectations, print_summary, print_table};
use super::{Select, adapters, load_cases};

pub fn run(select: &Select, jobs: usize, keep: bool) -> Result<ExitCode> {
    let cases = load_cases()?;
    let planned = plan(&adapters(&select.vmm)?, &cases, select.case.as_deref());
    if planned.is_empty() {
        bail!("no trial matches (see `cprkit list`)");
    }
    let before = FdCensus::take();
    let root = RunRoot::new().context("creating the run directory")?;
    let results = run_with_progress(&planned, jobs, root.path(), &RunOptions { keep })?;
    let expectations = Expectations::load(&results)?;
    print_table(&results, &expectations);
    let ok = print_summary(&results, &expectations);
    let leaks = Leaks::check(&before, Some(root.path()));
    drop(root);
    eprintln!("leak check: {leaks}");
    Ok(if ok && leaks.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs trials, printing one progress line per finished trial on stderr.
pub fn run_with_progress(
    planned: &[cprkit_cases::runner::Planned],
    jobs: usize,
    root: &std::path::Path,
    opts: &RunOptions,
) -> Result<Vec<TrialResult>> {
    let total = planned.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let progress = |r: &TrialResult| {
        let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let what = match &r.verdicts {
            Verdicts::Judged { .. } if r.violations().is_empty() => "ok".to_string(),
            Verdicts::Judged { .. } => format!("VIOLATES {}", r.violations().join(", ")),
            Verdicts::Error(e) => format!("ERROR {e}"),
            Verdicts::NotRun(why) => format!("not run: {why}"),
        };
        eprintln!(
            "[{n:>3}/{total}] {} ... {what} ({} ms)",
            r.name(),
            r.elapsed.as_millis()
        );
    };
    Ok(run_all(planned, jobs, root, opts, &progress))
}
