//! `cprkit fuzz`: random fault schedules against one VMM. Each trial draws its
//! schedule from its seed ([`cprkit_suite::fuzz`]), runs on real processes and
//! is judged by every rule; a failing trial is replayed (a break seen in some
//! runs only is reported intermittent, with the counts), shrunk to a smallest
//! schedule that breaks the same rule the same way, and printed with the one
//! command that replays it. The campaign itself ([`campaign`]) is shared with
//! the soak of `cprkit bench --soak`.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use cprkit_harness::leaks::{Census, Leaks};
use cprkit_harness::loadgate::LoadGate;
use cprkit_harness::plan::GuestState;
use cprkit_harness::schedule::Schedule;
use cprkit_suite::fuzz::{self, Drawn, Effort, Finding, Target, Verdicted};
use cprkit_suite::known::KnownViolations;
use cprkit_suite::runner::{RunOptions, plan};

use super::interrupt::{self, STOP};
use super::pool::Jobs;
use super::{RunDir, adapters, load_cases};

/// A trial that takes longer than this is counted as a hang: every wait of
/// the kit is bounded far below it.
pub const HANG_BOUND: Duration = Duration::from_secs(60);

/// How many trials a campaign runs.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    Trials(usize),
    Time(Duration),
}

/// What a fuzz campaign is asked to do.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub vmm: String,
    pub case: Option<String>,
    pub budget: Budget,
    pub seed: u64,
    pub faults: usize,
    /// Trials at once (`auto`: as the load the running trials put on the machine allows).
    pub jobs: Jobs,
    pub effort: Effort,
    /// Failing trials investigated (replayed and shrunk); the others are
    /// counted only.
    pub investigate: usize,
    pub keep: bool,
    /// Progress lines on stderr.
    pub progress: bool,
    /// Stop starting trials once one has failed (a hunt for a rare bug).
    pub until_failure: bool,
}

/// What a campaign found.
pub struct Outcome {
    pub trials: usize,
    pub passed: usize,
    /// Every trial run and its outcome ([`Verdicted::key`]), in seed order.
    pub all: Vec<(Drawn, String)>,
    /// Failing trials, by seed, with what broke.
    pub failed: Vec<(Drawn, Verdicted)>,
    /// Failing trials whose every break the VMM's known violations expect.
    pub known_failures: usize,
    /// Failing trials with a break beyond the known violations (all of
    /// them for a VMM without a list), in seed order.
    pub unexpected: Vec<(Drawn, Verdicted)>,
    pub errors: Vec<(Drawn, String)>,
    pub hangs: Vec<Drawn>,
    pub findings: Vec<Finding>,
    pub elapsed: Duration,
    /// `None`: not checked (a signal came).
    pub leaks: Option<Leaks>,
    pub not_run: Vec<(String, String)>,
}

impl Outcome {
    pub fn per_minute(&self) -> f64 {
        self.trials as f64 / self.elapsed.as_secs_f64().max(1e-9) * 60.0
    }
}

/// The target of a campaign: the VMM and its planned matrix on the cases.
pub fn target(vmm: &str, case: Option<&str>) -> Result<Target> {
    let cases = load_cases()?;
    let adapter = adapters(&[vmm.to_string()])?.remove(0);
    let planned = plan(&[Arc::clone(&adapter)], &cases, case);
    let mut target = Target::from_plan(adapter, &planned);
    target.all = cases;
    if target.cases.is_empty() {
        let why: Vec<String> = target
            .not_run
            .iter()
            .map(|(c, w)| format!("{c}: {w}"))
            .collect();
        bail!(
            "no case to fuzz for --vmm {vmm}{} ({})",
            case.map(|c| format!(" --case {c}")).unwrap_or_default(),
            if why.is_empty() {
                "no case matches".into()
            } else {
                why.join("; ")
            }
        );
    }
    Ok(target)
}

/// Runs a campaign: the trials on `jobs` threads, then the investigation of
/// the first failing ones, then the leak census.
pub fn campaign(c: &Campaign) -> Result<Outcome> {
    let target = target(&c.vmm, c.case.as_deref())?;
    let candidates = target.candidates();
    let before = Census::take();
    let root = RunDir::new()?;
    let opts = RunOptions { keep: c.keep };
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let failed_once = std::sync::atomic::AtomicBool::new(false);
    let results: Mutex<Vec<(Drawn, Verdicted, Duration)>> = Mutex::new(Vec::new());
    let more = |i: usize| {
        STOP.signal().is_none()
            && !(c.until_failure && failed_once.load(Ordering::SeqCst))
            && match c.budget {
                Budget::Trials(n) => i < n,
                Budget::Time(d) => started.elapsed() < d,
            }
    };
    let (threads, gate) = match c.jobs {
        Jobs::Fixed(n) => (n, None),
        Jobs::Auto => {
            let gate = LoadGate::default();
            (gate.most(), Some(gate))
        }
    };
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    // By load: the next trial once the machine has room.
                    let _admitted = match gate.as_ref() {
                        Some(g) => match g.admit(|| STOP.signal().is_some()) {
                            Some(a) => Some(a),
                            None => break,
                        },
                        None => None,
                    };
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if !more(i) {
                        break;
                    }
                    let d = fuzz::draw(fuzz::trial_seed(c.seed, i as u64), &candidates, c.faults);
                    let t = Instant::now();
                    let v = fuzz::run_drawn(&target, &d, root.path(), &opts);
                    let took = t.elapsed();
                    if matches!(v, Verdicted::Fail(_)) {
                        failed_once.store(true, Ordering::SeqCst);
                    }
                    let mut r = results.lock().expect("results");
                    if c.progress {
                        eprintln!(
                            "[{}] {} {} seed {} ({:.1} s): {}",
                            r.len() + 1,
                            match &v {
                                Verdicted::Pass => "ok  ",
                                Verdicted::Fail(_) => "FAIL",
                                Verdicted::Error(_) => "ERR ",
                            },
                            d.case,
                            d.seed,
                            took.as_secs_f64(),
                            d.schedule
                        );
                    }
                    r.push((d, v, took));
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let mut results = results.into_inner().expect("results");
    results.sort_by_key(|(d, _, _)| d.seed);
    let trials = results.len();
    let all = results
        .iter()
        .map(|(d, v, _)| (d.clone(), v.key()))
        .collect();
    let hangs = results
        .iter()
        .filter(|(_, _, t)| *t > HANG_BOUND)
        .map(|(d, _, _)| d.clone())
        .collect();
    let mut passed = 0;
    let mut failed = Vec::new();
    let mut errors = Vec::new();
    for (d, v, _) in results {
        match v {
            Verdicted::Pass => passed += 1,
            Verdicted::Fail(_) => failed.push((d, v)),
            Verdicted::Error(e) => errors.push((d, e)),
        }
    }
    let known = known_of(&target);
    // A failure whose every break the VMM's known violations expect is
    // known; the others are investigated, on their first unexpected break.
    let mut unexpected_failures = Vec::new();
    let mut known_failures = 0;
    for (d, v) in &failed {
        let Verdicted::Fail(breaks) = v else {
            continue;
        };
        match fuzz::unexpected(&target, d, breaks, known.as_ref())
            .into_iter()
            .next()
        {
            Some(b) => unexpected_failures.push((d.clone(), v.clone(), b)),
            None => known_failures += 1,
        }
    }
    let mut findings = Vec::new();
    for (d, v, b) in unexpected_failures.iter().take(c.investigate) {
        if STOP.signal().is_some() {
            break;
        }
        if c.progress {
            eprintln!(
                "investigating seed {} ({}): replays, then shrinking",
                d.seed, b.rule
            );
        }
        findings.push(fuzz::investigate(
            &target,
            d,
            v.clone(),
            b.clone(),
            c.effort,
            root.path(),
            &opts,
            known.as_ref(),
        ));
    }
    // Every trial started has ended (the threads are joined): the census
    // holds even after a signal.
    let leaks = Some(Leaks::check(&before, Some(root.path())));
    drop(root);
    Ok(Outcome {
        trials,
        passed,
        all,
        known_failures,
        unexpected: unexpected_failures
            .into_iter()
            .map(|(d, v, _)| (d, v))
            .collect(),
        failed,
        errors,
        hangs,
        findings,
        elapsed,
        leaks,
        not_run: target.not_run,
    })
}

/// Runs each of `drawn` again on `vmm`: how many gave the outcome `all`
/// recorded for it (determinism: on refvmm, every one).
pub fn replay_same(vmm: &str, drawn: &[(Drawn, String)]) -> Result<usize> {
    let target = target(vmm, None)?;
    let root = RunDir::new()?;
    let opts = RunOptions::default();
    let mut same = 0;
    for (d, key) in drawn {
        if STOP.signal().is_some() {
            break;
        }
        same += usize::from(fuzz::run_drawn(&target, d, root.path(), &opts).key() == *key);
    }
    Ok(same)
}

/// The VMM's known violations for its version, if it has a list.
fn known_of(target: &Target) -> Option<KnownViolations> {
    let dir = cprkit_suite::vmm_snapshots_dir(&target.adapter.snapshot_dir());
    let k = KnownViolations::load(&dir).ok()?;
    Some(k.for_version(&target.adapter.version()))
}

/// The command that replays a drawn trial exactly.
pub fn replay_command(c: &Campaign, d: &Drawn) -> String {
    format!(
        "cprkit fuzz --vmm {} --case {} --faults {} --replay {}",
        c.vmm, d.case, c.faults, d.seed
    )
}

/// The command that runs a schedule spelled out.
pub fn schedule_command(vmm: &str, case: &str, guest: GuestState, s: &Schedule) -> String {
    format!(
        "cprkit fuzz --vmm {vmm} --case {case} --guest {} --schedule '{s}'",
        guest.runstate()
    )
}

/// Prints a finding: the original beside the shrunk schedule, the replays,
/// and the commands.
/// `seeded`: the trial was drawn from its seed (else spelled out).
pub fn print_finding(c: &Campaign, f: &Finding, seeded: bool) {
    let d = &f.drawn;
    println!(
        "FAIL {} seed {}: {} {}",
        d.case, d.seed, f.broken.rule, f.broken.evidence
    );
    let steady = if f.replays.intermittent() {
        "INTERMITTENT"
    } else {
        "steady"
    };
    println!("  original: guest {}; {}", d.guest.runstate(), d.schedule);
    println!("    runs: {} ({steady})", f.replays);
    println!(
        "  shrunk:   guest {}; {}  ({} faults, from {}; {} trials tried)",
        d.guest.runstate(),
        f.shrunk.schedule,
        f.shrunk.schedule.faults.len(),
        d.schedule.faults.len(),
        f.shrunk.tried
    );
    let shrunk_steady = if f.shrunk_replays.intermittent() {
        "INTERMITTENT"
    } else {
        "steady"
    };
    println!("    runs: {} ({shrunk_steady})", f.shrunk_replays);
    println!(
        "  {}",
        if f.known {
            "known: the VMM's known violations expect this break at a point of the schedule"
        } else {
            "NEW: beyond the VMM's known violations"
        }
    );
    if seeded {
        println!("  replay: {}", replay_command(c, d));
    } else {
        println!(
            "  replay: {}",
            schedule_command(&c.vmm, &d.case, d.guest, &d.schedule)
        );
    }
    println!(
        "  shrunk: {}",
        schedule_command(&c.vmm, &d.case, d.guest, &f.shrunk.schedule)
    );
}

/// Prints a campaign's summary; true if it found nothing beyond the known
/// violations and left nothing behind.
pub fn print_outcome(c: &Campaign, o: &Outcome) -> bool {
    for f in &o.findings {
        print_finding(c, f, true);
    }
    for (d, v) in o.unexpected.iter().skip(o.findings.len()) {
        println!(
            "FAIL {} seed {}: {} (not investigated; replay: {})",
            d.case,
            d.seed,
            v.key(),
            replay_command(c, d)
        );
    }
    for (d, e) in &o.errors {
        println!("ERROR {} seed {}: {e}", d.case, d.seed);
    }
    for d in &o.hangs {
        println!(
            "HANG {} seed {}: over {} s (replay: {})",
            d.case,
            d.seed,
            HANG_BOUND.as_secs(),
            replay_command(c, d)
        );
    }
    for (case, why) in &o.not_run {
        println!("not run: {case}: {why}");
    }
    let intermittent = o
        .findings
        .iter()
        .filter(|f| f.replays.intermittent())
        .count();
    println!(
        "fuzz {}: {} trials in {:.1} s ({:.1} trials/min), seed {}, up to {} faults: {} passed, {} failed ({} only as the known violations expect, {} beyond them: {} investigated, {} intermittent), {} errors, {} hangs",
        c.vmm,
        o.trials,
        o.elapsed.as_secs_f64(),
        o.per_minute(),
        c.seed,
        c.faults,
        o.passed,
        o.failed.len(),
        o.known_failures,
        o.unexpected.len(),
        o.findings.len(),
        intermittent,
        o.errors.len(),
        o.hangs.len()
    );
    let clean = super::run::print_leaks(&o.leaks);
    clean && o.unexpected.is_empty() && o.errors.is_empty() && o.hangs.is_empty()
}

/// `cprkit fuzz --replay SEED` or `--schedule S`: one trial, replayed.
pub struct One {
    pub replay: Option<u64>,
    pub schedule: Option<Schedule>,
    pub guest: Option<GuestState>,
}

/// `cprkit fuzz`.
pub fn run(c: &Campaign, one: &One) -> Result<ExitCode> {
    if one.replay.is_some() || one.schedule.is_some() {
        return run_one(c, one);
    }
    eprintln!(
        "fuzz {}: seed {} (replay the run with --seed {})",
        c.vmm, c.seed, c.seed
    );
    let o = campaign(c)?;
    let ok = print_outcome(c, &o);
    Ok(interrupt::status(ok))
}

/// One trial: a seed's draw or a schedule spelled out, run, replayed, and
/// shrunk if it fails.
fn run_one(c: &Campaign, one: &One) -> Result<ExitCode> {
    let target = target(&c.vmm, c.case.as_deref())?;
    let d = match (one.replay, &one.schedule) {
        (Some(seed), _) => fuzz::draw(seed, &target.candidates(), c.faults),
        (None, Some(s)) => {
            if target.cases.len() != 1 {
                bail!("--schedule needs --case naming one case");
            }
            let case = &target.cases[0].0;
            for p in &s.faults {
                if !target.points(&case.name).contains(p) {
                    bail!("--schedule: {} planned no point {p}", case.name);
                }
            }
            Drawn {
                seed: 0,
                case: case.name.clone(),
                guest: one.guest.unwrap_or(case.guest),
                schedule: s.clone(),
            }
        }
        (None, None) => unreachable!("checked by the caller"),
    };
    println!(
        "{} seed {}: guest {}; {}",
        d.case,
        d.seed,
        d.guest.runstate(),
        d.schedule
    );
    let before = Census::take();
    let root = RunDir::new()?;
    let opts = RunOptions { keep: c.keep };
    let first = fuzz::run_drawn(&target, &d, root.path(), &opts);
    let known = known_of(&target);
    let finding = match &first {
        Verdicted::Fail(breaks) => {
            let unexpected = fuzz::unexpected(&target, &d, breaks, known.as_ref());
            // Shrunk on its first break beyond the known violations, else
            // on its first break.
            let broken = unexpected.first().unwrap_or(&breaks[0]).clone();
            Some(fuzz::investigate(
                &target,
                &d,
                first.clone(),
                broken,
                c.effort,
                root.path(),
                &opts,
                known.as_ref(),
            ))
        }
        _ => {
            let mut counts = fuzz::Replays::default();
            counts.add(&first);
            for _ in 0..c.effort.replays {
                counts.add(&fuzz::run_drawn(&target, &d, root.path(), &opts));
            }
            println!(
                "{}: {}{}",
                first.key(),
                counts,
                if counts.intermittent() {
                    " (INTERMITTENT)"
                } else {
                    ""
                }
            );
            if let Verdicted::Error(e) = &first {
                println!("error: {e}");
            }
            None
        }
    };
    let leaks = Some(Leaks::check(&before, Some(root.path())));
    drop(root);
    if let Some(f) = &finding {
        print_finding(c, f, one.replay.is_some());
    }
    let clean = super::run::print_leaks(&leaks);
    Ok(interrupt::status(clean && first == Verdicted::Pass))
}

/// `--guest running|paused`.
pub fn parse_guest(text: &str) -> Result<GuestState, String> {
    match text {
        "running" => Ok(GuestState::Running),
        "paused" => Ok(GuestState::Paused),
        _ => Err(format!("`{text}`: running or paused")),
    }
}

/// `--time 10m`: a duration in s, m or h.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (n, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{text}`: write a number and a unit, e.g. 90s, 10m, 1h"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (s, m, h)")),
    };
    Ok(Duration::from_secs(secs))
}

/// Today's seed when none is given: printed, so the run can be replayed.
pub fn fresh_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_have_units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3d").is_err());
    }
}
