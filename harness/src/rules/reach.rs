//! REACH-1: the trial reached its fault point. A trial whose fault was never
//! injected tested nothing its name says: that is a failure of the trial,
//! never a pass. When another rule of the same trial broke, the handover went
//! another way, and the evidence says which rule explains it.
//!
//! In a schedule of several faults, the first must be reached; a later one
//! must be too, unless a fault injected before it ended the handover (one a
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
    if r.injected {
        return later(r, p);
    }
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

/// The first fault was reached: each later one was reached too, or was
/// pre-empted by a fault injected before it that ends the handover.
fn later(r: &TrialRecord, first: crate::plan::FaultPoint) -> Verdict {
    const ID: &str = "REACH-1";
    if r.later.is_empty() {
        return Verdict::pass(ID, format!("{first} was reached and injected"));
    }
    let ends =
        |p: crate::plan::FaultPoint| expected_end(Some((p.fault, p.step))) != Expected::Completes;
    let mut ended = ends(first);
    let mut reached = vec![first.to_string()];
    let mut preempted = Vec::new();
    for l in &r.later {
        if l.injected {
            reached.push(l.point.to_string());
            ended |= ends(l.point);
        } else if ended {
            preempted.push(l.point.to_string());
        } else {
            return Verdict::fail(
                ID,
                format!(
                    "the fault point {} was never reached though nothing injected before it ended the handover: the trial tested nothing it names",
                    l.point
                ),
            );
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
