//! `cprkit run`: runs the selected trials with progress on stderr, then prints
//! the verdict table and every violation with its evidence (`--format text`),
//! or the run as report.json's shape (`json`) or as JUnit XML (`junit`).
//! Whatever the format, the exit status is the same: violations are reconciled
//! against the VMMs' known violations; 130 or 143 after SIGINT or SIGTERM,
//! whatever ran (see [`interrupt`]).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use cprkit_adapters::requirements::{Part, Policy};
use cprkit_harness::leaks::{Census, Leaks};
use cprkit_report::{Host, LeakCheck, Report, Vmm};
use cprkit_suite::Profile;
use cprkit_suite::known::KnownByVmm;
use cprkit_suite::repeat;
use cprkit_suite::runner::{Planned, RunOptions, TrialResult, Verdicts, run_one};

use super::interrupt::{self, INTERRUPTED};
use super::pool::Jobs;
use super::pool::{self, Quit, Slot, Stopped};
use super::table::{Expectations, print_summary, print_table};
use super::{RunDir, Select, load_cases};

/// What `cprkit run` prints on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The verdict table and the violations with their evidence.
    Text,
    /// report.json's shape (docs/report.schema.json), `kind: run`.
    Json,
    /// JUnit XML: a test case per trial.
    Junit,
}

/// How `cprkit run` runs and reports.
pub struct Options<'a> {
    pub jobs: Jobs,
    pub keep: bool,
    pub format: Format,
    /// `--known-violations FILE`.
    pub known_list: Option<&'a Path>,
    /// `--repeat K`: runs of each trial (at least 1).
    pub repeat: usize,
}

pub fn run(select: &Select, o: &Options) -> Result<ExitCode> {
    let Options {
        jobs,
        keep,
        format,
        known_list,
        repeat,
    } = *o;
    let cases = load_cases()?;
    let selection = select.select(&cases)?;
    if selection.matching == 0 {
        bail!("no trial matches (see `cprkit list`)");
    }
    let planned = &selection.planned;
    require_parts(planned)?;
    if let Some(p) = select.partition {
        eprintln!(
            "partition {p}: {} of the {} trials selected",
            planned.len(),
            selection.matching
        );
    }
    if repeat > 1 {
        eprintln!(
            "each of the {} trials {repeat} times: {} runs",
            planned.len(),
            planned.len() * repeat
        );
    }
    // Each trial's repeats one after the other, in plan order.
    let runs: Vec<Planned> = planned
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.clone(), repeat))
        .collect();
    let before = Census::take();
    let root = RunDir::new()?;
    let trials = run_with_progress(&runs, jobs, root.path(), &RunOptions { keep });
    let leaks = trials.leaks(&before, root.path());
    drop(root);
    // Under --repeat, what ran and what did not are repeats.
    let interrupted = trials.interrupted_of(if repeat > 1 { "trial runs" } else { "trials" });
    let version_of = |vmm: &str| {
        selection
            .adapters
            .iter()
            .find(|a| a.name() == vmm)
            .map(|a| a.version())
            .unwrap_or_default()
    };
    let known = KnownByVmm::load(&trials.results, version_of, known_list)?;
    let results = &merge_repeats(trials.results, repeat, &known);
    let ok = match format {
        Format::Text => {
            let expectations = Expectations::new(known);
            print_table(results, &expectations);
            let ok = print_summary(results, &expectations);
            if let Some(line) = &interrupted {
                println!("{line}");
            }
            ok
        }
        Format::Json | Format::Junit => {
            let report = Report::run(
                selection
                    .adapters
                    .iter()
                    .map(|a| Vmm {
                        name: a.name().to_string(),
                        version: a.version(),
                    })
                    .collect(),
                Host::this(),
                results,
                &known,
                leaks.as_ref().map(|leaks| LeakCheck {
                    clean: leaks.is_clean(),
                    text: leaks.to_string(),
                }),
            );
            if format == Format::Json {
                print!("{}", report.to_json());
            } else {
                print!("{}", cprkit_report::junit::render(&report));
            }
            if let Some(line) = &interrupted {
                eprintln!("{line}");
            }
            report.reconcile.as_ref().is_some_and(|r| r.ok)
        }
    };
    let clean = print_leaks(&leaks);
    if let Some(code) = interrupt::exit_code() {
        return Ok(code);
    }
    // Nothing passes on nothing: every trial not run (a missing part, a
    // profile not built yet) is no pass.
    let judged = results
        .iter()
        .any(|r| matches!(r.verdicts, Verdicts::Judged { .. }));
    if !judged {
        eprintln!("cprkit: no trial ran: a run that judged nothing does not pass");
    }
    Ok(if ok && clean && judged {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Fails (an environment error, exit status 2) when a part the trials need
/// (QEMU, qemu-storage-daemon, ...) is required (`CPRKIT_REQUIRE`) and
/// missing, naming it and how to install it; an optional part that is missing
/// leaves the trials that need it not run, listed and counted in the summary.
fn require_parts(planned: &[Planned]) -> Result<()> {
    let policy = Policy::for_command().map_err(anyhow::Error::msg)?;
    let parts = planned.iter().flat_map(|p| {
        Part::of_vmm(&p.id.vmm).into_iter().chain(Part::of_case(
            p.case.device_backend,
            p.case.profile == Profile::VhostKernel,
        ))
    });
    policy.check(parts).map_err(anyhow::Error::msg)
}

/// The results of a run of each trial `repeat` times (its repeats one after
/// the other, in plan order), one for each trial: the result that stands for
/// its repeats ([`repeat::merge`]), a rule broken in any repeat broken in it,
/// with its evidence as no known violation expects it when one repeat broke
/// it so. Repeats a signal kept from running are left out, unless no repeat
/// of the trial ran.
fn merge_repeats(results: Vec<TrialResult>, repeat: usize, known: &KnownByVmm) -> Vec<TrialResult> {
    let mut out = Vec::new();
    let mut results = results.into_iter().peekable();
    while results.peek().is_some() {
        let chunk: Vec<TrialResult> = results.by_ref().take(repeat).collect();
        let interrupted = |r: &TrialResult| matches!(&r.verdicts, Verdicts::NotRun(why) if why.starts_with(INTERRUPTED));
        let (stopped, ran): (Vec<_>, Vec<_>) = chunk.into_iter().partition(interrupted);
        if ran.is_empty() {
            out.extend(stopped.into_iter().next());
            continue;
        }
        let k = known.get(&ran[0].id.vmm);
        out.push(repeat::merge(ran, |trial, v| {
            k.is_none_or(|k| k.expecting(trial, v).is_none())
        }));
    }
    out
}

/// Prints the leak check on stderr; true if it was done and found nothing.
pub fn print_leaks(leaks: &Option<Leaks>) -> bool {
    match leaks {
        Some(l) => {
            eprintln!("leak check: {l}");
            l.is_clean()
        }
        None => {
            eprintln!(
                "leak check: not done: trials were abandoned in flight (their VMMs were killed)"
            );
            false
        }
    }
}

/// The trials of a run: every planned one, in plan order, those a signal kept
/// from running (or abandoned in flight) as not run, `interrupted ...`.
pub struct Trials {
    pub results: Vec<TrialResult>,
    pub stopped: Option<Stopped>,
}

impl Trials {
    /// What the run left behind, compared with `before`; not checked when
    /// trials were abandoned in flight (they are still tearing down).
    pub fn leaks(&self, before: &Census, root: &Path) -> Option<Leaks> {
        match self.stopped {
            Some(s) if s.abandoned > 0 => None,
            _ => Some(Leaks::check(before, Some(root))),
        }
    }

    /// The line that says a signal cut the run short, if one did.
    pub fn interrupted(&self) -> Option<String> {
        self.interrupted_of("trials")
    }

    /// The same, counting the items run as `what` (`trial runs`).
    pub fn interrupted_of(&self, what: &str) -> Option<String> {
        let s = self.stopped?;
        let total = self.results.len();
        let ran = total - s.not_started - s.abandoned;
        let abandoned = match s.quit {
            Some(q) if s.abandoned > 0 => {
                format!(", {} abandoned in flight ({})", s.abandoned, quit_why(q))
            }
            _ => String::new(),
        };
        Some(format!(
            "interrupted by {}: {ran} of {total} {what} ran{abandoned}, {} not started",
            interrupt::name(s.signal),
            s.not_started
        ))
    }
}

fn quit_why(q: Quit) -> String {
    match q {
        Quit::Again => "a second signal".into(),
        Quit::Grace(g) => format!("still running {} s after the signal", g.as_secs()),
    }
}

/// Runs trials, printing one progress line per finished trial on stderr, until
/// done or a signal stops the run (see [`interrupt`]).
pub fn run_with_progress(
    planned: &[Planned],
    jobs: Jobs,
    root: &Path,
    opts: &RunOptions,
) -> Trials {
    let total = planned.len();
    let mut done = 0;
    // A trial planned more than once (`run --repeat K`): `(i/K)` after its name.
    let mut times: std::collections::HashMap<String, (usize, usize)> =
        std::collections::HashMap::new();
    for p in planned {
        times.entry(p.id.name()).or_default().1 += 1;
    }
    let mut progress = |r: &TrialResult| {
        done += 1;
        let repeat = match times.get_mut(&r.name()) {
            Some((n, k)) if *k > 1 => {
                *n += 1;
                format!(" ({n}/{k})")
            }
            _ => String::new(),
        };
        let what = match &r.verdicts {
            Verdicts::Judged { .. } if r.violations().is_empty() => "ok".to_string(),
            Verdicts::Judged { .. } => format!("VIOLATES {}", r.violations().join(", ")),
            Verdicts::Error(e) => format!("ERROR {e}"),
            Verdicts::NotRun(why) => format!("not run: {why}"),
        };
        eprintln!(
            "[{done:>3}/{total}] {}{repeat} ... {what} ({} ms)",
            r.name(),
            r.elapsed.as_millis()
        );
        if let Verdicts::Judged { record, .. } = &r.verdicts
            && record.kept_dir
        {
            eprintln!("          kept: {}", record.dir.display());
        }
    };
    run_trials(planned, jobs, root, opts, &mut progress)
}

/// Runs trials, `jobs` at a time, calling `on_done` for each as it ends, until
/// done or a signal stops the run (see [`interrupt`]).
pub fn run_trials(
    planned: &[Planned],
    jobs: Jobs,
    root: &Path,
    opts: &RunOptions,
    on_done: &mut dyn FnMut(&TrialResult),
) -> Trials {
    let (root, opts) = (root.to_path_buf(), opts.clone());
    let ran = pool::run(
        Arc::new(planned.to_vec()),
        jobs,
        Arc::new(move |p: &Planned| run_one(p, &root, &opts)),
        on_done,
        &interrupt::STOP,
        interrupt::GRACE,
    );
    if let Some(s) = ran.stopped
        && s.abandoned > 0
    {
        let killed = cprkit_harness::leaks::kill_registered();
        eprintln!(
            "cprkit: quit waiting for {} trial(s) in flight ({}): {killed} VMM process(es) killed",
            s.abandoned,
            s.quit.map(quit_why).unwrap_or_default()
        );
    }
    let results = ran
        .results
        .into_iter()
        .zip(planned)
        .map(|(slot, p)| {
            let why = |what: &str| {
                let sig = ran
                    .stopped
                    .map(|s| interrupt::name(s.signal))
                    .unwrap_or_default();
                Verdicts::NotRun(format!("{INTERRUPTED} by {sig}: {what}"))
            };
            let verdicts = match slot {
                Slot::Done(r) => return r,
                Slot::NotStarted => why("not started"),
                Slot::Abandoned => why("abandoned in flight, its VMMs killed"),
            };
            TrialResult {
                id: p.id.clone(),
                snapshot_dir: p.adapter.snapshot_dir(),
                elapsed: Duration::ZERO,
                verdicts,
                repeats: None,
            }
        })
        .collect();
    Trials {
        results,
        stopped: ran.stopped,
    }
}
