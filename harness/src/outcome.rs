//! A trial's outcome as it is snapshotted and compared: final runstates,
//! migration status, each rule's verdict, and the ordered steps observed;
//! with no pid, path or time in it, so it is the same from run to run.

use serde::Serialize;

use crate::adapter::Role;
use crate::device::{EntryKind, OwnerChange, owner_label};
use crate::record::{DeviceObs, MigrateReply, ProcEnd, TrialRecord};
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
    /// Empty (and left out) for an adapter whose steps are not snapshotted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<String>,
    /// The vhost device's story, in profiles with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceOutcome>,
    /// Handovers in a row (a case's `hops`): how each hop run ended, the
    /// last one being the rest of this snapshot; empty (left out) otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hops: Vec<String>,
    pub rules: Vec<RuleOutcome>,
}

/// How each hop of a chain ended: `hop 1: completed, target running`.
fn hop_ends(r: &TrialRecord) -> Vec<String> {
    let Some(c) = &r.chain else {
        return Vec::new();
    };
    c.earlier
        .iter()
        .chain(std::iter::once(r))
        .enumerate()
        .map(|(i, h)| {
            format!(
                "hop {} of {}: {}, target {}",
                i + 1,
                c.hops,
                migration_end(h),
                side_end(&h.target)
            )
        })
        .collect()
}

/// What each side did to the device (in the device's order, a repeat shown
/// once), and who owned it at the end. The interleaving of the two sides is
/// left out: it may vary where the sides are not ordered by the handover.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceOutcome {
    pub backend: String,
    pub policy: String,
    pub source: Vec<String>,
    pub target: Vec<String>,
    pub end: String,
}

impl DeviceOutcome {
    fn new(d: &DeviceObs) -> Self {
        let story = |role: Role| {
            let mut lines: Vec<String> = Vec::new();
            for e in d.ledger_of(role) {
                let line = match &e.kind {
                    // A source retrying its take-back while a dying target
                    // still owns the device: how often depends on timing.
                    // So is whether a shared device still had the target as
                    // an owner when the source took it back.
                    EntryKind::Owner {
                        change:
                            OwnerChange::RefusedBusy {
                                injected: false, ..
                            }
                            | OwnerChange::Overlap { .. },
                    } if role == Role::Source => continue,
                    EntryKind::Owner { change } => owner_label(change, false),
                    EntryKind::Fault { fault, message } => format!("fault {fault} at {message}"),
                    EntryKind::ProtocolError { .. } => "protocol error".to_string(),
                    _ => continue,
                };
                if lines.last() != Some(&line) {
                    lines.push(line);
                }
            }
            lines
        };
        let owner = |role: Role| match d.end.as_ref().and_then(|s| d.owns(s, role)) {
            Some(true) => "owns",
            Some(false) => "owns nothing",
            None => "not judged",
        };
        let end = match (&d.end, &d.error) {
            _ if !d.observable => "not observable".to_string(),
            (_, Some(_)) => "the device could not be read".to_string(),
            (None, None) => "not read".to_string(),
            (Some(_), None) => format!(
                "source {}, target {}{}",
                owner(Role::Source),
                owner(Role::Target),
                match d.io_at_end {
                    Some((role, true)) => format!("; {} I/O works", role.name()),
                    Some((role, false)) => format!("; no {} I/O", role.name()),
                    None => String::new(),
                }
            ),
        };
        DeviceOutcome {
            backend: d.backend.to_string(),
            policy: if d.observable {
                d.policy.name().to_string()
            } else {
                "its own".to_string()
            },
            source: story(Role::Source),
            target: story(Role::Target),
            end,
        }
    }
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

/// The source's final migration status. After the kit's cancel, `failed` and
/// `cancelled` are one end: the contract does not tell them apart, and a VMM
/// may reach either (QEMU shuts its return path down before it marks the
/// migration cancelling, so its migration thread can fail first).
fn migration_end(r: &TrialRecord) -> String {
    match r.status() {
        Some("failed" | "cancelled") if r.cancel.is_some() => {
            "not completed (the kit cancelled)".into()
        }
        Some(s) => s.to_string(),
        None => "none".into(),
    }
}

impl Outcome {
    pub fn new(r: &TrialRecord, verdicts: &[Verdict]) -> Self {
        let fault = match r.point {
            None => "none".to_string(),
            Some(p) if r.injected => p.to_string(),
            Some(p) => format!("{p} (point not reached)"),
        };
        let fault = r.later.iter().fold(fault, |acc, l| {
            let tail = if l.injected { "" } else { " (not reached)" };
            format!("{acc}, {}{tail}", l.point)
        });
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
            migration: migration_end(r),
            source: SideOutcome {
                prior: Some(r.prior.clone()),
                end: side_end(&r.source),
            },
            target: SideOutcome {
                prior: None,
                end: side_end(&r.target),
            },
            steps,
            device: r.device.as_ref().map(DeviceOutcome::new),
            hops: hop_ends(r),
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use rstest::rstest;

    use super::migration_end;
    use crate::adapter::MigrationInfo;
    use crate::plan::{GuestState, Step};
    use crate::record::{CancelObs, TrialRecord};

    fn ended(status: &str, kit_cancelled: bool) -> TrialRecord {
        let mut r = TrialRecord::new(
            "memory-running/cancel@main-stream".into(),
            "testvmm".into(),
            GuestState::Running,
            None,
            Duration::from_secs(1),
            PathBuf::from("/nonexistent"),
            false,
        );
        r.source.migration = Some(MigrationInfo {
            status: status.into(),
            error: None,
        });
        r.cancel = kit_cancelled.then(|| CancelObs {
            step: Step::MainStream,
            refused: None,
            ended: Some(status.into()),
        });
        r
    }

    #[rstest]
    #[case::cancelled_after_cancel("cancelled", true, "not completed (the kit cancelled)")]
    #[case::failed_after_cancel("failed", true, "not completed (the kit cancelled)")]
    #[case::completed_despite_cancel("completed", true, "completed")]
    #[case::failed_without_cancel("failed", false, "failed")]
    #[case::cancelled_by_someone_else("cancelled", false, "cancelled")]
    fn the_migration_end_after_a_cancel_is_one_end(
        #[case] status: &str,
        #[case] kit_cancelled: bool,
        #[case] shown: &str,
    ) {
        assert_eq!(migration_end(&ended(status, kit_cancelled)), shown);
    }
}
