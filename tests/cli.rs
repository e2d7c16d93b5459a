//! The `cprkit` command as a user meets it: exit statuses, what the output
//! names, and clear errors for bad input. Runs the real binary on refvmm.

use std::path::Path;

mod support;
use support::{cprkit, text};

#[test]
fn the_correct_refvmm_passes_and_leaves_nothing() {
    let o = cprkit(&["run", "--vmm", "refvmm", "--case", "memory-running"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("28 trials: 28 passed"), "{}", text(&o));
    assert!(
        text(&o).contains("leak check: nothing left behind"),
        "{}",
        text(&o)
    );
}

#[test]
fn the_legacy_stop_order_mutant_fails_and_names_ord1() {
    let o = cprkit(
        &[
            "run",
            "--vmm",
            "refvmm:legacy-stop-order",
            "--case",
            "memory-running",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains(
        "ORD-1 refvmm:legacy-stop-order::memory-running/no-fault: source runstate `running`"
    ));
}

fn known_file(dir: &Path, vmm_dir: &str, trials: &str) {
    let d = dir.join(vmm_dir);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("known-violations.toml"),
        format!(
            "[[violation]]\nrule = \"ORD-1\"\ntrials = [\"{trials}\"]\nevidence = \"source runstate `running`*\"\nreason = \"fds before stop\"\nupstream = \"https://example.org\"\n"
        ),
    )
    .unwrap();
}

#[test]
fn a_known_violation_is_expected_and_an_unseen_one_fails() {
    let snaps = tempfile::tempdir().unwrap();
    known_file(
        snaps.path(),
        "refvmm-legacy-stop-order",
        "refvmm:legacy-stop-order::memory-running/*",
    );
    let env = [("CPRKIT_SNAPSHOTS", snaps.path())];
    let o = cprkit(
        &[
            "run",
            "--vmm",
            "refvmm:legacy-stop-order",
            "--case",
            "memory-running",
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("known ORD-1"), "{}", text(&o));

    known_file(snaps.path(), "refvmm", "refvmm::memory-running/*");
    let o = cprkit(
        &["run", "--vmm", "refvmm", "--case", "memory-running"],
        &env,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("EXPECTED VIOLATION NOT SEEN ORD-1"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_malformed_case_names_file_line_and_field_with_status_2() {
    let cases = tempfile::tempdir().unwrap();
    let file = cases.path().join("bad.toml");
    std::fs::write(&file, "profile = \"memory\"\nguest = \"running\"\npoints = [\"no-fault\", \"kill-target@nowhere\"]\n")
        .unwrap();
    let o = cprkit(&["list"], &[("CPRKIT_CASES", cases.path())]);
    assert_eq!(o.status.code(), Some(2));
    let want = format!(
        "{}:3: field `points[1]`: unknown step `nowhere`",
        file.display()
    );
    assert!(text(&o).contains(&want), "{}", text(&o));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["run", "--vmm", "nosuchvmm"][..],
        &["run", "--vmm", "refvmm:nosuchmutant"],
        &["frobnicate"],
    ] {
        let o = cprkit(args, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
    }
    let o = cprkit(&["explain", "not-a-trial"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn explain_draws_source_and_target_columns() {
    let o = cprkit(&["explain", "refvmm::memory-running/no-fault"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("SOURCE") && out.contains("TARGET"), "{out}");
    let stop = out.find("STOP").expect("a STOP line");
    let cut = out.find("hold cpr-save").expect("the cut-over hold");
    assert!(
        stop < cut,
        "the correct refvmm stops before its fds cross:\n{out}"
    );
}

#[test]
fn list_prints_one_trial_a_line() {
    let o = cprkit(&["list", "--vmm", "refvmm", "--case", "memory-paused"], &[]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.lines().count(), 28);
    assert!(out.lines().all(|l| l.starts_with("refvmm::memory-paused/")));
}

#[test]
fn no_jobs_is_a_usage_error() {
    let o = cprkit(&["run", "--jobs", "0"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("must be at least 1"), "{}", text(&o));
}

#[test]
fn the_vmm_help_names_every_adapter() {
    for sub in ["run", "list", "certify", "bench", "compare", "fuzz"] {
        let o = cprkit(&[sub, "--help"], &[]);
        let help = text(&o);
        for (spelling, _) in cprkit_adapters::VMM_SPELLINGS {
            assert!(
                help.contains(spelling),
                "`{sub} --help` lacks {spelling}:\n{help}"
            );
        }
    }
}

#[test]
fn explain_takes_an_exec_trial_name_as_run_prints_it() {
    let list = cprkit(
        &[
            "list",
            "--vmm",
            "exec:examples/exec-adapter/refvmm_adapter.py",
            "--case",
            "*memory-paused/no-fault",
        ],
        &[],
    );
    let name = String::from_utf8_lossy(&list.stdout).trim().to_string();
    assert_eq!(
        name,
        "exec:examples/exec-adapter/refvmm_adapter.py::memory-paused/no-fault"
    );
    let o = cprkit(&["explain", &name], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("DONE-1"), "{}", text(&o));
}
