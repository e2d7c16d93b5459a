//! The verdict table and the summary printed at the end of a run, with each
//! violation sorted against the VMM's known violations.

use std::collections::BTreeMap;

use cprkit_harness::rules::{Rule, Status, rules_for};
use cprkit_suite::known::{KnownByVmm, KnownViolations, Reconciled, reconcile_runs};
use cprkit_suite::repeat::Run;
use cprkit_suite::runner::{TrialResult, Verdicts};

use super::interrupt::INTERRUPTED;

/// The known violations of each VMM of a run.
pub struct Expectations {
    known: KnownByVmm,
}

impl Expectations {
    pub fn new(known: KnownByVmm) -> Self {
        Expectations { known }
    }

    fn known(&self, vmm: &str) -> Option<&KnownViolations> {
        self.known.get(vmm)
    }
}

/// Each repeat's run of a trial (one, unless it ran `--repeat K` times).
fn runs_of(r: &TrialResult) -> Vec<Run> {
    match &r.repeats {
        Some(rep) => rep.runs.clone(),
        None => vec![Run::of(r)],
    }
}

/// One line per trial, one column per rule: `.` pass, `F` fail, `K` a known
/// violation, `-` not applicable. A trial whose repeats differ reads
/// `intermittent` (`intermittent, known` when `intermittent` entries account
/// for it).
pub fn print_table(results: &[TrialResult], exp: &Expectations) {
    let width = results
        .iter()
        .map(|r| r.name().len())
        .max()
        .unwrap_or(5)
        .max(5);
    print!("{:<width$}", "trial");
    // The device rules' columns only when a trial was judged by them.
    let device = results.iter().any(|r| match &r.verdicts {
        Verdicts::Judged { verdicts, .. } => verdicts.len() > rules_for(false).count(),
        _ => false,
    });
    let columns: Vec<&Rule> = rules_for(device).collect();
    for rule in &columns {
        print!(" {:^6}", rule.id);
    }
    println!("  result");
    for r in results {
        print!("{:<width$}", r.name());
        match &r.verdicts {
            Verdicts::Judged { verdicts, .. } => {
                let known = exp.known(&r.id.vmm);
                let mut unexpected = false;
                let mut expected = false;
                for rule in &columns {
                    let Some(v) = verdicts.iter().find(|v| v.rule == rule.id) else {
                        print!(" {:^6}", "");
                        continue;
                    };
                    let is_known = known.and_then(|k| k.expecting(&r.name(), v)).is_some();
                    let mark = match v.status {
                        Status::Pass => ".",
                        Status::Fail if is_known => "K",
                        Status::Fail => "F",
                        Status::NotApplicable => "-",
                    };
                    unexpected |= v.status == Status::Fail && !is_known;
                    expected |= is_known;
                    print!(" {mark:^6}");
                }
                let intermittent = r.intermittent();
                let covered = intermittent
                    && known
                        .and_then(|k| k.covering_intermittent(&r.name(), &runs_of(r)))
                        .is_some();
                let result = match (intermittent, covered) {
                    (true, false) => "intermittent",
                    (true, true) if !unexpected => "intermittent, known",
                    (true, true) => "intermittent",
                    _ if unexpected => "VIOLATION",
                    _ if expected => "known",
                    _ => "ok",
                };
                println!("  {result}");
            }
            Verdicts::Error(e) => println!("  ERROR: {e}"),
            Verdicts::NotRun(why) => println!("  not run: {why}"),
        }
    }
}

/// The counts, then each violation with its evidence, the known ones with
/// their reason, and the known ones no trial reproduced. True when every trial
/// ran and every violation was known and every known one was seen.
pub fn print_summary(results: &[TrialResult], exp: &Expectations) -> bool {
    let (mut passed, mut errors, mut not_run) = (0, 0, 0);
    let mut interrupted: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_vmm: BTreeMap<&str, Vec<(String, Vec<Run>)>> = BTreeMap::new();
    println!();
    for r in results {
        match &r.verdicts {
            Verdicts::Judged { verdicts, .. } => {
                if verdicts.iter().all(|v| v.status != Status::Fail) {
                    passed += 1;
                }
                per_vmm
                    .entry(&r.id.vmm)
                    .or_default()
                    .push((r.name(), runs_of(r)));
            }
            Verdicts::Error(e) => {
                errors += 1;
                println!("ERROR {}: {e}", r.name());
            }
            Verdicts::NotRun(why) if why.starts_with(INTERRUPTED) => {
                not_run += 1;
                *interrupted.entry(why.as_str()).or_default() += 1;
            }
            Verdicts::NotRun(why) => {
                not_run += 1;
                println!("NOT RUN {}: {why}", r.name());
            }
        }
    }
    // Those a signal kept from running: one line for each reason.
    for (why, n) in &interrupted {
        println!("NOT RUN {n} trial(s): {why}");
    }
    let empty = KnownViolations::default();
    let (mut unexpected, mut known, mut unseen) = (0, 0, 0);
    let intermittent = results.iter().filter(|r| r.intermittent()).count();
    let mut intermittent_unexpected = 0;
    for (vmm, run) in &per_vmm {
        let k = exp.known(vmm).unwrap_or(&empty);
        let rec: Reconciled = reconcile_runs(k, run);
        for (trial, v) in &rec.unexpected {
            let detail = if v.detail.is_empty() {
                String::new()
            } else {
                format!(" [{}]", v.detail)
            };
            println!("{} {trial}: {}{detail}", v.rule, v.evidence);
        }
        for (trial, v, entry) in &rec.expected {
            println!(
                "known {} {trial}: {} ({}; {})",
                v.rule, v.evidence, entry.reason, entry.upstream
            );
        }
        for entry in &rec.unseen {
            println!(
                "EXPECTED VIOLATION NOT SEEN {} in {} ({}:{}): {}",
                entry.rule,
                entry.trials.join(", "),
                k.path.display(),
                entry.line,
                entry.reason
            );
        }
        for (trial, outcomes) in &rec.intermittent {
            println!("INTERMITTENT {trial}: {outcomes}");
        }
        for (trial, outcomes, entries) in &rec.intermittent_expected {
            let why: Vec<String> = entries
                .iter()
                .map(|e| format!("{} {}; {}", e.rule, e.reason, e.upstream))
                .collect();
            println!(
                "known intermittent {trial}: {outcomes} ({})",
                why.join("; ")
            );
        }
        intermittent_unexpected += rec.intermittent.len();
        unexpected += rec.unexpected.len();
        known += rec.expected.len();
        unseen += rec.unseen.len();
    }
    println!(
        "{} trials: {passed} passed, {} with violations ({unexpected} unexpected, {known} known), {intermittent} intermittent ({intermittent_unexpected} unexpected), {unseen} known not seen, {errors} errors, {not_run} not run",
        results.len(),
        results.len() - passed - errors - not_run,
    );
    unexpected == 0 && unseen == 0 && errors == 0 && intermittent_unexpected == 0
}
