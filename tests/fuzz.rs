//! `cprkit fuzz` proves its machinery: a short run with a fixed seed finds
//! nothing on the correct refvmm and catches two mutants; a failing trial's
//! printed replay reproduces its verdict; the shrinker cuts a mutant whose bug
//! needs two faults together down to those two; and a VMM that answers
//! differently on replay is reported intermittent.

mod support;
use support::{cprkit, flaky_adapter, text};

/// The value after `key` on the first line that has it.
fn after<'t>(t: &'t str, key: &str) -> Option<&'t str> {
    t.lines()
        .find_map(|l| l.split_once(key).map(|(_, rest)| rest.trim()))
}

#[test]
fn a_short_run_finds_nothing_on_the_correct_refvmm() {
    let o = cprkit(
        &[
            "fuzz", "--vmm", "refvmm", "--trials", "36", "--seed", "13", "-j4",
        ],
        &[],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains("fuzz refvmm: 36 trials in")
            && t.contains("36 passed, 0 failed (0 only as the known violations expect, 0 beyond them: 0 investigated, 0 intermittent), 0 errors, 0 hangs"),
        "{t}"
    );
    assert!(t.contains("leak check: nothing left behind"), "{t}");
    // Several faults per trial were drawn: the run tested combinations.
    let combined = t
        .lines()
        .filter(|l| l.starts_with('[') && l.matches('@').count() > 1)
        .count();
    assert!(
        combined >= 5,
        "only {combined} trials with several faults:\n{t}"
    );
}

#[test]
fn a_short_run_catches_mutants_and_a_printed_replay_reproduces_the_verdict() {
    for (mutant, rule) in [
        ("no-resume-on-failure", "FAIL-1"),
        ("split-brain-after-cancel", "FAIL-3"),
    ] {
        let vmm = format!("refvmm:{mutant}");
        let o = cprkit(
            &[
                "fuzz",
                "--vmm",
                &vmm,
                "--case",
                "memory-running",
                "--trials",
                "24",
                "--seed",
                "13",
                "-j4",
                "--investigate",
                "1",
                "--replays",
                "1",
                "--shrink-budget",
                "15",
            ],
            &[],
        );
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{t}");
        let fail = t
            .lines()
            .find(|l| l.starts_with("FAIL memory-running seed "))
            .unwrap_or_else(|| panic!("{mutant} not caught:\n{t}"));
        assert!(
            t.contains(&format!(": {rule} ")) || fail.contains(rule) || t.contains(rule),
            "{t}"
        );
        assert!(t.contains("NEW: beyond the VMM's known violations"), "{t}");
        // The shrunk schedule needs one fault at most.
        let shrunk = after(&t, "shrunk:   ").expect("a shrunk line");
        let faults = shrunk.split(';').nth(1).unwrap_or("").matches('@').count();
        assert!(faults <= 1, "{mutant}: shrunk to {shrunk}");
        // The replay command, run: the same verdict.
        let replay = after(&t, "replay: cprkit ").expect("a replay command");
        let first_rule = fail
            .split(": ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string();
        let args: Vec<&str> = replay.split_whitespace().collect();
        let args: Vec<&str> = args
            .into_iter()
            .chain(["--replays", "1", "--shrink-budget", "0"])
            .collect();
        let r = cprkit(&args, &[]);
        let rt = text(&r);
        assert_eq!(r.status.code(), Some(1), "{rt}");
        assert!(
            rt.lines()
                .any(|l| l.starts_with("FAIL memory-running seed ")
                    && l.contains(&format!(": {first_rule} "))),
            "{mutant}: the replay of {replay} did not break {first_rule}:\n{rt}"
        );
        assert!(rt.contains(&format!("runs: fail {first_rule}")), "{rt}");
        // The same schedule, drawn again from the seed.
        let original = after(&t, "original: ").expect("the original schedule");
        let drawn = rt
            .lines()
            .next()
            .and_then(|l| l.split_once(": "))
            .map(|(_, s)| s)
            .expect("the replay's schedule");
        assert_eq!(drawn, original, "{rt}");
    }
}

#[test]
fn the_shrinker_keeps_the_two_faults_a_two_fault_bug_needs() {
    let o = cprkit(
        &[
            "fuzz",
            "--vmm",
            "refvmm:slow-release-forgets-device",
            "--case",
            "vhost-user-running",
            "--schedule",
            "device-delay@release-owner,kill-target@cpr-save,kill-source@main-stream;hold=cpr-save:60,target-init:30;delay=300",
            "--replays",
            "1",
        ],
        &[],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("FAIL vhost-user-running seed 0: OWN-2 "), "{t}");
    let shrunk = after(&t, "shrunk:   guest running; ").expect("a shrunk line");
    let schedule = shrunk.split("  (").next().unwrap();
    let faults: Vec<&str> = schedule.split(';').next().unwrap().split(',').collect();
    assert_eq!(faults.len(), 2, "{t}");
    assert!(faults.contains(&"device-delay@release-owner"), "{t}");
    let other = *faults
        .iter()
        .find(|f| **f != "device-delay@release-owner")
        .unwrap();
    assert!(!schedule.contains("hold="), "{t}");
    assert!(t.contains("(2 faults, from 3;"), "{t}");
    assert!(
        t.contains("replay: cprkit fuzz --vmm refvmm:slow-release-forgets-device --case vhost-user-running --guest running --schedule '"),
        "{t}"
    );
    // Neither fault alone shows the bug.
    for alone in ["device-delay@release-owner", other] {
        let o = cprkit(
            &[
                "fuzz",
                "--vmm",
                "refvmm:slow-release-forgets-device",
                "--case",
                "vhost-user-running",
                "--schedule",
                alone,
                "--replays",
                "1",
            ],
            &[],
        );
        assert_eq!(o.status.code(), Some(0), "{alone} alone: {}", text(&o));
    }
}

#[test]
fn a_vmm_that_answers_differently_on_replay_is_intermittent() {
    let dir = tempfile::tempdir().unwrap();
    let vmm = flaky_adapter(dir.path());
    let o = cprkit(
        &[
            "fuzz",
            "--vmm",
            &vmm,
            "--case",
            "memory-running",
            "--schedule",
            "none",
            "--replays",
            "3",
            "--shrink-budget",
            "0",
        ],
        &[],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("runs: fail DONE-0: 2, pass: 2 of 4 runs (INTERMITTENT)"),
        "{t}"
    );
}

#[test]
fn a_bad_schedule_is_a_usage_error() {
    let o = cprkit(
        &[
            "fuzz",
            "--case",
            "memory-running",
            "--schedule",
            "cancel@cpr-save,kill-target@cpr-save",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("two faults of the kit at step `cpr-save`"),
        "{}",
        text(&o)
    );
}
