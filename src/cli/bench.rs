//! `cprkit bench`: every figure of the kit's speed side by side in one run:
//! for each VMM, the kit's fault-free trial beside a bare handover (no
//! interposer, no observation) and their ratio, its full matrix's wall time,
//! and the matrix at `--jobs 1, 2, 4, 8` and auto (the speed-up over one
//! job); then `selftest`'s wall time (refvmm and every mutant), with how many
//! mutants were caught. Figures, not a test: this machine is small and noisy.
//! `--quick` times the memory-running case only in the matrices and
//! selftest, with fewer samples. Each figure the kit has a goal for says
//! the goal and whether this run met it ([`GOALS`]); the last line counts
//! them.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use cprkit_adapters::RefVmm;
use cprkit_adapters::refvmm_adapter::MUTANT_EXPECTATIONS;
use cprkit_harness::adapter::Adapter;
use cprkit_harness::bare;
use cprkit_suite::Case;
use cprkit_suite::runner::{Planned, RunOptions, Verdicts, plan};

use super::interrupt;
use super::pool::Jobs;
use super::run::run_trials;
use super::{RunDir, adapters, load_cases};

/// What `cprkit bench` is asked for.
pub struct Options {
    /// The VMMs to time (refvmm and QEMU unless `--vmm` says).
    pub vmms: Vec<String>,
    /// Trials at once in the full matrices and selftest.
    pub jobs: Jobs,
    pub samples: usize,
    /// The memory-running case only, in the matrices and selftest.
    pub quick: bool,
    /// Whether to time selftest.
    pub selftest: bool,
}

/// A figure the kit has a speed goal for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Figure {
    /// The kit's memory-running/no-fault trial over the bare handover, for
    /// the VMM named.
    TrialRatio(&'static str),
    /// The VMM's full matrix at the run's jobs, in seconds.
    MatrixWall(&'static str),
    /// `selftest` (refvmm and every mutant, every case), in seconds.
    SelftestWall,
}

/// The goals: each figure at most this.
const GOALS: &[(Figure, f64)] = &[
    (Figure::TrialRatio("refvmm"), 1.5),
    (Figure::TrialRatio("qemu"), 1.15),
    (Figure::MatrixWall("refvmm"), 4.0),
    (Figure::MatrixWall("qemu"), 25.0),
    (Figure::SelftestWall, 60.0),
];

/// The goals met and timed so far in this run.
#[derive(Debug, Default)]
struct Tally {
    timed: usize,
    met: usize,
}

impl Tally {
    /// `goal <= G: met` (or `not met`) for `figure` at `value`, counted;
    /// empty when the figure has no goal (another VMM, `--quick`).
    fn judge(&mut self, figure: Figure, value: f64, unit: &str) -> String {
        let Some((_, goal)) = GOALS.iter().find(|(f, _)| *f == figure) else {
            return String::new();
        };
        self.timed += 1;
        let met = value <= *goal;
        self.met += usize::from(met);
        format!(
            "; goal <= {goal}{unit}: {}",
            if met { "met" } else { "NOT MET" }
        )
    }
}

/// The kit's name of a VMM with goals (`qemu:/path` is QEMU).
fn goal_vmm(vmm: &str) -> Option<&'static str> {
    match vmm.split(':').next() {
        Some("refvmm") if vmm == "refvmm" => Some("refvmm"),
        Some("qemu") => Some("qemu"),
        _ => None,
    }
}

/// The jobs the scaling table times.
const SCALING: &[usize] = &[1, 2, 4, 8];
/// The case glob of `--quick`.
const QUICK_CASES: &str = "memory-running";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64().max(1e-9))
}

/// One line of the table: a figure, its value, and a ratio or note.
fn row(figure: &str, value: &str, note: &str) {
    println!("  {figure:<50} {value:>10}  {note}");
}

fn stopped() -> bool {
    interrupt::STOP.count() > 0
}

/// One trial on a worker thread (so that a signal is seen while it runs); `None`
/// if a signal kept it from running.
fn one(p: &Planned, root: &Path, opts: &RunOptions) -> Result<Option<Duration>> {
    let trials = run_trials(
        std::slice::from_ref(p),
        Jobs::Fixed(1),
        root,
        opts,
        &mut |_| {},
    );
    let r = trials.results.into_iter().next().expect("one trial");
    match &r.verdicts {
        Verdicts::NotRun(_) if trials.stopped.is_some() => Ok(None),
        Verdicts::Error(e) => Err(anyhow!("{}: {e}", r.name())),
        _ => Ok(Some(r.elapsed)),
    }
}

/// A matrix's wall time at `jobs`, and how many of its trials were not
/// judged; `None` if a signal cut it short.
fn matrix(planned: &[Planned], jobs: Jobs, root: &Path) -> Option<(Duration, usize)> {
    let started = Instant::now();
    let trials = run_trials(planned, jobs, root, &RunOptions::default(), &mut |_| {});
    if trials.stopped.is_some() {
        return None;
    }
    let bad = trials
        .results
        .iter()
        .filter(|r| !matches!(r.verdicts, Verdicts::Judged { .. }))
        .count();
    Some((started.elapsed(), bad))
}

pub fn run(o: &Options) -> Result<ExitCode> {
    let samples = if o.quick {
        o.samples.clamp(1, 3)
    } else {
        o.samples.max(1)
    };
    let cases = load_cases()?;
    let root = RunDir::new()?;
    let mut tally = Tally::default();
    let glob = |vmm: &str| o.quick.then(|| format!("{vmm}::{QUICK_CASES}/*"));
    println!(
        "cprkit bench: jobs {}, medians of {samples} samples{}; load average {}",
        o.jobs,
        if o.quick {
            format!(", quick: case {QUICK_CASES} only in the matrices")
        } else {
            String::new()
        },
        load_average()
    );
    for vmm in &o.vmms {
        if stopped() {
            break;
        }
        let adapter = match adapters(std::slice::from_ref(vmm)) {
            Ok(a) => a,
            Err(e) => {
                println!("{vmm}: not run: {e:#}");
                continue;
            }
        };
        println!("{vmm}:");
        handover(&adapter, &cases, vmm, samples, root.path(), &mut tally)?;
        let planned = plan(&adapter, &cases, glob(vmm).as_deref());
        let not_run = planned.iter().filter(|p| p.runnable().is_err()).count();
        let mut one_job = None;
        let mut timed = Vec::new();
        for jobs in SCALING
            .iter()
            .map(|&n| Jobs::Fixed(n))
            .chain((!SCALING.iter().any(|&n| Jobs::Fixed(n) == o.jobs)).then_some(o.jobs))
        {
            if stopped() {
                break;
            }
            let Some((wall, bad)) = matrix(&planned, jobs, root.path()) else {
                break;
            };
            if jobs == Jobs::Fixed(1) {
                one_job = Some(wall);
            }
            timed.push((jobs, wall, bad));
        }
        for (jobs, wall, bad) in timed {
            let mine = if jobs == o.jobs { ", this run's" } else { "" };
            // The goal is for the full matrix at the run's jobs.
            let goal = match goal_vmm(vmm).filter(|_| jobs == o.jobs && !o.quick) {
                Some(v) => tally.judge(Figure::MatrixWall(v), wall.as_secs_f64(), " s"),
                None => String::new(),
            };
            row(
                &format!("matrix, {} trials, jobs {jobs}{mine}", planned.len()),
                &secs(wall),
                &format!(
                    "{}{} not judged ({not_run} not run here){goal}",
                    one_job.map_or(String::new(), |one| format!(
                        "{} faster than 1 job; ",
                        ratio(one, wall)
                    )),
                    bad
                ),
            );
        }
    }
    if o.selftest && !stopped() {
        selftest(&cases, o, root.path(), &mut tally)?;
    }
    drop(root);
    if tally.timed > 0 {
        println!(
            "goals: {} of {} timed here met (the figures vary with the machine's load; the ratios are what count)",
            tally.met, tally.timed
        );
    }
    if let Some(code) = interrupt::exit_code() {
        let sig = interrupt::STOP
            .signal()
            .map(interrupt::name)
            .unwrap_or_default();
        println!("interrupted by {sig}: the figures above are those taken");
        return Ok(code);
    }
    Ok(ExitCode::SUCCESS)
}

/// The kit's fault-free trial beside a bare handover, interleaved so that
/// noise hits both alike.
fn handover(
    adapter: &[Arc<dyn Adapter>],
    cases: &[Case],
    vmm: &str,
    samples: usize,
    root: &Path,
    tally: &mut Tally,
) -> Result<()> {
    let opts = RunOptions::default();
    let no_fault = plan(
        adapter,
        cases,
        Some(&format!("{vmm}::memory-running/no-fault")),
    );
    let one_trial = no_fault
        .first()
        .ok_or_else(|| anyhow!("no memory-running case"))?;
    // The same handover with the kit's vhost-user device, where a case has it.
    let with_device = plan(
        adapter,
        cases,
        Some(&format!("{vmm}::vhost-user-running/no-fault")),
    )
    .into_iter()
    .find(|p| p.runnable().is_ok());
    let (mut kit, mut kit_device, mut whole, mut bare_handover) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..samples {
        let Some(t) = one(one_trial, root, &opts)? else {
            break;
        };
        kit.push(t);
        if let Some(p) = with_device.as_ref() {
            let Some(t) = one(p, root, &opts)? else {
                break;
            };
            kit_device.push(t);
        }
        if stopped() {
            break;
        }
        let b = bare::handover(adapter[0].as_ref(), root)?;
        whole.push(b.whole);
        bare_handover.push(b.handover);
        if stopped() {
            break;
        }
    }
    // Nothing when a signal came before the first whole sample.
    if whole.is_empty() || kit.len() < whole.len() {
        return Ok(());
    }
    let (kit, whole, bare_handover) = (median(kit), median(whole), median(bare_handover));
    let goal = goal_vmm(vmm).map_or(String::new(), |v| {
        tally.judge(
            Figure::TrialRatio(v),
            kit.as_secs_f64() / whole.as_secs_f64().max(1e-9),
            "x",
        )
    });
    row(
        "kit trial, memory-running/no-fault",
        &ms(kit),
        &format!("{} the bare handover{goal}", ratio(kit, whole)),
    );
    if !kit_device.is_empty() {
        let d = median(kit_device);
        row(
            "kit trial, vhost-user-running/no-fault",
            &ms(d),
            &format!("{} the bare handover", ratio(d, whole)),
        );
    }
    row("bare handover, start to target running", &ms(whole), "");
    row(
        "bare handover, migrate to target running",
        &ms(bare_handover),
        "",
    );
    Ok(())
}

/// `selftest`'s wall time at the run's jobs, and the mutants it caught.
fn selftest(cases: &[Case], o: &Options, root: &Path, tally: &mut Tally) -> Result<()> {
    let names = RefVmm::family();
    let family = adapters(&names)?;
    let glob = o.quick.then(|| format!("*::{QUICK_CASES}/*"));
    let planned = plan(&family, cases, glob.as_deref());
    let started = Instant::now();
    let trials = run_trials(&planned, o.jobs, root, &RunOptions::default(), &mut |_| {});
    if trials.stopped.is_some() {
        return Ok(());
    }
    let wall = started.elapsed();
    let caught = MUTANT_EXPECTATIONS
        .iter()
        .filter(|(m, rules)| {
            let vmm = format!("refvmm:{m}");
            trials
                .results
                .iter()
                .any(|r| r.id.vmm == vmm && r.violations().iter().any(|v| rules.contains(v)))
        })
        .count();
    println!("selftest:");
    row(
        &format!(
            "selftest, {} VMMs, {} trials, jobs {}",
            names.len(),
            planned.len(),
            o.jobs
        ),
        &secs(wall),
        &format!(
            "{caught} of {} mutants caught by their rule{}",
            MUTANT_EXPECTATIONS.len(),
            if o.quick {
                " (quick: one case; some mutants show only in others)".to_string()
            } else {
                tally.judge(Figure::SelftestWall, wall.as_secs_f64(), " s")
            }
        ),
    );
    Ok(())
}

/// /proc/loadavg's three averages: the machine's load while it benched.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_goal_is_met_at_or_below_it_and_counted() {
        let mut t = Tally::default();
        assert_eq!(
            t.judge(Figure::TrialRatio("refvmm"), 1.5, "x"),
            "; goal <= 1.5x: met"
        );
        assert_eq!(
            t.judge(Figure::MatrixWall("qemu"), 25.1, " s"),
            "; goal <= 25 s: NOT MET"
        );
        assert_eq!(t.judge(Figure::TrialRatio("other"), 9.0, "x"), "");
        assert_eq!((t.met, t.timed), (1, 2));
    }

    #[test]
    fn goals_are_for_refvmm_itself_and_any_qemu() {
        assert_eq!(goal_vmm("refvmm"), Some("refvmm"));
        assert_eq!(goal_vmm("refvmm:copy-ram"), None);
        assert_eq!(goal_vmm("qemu"), Some("qemu"));
        assert_eq!(
            goal_vmm("qemu:/opt/qemu/bin/qemu-system-x86_64"),
            Some("qemu")
        );
        assert_eq!(goal_vmm("cloud-hypervisor"), None);
    }
}
