//! The report's data: what report.json holds (schema version 1,
//! docs/report.schema.json), and what report.md and junit.xml are written from.
//!
//! One shape serves both `cprkit certify` (`kind: certification`, one VMM, one
//! profile, no skip and no known violation allowed) and `cprkit run --format
//! json` (`kind: run`, any VMMs, known violations reconciled as the run's exit
//! status does).

use cprkit_harness::rules::Status;
use serde::Serialize;

use crate::figures::Figures;
use crate::host::Host;

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
    /// Runs only: trials whose repeats gave more than one outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intermittent: Option<usize>,
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
    /// The MUST text, as in docs/contract.md.
    pub text: String,
    pub verdict: RuleVerdict,
    /// Trials that judged it (passed or broke it): positive evidence.
    pub exercised_in: usize,
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
    /// Runs only: whether its repeats gave more than one outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intermittent: Option<bool>,
    /// Runs only: its repeats (`run --repeat K`; one without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeats: Option<RepeatsReport>,
}

/// A trial's repeats: how many, and each distinct outcome with its count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepeatsReport {
    pub count: usize,
    /// In the order first seen.
    pub outcomes: Vec<RepeatOutcomeReport>,
    /// The `intermittent` known-violation entries that account for the
    /// differences between the repeats (then the trial is not a failure).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub known: Vec<KnownRef>,
}

/// One distinct outcome among a trial's repeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepeatOutcomeReport {
    /// `ok`, `VIOLATES DONE-0`, `ERROR`, `not run` (with the statuses that
    /// tell it from another outcome of the same words: `ok [ORD-1 n/a]`).
    pub outcome: String,
    pub count: usize,
    /// The repeats (from 1) that gave it.
    pub repeats: Vec<usize>,
    pub broken_rules: Vec<String>,
    /// The failing verdicts of its first repeat.
    pub failures: Vec<FailureReport>,
    /// Its first repeat's error, or why it did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A failing verdict of one repeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureReport {
    pub rule: String,
    pub evidence: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
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
    /// Trials whose repeats differ in a way no `intermittent` entry accounts
    /// for (each makes the run fail).
    pub intermittent: Vec<IntermittentTrial>,
    /// Trials whose repeats differ as `intermittent` entries expect.
    pub intermittent_expected: Vec<IntermittentTrial>,
}

/// An intermittent trial: its outcomes, `19x ok, 1x VIOLATES FAIL-2`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IntermittentTrial {
    pub trial: String,
    pub outcomes: String,
    /// The `intermittent` entries that account for it (expected ones only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub known: Vec<KnownRef>,
}

/// The reconciliation that decides `cprkit run`'s exit status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reconcile {
    /// No unexpected violation, no unseen known one, no unexpected
    /// intermittent trial, no error.
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

impl Report {
    /// The report as report.json.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serializes") + "\n"
    }
}
