//! DONE-1 and DONE-2: what a completed transfer must leave behind.

use super::{Verdict, ms};
use crate::record::TrialRecord;
use crate::timeline::Actor;

pub fn done1(r: &TrialRecord) -> Verdict {
    const ID: &str = "DONE-1";
    if !r.completed() {
        return Verdict::na(ID, "the transfer did not complete");
    }
    let target = r.target.runstate.as_deref().unwrap_or("unknown");
    let source = r.source.runstate.as_deref().unwrap_or("unknown");
    let mut wrong = Vec::new();
    if target != r.prior {
        wrong.push(format!("target `{target}`, the source was `{}`", r.prior));
    }
    if source != "postmigrate" && !r.killed_by_fault(crate::adapter::Role::Source) {
        wrong.push(format!("source `{source}`, not `postmigrate`"));
    }
    wrong.extend(super::devices::done1_device(r));
    if wrong.is_empty() && r.device.as_ref().is_some_and(|d| d.observable) {
        Verdict::pass(
            ID,
            format!("target `{target}` owning the device, source `postmigrate` owning none"),
        )
    } else if wrong.is_empty() {
        Verdict::pass(ID, format!("target `{target}`, source `postmigrate`"))
    } else {
        Verdict::fail(ID, wrong.join("; "))
    }
}

pub fn done2(r: &TrialRecord) -> Verdict {
    const ID: &str = "DONE-2";
    if !r.completed() {
        return Verdict::na(ID, "the source did not report completion");
    }
    let done_at = r
        .source_status_at("completed")
        .map(ms)
        .unwrap_or_else(|| "?".into());
    // An exit before the final readings (the kit stops every VMM after them).
    if let (Some(x), Some((at, _))) = (r.target.exit, r.exit_at(Actor::Target)) {
        return Verdict::fail(
            ID,
            format!("the source reported completion, but the target {x}"),
        )
        .with_detail(format!(
            "target ended at {}, completion reported at {done_at}",
            ms(at)
        ));
    }
    match r.target.runstate.as_deref() {
        Some("running" | "paused") => {
            Verdict::pass(ID, "the target had loaded the state and was alive")
        }
        Some(other) => Verdict::fail(
            ID,
            format!(
                "the source reported completion, but the target never loaded the state (`{other}`)"
            ),
        ),
        None => Verdict::fail(
            ID,
            "the source reported completion, but the target never answered",
        ),
    }
}
