//! MEM-1: guest RAM is handed over in place and its content carries on.

use super::Verdict;
use crate::adapter::Channels;
use crate::record::TrialRecord;

/// What the target was seen doing with the memfd at target-init: with one
/// channel the kit looks when the target answers the fds' message, before it
/// maps them (it holds them); otherwise once it has loaded the CPR state.
fn seen(r: &TrialRecord) -> (&'static str, &'static str) {
    match r.shape.channels {
        Channels::One => ("hold", "holds"),
        Channels::CprAndMain => ("map", "maps"),
    }
}

pub fn mem1(r: &TrialRecord) -> Verdict {
    const ID: &str = "MEM-1";
    let (Some(init), Some(inode)) = (&r.target_init, r.source_ram_inode) else {
        return Verdict::na(ID, "the target never loaded the CPR state");
    };
    let Some(mapped) = &init.mapped_inodes else {
        return Verdict::na(ID, "the target's mappings could not be read at target-init");
    };
    let (map, maps) = seen(r);
    if !mapped.contains(&inode) {
        return Verdict::fail(
            ID,
            format!(
                "the target does not {map} the source's RAM memfd: RAM was not handed over in place"
            ),
        )
        .with_detail(format!(
            "source RAM inode {inode}, target {maps} {mapped:?}"
        ));
    }
    if super::failure::fail3(r).status == super::Status::Fail {
        // Two writers on one RAM: its content says nothing about the handover.
        return Verdict::pass(
            ID,
            format!("the target {maps} the source's RAM memfd (content not judged: both VMs ran)"),
        );
    }
    let at_cut = r.cutover.as_ref().and_then(|c| c.counter).map(|(_, b)| b);
    let side = if r.completed() { &r.target } else { &r.source };
    let who = if r.completed() { "target" } else { "source" };
    if (r.completed() || r.failed()) && side.exit.is_none() {
        if let (Some(cut), Some(end)) = (at_cut, side.counter)
            && end < cut
        {
            return Verdict::fail(ID, format!("the guest counter went back on the {who}"))
                .with_detail(format!("{cut} at the cut-over, {end} at the end"));
        }
        if let Some(Err(e)) = &side.ring {
            return Verdict::fail(ID, format!("a guest write was lost on the {who}"))
                .with_detail(e.clone());
        }
        if side.runstate.as_deref() == Some("running") && side.counter_moving == Some(false) {
            return Verdict::fail(
                ID,
                format!("the {who} runs but its guest counter does not move"),
            );
        }
        if r.completed()
            && r.prior != "running"
            && at_cut.is_some()
            && side.counter.is_some()
            && side.counter != at_cut
        {
            return Verdict::fail(
                ID,
                "the guest was paused, yet its memory changed across the handover",
            )
            .with_detail(format!(
                "{at_cut:?} at the cut-over, {:?} at the end",
                side.counter
            ));
        }
    }
    if side.exit.is_some() {
        return Verdict::pass(ID, format!("the target {maps} the source's RAM memfd"));
    }
    Verdict::pass(
        ID,
        format!("the target {maps} the source's RAM memfd; guest memory carries on on the {who}"),
    )
}
