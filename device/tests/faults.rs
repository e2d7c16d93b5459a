//! Device faults armed through the control socket: each fires once, on its trigger, for the
//! armed pid only.

mod common;

use std::time::Instant;

use common::*;
use cprkit_device::{
    Answer, DeviceFault, DeviceFaultKind, EntryKind, OwnerChange, Policy, Trigger,
};
use vhost::VhostBackend;
use vhost::vhost_user::VhostUserFrontend;

fn fault(kind: DeviceFaultKind, pid: i32, on: Trigger, delay_ms: u64) -> DeviceFault {
    DeviceFault {
        kind,
        pid,
        on,
        delay_ms,
    }
}

fn fired(entries: &[cprkit_device::LedgerEntry]) -> Vec<(String, String)> {
    entries
        .iter()
        .filter_map(|e| match &e.kind {
            EntryKind::Fault { fault, message } => Some((fault.clone(), message.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn busy_fires_once_for_the_armed_pid_even_when_nobody_owns() {
    let fx = Fixture::new(Policy::Exclusive);
    let mut ctl = fx.client();
    // Armed for another pid: never fires here.
    ctl.arm(&fault(
        DeviceFaultKind::Busy,
        me() + 100_000,
        Trigger::Take,
        0,
    ))
    .unwrap();
    ctl.arm(&fault(DeviceFaultKind::Busy, me(), Trigger::Take, 0))
        .unwrap();
    let mut front = Front::connect(&fx.socket);
    front.negotiate(true);
    assert!(front.fe.set_owner().is_err(), "injected busy");
    front.fe.set_owner().expect("fires once only");
    let entries = fx.ledger();
    assert_eq!(fired(&entries), vec![("busy".into(), "SET_OWNER".into())]);
    assert!(entries.iter().any(|e| e.kind
        == EntryKind::Owner {
            change: OwnerChange::RefusedBusy {
                owner_conn: None,
                owner_pid: None,
                injected: true
            }
        }));
}

#[test]
fn release_fail_refuses_the_first_release_message() {
    let fx = Fixture::new(Policy::Exclusive);
    let mut front = Front::up(&fx.socket, true, 0);
    fx.client()
        .arm(&fault(
            DeviceFaultKind::ReleaseFail,
            me(),
            Trigger::Release,
            0,
        ))
        .unwrap();
    // SET_VRING_ENABLE 1 is no release; SET_VRING_ENABLE 0 is.
    front.fe.set_vring_enable(0, true).unwrap();
    assert!(
        front.fe.set_vring_enable(0, false).is_err(),
        "refused release"
    );
    assert_eq!(front.write(0, &[1u8; 512]), 0, "ring still runs");
    front
        .fe
        .set_vring_enable(0, false)
        .expect("fires once only");
    assert_eq!(front.fe.get_vring_base(0).unwrap(), 1);
    let entries = fx.ledger();
    assert_eq!(
        fired(&entries),
        vec![(
            "release-fail".into(),
            "SET_VRING_ENABLE ring 0 enable 0".into()
        )]
    );
    let enables = message(&entries, "SET_VRING_ENABLE");
    assert!(enables.iter().any(|e| matches!(
        &e.kind,
        EntryKind::Message {
            answer: Answer::Error { .. },
            ..
        }
    )));
}

#[test]
fn release_fail_on_reset_owner_keeps_the_owner() {
    let fx = Fixture::new(Policy::Exclusive);
    let front = Front::up(&fx.socket, true, 0);
    fx.client()
        .arm(&fault(
            DeviceFaultKind::ReleaseFail,
            me(),
            Trigger::Release,
            0,
        ))
        .unwrap();
    assert!(front.fe.reset_owner().is_err());
    assert!(fx.client().state().unwrap().conns[0].owner);
    front.fe.reset_owner().unwrap();
    assert!(!fx.client().state().unwrap().conns[0].owner);
}

#[test]
fn disconnect_drops_the_connection_before_answering() {
    let fx = Fixture::new(Policy::Exclusive);
    let front = Front::up(&fx.socket, true, 0);
    fx.client()
        .arm(&fault(
            DeviceFaultKind::Disconnect,
            me(),
            Trigger::Release,
            0,
        ))
        .unwrap();
    assert!(front.fe.get_vring_base(0).is_err(), "no answer: dropped");
    let entry = fx.wait_entry(|e| e.kind == EntryKind::Disconnect);
    assert_eq!(entry.conn, Some(1));
    let entries = fx.ledger();
    assert_eq!(
        fired(&entries),
        vec![("disconnect".into(), "GET_VRING_BASE ring 0".into())]
    );
    assert!(entries.iter().any(|e| e.kind
        == EntryKind::Owner {
            change: OwnerChange::RingStop {
                ring: 0,
                base: 0,
                how: "disconnect".into()
            }
        }));
    assert!(entries.iter().any(|e| e.kind
        == EntryKind::Owner {
            change: OwnerChange::Release {
                how: "disconnect".into()
            }
        }));
    // The next connection is not affected (fired once).
    let again = Front::up(&fx.socket, true, 0);
    again.fe.get_vring_base(0).unwrap();
}

#[test]
fn disconnect_on_take_without_reply() {
    let fx = Fixture::new(Policy::Shared);
    fx.client()
        .arm(&fault(DeviceFaultKind::Disconnect, me(), Trigger::Take, 0))
        .unwrap();
    let mut front = Front::connect(&fx.socket);
    front.negotiate(false);
    front.fe.set_owner().unwrap();
    assert!(front.fe.get_features().is_err());
    let entries = fx.ledger();
    assert!(message(&entries, "SET_OWNER")
        .iter()
        .any(|e| matches!(&e.kind, EntryKind::Message { answer: Answer::Closed { why }, .. } if why == "injected disconnect")));
}

#[test]
fn delay_answers_late_once() {
    let fx = Fixture::new(Policy::Exclusive);
    let front = Front::up(&fx.socket, true, 0);
    fx.client()
        .arm(&fault(DeviceFaultKind::Delay, me(), Trigger::Release, 150))
        .unwrap();
    let start = Instant::now();
    assert_eq!(front.fe.get_vring_base(0).unwrap(), 0);
    assert!(
        start.elapsed().as_millis() >= 150,
        "answered after {:?}",
        start.elapsed()
    );
    let start = Instant::now();
    front.fe.get_vring_base(0).unwrap();
    assert!(start.elapsed().as_millis() < 150, "fires once");
    let entries = fx.ledger();
    let delayed: Vec<u64> = message(&entries, "GET_VRING_BASE")
        .iter()
        .map(|e| match &e.kind {
            EntryKind::Message { delayed_ms, .. } => *delayed_ms,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(delayed, vec![150, 0]);
}

#[test]
fn delay_on_take() {
    let fx = Fixture::new(Policy::Exclusive);
    fx.client()
        .arm(&fault(DeviceFaultKind::Delay, me(), Trigger::Take, 60))
        .unwrap();
    let mut front = Front::connect(&fx.socket);
    front.negotiate(true);
    let start = Instant::now();
    front.fe.set_owner().unwrap();
    assert!(start.elapsed().as_millis() >= 60);
    assert!(fx.client().state().unwrap().conns[0].owner);
}
