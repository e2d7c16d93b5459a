//! Required means required, as `cprkit run` meets it: a part the trials need
//! (here qemu-storage-daemon, QEMU) that `CPRKIT_REQUIRE` names and the host
//! lacks stops the run (exit status 2) naming it and how to install it; one
//! that is optional leaves its trials not run, each listed with the reason
//! and counted in the summary, never passed; a run in which nothing ran does
//! not pass. The host's lack is made by a PATH with nothing on it (refvmm and
//! the device daemon are hosted by `cprkit` itself).
//!
//! And as a test file meets it (`support::run_tests`, which qemu_run,
//! certify and cloud_hypervisor_run use): this file's binary, run again as a
//! fixture whose one test needs QEMU, with nothing on PATH, fails naming QEMU
//! and how to install it where `CPRKIT_REQUIRE=qemu`, and otherwise shows the
//! test ignored with the reason and counts it in the summary.

mod support;

use std::path::Path;

use cprkit_adapters::requirements::Part;
use support::{cprkit, text};

/// Set (to anything) when this binary runs as the fixture.
const FIXTURE: &str = "CPRKIT_TEST_FIXTURE_NEEDS_QEMU";

/// A cases directory: one memory trial, one on qemu-storage-daemon.
fn cases() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("m.toml"),
        "profile = \"memory\"\nguest = \"running\"\npoints = [\"no-fault\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("q.toml"),
        "profile = \"vhost-user\"\nguest = \"running\"\ndevice-backend = \"qemu-storage-daemon\"\npoints = [\"no-fault\"]\n",
    )
    .unwrap();
    dir
}

/// `cprkit run ARGS` on `cases` with nothing on PATH and `CPRKIT_REQUIRE` set to `require`.
fn run_without_path(args: &[&str], cases: &Path, require: &str) -> (Option<i32>, String) {
    let empty = tempfile::tempdir().unwrap();
    let require = Path::new(require);
    // CI unset-alike: only CPRKIT_REQUIRE decides here.
    let env = [
        ("PATH", empty.path()),
        ("CPRKIT_CASES", cases),
        ("CPRKIT_REQUIRE", require),
        ("CI", Path::new("")),
    ];
    let o = cprkit(&[&["run"], args].concat(), &env);
    (o.status.code(), text(&o))
}

fn a_required_storage_daemon_that_is_missing_stops_the_run_naming_it() {
    let cases = cases();
    let (code, out) = run_without_path(&[], cases.path(), "qemu-storage-daemon");
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("qemu-storage-daemon is required (CPRKIT_REQUIRE=qemu-storage-daemon)"),
        "{out}"
    );
    assert!(
        out.contains("ci/install-deps.sh"),
        "how to install it:\n{out}"
    );
    assert!(!out.contains(" trials: "), "no trial ran:\n{out}");
}

fn an_optional_storage_daemon_that_is_missing_leaves_its_trial_not_run_and_counted() {
    let cases = cases();
    let (code, out) = run_without_path(&[], cases.path(), "");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("NOT RUN refvmm::q/no-fault: qemu-storage-daemon not found"),
        "{out}"
    );
    assert!(
        out.contains("2 trials: 1 passed,") && out.contains(", 1 not run"),
        "{out}"
    );
}

fn a_run_in_which_nothing_ran_does_not_pass() {
    let cases = cases();
    let (code, out) = run_without_path(&["--case", "q"], cases.path(), "");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no trial ran"), "{out}");
}

fn required_qemu_that_is_missing_is_named_with_how_to_install_it() {
    let cases = cases();
    let (code, out) = run_without_path(&["--vmm", "qemu"], cases.path(), "qemu");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("QEMU not found"), "{out}");
}

fn an_unknown_required_part_is_a_usage_error() {
    let cases = cases();
    let (code, out) = run_without_path(&[], cases.path(), "kvm");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("CPRKIT_REQUIRE: unknown part `kvm`"), "{out}");
}

/// The fixture's one test: where it runs, QEMU is here.
fn fixture_needs_qemu() {
    assert!(Part::Qemu.absent().is_none());
}

/// This binary as the fixture, with nothing on PATH and `CPRKIT_REQUIRE=require`.
fn fixture(require: &str) -> (Option<i32>, String) {
    let empty = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(std::env::current_exe().unwrap())
        .env(FIXTURE, "1")
        .env("PATH", empty.path())
        .env("CPRKIT_REQUIRE", require)
        .env("CI", "")
        .output()
        .unwrap();
    (o.status.code(), text(&o))
}

fn a_test_needing_required_qemu_that_is_missing_fails_naming_it() {
    let (code, out) = fixture("qemu");
    assert_eq!(code, Some(101), "{out}");
    assert!(
        out.contains("QEMU 10.0+ (qemu-system-x86_64) is required (CPRKIT_REQUIRE=qemu) but missing: QEMU not found"),
        "{out}"
    );
    assert!(out.contains("ci/install-deps.sh"), "{out}");
    assert!(out.contains("0 passed; 1 failed; 0 ignored"), "{out}");
}

fn a_test_needing_optional_qemu_that_is_missing_is_ignored_with_the_reason() {
    let (code, out) = fixture("");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("[not run: QEMU not found: ")
            && out.contains("] fixture_needs_qemu ... ignored"),
        "{out}"
    );
    assert!(out.contains("0 passed; 0 failed; 1 ignored"), "{out}");
}

fn main() -> std::process::ExitCode {
    if std::env::var_os(FIXTURE).is_some() {
        return support::run_tests(
            &[("fixture_needs_qemu", Some(Part::Qemu), fixture_needs_qemu)],
            &[],
        );
    }
    support::run_tests(
        &[
            (
                "a_required_storage_daemon_that_is_missing_stops_the_run_naming_it",
                None,
                a_required_storage_daemon_that_is_missing_stops_the_run_naming_it,
            ),
            (
                "an_optional_storage_daemon_that_is_missing_leaves_its_trial_not_run_and_counted",
                None,
                an_optional_storage_daemon_that_is_missing_leaves_its_trial_not_run_and_counted,
            ),
            (
                "a_run_in_which_nothing_ran_does_not_pass",
                None,
                a_run_in_which_nothing_ran_does_not_pass,
            ),
            (
                "required_qemu_that_is_missing_is_named_with_how_to_install_it",
                None,
                required_qemu_that_is_missing_is_named_with_how_to_install_it,
            ),
            (
                "an_unknown_required_part_is_a_usage_error",
                None,
                an_unknown_required_part_is_a_usage_error,
            ),
            (
                "a_test_needing_required_qemu_that_is_missing_fails_naming_it",
                None,
                a_test_needing_required_qemu_that_is_missing_fails_naming_it,
            ),
            (
                "a_test_needing_optional_qemu_that_is_missing_is_ignored_with_the_reason",
                None,
                a_test_needing_optional_qemu_that_is_missing_is_ignored_with_the_reason,
            ),
        ],
        &[],
    )
}
