//! LIVE-1: a VMM process the kit did not kill does not die. A source never
//! dies by a signal and never exits before its migration ended (it may exit
//! with status 0 once it reported completion); a target never dies by a
//! signal (it may exit with a status after a failed transfer: FAIL-4).

use super::Verdict;
use super::handover::context;
use crate::adapter::Role;
use crate::procinfo::{ExitInfo, signal_name};
use crate::record::TrialRecord;

/// Why a process's end breaks LIVE-1, if it does.
fn wrong_end(r: &TrialRecord, role: Role) -> Option<String> {
    let side = match role {
        Role::Source => &r.source,
        Role::Target => &r.target,
    };
    let x = side.exit?;
    if r.killed_by_fault(role) {
        return None;
    }
    let name = role.name();
    match (role, x) {
        (_, ExitInfo::Signal(sig)) => Some(format!(
            "the {name} died (killed by {}) {}",
            signal_name(sig),
            context(r)
        )),
        (Role::Source, ExitInfo::Code(0)) if r.completed() => None,
        (Role::Source, ExitInfo::Code(_)) if r.completed() => Some(format!(
            "the {name} {x} after the transfer completed (a finished source exits with status 0)"
        )),
        (Role::Source, ExitInfo::Code(_)) => Some(format!(
            "the {name} {x} before its migration ended, {}",
            context(r)
        )),
        (Role::Target, ExitInfo::Code(_)) => None,
    }
}

pub fn live1(r: &TrialRecord) -> Verdict {
    const ID: &str = "LIVE-1";
    let wrong: Vec<String> = [Role::Source, Role::Target]
        .into_iter()
        .filter_map(|role| wrong_end(r, role))
        .collect();
    if !wrong.is_empty() {
        return Verdict::fail(ID, wrong.join("; "));
    }
    if r.migrate == crate::record::MigrateReply::NotSent {
        return Verdict::na(ID, "the migrate command was never sent");
    }
    Verdict::pass(ID, "no VMM died that the kit did not kill")
}
