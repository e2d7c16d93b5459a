//! REACH-1: the trial reached its fault point. A trial whose fault was never
//! injected tested nothing its name says: that is a failure of the trial,
//! never a pass. When another rule of the same trial broke, the handover went
//! another way, and the evidence says which rule explains it.
//!
//! In a schedule of several faults, one at least must be reached; each
//! other must be too, unless an injected fault ended the handover (one a
//! correct VMM does not complete through): it is then pre-empted, which is
//! what should happen to it.

use super::{Status, Verdict};
use crate::faults::{Expected, expected_end};
use crate::record::TrialRecord;

pub fn reach1(r: &TrialRecord, others: &[Verdict]) -> Verdict {
    const ID: &str = "REACH-1";
    let Some(p) = r.point else {
        return Verdict::na(ID, "a fault-free handover has no fault point");
    };
    if r.injected || !r.injected_points().is_empty() {
        return later(r, p, others);
    }
    not_reached(p, others)
}

/// The failure of a point never reached, naming the rules broken in the
/// trial as the likely cause (the handover went another way).
fn not_reached(p: crate::plan::FaultPoint, others: &[Verdict]) -> Verdict {
    const ID: &str = "REACH-1";
    let broken: Vec<&str> = others
        .iter()
        .filter(|v| v.status == Status::Fail)
        .map(|v| v.rule)
        .collect();
    let cause = if broken.is_empty() {
        String::new()
    } else {
        format!(
            " (explained by {}, broken in this trial)",
            broken.join(", ")
        )
    };
    Verdict::fail(
        ID,
        format!("the fault point {p} was never reached: the trial tested nothing it names{cause}"),
    )
}

/// Some fault of the schedule was reached: each other one was reached too,
/// or was pre-empted by an injected fault that ends the handover. (The
/// order of the steps is not the order of every VMM: a source that sends its
/// CPR state before it releases its device is killed at cpr-save before its
/// release comes.)
fn later(r: &TrialRecord, first: crate::plan::FaultPoint, others: &[Verdict]) -> Verdict {
    const ID: &str = "REACH-1";
    if r.later.is_empty() {
        return Verdict::pass(ID, format!("{first} was reached and injected"));
    }
    let ends =
        |p: &crate::plan::FaultPoint| expected_end(Some((p.fault, p.step))) != Expected::Completes;
    let injected = r.injected_points();
    let ended = injected.iter().any(ends);
    let all =
        std::iter::once((first, r.injected)).chain(r.later.iter().map(|l| (l.point, l.injected)));
    let mut reached = Vec::new();
    let mut preempted = Vec::new();
    for (p, was) in all {
        if was {
            reached.push(p.to_string());
        } else if ended {
            preempted.push(p.to_string());
        } else {
            // No injected fault ended the handover: this point should have come.
            return not_reached(p, others);
        }
    }
    let mut why = format!("{} reached and injected", reached.join(", "));
    if !preempted.is_empty() {
        why.push_str(&format!(
            "; {} pre-empted (the handover had ended)",
            preempted.join(", ")
        ));
    }
    Verdict::pass(ID, why)
}
