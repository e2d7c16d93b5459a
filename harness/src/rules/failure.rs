//! FAIL-1 to FAIL-4: what a failed or cancelled transfer must leave behind.

use super::{Verdict, ms};
use crate::adapter::{Role, VmEvent};
use crate::plan::Fault;
use crate::record::{MigrateReply, TrialRecord};
use crate::timeline::{Actor, What};

/// Why the source cannot be judged on its failure path, if it cannot.
fn source_unjudgeable(r: &TrialRecord) -> Option<String> {
    if !r.failed() {
        return Some("the transfer did not fail".into());
    }
    if r.killed_by_fault(Role::Source) {
        return Some("the kit killed the source".into());
    }
    if let Some(x) = r.source.exit {
        return Some(format!("the source {x} by itself: LIVE-1 judges it"));
    }
    None
}

/// The source's events after the migrate command.
fn source_events_after_migrate(r: &TrialRecord) -> Vec<&VmEvent> {
    let from = r.migrate_at().unwrap_or_default();
    r.events(Actor::Source)
        .filter(|(e, _)| e.at >= from)
        .map(|(_, ev)| ev)
        .collect()
}

pub fn fail1(r: &TrialRecord) -> Verdict {
    const ID: &str = "FAIL-1";
    // A refused valid migrate is a failed transfer too: the source must be
    // as it was (a malformed request's refusal is ERR-1's).
    let refused = matches!(r.migrate, MigrateReply::Refused(_))
        && !matches!(r.fault(), Some(Fault::BadRequest(_)));
    if !refused && let Some(why) = source_unjudgeable(r) {
        return Verdict::na(ID, why);
    }
    if refused && let Some(x) = r.source.exit {
        return Verdict::na(ID, format!("the source {x} by itself: LIVE-1 judges it"));
    }
    let got = r.source.runstate.as_deref().unwrap_or("unknown");
    let bound = format!("bound {} ms", r.settle.as_millis());
    let what = if refused { "refused; " } else { "" };
    if got == r.prior {
        Verdict::pass(ID, format!("{what}source back to `{got}`")).with_detail(bound)
    } else {
        Verdict::fail(
            ID,
            format!(
                "{what}source ended `{got}`; it was `{}` when migrate came",
                r.prior
            ),
        )
        .with_detail(bound)
    }
}

pub fn fail2(r: &TrialRecord) -> Verdict {
    const ID: &str = "FAIL-2";
    if let Some(why) = source_unjudgeable(r) {
        return Verdict::na(ID, why);
    }
    let events = source_events_after_migrate(r);
    let stops = events.iter().filter(|e| ***e == VmEvent::Stop).count();
    let resumes = events.iter().filter(|e| ***e == VmEvent::Resume).count();
    let expected = if r.prior == "running" {
        stops.min(1)
    } else {
        0
    };
    let detail = format!(
        "after migrate: {stops} STOP, {resumes} RESUME; prior `{}`",
        r.prior
    );
    if resumes == expected {
        Verdict::pass(
            ID,
            format!(
                "source resumed {resumes} time(s), as its prior `{}` requires",
                r.prior
            ),
        )
        .with_detail(detail)
    } else if r.prior != "running" {
        Verdict::fail(
            ID,
            format!(
                "source resumed {resumes} time(s) though it was `{}` when migrate came",
                r.prior
            ),
        )
        .with_detail(detail)
    } else {
        Verdict::fail(ID, format!("source stopped {stops} time(s) and resumed {resumes} time(s) for one failed transfer"))
            .with_detail(detail)
    }
}

pub fn fail3(r: &TrialRecord) -> Verdict {
    const ID: &str = "FAIL-3";
    if r.migrate != MigrateReply::Accepted {
        return Verdict::na(ID, "no transfer started");
    }
    let from = r.migrate_at().unwrap_or_default();
    let mut source_runs = r.prior == "running";
    let mut target_runs = false;
    for e in r.timeline.iter().filter(|e| e.at >= from) {
        let (who, running) = match (&e.actor, &e.what) {
            (Actor::Source, What::Event(VmEvent::Resume)) => (Actor::Source, true),
            (Actor::Source, What::Event(VmEvent::Stop) | What::Exited(_)) => (Actor::Source, false),
            (Actor::Target, What::Event(VmEvent::Resume)) => (Actor::Target, true),
            (Actor::Target, What::Event(VmEvent::Stop) | What::Exited(_)) => (Actor::Target, false),
            _ => continue,
        };
        match who {
            Actor::Source => source_runs = running,
            _ => target_runs = running,
        }
        if source_runs && target_runs {
            let why = if who == Actor::Source {
                "both VMs ran: the source resumed while the target was running"
            } else {
                "both VMs ran: the target resumed while the source was running"
            };
            return Verdict::fail(ID, why).with_detail(format!("at {}", ms(e.at)));
        }
    }
    let end_both = r.source.runstate.as_deref() == Some("running")
        && r.target.runstate.as_deref() == Some("running");
    if end_both {
        return Verdict::fail(ID, "both VMs running at the end");
    }
    Verdict::pass(ID, "never both running")
}

pub fn fail4(r: &TrialRecord) -> Verdict {
    const ID: &str = "FAIL-4";
    if !r.failed() {
        return Verdict::na(ID, "the transfer did not fail");
    }
    let from = r.migrate_at().unwrap_or_default();
    if r.events(Actor::Target)
        .any(|(e, ev)| e.at >= from && *ev == VmEvent::Resume)
    {
        return Verdict::fail(ID, "the target ran (RESUME) although the transfer failed");
    }
    if r.killed_by_fault(Role::Target) {
        return Verdict::pass(ID, "the kit killed the target");
    }
    if let Some(x) = r.target.exit {
        return Verdict::pass(ID, format!("the target {x}"));
    }
    let reached = r.cutover.as_ref().is_some_and(|c| c.forwarded);
    let rs = r.target.runstate.as_deref();
    if !reached {
        return Verdict::pass(ID, "the target never received the CPR state and never ran");
    }
    // The target's own account of its migration: a load that failed and
    // left it stopped is what the contract allows ("stays stopped in a state
    // the adapter can kill"); one that never ended is a target still waiting.
    let own = r.target.migration.as_ref().map(|m| m.status.as_str());
    match rs {
        Some("running") => Verdict::fail(ID, "the target is running after the failed transfer"),
        _ if matches!(own, Some("failed" | "cancelled")) => Verdict::pass(
            ID,
            format!(
                "the target's own migration ended `{}` and it stayed stopped (`{}`)",
                own.unwrap_or_default(),
                rs.unwrap_or("no monitor")
            ),
        ),
        None | Some("inmigrate") => Verdict::fail(
            ID,
            format!(
                "the target still waited for the migration (`{}`) after the source's had ended; the kit had to kill it",
                rs.unwrap_or("no monitor")
            ),
        )
        .with_detail(format!("waited {} ms", r.settle.as_millis())),
        Some(other) => Verdict::pass(ID, format!("the target stayed stopped (`{other}`)")),
    }
}
