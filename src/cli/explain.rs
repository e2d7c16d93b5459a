//! `cprkit explain TRIAL`: runs one trial and draws its timeline as two
//! columns, SOURCE and TARGET, with the verdicts under it.

use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use cprkit_harness::explain::draw;
use cprkit_harness::trialdir::RunRoot;
use cprkit_suite::TrialId;
use cprkit_suite::runner::{RunOptions, Verdicts, plan, run_one};

use super::{adapters, load_cases};

pub fn run(trial: &str, keep: bool) -> Result<ExitCode> {
    let id = TrialId::parse(trial).ok_or_else(|| {
        anyhow!("`{trial}` is not a trial name: write VMM::CASE/POINT, as `cprkit list` prints")
    })?;
    let cases = load_cases()?;
    let planned = plan(
        &adapters(std::slice::from_ref(&id.vmm))?,
        &cases,
        Some(&id.name()),
    );
    let Some(p) = planned.first() else {
        bail!("no trial `{trial}` (see `cprkit list --vmm {}`)", id.vmm);
    };
    let root = RunRoot::new().context("creating the run directory")?;
    let result = run_one(p, root.path(), &RunOptions { keep });
    let clean = result.violations().is_empty();
    match result.verdicts {
        Verdicts::Judged {
            record, verdicts, ..
        } => {
            print!("{}", draw(&record, &verdicts));
            Ok(if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Verdicts::Error(e) => bail!("the trial could not run: {e}"),
        Verdicts::NotRun(why) => bail!("not run: {why}"),
    }
}
