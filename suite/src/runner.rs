//! Runs trials: one case x VMM x fault point each, several at once, each
//! judged by the rules and turned into its snapshot form. Shared by the
//! `cprkit` command and the libtest-mimic conformance runner.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cprkit_harness::adapter::Adapter;
use cprkit_harness::device::{Backend, DeviceSetup};
use cprkit_harness::outcome::Outcome;
use cprkit_harness::plan::FaultPoint;
use cprkit_harness::record::TrialRecord;
use cprkit_harness::rules::{self, Verdict};
use cprkit_harness::schedule::Schedule;
use cprkit_harness::trial::{self, TrialSpec};

use crate::{Case, TrialId};

/// The bound for a whole migration to end (ERR-2): some 250 times what a
/// QEMU handover takes under TCG here.
pub const MIGRATION_BOUND: Duration = Duration::from_secs(5);

/// One trial to run.
#[derive(Clone)]
pub struct Planned {
    pub id: TrialId,
    pub case: Arc<Case>,
    pub adapter: Arc<dyn Adapter>,
}

/// What became of a trial.
pub enum Verdicts {
    /// Ran and was judged.
    Judged {
        record: Box<TrialRecord>,
        verdicts: Vec<Verdict>,
        outcome: Box<Outcome>,
    },
    /// Could not be carried out (the kit or the host failed, not the VMM).
    Error(String),
    /// Not run on this host, with the reason; never counted as passed.
    NotRun(String),
}

/// A finished trial.
pub struct TrialResult {
    pub id: TrialId,
    /// The VMM's directory under snapshots/ (its snapshots, its known violations).
    pub snapshot_dir: String,
    pub elapsed: Duration,
    pub verdicts: Verdicts,
    /// `run --repeat K`: every repeat's run and the outcomes seen, when this
    /// result stands for K repeats ([`crate::repeat::merge`]).
    pub repeats: Option<Box<crate::repeat::Repeats>>,
}

impl TrialResult {
    pub fn name(&self) -> String {
        self.id.name()
    }

    /// Whether its repeats gave more than one outcome.
    pub fn intermittent(&self) -> bool {
        self.repeats.as_ref().is_some_and(|r| r.intermittent())
    }

    /// The rule IDs this trial broke.
    pub fn violations(&self) -> Vec<&str> {
        match &self.verdicts {
            Verdicts::Judged { outcome, .. } => outcome.violations(),
            _ => Vec::new(),
        }
    }
}

/// Options of a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub keep: bool,
}

/// Runs one trial.
impl Planned {
    /// Whether this trial can run here: its case on this host, and its
    /// adapter with what the case needs; `Err` says why not.
    pub fn runnable(&self) -> Result<(), String> {
        self.case.runnable()?;
        if let Some(why) = self
            .adapter
            .not_runnable(self.case.device_policy.is_some(), &self.case.capabilities)
        {
            return Err(why);
        }
        let prelaunch = self.case.guest == cprkit_harness::plan::GuestState::Prelaunch;
        match self
            .adapter
            .scenario_unsupported(&self.case.scenario, prelaunch)
        {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }
}

pub fn run_one(p: &Planned, root: &Path, opts: &RunOptions) -> TrialResult {
    let started = Instant::now();
    let verdicts = match p.runnable() {
        Err(why) => Verdicts::NotRun(why),
        Ok(()) => {
            let spec = spec_for(&p.id, &p.case, p.id.point, opts);
            match trial::run(p.adapter.as_ref(), &spec, root) {
                Ok(record) => {
                    let verdicts = rules::judge(&record);
                    let outcome = Outcome::new(&record, &verdicts);
                    Verdicts::Judged {
                        record: Box::new(record),
                        verdicts,
                        outcome: Box::new(outcome),
                    }
                }
                Err(e) => Verdicts::Error(e.to_string()),
            }
        }
    };
    TrialResult {
        id: p.id.clone(),
        snapshot_dir: p.adapter.snapshot_dir(),
        elapsed: started.elapsed(),
        verdicts,
        repeats: None,
    }
}

fn spec_for(id: &TrialId, case: &Case, point: Option<FaultPoint>, opts: &RunOptions) -> TrialSpec {
    trial_spec(id.name(), case, Schedule::single(point), id.hop, opts)
}

/// The spec of a trial of `case` named `name` under `schedule` (a matrix
/// trial's is one point; a fuzz trial's, what its seed drew), its faults
/// placed at hop `fault_hop` of the case's chain (1 for one handover).
pub fn trial_spec(
    name: String,
    case: &Case,
    schedule: Schedule,
    fault_hop: u32,
    opts: &RunOptions,
) -> TrialSpec {
    TrialSpec {
        name,
        guest: case.guest,
        schedule,
        settle: case.settle,
        migration_bound: MIGRATION_BOUND,
        capabilities: case.capabilities.clone(),
        device: case.device_policy.map(|policy| DeviceSetup {
            backend: case.device_backend.unwrap_or(Backend::Kit),
            policy,
        }),
        keep: opts.keep,
        scenario: cprkit_harness::scenario::Scenario {
            fault_hop,
            ..case.scenario.clone()
        },
    }
}

/// Runs trials on `jobs` threads; `progress` is called as each one ends.
/// Results come back in the order of `planned`.
pub fn run_all(
    planned: &[Planned],
    jobs: usize,
    root: &Path,
    opts: &RunOptions,
    progress: &(dyn Fn(&TrialResult) + Sync),
) -> Vec<TrialResult> {
    let next = AtomicUsize::new(0);
    let mut slots: Vec<Option<TrialResult>> = (0..planned.len()).map(|_| None).collect();
    let slots_mx = std::sync::Mutex::new(&mut slots);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1).min(planned.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(p) = planned.get(i) else { break };
                    let r = run_one(p, root, opts);
                    progress(&r);
                    slots_mx.lock().expect("results lock")[i] = Some(r);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|r| r.expect("every trial ran"))
        .collect()
}

/// The trials of `cases` for each adapter, kept when `filter` (a glob on the
/// case name or the full trial name) matches. A point at a step the adapter
/// says its VMM does not have is not planned.
pub fn plan(adapters: &[Arc<dyn Adapter>], cases: &[Case], filter: Option<&str>) -> Vec<Planned> {
    let cases: Vec<Arc<Case>> = cases.iter().cloned().map(Arc::new).collect();
    let mut out = Vec::new();
    for a in adapters {
        for case in &cases {
            for id in crate::trials(a.name(), std::slice::from_ref(case.as_ref()))
                .into_iter()
                .map(|(id, _)| id)
                .filter(|id| {
                    id.point.is_none_or(|p| {
                        a.has_step(p.step, &case.capabilities)
                            && a.handover_shape().plans(p.fault, p.step)
                    })
                })
            {
                let keep = filter.is_none_or(|f| {
                    crate::glob_match(f, &id.case) || crate::glob_match(f, &id.name())
                });
                if keep {
                    out.push(Planned {
                        id,
                        case: Arc::clone(case),
                        adapter: Arc::clone(a),
                    });
                }
            }
        }
    }
    out
}
