//! A trial's outcome as it is snapshotted and compared: final runstates,
//! migration status, each rule's verdict, and the ordered steps observed;
//! with no pid, path or time in it, so it is the same from run to run.

use serde::Serialize;

use crate::record::{MigrateReply, ProcEnd, TrialRecord};
use crate::rules::{Status, Verdict};
use crate::timeline::{Actor, What, step_order};

/// The snapshot of one trial.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub trial: String,
    pub fault: String,
    pub migrate: String,
    pub migration: String,
    pub source: SideOutcome,
    pub target: SideOutcome,
    pub steps: Vec<String>,
    pub rules: Vec<RuleOutcome>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SideOutcome {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prior: Option<String>,
    pub end: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleOutcome {
    pub rule: String,
    pub verdict: Status,
    pub evidence: String,
}

/// Removes what changes from run to run: the trial directory's path.
pub fn redact(text: &str, r: &TrialRecord) -> String {
    let dir = r.dir.to_string_lossy();
    let mut s = text.replace(dir.as_ref(), "[dir]");
    if let Some(parent) = r.dir.parent() {
        s = s.replace(parent.to_string_lossy().as_ref(), "[run]");
    }
    s
}

fn side_end(p: &ProcEnd) -> String {
    match (p.exit, &p.runstate) {
        (Some(x), _) => x.to_string(),
        (None, Some(rs)) if p.killed_at_end => format!("{rs} (killed at the end)"),
        (None, Some(rs)) => rs.clone(),
        (None, None) if p.killed_at_end => "no monitor (killed at the end)".into(),
        (None, None) => "not started".into(),
    }
}

impl Outcome {
    pub fn new(r: &TrialRecord, verdicts: &[Verdict]) -> Self {
        let fault = match r.point {
            None => "none".to_string(),
            Some(p) if r.injected => p.to_string(),
            Some(p) => format!("{p} (point not reached)"),
        };
        let migrate = match &r.migrate {
            MigrateReply::Accepted => "accepted".to_string(),
            MigrateReply::Refused(d) => format!("refused: {}", redact(d, r)),
            MigrateReply::NoAnswer(_) => "no answer".to_string(),
            MigrateReply::NotSent => "not sent".to_string(),
        };
        let steps = step_order(&r.timeline)
            .into_iter()
            .filter(|e| !(e.actor == Actor::Kit && e.what == What::Action("final readings".into())))
            .map(|e| format!("{}: {}", e.actor.name(), redact(&e.what.label(), r)))
            .collect();
        Outcome {
            trial: r.name.clone(),
            fault,
            migrate,
            migration: r.status().unwrap_or("none").to_string(),
            source: SideOutcome {
                prior: Some(r.prior.clone()),
                end: side_end(&r.source),
            },
            target: SideOutcome {
                prior: None,
                end: side_end(&r.target),
            },
            steps,
            rules: verdicts
                .iter()
                .map(|v| RuleOutcome {
                    rule: v.rule.to_string(),
                    verdict: v.status,
                    evidence: redact(&v.evidence, r),
                })
                .collect(),
        }
    }

    /// The rules this trial broke.
    pub fn violations(&self) -> Vec<&str> {
        self.rules
            .iter()
            .filter(|r| r.verdict == Status::Fail)
            .map(|r| r.rule.as_str())
            .collect()
    }
}
