//! The reviewed snapshots, read back: the correct refvmm breaks no rule in any
//! trial, and each mutant breaks, somewhere in its matrix, one of the rules
//! `MUTANT_EXPECTATIONS` names for it. The conformance runner keeps the
//! snapshots true to what a run observes; this keeps them true to what each
//! mutant is for, so `cprkit selftest`'s verdict can be read off the files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use cprkit_adapters::refvmm_adapter::{FUZZ_ONLY_MUTANTS, MUTANT_EXPECTATIONS};
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
        assert!(trials >= 2, "{mutant}: only {trials} snapshots");
        assert!(
            expected.iter().any(|r| broken.contains_key(*r)),
            "{mutant}: its snapshots break {broken:?}, none of {expected:?}"
        );
    }
}

#[test]
fn a_fuzz_only_mutant_breaks_nothing_in_the_matrix() {
    for (mutant, _) in FUZZ_ONLY_MUTANTS {
        let dir = snapshots_dir().join(format!("refvmm-{mutant}"));
        let (trials, broken) = broken_rules(&dir);
        assert!(trials > 100, "{mutant}: only {trials} snapshots");
        assert!(
            broken.is_empty(),
            "{mutant}: one fault already shows its bug: {broken:?}"
        );
    }
}

/// Every rule of each profile passes in at least one of the correct refvmm's
/// trials of that profile's cases: a profile whose trials could not exercise
/// one of its rules could never be certified on positive evidence, and is an
/// error of the kit's cases, found here. (A profile with no snapshot, one that
/// cannot run on this host, is not judged.)
#[test]
fn every_rule_of_a_profile_is_exercised_by_its_cases() {
    let cases = cprkit_suite::load_dir(&cprkit_suite::cases_dir()).expect("the cases load");
    let profile_of: BTreeMap<String, cprkit_suite::Profile> =
        cases.iter().map(|c| (c.name.clone(), c.profile)).collect();
    let mut passed: BTreeMap<cprkit_suite::Profile, BTreeSet<String>> = BTreeMap::new();
    let dir = snapshots_dir().join("refvmm");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "snap") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let case = text
            .lines()
            .find_map(|l| l.strip_prefix("trial: "))
            .and_then(|t| t.trim_matches('"').split_once("::"))
            .and_then(|(_, rest)| rest.split_once('/'))
            .map(|(case, _)| case.to_string())
            .unwrap_or_else(|| panic!("{}: no trial line", path.display()));
        let profile = *profile_of
            .get(&case)
            .unwrap_or_else(|| panic!("{}: no case {case}", path.display()));
        let mut rule = None;
        for line in text.lines() {
            if let Some(r) = line.trim().strip_prefix("- rule: ") {
                rule = Some(r.to_string());
            } else if line.trim() == "verdict: pass"
                && let Some(r) = rule.take()
            {
                passed.entry(profile).or_default().insert(r);
            }
        }
    }
    assert!(!passed.is_empty(), "no refvmm snapshot passes any rule");
    for (profile, rules) in &passed {
        let device = *profile != cprkit_suite::Profile::Memory;
        let missing: Vec<&str> = cprkit_harness::rules::rules_for(device)
            .map(|r| r.id)
            .filter(|id| !rules.contains(*id))
            .collect();
        assert!(
            missing.is_empty(),
            "profile {profile}: no refvmm trial exercises {missing:?}"
        );
    }
}
