//! The subcommands and what they share: choosing VMMs and cases, a run
//! directory, stopping on a signal.

mod bench;
mod certify;
mod compare;
mod explain;
mod fuzz;
mod interrupt;
mod list;
mod pool;
mod run;
mod selftest;
mod soak;
mod table;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use cprkit_harness::adapter::Adapter;
use cprkit_harness::runowner;
use cprkit_harness::trialdir::RunRoot;
use cprkit_report::Partition;
use cprkit_suite::runner::{Planned, plan};
use cprkit_suite::{Case, Profile};
use pool::Jobs;

/// Fault-injection and conformance kit for cpr-transfer live update of VMMs.
#[derive(Debug, Parser)]
#[command(name = "cprkit", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
pub struct Select {
    /// The VMM under test (repeat for several).
    #[arg(long = "vmm", default_value = "refvmm", long_help = vmm_help_repeat())]
    vmm: Vec<String>,
    /// Keep the trials whose case name or full trial name matches this glob.
    #[arg(long = "case")]
    case: Option<String>,
    /// Only part K of N of the trials, for N CI jobs: trial i of the list
    /// (0-based, in list order, after --vmm and --case) is in part (i % N) + 1.
    #[arg(long, value_name = "K/N")]
    partition: Option<Partition>,
}

/// The adapters and trials a [`Select`] names.
struct Selection {
    adapters: Vec<Arc<dyn Adapter>>,
    /// Trials matching --vmm and --case, before --partition.
    matching: usize,
    planned: Vec<Planned>,
}

impl Select {
    /// The selected trials of `cases`, in list order.
    fn select(&self, cases: &[Case]) -> Result<Selection> {
        let adapters = adapters(&self.vmm)?;
        let planned = plan(&adapters, cases, self.case.as_deref());
        let matching = planned.len();
        let planned = match self.partition {
            Some(p) => p.select(planned),
            None => planned,
        };
        Ok(Selection {
            adapters,
            matching,
            planned,
        })
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the trials, one a line.
    List {
        #[command(flatten)]
        select: Select,
    },
    /// Run trials: progress on stderr, a verdict table at the end.
    Run {
        #[command(flatten)]
        select: Select,
        /// Trials run at once: a number, or auto (the default: one per CPU,
        /// and more while the machine has a core to spare).
        #[arg(long, short = 'j', default_value = "auto", value_parser = parse_jobs)]
        jobs: Jobs,
        /// Keep each trial's directory (sockets, logs).
        #[arg(long)]
        keep: bool,
        /// text: the verdict table; json: report.json's shape; junit: JUnit
        /// XML. On stdout; progress stays on stderr.
        #[arg(long, value_enum, default_value_t = run::Format::Text)]
        format: run::Format,
        /// The known-violations list to judge the run against, instead of
        /// each VMM's own (snapshots/<vmm>/known-violations.toml): for a build
        /// that does not inherit its kind's list (another build id).
        #[arg(long, value_name = "FILE")]
        known_violations: Option<PathBuf>,
        /// Run each trial K times; a trial whose repeats give different
        /// outcomes is reported intermittent, with each outcome and its count.
        #[arg(long, value_name = "K", default_value_t = 1, value_parser = parse_repeat)]
        repeat: usize,
    },
    /// Certify a VMM for a profile: every trial of the profile's cases, no
    /// skip, no known violation excused; writes the bundle to --out.
    /// Exit 0: certified; 1: not certified; 2: usage or environment error.
    Certify {
        /// The VMM under test.
        #[arg(long, long_help = cprkit_adapters::vmm_help())]
        vmm: String,
        /// The profile to certify: memory, vhost-user or vhost-kernel.
        #[arg(long)]
        profile: Profile,
        /// The bundle's directory (created; a previous bundle there is replaced).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Trials run at once: a number, or auto (the default: one per CPU,
        /// and more while the machine has a core to spare).
        #[arg(long, short = 'j', default_value = "auto", value_parser = parse_jobs)]
        jobs: Jobs,
        /// Keep each trial's directory (sockets, logs).
        #[arg(long)]
        keep: bool,
    },
    /// Run one trial and draw its timeline as two columns, SOURCE and TARGET.
    Explain {
        /// A full trial name as `run` and `list` print it, e.g.
        /// refvmm::memory-running/kill-target@cpr-save.
        trial: String,
        /// Keep the trial's directory (sockets, logs).
        #[arg(long)]
        keep: bool,
    },
    /// Every refvmm mutant against the matrix: which rules caught it.
    Selftest {
        /// Trials run at once: a number, or auto (the default: one per CPU,
        /// and more while the machine has a core to spare).
        #[arg(long, short = 'j', default_value = "auto", value_parser = parse_jobs)]
        jobs: Jobs,
        /// Only the trials whose case name or full trial name matches this glob.
        #[arg(long = "case")]
        case: Option<String>,
    },
    /// Compare two runs, A then B (e.g. stock and patched builds): which
    /// verdicts B newly breaks and which it fixes, rule by rule, matching
    /// trials by CASE/POINT; known violations are not excused.
    /// Exit 1: B is worse (a verdict newly broken, a trial that ran in A did
    /// not in B); 0: not worse; 2: usage error (unknown VMM, unreadable or
    /// invalid file, no trial in common).
    Compare {
        /// The baseline: a saved `cprkit run --format json` result (an
        /// existing file) or a --vmm value, whose trials run here.
        #[arg(value_name = "A", long_help = compare_arg_help("The baseline"))]
        a: String,
        /// What is compared with A: a saved result or a --vmm value, as A.
        #[arg(value_name = "B", long_help = compare_arg_help("What is compared with A"))]
        b: String,
        /// Keep the trials whose case name or full trial name matches this
        /// glob (on both sides, files included).
        #[arg(long = "case")]
        case: Option<String>,
        /// Trials run at once, a number or auto (both sides' trials share them).
        #[arg(long, short = 'j', default_value = "auto", value_parser = parse_jobs)]
        jobs: Jobs,
        /// markdown: for people; json: docs/compare.schema.json.
        #[arg(long, value_enum, default_value_t = compare::Format::Markdown)]
        format: compare::Format,
    },
    /// Random fault schedules against one VMM, judged by every rule: each
    /// trial draws one to K faults (several steps, both sides), channel holds
    /// and a device delay from its seed; a failing trial is replayed, shrunk
    /// and printed with the command that replays it.
    /// Exit 0: nothing beyond the VMM's known violations, no error, hang or
    /// leak; 1 otherwise; 130/143 on SIGINT/SIGTERM.
    Fuzz {
        /// The VMM under test.
        #[arg(long, default_value = "refvmm", long_help = cprkit_adapters::vmm_help())]
        vmm: String,
        /// Only the cases whose name matches this glob.
        #[arg(long = "case")]
        case: Option<String>,
        /// Trials to run.
        #[arg(long, default_value_t = 100, conflicts_with = "time")]
        trials: usize,
        /// Run trials for this long instead (90s, 10m, 1h).
        #[arg(long, value_parser = fuzz::parse_duration)]
        time: Option<std::time::Duration>,
        /// The run's seed (each trial's seed is drawn from it); default: the clock, printed.
        #[arg(long)]
        seed: Option<u64>,
        /// At most this many faults per trial.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=8))]
        faults: u64,
        /// Trials run at once.
        #[arg(long, short = 'j', default_value = "auto", value_parser = parse_jobs)]
        jobs: Jobs,
        /// Run the trial of this seed only (as a failing trial prints it).
        #[arg(long, value_name = "SEED", conflicts_with = "schedule")]
        replay: Option<u64>,
        /// Run this schedule on --case (one case): FAULT@STEP,...;hold=STEP:MS,...;delay=MS.
        #[arg(long, value_parser = |s: &str| s.parse::<cprkit_harness::schedule::Schedule>().map_err(|e| e.to_string()))]
        schedule: Option<cprkit_harness::schedule::Schedule>,
        /// The guest's state for --schedule (default: the case's).
        #[arg(long, value_parser = fuzz::parse_guest, requires = "schedule")]
        guest: Option<cprkit_harness::plan::GuestState>,
        /// Runs of a failing trial after the first, and of its shrunk schedule.
        #[arg(long, default_value_t = 3)]
        replays: usize,
        /// Trials the shrinker may run for one failing trial.
        #[arg(long, default_value_t = 40)]
        shrink_budget: usize,
        /// Failing trials to replay and shrink (the others are listed).
        #[arg(long, default_value_t = 5)]
        investigate: usize,
        /// Keep each trial's directory (sockets, logs).
        #[arg(long)]
        keep: bool,
    },
    /// Time the kit: its trial beside a bare handover, each VMM's matrix at
    /// --jobs 1, 2, 4, 8 and auto, and selftest, side by side; or (--soak) the fuzzing soak.
    Bench {
        /// The VMMs to time (repeat for several); refvmm and QEMU by default
        /// (a VMM that is not installed is said not run).
        #[arg(long = "vmm", default_values_t = ["refvmm".to_string(), "qemu".to_string()], long_help = vmm_help_repeat())]
        vmm: Vec<String>,
        /// Trials run at once in the matrices and selftest, a number or auto
        /// (the scaling table times 1, 2, 4 and 8 as well).
        #[arg(long, short = 'j', default_value = "auto", value_parser = parse_jobs)]
        jobs: Jobs,
        /// Bare handovers and fault-free trials to time (the median is reported).
        #[arg(long, default_value_t = 10)]
        samples: usize,
        /// Quick: the memory-running case only in the matrices and selftest,
        /// at most 3 samples.
        #[arg(long)]
        quick: bool,
        /// Do not time selftest.
        #[arg(long)]
        no_selftest: bool,
        /// The fuzzing soak instead: `cprkit fuzz` on refvmm, QEMU and each
        /// mutant, as figures (trials/min, failures, hangs, leaks, catch rates).
        #[arg(long)]
        soak: bool,
        /// The soak's seed.
        #[arg(long, default_value_t = 2026, requires = "soak")]
        soak_seed: u64,
        /// The soak's trials on refvmm.
        #[arg(long, default_value_t = 1000, requires = "soak")]
        refvmm_trials: usize,
        /// The soak's trials on QEMU (0: none).
        #[arg(long, default_value_t = 200, requires = "soak")]
        qemu_trials: usize,
        /// The soak's trials on each mutant.
        #[arg(long, default_value_t = 40, requires = "soak")]
        mutant_trials: usize,
    },
}

fn vmm_help_repeat() -> String {
    format!("{} Repeat --vmm for several.", cprkit_adapters::vmm_help())
}

/// The long help of compare's A and B.
fn compare_arg_help(what: &str) -> String {
    let spellings: Vec<&str> = cprkit_adapters::VMM_SPELLINGS
        .iter()
        .map(|(s, _)| *s)
        .collect();
    format!(
        "{what}: a saved `cprkit run --format json` result (an argument naming an existing file, not a directory, is read as one; ./NAME for a file named like a VMM) or a --vmm value ({}), whose trials run here.",
        spellings.join(", ")
    )
}

/// `--jobs N`: at least one trial at a time; `auto`: as the load allows.
fn parse_jobs(text: &str) -> Result<Jobs, String> {
    if text == "auto" {
        return Ok(Jobs::Auto);
    }
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (trials run at once), or auto".into()),
        Ok(n) => Ok(Jobs::Fixed(n)),
        Err(e) => Err(format!("{e} (a number of trials, or auto)")),
    }
}

/// `--repeat K`: each trial at least once.
fn parse_repeat(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (runs of each trial)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    // Every command but `list` runs trials: SIGINT and SIGTERM stop them.
    if !matches!(cli.command, Command::List { .. }) {
        interrupt::install()?;
    }
    match cli.command {
        Command::List { select } => list::run(&select),
        Command::Run {
            select,
            jobs,
            keep,
            format,
            known_violations,
            repeat,
        } => run::run(
            &select,
            &run::Options {
                jobs,
                keep,
                format,
                known_list: known_violations.as_deref(),
                repeat,
            },
        ),
        Command::Certify {
            vmm,
            profile,
            out,
            jobs,
            keep,
        } => certify::run(&vmm, profile, &out, jobs, keep),
        Command::Explain { trial, keep } => explain::run(&trial, keep),
        Command::Selftest { jobs, case } => selftest::run(jobs, case.as_deref()),
        Command::Compare {
            a,
            b,
            case,
            jobs,
            format,
        } => compare::run(&a, &b, case.as_deref(), jobs, format),
        Command::Fuzz {
            vmm,
            case,
            trials,
            time,
            seed,
            faults,
            jobs,
            replay,
            schedule,
            guest,
            replays,
            shrink_budget,
            investigate,
            keep,
        } => fuzz::run(
            &fuzz::Campaign {
                vmm,
                case,
                budget: match time {
                    Some(t) => fuzz::Budget::Time(t),
                    None => fuzz::Budget::Trials(trials),
                },
                seed: seed.unwrap_or_else(fuzz::fresh_seed),
                faults: faults as usize,
                jobs,
                effort: cprkit_suite::fuzz::Effort {
                    replays,
                    budget: shrink_budget,
                },
                investigate,
                keep,
                progress: true,
                until_failure: false,
            },
            &fuzz::One {
                replay,
                schedule,
                guest,
            },
        ),
        Command::Bench {
            jobs,
            soak: true,
            soak_seed,
            refvmm_trials,
            qemu_trials,
            mutant_trials,
            ..
        } => soak::run(&soak::Soak {
            seed: soak_seed,
            jobs,
            refvmm_trials,
            qemu_trials,
            mutant_trials,
        }),
        Command::Bench {
            soak: false,
            vmm,
            jobs,
            samples,
            quick,
            no_selftest,
            ..
        } => bench::run(&bench::Options {
            vmms: vmm,
            jobs,
            samples,
            quick,
            selftest: !no_selftest,
        }),
    }
}

/// The cases of the repository (or $CPRKIT_CASES).
fn load_cases() -> Result<Vec<Case>> {
    let dir = cprkit_suite::cases_dir();
    cprkit_suite::load_dir(&dir).map_err(anyhow::Error::from)
}

fn adapters(names: &[String]) -> Result<Vec<Arc<dyn Adapter>>> {
    names
        .iter()
        .map(|n| cprkit_adapters::adapter_for(n).with_context(|| format!("--vmm {n}")))
        .collect()
}

/// A command's run directory (see [`RunRoot`]): made after the run directories
/// of kits that are gone have been removed (each said on stderr), removed at
/// the end, and by the signal thread should it have to quit the kit.
pub struct RunDir {
    root: Option<RunRoot>,
}

impl RunDir {
    pub fn new() -> Result<Self> {
        let tmp = std::env::temp_dir();
        let (removed, failed) = runowner::sweep(&tmp);
        for s in removed {
            eprintln!(
                "cprkit: removed stale run directory {} of pid {} (gone)",
                s.dir.display(),
                s.pid
            );
        }
        for f in failed {
            eprintln!(
                "cprkit: could not remove the stale run directory {}: {}",
                f.dir.display(),
                f.error
            );
        }
        let root = RunRoot::new().context("creating the run directory")?;
        interrupt::guard_dir(root.path());
        Ok(RunDir { root: Some(root) })
    }

    pub fn path(&self) -> &Path {
        self.root.as_ref().expect("until dropped").path()
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let Some(root) = self.root.take() else {
            return;
        };
        let path = root.path().to_path_buf();
        if let Err(e) = root.remove() {
            eprintln!(
                "cprkit: could not remove the run directory {}: {e}",
                path.display()
            );
        }
        interrupt::unguard_dir(&path);
    }
}
