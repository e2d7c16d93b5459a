//! Each rule checker, judged on hand-made records: it passes on the correct
//! behaviour, fails on the bug it exists for (naming it in its evidence), and
//! says nothing where the rule does not apply.
//!
//! [`Rec`] builds a [`TrialRecord`]; by default a fault-free, completed
//! handover of a running guest, as a correct VMM and the kit would record it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use rstest::rstest;

use super::{Rule, Status, Verdict, judge, rule, rules_for};
use crate::adapter::{
    Channels, HandoverShape, MigrationInfo, Outcome, Receive, SourceEnd, VmEvent,
};
use crate::plan::{BadRequest, Fault, FaultPoint, GuestState, Step};
use crate::procinfo::ExitInfo;
use crate::record::{CancelObs, CutOver, MigrateReply, ProcEnd, TargetInit, TrialRecord};
use crate::timeline::{Actor, Entry, What};

use Status::{Fail, NotApplicable as Na, Pass};

/// The inode of the source's RAM memfd (distinctive, so that evidence can be
/// checked not to contain it).
const RAM: u64 = 9_990_001;
/// The guest counter at the cut-over.
const CUT: u64 = 7_000_123;
/// When the kit sends `migrate`, in ms since the trial's start.
const MIGRATE_MS: u64 = 10;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn migration(status: &str) -> Option<MigrationInfo> {
    Some(MigrationInfo {
        status: status.into(),
        error: None,
    })
}

fn is_terminal_event(e: &Entry) -> bool {
    matches!(&e.what, What::Event(VmEvent::Migration(s)) if matches!(s.as_str(), "completed" | "failed" | "cancelled"))
}

/// A [`TrialRecord`] under construction.
#[derive(Debug, Clone)]
struct Rec(TrialRecord);

impl Rec {
    /// A fault-free handover of a running guest, completed: the source stops
    /// before the fds cross, the target maps the same memfd, resumes, and runs.
    fn handover() -> Self {
        let r = TrialRecord {
            name: "memory-running/no-fault".into(),
            vmm: "testvmm".into(),
            shape: HandoverShape::CPR_TRANSFER,
            guest: GuestState::Running,
            point: None,
            mismatch: None,
            chain: None,
            injected: false,
            later: Vec::new(),
            holds: Vec::new(),
            prior: "running".into(),
            migrate: MigrateReply::Accepted,
            cutover: Some(CutOver {
                at: ms(20),
                fds: 1,
                source_runstate: Some("finish-migrate".into()),
                counter: Some((CUT, CUT)),
                forwarded: true,
                watch: None,
            }),
            target_init: Some(TargetInit {
                at: ms(30),
                monitor: true,
                mapped_inodes: Some(BTreeSet::from([RAM])),
            }),
            source_ram_inode: Some(RAM),
            cancel: None,
            device: None,
            source: ProcEnd {
                runstate: Some("postmigrate".into()),
                migration: migration("completed"),
                counter: Some(CUT),
                ring: Some(Ok(())),
                ..ProcEnd::default()
            },
            target: ProcEnd {
                runstate: Some("running".into()),
                migration: migration("completed"),
                counter: Some(CUT + 500),
                counter_moving: Some(true),
                ring: Some(Ok(())),
                ..ProcEnd::default()
            },
            ended_in_time: true,
            settle: ms(500),
            timeline: Vec::new(),
            dir: PathBuf::from("/nonexistent/cprkit-rules-test"),
            kept_dir: false,
        };
        Rec(r)
            // The guest started before the migrate command: not part of the transfer.
            .ev(2, Actor::Source, VmEvent::Resume)
            .point(5, Step::TargetListen, "target listening")
            .at(MIGRATE_MS, Actor::Kit, What::Action("migrate".into()))
            .ev(11, Actor::Source, VmEvent::Migration("setup".into()))
            .ev(12, Actor::Source, VmEvent::Stop)
            .point(20, Step::CprSave, "first fds held (1 fds)")
            .point(30, Step::TargetInit, "target closed the cpr channel")
            .ev(31, Actor::Source, VmEvent::Migration("active".into()))
            .point(35, Step::MainStream, "first bytes from the source held")
            .point(38, Step::TargetResume, "first bytes from the target held")
            .ev(40, Actor::Target, VmEvent::Resume)
            .ev(45, Actor::Source, VmEvent::Migration("completed".into()))
            .at(100, Actor::Kit, What::Action("final readings".into()))
    }

    /// The same with a guest paused when `migrate` came: the kit paused it
    /// before, nothing resumes it, and its memory stays as it was.
    fn paused(mut self) -> Self {
        self.0.guest = GuestState::Paused;
        self.0.prior = "paused".into();
        self.0.name = "memory-paused/no-fault".into();
        self.0.target.runstate = Some("paused".into());
        self.0.target.counter = Some(CUT);
        self.0.target.counter_moving = None;
        self.drop_ev(Actor::Source, VmEvent::Stop)
            .drop_ev(Actor::Target, VmEvent::Resume)
            .drop_all(Actor::Source, VmEvent::Resume)
            .ev(3, Actor::Source, VmEvent::Stop)
    }

    /// The transfer fails after the fds crossed: the source reports `failed`
    /// and returns to its prior runstate (resumed once if it was running), the
    /// target never runs and exits.
    fn fails(self) -> Self {
        let running = self.0.prior == "running";
        let mut rec = self
            .drop_ev(Actor::Target, VmEvent::Resume)
            .status(45, "failed")
            .exits(Actor::Target, 44, ExitInfo::Code(1))
            .source(|s| {
                s.counter = Some(CUT + if running { 300 } else { 0 });
                s.counter_moving = running.then_some(true);
            });
        rec.0.source.runstate = Some(rec.0.prior.clone());
        if running {
            rec = rec.ev(46, Actor::Source, VmEvent::Resume);
        }
        rec
    }

    /// A malformed request `b`, refused at once: the source carries on as it was.
    fn refused(b: BadRequest) -> Self {
        let mut rec = Rec::handover().fault(Fault::BadRequest(b), Step::SourceStop);
        rec.0
            .timeline
            .retain(|e| e.at <= ms(MIGRATE_MS) || e.what == What::Action("final readings".into()));
        rec.0.migrate = MigrateReply::Refused("channel list is malformed".into());
        rec.0.cutover = None;
        rec.0.target_init = None;
        rec.0.source = ProcEnd {
            runstate: Some("running".into()),
            migration: None,
            counter: Some(CUT + 300),
            counter_moving: Some(true),
            ring: Some(Ok(())),
            ..ProcEnd::default()
        };
        rec.0.target = ProcEnd {
            runstate: None,
            killed_at_end: true,
            ..ProcEnd::default()
        };
        rec.at(
            11,
            Actor::Source,
            What::Refused {
                command: "migrate".into(),
                desc: "channel list is malformed".into(),
            },
        )
    }

    /// The kit's cancel at `step`, which the source obeyed: `cancelled`, back
    /// to its prior runstate.
    fn cancelled(step: Step) -> Self {
        Rec::handover()
            .fault(Fault::Cancel, step)
            .at(36, Actor::Kit, What::Action("migrate_cancel".into()))
            .fails()
            .status(45, "cancelled")
            .with(|r| {
                r.cancel = Some(CancelObs {
                    step,
                    refused: None,
                    ended: Some("cancelled".into()),
                })
            })
    }

    /// Adds an entry at `t` ms (kept in time order; seq and epochs follow).
    fn at(mut self, t: u64, actor: Actor, what: What) -> Self {
        self.0.timeline.push(Entry {
            seq: 0,
            at: ms(t),
            epoch: 0,
            actor,
            what,
        });
        self.renumber()
    }

    fn ev(self, t: u64, actor: Actor, ev: VmEvent) -> Self {
        self.at(t, actor, What::Event(ev))
    }

    fn point(self, t: u64, step: Step, note: &str) -> Self {
        self.at(
            t,
            Actor::Kit,
            What::Point {
                step,
                note: note.into(),
            },
        )
    }

    /// Removes the actor's events `ev` after the migrate command (what came
    /// before it stays).
    fn drop_ev(mut self, actor: Actor, ev: VmEvent) -> Self {
        let what = What::Event(ev);
        self.0
            .timeline
            .retain(|e| !(e.actor == actor && e.what == what && e.at >= ms(MIGRATE_MS)));
        self.renumber()
    }

    /// Removes every event `ev` of the actor.
    fn drop_all(mut self, actor: Actor, ev: VmEvent) -> Self {
        let what = What::Event(ev);
        self.0
            .timeline
            .retain(|e| !(e.actor == actor && e.what == what));
        self.renumber()
    }

    fn renumber(mut self) -> Self {
        self.0.timeline.sort_by_key(|e| e.at);
        let mut epoch = 0;
        for (i, e) in self.0.timeline.iter_mut().enumerate() {
            if e.what.is_barrier() {
                epoch += 1;
            }
            e.seq = i as u64;
            e.epoch = epoch;
        }
        self
    }

    /// The trial's fault, injected.
    fn fault(mut self, fault: Fault, step: Step) -> Self {
        self.0.point = Some(FaultPoint::new(fault, step).expect("a valid fault point"));
        self.0.injected = true;
        self
    }

    /// The readings at the cut-over hold.
    fn cut(mut self, runstate: &str, counter: (u64, u64)) -> Self {
        let c = self.0.cutover.as_mut().expect("a cut-over");
        c.source_runstate = Some(runstate.into());
        c.counter = Some(counter);
        self
    }

    /// The source's final migration status, reported by its monitor and by an
    /// event at `t` (replacing the terminal event there was).
    fn status(mut self, t: u64, status: &str) -> Self {
        self.0.source.migration = migration(status);
        self.0
            .timeline
            .retain(|e| !(e.actor == Actor::Source && is_terminal_event(e)));
        self.ev(t, Actor::Source, VmEvent::Migration(status.into()))
    }

    /// The process ended at `t`, before the final readings: nothing of it after
    /// `t` (no event, no monitor at the end), but the kit still reads its RAM.
    fn exits(mut self, actor: Actor, t: u64, x: ExitInfo) -> Self {
        self.0
            .timeline
            .retain(|e| !(e.actor == actor && (e.at > ms(t) || matches!(e.what, What::Exited(_)))));
        let end = match actor {
            Actor::Source => &mut self.0.source,
            Actor::Target => &mut self.0.target,
            _ => panic!("only a VMM exits"),
        };
        *end = ProcEnd {
            exit: Some(x),
            counter: end.counter,
            ..ProcEnd::default()
        };
        self.at(t, actor, What::Exited(x))
    }

    /// Still alive at the end in runstate `rs` (or no monitor), killed by the kit.
    fn target_left(mut self, rs: Option<&str>) -> Self {
        self.0
            .timeline
            .retain(|e| !(e.actor == Actor::Target && matches!(e.what, What::Exited(_))));
        self.0.target = ProcEnd {
            runstate: rs.map(Into::into),
            killed_at_end: true,
            ..ProcEnd::default()
        };
        self.renumber()
    }

    fn source(mut self, f: impl FnOnce(&mut ProcEnd)) -> Self {
        f(&mut self.0.source);
        self
    }

    fn target(mut self, f: impl FnOnce(&mut ProcEnd)) -> Self {
        f(&mut self.0.target);
        self
    }

    /// The same handover by a VMM of Cloud Hypervisor's shape: one channel,
    /// a target asked to receive, no cancel, a source that exits 0 once done,
    /// the outcome from events. Its completed source exited with status 0.
    fn one_channel(self) -> Self {
        let mut rec = self.with(|r| {
            r.shape = HandoverShape {
                channels: Channels::One,
                receive: Receive::MonitorRequest,
                cancel: false,
                source_end: SourceEnd::Exit0,
                outcome: Outcome::Events,
            }
        });
        if rec.0.completed() {
            rec = rec.exits(Actor::Source, 50, ExitInfo::Code(0)).source(|s| {
                s.runstate = None;
                s.migration = None;
            });
        }
        rec
    }

    fn with(mut self, f: impl FnOnce(&mut TrialRecord)) -> Self {
        f(&mut self.0);
        self
    }

    fn build(self) -> TrialRecord {
        self.0
    }
}

/// Runs rule `id` on the record.
fn check(id: &str, rec: Rec) -> Verdict {
    let r = rec.build();
    let v = (rule(id).unwrap_or_else(|| panic!("no rule {id}")).check)(&r);
    assert_eq!(v.rule, id, "{id}'s checker names another rule");
    v
}

/// The verdict has this status and its evidence says `evidence`; evidence
/// never carries the numbers of one run (times, counters, inodes).
#[track_caller]
fn assert_verdict(v: &Verdict, status: Status, evidence: &str) {
    assert_eq!(v.status, status, "{v:#?}");
    assert!(
        v.evidence.contains(evidence),
        "evidence {:?} does not say {evidence:?}",
        v.evidence
    );
    for unstable in [CUT.to_string(), RAM.to_string(), " ms".into()] {
        assert!(
            !v.evidence.contains(&unstable),
            "evidence {:?} is not stable: {unstable:?}",
            v.evidence
        );
    }
}

#[test]
fn the_default_record_is_a_correct_handover() {
    let r = Rec::handover().build();
    assert!(r.completed() && !r.failed());
    assert_eq!(r.migrate_at(), Some(ms(MIGRATE_MS)));
    assert_eq!(r.source_status_at("completed"), Some(ms(45)));
    let f = Rec::handover().fails().build();
    assert!(f.failed() && !f.completed());
    assert_eq!(f.exit_at(Actor::Target), Some((ms(44), ExitInfo::Code(1))));
    // Epochs follow the barriers, seq the order.
    assert!(
        f.timeline
            .windows(2)
            .all(|w| w[0].seq + 1 == w[1].seq && w[0].epoch <= w[1].epoch)
    );
}

// ---------------------------------------------------------------- ORD-1

#[rstest]
#[case::stopped_and_still(Rec::handover(), Pass, "source `finish-migrate` and its guest still")]
#[case::paused_guest_still(Rec::handover().paused().cut("paused", (CUT, CUT)), Pass, "source `paused` and its guest still")]
#[case::running_at_cutover(
    Rec::handover().cut("running", (CUT, CUT)),
    Fail,
    "source runstate `running` when the first fd crossed"
)]
#[case::counter_moved_while_held(
    Rec::handover().cut("finish-migrate", (CUT, CUT + 3)),
    Fail,
    "source runstate `finish-migrate` when the first fd crossed; the guest counter moved while the fds were held"
)]
#[case::stock_qemu_order(
    Rec::handover().cut("running", (CUT, CUT + 40)),
    Fail,
    "`running` when the first fd crossed; the guest counter moved"
)]
#[case::no_cutover(Rec::handover().with(|r| r.cutover = None), Na, "no fd crossed the cpr channel")]
fn ord1(#[case] rec: Rec, #[case] status: Status, #[case] evidence: &str) {
    assert_verdict(&check("ORD-1", rec), status, evidence);
}

#[test]
fn ord1_detail_carries_the_counter() {
    let v = check(
        "ORD-1",
        Rec::handover().cut("finish-migrate", (CUT, CUT + 3)),
    );
    assert!(
        v.detail
            .contains(&format!("guest counter {CUT} -> {}", CUT + 3)),
        "{}",
        v.detail
    );
    assert!(v.detail.contains("+20.0 ms"), "{}", v.detail);
}

// ---------------------------------------------------------------- FAIL-1

#[rstest]
#[case::back_to_running(Rec::handover().fails(), Pass, "source back to `running`")]
#[case::back_to_paused(Rec::handover().paused().fails(), Pass, "source back to `paused`")]
#[case::stays_finish_migrate(
    Rec::handover().fails().source(|s| s.runstate = Some("finish-migrate".into())),
    Fail,
    "source ended `finish-migrate`; it was `running` when migrate came"
)]
#[case::paused_guest_left_running(
    Rec::handover().paused().fails().source(|s| s.runstate = Some("running".into())),
    Fail,
    "source ended `running`; it was `paused` when migrate came"
)]
#[case::no_answer_at_the_end(
    Rec::handover().fails().source(|s| s.runstate = None),
    Fail,
    "source ended `unknown`"
)]
#[case::source_crashed(
    Rec::handover().fails().exits(Actor::Source, 47, ExitInfo::Signal(11)),
    Na,
    "the source exited (killed by SIGSEGV) by itself: LIVE-1 judges it"
)]
#[case::cancelled(Rec::cancelled(Step::MainStream), Pass, "source back to `running`")]
#[case::kill_source_fault(
    Rec::handover().fault(Fault::KillSource, Step::MainStream).fails().exits(Actor::Source, 36, ExitInfo::Signal(9)),
    Na,
    "the kit killed the source"
)]
#[case::completed(Rec::handover(), Na, "the transfer did not fail")]
#[case::refused(Rec::refused(BadRequest::NonUnixCpr), Na, "the transfer did not fail")]
fn fail1(#[case] rec: Rec, #[case] status: Status, #[case] evidence: &str) {
    assert_verdict(&check("FAIL-1", rec), status, evidence);
}

#[test]
fn a_source_death_at_a_kill_fault_never_injected_is_its_own() {
    // The kill-source point was not reached: the source's death is its own,
    // named by LIVE-1 (not FAIL-1: it is no failure path).
    let rec = Rec::handover()
        .fault(Fault::KillSource, Step::TargetResume)
        .with(|r| r.injected = false)
        .fails()
        .exits(Actor::Source, 47, ExitInfo::Signal(6));
    assert_verdict(&check("FAIL-1", rec.clone()), Na, "LIVE-1 judges it");
    assert_verdict(&check("FAIL-2", rec.clone()), Na, "LIVE-1 judges it");
    assert_verdict(
        &check("LIVE-1", rec),
        Fail,
        "the source died (killed by SIGABRT) during the handover with kill-source@target-resume",
    );
}

// ---------------------------------------------------------------- FAIL-2

#[rstest]
#[case::one_stop_one_resume(Rec::handover().fails(), Pass, "source resumed 1 time(s), as its prior `running` requires")]
#[case::two_resumes(
    Rec::handover().fails().ev(50, Actor::Source, VmEvent::Resume),
    Fail,
    "source stopped 1 time(s) and resumed 2 time(s) for one failed transfer"
)]
#[case::resume_without_stop(
    Rec::handover().fails().drop_ev(Actor::Source, VmEvent::Stop),
    Fail,
    "source stopped 0 time(s) and resumed 1 time(s)"
)]
#[case::paused_prior_resumed(
    Rec::handover().paused().fails().ev(46, Actor::Source, VmEvent::Resume),
    Fail,
    "source resumed 1 time(s) though it was `paused` when migrate came"
)]
#[case::paused_prior_left_alone(Rec::handover().paused().fails(), Pass, "source resumed 0 time(s), as its prior `paused` requires")]
#[case::no_stop_no_resume(
    // Failed before the source stopped (e.g. at target-listen): nothing to undo.
    Rec::handover().fails().drop_ev(Actor::Source, VmEvent::Stop).drop_ev(Actor::Source, VmEvent::Resume),
    Pass,
    "source resumed 0 time(s)"
)]
#[case::resume_before_migrate_not_counted(
    Rec::handover().fails().ev(1, Actor::Source, VmEvent::Resume).ev(3, Actor::Source, VmEvent::Resume),
    Pass,
    "source resumed 1 time(s)"
)]
#[case::kill_source_fault(
    Rec::handover().fault(Fault::KillSource, Step::CprSave).fails().exits(Actor::Source, 21, ExitInfo::Signal(9)),
    Na,
    "the kit killed the source"
)]
#[case::completed(Rec::handover(), Na, "the transfer did not fail")]
fn fail2(#[case] rec: Rec, #[case] status: Status, #[case] evidence: &str) {
    assert_verdict(&check("FAIL-2", rec), status, evidence);
}

// ---------------------------------------------------------------- FAIL-3

#[rstest]
#[case::sequential_handover(Rec::handover(), Pass, "never both running")]
#[case::sequential_failure(Rec::handover().fails(), Pass, "never both running")]
#[case::target_resume_while_source_runs(
    // The source never stopped: the target runs beside it.
    Rec::handover().drop_ev(Actor::Source, VmEvent::Stop),
    Fail,
    "both VMs ran: the target resumed while the source was running"
)]
#[case::source_resume_after_target_resume(
    Rec::handover().ev(50, Actor::Source, VmEvent::Resume),
    Fail,
    "both VMs ran: the source resumed while the target was running"
)]
#[case::target_ran_then_died_then_source_resumed(
    // kill-target@target-resume after the target's RESUME: the source may run again.
    Rec::handover().fault(Fault::KillTarget, Step::TargetResume).fails().ev(40, Actor::Target, VmEvent::Resume),
    Pass,
    "never both running"
)]
#[case::target_stopped_then_source_resumed(
    Rec::handover().fails().ev(40, Actor::Target, VmEvent::Resume).ev(42, Actor::Target, VmEvent::Stop),
    Pass,
    "never both running"
)]
#[case::paused_source_target_resumes(
    Rec::handover().paused().ev(40, Actor::Target, VmEvent::Resume),
    Pass,
    "never both running"
)]
#[case::both_running_at_the_end(
    // A VMM that reports no events: the final readings still tell.
    Rec::handover().drop_ev(Actor::Target, VmEvent::Resume).source(|s| s.runstate = Some("running".into())),
    Fail,
    "both VMs running at the end"
)]
#[case::refused(Rec::refused(BadRequest::NoMainChannel), Na, "no transfer started")]
fn fail3(#[case] rec: Rec, #[case] status: Status, #[case] evidence: &str) {
    assert_verdict(&check("FAIL-3", rec), status, evidence);
}

#[test]
fn fail3_detail_says_when() {
    let v = check(
        "FAIL-3",
        Rec::handover().ev(50, Actor::Source, VmEvent::Resume),
    );
    assert_eq!(v.detail, "at +50.0 ms");
}

// ---------------------------------------------------------------- FAIL-4

#[rstest]
#[case::target_exited(Rec::handover().fails(), Pass, "the target exited (status 1)")]
#[case::target_waits_inmigrate(
    Rec::handover().fails().target_left(Some("inmigrate")),
    Fail,
    "the target still waited for the migration (`inmigrate`) after the source's had ended; the kit had to kill it"
)]
#[case::target_without_monitor(
    Rec::handover().fails().target_left(None),
    Fail,
    "the target still waited for the migration (`no monitor`)"
)]
#[case::target_resumed(
    Rec::handover().fails().ev(40, Actor::Target, VmEvent::Resume),
    Fail,
    "the target ran (RESUME) although the transfer failed"
)]
#[case::target_running_at_the_end(
    Rec::handover().fails().target_left(Some("running")),
    Fail,
    "the target is running after the failed transfer"
)]
#[case::target_stays_stopped(
    Rec::handover().fails().target_left(Some("paused")),
    Pass,
    "the target stayed stopped (`paused`)"
)]
#[case::never_reached(
    Rec::handover().fails().with(|r| r.cutover = None).target_left(Some("inmigrate")),
    Pass,
    "the target never received the CPR state and never ran"
)]
#[case::fds_not_forwarded(
    // cpr-close@cpr-save: the fds were held and never went on.
    Rec::handover()
        .fault(Fault::CprClose, Step::CprSave)
        .with(|r| r.cutover.as_mut().unwrap().forwarded = false)
        .fails()
        .target_left(Some("inmigrate")),
    Pass,
    "the target never received the CPR state"
)]
#[case::kill_target_fault(
    Rec::handover().fault(Fault::KillTarget, Step::TargetInit).fails().exits(Actor::Target, 31, ExitInfo::Signal(9)),
    Pass,
    "the kit killed the target"
)]
#[case::completed(Rec::handover(), Na, "the transfer did not fail")]
#[case::refused(Rec::refused(BadRequest::PrivateRam), Na, "the transfer did not fail")]
fn fail4(#[case] rec: Rec, #[case] status: Status, #[case] evidence: &str) {
    assert_verdict(&check("FAIL-4", rec), status, evidence);
}

// ---------------------------------------------------------------- DONE-1

#[rstest]
#[case::running(Rec::handover(), Pass, "target `running`, source `postmigrate`")]
#[case::paused(Rec::handover().paused(), Pass, "target `paused`, source `postmigrate`")]
#[case::target_not_prior(
    Rec::handover().target(|t| t.runstate = Some("paused".into())),
    Fail,
    "target `paused`, the source was `running`"
)]
#[case::paused_guest_resumed_on_target(
    Rec::handover().paused().target(|t| t.runstate = Some("running".into())),
    Fail,
    "target `running`, the source was `paused`"
)]
#[case::source_not_postmigrate(
    Rec::handover().source(|s| s.runstate = Some("finish-migrate".into())),
    Fail,
    "source `finish-migrate`, not `postmigrate`"
)]
#[case::both_wrong(
    Rec::handover().source(|s| s.runstate = None).target(|t| t.runstate = Some("inmigrate".into())),
    Fail,
    "target `inmigrate`, the source was `running`; source `unknown`, not `postmigrate`"
)]
#[case::failed(Rec::handover().fails(), Na, "the transfer did not complete")]
#[case::exit0_shape_source_exited(
    Rec::handover().one_channel(),
    Pass,
    "target `running`, source exited with status 0"
)]
#[case::exit0_shape_source_stays(
    Rec::handover().one_channel().with(|r| {
        r.source.exit = None;
        r.source.runstate = Some("running".into());
        r.timeline.retain(|e| !matches!(e.what, What::Exited(_)));
    }),
    Fail,
    "source still alive (`running`) after completion, not exited with status 0"
)]
#[case::exit0_shape_source_exits_1(
    Rec::handover().one_channel().with(|r| r.source.exit = Some(ExitInfo::Code(1))),
    Fail,
    "source exited (status 1), not exited with status 0"
)]
#[case::postmigrate_shape_source_exited(
    Rec::handover().exits(Actor::Source, 60, ExitInfo::Code(0)).source(|s| s.runstate = None),
    Fail,
    "source `unknown`, not `postmigrate`"
)]
fn done1(#[case] rec: Rec, #[case] status: Status, #[case] evidence: &str) {
    assert_verdict(&check("DONE-1", rec), status, evidence);
}

// ---------------------------------------------------------------- DONE-2

#[rstest]
#[case::target_running(Rec::handover(), Pass, "the target had loaded the state and was alive")]
#[case::target_paused(Rec::handover().paused(), Pass, "the target had loaded the state and was alive")]
#[case::completion_known_from_the_event_only(
    Rec::handover().source(|s| s.migration = None),
    Pass,
    "the target had loaded the state and was alive"
)]
#[case::target_exited_before_final_readings(
    Rec::handover().exits(Actor::Target, 50, ExitInfo::Code(1)),
    Fail,
    "the source reported completion, but the target exited (status 1)"
)]
#[case::target_inmigrate(
    Rec::handover().target(|t| t.runstate = Some("inmigrate".into())),
    Fail,
    "the source reported completion, but the target never loaded the state (`inmigrate`)"
)]
#[case::target_never_answered(
    Rec::handover().target(|t| t.runstate = None),
    Fail,
    "the source reported completion, but the target never answered"
)]
#[case::failed(Rec::handover().fails(), Na, "the source did not report completion")]
fn done2(#[case] rec: Rec, #[case] status: Status, #[case] evidence: &str) {
    assert_verdict(&check("DONE-2", rec), status, evidence);
}

#[test]
fn done2_detail_orders_exit_and_completion() {
    let v = check(
        "DONE-2",
        Rec::handover().exits(Actor::Target, 50, ExitInfo::Code(1)),
    );
    assert_eq!(
        v.detail,
        "target ended at +50.0 ms, completion reported at +45.0 ms"
    );
}

// ---------------------------------------------------------------- MEM-1

#[rstest]
#[case::carries_on_on_the_target(
    Rec::handover(),
    Pass,
    "the target maps the source's RAM memfd; guest memory carries on on the target"
)]
#[case::paused_guest_unchanged(Rec::handover().paused(), Pass, "guest memory carries on on the target")]
#[case::carries_on_on_the_source(Rec::handover().fails(), Pass, "guest memory carries on on the source")]
#[case::inode_not_mapped(
    // A copy of RAM into a fresh memfd.
    Rec::handover().with(|r| r.target_init.as_mut().unwrap().mapped_inodes = Some(BTreeSet::from([RAM + 1]))),
    Fail,
    "the target does not map the source's RAM memfd: RAM was not handed over in place"
)]
#[case::nothing_mapped(
    Rec::handover().with(|r| r.target_init.as_mut().unwrap().mapped_inodes = Some(BTreeSet::new())),
    Fail,
    "the target does not map the source's RAM memfd"
)]
#[case::counter_went_back(
    Rec::handover().target(|t| t.counter = Some(CUT - 1)),
    Fail,
    "the guest counter went back on the target"
)]
#[case::counter_went_back_on_the_source(
    Rec::handover().fails().source(|s| s.counter = Some(3)),
    Fail,
    "the guest counter went back on the source"
)]
#[case::ring_error(
    Rec::handover().target(|t| t.ring = Some(Err("record 12 missing (slot holds 4)".into()))),
    Fail,
    "a guest write was lost on the target"
)]
#[case::running_target_counter_still(
    Rec::handover().target(|t| t.counter_moving = Some(false)),
    Fail,
    "the target runs but its guest counter does not move"
)]
#[case::paused_guest_memory_changed(
    Rec::handover().paused().target(|t| t.counter = Some(CUT + 1)),
    Fail,
    "the guest was paused, yet its memory changed across the handover"
)]
#[case::source_killed(
    // Nothing to read on a dead source: the in-place handover is all there is.
    Rec::handover().fault(Fault::KillSource, Step::MainStream).fails().exits(Actor::Source, 36, ExitInfo::Signal(9)).source(|s| s.counter = Some(0)),
    Pass,
    "the target maps the source's RAM memfd"
)]
#[case::maps_unreadable(
    Rec::handover().with(|r| r.target_init.as_mut().unwrap().mapped_inodes = None),
    Na,
    "the target's mappings could not be read at target-init"
)]
#[case::no_target_init(
    Rec::handover().fault(Fault::KillTarget, Step::CprSave).fails().with(|r| r.target_init = None),
    Na,
    "the target never loaded the CPR state"
)]
#[case::no_source_inode(Rec::handover().with(|r| r.source_ram_inode = None), Na, "the target never loaded the CPR state")]
#[case::one_channel_holds(
    Rec::handover().one_channel(),
    Pass,
    "the target holds the source's RAM memfd; guest memory carries on on the target"
)]
#[case::one_channel_holds_another(
    Rec::handover().one_channel().with(|r| r.target_init.as_mut().unwrap().mapped_inodes = Some(BTreeSet::from([RAM + 1]))),
    Fail,
    "the target does not hold the source's RAM memfd"
)]
fn mem1(#[case] rec: Rec, #[case] status: Status, #[case] evidence: &str) {
    assert_verdict(&check("MEM-1", rec), status, evidence);
}

#[test]
fn mem1_details_name_inodes_and_the_lost_record() {
    let v = check(
        "MEM-1",
        Rec::handover()
            .with(|r| r.target_init.as_mut().unwrap().mapped_inodes = Some(BTreeSet::from([5]))),
    );
    assert_eq!(
        v.detail,
        format!("source RAM inode {RAM}, target maps {{5}}")
    );
    let v = check(
        "MEM-1",
        Rec::handover().target(|t| t.ring = Some(Err("record 12 missing".into()))),
    );
    assert_eq!(v.detail, "record 12 missing");
}

/// A paused guest whose target RAM could not be read at the end (the target
/// held no readable RAM memfd, so `counter` is `None`): nothing says its memory
/// changed, yet MEM-1 fails claiming it did. See the report: memory.rs compares
/// `side.counter != at_cut` with `side.counter == None`.
#[test]
fn mem1_unread_counter_is_not_a_change() {
    let v = check(
        "MEM-1",
        Rec::handover().paused().target(|t| t.counter = None),
    );
    assert_ne!(v.status, Fail, "{v:#?}");
}

// ---------------------------------------------------------------- ERR-1

#[rstest]
#[case::refused_unchanged(
    Rec::refused(BadRequest::NoMainChannel),
    Pass,
    "refused (no-main-channel); the source still `running`"
)]
#[case::refused_unchanged_paused(
    Rec::refused(BadRequest::PrivateRam).with(|r| r.prior = "paused".into()).source(|s| {
        s.runstate = Some("paused".into());
        s.counter_moving = None;
    }),
    Pass,
    "refused (private-ram); the source still `paused`"
)]
#[case::accepted(
    Rec::refused(BadRequest::NonUnixCpr).with(|r| r.migrate = MigrateReply::Accepted),
    Fail,
    "a malformed request (non-unix-cpr) was accepted"
)]
#[case::source_died(
    Rec::refused(BadRequest::NoMainChannel).exits(Actor::Source, 12, ExitInfo::Signal(6)),
    Fail,
    "the source process died on a malformed request (no-main-channel): exited (killed by SIGABRT)"
)]
#[case::no_answer(
    Rec::refused(BadRequest::NoMainChannel).with(|r| r.migrate = MigrateReply::NoAnswer("monitor: EOF".into())),
    Fail,
    "no answer to a malformed request (no-main-channel)"
)]
#[case::refused_but_stopped(
    Rec::refused(BadRequest::PrivateRam).source(|s| s.runstate = Some("paused".into())),
    Fail,
    "refused, but the VM state changed (`running` -> `paused`)"
)]
#[case::refused_but_stopped_and_resumed(
    // Same runstate at the end, but it was stopped and resumed meanwhile.
    Rec::refused(BadRequest::PrivateRam).ev(12, Actor::Source, VmEvent::Stop).ev(13, Actor::Source, VmEvent::Resume),
    Fail,
    "refused, but the source stopped and resumed around the refusal (a STOP/RESUME pair)"
)]
#[case::refused_but_guest_stuck(
    Rec::refused(BadRequest::NonUnixCpr).source(|s| s.counter_moving = Some(false)),
    Fail,
    "refused, but the guest stopped moving"
)]
#[case::never_sent(Rec::refused(BadRequest::NoMainChannel).with(|r| r.migrate = MigrateReply::NotSent), Na, "the request was never sent")]
#[case::no_bad_request(Rec::handover(), Na, "no malformed request")]
#[case::other_fault(Rec::handover().fault(Fault::Cancel, Step::CprSave), Na, "no malformed request")]
fn err1(#[case] rec: Rec, #[case] status: Status, #[case] evidence: &str) {
    assert_verdict(&check("ERR-1", rec), status, evidence);
}

// ---------------------------------------------------------------- ERR-2

#[rstest]
#[case::every_step_ended(Rec::handover(), Pass, "every step ended within its bound")]
#[case::failed_in_time(Rec::handover().fails(), Pass, "every step ended within its bound")]
#[case::not_ended_in_time(
    Rec::handover().status(45, "active").with(|r| r.ended_in_time = false),
    Fail,
    "the source's migration never ended (still `active`)"
)]
#[case::cancel_restores_prior(
    Rec::cancelled(Step::MainStream),
    Pass,
    "the cancel at main-stream returned the source to `running`"
)]
#[case::cancel_restores_paused(
    Rec::handover().paused().fault(Fault::Cancel, Step::TargetInit).fails().status(45, "cancelled").with(|r| {
        r.cancel = Some(CancelObs { step: Step::TargetInit, refused: None, ended: Some("cancelled".into()) })
    }),
    Pass,
    "the cancel at target-init returned the source to `paused`"
)]
#[case::cancel_never_ended(
    Rec::cancelled(Step::CprSave).status(45, "active").with(|r| r.cancel.as_mut().unwrap().ended = None),
    Fail,
    "after a cancel at cpr-save, the source's migration did not end"
)]
#[case::cancel_ended_source_still_stopped(
    Rec::cancelled(Step::TargetResume).source(|s| s.runstate = Some("finish-migrate".into())),
    Fail,
    "after a cancel at target-resume, the source stayed `finish-migrate`, not `running`"
)]
#[case::cancel_killed_the_source(
    Rec::cancelled(Step::MainStream).exits(Actor::Source, 47, ExitInfo::Signal(11)),
    Fail,
    "the source process died after the cancel"
)]
#[case::hang_target_cancel(
    Rec::handover()
        .fault(Fault::HangTarget, Step::TargetListen)
        .fails()
        .status(45, "cancelled")
        .with(|r| r.cancel = Some(CancelObs { step: Step::TargetListen, refused: None, ended: Some("cancelled".into()) })),
    Pass,
    "the cancel at target-listen returned the source to `running`"
)]
#[case::cancel_after_completion(
    Rec::handover()
        .fault(Fault::Cancel, Step::TargetResume)
        .with(|r| r.cancel = Some(CancelObs { step: Step::TargetResume, refused: Some("too late".into()), ended: Some("completed".into()) })),
    Pass,
    "the transfer had completed when the cancel came"
)]
#[case::refused(Rec::refused(BadRequest::NoMainChannel), Na, "no transfer started")]
fn err2(#[case] rec: Rec, #[case] status: Status, #[case] evidence: &str) {
    assert_verdict(&check("ERR-2", rec), status, evidence);
}

// ---------------------------------------------------------------- judge

const CONTRACT_IDS: [&str; 13] = [
    "ORD-1", "FAIL-1", "FAIL-2", "FAIL-3", "FAIL-4", "DONE-0", "DONE-1", "DONE-2", "MEM-1",
    "ERR-1", "ERR-2", "LIVE-1", "REACH-1",
];

#[rstest]
#[case::handover(Rec::handover())]
#[case::paused(Rec::handover().paused())]
#[case::failed(Rec::handover().fails())]
#[case::cancelled(Rec::cancelled(Step::CprSave))]
#[case::refused(Rec::refused(BadRequest::NonUnixCpr))]
fn judge_gives_one_verdict_per_rule_in_order(#[case] rec: Rec) {
    let r = rec.build();
    let verdicts = judge(&r);
    let ids: Vec<&str> = verdicts.iter().map(|v| v.rule).collect();
    let memory_rules: Vec<&Rule> = rules_for(false).collect();
    let rule_ids: Vec<&str> = memory_rules.iter().map(|r| r.id).collect();
    assert_eq!(ids, rule_ids);
    assert_eq!(ids, CONTRACT_IDS);
    for (v, rule) in verdicts.iter().zip(memory_rules) {
        assert_eq!(
            *v,
            (rule.check)(&r),
            "{} judged differently by judge()",
            rule.id
        );
    }
}

#[test]
fn judge_on_correct_trials() {
    let statuses = |rec: Rec| {
        judge(&rec.build())
            .iter()
            .map(|v| v.status)
            .collect::<Vec<_>>()
    };
    // ORD-1, FAIL-1..4, DONE-0, DONE-1, DONE-2, MEM-1, ERR-1, ERR-2, LIVE-1, REACH-1
    assert_eq!(
        statuses(Rec::handover()),
        [
            Pass, Na, Na, Pass, Na, Pass, Pass, Pass, Pass, Na, Pass, Pass, Na
        ]
    );
    assert_eq!(
        statuses(Rec::handover().paused()),
        [
            Pass, Na, Na, Pass, Na, Pass, Pass, Pass, Pass, Na, Pass, Pass, Na
        ]
    );
    // A fault-free handover that fails: DONE-0 says the handover never happened.
    assert_eq!(
        statuses(Rec::handover().fails()),
        [
            Pass, Pass, Pass, Pass, Pass, Fail, Na, Na, Pass, Na, Pass, Pass, Na
        ]
    );
    assert_eq!(
        statuses(Rec::cancelled(Step::CprSave)),
        [
            Pass, Pass, Pass, Pass, Pass, Pass, Na, Na, Pass, Na, Pass, Pass, Pass
        ]
    );
    assert_eq!(
        statuses(Rec::refused(BadRequest::PrivateRam)),
        [Na, Na, Na, Na, Na, Na, Na, Na, Na, Pass, Na, Pass, Pass]
    );
}

#[test]
fn rule_lookup() {
    for id in CONTRACT_IDS {
        assert_eq!(rule(id).map(|r| r.id), Some(id));
        assert!(!rule(id).unwrap().text.is_empty());
    }
    let ord2 = rule("ORD-2").expect("a rule of the contract");
    assert!(ord2.device, "ORD-2 applies to profiles with a device only");
    assert!(!rules_for(false).any(|r| r.id == "ORD-2"));
    assert!(rule("ord-1").is_none());
}

// ---------------------------------------------------------------- DONE-0

/// A valid migrate command refused with `desc`: nothing else happened.
fn refused_valid(mut rec: Rec, desc: &str) -> Rec {
    let refused = Rec::refused(BadRequest::NoMainChannel).0;
    rec.0.timeline = refused.timeline;
    rec.0.migrate = MigrateReply::Refused(desc.into());
    rec.0.cutover = None;
    rec.0.target_init = None;
    rec.0.source = refused.source;
    rec.0.target = refused.target;
    rec.0.injected = false;
    rec
}

/// The migrate command got no answer: the monitor failed.
fn unanswered(rec: Rec) -> Rec {
    let mut rec = refused_valid(rec, "");
    rec.0.migrate = MigrateReply::NoAnswer("timed out after 5s waiting for the reply".into());
    rec.0
        .timeline
        .retain(|e| !matches!(e.what, What::Refused { .. }));
    rec
}

#[rstest]
#[case::completed(Rec::handover(), Pass, "the handover completed")]
#[case::fault_free_failed(
    Rec::handover().fails(),
    Fail,
    "the source's migration ended `failed`, not `completed`, during a fault-free handover"
)]
#[case::stalled(
    Rec::handover().fails().status(45, "setup").with(|r| r.ended_in_time = false),
    Fail,
    "the source's migration never completed (still `setup`)"
)]
#[case::source_crashed(
    Rec::handover().fails().exits(Actor::Source, 30, ExitInfo::Signal(6)),
    Fail,
    "the source exited (killed by SIGABRT) before the handover completed"
)]
#[case::refused(
    refused_valid(Rec::handover(), "cpr-transfer is not supported"),
    Fail,
    "a valid migrate was refused, during a fault-free handover"
)]
#[case::refused_at_a_fault(
    refused_valid(Rec::handover().fault(Fault::KillTarget, Step::CprSave), "no"),
    Fail,
    "a valid migrate was refused, during the handover with kill-target@cpr-save"
)]
#[case::refused_with_the_target_gone(
    refused_valid(Rec::handover().fault(Fault::KillTarget, Step::TargetListen), "connect: ENOENT"),
    Pass,
    "the target was gone before it came"
)]
#[case::unanswered(
    unanswered(Rec::handover()),
    Fail,
    "a valid migrate was never answered"
)]
#[case::died_on_migrate(
    unanswered(Rec::handover()).exits(Actor::Source, 12, ExitInfo::Signal(11)),
    Fail,
    "the source exited (killed by SIGSEGV) on a valid migrate"
)]
#[case::a_delay_is_harmless(
    Rec::handover().fault(Fault::DeviceDelay, Step::TargetInit),
    Pass,
    "the handover completed"
)]
#[case::a_failure_at_a_fault(
    Rec::cancelled(Step::CprSave),
    Pass,
    "accepted and the transfer ended `cancelled`"
)]
#[case::malformed(Rec::refused(BadRequest::NonUnixCpr), Na, "ERR-1 judges it")]
fn done0(#[case] rec: Rec, #[case] status: Status, #[case] evidence: &str) {
    assert_verdict(&check("DONE-0", rec), status, evidence);
}

// ---------------------------------------------------------------- LIVE-1

#[rstest]
#[case::handover(Rec::handover(), Pass, "no VMM died")]
#[case::target_exits_after_a_failure(Rec::handover().fails(), Pass, "no VMM died")]
#[case::source_aborts(
    Rec::handover().fails().exits(Actor::Source, 30, ExitInfo::Signal(6)),
    Fail,
    "the source died (killed by SIGABRT) during a fault-free handover"
)]
#[case::target_segfaults(
    Rec::handover().fails().exits(Actor::Target, 30, ExitInfo::Signal(11)),
    Fail,
    "the target died (killed by SIGSEGV) during a fault-free handover"
)]
#[case::source_quits_early(
    Rec::handover().fails().exits(Actor::Source, 25, ExitInfo::Code(0)),
    Fail,
    "the source exited (status 0) before its migration ended"
)]
#[case::source_exits_0_after_completion(
    Rec::handover().exits(Actor::Source, 60, ExitInfo::Code(0)).source(|s| s.migration = migration("completed")),
    Pass,
    "no VMM died"
)]
#[case::killed_by_the_kit(
    Rec::handover().fails().fault(Fault::KillSource, Step::CprSave).exits(Actor::Source, 25, ExitInfo::Signal(9)),
    Pass,
    "no VMM died"
)]
#[case::crash_on_a_bad_request(
    Rec::refused(BadRequest::NoMainChannel).exits(Actor::Source, 12, ExitInfo::Signal(11)),
    Fail,
    "the source died (killed by SIGSEGV) during the handover with bad-request:no-main-channel@source-stop"
)]
#[case::exit0_shape_source_exits_0_after_completion(Rec::handover().one_channel(), Pass, "no VMM died")]
#[case::exit0_shape_source_exits_1_after_completion(
    Rec::handover().one_channel().with(|r| r.source.exit = Some(ExitInfo::Code(1))),
    Fail,
    "the source exited (status 1) after the transfer completed"
)]
#[case::exit0_shape_source_quits_on_failure(
    Rec::handover().one_channel().fails().exits(Actor::Source, 50, ExitInfo::Code(0)),
    Fail,
    "the source exited (status 0) before its migration ended"
)]
fn live1(#[case] rec: Rec, #[case] status: Status, #[case] evidence: &str) {
    assert_verdict(&check("LIVE-1", rec), status, evidence);
}

// ---------------------------------------------------------------- REACH-1

#[test]
fn reach1_fails_a_point_never_reached_and_names_its_cause() {
    let mut rec = refused_valid(Rec::handover(), "cpr-transfer is not supported")
        .fault(Fault::KillTarget, Step::CprSave);
    rec.0.injected = false;
    let r = rec.build();
    let alone = check("REACH-1", Rec(r.clone()));
    assert_verdict(
        &alone,
        Fail,
        "the fault point kill-target@cpr-save was never reached: the trial tested nothing it names",
    );
    assert!(!alone.evidence.contains("explained"), "{alone:?}");
    let judged = judge(&r);
    let reach = judged.iter().find(|v| v.rule == "REACH-1").unwrap();
    assert_verdict(reach, Fail, "(explained by DONE-0, broken in this trial)");
    assert_eq!(
        judged.last().map(|v| v.rule),
        Some("REACH-1"),
        "judged last"
    );
}

#[rstest]
#[case::reached(
    Rec::cancelled(Step::TargetInit),
    Pass,
    "cancel@target-init was reached and injected"
)]
#[case::fault_free(Rec::handover(), Na, "no fault point")]
fn reach1(#[case] rec: Rec, #[case] status: Status, #[case] evidence: &str) {
    assert_verdict(&check("REACH-1", rec), status, evidence);
}

// ---------------------------------------------- FAIL-1 on a refused migrate

#[rstest]
#[case::refused_and_unchanged(
    refused_valid(Rec::handover().fault(Fault::KillTarget, Step::TargetListen), "gone"),
    Pass,
    "refused; source back to `running`"
)]
#[case::refused_and_left_stopped(
    refused_valid(Rec::handover().fault(Fault::KillTarget, Step::TargetListen), "gone")
        .source(|s| s.runstate = Some("finish-migrate".into())),
    Fail,
    "refused; source ended `finish-migrate`; it was `running` when migrate came"
)]
#[case::a_source_that_died_is_live1s(
    Rec::handover().fails().exits(Actor::Source, 30, ExitInfo::Signal(6)),
    Na,
    "LIVE-1 judges it"
)]
fn fail1_refusals_and_deaths(#[case] rec: Rec, #[case] status: Status, #[case] evidence: &str) {
    assert_verdict(&check("FAIL-1", rec), status, evidence);
}

// ------------------------------------------- FAIL-4 reads the target's status

#[rstest]
#[case::failed_but_alive(
    Rec::handover().fails().target_left(Some("inmigrate")).target(|t| t.migration = migration("failed")),
    Pass,
    "the target's own migration ended `failed` and it stayed stopped (`inmigrate`)"
)]
#[case::still_waiting(
    Rec::handover().fails().target_left(Some("inmigrate")).target(|t| t.migration = migration("active")),
    Fail,
    "the target still waited for the migration (`inmigrate`)"
)]
fn fail4_reads_the_targets_own_status(
    #[case] rec: Rec,
    #[case] status: Status,
    #[case] evidence: &str,
) {
    assert_verdict(&check("FAIL-4", rec), status, evidence);
}

// ------------------------------------- ERR-1 names a STOP/RESUME pair

#[test]
fn err1_names_the_stop_resume_pair_around_a_refusal_and_its_times() {
    let rec = Rec::refused(BadRequest::NoMainChannel)
        .ev(11, Actor::Source, VmEvent::Stop)
        .ev(13, Actor::Source, VmEvent::Resume);
    let v = check("ERR-1", rec);
    assert_verdict(
        &v,
        Fail,
        "refused, but the source stopped and resumed around the refusal (a STOP/RESUME pair); it ended `running`, it was `running`",
    );
    assert_eq!(v.detail, "STOP at +11.0 ms, RESUME at +13.0 ms");
}

// ------------------------------------------ schedules of several faults

/// A later fault of the schedule, injected or not.
fn later(mut rec: Rec, fault: Fault, step: Step, injected: bool) -> Rec {
    rec.0.later.push(crate::record::LaterFault {
        point: FaultPoint::new(fault, step).expect("a valid fault point"),
        injected,
    });
    rec
}

#[test]
fn reach1_a_later_fault_after_one_that_ended_the_handover_is_preempted() {
    let rec = later(
        Rec::cancelled(Step::CprSave),
        Fault::KillTarget,
        Step::MainStream,
        false,
    );
    assert_verdict(
        &check("REACH-1", rec),
        Pass,
        "cancel@cpr-save reached and injected; kill-target@main-stream pre-empted (the handover had ended)",
    );
}

#[test]
fn reach1_a_later_fault_after_a_harmless_one_must_be_reached() {
    let rec = Rec::handover().fault(Fault::DeviceDelay, Step::ReleaseOwner);
    let missed = later(rec, Fault::Cancel, Step::TargetInit, false);
    assert_verdict(
        &check("REACH-1", missed),
        Fail,
        "the fault point cancel@target-init was never reached: the trial tested nothing it names",
    );
    // The device's fault of a step comes first in a schedule.
    let rec = Rec::cancelled(Step::TargetInit).fault(Fault::DeviceDelay, Step::TargetInit);
    let rec = later(rec, Fault::Cancel, Step::TargetInit, true);
    assert_verdict(
        &check("REACH-1", rec),
        Pass,
        "device-delay@target-init, cancel@target-init reached and injected",
    );
}

#[test]
fn reach1_a_fault_the_vmm_never_got_to_after_one_that_ended_it_is_preempted() {
    // A source that sends its CPR state before it releases its device,
    // killed at cpr-save: the release never comes.
    let mut rec = Rec::handover().fault(Fault::DeviceDisconnect, Step::ReleaseOwner);
    rec.0.injected = false;
    let rec = later(rec, Fault::KillSource, Step::CprSave, true);
    assert_verdict(
        &check("REACH-1", rec),
        Pass,
        "kill-source@cpr-save reached and injected; device-disconnect@release-owner pre-empted",
    );
    // Nothing at all reached: the trial tested nothing.
    let mut rec = Rec::handover().fault(Fault::DeviceDisconnect, Step::ReleaseOwner);
    rec.0.injected = false;
    let rec = later(rec, Fault::KillSource, Step::CprSave, false);
    assert_verdict(
        &check("REACH-1", rec),
        Fail,
        "the fault point device-disconnect@release-owner was never reached: the trial tested nothing it names",
    );
}

#[test]
fn reach1_a_later_fault_never_reached_names_the_rules_that_explain_it() {
    let rec = Rec::handover()
        .fault(Fault::DeviceDelay, Step::TargetInit)
        .fails();
    let r = later(rec, Fault::KillSource, Step::TargetInit, false).build();
    let judged = judge(&r);
    let reach = judged.iter().find(|v| v.rule == "REACH-1").unwrap();
    assert_verdict(
        reach,
        Fail,
        "the fault point kill-source@target-init was never reached: the trial tested nothing it names (explained by DONE-0, broken in this trial)",
    );
}

#[test]
fn done0_a_later_injected_fault_that_fails_the_transfer_forbids_completion() {
    let delay = Rec::handover().fault(Fault::DeviceDelay, Step::ReleaseOwner);
    let completed = later(delay, Fault::Cancel, Step::TargetInit, true);
    assert_verdict(&check("DONE-0", completed), Pass, "the handover completed");
    let failed = later(
        Rec::handover()
            .fault(Fault::DeviceDelay, Step::ReleaseOwner)
            .fails(),
        Fault::Cancel,
        Step::TargetInit,
        true,
    );
    assert_verdict(
        &check("DONE-0", failed),
        Pass,
        "the migrate was accepted and the transfer ended",
    );
    // The cancel never came: the delay alone is harmless, a failure is not.
    let missed = later(
        Rec::handover()
            .fault(Fault::DeviceDelay, Step::ReleaseOwner)
            .fails(),
        Fault::Cancel,
        Step::TargetInit,
        false,
    );
    assert_verdict(
        &check("DONE-0", missed),
        Fail,
        "during the handover with device-delay@release-owner, cancel@target-init",
    );
}

#[test]
fn live1_a_later_kill_of_the_schedule_is_the_kits() {
    let rec = later(
        Rec::handover()
            .fault(Fault::DeviceDelay, Step::ReleaseOwner)
            .fails()
            .exits(Actor::Target, 30, ExitInfo::Signal(9)),
        Fault::KillTarget,
        Step::MainStream,
        true,
    );
    assert_eq!(check("LIVE-1", rec).status, Pass);
}

/// A chain of `hops` handovers whose earlier hops are `earlier` and last is `last`.
fn chain(
    hops: u32,
    point: Option<FaultPoint>,
    fault_hop: u32,
    earlier: Vec<TrialRecord>,
    last: Rec,
) -> TrialRecord {
    let mut r = last.build();
    r.chain = Some(crate::record::Chain {
        hops,
        fault_hop,
        point,
        earlier,
    });
    r
}

/// A completed handover whose counter readings are `by` lower (an earlier hop).
fn earlier_hop(by: u64) -> TrialRecord {
    let mut r = Rec::handover().build();
    let c = r.cutover.as_mut().unwrap();
    c.counter = c.counter.map(|(a, b)| (a - by, b - by));
    for end in [&mut r.source, &mut r.target] {
        end.counter = end.counter.map(|n| n - by);
    }
    r
}

#[test]
fn chain1_needs_every_hop_and_a_counter_that_never_goes_back() {
    let ok = || earlier_hop(2000);
    let v = judge(&chain(
        3,
        None,
        1,
        vec![earlier_hop(4000), ok()],
        Rec::handover(),
    ));
    let c = v
        .iter()
        .find(|v| v.rule == "CHAIN-1")
        .expect("CHAIN-1 judged");
    assert_verdict(c, Pass, "3 handovers in a row");
    // CHAIN-1 goes before REACH-1, and is judged only for a chain.
    assert_eq!(v[v.len() - 2].rule, "CHAIN-1");
    assert!(judge(&ok()).iter().all(|v| v.rule != "CHAIN-1"));

    // A chain that stopped at hop 2 of 3 with no fault there.
    let stopped = judge(&chain(3, None, 1, vec![ok()], Rec::handover()));
    let c = stopped.iter().find(|v| v.rule == "CHAIN-1").unwrap();
    assert_verdict(c, Fail, "only 2 of 3 handovers happened");

    // The counter went back: hop 2 read less than hop 1 left.
    let mut back = Rec::handover();
    back.0.target.counter = Some(1);
    back.0.source.counter = Some(1);
    back.0.cutover.as_mut().unwrap().counter = Some((1, 1));
    let v = check_chain(chain(2, None, 1, vec![ok()], back));
    assert_verdict(&v, Fail, "the guest counter went back between hops");
}

#[test]
fn an_earlier_hops_break_is_the_trials_break_of_that_rule() {
    let mut bad = earlier_hop(2000);
    bad.cutover.as_mut().unwrap().source_runstate = Some("running".into());
    bad.cutover.as_mut().unwrap().counter = Some((CUT - 2010, CUT - 2005));
    let v = judge(&chain(2, None, 1, vec![bad], Rec::handover()));
    let ord1 = v.iter().find(|v| v.rule == "ORD-1").unwrap();
    assert_eq!(ord1.status, Fail, "{ord1:#?}");
    assert!(ord1.evidence.starts_with("hop 1: "), "{ord1:#?}");
}

fn check_chain(r: TrialRecord) -> Verdict {
    (super::CHAIN_RULE.check)(&r)
}
