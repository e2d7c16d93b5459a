//! DONE-1 and DONE-2: what a completed transfer must leave behind.

use super::{Verdict, ms};
use crate::adapter::SourceEnd;
use crate::procinfo::ExitInfo;
use crate::record::TrialRecord;
use crate::timeline::Actor;

/// How the source ended, against how its handover's shape says a finished
/// source ends (`postmigrate`, or an exit with status 0); `Err` says how not.
fn source_finished(r: &TrialRecord) -> Result<&'static str, String> {
    if r.killed_by_fault(crate::adapter::Role::Source) {
        return Ok("killed by the kit");
    }
    match r.shape.source_end {
        SourceEnd::Postmigrate => {
            let source = r.source.runstate.as_deref().unwrap_or("unknown");
            if source == "postmigrate" {
                Ok("`postmigrate`")
            } else {
                Err(format!("source `{source}`, not `postmigrate`"))
            }
        }
        SourceEnd::Exit0 => match r.source.exit {
            Some(ExitInfo::Code(0)) => Ok("exited with status 0"),
            Some(x) => Err(format!("source {x}, not exited with status 0")),
            None => Err(format!(
                "source still alive (`{}`) after completion, not exited with status 0",
                r.source.runstate.as_deref().unwrap_or("unknown"),
            )),
        },
    }
}

pub fn done1(r: &TrialRecord) -> Verdict {
    const ID: &str = "DONE-1";
    if !r.completed() {
        return Verdict::na(ID, "the transfer did not complete");
    }
    let target = r.target.runstate.as_deref().unwrap_or("unknown");
    let mut wrong = Vec::new();
    if target != r.prior {
        wrong.push(format!("target `{target}`, the source was `{}`", r.prior));
    }
    // A source killed by the fault reads as `postmigrate` would (as before shapes).
    let finished = match source_finished(r) {
        Ok(_) if r.shape.source_end == SourceEnd::Postmigrate => "`postmigrate`",
        Ok(how) => how,
        Err(why) => {
            wrong.push(why);
            ""
        }
    };
    wrong.extend(super::devices::done1_device(r));
    if wrong.is_empty() && r.device.as_ref().is_some_and(|d| d.observable) {
        Verdict::pass(
            ID,
            format!("target `{target}` owning the device, source {finished} owning none"),
        )
    } else if wrong.is_empty() {
        Verdict::pass(ID, format!("target `{target}`, source {finished}"))
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
        // A guest that never ran stays so: its target ends as the source was.
        Some("prelaunch") if r.prior == "prelaunch" => Verdict::pass(
            ID,
            "the target had loaded the state of a guest that never ran and was alive (`prelaunch`)",
        ),
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
