//! `cprkit compare A B`: what changed from one run to another (stock and
//! patched builds of a VMM), trial by trial and rule by rule.
//!
//! Trials are matched by `CASE/POINT` (their name after `VMM::`: A and B name
//! different VMMs), verdicts by rule. A verdict is *newly broken* when it
//! passed or did not apply in A and fails in B, *fixed* the other way round,
//! *unchanged* when both fail or neither does, and *not comparable* when only
//! one side judged the rule (a kit with more rules made one of the reports).
//! A trial is not comparable as a whole when it is in one side only, or when a
//! side did not judge it (error, not run). Known violations are not excused:
//! raw verdicts are compared. B is *worse* when a verdict is newly broken, a
//! trial that ran in A errored or did not run in B, or a trial ok in A is a
//! violation in B.
//!
//! [`compare`] is a pure function of two [`Side`]s ([`side`]); the result,
//! [`Comparison`], is the JSON of `cprkit compare --format json`
//! (docs/compare.schema.json) and is drawn for people by [`markdown`].

pub mod markdown;
pub mod side;

use std::collections::{BTreeMap, BTreeSet};

use cprkit_harness::rules::{self, Status};
use serde::Serialize;

use crate::model::Tool;
use crate::summaries::{plural, tool};
pub use side::{Ran, RawVerdict, Side, Source, Trial};

/// The version of the comparison's JSON shape (docs/compare.schema.json).
pub const COMPARE_SCHEMA_VERSION: &str = "1";

/// Whether B is worse than A.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Something got worse: `cprkit compare` exits 1.
    Worse,
    /// Nothing got worse (things may have been fixed): exit 0.
    NotWorse,
}

/// A side as the comparison names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SideSummary {
    /// The argument as given: a `--vmm` value or a file's path.
    pub given: String,
    pub source: Source,
    pub vmm: String,
    /// Its trials (after `--case`).
    pub trials: usize,
}

/// The counts of a comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// `CASE/POINT`s in both sides.
    pub trials_in_common: usize,
    /// Of those, judged on both sides: their verdicts are compared.
    pub trials_compared: usize,
    pub trials_only_in_a: usize,
    pub trials_only_in_b: usize,
    /// Every entry of `not_comparable`: in one side only, or not judged on one.
    pub trials_not_comparable: usize,
    /// Trials in common whose outcome changed (entries of `outcomes`).
    pub outcomes_changed: usize,
    pub verdicts_newly_broken: usize,
    pub verdicts_fixed: usize,
    pub verdicts_unchanged: usize,
    /// Verdicts of a compared trial that only one side has.
    pub verdicts_not_comparable: usize,
}

/// A verdict that changed class: newly broken or fixed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `CASE/POINT`.
    pub trial: String,
    pub a: Status,
    pub b: Status,
    /// The failing side's evidence: B's when newly broken, A's when fixed.
    pub evidence: String,
    /// The same with numbers; absent when there are none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// A side that judged a rule in a compared trial the other side did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Which {
    A,
    B,
}

impl Which {
    pub fn name(self) -> &'static str {
        match self {
            Which::A => "A",
            Which::B => "B",
        }
    }

    fn other(self) -> Which {
        match self {
            Which::A => Which::B,
            Which::B => Which::A,
        }
    }
}

/// A rule one side judged in a compared trial and the other did not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub trial: String,
    /// The side that has the verdict.
    pub judged_in: Which,
    pub status: Status,
}

/// One rule over the trials compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleChanges {
    pub id: String,
    /// The MUST text, when this kit knows the rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub newly_broken: Vec<Change>,
    pub fixed: Vec<Change>,
    /// Trials where it failed in both, or in neither (pass and not applicable
    /// alike).
    pub unchanged: usize,
    /// Of the unchanged, those where it failed in both.
    pub still_broken: usize,
    pub not_comparable: Vec<Gap>,
}

impl RuleChanges {
    /// Whether any of its verdicts changed or could not be compared.
    pub fn changed(&self) -> bool {
        !self.newly_broken.is_empty() || !self.fixed.is_empty() || !self.not_comparable.is_empty()
    }
}

/// What became of a trial on one side, raw (no known violation excused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Judged, no rule broken.
    Ok,
    /// Judged, a rule broken.
    Violation,
    /// The kit or the host failed.
    Error,
    /// Not run.
    NotRun,
    /// Not in this side.
    Absent,
}

impl Outcome {
    /// As `cprkit run`'s table spells it.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Violation => "VIOLATION",
            Outcome::Error => "ERROR",
            Outcome::NotRun => "not run",
            Outcome::Absent => "absent",
        }
    }

    fn judged(self) -> bool {
        matches!(self, Outcome::Ok | Outcome::Violation)
    }

    fn of(t: Option<&Trial>) -> Outcome {
        match t.map(|t| &t.ran) {
            None => Outcome::Absent,
            Some(Ran::Judged(vs)) if vs.iter().any(|v| v.status == Status::Fail) => {
                Outcome::Violation
            }
            Some(Ran::Judged(_)) => Outcome::Ok,
            Some(Ran::Error(_)) => Outcome::Error,
            Some(Ran::NotRun(_)) => Outcome::NotRun,
        }
    }
}

/// Which way an outcome changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// ok -> VIOLATION, or judged -> ERROR / not run.
    Worse,
    /// VIOLATION -> ok, or ERROR / not run -> ok.
    Better,
    /// Anything else (ERROR <-> not run, ERROR / not run -> VIOLATION).
    Other,
}

impl Direction {
    fn of(a: Outcome, b: Outcome) -> Direction {
        if (a == Outcome::Ok && b == Outcome::Violation) || (a.judged() && !b.judged()) {
            Direction::Worse
        } else if b == Outcome::Ok {
            Direction::Better
        } else {
            Direction::Other
        }
    }
}

/// A trial in common whose outcome changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutcomeChange {
    pub trial: String,
    pub a: Outcome,
    pub b: Outcome,
    pub direction: Direction,
    /// The rules each side broke.
    pub broken_in_a: Vec<String>,
    pub broken_in_b: Vec<String>,
    /// Why a side that did not judge the trial did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_a: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_b: Option<String>,
}

/// A trial whose verdicts cannot be compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotComparable {
    pub trial: String,
    pub a: Outcome,
    pub b: Outcome,
    /// Which side lacks it or did not judge it, and why.
    pub why: String,
}

/// The comparison of two runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Comparison {
    pub schema_version: String,
    /// Always `compare`.
    pub kind: String,
    pub tool: Tool,
    pub a: SideSummary,
    pub b: SideSummary,
    pub verdict: Verdict,
    /// Why B is worse; empty when it is not.
    pub reasons: Vec<String>,
    pub summary: Counts,
    /// Every rule either side judged: the contract's order, then rules this
    /// kit does not know, in the order the reports give them.
    pub rules: Vec<RuleChanges>,
    /// Trials in common whose outcome changed, in A's order.
    pub outcomes: Vec<OutcomeChange>,
    /// A's trials then B's, those not judged on both sides.
    pub not_comparable: Vec<NotComparable>,
}

impl Comparison {
    pub fn is_worse(&self) -> bool {
        self.verdict == Verdict::Worse
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a comparison serializes") + "\n"
    }
}

/// Why two sides cannot be compared at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NothingInCommon {
    pub a: usize,
    pub b: usize,
}

impl std::fmt::Display for NothingInCommon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "A and B have no trial in common (A has {}, B {}; trials are matched by CASE/POINT)",
            plural(self.a, "trial", "trials"),
            self.b
        )
    }
}

impl std::error::Error for NothingInCommon {}

/// What changed from `a` to `b`.
pub fn compare(a: &Side, b: &Side) -> Result<Comparison, NothingInCommon> {
    let b_by_key: BTreeMap<String, &Trial> = b.trials.iter().map(|t| (t.key(), t)).collect();
    let a_keys: BTreeSet<String> = a.trials.iter().map(Trial::key).collect();
    // (key, A's trial, B's trial): A's order, then B's trials A lacks.
    let mut pairs: Vec<(String, Option<&Trial>, Option<&Trial>)> = a
        .trials
        .iter()
        .map(|t| (t.key(), Some(t), b_by_key.get(&t.key()).copied()))
        .collect();
    pairs.extend(
        b.trials
            .iter()
            .filter(|t| !a_keys.contains(&t.key()))
            .map(|t| (t.key(), None, Some(t))),
    );
    let mut counts = Counts::default();
    let mut rules: Vec<RuleChanges> = rule_order(a, b)
        .into_iter()
        .map(|id| RuleChanges {
            text: rules::rule(&id).map(|r| r.text.to_string()),
            id,
            newly_broken: Vec::new(),
            fixed: Vec::new(),
            unchanged: 0,
            still_broken: 0,
            not_comparable: Vec::new(),
        })
        .collect();
    let mut outcomes = Vec::new();
    let mut not_comparable = Vec::new();
    // Trials ok in A that are violations in B with no verdict newly broken.
    let mut violation_by_new_rule = 0;
    for (key, ta, tb) in &pairs {
        let (oa, ob) = (Outcome::of(*ta), Outcome::of(*tb));
        match (ta, tb) {
            (Some(_), None) => counts.trials_only_in_a += 1,
            (None, Some(_)) => counts.trials_only_in_b += 1,
            _ => counts.trials_in_common += 1,
        }
        if oa != ob && oa != Outcome::Absent && ob != Outcome::Absent {
            outcomes.push(OutcomeChange {
                trial: key.clone(),
                a: oa,
                b: ob,
                direction: Direction::of(oa, ob),
                broken_in_a: broken(*ta),
                broken_in_b: broken(*tb),
                reason_a: reason(*ta),
                reason_b: reason(*tb),
            });
        }
        let (Some(Ran::Judged(va)), Some(Ran::Judged(vb))) =
            (ta.map(|t| &t.ran), tb.map(|t| &t.ran))
        else {
            not_comparable.push(NotComparable {
                trial: key.clone(),
                a: oa,
                b: ob,
                why: why_not(*ta, *tb),
            });
            continue;
        };
        counts.trials_compared += 1;
        let mut newly_here = false;
        for rule in &mut rules {
            let id = rule.id.clone();
            let find = |vs: &[RawVerdict]| vs.iter().find(|v| v.rule == id).cloned();
            let gap = match (find(va), find(vb)) {
                (None, None) => None,
                (Some(x), None) => Some((Which::A, x.status)),
                (None, Some(y)) => Some((Which::B, y.status)),
                (Some(x), Some(y)) => {
                    let (fa, fb) = (x.status == Status::Fail, y.status == Status::Fail);
                    let change = |v: &RawVerdict| Change {
                        trial: key.clone(),
                        a: x.status,
                        b: y.status,
                        evidence: v.evidence.clone(),
                        detail: v.detail.clone(),
                    };
                    match (fa, fb) {
                        (false, true) => {
                            rule.newly_broken.push(change(&y));
                            counts.verdicts_newly_broken += 1;
                            newly_here = true;
                        }
                        (true, false) => {
                            rule.fixed.push(change(&x));
                            counts.verdicts_fixed += 1;
                        }
                        (both, _) => {
                            rule.unchanged += 1;
                            rule.still_broken += usize::from(both);
                            counts.verdicts_unchanged += 1;
                        }
                    }
                    None
                }
            };
            if let Some((judged_in, status)) = gap {
                rule.not_comparable.push(Gap {
                    trial: key.clone(),
                    judged_in,
                    status,
                });
                counts.verdicts_not_comparable += 1;
            }
        }
        if oa == Outcome::Ok && ob == Outcome::Violation && !newly_here {
            violation_by_new_rule += 1;
        }
    }
    if counts.trials_in_common == 0 {
        return Err(NothingInCommon {
            a: a.trials.len(),
            b: b.trials.len(),
        });
    }
    counts.trials_not_comparable = not_comparable.len();
    counts.outcomes_changed = outcomes.len();

    let mut reasons: Vec<String> = rules
        .iter()
        .filter(|r| !r.newly_broken.is_empty())
        .map(|r| {
            format!(
                "{} newly broken in {}",
                r.id,
                plural(r.newly_broken.len(), "trial", "trials")
            )
        })
        .collect();
    let stopped_running = outcomes
        .iter()
        .filter(|o| o.a.judged() && !o.b.judged())
        .count();
    if stopped_running > 0 {
        reasons.push(format!(
            "{} in A but not in B (error or not run)",
            plural(stopped_running, "trial ran", "trials ran")
        ));
    }
    if violation_by_new_rule > 0 {
        reasons.push(format!(
            "{} in A {} in B only by rules A did not judge",
            plural(violation_by_new_rule, "trial ok", "trials ok"),
            if violation_by_new_rule == 1 {
                "is a VIOLATION"
            } else {
                "are VIOLATIONs"
            }
        ));
    }
    let verdict = if reasons.is_empty() {
        Verdict::NotWorse
    } else {
        Verdict::Worse
    };
    Ok(Comparison {
        schema_version: COMPARE_SCHEMA_VERSION.into(),
        kind: "compare".into(),
        tool: tool(),
        a: summary_of(a),
        b: summary_of(b),
        verdict,
        reasons,
        summary: counts,
        rules,
        outcomes,
        not_comparable,
    })
}

fn summary_of(s: &Side) -> SideSummary {
    SideSummary {
        given: s.given.clone(),
        source: s.source,
        vmm: s.vmm.clone(),
        trials: s.trials.len(),
    }
}

/// Every rule either side judged: the contract's order (this kit's
/// [`rules::RULES`]), then the others as the sides first give them.
fn rule_order(a: &Side, b: &Side) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for t in a.trials.iter().chain(&b.trials) {
        if let Ran::Judged(vs) = &t.ran {
            for v in vs {
                if !seen.contains(&v.rule) {
                    seen.push(v.rule.clone());
                }
            }
        }
    }
    let position = |id: &String| {
        rules::RULES
            .iter()
            .position(|r| r.id == id)
            .unwrap_or(usize::MAX)
    };
    // A stable sort: the rules this kit does not know keep their order.
    seen.sort_by_key(position);
    seen
}

fn broken(t: Option<&Trial>) -> Vec<String> {
    match t.map(|t| &t.ran) {
        Some(Ran::Judged(vs)) => vs
            .iter()
            .filter(|v| v.status == Status::Fail)
            .map(|v| v.rule.clone())
            .collect(),
        _ => Vec::new(),
    }
}

fn reason(t: Option<&Trial>) -> Option<String> {
    match t.map(|t| &t.ran) {
        Some(Ran::Error(e)) => Some(e.clone()),
        Some(Ran::NotRun(why)) => Some(why.clone()),
        _ => None,
    }
}

/// Why a trial not judged on both sides cannot be compared.
fn why_not(a: Option<&Trial>, b: Option<&Trial>) -> String {
    let side = |which: Which, t: Option<&Trial>| match t.map(|t| &t.ran) {
        None => Some(format!("only in {}", which.other().name())),
        Some(Ran::Error(e)) => Some(format!("error in {}: {e}", which.name())),
        Some(Ran::NotRun(why)) => Some(format!("not run in {}: {why}", which.name())),
        Some(Ran::Judged(_)) => None,
    };
    [side(Which::A, a), side(Which::B, b)]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests;
