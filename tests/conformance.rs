//! The conformance runner (`cargo test`): one libtest-mimic trial per case x
//! VMM x fault point, named like `refvmm::memory-running/kill-target@cpr-save`,
//! each compared with its reviewed insta snapshot under snapshots/<vmm>/.
//!
//! The VMMs are refvmm and each of its mutants (the mutants' snapshots record
//! which rules catch them, so a checker that goes blind fails here), and QEMU
//! where it is installed (its snapshots record its known violations as
//! failed rules; required under CI), and Cloud Hypervisor where it is there
//! (`$CPRKIT_CLOUD_HYPERVISOR` or PATH; never required). After the last trial
//! the runner checks that nothing was left behind.

use std::process::ExitCode;
use std::sync::Arc;

use cprkit_adapters::{RefVmm, adapter_for};
use cprkit_harness::adapter::Adapter;
use cprkit_harness::leaks::{FdCensus, Leaks};
use cprkit_harness::trialdir::RunRoot;
use cprkit_suite::runner::{Planned, RunOptions, Verdicts, plan, run_one};
use cprkit_suite::{cases_dir, load_dir, vmm_snapshots_dir};
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

fn check(p: &Planned, root: &std::path::Path) -> Result<(), Failed> {
    let result = run_one(p, root, &RunOptions::default());
    match result.verdicts {
        Verdicts::Judged { outcome, .. } => {
            let name = format!("{}__{}", p.id.case, p.id.point_name()).replace(':', "-");
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
    let args = Arguments::from_args();
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
    // QEMU where it is installed (required under CI, where .ci/run installs it).
    match adapter_for("qemu") {
        Ok(q) => adapters.push(q),
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            eprintln!("error: QEMU is required under CI: {e}");
            return ExitCode::from(2);
        }
        Err(e) => eprintln!("QEMU trials not run: {e}"),
    }
    // Cloud Hypervisor where it is there ($CPRKIT_CLOUD_HYPERVISOR, or on
    // PATH); never required (CI has none): elsewhere its trials are not run,
    // and say why.
    match adapter_for("cloud-hypervisor") {
        Ok(ch) => adapters.push(ch),
        Err(e) => eprintln!("Cloud Hypervisor trials not run: {e}"),
    }
    let before = FdCensus::take();
    let root = Arc::new(RunRoot::new().expect("a run directory in the temp dir"));
    let trials: Vec<Trial> = plan(&adapters, &cases, None)
        .into_iter()
        .filter(kept)
        .map(|p| {
            let root = Arc::clone(&root);
            let ignored = p.runnable().err();
            let name = p.id.name();
            let t = Trial::test(name, move || check(&p, root.path()));
            match ignored {
                Some(why) => t
                    .with_ignored_flag(true)
                    .with_kind(format!("not run: {why}")),
                None => t,
            }
        })
        .collect();
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
