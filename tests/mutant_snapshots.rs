//! The reviewed snapshots, read back: the correct refvmm breaks no rule in any
//! trial, and each mutant breaks, somewhere in its matrix, one of the rules
//! `MUTANT_EXPECTATIONS` names for it. The conformance runner keeps the
//! snapshots true to what a run observes; this keeps them true to what each
//! mutant is for, so `cprkit selftest`'s verdict can be read off the files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use cprkit_adapters::refvmm_adapter::MUTANT_EXPECTATIONS;
use cprkit_suite::snapshots_dir;

/// Rule -> number of trials that broke it, over every snapshot in `dir`.
fn broken_rules(dir: &Path) -> (usize, BTreeMap<String, usize>) {
    let mut trials = 0;
    let mut broken: BTreeMap<String, usize> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "snap") {
            continue;
        }
        trials += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let mut rule = None;
        let mut seen = BTreeSet::new();
        for line in text.lines() {
            if let Some(r) = line.trim().strip_prefix("- rule: ") {
                rule = Some(r.to_string());
            } else if line.trim() == "verdict: fail"
                && let Some(r) = rule.take()
            {
                seen.insert(r);
            }
        }
        for r in seen {
            *broken.entry(r).or_default() += 1;
        }
    }
    (trials, broken)
}

#[test]
fn the_correct_refvmm_breaks_nothing() {
    let (trials, broken) = broken_rules(&snapshots_dir().join("refvmm"));
    assert!(trials > 100, "only {trials} refvmm snapshots");
    assert!(broken.is_empty(), "refvmm's snapshots break {broken:?}");
}

#[test]
fn each_mutant_is_caught_by_its_rule() {
    for (mutant, expected) in MUTANT_EXPECTATIONS {
        let dir = snapshots_dir().join(format!("refvmm-{mutant}"));
        let (trials, broken) = broken_rules(&dir);
        assert!(trials > 100, "{mutant}: only {trials} snapshots");
        assert!(
            expected.iter().any(|r| broken.contains_key(*r)),
            "{mutant}: its snapshots break {broken:?}, none of {expected:?}"
        );
    }
}
