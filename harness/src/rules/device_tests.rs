//! The device rules (ORD-2, OWN-1, OWN-2, and the device halves of ORD-1 and
//! DONE-1), judged on hand-made device observations: a ledger written entry
//! by entry and the daemon's state at the cut-over and at the end.

use std::path::PathBuf;
use std::time::Duration;

use super::{Status, judge, rule};
use crate::adapter::MigrationInfo;
use crate::device::{ConnState, DeviceState, EntryKind, LedgerEntry, OwnerChange, Policy};
use crate::plan::GuestState;
use crate::record::{CutOver, DeviceObs, MigrateReply, TrialRecord};
use cprkit_device::RingState;

use Status::{Fail, NotApplicable as Na, Pass};

const SRC: i32 = 100;
const TGT: i32 = 200;

fn conn(pid: i32, owner: bool, running: bool) -> ConnState {
    ConnState {
        conn: pid as u32,
        pid: Some(pid),
        open: true,
        owner,
        rings: vec![RingState {
            ring: 0,
            running,
            base: 7,
        }],
        io: 0,
    }
}

fn state(policy: Policy, conns: Vec<ConnState>) -> DeviceState {
    DeviceState {
        policy,
        conns,
        last_seq: 0,
        version: 0,
    }
}

/// A device observation and its record, built entry by entry.
struct Dev {
    r: TrialRecord,
    obs: DeviceObs,
}

impl Dev {
    /// A completed handover of a running guest under `policy`: the source
    /// held the device and ran its ring before the migrate command.
    fn new(policy: Policy) -> Self {
        let mut r = TrialRecord::new(
            "vhost-user-running/no-fault".into(),
            "testvmm".into(),
            GuestState::Running,
            None,
            Duration::from_millis(500),
            PathBuf::from("/nonexistent"),
            false,
        );
        r.prior = "running".into();
        r.migrate = MigrateReply::Accepted;
        r.cutover = Some(CutOver {
            at: Duration::from_millis(20),
            fds: 1,
            source_runstate: Some("finish-migrate".into()),
            counter: Some((5, 5)),
            forwarded: true,
            watch: None,
        });
        r.source.migration = Some(MigrationInfo {
            status: "completed".into(),
            error: None,
        });
        r.source.runstate = Some("postmigrate".into());
        r.target.runstate = Some("running".into());
        let mut obs = DeviceObs::new(crate::device::Backend::Kit, policy);
        obs.source_pid = Some(SRC);
        obs.target_pid = Some(TGT);
        obs.before = Some(state(policy, vec![conn(SRC, true, true)]));
        obs.at_cutover = Some((0, state(policy, vec![conn(SRC, false, false)])));
        obs.end = Some(state(
            policy,
            vec![conn(SRC, false, false), conn(TGT, true, true)],
        ));
        obs.io_at_end = Some((crate::adapter::Role::Target, true));
        Dev { r, obs }
    }

    fn owner(mut self, pid: i32, change: OwnerChange) -> Self {
        self.push(pid, EntryKind::Owner { change });
        self
    }

    fn io(mut self, pid: i32) -> Self {
        self.push(
            pid,
            EntryKind::Io {
                ring: 0,
                op: "out".into(),
                sector: 1,
                len: 512,
                status: 0,
            },
        );
        self
    }

    fn mark(mut self, cutover: bool) -> Self {
        let seq = self.obs.ledger.len() as u64 + 1;
        self.obs.ledger.push(LedgerEntry {
            seq,
            t_ns: seq,
            conn: None,
            pid: None,
            kind: EntryKind::Mark {
                label: "mark".into(),
            },
        });
        if cutover {
            let st = self.obs.at_cutover.take().expect("set").1;
            self.obs.at_cutover = Some((seq, st));
        } else {
            self.obs.cutover_watched = Some(seq);
        }
        self
    }

    fn push(&mut self, pid: i32, kind: EntryKind) {
        let seq = self.obs.ledger.len() as u64 + 1;
        self.obs.ledger.push(LedgerEntry {
            seq,
            t_ns: seq,
            conn: Some(pid as u32),
            pid: Some(pid),
            kind,
        });
    }

    /// The transfer failed: the source is back `running`, the target gone.
    fn failed(mut self) -> Self {
        self.r.source.migration = Some(MigrationInfo {
            status: "failed".into(),
            error: None,
        });
        self.r.source.runstate = Some("running".into());
        self.r.target.runstate = None;
        self.obs.io_at_end = Some((crate::adapter::Role::Source, true));
        self.obs.end = Some(state(self.obs.policy, vec![conn(SRC, true, true)]));
        self
    }

    fn with(mut self, f: impl FnOnce(&mut DeviceObs)) -> Self {
        f(&mut self.obs);
        self
    }

    fn verdict(self, id: &str) -> (Status, String) {
        let mut r = self.r;
        r.device = Some(self.obs);
        let v = (rule(id).expect("a rule").check)(&r);
        (v.status, v.evidence)
    }
}

fn stop(how: &str) -> OwnerChange {
    OwnerChange::RingStop {
        ring: 0,
        base: 7,
        how: how.into(),
    }
}

fn start() -> OwnerChange {
    OwnerChange::RingStart { ring: 0, base: 7 }
}

fn release() -> OwnerChange {
    OwnerChange::Release {
        how: "RESET_OWNER".into(),
    }
}

fn busy(injected: bool) -> OwnerChange {
    OwnerChange::RefusedBusy {
        owner_conn: Some(SRC as u32),
        owner_pid: Some(SRC),
        injected,
    }
}

/// The correct order: the source stops and releases, then the target takes.
fn correct(policy: Policy) -> Dev {
    Dev::new(policy)
        .owner(SRC, OwnerChange::Take)
        .owner(SRC, start())
        .owner(SRC, stop("SET_VRING_ENABLE 0"))
        .owner(SRC, release())
        .mark(true)
        .mark(false)
        .owner(TGT, OwnerChange::Take)
        .owner(TGT, start())
}

#[test]
fn a_correct_handover_passes_every_device_rule() {
    for policy in [Policy::Exclusive, Policy::Shared] {
        let d = correct(policy);
        let mut r = d.r;
        r.device = Some(d.obs);
        for v in judge(&r) {
            assert_ne!(v.status, Fail, "{policy:?}: {} {}", v.rule, v.evidence);
        }
        let ids: Vec<&str> = judge(&r).iter().map(|v| v.rule).collect();
        assert_eq!(&ids[..4], ["ORD-1", "ORD-2", "OWN-1", "OWN-2"]);
    }
}

#[test]
fn device_rules_do_not_apply_without_a_device() {
    let d = Dev::new(Policy::Exclusive);
    for id in ["ORD-2", "OWN-1", "OWN-2"] {
        let v = (rule(id).unwrap().check)(&d.r);
        assert_eq!(v.status, Na, "{id}");
    }
    assert_eq!(
        judge(&d.r).len(),
        13,
        "a memory trial has the thirteen memory rules"
    );
}

#[test]
fn ord2_fails_on_a_source_ring_running_at_the_cutover() {
    let (st, why) = correct(Policy::Exclusive)
        .with(|o| {
            let seq = o.at_cutover.as_ref().unwrap().0;
            o.at_cutover = Some((seq, state(Policy::Exclusive, vec![conn(SRC, true, true)])));
        })
        .verdict("ORD-2");
    assert_eq!(st, Fail);
    assert!(why.contains("ring 0 still ran"), "{why}");
    // A ring of the target running then is no business of ORD-2.
    let (st, _) = correct(Policy::Exclusive)
        .with(|o| {
            let seq = o.at_cutover.as_ref().unwrap().0;
            o.at_cutover = Some((seq, state(Policy::Exclusive, vec![conn(TGT, true, true)])));
        })
        .verdict("ORD-2");
    assert_eq!(st, Pass);
}

#[test]
fn own1_fails_on_a_busy_take_over_while_the_source_still_held_the_device() {
    let d = Dev::new(Policy::Exclusive)
        .owner(SRC, OwnerChange::Take)
        .owner(SRC, start())
        .mark(true)
        .owner(TGT, busy(false));
    let (st, why) = d.verdict("OWN-1");
    assert_eq!(st, Fail);
    assert!(why.contains("refused as busy"), "{why}");
}

#[test]
fn own1_passes_an_injected_refusal_and_one_after_the_source_took_the_device_back() {
    let injected = Dev::new(Policy::Exclusive)
        .owner(SRC, OwnerChange::Take)
        .owner(SRC, release())
        .owner(TGT, busy(true));
    assert_eq!(injected.verdict("OWN-1").0, Pass);
    // Cancelled first: the source released, took the device back, and then
    // the late target is refused (which protects the device).
    let retaken = Dev::new(Policy::Exclusive)
        .owner(SRC, OwnerChange::Take)
        .owner(SRC, release())
        .owner(SRC, OwnerChange::Take)
        .owner(TGT, busy(false));
    assert_eq!(retaken.verdict("OWN-1").0, Pass);
}

#[test]
fn own1_fails_on_a_target_ring_started_while_a_source_ring_runs() {
    let d = Dev::new(Policy::Shared)
        .owner(SRC, OwnerChange::Take)
        .owner(SRC, start())
        .owner(TGT, OwnerChange::Take)
        .owner(TGT, start());
    let (st, why) = d.verdict("OWN-1");
    assert_eq!(st, Fail);
    assert!(why.contains("two owners"), "{why}");
}

/// Shared policy, a cancelled transfer: the source released, the target
/// took the device and started its ring before the source committed; the
/// source takes the device back, after the target's ring stopped or not.
fn taken_back(target_ring_stopped_first: bool) -> Dev {
    let d = Dev::new(Policy::Shared)
        .owner(SRC, OwnerChange::Take)
        .owner(SRC, start())
        .owner(SRC, stop("GET_VRING_BASE"))
        .owner(SRC, release())
        .owner(TGT, OwnerChange::Take)
        .owner(TGT, start());
    let d = if target_ring_stopped_first {
        d.owner(TGT, stop("disconnect"))
    } else {
        d
    };
    d.owner(SRC, OwnerChange::Take).owner(SRC, start())
}

#[test]
fn own1_fails_on_a_source_taking_back_while_a_target_ring_runs() {
    let (st, why) = taken_back(false).verdict("OWN-1");
    assert_eq!(st, Fail);
    assert!(why.contains("the source started ring 0 again"), "{why}");
    assert!(why.contains("two owners"), "{why}");
}

#[test]
fn own1_passes_a_source_taking_back_once_the_target_ring_stopped() {
    assert_eq!(taken_back(true).verdict("OWN-1").0, Pass);
}

#[test]
fn own2_wants_the_device_back_and_its_io_flowing() {
    let back = correct(Policy::Exclusive)
        .failed()
        .owner(SRC, OwnerChange::Take);
    assert_eq!(back.verdict("OWN-2").0, Pass);

    let (st, why) = correct(Policy::Exclusive)
        .failed()
        .with(|o| o.end = Some(state(Policy::Exclusive, vec![conn(SRC, false, false)])))
        .verdict("OWN-2");
    assert_eq!(st, Fail);
    assert!(why.contains("does not own the device again"), "{why}");

    let (st, why) = correct(Policy::Exclusive)
        .failed()
        .with(|o| o.io_at_end = Some((crate::adapter::Role::Source, false)))
        .verdict("OWN-2");
    assert_eq!(st, Fail);
    assert!(why.contains("I/O does not get through"), "{why}");

    // Completed: not OWN-2's business.
    assert_eq!(correct(Policy::Exclusive).verdict("OWN-2").0, Na);
}

#[test]
fn ord1_fails_on_source_io_while_the_fds_were_held() {
    let d = Dev::new(Policy::Exclusive)
        .owner(SRC, OwnerChange::Take)
        .owner(SRC, start())
        .mark(true)
        .io(SRC)
        .mark(false);
    let (st, why) = d.verdict("ORD-1");
    assert_eq!(st, Fail);
    assert!(why.contains("served I/O from the source"), "{why}");
    // After the hold, in a failed transfer, the resumed source's I/O is fine.
    let later = correct(Policy::Exclusive).failed().io(SRC);
    assert_eq!(later.verdict("ORD-1").0, Pass);
    // In a completed one, any source I/O after the cut-over is wrong.
    let (st, _) = correct(Policy::Exclusive).io(SRC).verdict("ORD-1");
    assert_eq!(st, Fail);
}

#[test]
fn done1_wants_the_target_owning_and_the_source_owning_none() {
    let (st, why) = correct(Policy::Exclusive)
        .with(|o| {
            o.end = Some(state(
                Policy::Exclusive,
                vec![conn(SRC, true, false), conn(TGT, false, true)],
            ))
        })
        .verdict("DONE-1");
    assert_eq!(st, Fail);
    assert!(why.contains("the target does not own the device"), "{why}");
    assert!(why.contains("the source still owns the device"), "{why}");
}
