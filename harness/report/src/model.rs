//! The report's data: what report.json holds (schema version 1,
//! docs/report.schema.json), and what report.md and junit.xml are written from.
//!
//! One shape serves both `cprkit certify` (`kind: certification`, one VMM, one
//! profile, no skip and no known violation allowed) and `cprkit run --format
//! json` (`kind: run`, any VMMs, known violations reconciled as the run's exit
//! status does).

use std::collections::BTreeMap;

use cprkit_cases::Profile;
use cprkit_cases::known::{KnownViolations, reconcile};
use cprkit_cases::runner::{TrialResult, Verdicts};
use cprkit_harness::outcome::redact;
use cprkit_harness::rules::{self, Status};
use serde::Serialize;

use crate::figures::{Figure, Figures, median};
use crate::host::Host;
use cprkit_cases::known::KnownByVmm as Known;

/// The version of report.json's shape; bumped on any change that is not an
/// added optional field.
pub const SCHEMA_VERSION: &str = "1";

/// What made the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `cprkit certify`.
    Certification,
    /// `cprkit run --format json|junit`.
    Run,
}

/// The report's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportVerdict {
    /// Certification: every required trial ran and broke no rule.
    Certified,
    /// Certification: some trial did not run, or broke a rule.
    NotCertified,
    /// Run: every outcome as expected (exit status 0).
    Passed,
    /// Run: some outcome not as expected (exit status 1).
    Failed,
}

impl ReportVerdict {
    pub fn is_ok(self) -> bool {
        matches!(self, ReportVerdict::Certified | ReportVerdict::Passed)
    }

    /// As report.json spells it.
    pub fn key(self) -> &'static str {
        match self {
            ReportVerdict::Certified => "certified",
            ReportVerdict::NotCertified => "not-certified",
            ReportVerdict::Passed => "passed",
            ReportVerdict::Failed => "failed",
        }
    }

    /// For people.
    pub fn name(self) -> &'static str {
        match self {
            ReportVerdict::Certified => "certified",
            ReportVerdict::NotCertified => "not certified",
            ReportVerdict::Passed => "passed",
            ReportVerdict::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

/// A VMM of the report, with its version as its adapter tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vmm {
    pub name: String,
    pub version: String,
}

/// Trial counts. `known`: trials whose every violation is a known one (runs
/// only; a certification knows no known violation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub trials: usize,
    pub passed: usize,
    pub failed: usize,
    pub known: usize,
    pub errors: usize,
    pub not_run: usize,
}

/// A rule over the whole report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleVerdict {
    /// Passed in at least one trial, broken in none.
    Pass,
    /// Broken in at least one trial.
    Fail,
    /// Applied to no trial that ran.
    NotApplicable,
    /// No trial was judged at all.
    NotJudged,
}

impl RuleVerdict {
    pub fn name(self) -> &'static str {
        match self {
            RuleVerdict::Pass => "pass",
            RuleVerdict::Fail => "FAIL",
            RuleVerdict::NotApplicable => "not applicable",
            RuleVerdict::NotJudged => "not judged",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleSummary {
    pub id: String,
    /// The MUST text, as in CONTRACT.md.
    pub text: String,
    pub verdict: RuleVerdict,
    pub passed_in: usize,
    pub broken_in: usize,
    pub not_applicable_in: usize,
    /// The trials that broke it, in report order.
    pub broken_trials: Vec<String>,
}

/// A median over some trials; `median_ms` absent when no trial has the figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Median {
    pub trials: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FigureSummary {
    /// The key of the figure in each trial's `figures`.
    pub key: String,
    pub label: String,
    /// Over the fault-free trials that have it.
    pub fault_free: Median,
    /// Over every judged trial that has it.
    pub all: Median,
}

/// What became of a trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrialOutcome {
    /// Judged, no rule broken.
    Passed,
    /// Judged, a rule broken (and, in a run, not as a known violation).
    Failed,
    /// Run only: every rule it broke, it broke as a known violation says.
    Known,
    /// The kit or the host failed, not the VMM.
    Error,
    /// Not run on this host, with the reason.
    NotRun,
}

impl TrialOutcome {
    pub fn name(self) -> &'static str {
        match self {
            TrialOutcome::Passed => "passed",
            TrialOutcome::Failed => "FAILED",
            TrialOutcome::Known => "known violation",
            TrialOutcome::Error => "ERROR",
            TrialOutcome::NotRun => "NOT RUN",
        }
    }
}

/// A known-violation entry that expects a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KnownRef {
    pub reason: String,
    pub upstream: String,
    pub file: String,
    pub line: usize,
}

/// One rule's verdict in one trial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerdictReport {
    pub rule: String,
    pub status: Status,
    /// Why, in words stable from run to run (the trial directory redacted).
    pub evidence: String,
    /// The same with numbers.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Runs only: the known violation that expects this failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known: Option<KnownRef>,
}

/// Where a bundle keeps a trial's timeline, relative to the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineFiles {
    pub text: String,
    pub svg: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrialReport {
    pub name: String,
    pub vmm: String,
    pub case: String,
    pub point: String,
    pub fault_free: bool,
    pub result: TrialOutcome,
    /// Why it did not run (errors and not-run trials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub elapsed_ms: f64,
    pub broken_rules: Vec<String>,
    pub verdicts: Vec<VerdictReport>,
    /// Judged trials only; a figure the trial does not have is absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub figures: Option<Figures>,
    /// Bundles only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<TimelineFiles>,
}

impl TrialReport {
    /// The verdicts that failed (and, in a run, that no known violation expects).
    pub fn unexpected(&self) -> impl Iterator<Item = &VerdictReport> {
        self.verdicts
            .iter()
            .filter(|v| v.status == Status::Fail && v.known.is_none())
    }

    pub fn known(&self) -> impl Iterator<Item = &VerdictReport> {
        self.verdicts
            .iter()
            .filter(|v| v.status == Status::Fail && v.known.is_some())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeakCheck {
    pub clean: bool,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconciledViolation {
    pub trial: String,
    pub rule: String,
    pub evidence: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnseenEntry {
    pub rule: String,
    pub trials: Vec<String>,
    pub evidence: String,
    pub line: usize,
    pub reason: String,
    pub upstream: String,
}

/// One VMM's violations sorted against its known-violations file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmmReconcile {
    pub vmm: String,
    /// The known-violations file (it may not exist: then nothing is known).
    pub file: String,
    pub expected: Vec<ReconciledViolation>,
    pub unexpected: Vec<ReconciledViolation>,
    /// Entries that cover a trial of the run that no trial reproduced.
    pub unseen: Vec<UnseenEntry>,
}

/// The reconciliation that decides `cprkit run`'s exit status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reconcile {
    /// No unexpected violation, no unseen known one, no error.
    pub ok: bool,
    pub vmms: Vec<VmmReconcile>,
}

/// A whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub schema_version: String,
    pub kind: Kind,
    pub tool: Tool,
    pub contract_version: String,
    pub host: Host,
    pub vmms: Vec<Vmm>,
    /// Certifications: the profile certified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    pub verdict: ReportVerdict,
    /// Why the verdict is not certified / passed; empty when it is.
    pub reasons: Vec<String>,
    pub summary: Summary,
    pub rules: Vec<RuleSummary>,
    pub figures: Vec<FigureSummary>,
    pub trials: Vec<TrialReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leak_check: Option<LeakCheck>,
    /// Runs only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<Reconcile>,
}

fn tool() -> Tool {
    Tool {
        name: "cprkit".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    }
}

fn trial_report(r: &TrialResult, known: Option<&KnownViolations>) -> TrialReport {
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
    TrialReport {
        name,
        vmm: r.id.vmm.clone(),
        case: r.id.case.clone(),
        point: cprkit_cases::point_name(r.id.point),
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
    }
}

fn rule_summaries(trials: &[TrialReport]) -> Vec<RuleSummary> {
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

fn figure_summaries(trials: &[TrialReport]) -> Vec<FigureSummary> {
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

fn summary(trials: &[TrialReport]) -> Summary {
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

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl Report {
    /// The certification of `vmm` for `profile` from the results of every
    /// trial of the profile's cases. No skip: a trial that did not run fails
    /// the certification, and so does any broken rule (known violations excuse
    /// nothing here), and so does a profile without a trial.
    pub fn certification(
        vmm: Vmm,
        profile: Profile,
        host: Host,
        results: &[TrialResult],
        leaks: Option<LeakCheck>,
    ) -> Report {
        let trials: Vec<TrialReport> = results.iter().map(|r| trial_report(r, None)).collect();
        let rules = rule_summaries(&trials);
        let mut reasons = Vec::new();
        if trials.is_empty() {
            reasons.push(format!(
                "no case has profile `{profile}`: there is nothing to certify (a profile is certified only by trials that ran)"
            ));
        }
        for t in &trials {
            match t.result {
                TrialOutcome::Error => reasons.push(format!(
                    "{} could not run: {}",
                    t.name,
                    t.reason.as_deref().unwrap_or("")
                )),
                TrialOutcome::NotRun => reasons.push(format!(
                    "{} not run: {} (certification allows no skip)",
                    t.name,
                    t.reason.as_deref().unwrap_or("")
                )),
                _ => {}
            }
        }
        for r in rules.iter().filter(|r| r.verdict == RuleVerdict::Fail) {
            reasons.push(format!(
                "{} broken in {}",
                r.id,
                plural(r.broken_in, "trial", "trials")
            ));
        }
        if let Some(l) = leaks.as_ref().filter(|l| !l.clean) {
            reasons.push(format!("the run left something behind: {}", l.text));
        }
        let verdict = if reasons.is_empty() {
            ReportVerdict::Certified
        } else {
            ReportVerdict::NotCertified
        };
        Report {
            schema_version: SCHEMA_VERSION.into(),
            kind: Kind::Certification,
            tool: tool(),
            contract_version: rules::CONTRACT_VERSION.into(),
            host,
            vmms: vec![vmm],
            profile: Some(profile.to_string()),
            verdict,
            reasons,
            summary: summary(&trials),
            figures: figure_summaries(&trials),
            rules,
            trials,
            leak_check: leaks,
            reconcile: None,
        }
    }

    /// The report of a `cprkit run`: violations reconciled against `known`,
    /// the verdict as the run's exit status decides it.
    pub fn run(
        vmms: Vec<Vmm>,
        host: Host,
        results: &[TrialResult],
        known: &Known,
        leaks: Option<LeakCheck>,
    ) -> Report {
        let trials: Vec<TrialReport> = results
            .iter()
            .map(|r| trial_report(r, known.get(&r.id.vmm)))
            .collect();
        let reconcile = reconcile_run(results, known);
        let summary = summary(&trials);
        let mut reasons = Vec::new();
        let unexpected: usize = reconcile.vmms.iter().map(|v| v.unexpected.len()).sum();
        let unseen: usize = reconcile.vmms.iter().map(|v| v.unseen.len()).sum();
        if unexpected > 0 {
            reasons.push(plural(
                unexpected,
                "unexpected violation",
                "unexpected violations",
            ));
        }
        if unseen > 0 {
            reasons.push(plural(
                unseen,
                "known violation not seen",
                "known violations not seen",
            ));
        }
        if summary.errors > 0 {
            reasons.push(plural(
                summary.errors,
                "trial could not run (error)",
                "trials could not run (errors)",
            ));
        }
        if let Some(l) = leaks.as_ref().filter(|l| !l.clean) {
            reasons.push(format!("the run left something behind: {}", l.text));
        }
        let verdict = if reasons.is_empty() {
            ReportVerdict::Passed
        } else {
            ReportVerdict::Failed
        };
        Report {
            schema_version: SCHEMA_VERSION.into(),
            kind: Kind::Run,
            tool: tool(),
            contract_version: rules::CONTRACT_VERSION.into(),
            host,
            vmms,
            profile: None,
            verdict,
            reasons,
            summary,
            rules: rule_summaries(&trials),
            figures: figure_summaries(&trials),
            trials,
            leak_check: leaks,
            reconcile: Some(reconcile),
        }
    }

    /// The report as report.json.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serializes") + "\n"
    }
}

/// Sorts a run's violations against the known ones, VMM by VMM, as `cprkit
/// run`'s exit status does.
fn reconcile_run(results: &[TrialResult], known: &Known) -> Reconcile {
    let mut per_vmm: BTreeMap<&str, Vec<(String, Vec<rules::Verdict>)>> = BTreeMap::new();
    let mut errors = 0;
    for r in results {
        match &r.verdicts {
            Verdicts::Judged { verdicts, .. } => per_vmm
                .entry(&r.id.vmm)
                .or_default()
                .push((r.name(), verdicts.clone())),
            Verdicts::Error(_) => errors += 1,
            Verdicts::NotRun(_) => {}
        }
    }
    let empty = KnownViolations::default();
    let redacted = |trial: &str, evidence: &str| {
        results
            .iter()
            .find(|r| r.name() == trial)
            .and_then(|r| match &r.verdicts {
                Verdicts::Judged { record, .. } => Some(redact(evidence, record)),
                _ => None,
            })
            .unwrap_or_else(|| evidence.to_string())
    };
    let mut vmms = Vec::new();
    let mut ok = errors == 0;
    for (vmm, run) in &per_vmm {
        let k = known.get(vmm).unwrap_or(&empty);
        let rec = reconcile(k, run);
        ok &= rec.is_clean();
        vmms.push(VmmReconcile {
            vmm: vmm.to_string(),
            file: k.path.display().to_string(),
            expected: rec
                .expected
                .iter()
                .map(|(t, v, e)| ReconciledViolation {
                    trial: t.clone(),
                    rule: v.rule.into(),
                    evidence: redacted(t, &v.evidence),
                    reason: Some(e.reason.clone()),
                    upstream: Some(e.upstream.clone()),
                })
                .collect(),
            unexpected: rec
                .unexpected
                .iter()
                .map(|(t, v)| ReconciledViolation {
                    trial: t.clone(),
                    rule: v.rule.into(),
                    evidence: redacted(t, &v.evidence),
                    reason: None,
                    upstream: None,
                })
                .collect(),
            unseen: rec
                .unseen
                .iter()
                .map(|e| UnseenEntry {
                    rule: e.rule.clone(),
                    trials: e.trials.clone(),
                    evidence: e.evidence.clone(),
                    line: e.line,
                    reason: e.reason.clone(),
                    upstream: e.upstream.clone(),
                })
                .collect(),
        });
    }
    Reconcile { ok, vmms }
}
