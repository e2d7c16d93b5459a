//! One side of a comparison: the trials of one VMM's run, read from the trial
//! results of a run made here or from a saved report (the output of `cprkit
//! run --format json`, or a certification bundle's report.json), kept under
//! `--case` and checked to name each trial once.

use std::collections::BTreeSet;

use cprkit_harness::rules::Status;
use cprkit_suite::runner::TrialResult;
use serde::{Deserialize, Serialize};

use crate::model::{SCHEMA_VERSION, TrialOutcome, TrialReport};
use crate::summaries::trial_report;

/// Where a side's trials come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// A `--vmm` value: the kit ran its trials for the comparison.
    Vmm,
    /// A saved report.
    File,
}

/// One rule's verdict in one trial, raw: known violations not excused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawVerdict {
    pub rule: String,
    pub status: Status,
    pub evidence: String,
    pub detail: String,
}

/// What became of a trial on one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran {
    /// Judged: one verdict per rule the kit that ran it judges.
    Judged(Vec<RawVerdict>),
    /// The kit or the host failed, with the message.
    Error(String),
    /// Not run, with the reason.
    NotRun(String),
}

/// A trial of one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trial {
    /// The full name, `VMM::CASE/POINT`.
    pub name: String,
    pub case: String,
    pub point: String,
    pub ran: Ran,
}

impl Trial {
    /// What matches it with the other side's trial: `CASE/POINT`, the name
    /// after `VMM::`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.case, self.point)
    }
}

/// One side: the trials of one VMM, each `CASE/POINT` once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    /// The argument as given: a `--vmm` value or a file's path.
    pub given: String,
    pub source: Source,
    /// The VMM's name in its trials' names (the report's first VMM when
    /// it has no trial).
    pub vmm: String,
    pub trials: Vec<Trial>,
}

impl Side {
    /// The side of a run made here: `results` are the trials of one VMM.
    pub fn from_results(given: &str, results: &[TrialResult]) -> Result<Side, String> {
        let reports: Vec<TrialReport> = results.iter().map(|r| trial_report(r, None)).collect();
        let trials = reports.iter().map(trial_of).collect();
        let vmm = results.first().map_or(given, |r| r.id.vmm.as_str());
        Side::new(given, Source::Vmm, vmm, trials)
    }

    /// The side of a saved report, its trials kept under `case` (the glob of
    /// `--case`, matched against the case name or the full trial name, as
    /// `cprkit run` does). `text` must be a report.json-shaped document of
    /// schema version 1, of kind `run` or `certification`.
    pub fn from_json(given: &str, text: &str, case: Option<&str>) -> Result<Side, String> {
        let what = "not a saved `cprkit run --format json` result";
        let report: ReportIn = serde_json::from_str(text).map_err(|e| format!("{what}: {e}"))?;
        if report.schema_version != SCHEMA_VERSION {
            return Err(format!(
                "{what}: schema version {:?}, this cprkit reads version {SCHEMA_VERSION}",
                report.schema_version
            ));
        }
        if report.kind != "run" && report.kind != "certification" {
            return Err(format!(
                "{what}: kind {:?} (expected run or certification)",
                report.kind
            ));
        }
        let mut trials = Vec::new();
        for t in report.trials {
            let ran = match t.result.as_str() {
                "passed" | "failed" | "known" => Ran::Judged(
                    t.verdicts
                        .into_iter()
                        .map(|v| RawVerdict {
                            rule: v.rule,
                            status: v.status.into(),
                            evidence: v.evidence,
                            detail: v.detail,
                        })
                        .collect(),
                ),
                "error" => Ran::Error(t.reason.unwrap_or_default()),
                "not-run" => Ran::NotRun(t.reason.unwrap_or_default()),
                other => {
                    return Err(format!(
                        "{what}: trial {}: unknown result {other:?}",
                        t.name
                    ));
                }
            };
            trials.push((
                t.vmm,
                Trial {
                    name: t.name,
                    case: t.case,
                    point: t.point,
                    ran,
                },
            ));
        }
        trials.retain(|(_, t)| {
            case.is_none_or(|g| {
                cprkit_suite::glob_match(g, &t.case) || cprkit_suite::glob_match(g, &t.name)
            })
        });
        let vmms: BTreeSet<&str> = trials.iter().map(|(v, _)| v.as_str()).collect();
        if vmms.len() > 1 {
            let names: Vec<&str> = vmms.into_iter().collect();
            return Err(format!(
                "holds the trials of {} VMMs ({}): compare takes one VMM a side; keep one with --case '{}::*'",
                names.len(),
                names.join(", "),
                names[0]
            ));
        }
        let vmm = match vmms.first() {
            Some(v) => v.to_string(),
            None => report
                .vmms
                .first()
                .map(|v| v.name.clone())
                .unwrap_or_default(),
        };
        Side::new(
            given,
            Source::File,
            &vmm,
            trials.into_iter().map(|(_, t)| t).collect(),
        )
    }

    /// A side whose trials are each named once.
    pub fn new(given: &str, source: Source, vmm: &str, trials: Vec<Trial>) -> Result<Side, String> {
        let mut seen = BTreeSet::new();
        for t in &trials {
            if !seen.insert(t.key()) {
                return Err(format!("holds the trial {} twice", t.key()));
            }
        }
        Ok(Side {
            given: given.to_string(),
            source,
            vmm: vmm.to_string(),
            trials,
        })
    }
}

/// A trial of a report, as compare sees it.
fn trial_of(t: &TrialReport) -> Trial {
    let ran = match t.result {
        TrialOutcome::Passed | TrialOutcome::Failed | TrialOutcome::Known => Ran::Judged(
            t.verdicts
                .iter()
                .map(|v| RawVerdict {
                    rule: v.rule.clone(),
                    status: v.status,
                    evidence: v.evidence.clone(),
                    detail: v.detail.clone(),
                })
                .collect(),
        ),
        TrialOutcome::Error => Ran::Error(t.reason.clone().unwrap_or_default()),
        TrialOutcome::NotRun => Ran::NotRun(t.reason.clone().unwrap_or_default()),
    };
    Trial {
        name: t.name.clone(),
        case: t.case.clone(),
        point: t.point.clone(),
        ran,
    }
}

// What compare reads of a saved report; other fields are ignored, so a
// report with fields added later (as schema version 1 allows) still reads.

#[derive(Deserialize)]
struct ReportIn {
    schema_version: String,
    kind: String,
    #[serde(default)]
    vmms: Vec<VmmIn>,
    trials: Vec<TrialIn>,
}

#[derive(Deserialize)]
struct VmmIn {
    name: String,
}

#[derive(Deserialize)]
struct TrialIn {
    name: String,
    vmm: String,
    case: String,
    point: String,
    result: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    verdicts: Vec<VerdictIn>,
}

#[derive(Deserialize)]
struct VerdictIn {
    rule: String,
    status: StatusIn,
    evidence: String,
    #[serde(default)]
    detail: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum StatusIn {
    Pass,
    Fail,
    NotApplicable,
}

impl From<StatusIn> for Status {
    fn from(s: StatusIn) -> Status {
        match s {
            StatusIn::Pass => Status::Pass,
            StatusIn::Fail => Status::Fail,
            StatusIn::NotApplicable => Status::NotApplicable,
        }
    }
}
