//! `cprkit bench --soak`: the fuzzing soak as figures. `cprkit fuzz` on the
//! correct refvmm (its failures must be 0: any is a false positive of the kit
//! or a bug of refvmm), on QEMU where it is installed (what it breaks beyond
//! its known violations, each with its replay command), and on each refvmm
//! mutant (the share of trials that catch it, and the size of the shrunk
//! schedule against the faults its bug needs). A benchmark, not a test: it
//! takes minutes, and its figures go into docs/fuzzing.md.

use std::process::ExitCode;

use anyhow::Result;
use cprkit_adapters::RefVmm;
use cprkit_adapters::refvmm_adapter::FUZZ_ONLY_MUTANTS;
use cprkit_suite::fuzz::Effort;

use super::fuzz::{
    Budget, Campaign, Outcome, campaign, print_finding, replay_command, replay_same,
};
use super::interrupt;
use super::pool::Jobs;

/// refvmm trials replayed from their seeds to check they give the same outcome.
const REPLAYED: usize = 50;

/// The most trials a hunt for a mutant the sample did not catch runs.
const HUNT: usize = 600;

/// What the soak runs.
pub struct Soak {
    pub seed: u64,
    pub jobs: Jobs,
    pub refvmm_trials: usize,
    pub qemu_trials: usize,
    pub mutant_trials: usize,
}

fn campaign_of(s: &Soak, vmm: &str, trials: usize, investigate: usize, effort: Effort) -> Campaign {
    Campaign {
        vmm: vmm.to_string(),
        case: None,
        budget: Budget::Trials(trials),
        seed: s.seed,
        faults: 3,
        jobs: s.jobs,
        effort,
        investigate,
        keep: false,
        progress: false,
        until_failure: false,
    }
}

/// One line of figures for a VMM's campaign.
fn figures(vmm: &str, o: &Outcome) -> String {
    let leaks = match &o.leaks {
        Some(l) if l.is_clean() => "0".to_string(),
        Some(l) => format!("LEAKS: {l}"),
        None => "not checked".into(),
    };
    format!(
        "| {vmm} | {} | {:.0} | {} ({} known, {} beyond) | {} | {} | {} |",
        o.trials,
        o.per_minute(),
        o.failed.len(),
        o.known_failures,
        o.unexpected.len(),
        o.errors.len(),
        o.hangs.len(),
        leaks
    )
}

pub fn run(s: &Soak) -> Result<ExitCode> {
    let mut ok = true;
    println!(
        "soak: seed {}, up to 3 faults a trial, {} jobs",
        s.seed, s.jobs
    );
    println!();
    println!("| VMM | trials | trials/min | failed | errors | hangs | leaks |");
    println!("|---|---|---|---|---|---|---|");
    let effort = Effort {
        replays: 3,
        budget: 40,
    };
    let refvmm = campaign(&campaign_of(s, "refvmm", s.refvmm_trials, 5, effort))?;
    println!("{}", figures("refvmm", &refvmm));
    // Determinism: the first trials replayed from their seeds.
    let sample: Vec<_> = refvmm.all.iter().take(REPLAYED).cloned().collect();
    let same = replay_same("refvmm", &sample)?;
    ok &= same == sample.len();
    ok &= refvmm.failed.is_empty()
        && refvmm.errors.is_empty()
        && refvmm.hangs.is_empty()
        && refvmm.leaks.as_ref().is_some_and(|l| l.is_clean());
    let qemu = if s.qemu_trials > 0 && interrupt::exit_code().is_none() {
        match campaign(&campaign_of(s, "qemu", s.qemu_trials, 6, effort)) {
            Ok(o) => {
                println!("{}", figures("qemu", &o));
                Some(o)
            }
            Err(e) => {
                println!("| qemu | not run: {e:#} | | | | | |");
                None
            }
        }
    } else {
        None
    };

    println!();
    println!(
        "| mutant | trials | caught in | rate | first break | shrunk to (faults, from) | needs |"
    );
    println!("|---|---|---|---|---|---|---|");
    let effort = Effort {
        replays: 1,
        budget: 25,
    };
    for name in RefVmm::family().into_iter().skip(1) {
        if interrupt::exit_code().is_some() {
            break;
        }
        let mutant = name.trim_start_matches("refvmm:");
        let o = campaign(&campaign_of(s, &name, s.mutant_trials, 1, effort))?;
        // Not caught in the sample: a hunt, with other seeds, until a trial
        // catches it (at most HUNT trials).
        let hunted = if o.failed.is_empty() && interrupt::exit_code().is_none() {
            let mut c = campaign_of(s, &name, HUNT, 1, effort);
            c.seed = s.seed.wrapping_add(1);
            c.until_failure = true;
            Some(campaign(&c)?)
        } else {
            None
        };
        let needs = if FUZZ_ONLY_MUTANTS.iter().any(|(m, _)| *m == mutant) {
            2
        } else {
            1
        };
        let finding = o
            .findings
            .first()
            .or_else(|| hunted.as_ref().and_then(|h| h.findings.first()));
        let (first, shrunk) = match finding {
            Some(f) => (
                f.broken.rule.to_string(),
                format!(
                    "{} (from {}): `{}`",
                    f.shrunk.schedule.faults.len(),
                    f.drawn.schedule.faults.len(),
                    f.shrunk.schedule
                ),
            ),
            None => ("-".into(), "-".into()),
        };
        let caught = o.failed.len();
        ok &= finding.is_some_and(|f| f.shrunk.schedule.faults.len() <= needs);
        let hunt = match &hunted {
            Some(h) if !h.failed.is_empty() => {
                format!("; found in a hunt after {} trials", h.trials)
            }
            Some(h) => format!("; NOT FOUND in a hunt of {} trials", h.trials),
            None => String::new(),
        };
        println!(
            "| {mutant} | {} | {caught} | {:.0}%{hunt} | {first} | {shrunk} | {needs} |",
            o.trials,
            100.0 * caught as f64 / o.trials.max(1) as f64
        );
    }

    println!();
    println!(
        "determinism: {same} of {} refvmm trials replayed from their seeds gave the same outcome",
        sample.len()
    );
    if let Some(q) = &qemu {
        println!();
        println!(
            "QEMU: {} trials broke a rule beyond its known violations",
            q.unexpected.len()
        );
        let c = campaign_of(s, "qemu", s.qemu_trials, 6, effort);
        for f in &q.findings {
            print_finding(&c, f, true);
        }
        for (d, v) in q.unexpected.iter().skip(q.findings.len()) {
            println!(
                "  {} seed {}: {}: {}",
                d.case,
                d.seed,
                v.key(),
                replay_command(&c, d)
            );
        }
    }
    Ok(interrupt::status(ok))
}
