//! The subcommands and what they share: choosing VMMs and cases, a run directory.

mod bench;
mod explain;
mod list;
mod run;
mod selftest;
mod table;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use cprkit_cases::Case;
use cprkit_harness::adapter::Adapter;

/// Fault-injection and conformance kit for cpr-transfer live update of VMMs.
#[derive(Debug, Parser)]
#[command(name = "cprkit", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
pub struct Select {
    /// The VMM under test: refvmm (default), refvmm:MUTANT. Repeat for several.
    #[arg(long = "vmm", default_value = "refvmm")]
    vmm: Vec<String>,
    /// Keep the trials whose case name or full trial name matches this glob.
    #[arg(long = "case")]
    case: Option<String>,
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
        /// Trials run at once.
        #[arg(long, short = 'j', default_value_t = default_jobs())]
        jobs: usize,
        /// Keep each trial's directory (sockets, logs).
        #[arg(long)]
        keep: bool,
    },
    /// Run one trial and draw its timeline as two columns, SOURCE and TARGET.
    Explain {
        /// A full trial name, e.g. refvmm::memory-running/kill-target@cpr-save.
        trial: String,
        /// Keep the trial's directory (sockets, logs).
        #[arg(long)]
        keep: bool,
    },
    /// Every refvmm mutant against the matrix: which rules caught it.
    Selftest {
        #[arg(long, short = 'j', default_value_t = default_jobs())]
        jobs: usize,
        #[arg(long = "case")]
        case: Option<String>,
    },
    /// Time the full refvmm matrix and one bare handover, side by side.
    Bench {
        #[arg(long, short = 'j', default_value_t = default_jobs())]
        jobs: usize,
        /// Bare handovers and fault-free trials to time (the median is reported).
        #[arg(long, default_value_t = 10)]
        samples: usize,
    },
}

fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(2)
}

pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::List { select } => list::run(&select),
        Command::Run { select, jobs, keep } => run::run(&select, jobs, keep),
        Command::Explain { trial, keep } => explain::run(&trial, keep),
        Command::Selftest { jobs, case } => selftest::run(jobs, case.as_deref()),
        Command::Bench { jobs, samples } => bench::run(jobs, samples),
    }
}

/// The cases of the repository (or $CPRKIT_CASES).
fn load_cases() -> Result<Vec<Case>> {
    let dir = cprkit_cases::cases_dir();
    cprkit_cases::load_dir(&dir).map_err(anyhow::Error::from)
}

fn adapters(names: &[String]) -> Result<Vec<Arc<dyn Adapter>>> {
    names
        .iter()
        .map(|n| cprkit_adapters::adapter_for(n).with_context(|| format!("--vmm {n}")))
        .collect()
}
