//! The conformance runner (`cargo test`): one libtest-mimic trial per case x
//! VMM x fault point, named like `refvmm::memory-running/kill-target@cpr-save`,
//! each compared with its reviewed insta snapshot under snapshots/<vmm>/.
//!
//! The VMMs are refvmm and each of its mutants (the mutants' snapshots record
//! which rules catch them, so a checker that goes blind fails here), QEMU
//! (its snapshots record its known violations as failed rules) and Cloud
//! Hypervisor (`$CPRKIT_CLOUD_HYPERVISOR` or PATH). Whether QEMU,
//! qemu-storage-daemon and Cloud Hypervisor are required is decided by
//! `cprkit_adapters::requirements` (`CPRKIT_REQUIRE`, `CI`): one that is
//! required and absent stops the runner (exit status 2, naming it and how to
//! install it); one that is optional and absent leaves the trials that need
//! it planned and ignored, with the reason, counted in the summary.
//!
//! The trial `snapshots-match-the-plan` fails when a snapshot file under
//! snapshots/ belongs to no planned trial. After the last trial the runner
//! checks that nothing was left behind. Trials run as many at once as the
//! machine's load allows ([`LoadGate`]), unless `--test-threads` says.

use std::process::ExitCode;
use std::sync::Arc;

use cprkit_adapters::requirements::{Part, Policy};
use cprkit_adapters::{RefVmm, adapter_for};
use cprkit_harness::adapter::Adapter;
use cprkit_harness::leaks::{Census, Leaks};
use cprkit_harness::loadgate::LoadGate;
use cprkit_harness::trialdir::RunRoot;
use cprkit_suite::runner::{Planned, RunOptions, Verdicts, plan, run_one};
use cprkit_suite::snapshot_files::{snapshot_name, stray_snapshots};
use cprkit_suite::{Profile, cases_dir, load_dir, snapshots_dir, vmm_snapshots_dir};
use cprkit_test_support::HOST_ENV;
use libtest_mimic::{Arguments, Failed, Trial};

/// Mutants whose every trial waits out a bound (a migrate never answered,
/// a migration that never leaves `setup`, a target that never gets the state
/// it is said to have loaded) and tells the same story at every point: the runner keeps these of their trials only (`cprkit selftest`
/// runs their whole matrix).
const WAITING_MUTANTS: &[(&str, &[&str])] = &[
    (
        "refvmm:hang-on-migrate",
        &[
            "memory-running/no-fault",
            "memory-running/kill-target@cpr-save",
        ],
    ),
    (
        "refvmm:stall-in-setup",
        &["memory-running/no-fault", "memory-running/cancel@cpr-save"],
    ),
    (
        "refvmm:complete-without-transfer",
        &[
            "memory-running/no-fault",
            "memory-paused/kill-target@cpr-save",
        ],
    ),
];

/// Whether the runner keeps this planned trial (see [`WAITING_MUTANTS`]).
fn kept(p: &Planned) -> bool {
    let trial = p.id.name();
    WAITING_MUTANTS
        .iter()
        .find(|(vmm, _)| *vmm == p.id.vmm)
        .is_none_or(|(vmm, keep)| keep.iter().any(|k| trial == format!("{vmm}::{k}")))
}

/// Whether a trial's VMM runs its guest under emulation (QEMU's TCG here,
/// Cloud Hypervisor), each spinning a CPU. Those trials run after all the
/// others, as many at once as the gate allows: under the load of dozens of
/// refvmm trials beside them, QEMU 10.0.2 with return-path once ended a
/// cancel at main-stream `failed` instead of `cancelled` (its cancel races
/// its return path), which a snapshot cannot hold as one outcome.
fn emulated(p: &Planned) -> bool {
    let vmm = p.adapter.name();
    vmm.starts_with("qemu") || vmm.starts_with("cloud-hypervisor")
}

/// The trials of VMMs that do not emulate their guest still to finish.
struct LightTrialsLeft {
    left: std::sync::Mutex<usize>,
    done: std::sync::Condvar,
}

/// The longest an emulated VMM's trial waits for the others: every trial
/// is bounded, so this is reached only if the runner itself is stuck.
const LIGHT_TRIALS_BOUND: std::time::Duration = std::time::Duration::from_secs(1800);

impl LightTrialsLeft {
    fn new(n: usize) -> Self {
        LightTrialsLeft {
            left: std::sync::Mutex::new(n),
            done: std::sync::Condvar::new(),
        }
    }

    fn set(&self, n: usize) {
        *self.left.lock().unwrap_or_else(|e| e.into_inner()) = n;
    }

    fn one_done(&self) {
        let mut left = self.left.lock().unwrap_or_else(|e| e.into_inner());
        *left = left.saturating_sub(1);
        if *left == 0 {
            self.done.notify_all();
        }
    }

    fn wait_all_done(&self) {
        let left = self.left.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .done
            .wait_timeout_while(left, LIGHT_TRIALS_BOUND, |n| *n > 0);
    }
}

fn check(p: &Planned, root: &std::path::Path) -> Result<(), Failed> {
    let result = run_one(p, root, &RunOptions::default());
    match result.verdicts {
        Verdicts::Judged { outcome, .. } => {
            let name = snapshot_name(&p.id);
            let mut settings = insta::Settings::clone_current();
            settings.set_snapshot_path(vmm_snapshots_dir(&p.adapter.snapshot_dir()));
            settings.set_prepend_module_to_snapshot(false);
            settings.set_omit_expression(true);
            settings.set_description(format!("cprkit trial {}", p.id.name()));
            let mut outcome = outcome.clone();
            if !p.adapter.snapshot_steps() {
                outcome.steps.clear();
            }
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                settings.bind(|| insta::assert_yaml_snapshot!(name, outcome))
            }))
            .map_err(|_| {
                Failed::from(
                    "the outcome differs from its snapshot, or it has none yet (see above; review with `cargo insta review`)",
                )
            })
        }
        Verdicts::Error(e) => Err(format!("trial error: {e}").into()),
        Verdicts::NotRun(why) => Err(format!("not run: {why}").into()),
    }
}

fn main() -> ExitCode {
    // refvmm and the device daemon of this build: `cprkit` hosts both.
    // SAFETY: set before any thread starts.
    unsafe { std::env::set_var(HOST_ENV, env!("CARGO_BIN_EXE_cprkit")) };
    let mut args = Arguments::from_args();
    // As many trials at once as the machine's load allows (a trial that
    // waits needs no core), unless --test-threads says otherwise.
    let gate = Arc::new(LoadGate::default());
    if args.test_threads.is_none() {
        args.test_threads = Some(gate.most());
    }
    let cases = match load_dir(&cases_dir()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let names = RefVmm::family();
    let mut adapters: Vec<Arc<dyn Adapter>> = match names.iter().map(|n| adapter_for(n)).collect() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // QEMU and Cloud Hypervisor: planned whether here or not; required or
    // optional as `requirements` decides.
    let policy = match Policy::for_tests() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for vmm in ["qemu", "cloud-hypervisor"] {
        match policy.adapter_or_absent(vmm) {
            Ok(a) => {
                if let Some(why) = a.not_runnable(false, &[]) {
                    eprintln!("{vmm} trials not run: {why}");
                }
                adapters.push(a);
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let planned: Vec<Planned> = plan(&adapters, &cases, None)
        .into_iter()
        .filter(kept)
        .collect();
    // The parts the cases need (qemu-storage-daemon, a kernel vhost device).
    let parts = cases
        .iter()
        .flat_map(|c| Part::of_case(c.device_backend, c.profile == Profile::VhostKernel));
    if let Err(e) = policy.check(parts) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let stray = stray_snapshots(&snapshots_dir(), &planned);
    let before = Census::take();
    let root = Arc::new(RunRoot::new().expect("a run directory in the temp dir"));
    // Counted below, once it is known which trials the arguments run.
    let light = Arc::new(LightTrialsLeft::new(0));
    let light_flags: Vec<bool> = planned.iter().map(|p| !emulated(p)).collect();
    let mut trials: Vec<Trial> = planned
        .into_iter()
        .map(|p| {
            let (root, gate, light) = (Arc::clone(&root), Arc::clone(&gate), Arc::clone(&light));
            let ignored = p.runnable().err();
            let name = p.id.name();
            let t = Trial::test(name, move || {
                if emulated(&p) {
                    light.wait_all_done();
                }
                let result = {
                    let _admitted = gate.admit(|| false);
                    check(&p, root.path())
                };
                if !emulated(&p) {
                    light.one_done();
                }
                result
            });
            match ignored {
                Some(why) => t
                    .with_ignored_flag(true)
                    .with_kind(format!("not run: {why}")),
                None => t,
            }
        })
        .collect();
    trials.push(Trial::test("snapshots-match-the-plan", move || {
        if stray.is_empty() {
            return Ok(());
        }
        let files: Vec<String> = stray.iter().map(|f| f.display().to_string()).collect();
        Err(format!(
            "{} snapshot file(s) belong to no planned trial (a deleted case, point or VMM?): remove them:\n{}",
            files.len(),
            files.join("\n")
        )
        .into())
    }));
    light.set(
        trials
            .iter()
            .zip(&light_flags)
            .filter(|(t, light)| **light && !args.is_ignored(t) && !args.is_filtered_out(t))
            .count(),
    );
    let listing = args.list;
    let conclusion = libtest_mimic::run(&args, trials);
    if listing {
        return conclusion.exit_code();
    }
    let leaks = Leaks::check(&before, Some(root.path()));
    drop(root);
    if !leaks.is_clean() {
        eprintln!("{leaks}");
        return ExitCode::FAILURE;
    }
    eprintln!("leak check: {leaks}");
    conclusion.exit_code()
}
