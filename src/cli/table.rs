//! The verdict table and the summary printed at the end of a run.

use cprkit_cases::runner::{TrialResult, Verdicts};
use cprkit_harness::rules::{MEMORY_RULES, Status};

/// One line per trial, one column per rule: `.` pass, `F` fail, `-` not applicable.
pub fn print_table(results: &[TrialResult]) {
    let width = results
        .iter()
        .map(|r| r.name().len())
        .max()
        .unwrap_or(5)
        .max(5);
    print!("{:<width$}", "trial");
    for rule in MEMORY_RULES {
        print!(" {:^6}", rule.id);
    }
    println!("  result");
    for r in results {
        print!("{:<width$}", r.name());
        match &r.verdicts {
            Verdicts::Judged { verdicts, .. } => {
                for v in verdicts {
                    let mark = match v.status {
                        Status::Pass => ".",
                        Status::Fail => "F",
                        Status::NotApplicable => "-",
                    };
                    print!(" {mark:^6}");
                }
                println!(
                    "  {}",
                    if r.violations().is_empty() {
                        "ok"
                    } else {
                        "VIOLATION"
                    }
                );
            }
            Verdicts::Error(e) => println!("  ERROR: {e}"),
            Verdicts::NotRun(why) => println!("  not run: {why}"),
        }
    }
}

/// The counts, then each violation with its evidence. True when every trial
/// ran and broke no rule.
pub fn print_summary(results: &[TrialResult]) -> bool {
    let mut ok = 0;
    let mut violating = 0;
    let mut errors = 0;
    let mut not_run = 0;
    println!();
    for r in results {
        match &r.verdicts {
            Verdicts::Judged { verdicts, .. } => {
                let failed: Vec<_> = verdicts
                    .iter()
                    .filter(|v| v.status == Status::Fail)
                    .collect();
                if failed.is_empty() {
                    ok += 1;
                }
                if !failed.is_empty() {
                    violating += 1;
                }
                for v in failed {
                    if v.detail.is_empty() {
                        println!("{} {}: {}", v.rule, r.name(), v.evidence);
                    } else {
                        println!("{} {}: {} [{}]", v.rule, r.name(), v.evidence, v.detail);
                    }
                }
            }
            Verdicts::Error(e) => {
                errors += 1;
                println!("ERROR {}: {e}", r.name());
            }
            Verdicts::NotRun(why) => {
                not_run += 1;
                println!("NOT RUN {}: {why}", r.name());
            }
        }
    }
    println!(
        "{} trials: {ok} passed, {violating} with violations, {errors} errors, {not_run} not run",
        results.len()
    );
    violating == 0 && errors == 0
}
