//! From trial results to the parts of a report: each trial's entry (its
//! verdicts, with the known violation that excuses each, and its figures),
//! the per-rule and per-figure summaries, and the counts.

use cprkit_harness::outcome::redact;
use cprkit_harness::rules::{self, Status};
use cprkit_suite::known::KnownViolations;
use cprkit_suite::runner::{TrialResult, Verdicts};

use crate::figures::{Figure, Figures, median};
use crate::model::{
    FailureReport, FigureSummary, KnownRef, Median, RepeatOutcomeReport, RepeatsReport,
    RuleSummary, RuleVerdict, Summary, Tool, TrialOutcome, TrialReport, VerdictReport,
};

pub(crate) fn tool() -> Tool {
    Tool {
        name: "cprkit".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    }
}

pub(crate) fn trial_report(r: &TrialResult, known: Option<&KnownViolations>) -> TrialReport {
    let name = r.name();
    let (result, reason, verdicts, figures) = match &r.verdicts {
        Verdicts::Judged {
            record, verdicts, ..
        } => {
            let vs: Vec<VerdictReport> = verdicts
                .iter()
                .map(|v| VerdictReport {
                    rule: v.rule.to_string(),
                    status: v.status,
                    evidence: redact(&v.evidence, record),
                    detail: redact(&v.detail, record),
                    known: known.and_then(|k| k.expecting(&name, v)).map(|e| KnownRef {
                        reason: e.reason.clone(),
                        upstream: e.upstream.clone(),
                        file: known
                            .map(|k| k.path.display().to_string())
                            .unwrap_or_default(),
                        line: e.line,
                    }),
                })
                .collect();
            let failing = vs.iter().filter(|v| v.status == Status::Fail);
            let result = if failing.clone().next().is_none() {
                TrialOutcome::Passed
            } else if failing.clone().all(|v| v.known.is_some()) {
                TrialOutcome::Known
            } else {
                TrialOutcome::Failed
            };
            (result, None, vs, Some(Figures::of(record)))
        }
        Verdicts::Error(e) => (TrialOutcome::Error, Some(e.clone()), Vec::new(), None),
        Verdicts::NotRun(why) => (TrialOutcome::NotRun, Some(why.clone()), Vec::new(), None),
    };
    let repeats = r.repeats.as_ref().map(|rep| {
        let covering = if rep.intermittent() {
            known
                .and_then(|k| k.covering_intermittent(&name, &rep.runs))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        RepeatsReport {
            count: rep.count(),
            outcomes: rep
                .outcomes
                .iter()
                .map(|s| RepeatOutcomeReport {
                    outcome: s.label.clone(),
                    count: s.count,
                    repeats: s.repeats.clone(),
                    broken_rules: s.outcome.broken().iter().map(|r| r.to_string()).collect(),
                    failures: s
                        .failures
                        .iter()
                        .map(|v| FailureReport {
                            rule: v.rule.to_string(),
                            evidence: v.evidence.clone(),
                            detail: v.detail.clone(),
                        })
                        .collect(),
                    reason: s.reason.clone(),
                })
                .collect(),
            known: covering
                .iter()
                .map(|e| KnownRef {
                    reason: e.reason.clone(),
                    upstream: e.upstream.clone(),
                    file: known
                        .map(|k| k.path.display().to_string())
                        .unwrap_or_default(),
                    line: e.line,
                })
                .collect(),
        }
    });
    let intermittent = r.repeats.as_ref().map(|rep| rep.intermittent());
    // Intermittent, and no `intermittent` entry accounts for it: a failure,
    // whatever its verdicts.
    let result = match &repeats {
        Some(rep) if intermittent == Some(true) && rep.known.is_empty() => TrialOutcome::Failed,
        _ => result,
    };
    TrialReport {
        name,
        vmm: r.id.vmm.clone(),
        case: r.id.case.clone(),
        point: r.id.point_name(),
        fault_free: r.id.point.is_none(),
        result,
        reason,
        elapsed_ms: (r.elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0,
        broken_rules: verdicts
            .iter()
            .filter(|v| v.status == Status::Fail)
            .map(|v| v.rule.clone())
            .collect(),
        verdicts,
        figures,
        timeline: None,
        intermittent,
        repeats,
    }
}

pub(crate) fn rule_summaries(trials: &[TrialReport]) -> Vec<RuleSummary> {
    // The device rules only when a trial had a device (a profile with one).
    let device = trials.iter().any(|t| {
        t.verdicts
            .iter()
            .any(|v| rules::rule(&v.rule).is_some_and(|r| r.device))
    });
    rules::rules_for(device)
        .map(|rule| {
            let mut s = RuleSummary {
                id: rule.id.into(),
                text: rule.text.into(),
                verdict: RuleVerdict::NotJudged,
                exercised_in: 0,
                passed_in: 0,
                broken_in: 0,
                not_applicable_in: 0,
                broken_trials: Vec::new(),
            };
            for t in trials {
                for v in t.verdicts.iter().filter(|v| v.rule == rule.id) {
                    match v.status {
                        Status::Pass => s.passed_in += 1,
                        Status::NotApplicable => s.not_applicable_in += 1,
                        Status::Fail => {
                            s.broken_in += 1;
                            s.broken_trials.push(t.name.clone());
                        }
                    }
                }
            }
            s.exercised_in = s.passed_in + s.broken_in;
            s.verdict = if s.broken_in > 0 {
                RuleVerdict::Fail
            } else if s.passed_in > 0 {
                RuleVerdict::Pass
            } else if s.not_applicable_in > 0 {
                RuleVerdict::NotApplicable
            } else {
                RuleVerdict::NotJudged
            };
            s
        })
        .collect()
}

pub(crate) fn figure_summaries(trials: &[TrialReport]) -> Vec<FigureSummary> {
    let over = |f: Figure, fault_free_only: bool| {
        let values: Vec<f64> = trials
            .iter()
            .filter(|t| t.fault_free || !fault_free_only)
            .filter_map(|t| t.figures.as_ref()?.get(f))
            .collect();
        Median {
            trials: values.len(),
            median_ms: median(values),
        }
    };
    Figure::ALL
        .iter()
        .map(|&f| FigureSummary {
            key: f.key().into(),
            label: f.label().into(),
            fault_free: over(f, true),
            all: over(f, false),
        })
        .collect()
}

pub(crate) fn summary(trials: &[TrialReport]) -> Summary {
    let mut s = Summary {
        trials: trials.len(),
        ..Summary::default()
    };
    for t in trials {
        match t.result {
            TrialOutcome::Passed => s.passed += 1,
            TrialOutcome::Failed => s.failed += 1,
            TrialOutcome::Known => s.known += 1,
            TrialOutcome::Error => s.errors += 1,
            TrialOutcome::NotRun => s.not_run += 1,
        }
    }
    s
}

pub(crate) fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
