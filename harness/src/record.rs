//! What a trial observed: the timeline and the readings the kit took at the
//! hold points and at the end. Rules judge a [`TrialRecord`] and nothing else.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::adapter::{MigrationInfo, Role, VmEvent};
use crate::plan::{Fault, FaultPoint, GuestState, Step};
use crate::process::ExitInfo;
use crate::timeline::{Actor, Entry, What};

/// How the migrate command was answered.
#[derive(Debug, Clone, PartialEq)]
pub enum MigrateReply {
    Accepted,
    Refused(String),
    /// No answer: the monitor failed (the process may have crashed).
    NoAnswer(String),
    /// The trial never got as far as sending it.
    NotSent,
}

/// Readings at the cut-over, while the first fds were held.
#[derive(Debug, Clone, PartialEq)]
pub struct CutOver {
    pub at: Duration,
    pub fds: usize,
    /// The source's runstate while the fds were held.
    pub source_runstate: Option<String>,
    /// The guest counter read from the memfd at the start and at the end of the hold.
    pub counter: Option<(u64, u64)>,
    /// Whether the fds went on to the target.
    pub forwarded: bool,
}

/// Readings when the target had loaded the CPR state (closed the cpr channel).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetInit {
    pub at: Duration,
    /// The target's monitor answered.
    pub monitor: bool,
    /// The memfd inodes the target maps under the guest RAM's name (`None`
    /// when its maps could not be read).
    pub mapped_inodes: Option<BTreeSet<u64>>,
}

/// What the kit saw of one process at the end.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProcEnd {
    /// How it ended, if it ended before the kit stopped it.
    pub exit: Option<ExitInfo>,
    pub runstate: Option<String>,
    pub migration: Option<MigrationInfo>,
    /// Still alive when the trial ended: the kit killed it.
    pub killed_at_end: bool,
    /// The guest counter at the end (from this process's RAM memfd).
    pub counter: Option<u64>,
    /// While it was running at the end, whether its guest counter moved.
    pub counter_moving: Option<bool>,
    /// The record ring checked at the end.
    pub ring: Option<Result<(), String>>,
}

/// What happened to the kit's cancel (faults cancel and hang-target).
#[derive(Debug, Clone, PartialEq)]
pub struct CancelObs {
    pub step: Step,
    pub refused: Option<String>,
    /// The source's migration reached a terminal status within the bound.
    pub ended: Option<String>,
}

/// Everything a trial observed.
#[derive(Debug, Clone)]
pub struct TrialRecord {
    pub name: String,
    pub vmm: String,
    pub guest: GuestState,
    pub point: Option<FaultPoint>,
    /// The fault point was reached and the fault injected.
    pub injected: bool,
    /// The source's runstate when the migrate command came.
    pub prior: String,
    pub migrate: MigrateReply,
    pub cutover: Option<CutOver>,
    pub target_init: Option<TargetInit>,
    /// The inode of the source's RAM memfd.
    pub source_ram_inode: Option<u64>,
    pub cancel: Option<CancelObs>,
    pub source: ProcEnd,
    pub target: ProcEnd,
    /// The source's migration ended (or its process did) within the bound.
    pub ended_in_time: bool,
    pub settle: Duration,
    pub timeline: Vec<Entry>,
    /// The trial directory (for redaction; removed unless kept).
    pub dir: PathBuf,
    pub kept_dir: bool,
}

impl TrialRecord {
    /// The record of a trial that has observed nothing yet.
    pub fn new(
        name: String,
        vmm: String,
        guest: GuestState,
        point: Option<FaultPoint>,
        settle: Duration,
        dir: PathBuf,
        kept_dir: bool,
    ) -> Self {
        TrialRecord {
            name,
            vmm,
            guest,
            point,
            injected: false,
            prior: String::new(),
            migrate: MigrateReply::NotSent,
            cutover: None,
            target_init: None,
            source_ram_inode: None,
            cancel: None,
            source: ProcEnd::default(),
            target: ProcEnd::default(),
            ended_in_time: true,
            settle,
            timeline: Vec::new(),
            dir,
            kept_dir,
        }
    }

    pub fn fault(&self) -> Option<Fault> {
        self.point.map(|p| p.fault)
    }

    pub fn injected_fault(&self) -> Option<Fault> {
        self.point.filter(|_| self.injected).map(|p| p.fault)
    }

    /// The source's final migration status, as reported.
    pub fn status(&self) -> Option<&str> {
        self.source
            .migration
            .as_ref()
            .map(|m| m.status.as_str())
            .or_else(|| self.last_migration_event(Actor::Source))
    }

    pub fn completed(&self) -> bool {
        self.status() == Some("completed")
    }

    /// The migration was accepted and did not complete.
    pub fn failed(&self) -> bool {
        self.migrate == MigrateReply::Accepted && !self.completed()
    }

    /// The kit killed this side as the trial's fault.
    pub fn killed_by_fault(&self, role: Role) -> bool {
        let f = self.injected_fault();
        matches!(
            (role, f),
            (Role::Source, Some(Fault::KillSource)) | (Role::Target, Some(Fault::KillTarget))
        )
    }

    /// Entries of one actor, in arrival order.
    pub fn of(&self, actor: Actor) -> impl Iterator<Item = &Entry> {
        self.timeline.iter().filter(move |e| e.actor == actor)
    }

    pub fn events(&self, actor: Actor) -> impl Iterator<Item = (&Entry, &VmEvent)> {
        self.of(actor).filter_map(|e| match &e.what {
            What::Event(ev) => Some((e, ev)),
            _ => None,
        })
    }

    fn last_migration_event(&self, actor: Actor) -> Option<&str> {
        self.events(actor)
            .filter_map(|(_, ev)| match ev {
                VmEvent::Migration(s) => Some(s.as_str()),
                _ => None,
            })
            .last()
    }

    /// The first entry of the kit's `migrate` action.
    pub fn migrate_at(&self) -> Option<Duration> {
        self.of(Actor::Kit)
            .find(|e| e.what == What::Action("migrate".into()))
            .map(|e| e.at)
    }

    /// When a process exited, if it did.
    pub fn exit_at(&self, actor: Actor) -> Option<(Duration, ExitInfo)> {
        self.of(actor).find_map(|e| match e.what {
            What::Exited(x) => Some((e.at, x)),
            _ => None,
        })
    }

    /// When the source first reported a status.
    pub fn source_status_at(&self, status: &str) -> Option<Duration> {
        self.events(Actor::Source)
            .find(|(_, ev)| **ev == VmEvent::Migration(status.into()))
            .map(|(e, _)| e.at)
    }
}
