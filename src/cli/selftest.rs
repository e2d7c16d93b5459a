//! `cprkit selftest`: the kit checks its own checks. Every refvmm mutant runs
//! the whole matrix; each must be caught by at least one rule (and by the rule
//! its bug is about), and the correct refvmm must break none.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Result;
use cprkit_adapters::RefVmm;
use cprkit_adapters::refvmm_adapter::{FUZZ_ONLY_MUTANTS, MUTANT_EXPECTATIONS};
use cprkit_harness::leaks::Census;
use cprkit_harness::rules::{CHAIN_RULE, RULES, Rule};
use cprkit_suite::runner::{RunOptions, Verdicts, plan};

use super::interrupt;
use super::pool::Jobs;
use super::run::{print_leaks, run_with_progress};
use super::{RunDir, adapters, load_cases};

pub fn run(jobs: Jobs, case: Option<&str>) -> Result<ExitCode> {
    let names = RefVmm::family();
    let cases = load_cases()?;
    let planned = plan(&adapters(&names)?, &cases, case);
    let before = Census::take();
    let root = RunDir::new()?;
    let trials = run_with_progress(&planned, jobs, root.path(), &RunOptions::default());
    let leaks = trials.leaks(&before, root.path());
    drop(root);
    let results = &trials.results;

    // VMM -> rule -> trials that broke it.
    let mut caught: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    // VMM -> trials judged (all of them, unless a signal stopped the run).
    let mut judged: BTreeMap<&str, usize> = BTreeMap::new();
    let mut errors = Vec::new();
    for r in results {
        let vmm = r.id.vmm.as_str();
        caught.entry(vmm).or_default();
        match &r.verdicts {
            Verdicts::Error(e) => errors.push(format!("{}: {e}", r.name())),
            Verdicts::Judged { .. } => *judged.entry(vmm).or_default() += 1,
            Verdicts::NotRun(_) => {}
        }
        for rule in r.violations() {
            *caught
                .get_mut(vmm)
                .expect("inserted")
                .entry(rule_id(rule))
                .or_default() += 1;
        }
    }
    let trials_per_vmm = results.len() / names.len().max(1);
    println!(
        "{:<34} {}",
        "VMM",
        columns()
            .map(|r| format!("{:>8}", r.id))
            .collect::<String>()
    );
    let mut ok = errors.is_empty();
    for name in &names {
        let rules = caught.get(name.as_str()).cloned().unwrap_or_default();
        let cells: String = columns()
            .map(|r| match rules.get(r.id) {
                Some(n) => format!("{n:>8}"),
                None => format!("{:>8}", "."),
            })
            .collect();
        let ran = judged.get(name.as_str()).copied().unwrap_or(0);
        let verdict = match trials.stopped {
            // A signal stopped the run before this VMM had all its trials.
            Some(_) if ran == 0 => Err("not run (interrupted)".to_string()),
            Some(_) if ran < trials_per_vmm => Err(format!(
                "{} (interrupted: {ran} of {trials_per_vmm} trials ran)",
                judge(name, &rules).unwrap_or_else(|e| e)
            )),
            _ => judge(name, &rules),
        };
        ok &= verdict.is_ok();
        println!("{name:<34} {cells}   {}", verdict.unwrap_or_else(|e| e));
    }
    println!("\n(each cell: trials out of {trials_per_vmm} in which the rule fired)");
    for e in &errors {
        println!("ERROR {e}");
    }
    if let Some(line) = trials.interrupted() {
        println!("{line}");
    }
    ok &= print_leaks(&leaks);
    Ok(interrupt::status(ok))
}

/// The table's columns: every rule, CHAIN-1 (judged in chains of
/// handovers) last.
fn columns() -> impl Iterator<Item = &'static Rule> {
    RULES.iter().chain(std::iter::once(&CHAIN_RULE))
}

fn rule_id(rule: &str) -> &'static str {
    columns()
        .find(|r| r.id == rule)
        .map(|r| r.id)
        .unwrap_or("?")
}

/// The correct refvmm must break nothing; a mutant must be caught, by its rule.
fn judge(name: &str, rules: &BTreeMap<&str, usize>) -> Result<String, String> {
    let Some(mutant) = name.strip_prefix("refvmm:") else {
        return if rules.is_empty() {
            Ok("clean".into())
        } else {
            Err("VIOLATIONS on the correct refvmm".into())
        };
    };
    if FUZZ_ONLY_MUTANTS.iter().any(|(m, _)| *m == mutant) {
        // Its bug needs two faults together: the matrix must not see it
        // (`cprkit fuzz` does).
        return if rules.is_empty() {
            Ok(
                "not caught by the matrix, as expected: its bug needs two faults (cprkit fuzz)"
                    .into(),
            )
        } else {
            Err(format!(
                "caught by {} with one fault: not the two-fault bug it is for",
                rules.keys().copied().collect::<Vec<_>>().join(", ")
            ))
        };
    }
    if rules.is_empty() {
        return Err("NOT CAUGHT".into());
    }
    let expected = MUTANT_EXPECTATIONS
        .iter()
        .find(|(m, _)| *m == mutant)
        .map(|(_, r)| *r)
        .unwrap_or(&[]);
    let by: Vec<&str> = rules.keys().copied().collect();
    if expected.iter().any(|e| rules.contains_key(e)) {
        Ok(format!("caught by {}", by.join(", ")))
    } else {
        Err(format!(
            "caught by {} but not by {}",
            by.join(", "),
            expected.join(" or ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_violation_on_refvmm_or_a_mutant_caught_by_nothing_or_the_wrong_rule_fails() {
        let none = BTreeMap::new();
        let ord1 = BTreeMap::from([("ORD-1", 2)]);
        assert_eq!(judge("refvmm", &none), Ok("clean".into()));
        assert!(judge("refvmm", &ord1).unwrap_err().contains("VIOLATIONS"));
        assert_eq!(
            judge("refvmm:legacy-stop-order", &none),
            Err("NOT CAUGHT".into())
        );
        assert_eq!(
            judge("refvmm:legacy-stop-order", &ord1),
            Ok("caught by ORD-1".into())
        );
        assert_eq!(
            judge("refvmm:copy-ram", &ord1),
            Err("caught by ORD-1 but not by MEM-1".into())
        );
    }
}
