//! The exec adapter proven by use: the whole refvmm matrix through the example
//! program `examples/exec-adapter/refvmm_adapter.py` gives, trial for trial, the
//! outcomes of the built-in `refvmm` adapter (its reviewed snapshots, which
//! the conformance runner holds it to); and adapter programs that print
//! garbage, hang, quit or speak another version end their trial with a clear
//! error, in bounded time, leaving nothing behind.
//!
//! The tests run one at a time: each checks that the kit is left with no child
//! process and no more fds than before, which another test running alongside
//! would spoil.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use cprkit_adapters::adapter_for;
use cprkit_harness::adapter::Adapter;
use cprkit_harness::leaks::Leaks;
use cprkit_harness::trialdir::RunRoot;
use cprkit_suite::runner::{RunOptions, TrialResult, Verdicts, plan, run_all};
use cprkit_suite::snapshot_files::snapshot_name;
use cprkit_suite::{TrialId, cases_dir, load_dir, vmm_snapshots_dir};
use cprkit_test_support::{HOST_ENV, write_script};

const EXAMPLE: &str = "exec:examples/exec-adapter/refvmm_adapter.py";

/// Serialises the tests, after pointing the kit (and the example program) at
/// this build's refvmm, hosted by this build's `cprkit`.
fn serial() -> MutexGuard<'static, ()> {
    static ENV: Once = Once::new();
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    ENV.call_once(|| {
        // SAFETY: every test calls this first and the first caller sets it
        // while the others wait; nothing here reads the environment but std,
        // which locks it.
        unsafe {
            std::env::set_var(HOST_ENV, env!("CARGO_BIN_EXE_cprkit"));
            std::env::set_var("PATH", cprkit_test_support::path_with_python_first());
            // A difference from the built-in adapter's snapshots is a
            // failure here, never a snapshot proposed for refvmm.
            std::env::set_var("INSTA_UPDATE", "no");
        }
    });
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks, after a run, that nothing is left: no child, no trial directory,
/// no fd of any kind (the exec adapter's pipes among them) more than before.
struct Census(cprkit_harness::leaks::Census);

impl Census {
    fn take() -> Self {
        Census(cprkit_harness::leaks::Census::take())
    }

    fn assert_clean(&self, root: RunRoot) {
        let leaks = Leaks::check(&self.0, Some(root.path()));
        drop(root);
        assert!(leaks.is_clean(), "{leaks}");
    }
}

fn run(adapter: &Arc<dyn Adapter>, filter: Option<&str>, jobs: usize) -> Vec<TrialResult> {
    let cases = load_dir(&cases_dir()).expect("the repository's cases");
    let planned = plan(std::slice::from_ref(adapter), &cases, filter);
    assert!(!planned.is_empty(), "no trial for {filter:?}");
    let root = RunRoot::new().unwrap();
    let census = Census::take();
    let results = run_all(&planned, jobs, root.path(), &RunOptions::default(), &|_| {});
    census.assert_clean(root);
    results
}

/// Trials at once through the exec adapter (each starts four adapter
/// programs: more would only queue for the CPUs).
const JOBS: usize = 4;

/// The reviewed snapshot of the built-in adapter's trial like `r`.
fn snapshot_file_of(r: &TrialResult) -> std::path::PathBuf {
    vmm_snapshots_dir("refvmm").join(format!("{}.snap", snapshot_name(&r.id)))
}

/// A trial's outcome with its name (which names the adapter) left out.
fn outcome_of(r: &TrialResult) -> Result<String, String> {
    match &r.verdicts {
        Verdicts::Judged { outcome, .. } => {
            let mut o = (**outcome).clone();
            o.trial = String::new();
            Ok(serde_json::to_string_pretty(&o).unwrap())
        }
        Verdicts::Error(e) => Err(format!("error: {e}")),
        Verdicts::NotRun(why) => Err(format!("not run: {why}")),
    }
}

/// Whether a trial's outcome is the reviewed snapshot of the same trial of
/// the built-in `refvmm` adapter (the conformance runner holds the built-in
/// adapter to those snapshots, so this is "the same outcome as the built-in
/// adapter's" without running its matrix a second time); the difference
/// (insta prints it) if not.
fn matches_builtin_snapshot(r: &TrialResult) -> Result<(), String> {
    let Verdicts::Judged { outcome, .. } = &r.verdicts else {
        return Err(outcome_of(r).unwrap_err());
    };
    let builtin = TrialId {
        vmm: "refvmm".into(),
        ..r.id.clone()
    };
    let mut outcome = (**outcome).clone();
    outcome.trial = builtin.name();
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(vmm_snapshots_dir("refvmm"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    let name = snapshot_name(&builtin);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        settings.bind(|| insta::assert_yaml_snapshot!(name, outcome))
    }))
    .map_err(|_| format!("{}: differs from {} (see above)", r.name(), builtin.name()))
}

#[test]
fn the_example_program_gives_the_outcomes_of_the_built_in_adapter() {
    let _one = serial();
    let exec = adapter_for(EXAMPLE).unwrap();
    assert_eq!(exec.name(), EXAMPLE);
    assert_eq!(exec.snapshot_dir(), "exec-refvmm_adapter.py");

    let t = Instant::now();
    let got = run(&exec, None, JOBS);
    eprintln!(
        "{} trials through the exec adapter: {:.1?}",
        got.len(),
        t.elapsed()
    );
    assert_eq!(
        exec.version(),
        "refvmm 10.0.0",
        "the version from `connect`"
    );

    let mut differ = Vec::new();
    let (mut unmapped, mut not_run) = (0, 0);
    for g in &got {
        match outcome_of(g) {
            // The protocol has no words for a case's scenario keys: the exec
            // adapter's trials of such a case are not run, and say why.
            Err(e) if e.contains("does not map the scenario keys") => unmapped += 1,
            // A profile this host cannot run is not run through either
            // adapter (the built-in one's reviewed snapshots have none).
            Err(e) if e.starts_with("not run: ") => {
                let builtin = snapshot_file_of(g);
                assert!(
                    !builtin.exists(),
                    "{}: {e}, but {} exists",
                    g.name(),
                    builtin.display()
                );
                not_run += 1;
            }
            Err(e) => differ.push(format!("{}: {e}", g.name())),
            Ok(_) => {
                if let Err(e) = matches_builtin_snapshot(g) {
                    differ.push(e);
                }
            }
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} trials differ:\n{}",
        differ.len(),
        got.len(),
        differ.join("\n")
    );
    // The scenario cases are there, and only they are left out; most trials
    // were compared.
    assert!(
        unmapped > 0 && unmapped + not_run < got.len() / 2,
        "{unmapped} not mapped, {not_run} not run, of {}",
        got.len()
    );
}

#[test]
fn through_the_command_line_a_mutant_is_caught_by_its_rule() {
    let _one = serial();
    let o = Command::new(env!("CARGO_BIN_EXE_cprkit"))
        .args([
            "run",
            "--vmm",
            EXAMPLE,
            "--case",
            "*memory-running/no-fault",
        ])
        .env("CPRKIT_EXEC_MUTANT", "legacy-stop-order")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains("exec:examples/exec-adapter/refvmm_adapter.py::memory-running/no-fault")
            && text.contains("ORD-1"),
        "{text}"
    );
    assert!(text.contains("leak check: nothing left behind"), "{text}");
}

/// Writes an adapter program into a fresh directory; it notes its pids in `pids` there.
fn bad_program(name: &str, body: &str) -> (tempfile::TempDir, Arc<dyn Adapter>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    write_script(&path, body);
    let adapter = adapter_for(&format!("exec:{}", path.display())).unwrap();
    (dir, adapter)
}

/// Runs the fault-free handover of a running guest with a misbehaving adapter
/// program: the trial must be an error, within the bound, and every process the
/// program started must be gone. Returns the error.
fn bad_trial(name: &str, body: &str) -> String {
    let _one = serial();
    let (dir, adapter) = bad_program(name, body);
    let t = Instant::now();
    let results = run(&adapter, Some("*memory-running/no-fault"), 1);
    let elapsed = t.elapsed();
    assert_eq!(results.len(), 1);
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
    let error = match &results[0].verdicts {
        Verdicts::Error(e) => e.clone(),
        _ => panic!("{name}: not a trial error: {:?}", outcome_of(&results[0])),
    };
    eprintln!("{name} ({elapsed:.1?}): {error}");
    let program = dir.path().join(name);
    assert!(error.contains(&program.display().to_string()), "{error}");
    assert_gone(&dir.path().join("pids"));
    error
}

/// Every pid listed in `file` is gone (or a zombie no longer ours to reap).
fn assert_gone(file: &Path) {
    let pids = std::fs::read_to_string(file).expect("the program noted its pids");
    assert!(!pids.trim().is_empty());
    for pid in pids.split_whitespace() {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim().to_string()));
        if let Some(state) = state {
            assert!(state.starts_with('Z'), "pid {pid} is left, state {state}");
        }
    }
}

#[test]
fn an_adapter_printing_garbage_is_an_error() {
    let e = bad_trial(
        "garbage.py",
        r#"#!/usr/bin/env python3
import os, sys
with open(os.path.join(os.path.dirname(__file__), "pids"), "a") as f:
    print(os.getpid(), file=f)
print("Hello! Let me tell you about my VMM.", flush=True)
sys.stdin.read()
"#,
    );
    assert!(e.contains("(launch session for the target, pid "), "{e}");
    assert!(
        e.contains("printed a line that is not JSON")
            && e.contains("`Hello! Let me tell you about my VMM.`"),
        "{e}"
    );
    assert!(e.contains("waiting for the reply to hello"), "{e}");
}

#[test]
fn an_adapter_that_hangs_is_an_error_after_the_timeout() {
    // A shell script with a child of its own: the whole process group must go.
    let e = bad_trial(
        "hang.sh",
        r#"#!/bin/sh
here=$(dirname "$0")
echo $$ >> "$here/pids"
sleep 600 &
echo $! >> "$here/pids"
echo "thinking..." >&2
wait
"#,
    );
    assert!(
        e.contains("did not reply to hello within 10 s; the kit killed it; its stderr ends with: thinking..."),
        "{e}"
    );
}

#[test]
fn an_adapter_exiting_after_hello_is_an_error() {
    let e = bad_trial(
        "quitter.py",
        r#"#!/usr/bin/env python3
import json, os, sys
with open(os.path.join(os.path.dirname(__file__), "pids"), "a") as f:
    print(os.getpid(), file=f)
hello = json.loads(sys.stdin.readline())
print(json.dumps({"id": hello["id"], "ok": True, "protocol": "cprkit-exec/1"}), flush=True)
print("that is all I know", file=sys.stderr)
sys.exit(3)
"#,
    );
    assert!(
        e.contains(
            "exited (status 3) before replying to command; its stderr ends with: that is all I know"
        ),
        "{e}"
    );
}

#[test]
fn an_adapter_speaking_another_version_is_an_error() {
    let e = bad_trial(
        "future.py",
        r#"#!/usr/bin/env python3
import json, os, sys
with open(os.path.join(os.path.dirname(__file__), "pids"), "a") as f:
    print(os.getpid(), file=f)
for line in sys.stdin:
    req = json.loads(line)
    print(json.dumps({"id": req["id"], "ok": True, "protocol": "cprkit-exec/3"}), flush=True)
"#,
    );
    assert!(
        e.contains("speaks protocol cprkit-exec/3; this kit accepts cprkit-exec/1, cprkit-exec/2"),
        "{e}"
    );
}
