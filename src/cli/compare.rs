//! `cprkit compare A B`: what B newly breaks and what it fixes, against A,
//! rule by rule (the comparison itself is `cprkit_report::compare`).
//!
//! A and B are each an existing file (not a directory), read as a saved
//! `cprkit run --format json` result (or a certification's report.json), or
//! else a `--vmm` value,
//! whose trials run here through `run`'s trial runner (both sides' trials in
//! one pool, `--jobs` at a time, progress on stderr). Markdown or JSON on
//! stdout. Exit 1 when B is worse, 0 when not, 2 for a usage error (an unknown
//! VMM, an unreadable or invalid file, no trial in common), 130 or 143 after
//! SIGINT or SIGTERM. The leak check of the trials run here is printed on
//! stderr and does not change the exit status.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use cprkit_adapters::VmmError;
use cprkit_harness::adapter::Adapter;
use cprkit_harness::leaks::Census;
use cprkit_report::compare::{self, Side};
use cprkit_suite::runner::{RunOptions, plan};

use super::interrupt;
use super::pool::Jobs;
use super::run::{print_leaks, run_with_progress};
use super::{RunDir, load_cases};

/// What `cprkit compare` prints on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people: the summary line, then a section per rule that changed.
    Markdown,
    /// docs/compare.schema.json.
    Json,
}

/// What an argument names.
enum Given {
    File(PathBuf),
    Vmm(Arc<dyn Adapter>),
}

/// An existing file (not a directory: the repository has one named `refvmm`)
/// is a saved result; anything else must be a `--vmm` value. `./refvmm` names
/// a file called `refvmm`.
fn given(which: &str, arg: &str) -> Result<Given> {
    let path = Path::new(arg);
    if path.is_file() {
        return Ok(Given::File(path.to_path_buf()));
    }
    match cprkit_adapters::adapter_for(arg) {
        Ok(a) => Ok(Given::Vmm(a)),
        Err(e @ VmmError::Unknown(_)) => {
            bail!("{which} `{arg}`: no such file, and not a --vmm value: {e}")
        }
        Err(e) => Err(anyhow!("{which} --vmm {arg}: {e}")),
    }
}

fn read_side(which: &str, arg: &str, path: &Path, case: Option<&str>) -> Result<Side> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{which}: reading {}", path.display()))?;
    Side::from_json(arg, &text, case).map_err(|e| anyhow!("{which}: {}: {e}", path.display()))
}

pub fn run(a: &str, b: &str, case: Option<&str>, jobs: Jobs, format: Format) -> Result<ExitCode> {
    let args = [("A", a), ("B", b)];
    let givens = [given("A", a)?, given("B", b)?];
    // Files first: a bad one is reported before any trial runs.
    let mut sides: Vec<Option<Side>> = vec![None, None];
    for (i, g) in givens.iter().enumerate() {
        if let Given::File(path) = g {
            let (which, arg) = args[i];
            sides[i] = Some(read_side(which, arg, path, case)?);
        }
    }
    let to_run: Vec<(usize, &Arc<dyn Adapter>)> = givens
        .iter()
        .enumerate()
        .filter_map(|(i, g)| match g {
            Given::Vmm(adapter) => Some((i, adapter)),
            Given::File(_) => None,
        })
        .collect();
    if !to_run.is_empty() {
        let cases = load_cases()?;
        let mut planned = Vec::new();
        let mut sizes = Vec::new();
        for (i, adapter) in &to_run {
            let mine = plan(std::slice::from_ref(*adapter), &cases, case);
            if mine.is_empty() {
                let (which, arg) = args[*i];
                bail!("{which} `{arg}`: no trial matches (see `cprkit list --vmm {arg}`)");
            }
            sizes.push(mine.len());
            planned.extend(mine);
        }
        let before = Census::take();
        let root = RunDir::new()?;
        let trials = run_with_progress(&planned, jobs, root.path(), &RunOptions::default());
        let leaks = trials.leaks(&before, root.path());
        drop(root);
        // Plan order: each side's trials in turn.
        let mut rest = &trials.results[..];
        for ((i, _), n) in to_run.iter().zip(sizes) {
            let (mine, after) = rest.split_at(n);
            rest = after;
            let (which, arg) = args[*i];
            sides[*i] = Some(Side::from_results(arg, mine).map_err(|e| anyhow!("{which}: {e}"))?);
        }
        print_leaks(&leaks);
        if let Some(line) = trials.interrupted() {
            eprintln!("{line}");
        }
    }
    let [Some(side_a), Some(side_b)] = [sides[0].take(), sides[1].take()] else {
        unreachable!("every side is a file or a VMM");
    };
    let comparison = compare::compare(&side_a, &side_b)?;
    match format {
        Format::Markdown => print!("{}", compare::markdown::render(&comparison)),
        Format::Json => print!("{}", comparison.to_json()),
    }
    Ok(interrupt::status(!comparison.is_worse()))
}
