//! The kit on stock QEMU (10.0.2 here and in CI): its known violations are all
//! reproduced by a run, nothing else breaks, and without the list each rule is
//! named. Needs qemu-system-x86_64 10.0 or newer: ignored, with the reason,
//! where it is missing; a failure naming it where it is required
//! (`CPRKIT_REQUIRE=qemu`, as .ci/run sets, or `CI=true`).

mod support;

use std::path::Path;

use cprkit_adapters::requirements::Part;
use support::text;

/// `cprkit` with `args`, its snapshots directory replaced when given: (exit status, output).
fn run(args: &[&str], snapshots: Option<&Path>) -> (Option<i32>, String) {
    let env: Vec<(&str, &Path)> = snapshots
        .map(|s| ("CPRKIT_SNAPSHOTS", s))
        .into_iter()
        .collect();
    let o = support::cprkit(args, &env);
    (o.status.code(), text(&o))
}

fn every_known_violation_of_qemu_is_seen_and_nothing_else_breaks() {
    let (code, out) = run(&["run", "--vmm", "qemu"], None);
    assert_eq!(code, Some(0), "{out}");
    for rule in [
        "ORD-1", "ORD-2", "OWN-1", "DONE-0", "DONE-1", "DONE-2", "ERR-1", "ERR-2", "FAIL-3",
        "FAIL-4", "LIVE-1", "REACH-1",
    ] {
        assert!(
            out.contains(&format!("known {rule} qemu::")),
            "{rule} not seen:\n{out}"
        );
    }
    assert!(
        out.contains("(0 unexpected,") && out.contains("0 known not seen"),
        "{out}"
    );
}

/// Without the list, the run fails and names each rule with a trial that
/// breaks it: on the memory-running case and the fault-free handovers (the
/// first test holds the full matrix to the list, so every rule the list
/// names is seen there; the naming is the same for every rule).
fn without_its_list_each_violated_rule_is_named() {
    let empty = tempfile::tempdir().unwrap();
    let mut out = String::new();
    for case in ["qemu::memory-running/*", "qemu::*/no-fault"] {
        let (code, o) = run(
            &["run", "--vmm", "qemu", "--case", case],
            Some(empty.path()),
        );
        assert_eq!(code, Some(1), "{o}");
        out.push_str(&o);
    }
    for (rule, trial) in [
        ("ORD-1", "qemu::memory-running/no-fault"),
        ("DONE-2", "qemu::memory-running/kill-target@main-stream"),
        (
            "ERR-1",
            "qemu::memory-running/bad-request:no-main-channel@source-stop",
        ),
        ("FAIL-4", "qemu::memory-running/cancel@cpr-save"),
        ("ORD-2", "qemu::vhost-user-running/no-fault"),
        ("OWN-1", "qemu::vhost-user-running/no-fault"),
        ("ERR-2", "qemu::vhost-user-running-qsd/no-fault"),
        ("DONE-0", "qemu::vhost-user-running/no-fault"),
        (
            "LIVE-1",
            "qemu::memory-running/bad-request:no-main-channel@source-stop",
        ),
    ] {
        assert!(
            out.contains(&format!("\n{rule} {trial}: ")),
            "{rule} {trial} not named:\n{out}"
        );
    }
}

fn explain_shows_qemus_fds_crossing_before_its_stop() {
    let (code, out) = run(&["explain", "qemu::memory-running/no-fault"], None);
    assert_eq!(code, Some(1), "ORD-1 is broken:\n{out}");
    let cut = out.find("hold cpr-save").expect("the cut-over hold");
    let stop = out
        .find("STOP ")
        .or_else(|| out.find("STOP\n"))
        .expect("a STOP");
    assert!(cut < stop, "the fds cross before the source stops:\n{out}");
}

/// The summary line of a run, without the VMM's name.
fn summary(out: &str) -> String {
    out.lines()
        .find(|l| l.contains(" trials: "))
        .unwrap_or_else(|| panic!("no summary:\n{out}"))
        .to_string()
}

fn qemu_named_by_its_path_is_judged_by_the_same_list() {
    let path = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v qemu-system-x86_64"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let by_path = format!("qemu:{}", path.trim());
    let (code, named) = run(&["run", "--vmm", "qemu", "--case", "memory-running"], None);
    assert_eq!(code, Some(0), "{named}");
    let (code, out) = run(
        &["run", "--vmm", &by_path, "--case", "memory-running"],
        None,
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(summary(&out), summary(&named));
    assert!(
        out.contains(&format!("known ORD-1 {by_path}::memory-running/no-fault")),
        "{out}"
    );
}

fn another_build_of_the_same_version_does_not_inherit_the_list_unless_given_it() {
    // The same binary, describing itself as a build from source would
    // (no Debian package): to the kit, another build of 10.0.2.
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("qemu-system-x86_64");
    cprkit_test_support::write_script(
        &wrapper,
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'QEMU emulator version 10.0.2'; exit 0; fi\nexec qemu-system-x86_64 \"$@\"\n",
    );
    let vmm = format!("qemu:{}", wrapper.display());
    let one = "*::memory-running/no-fault";
    let (code, out) = run(&["run", "--vmm", &vmm, "--case", one], None);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("\nORD-1 {vmm}::memory-running/no-fault: ")),
        "{out}"
    );
    let list = Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots/qemu/known-violations.toml");
    let (code, out) = run(
        &[
            "run",
            "--vmm",
            &vmm,
            "--case",
            one,
            "--known-violations",
            list.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("known ORD-1 {vmm}::memory-running/no-fault")),
        "{out}"
    );
}

fn main() -> std::process::ExitCode {
    support::run_tests(
        &[
            (
                "every_known_violation_of_qemu_is_seen_and_nothing_else_breaks",
                Some(Part::Qemu),
                every_known_violation_of_qemu_is_seen_and_nothing_else_breaks,
            ),
            (
                "without_its_list_each_violated_rule_is_named",
                Some(Part::Qemu),
                without_its_list_each_violated_rule_is_named,
            ),
            (
                "explain_shows_qemus_fds_crossing_before_its_stop",
                Some(Part::Qemu),
                explain_shows_qemus_fds_crossing_before_its_stop,
            ),
            (
                "qemu_named_by_its_path_is_judged_by_the_same_list",
                Some(Part::Qemu),
                qemu_named_by_its_path_is_judged_by_the_same_list,
            ),
            (
                "another_build_of_the_same_version_does_not_inherit_the_list_unless_given_it",
                Some(Part::Qemu),
                another_build_of_the_same_version_does_not_inherit_the_list_unless_given_it,
            ),
        ],
        &[],
    )
}
