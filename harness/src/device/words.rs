//! The device's ledger in words: the lines `explain` draws in the SOURCE and
//! TARGET columns, and the ownership story of a snapshot (without numbers).

use super::{Answer, EntryKind, LedgerEntry, OwnerChange};

/// Whether the ledger entry is worth a line in the timeline (ownership, rings,
/// connections, refusals, faults; not every message or I/O request).
pub fn timeline_label(e: &LedgerEntry) -> Option<String> {
    let text = match &e.kind {
        EntryKind::Connect => "device: connected".to_string(),
        EntryKind::Disconnect => "device: disconnected".to_string(),
        EntryKind::Owner { change } => format!("device: {}", owner_label(change, true)),
        EntryKind::Fault { fault, message } => format!("device: fault {fault} at {message}"),
        EntryKind::Message {
            name,
            answer: Answer::Error { why } | Answer::Closed { why },
            ..
        } => format!("device: {name} refused: {why}"),
        EntryKind::ProtocolError { what } => format!("device: protocol error: {what}"),
        EntryKind::Message { .. } | EntryKind::Io { .. } | EntryKind::Mark { .. } => return None,
    };
    Some(text)
}

/// An ownership change in words; with `numbers`, ring bases too (not for snapshots).
pub fn owner_label(c: &OwnerChange, numbers: bool) -> String {
    match c {
        OwnerChange::Take => "takes the device (SET_OWNER)".into(),
        OwnerChange::Release { how } => format!("releases the device ({how})"),
        OwnerChange::Overlap { .. } => "second owner let in (shared)".into(),
        OwnerChange::RefusedBusy { injected: true, .. } => {
            "take-over refused as busy (injected)".into()
        }
        OwnerChange::RefusedBusy { .. } => "take-over refused as busy".into(),
        OwnerChange::RingStart { ring, base } if numbers => {
            format!("ring {ring} starts (base {base})")
        }
        OwnerChange::RingStart { ring, .. } => format!("ring {ring} starts"),
        OwnerChange::RingStop { ring, base, how } if numbers => {
            format!("ring {ring} stops ({how}, base {base})")
        }
        OwnerChange::RingStop { ring, how, .. } => format!("ring {ring} stops ({how})"),
    }
}
