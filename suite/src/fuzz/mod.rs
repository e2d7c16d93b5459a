//! Random fault schedules: each fuzz trial draws a schedule from its seed
//! ([`draw`]), runs it on real processes like every trial, and is judged by
//! every rule (no snapshot: the rules are the oracle). A failing trial is
//! replayed to tell a steady break from an intermittent one, and shrunk
//! ([`shrink`]) to a smallest schedule that breaks the same rule with the same
//! kind of evidence.

pub mod draw;
pub mod shrink;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use cprkit_harness::adapter::Adapter;
use cprkit_harness::plan::{FaultPoint, GuestState};
use cprkit_harness::rules::{self, Status, Verdict};
use cprkit_harness::schedule::Schedule;
use cprkit_harness::trial;

use crate::Case;
use crate::known::KnownViolations;
use crate::runner::{Planned, RunOptions, trial_spec};

pub use draw::{Candidate, Drawn, draw, trial_seed};

/// What a fuzz run draws from: one VMM and the cases it can run here, each
/// with the fault points the VMM plans for it.
pub struct Target {
    pub adapter: Arc<dyn Adapter>,
    pub cases: Vec<(Arc<Case>, Candidate)>,
    /// Cases left out, with why they cannot run here.
    pub not_run: Vec<(String, String)>,
    /// Every case of the suite (those not fuzzed too), to tell which hand
    /// over the same way ([`Target::same_handover`]).
    pub all: Vec<Case>,
}

impl Target {
    /// The target of `planned` (the matrix of one VMM, from
    /// [`crate::runner::plan`]): its cases with their planned points.
    pub fn from_plan(adapter: Arc<dyn Adapter>, planned: &[Planned]) -> Target {
        let mut cases: Vec<(Arc<Case>, Candidate)> = Vec::new();
        let mut not_run = Vec::new();
        for p in planned {
            if let Err(why) = p.runnable() {
                if !not_run.iter().any(|(c, _)| *c == p.case.name) {
                    not_run.push((p.case.name.clone(), why));
                }
                continue;
            }
            let i = match cases.iter().position(|(c, _)| c.name == p.case.name) {
                Some(i) => i,
                None => {
                    cases.push((
                        Arc::clone(&p.case),
                        Candidate {
                            case: p.case.name.clone(),
                            points: Vec::new(),
                        },
                    ));
                    cases.len() - 1
                }
            };
            if let Some(point) = p.id.point {
                cases[i].1.points.push(point);
            }
        }
        cases.retain(|(_, c)| !c.points.is_empty());
        let all = cases.iter().map(|(c, _)| c.as_ref().clone()).collect();
        Target {
            adapter,
            cases,
            not_run,
            all,
        }
    }

    pub fn candidates(&self) -> Vec<Candidate> {
        self.cases.iter().map(|(_, c)| c.clone()).collect()
    }

    fn case(&self, name: &str) -> Option<&(Arc<Case>, Candidate)> {
        self.cases.iter().find(|(c, _)| c.name == name)
    }

    /// The drawn case, and the cases that hand over the same way with the
    /// drawn guest state (same profile, device and capabilities, that guest).
    pub fn same_handover(&self, d: &Drawn) -> Vec<String> {
        let Some((drawn, _)) = self.case(&d.case) else {
            return vec![d.case.clone()];
        };
        let mut out = vec![d.case.clone()];
        out.extend(
            self.all
                .iter()
                .filter(|c| {
                    c.name != drawn.name
                        && c.guest == d.guest
                        && c.profile == drawn.profile
                        && c.device_policy == drawn.device_policy
                        && c.device_backend == drawn.device_backend
                        && c.capabilities == drawn.capabilities
                })
                .map(|c| c.name.clone()),
        );
        out
    }

    /// The points the VMM plans for a case.
    pub fn points(&self, case: &str) -> &[FaultPoint] {
        self.case(case)
            .map(|(_, c)| c.points.as_slice())
            .unwrap_or(&[])
    }
}

/// A broken rule and the kind of its evidence: the evidence with the names of
/// fault points and numbers taken out, so that a shrunk schedule (other
/// points, other times) breaks "the same way".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Break {
    pub rule: &'static str,
    pub kind: String,
    pub evidence: String,
}

/// The kind of an evidence text: a list of fault points as one `*`, digits
/// dropped.
pub fn evidence_kind(evidence: &str) -> String {
    let mut words: Vec<&str> = Vec::new();
    for w in evidence.split(' ') {
        let point = w.contains('@');
        if point && words.last() == Some(&"*") {
            continue;
        }
        words.push(if point { "*" } else { w });
    }
    words
        .join(" ")
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .collect()
}

/// What a fuzz trial came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdicted {
    /// Every rule passed or did not apply.
    Pass,
    /// These rules broke, in the contract's order.
    Fail(Vec<Break>),
    /// The trial could not be carried out (not a verdict on the VMM).
    Error(String),
}

impl Verdicted {
    fn of(verdicts: &[Verdict]) -> Verdicted {
        let breaks: Vec<Break> = verdicts
            .iter()
            .filter(|v| v.status == Status::Fail)
            .map(|v| Break {
                rule: v.rule,
                kind: evidence_kind(&v.evidence),
                evidence: v.evidence.clone(),
            })
            .collect();
        if breaks.is_empty() {
            Verdicted::Pass
        } else {
            Verdicted::Fail(breaks)
        }
    }

    /// The outcome in words, the same for the same outcome (for counting replays).
    pub fn key(&self) -> String {
        match self {
            Verdicted::Pass => "pass".into(),
            Verdicted::Fail(b) => {
                let rules: Vec<&str> = b.iter().map(|b| b.rule).collect();
                format!("fail {}", rules.join(" "))
            }
            Verdicted::Error(_) => "error".into(),
        }
    }

    /// Whether it breaks `rule` with evidence of `kind`.
    pub fn breaks(&self, b: &Break) -> bool {
        matches!(self, Verdicted::Fail(bs) if bs.iter().any(|x| x.rule == b.rule && x.kind == b.kind))
    }
}

/// A fuzz trial's name: `VMM::CASE/fuzz-SEED`.
pub fn trial_name(vmm: &str, d: &Drawn) -> String {
    format!("{vmm}::{}/fuzz-{}", d.case, d.seed)
}

/// Runs a drawn trial on real processes and judges it by every rule.
pub fn run_drawn(target: &Target, d: &Drawn, root: &Path, opts: &RunOptions) -> Verdicted {
    run_schedule(
        target,
        &d.case,
        d.guest,
        &d.schedule,
        &trial_name(target.adapter.name(), d),
        root,
        opts,
    )
}

/// Runs `schedule` on `case` with the guest `guest`.
pub fn run_schedule(
    target: &Target,
    case: &str,
    guest: GuestState,
    schedule: &Schedule,
    name: &str,
    root: &Path,
    opts: &RunOptions,
) -> Verdicted {
    let Some((case, _)) = target.case(case) else {
        return Verdicted::Error(format!("no case `{case}` to fuzz here"));
    };
    let mut spec = trial_spec(name.to_string(), case, schedule.clone(), 1, opts);
    spec.guest = guest;
    match trial::run(target.adapter.as_ref(), &spec, root) {
        Ok(record) => Verdicted::of(&rules::judge(&record)),
        Err(e) => Verdicted::Error(e.to_string()),
    }
}

/// The outcomes of a trial's replays, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replays {
    pub counts: BTreeMap<String, usize>,
}

impl Replays {
    pub fn add(&mut self, v: &Verdicted) {
        *self.counts.entry(v.key()).or_default() += 1;
    }

    pub fn total(&self) -> usize {
        self.counts.values().sum()
    }

    /// More than one outcome over the replays.
    pub fn intermittent(&self) -> bool {
        self.counts.len() > 1
    }
}

impl std::fmt::Display for Replays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .counts
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        write!(f, "{} of {} runs", parts.join(", "), self.total())
    }
}

/// A failing trial, replayed and shrunk.
#[derive(Debug, Clone)]
pub struct Finding {
    pub drawn: Drawn,
    /// The rule it breaks (the first in the contract's order).
    pub broken: Break,
    pub verdict: Verdicted,
    /// The first run and its replays.
    pub replays: Replays,
    pub shrunk: shrink::Shrunk,
    /// The shrunk schedule's runs.
    pub shrunk_replays: Replays,
    /// Whether the VMM's known violations expect this break at a point of
    /// the schedule (judged on the single trials of its points).
    pub known: bool,
}

/// How hard a failing trial is looked at.
#[derive(Debug, Clone, Copy)]
pub struct Effort {
    /// Replays of the failing trial, and runs of its shrunk schedule.
    pub replays: usize,
    /// Trials the shrinker may run.
    pub budget: usize,
}

/// The breaks of a drawn trial that the VMM's known violations do not
/// expect: a break is expected if the list expects it at one of the
/// schedule's points (or the fault-free trial) of the same case, or of a case
/// that is the same hand-over once the drawn guest state is taken (a
/// `memory-paused` trial drawn with a running guest is a `memory-running` one).
pub fn unexpected(
    target: &Target,
    d: &Drawn,
    breaks: &[Break],
    known: Option<&KnownViolations>,
) -> Vec<Break> {
    let Some(k) = known else {
        return breaks.to_vec();
    };
    let vmm = target.adapter.name();
    let cases = target.same_handover(d);
    breaks
        .iter()
        .filter(|b| {
            let v = Verdict {
                rule: b.rule,
                status: Status::Fail,
                evidence: b.evidence.clone(),
                detail: String::new(),
            };
            !cases.iter().any(|case| {
                std::iter::once(None)
                    .chain(d.schedule.faults.iter().copied().map(Some))
                    .any(|p| {
                        let trial = format!("{vmm}::{case}/{}", crate::point_name(p));
                        k.expecting(&trial, &v).is_some()
                    })
            })
        })
        .cloned()
        .collect()
}

/// Replays a failing trial `effort.replays` times, then shrinks it (at most
/// `effort.budget` trials) to a smallest schedule that still breaks
/// `broken` the same way, and runs the shrunk schedule as many times.
#[allow(clippy::too_many_arguments)]
pub fn investigate(
    target: &Target,
    d: &Drawn,
    first: Verdicted,
    broken: Break,
    effort: Effort,
    root: &Path,
    opts: &RunOptions,
    known: Option<&KnownViolations>,
) -> Finding {
    let Effort { replays, budget } = effort;
    let mut counted = Replays::default();
    counted.add(&first);
    for _ in 0..replays {
        counted.add(&run_drawn(target, d, root, opts));
    }
    let name = trial_name(target.adapter.name(), d);
    let shrunk = shrink::shrink(&d.schedule, target.points(&d.case), budget, |c| {
        run_schedule(target, &d.case, d.guest, c, &name, root, opts).breaks(&broken)
    });
    let mut shrunk_replays = Replays::default();
    for _ in 0..replays.max(1) {
        let v = run_schedule(
            target,
            &d.case,
            d.guest,
            &shrunk.schedule,
            &name,
            root,
            opts,
        );
        shrunk_replays.add(&v);
    }
    let known = unexpected(target, d, std::slice::from_ref(&broken), known).is_empty();
    Finding {
        drawn: d.clone(),
        broken,
        verdict: first,
        replays: counted,
        shrunk,
        shrunk_replays,
        known,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_kinds_forget_points_and_numbers() {
        assert_eq!(
            evidence_kind(
                "the source's migration ended `failed`, during the handover with cancel@cpr-save, kill-target@main-stream"
            ),
            evidence_kind(
                "the source's migration ended `failed`, during the handover with cancel@target-init"
            )
        );
        assert_eq!(evidence_kind("counter 12 -> 13"), "counter  -> ");
    }

    #[test]
    fn replays_that_differ_are_intermittent() {
        let mut r = Replays::default();
        r.add(&Verdicted::Pass);
        r.add(&Verdicted::Pass);
        assert!(!r.intermittent());
        r.add(&Verdicted::Fail(vec![Break {
            rule: "FAIL-1",
            kind: "x".into(),
            evidence: "x".into(),
        }]));
        assert!(r.intermittent());
        assert_eq!(r.to_string(), "fail FAIL-1: 1, pass: 2 of 3 runs");
    }
}
