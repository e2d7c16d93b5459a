//! `cprkit explain TRIAL`: runs one trial and draws its timeline as two
//! columns, SOURCE and TARGET, with the verdicts under it.

use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use cprkit_harness::explain::draw;
use cprkit_suite::TrialId;
use cprkit_suite::runner::{RunOptions, Verdicts, plan};

use super::interrupt;
use super::run::run_trials;
use super::{RunDir, adapters, load_cases};

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
    let root = RunDir::new()?;
    let trials = run_trials(
        std::slice::from_ref(p),
        super::pool::Jobs::Fixed(1),
        root.path(),
        &RunOptions { keep },
        &mut |_| {},
    );
    drop(root);
    let result = trials.results.into_iter().next().expect("one trial");
    let clean = result.violations().is_empty();
    // Stopped by a signal: the trial is drawn if it ended, then 130 or 143.
    let interrupted = interrupt::exit_code();
    match result.verdicts {
        Verdicts::Judged {
            record, verdicts, ..
        } => {
            print!("{}", draw(&record, &verdicts));
            Ok(interrupted.unwrap_or(if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }))
        }
        Verdicts::Error(e) => match interrupted {
            Some(code) => {
                println!("{trial}: the trial could not run: {e}");
                Ok(code)
            }
            None => bail!("the trial could not run: {e}"),
        },
        Verdicts::NotRun(why) => match interrupted {
            Some(code) => {
                println!("{trial}: not run: {why}");
                Ok(code)
            }
            None => bail!("not run: {why}"),
        },
    }
}
