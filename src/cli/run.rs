//! `cprkit run`: runs the selected trials with progress on stderr, then prints
//! the verdict table and every violation with its evidence (`--format text`),
//! or the run as report.json's shape (`json`) or as JUnit XML (`junit`).
//! Whatever the format, the exit status is the same: violations are reconciled
//! against the VMMs' known violations.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use cprkit_harness::leaks::{FdCensus, Leaks};
use cprkit_harness::trialdir::RunRoot;
use cprkit_report::{Host, LeakCheck, Report, Vmm};
use cprkit_suite::known::KnownByVmm;
use cprkit_suite::runner::{RunOptions, TrialResult, Verdicts, run_all};

use super::table::{Expectations, print_summary, print_table};
use super::{Select, load_cases};

/// What `cprkit run` prints on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The verdict table and the violations with their evidence.
    Text,
    /// report.json's shape (docs/report.schema.json), `kind: run`.
    Json,
    /// JUnit XML: a test case per trial.
    Junit,
}

pub fn run(select: &Select, jobs: usize, keep: bool, format: Format) -> Result<ExitCode> {
    let cases = load_cases()?;
    let selection = select.select(&cases)?;
    if selection.matching == 0 {
        bail!("no trial matches (see `cprkit list`)");
    }
    let planned = &selection.planned;
    if let Some(p) = select.partition {
        eprintln!(
            "partition {p}: {} of the {} trials selected",
            planned.len(),
            selection.matching
        );
    }
    let before = FdCensus::take();
    let root = RunRoot::new().context("creating the run directory")?;
    let results = run_with_progress(planned, jobs, root.path(), &RunOptions { keep })?;
    let leaks = Leaks::check(&before, Some(root.path()));
    drop(root);
    let version_of = |vmm: &str| {
        selection
            .adapters
            .iter()
            .find(|a| a.name() == vmm)
            .map(|a| a.version())
            .unwrap_or_default()
    };
    let ok = match format {
        Format::Text => {
            let expectations = Expectations::load(&results, version_of)?;
            print_table(&results, &expectations);
            print_summary(&results, &expectations)
        }
        Format::Json | Format::Junit => {
            let known = KnownByVmm::load(&results, version_of)?;
            let report = Report::run(
                selection
                    .adapters
                    .iter()
                    .map(|a| Vmm {
                        name: a.name().to_string(),
                        version: a.version(),
                    })
                    .collect(),
                Host::this(),
                &results,
                &known,
                Some(LeakCheck {
                    clean: leaks.is_clean(),
                    text: leaks.to_string(),
                }),
            );
            if format == Format::Json {
                print!("{}", report.to_json());
            } else {
                print!("{}", cprkit_report::junit::render(&report));
            }
            report.reconcile.as_ref().is_some_and(|r| r.ok)
        }
    };
    eprintln!("leak check: {leaks}");
    Ok(if ok && leaks.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs trials, printing one progress line per finished trial on stderr.
pub fn run_with_progress(
    planned: &[cprkit_suite::runner::Planned],
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
        if let Verdicts::Judged { record, .. } = &r.verdicts
            && record.kept_dir
        {
            eprintln!("          kept: {}", record.dir.display());
        }
    };
    Ok(run_all(planned, jobs, root, opts, &progress))
}
