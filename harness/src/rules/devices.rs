//! ORD-2, OWN-1 and OWN-2: the vhost device's rings and owner across the
//! handover, judged from the device daemon's state (read while the first fds
//! were held, before the migrate command and at the end) and its ledger (one
//! order: the daemon's own).

use super::Verdict;
use crate::adapter::Role;
use crate::device::{EntryKind, OwnerChange};
use crate::record::{DeviceObs, TrialRecord};

/// The device observation, or why there is none to judge.
fn observed(r: &TrialRecord) -> Result<&DeviceObs, String> {
    match &r.device {
        None => Err("no vhost device in this profile".into()),
        Some(d) if !d.observable => Err(format!(
            "the device is {}'s: the kit cannot see its rings or owner",
            d.backend
        )),
        Some(d) => Ok(d),
    }
}

/// ORD-2: no ring of the source runs when the first fd crosses.
pub fn ord2(r: &TrialRecord) -> Verdict {
    const ID: &str = "ORD-2";
    let d = match observed(r) {
        Ok(d) => d,
        Err(why) => return Verdict::na(ID, why),
    };
    let Some((_, state)) = &d.at_cutover else {
        return Verdict::na(ID, "no fd crossed the cpr channel");
    };
    let running: Vec<String> = d
        .conns(state, Role::Source)
        .iter()
        .flat_map(|c| c.rings.iter().filter(|ring| ring.running))
        .map(|ring| format!("ring {}", ring.ring))
        .collect();
    if running.is_empty() {
        Verdict::pass(ID, "no ring of the source ran when the first fd crossed")
    } else {
        Verdict::fail(
            ID,
            format!(
                "the source's {} still ran when the first fd crossed (not stopped, no GET_VRING_BASE)",
                running.join(", ")
            ),
        )
    }
}

/// OWN-1: the device never has two owners; the target's take-over never
/// fails as busy unless the kit made it.
pub fn own1(r: &TrialRecord) -> Verdict {
    const ID: &str = "OWN-1";
    let d = match observed(r) {
        Ok(d) => d,
        Err(why) => return Verdict::na(ID, why),
    };
    if busy_while_source_held(d) {
        return Verdict::fail(
            ID,
            format!(
                "the target's take-over (SET_OWNER) was refused as busy: the source still owned the device ({} policy)",
                d.policy.name()
            ),
        );
    }
    if let Some(why) = two_running(d) {
        return Verdict::fail(ID, why);
    }
    let took = d.ledger_of(Role::Target).any(|e| {
        matches!(
            e.kind,
            EntryKind::Owner {
                change: OwnerChange::Take | OwnerChange::RingStart { .. }
            }
        )
    });
    if took {
        Verdict::pass(
            ID,
            "the target took the device over only once the source had let it go",
        )
    } else {
        Verdict::pass(ID, "the target never took the device over")
    }
}

/// Whether the device refused the target's take-over as busy (not injected)
/// while the source still held it from before the handover. A refusal after
/// the source released and took the device back (a transfer that failed or
/// was cancelled first) protects the device, and breaks nothing.
fn busy_while_source_held(d: &DeviceObs) -> bool {
    let mut source_released = false;
    for e in &d.ledger {
        let EntryKind::Owner { change } = &e.kind else {
            continue;
        };
        match (d.role_of(e.pid), change) {
            (Some(Role::Source), OwnerChange::Release { .. }) => source_released = true,
            (
                Some(Role::Target),
                OwnerChange::RefusedBusy {
                    injected: false, ..
                },
            ) if !source_released => {
                return true;
            }
            _ => {}
        }
    }
    false
}

/// The first time one side started a ring while a ring of the other side
/// still ran, in words: the target taking over before the source stopped,
/// or the source taking back (after a failed or cancelled transfer) while
/// the target's ring still ran.
fn two_running(d: &DeviceObs) -> Option<String> {
    // Rings running, per side: [source, target].
    let mut running = [0usize; 2];
    let side = |role: Role| usize::from(role == Role::Target);
    for e in &d.ledger {
        let EntryKind::Owner { change } = &e.kind else {
            continue;
        };
        let Some(role) = d.role_of(e.pid) else {
            continue;
        };
        match change {
            OwnerChange::RingStart { ring, .. } => {
                if running[1 - side(role)] > 0 {
                    return Some(match role {
                        Role::Target => format!(
                            "the target started ring {ring} while a ring of the source still ran: two owners at once"
                        ),
                        Role::Source => format!(
                            "the source started ring {ring} again while a ring of the target still ran: two owners at once"
                        ),
                    });
                }
                running[side(role)] += 1;
            }
            OwnerChange::RingStop { .. } => {
                running[side(role)] = running[side(role)].saturating_sub(1);
            }
            _ => {}
        }
    }
    None
}

/// OWN-2: after a failed transfer the source owns its device again and
/// device I/O works.
pub fn own2(r: &TrialRecord) -> Verdict {
    const ID: &str = "OWN-2";
    let d = match observed(r) {
        Ok(d) => d,
        Err(why) => return Verdict::na(ID, why),
    };
    if !r.failed() {
        return Verdict::na(ID, "the transfer did not fail");
    }
    if r.source.exit.is_some() {
        return Verdict::na(ID, "the source did not survive the transfer");
    }
    let Some(before) = &d.before else {
        return Verdict::na(ID, "the device was not read before the migrate command");
    };
    if d.owns(before, Role::Source) != Some(true) {
        return Verdict::na(
            ID,
            "the source owned no started device before the migrate command",
        );
    }
    let Some(end) = &d.end else {
        return Verdict::fail(ID, "the device could not be read at the end");
    };
    if d.owns(end, Role::Source) != Some(true) {
        return Verdict::fail(
            ID,
            format!(
                "the source does not own the device again after the failed transfer ({} policy)",
                d.policy.name()
            ),
        );
    }
    if d.started_before() && !d.runs_rings(end, Role::Source) {
        return Verdict::fail(ID, "the source owns the device but its rings do not run");
    }
    match d.io_at_end {
        Some((Role::Source, false)) => Verdict::fail(
            ID,
            "the source owns the device again, but its guest's device I/O does not get through",
        ),
        Some((Role::Source, true)) => Verdict::pass(
            ID,
            "the source owns the device again and its device I/O works",
        ),
        _ => Verdict::pass(ID, "the source owns the device again"),
    }
}

/// ORD-1's device half: I/O requests of the source the device served while
/// the first fds were held (between the kit's two marks), and, in a
/// transfer that completed (the source never resumes), any time after.
pub fn source_io_after_cutover(r: &TrialRecord, d: &DeviceObs) -> Vec<u64> {
    let Some((mark, _)) = d.at_cutover else {
        return Vec::new();
    };
    let until = if r.completed() {
        u64::MAX
    } else {
        d.cutover_watched.unwrap_or(u64::MAX)
    };
    d.ledger_of(Role::Source)
        .filter(|e| e.seq > mark && e.seq < until)
        .filter(|e| matches!(e.kind, EntryKind::Io { .. }))
        .map(|e| e.seq)
        .collect()
}

/// DONE-1's device half: what is wrong with the device's owners after a
/// completed transfer (empty when nothing is).
pub fn done1_device(r: &TrialRecord) -> Vec<String> {
    let Ok(d) = observed(r) else {
        return Vec::new();
    };
    let Some(end) = &d.end else {
        return vec!["the device could not be read at the end".into()];
    };
    let mut wrong = Vec::new();
    if d.owns(end, Role::Target) == Some(false) {
        wrong.push("the target does not own the device".to_string());
    } else if d.started_before() && !d.runs_rings(end, Role::Target) {
        wrong.push("the target's rings do not run".to_string());
    }
    if d.owns(end, Role::Source) == Some(true) {
        wrong.push("the source still owns the device".to_string());
    }
    if d.io_at_end == Some((Role::Target, false)) {
        wrong.push("the target's device I/O does not get through".to_string());
    }
    wrong
}
