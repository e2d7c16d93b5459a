//! Required means required, as `cprkit run` meets it: a part the trials need
//! (here qemu-storage-daemon, QEMU) that `CPRKIT_REQUIRE` names and the host
//! lacks stops the run (exit status 2) naming it and how to install it; one
//! that is optional leaves its trials not run, each listed with the reason
//! and counted in the summary, never passed; a run in which nothing ran does
//! not pass. The host's lack is made by a PATH with nothing on it (refvmm and
//! the device daemon are hosted by `cprkit` itself).

mod support;

use std::path::Path;

use support::{cprkit, text};

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

#[test]
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

#[test]
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

#[test]
fn a_run_in_which_nothing_ran_does_not_pass() {
    let cases = cases();
    let (code, out) = run_without_path(&["--case", "q"], cases.path(), "");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no trial ran"), "{out}");
}

#[test]
fn required_qemu_that_is_missing_is_named_with_how_to_install_it() {
    let cases = cases();
    let (code, out) = run_without_path(&["--vmm", "qemu"], cases.path(), "qemu");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("QEMU not found"), "{out}");
}

#[test]
fn an_unknown_required_part_is_a_usage_error() {
    let cases = cases();
    let (code, out) = run_without_path(&[], cases.path(), "kvm");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("CPRKIT_REQUIRE: unknown part `kvm`"), "{out}");
}
