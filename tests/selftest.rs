//! `cprkit selftest` in the tests: on a small case set (six trials per VMM,
//! chosen so that each of the nineteen mutants the matrix can catch meets the trials that catch it
//! by its rule) it passes, finds the correct refvmm clean and every mutant
//! caught by each rule README.md's mutant table names for it; and with a case
//! set that cannot catch a mutant it fails, naming it NOT CAUGHT. The table
//! itself is checked against `MUTANT_EXPECTATIONS`, the list selftest judges by;
//! a mutant whose bug needs two faults (`FUZZ_ONLY_MUTANTS`) must go uncaught.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use cprkit_adapters::refvmm_adapter::{FUZZ_ONLY_MUTANTS, MUTANT_EXPECTATIONS};
use support::{cprkit, text};

/// The small case set: the running and paused memory handovers, with the
/// failures that catch the resume, completion and split-brain mutants; a
/// vhost-user cancel for the device mutants; the shared policy's cancel at
/// target-resume for `ring-before-go`.
const CASES: &[(&str, &str)] = &[
    (
        "memory-running",
        "profile = \"memory\"\nguest = \"running\"\npoints = [\"no-fault\", \"cancel@main-stream\"]\n",
    ),
    (
        "memory-paused",
        "profile = \"memory\"\nguest = \"paused\"\npoints = [\"no-fault\", \"kill-target@main-stream\"]\n",
    ),
    (
        "vhost-user-running",
        "profile = \"vhost-user\"\nguest = \"running\"\npoints = [\"cancel@main-stream\"]\n",
    ),
    (
        "vhost-user-running-shared",
        "profile = \"vhost-user\"\nguest = \"running\"\ndevice-policy = \"shared\"\npoints = [\"cancel@target-resume\"]\n",
    ),
];

/// `cprkit selftest` on `cases` (name, text): exit status and output. Many
/// jobs: the mutants that hang or stall wait out a bound, on no CPU.
fn selftest(cases: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    for (name, toml) in cases {
        std::fs::write(dir.path().join(format!("{name}.toml")), toml).unwrap();
    }
    let o = cprkit(
        &["selftest", "--jobs", "24"],
        &[("CPRKIT_CASES", dir.path())],
    );
    (o.status.code(), text(&o))
}

/// README.md's mutant table: mutant -> the rules in its `caught by` column.
fn readme_table() -> BTreeMap<String, Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let mut rows = BTreeMap::new();
    let mut inside = false;
    for line in readme.lines() {
        if line.starts_with("| mutant | its bug | caught by |") {
            inside = true;
            continue;
        }
        if !inside || line.starts_with("|---") {
            continue;
        }
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 3, "README.md: a row of three cells: {line}");
        let mutant = cells[0].trim_matches('`').to_string();
        let rules = cells[2].split(',').map(|r| r.trim().to_string()).collect();
        assert!(
            rows.insert(mutant, rules).is_none(),
            "README.md: {line} twice"
        );
    }
    assert!(!rows.is_empty(), "README.md has no mutant table");
    rows
}

/// selftest's rows: VMM -> its verdict (`clean`, `caught by A, B`, `NOT CAUGHT`, ...).
fn verdicts(out: &str) -> BTreeMap<String, String> {
    // A column per rule (CHAIN-1 among them), as the header names them.
    let rules = out
        .lines()
        .find(|l| l.starts_with("VMM "))
        .map_or(cprkit_harness::rules::RULES.len(), |h| {
            h.split_whitespace().count() - 1
        });
    out.lines()
        .filter(|l| l.starts_with("refvmm"))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let vmm = words.next()?.to_string();
            let verdict: Vec<&str> = words.skip(rules).collect();
            Some((vmm, verdict.join(" ")))
        })
        .collect()
}

#[test]
fn the_readme_table_is_the_list_selftest_judges_by() {
    let table = readme_table();
    let expected: BTreeMap<String, Vec<String>> = MUTANT_EXPECTATIONS
        .iter()
        .map(|(m, r)| (m.to_string(), r.iter().map(|s| s.to_string()).collect()))
        .collect();
    assert_eq!(table, expected);
}

#[test]
fn selftest_catches_every_mutant_by_the_rules_of_the_readme_table() {
    let (code, out) = selftest(CASES);
    assert_eq!(code, Some(0), "{out}");
    let found = verdicts(&out);
    assert_eq!(
        found.get("refvmm").map(String::as_str),
        Some("clean"),
        "{out}"
    );
    let table = readme_table();
    for (mutant, rules) in &table {
        let verdict = found
            .get(&format!("refvmm:{mutant}"))
            .unwrap_or_else(|| panic!("no row for {mutant}:\n{out}"));
        let by: Vec<&str> = verdict
            .strip_prefix("caught by ")
            .unwrap_or_else(|| panic!("{mutant}: {verdict}\n{out}"))
            .split(", ")
            .collect();
        for rule in rules {
            assert!(
                by.contains(&rule.as_str()),
                "{mutant}: README.md says {rule} catches it, selftest found {by:?}\n{out}"
            );
        }
    }
    for (mutant, _) in FUZZ_ONLY_MUTANTS {
        let verdict = found
            .get(&format!("refvmm:{mutant}"))
            .unwrap_or_else(|| panic!("no row for {mutant}:\n{out}"));
        assert!(
            verdict.starts_with("not caught by the matrix, as expected"),
            "{mutant}: {verdict}\n{out}"
        );
    }
    assert_eq!(
        found.len(),
        table.len() + FUZZ_ONLY_MUTANTS.len() + 1,
        "a row per VMM:\n{out}"
    );
    assert!(
        out.contains("(each cell: trials out of 6 in which the rule fired)"),
        "{out}"
    );
    assert!(out.contains("leak check: nothing left behind"), "{out}");
}

#[test]
fn a_case_set_that_cannot_catch_a_mutant_fails_selftest() {
    // A paused guest's fault-free handover alone: no failure, no device.
    let (code, out) = selftest(&[(
        "memory-paused",
        "profile = \"memory\"\nguest = \"paused\"\npoints = [\"no-fault\"]\n",
    )]);
    assert_eq!(code, Some(1), "{out}");
    let found = verdicts(&out);
    for mutant in [
        "no-resume-on-failure",
        "never-release-owner",
        "ring-before-go",
    ] {
        assert_eq!(
            found.get(&format!("refvmm:{mutant}")).map(String::as_str),
            Some("NOT CAUGHT"),
            "{out}"
        );
    }
    assert_eq!(
        found.get("refvmm").map(String::as_str),
        Some("clean"),
        "{out}"
    );
}
