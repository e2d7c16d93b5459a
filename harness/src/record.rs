//! What a trial observed: the timeline and the readings the kit took at the
//! hold points and at the end. Rules judge a [`TrialRecord`] and nothing else.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use crate::adapter::{HandoverShape, MigrationInfo, Role, VmEvent};
use crate::device::{Backend, ConnState, DeviceState, LedgerEntry, Policy};
use crate::plan::{Fault, FaultPoint, GuestState, Step};
use crate::procinfo::ExitInfo;
use crate::schedule::ChannelHold;
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
    /// How long the kit watched for a guest that still runs, and why that long.
    pub watch: Option<WatchBound>,
}

/// The bound of the kit's watch at the cut-over, derived from the guest's
/// rates measured while it ran before the migrate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WatchBound {
    pub bound: Duration,
    /// The mean time between two guest counter writes (`None`: not measured).
    pub write_interval: Option<Duration>,
    /// The longest still spell of the counter seen while it was timed.
    pub longest_gap: Option<Duration>,
    /// Counter writes the bound spans.
    pub writes: u32,
    /// The mean time between two device I/O requests of the guest.
    pub request_interval: Option<Duration>,
    /// Device requests the bound spans.
    pub requests: u32,
}

impl std::fmt::Display for WatchBound {
    /// `watched up to 7.5 ms (50 guest writes of 150 us each)`, for a
    /// verdict's detail (never its evidence: the figures vary).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        write!(
            f,
            "watched up to {:.1} ms (",
            self.bound.as_secs_f64() * 1e3
        )?;
        match self.write_interval {
            Some(i) => write!(f, "{} guest writes of {:.0} us each", self.writes, us(i))?,
            None => write!(f, "guest write rate not measured")?,
        }
        if let Some(g) = self.longest_gap {
            write!(f, ", still at most {:.0} us between two", us(g))?;
        }
        if let Some(i) = self.request_interval {
            write!(
                f,
                ", {} device requests of {:.0} us each",
                self.requests,
                us(i)
            )?;
        }
        write!(f, ")")
    }
}

/// Readings when the target had loaded the CPR state (closed the cpr
/// channel), or, with one channel, answered the message that passed it the
/// fds, holding the memfd.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetInit {
    pub at: Duration,
    /// The target's monitor answered.
    pub monitor: bool,
    /// The memfd inodes the target maps under the guest RAM's name (`None`
    /// when its maps could not be read); with one channel, those it holds in
    /// its fd table (it maps them later, when it builds the VM).
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

/// What the kit saw of the vhost device (profiles with a device).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceObs {
    /// The backend's name (`kit`, `qemu-storage-daemon`).
    pub backend: &'static str,
    /// Whether the kit could see the backend's state and ledger (its own
    /// daemon): without them the device rules have nothing to judge.
    pub observable: bool,
    pub policy: Policy,
    pub source_pid: Option<i32>,
    pub target_pid: Option<i32>,
    /// The daemon's state just before the migrate command.
    pub before: Option<DeviceState>,
    /// The ledger's sequence number of the kit's cut-over mark, and the
    /// daemon's state, while the first fds were held.
    pub at_cutover: Option<(u64, DeviceState)>,
    /// The ledger's sequence number of the kit's mark at the end of its look
    /// at the source during the cut-over hold (before any fault there).
    pub cutover_watched: Option<u64>,
    /// The daemon's state at the final readings.
    pub end: Option<DeviceState>,
    /// Whether the side that should run the guest at the end did device I/O
    /// then (`None`: not looked for).
    pub io_at_end: Option<(Role, bool)>,
    /// Every entry of the daemon's ledger.
    pub ledger: Vec<LedgerEntry>,
    /// Why the daemon could not be read, if it could not.
    pub error: Option<String>,
}

impl DeviceObs {
    pub fn new(backend: Backend, policy: Policy) -> Self {
        DeviceObs {
            backend: backend.name(),
            observable: backend.observable(),
            policy,
            source_pid: None,
            target_pid: None,
            before: None,
            at_cutover: None,
            cutover_watched: None,
            end: None,
            io_at_end: None,
            ledger: Vec::new(),
            error: None,
        }
    }

    /// Which side a frontend pid is.
    pub fn role_of(&self, pid: Option<i32>) -> Option<Role> {
        match pid {
            Some(p) if Some(p) == self.source_pid => Some(Role::Source),
            Some(p) if Some(p) == self.target_pid => Some(Role::Target),
            _ => None,
        }
    }

    fn pid(&self, role: Role) -> Option<i32> {
        match role {
            Role::Source => self.source_pid,
            Role::Target => self.target_pid,
        }
    }

    /// The open connections of a side in a state.
    pub fn conns<'a>(&self, state: &'a DeviceState, role: Role) -> Vec<&'a ConnState> {
        let pid = self.pid(role);
        state
            .conns
            .iter()
            .filter(|c| c.open && pid.is_some() && c.pid == pid)
            .collect()
    }

    /// Whether a side has a running ring in a state.
    pub fn runs_rings(&self, state: &DeviceState, role: Role) -> bool {
        self.conns(state, role)
            .iter()
            .any(|c| c.rings.iter().any(|r| r.running))
    }

    /// Whether the guest had started the device before the migrate command
    /// (a running ring of the source).
    pub fn started_before(&self) -> bool {
        self.before
            .as_ref()
            .is_some_and(|s| self.runs_rings(s, Role::Source))
    }

    /// Whether a side owns the device in a state, by the policy's rule:
    /// `exclusive`, it holds SET_OWNER on an open connection; `shared`, one of
    /// its rings runs. `None` under `shared` when the guest never started the
    /// device (no ring ever ran: nothing to own by that rule).
    pub fn owns(&self, state: &DeviceState, role: Role) -> Option<bool> {
        match self.policy {
            Policy::Exclusive => Some(self.conns(state, role).iter().any(|c| c.owner)),
            Policy::Shared if self.started_before() => Some(self.runs_rings(state, role)),
            Policy::Shared => None,
        }
    }

    /// Whether the source owns the device again in a state, its rings running
    /// if they ran before the migrate command.
    pub fn source_back(&self, state: &DeviceState) -> bool {
        self.owns(state, Role::Source) == Some(true)
            && (!self.started_before() || self.runs_rings(state, Role::Source))
    }

    /// The ledger entries of a side, in the device's order.
    pub fn ledger_of(&self, role: Role) -> impl Iterator<Item = &LedgerEntry> {
        self.ledger
            .iter()
            .filter(move |e| e.pid.is_some() && e.pid == self.pid(role))
    }
}

/// What happened to the kit's cancel (faults cancel and hang-target).
#[derive(Debug, Clone, PartialEq)]
pub struct CancelObs {
    pub step: Step,
    pub refused: Option<String>,
    /// The source's migration reached a terminal status within the bound.
    pub ended: Option<String>,
}

/// A fault of a schedule after its first, and whether it was injected (a
/// fault that ended the handover before pre-empts it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaterFault {
    pub point: FaultPoint,
    pub injected: bool,
}

/// A chain of handovers (a case's `hops`): what CHAIN-1 judges.
#[derive(Debug, Clone)]
pub struct Chain {
    /// The handovers asked for.
    pub hops: u32,
    /// The hop the trial's fault is at.
    pub fault_hop: u32,
    /// The trial's fault point (at `fault_hop`), if any.
    pub point: Option<FaultPoint>,
    /// The records of the hops before the last one run, in order.
    pub earlier: Vec<TrialRecord>,
}

/// Everything a trial observed.
#[derive(Debug, Clone)]
pub struct TrialRecord {
    pub name: String,
    pub vmm: String,
    /// The shape of the VMM's handover, as its adapter states it: the rules
    /// read these facts (how a source finishes, how many channels), never
    /// the VMM's name.
    pub shape: HandoverShape,
    pub guest: GuestState,
    pub point: Option<FaultPoint>,
    /// Why the case's scenario makes the target refuse the state (the sides
    /// differ so that it cannot load it); `None` when the sides match.
    pub mismatch: Option<String>,
    /// Handovers in a row (`hops` > 1): the hops before this record's, each
    /// whole; this record is the last hop run.
    pub chain: Option<Chain>,
    /// The fault point was reached and the fault injected.
    pub injected: bool,
    /// The schedule's faults after `point` (none in a matrix trial).
    pub later: Vec<LaterFault>,
    /// The schedule's channel holds (none in a matrix trial).
    pub holds: Vec<ChannelHold>,
    /// The source's runstate when the migrate command came.
    pub prior: String,
    pub migrate: MigrateReply,
    pub cutover: Option<CutOver>,
    pub target_init: Option<TargetInit>,
    /// The inode of the source's RAM memfd.
    pub source_ram_inode: Option<u64>,
    pub cancel: Option<CancelObs>,
    /// The vhost device, in profiles with one.
    pub device: Option<DeviceObs>,
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
            shape: HandoverShape::CPR_TRANSFER,
            guest,
            point,
            mismatch: None,
            chain: None,
            injected: false,
            later: Vec::new(),
            holds: Vec::new(),
            prior: String::new(),
            migrate: MigrateReply::NotSent,
            cutover: None,
            target_init: None,
            source_ram_inode: None,
            cancel: None,
            device: None,
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

    /// Every fault the trial injected, in schedule order.
    pub fn injected_points(&self) -> Vec<FaultPoint> {
        self.point
            .filter(|_| self.injected)
            .into_iter()
            .chain(self.later.iter().filter(|l| l.injected).map(|l| l.point))
            .collect()
    }

    /// The kit killed this side as one of the trial's faults.
    pub fn killed_by_fault(&self, role: Role) -> bool {
        self.injected_points().iter().any(|p| {
            matches!(
                (role, p.fault),
                (Role::Source, Fault::KillSource) | (Role::Target, Fault::KillTarget)
            )
        })
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
