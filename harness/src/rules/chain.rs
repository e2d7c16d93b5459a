//! CHAIN-1: handovers in a row (a case's `hops`). Every hop asked for
//! happened (each earlier one completed), unless the chain ended at the hop
//! with the trial's fault; the guest counter never went back from one hop
//! to the next. Each hop's handover is judged by the other rules
//! ([`super::judge`] reports an earlier hop's break as that rule's); the
//! last hop run is the record itself (the device's owner at the end among
//! them: DONE-1, OWN-2).

use super::Verdict;
use crate::record::TrialRecord;

pub const ID: &str = "CHAIN-1";

/// The rule's text, as in docs/contract.md.
pub const TEXT: &str = "In handovers in a row, every hop hands the VM over to a new target (unless one fails where a fault was injected), each hop is judged by every rule, and the guest counter never goes back from one hop to the next.";

/// The guest counter readings of one hop, in order: at the cut-over, then
/// at the end on the side that then held the guest.
fn readings(r: &TrialRecord) -> Vec<u64> {
    let mut v = Vec::new();
    if let Some((a, b)) = r.cutover.as_ref().and_then(|c| c.counter) {
        v.extend([a, b]);
    }
    let end = if r.completed() { &r.target } else { &r.source };
    v.extend(end.counter);
    v
}

pub fn chain1(r: &TrialRecord) -> Verdict {
    let Some(c) = &r.chain else {
        return Verdict::na(ID, "one handover, no chain");
    };
    let run = c.earlier.len() as u32 + 1;
    for (i, h) in c.earlier.iter().enumerate() {
        if !h.completed() {
            return Verdict::fail(ID, format!("hop {} of {} did not complete", i + 1, c.hops));
        }
    }
    let faulted_here = c.point.is_some() && c.fault_hop == run;
    // The chain may end early only where the fault failed its hop.
    let ended_by_fault = faulted_here && !r.completed();
    if run < c.hops && !ended_by_fault {
        return Verdict::fail(
            ID,
            format!(
                "only {run} of {} handovers happened: hop {run} ended `{}`{}",
                c.hops,
                r.status().unwrap_or("none"),
                if c.point.is_some() && c.fault_hop > run {
                    format!(" before the fault's hop {}", c.fault_hop)
                } else {
                    String::new()
                }
            ),
        );
    }
    if run == c.hops && !r.completed() && !faulted_here {
        return Verdict::fail(
            ID,
            format!(
                "the last hop ({run} of {}) ended `{}` with no fault injected there",
                c.hops,
                r.status().unwrap_or("none")
            ),
        );
    }
    let seq: Vec<u64> = c
        .earlier
        .iter()
        .chain(std::iter::once(r))
        .flat_map(readings)
        .collect();
    if seq.is_empty() {
        return Verdict::fail(ID, "no guest counter was read at any hop");
    }
    if let Some(w) = seq.windows(2).find(|w| w[1] < w[0]) {
        return Verdict::fail(ID, "the guest counter went back between hops")
            .with_detail(format!("{} then {}", w[0], w[1]));
    }
    let how = if ended_by_fault {
        format!(
            "{run} of {} handovers, the chain ending at the fault's hop",
            c.hops
        )
    } else {
        format!("{run} handovers in a row")
    };
    Verdict::pass(
        ID,
        format!("{how}, each earlier hop completed; the guest counter never went back"),
    )
    .with_detail(format!("counter readings {seq:?}"))
}
