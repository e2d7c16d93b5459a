//! REACH-1: the trial reached its fault point. A trial whose fault was never
//! injected tested nothing its name says: that is a failure of the trial,
//! never a pass. When another rule of the same trial broke, the handover went
//! another way, and the evidence says which rule explains it.

use super::{Status, Verdict};
use crate::record::TrialRecord;

pub fn reach1(r: &TrialRecord, others: &[Verdict]) -> Verdict {
    const ID: &str = "REACH-1";
    let Some(p) = r.point else {
        return Verdict::na(ID, "a fault-free handover has no fault point");
    };
    if r.injected {
        return Verdict::pass(ID, format!("{p} was reached and injected"));
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
