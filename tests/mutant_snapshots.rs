//! The reviewed snapshots, read back: the correct refvmm breaks no rule in any
//! trial, and each mutant breaks, somewhere in its matrix, one of the rules
//! `MUTANT_EXPECTATIONS` names for it. The conformance runner keeps the
//! snapshots true to what a run observes; this keeps them true to what each
//! mutant is for, so `cprkit selftest`'s verdict can be read off the files.
//! Only the snapshots of planned trials are read: a file left by a deleted
//! case or point is no evidence (and fails the conformance runner).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use cprkit_adapters::adapter_for;
use cprkit_adapters::refvmm_adapter::{FUZZ_ONLY_MUTANTS, MUTANT_EXPECTATIONS};
use cprkit_suite::runner::{Planned, plan};
use cprkit_suite::snapshot_files::{snapshot_file, stray_snapshots};
use cprkit_suite::snapshots_dir;

/// The planned trials of `vmm` over the repository's cases.
fn planned(vmm: &str) -> Vec<Planned> {
    let cases = cprkit_suite::load_dir(&cprkit_suite::cases_dir()).expect("the cases load");
    plan(&[adapter_for(vmm).unwrap()], &cases, None)
}

/// The snapshot files of `vmm`'s planned trials that exist: the plan decides
/// what is read, never the directory (a file no trial has fails the
/// conformance runner's `snapshots-match-the-plan`).
fn planned_snapshots(vmm: &str) -> Vec<PathBuf> {
    let root = snapshots_dir();
    planned(vmm)
        .iter()
        .map(|p| snapshot_file(&root, p))
        .filter(|f| f.is_file())
        .collect()
}

/// Rule -> number of trials that broke it, over `vmm`'s planned snapshots.
fn broken_rules(vmm: &str) -> (usize, BTreeMap<String, usize>) {
    let mut trials = 0;
    let mut broken: BTreeMap<String, usize> = BTreeMap::new();
    for path in planned_snapshots(vmm) {
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
    let (trials, broken) = broken_rules("refvmm");
    assert!(trials > 100, "only {trials} refvmm snapshots");
    assert!(broken.is_empty(), "refvmm's snapshots break {broken:?}");
}

#[test]
fn each_mutant_is_caught_by_its_rule() {
    for (mutant, expected) in MUTANT_EXPECTATIONS {
        let (trials, broken) = broken_rules(&format!("refvmm:{mutant}"));
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
        let (trials, broken) = broken_rules(&format!("refvmm:{mutant}"));
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
    for path in planned_snapshots("refvmm") {
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

/// A snapshot file no planned trial has is found, named, and only it: the
/// planned trials' files (one case's, written to a scratch snapshots tree)
/// are not, and neither is a file that is no snapshot.
#[test]
fn a_snapshot_of_no_planned_trial_is_stray() {
    let root = tempfile::tempdir().unwrap();
    let planned: Vec<Planned> = planned("refvmm")
        .into_iter()
        .filter(|p| p.id.case == "memory-paused")
        .collect();
    assert!(planned.len() > 2);
    for p in &planned {
        let f = snapshot_file(root.path(), p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, "---\n").unwrap();
    }
    std::fs::write(root.path().join("refvmm/known-violations.toml"), "").unwrap();
    assert_eq!(
        stray_snapshots(root.path(), &planned),
        Vec::<PathBuf>::new()
    );
    let stray = [
        root.path().join("refvmm/deleted-case__no-fault.snap"),
        root.path()
            .join("refvmm-removed-mutant/memory-paused__no-fault.snap"),
        root.path().join("refvmm/memory-paused__no-fault.snap.new"),
    ];
    for f in &stray {
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, "---\n").unwrap();
    }
    let mut want = stray.to_vec();
    want.sort();
    assert_eq!(stray_snapshots(root.path(), &planned), want);
}

/// The repository's snapshots are all of planned trials (the conformance
/// runner's `snapshots-match-the-plan` checks the same, with every VMM).
#[test]
fn every_refvmm_snapshot_is_of_a_planned_trial() {
    let root = snapshots_dir();
    let mut all = planned("refvmm");
    for (m, _) in MUTANT_EXPECTATIONS.iter().chain(FUZZ_ONLY_MUTANTS) {
        all.extend(planned(&format!("refvmm:{m}")));
    }
    let stray: Vec<PathBuf> = stray_snapshots(&root, &all)
        .into_iter()
        .filter(|f| {
            f.parent()
                .and_then(Path::file_name)
                .is_some_and(|d| d.to_string_lossy().starts_with("refvmm"))
        })
        .collect();
    assert!(stray.is_empty(), "snapshots of no planned trial: {stray:?}");
}
