//! The rule checkers: one function per rule of the contract, each judging a
//! [`TrialRecord`] from what was observed, and naming its evidence.
//!
//! A verdict's `evidence` is worded without times, pids or counters so that it
//! is stable in snapshots; its `detail` carries the numbers for reports.

mod chain;
mod completion;
mod devices;
mod failure;
mod handover;
mod liveness;
mod memory;
mod ordering;
mod reach;
mod requests;

use serde::Serialize;

use crate::record::TrialRecord;

/// The contract version these checkers implement (docs/contract.md).
pub const CONTRACT_VERSION: &str = "1.2";

/// A rule's outcome in one trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Pass,
    Fail,
    /// The rule says nothing about this trial (e.g. DONE-1 when the transfer failed).
    NotApplicable,
}

/// A rule's verdict with its evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub rule: &'static str,
    pub status: Status,
    /// Why, in words stable from run to run.
    pub evidence: String,
    /// The same with numbers (times, counters) for people.
    pub detail: String,
}

impl Verdict {
    fn new(rule: &'static str, status: Status, evidence: impl Into<String>) -> Self {
        Verdict {
            rule,
            status,
            evidence: evidence.into(),
            detail: String::new(),
        }
    }

    pub(crate) fn pass(rule: &'static str, evidence: impl Into<String>) -> Self {
        Self::new(rule, Status::Pass, evidence)
    }

    pub(crate) fn fail(rule: &'static str, evidence: impl Into<String>) -> Self {
        Self::new(rule, Status::Fail, evidence)
    }

    pub(crate) fn na(rule: &'static str, why: impl Into<String>) -> Self {
        Self::new(rule, Status::NotApplicable, why)
    }

    pub(crate) fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// A time since the trial's start, for details: `+12.3 ms`.
pub(crate) fn ms(d: std::time::Duration) -> String {
    format!("+{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A rule of the contract.
pub struct Rule {
    pub id: &'static str,
    /// The MUST text, as in docs/contract.md.
    pub text: &'static str,
    pub check: fn(&TrialRecord) -> Verdict,
    /// The rule is about vhost devices: it applies to profiles with one only.
    pub device: bool,
}

/// Every rule of the contract, in its order.
pub const RULES: &[Rule] = &[
    Rule {
        id: "ORD-1",
        text: "When the first CPR fd reaches the target, the source VM is stopped: no guest memory write and no device I/O from the source from then on.",
        check: ordering::ord1,
        device: false,
    },
    Rule {
        id: "ORD-2",
        text: "When the first CPR fd reaches the target, every vhost device of the source is quiesced and released: no ring of the source still runs.",
        check: devices::ord2,
        device: true,
    },
    Rule {
        id: "OWN-1",
        text: "A device never has two owners: the target takes a device over only after the source released it; with no injected fault the target's take-over never fails as busy.",
        check: devices::own1,
        device: true,
    },
    Rule {
        id: "OWN-2",
        text: "After a failed or cancelled transfer the source owns again every device it owned before, and device I/O works.",
        check: devices::own2,
        device: true,
    },
    Rule {
        id: "FAIL-1",
        text: "After a failed or cancelled transfer, or a valid migrate command it refused, the source returns to (or stays in) the runstate it had when the migrate command came, within a bounded time.",
        check: failure::fail1,
        device: false,
    },
    Rule {
        id: "FAIL-2",
        text: "The source is resumed exactly once per failed transfer (no double resume, no resume of a VM that was paused).",
        check: failure::fail2,
        device: false,
    },
    Rule {
        id: "FAIL-3",
        text: "Source and target never both run guest code on the shared memory (no split brain), whatever fault or cancel happens.",
        check: failure::fail3,
        device: false,
    },
    Rule {
        id: "FAIL-4",
        text: "A failed transfer leaves the target not running: it exits, or stays stopped in a state the adapter can kill (its own migration failed); a target still waiting for the state breaks it.",
        check: failure::fail4,
        device: false,
    },
    Rule {
        id: "DONE-0",
        text: "A valid migrate command starts a handover: it is answered, accepted (refused only when the target was gone before it came), and survived; with no fault, or a harmless one, the transfer completes.",
        check: handover::done0,
        device: false,
    },
    Rule {
        id: "DONE-1",
        text: "A successful transfer ends with the target in the source's prior runstate, and the source in postmigrate (or, for a handover shape whose source exits, exited with status 0).",
        check: completion::done1,
        device: false,
    },
    Rule {
        id: "DONE-2",
        text: "The source reports completion only if the target has really loaded the state and is alive.",
        check: completion::done2,
        device: false,
    },
    Rule {
        id: "MEM-1",
        text: "Guest RAM is handed over in place: the target maps the same memfd inodes, and guest memory content carries on.",
        check: memory::mem1,
        device: false,
    },
    Rule {
        id: "ERR-1",
        text: "A malformed request is refused with an error; the VMM process survives and the VM state is unchanged.",
        check: requests::err1,
        device: false,
    },
    Rule {
        id: "ERR-2",
        text: "A stuck peer never wedges the source: a cancel at any step returns it to its prior runstate (where the VMM has a cancel), and every step ends or fails within a bound.",
        check: requests::err2,
        device: false,
    },
    Rule {
        id: "LIVE-1",
        text: "A VMM process the kit did not kill never dies by a signal; a source exits only after its migration ended (with status 0 after a completed transfer).",
        check: liveness::live1,
        device: false,
    },
    Rule {
        id: REACH_ID,
        text: "The trial reaches its fault point: the step it names happens, and the fault is injected there. A trial that never reached it tested nothing it names.",
        check: reach_alone,
        device: false,
    },
];

/// The ID of the reachability verdict, judged after every other rule (its
/// evidence names the rules that explain a point not reached).
pub const REACH_ID: &str = "REACH-1";

fn reach_alone(r: &TrialRecord) -> Verdict {
    reach::reach1(r, &[])
}

/// The rules of a profile with (`device`) or without a vhost device, in the contract's order.
pub fn rules_for(device: bool) -> impl Iterator<Item = &'static Rule> {
    RULES.iter().filter(move |r| device || !r.device)
}

/// CHAIN-1, judged only in trials that make several handovers in a row
/// (a case's `hops`): not in [`RULES`], so that the one-handover trials'
/// verdicts and tables stay as they are.
pub const CHAIN_RULE: Rule = Rule {
    id: chain::ID,
    text: chain::TEXT,
    check: chain::chain1,
    device: false,
};

/// Judges a trial by every rule of its profile (CHAIN-1 too for handovers
/// in a row); REACH-1 last, seeing the others' verdicts.
pub fn judge(record: &TrialRecord) -> Vec<Verdict> {
    let mut verdicts: Vec<Verdict> = rules_for(record.device.is_some())
        .map(|r| (r.check)(record))
        .collect();
    if let Some(chain) = &record.chain {
        // Every hop is judged by every rule: a rule the last hop kept but an
        // earlier hop broke is broken in the trial, at that hop.
        for (i, hop) in chain.earlier.iter().enumerate() {
            for broke in judge(hop).into_iter().filter(|v| v.status == Status::Fail) {
                if let Some(v) = verdicts
                    .iter_mut()
                    .find(|v| v.rule == broke.rule && v.status != Status::Fail)
                {
                    *v = Verdict {
                        evidence: format!("hop {}: {}", i + 1, broke.evidence),
                        ..broke
                    };
                }
            }
        }
        let at = verdicts
            .iter()
            .position(|v| v.rule == REACH_ID)
            .unwrap_or(verdicts.len());
        verdicts.insert(at, (CHAIN_RULE.check)(record));
    }
    if let Some(i) = verdicts.iter().position(|v| v.rule == REACH_ID) {
        verdicts[i] = reach::reach1(record, &verdicts[..i]);
    }
    verdicts
}

/// The rule with this ID.
pub fn rule(id: &str) -> Option<&'static Rule> {
    RULES
        .iter()
        .chain(std::iter::once(&CHAIN_RULE))
        .find(|r| r.id == id)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod device_tests;
