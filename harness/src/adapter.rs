//! The contract every VMM wrapper meets: how to start a source and a target, how
//! to find the guest's memory, and how to command the VM (a [`Monitor`]).
//!
//! The adapter only knows how to *command* a VMM. The kit spawns the processes
//! itself (so it can kill and stop them), owns the trial directory and the
//! sockets, and decides the faults.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::faults::{BadRequest, Fault, Injection};
use crate::scenario::{ExtraDevice, OnFailedLoad, Scenario, TargetStart};
use crate::steps::Step;

/// Which side of the handover a process plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Source,
    Target,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Target => "target",
        }
    }

    /// The other side.
    pub fn other(self) -> Role {
        match self {
            Role::Source => Role::Target,
            Role::Target => Role::Source,
        }
    }
}

/// The socket paths a target listens on for an incoming cpr-transfer.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub main: PathBuf,
    pub cpr: PathBuf,
}

/// The channels a handover crosses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Channels {
    /// QEMU's cpr-transfer: a cpr channel for the fds and the CPR state, then
    /// a main channel for the device state (two sockets).
    CprAndMain,
    /// One socket carries the fds and all the state (Cloud Hypervisor's local
    /// migration, a request/response protocol). The kit interposes that one
    /// socket as its cpr channel; there is no main channel.
    One,
}

/// How a target is told to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Receive {
    /// It listens on its channels from its start (QEMU's `-incoming`).
    Listening,
    /// It starts empty and listens once asked on its monitor
    /// ([`Monitor::receive`], sent by the kit after it connected).
    MonitorRequest,
}

/// How a source finishes a completed handover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceEnd {
    /// It stays, in runstate `postmigrate` (QEMU).
    Postmigrate,
    /// It exits with status 0 (Cloud Hypervisor).
    Exit0,
}

/// How the kit learns the migration's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// A status query answers at any time (QMP `query-migrate`), events back it up.
    StatusQuery,
    /// Only the VMM's events tell it (Cloud Hypervisor's event monitor): the
    /// monitor's [`Monitor::migration`] answers from the events it has read,
    /// and can still be asked once the process is gone (they are in a file).
    Events,
}

/// The shape of a VMM's handover: the facts the kit and its rules read
/// instead of a VMM's name (docs/contract.md, "Handover shapes"). The
/// default is QEMU's cpr-transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct HandoverShape {
    pub channels: Channels,
    pub receive: Receive,
    /// Whether the VMM can cancel a migration in flight. Without one, the
    /// faults that need the VMM's cancel (`cancel`, `hang-target`) are not planned.
    pub cancel: bool,
    pub source_end: SourceEnd,
    pub outcome: Outcome,
}

impl HandoverShape {
    /// QEMU's cpr-transfer (and refvmm's): two channels, a target listening
    /// from its start, a cancel, a source left in `postmigrate`, a status query.
    pub const CPR_TRANSFER: HandoverShape = HandoverShape {
        channels: Channels::CprAndMain,
        receive: Receive::Listening,
        cancel: true,
        source_end: SourceEnd::Postmigrate,
        outcome: Outcome::StatusQuery,
    };

    /// Whether a fault point can test anything on a handover of this shape:
    /// without a cancel, no fault that needs one; with one channel, nothing
    /// at the main channel's points (main-stream, target-resume) and no
    /// request that lacks a main channel.
    pub fn plans(&self, fault: Fault, step: Step) -> bool {
        let needs_cancel = matches!(fault.injection(), Injection::Cancel | Injection::HangTarget);
        if needs_cancel && !self.cancel {
            return false;
        }
        if self.channels == Channels::One {
            if matches!(step, Step::MainStream | Step::TargetResume) {
                return false;
            }
            if fault == Fault::BadRequest(BadRequest::NoMainChannel) {
                return false;
            }
        }
        true
    }
}

impl Default for HandoverShape {
    fn default() -> Self {
        HandoverShape::CPR_TRANSFER
    }
}

/// What the kit asks an adapter to launch.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub role: Role,
    /// The trial's private directory (0700).
    pub dir: PathBuf,
    /// Where the VMM must create its monitor socket.
    pub monitor: PathBuf,
    /// For a target: the channels to listen on (with one channel, `cpr` is
    /// its socket). A target that receives on request gets them in
    /// [`Monitor::receive`] too.
    pub incoming: Option<Incoming>,
    /// Guest RAM shared in a memfd (true) or private (false, an ERR-1 case).
    pub shared_ram: bool,
    /// The vhost-user socket of the kit's virtio-blk device, in profiles with
    /// one: the VMM attaches it (QEMU: `vhost-user-blk-pci`).
    pub vhost_user_blk: Option<PathBuf>,
    /// What the case's scenario asks of this side (defaults: as the other
    /// side, started running, a target listening from its start).
    pub setup: SideSetup,
}

/// What a case's scenario asks of one VMM at its start
/// ([`crate::scenario`]); the adapter maps each to its VMM's options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SideSetup {
    /// Start with the guest stopped, never run (QEMU `-S`: `prelaunch`).
    pub start_stopped: bool,
    /// Another RAM size than the other side (twice the adapter's usual).
    pub other_ram: bool,
    /// Extra devices on this side only.
    pub devices: Vec<ExtraDevice>,
    /// A target: listening from its start, or deferred (its main channel
    /// comes by [`Monitor::incoming_main`] once the CPR state arrived).
    pub target_start: TargetStart,
    /// A target: what it does when its load fails.
    pub on_failed_load: OnFailedLoad,
}

/// Where the guest keeps what the kit reads straight from guest RAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestProbe {
    /// The name given to memfd_create for guest RAM (seen as `/memfd:NAME (deleted)`).
    pub ram_memfd_name: String,
    /// Offset of the guest's counter in the RAM memfd (a little-endian integer).
    pub counter_offset: u64,
    /// Width of the counter in bytes (4 or 8).
    pub counter_width: u8,
    /// A ring of sequence-numbered records, where the guest keeps one.
    pub ring: Option<RecordRing>,
    /// Whether the guest does I/O to an attached vhost-user-blk device while it
    /// runs (refvmm's does; a firmware that ignores virtio does not), so that
    /// the kit can ask the device whether I/O works after a handover.
    pub device_io: bool,
}

/// A ring of `entries` records of 16 bytes at `offset`: `seq` then `seq ^ check`,
/// both u64 little-endian, record `seq` in slot `seq % entries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRing {
    pub offset: u64,
    pub entries: u64,
    pub check: u64,
}

/// The channel addresses of a migrate request.
#[derive(Debug, Clone)]
pub struct MigrateRequest {
    pub main: PathBuf,
    pub cpr: PathBuf,
    /// A malformed request to send instead (rule ERR-1).
    pub malformed: Option<BadRequest>,
}

/// A migration status as QEMU names it (`setup`, `active`, `completed`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationInfo {
    pub status: String,
    pub error: Option<String>,
}

impl MigrationInfo {
    /// Completed, failed or cancelled: the migration will not move again.
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "cancelled")
    }
}

/// An event a VMM reports on its own (QMP events, for QMP monitors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEvent {
    Stop,
    Resume,
    Migration(String),
    Other(String),
}

impl VmEvent {
    pub fn label(&self) -> String {
        match self {
            VmEvent::Stop => "STOP".into(),
            VmEvent::Resume => "RESUME".into(),
            VmEvent::Migration(s) => format!("MIGRATION {s}"),
            VmEvent::Other(s) => s.clone(),
        }
    }
}

/// Receives a monitor's events, in the order the VMM sent them, as they arrive.
pub type EventSink = Box<dyn Fn(VmEvent) + Send + Sync>;

/// An error of an adapter or a monitor.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The VMM answered a command with an error (a refusal).
    #[error("{command} refused: {desc}")]
    Refused { command: String, desc: String },
    /// The monitor could not be reached, or stopped answering.
    #[error("monitor: {0}")]
    Monitor(String),
    /// The adapter cannot run on this host (e.g. the VMM is not installed).
    #[error("{0}")]
    Environment(String),
}

/// Commands one VM. Every call has its own timeout inside; none blocks for ever.
pub trait Monitor: Send {
    /// Prepares the VM for a cpr-transfer: mode, events, and the migration
    /// capabilities the case asks for (QEMU's names, e.g. `return-path`).
    fn prepare_cpr(&mut self, capabilities: &[String]) -> Result<(), AdapterError>;
    fn migrate(&mut self, req: &MigrateRequest) -> Result<(), AdapterError>;
    /// Tells a target that starts empty to receive on `incoming` (shape
    /// [`Receive::MonitorRequest`]); it must return once the target has been
    /// asked, not when the migration ends. Refused by default: a target of
    /// shape [`Receive::Listening`] listens from its start.
    fn receive(&mut self, incoming: &Incoming) -> Result<(), AdapterError> {
        let _ = incoming;
        Err(AdapterError::Refused {
            command: "receive".into(),
            desc: "this VMM's target listens from its start".into(),
        })
    }
    /// Gives a deferred target ([`TargetStart::Deferred`]) its main
    /// channel, once it has the CPR state (QEMU `migrate-incoming` with the
    /// main channel, `exit-on-error` false for [`OnFailedLoad::Stay`]).
    /// Refused by default.
    fn incoming_main(
        &mut self,
        main: &std::path::Path,
        on_failed_load: OnFailedLoad,
    ) -> Result<(), AdapterError> {
        let _ = (main, on_failed_load);
        Err(AdapterError::Refused {
            command: "incoming-main".into(),
            desc: "this VMM's adapter cannot give a deferred target its main channel".into(),
        })
    }
    fn cancel(&mut self) -> Result<(), AdapterError>;
    /// How long the next requests may wait for their answer: the kit's bound
    /// for one step of the handover, derived from the VMM's measured speed
    /// (`migrate` is the request it is for). A monitor whose timeouts are
    /// its own keeps them (the default).
    fn set_answer_bound(&mut self, bound: std::time::Duration) {
        let _ = bound;
    }
    fn stop(&mut self) -> Result<(), AdapterError>;
    fn cont(&mut self) -> Result<(), AdapterError>;
    /// The runstate, as QEMU names it (`running`, `paused`, `inmigrate`, ...).
    fn runstate(&mut self) -> Result<String, AdapterError>;
    fn migration(&mut self) -> Result<MigrationInfo, AdapterError>;
}

/// How the kit starts and commands one kind of VMM.
pub trait Adapter: Send + Sync {
    /// The name used in trial names: `refvmm`, `refvmm:legacy-stop-order`, `qemu`.
    fn name(&self) -> &str;
    /// The VMM's version, as reports print it.
    fn version(&self) -> String {
        "unknown".into()
    }
    /// The snapshot directory under snapshots/ for this adapter's trials.
    fn snapshot_dir(&self) -> String {
        self.name().replace(':', "-")
    }
    /// Whether this VMM's handover has `step` when the source runs with these
    /// migration capabilities. A fault point at a step the VMM does not have
    /// could test nothing: it is never planned. Every step by default.
    fn has_step(&self, step: Step, capabilities: &[String]) -> bool {
        let _ = (step, capabilities);
        true
    }
    /// The shape of this VMM's handover (QEMU's cpr-transfer by default).
    fn handover_shape(&self) -> HandoverShape {
        HandoverShape::CPR_TRANSFER
    }
    /// Why this adapter cannot run a case that attaches the kit's vhost-user
    /// device (`device`) or sets migration capabilities, if it cannot: its
    /// trials are then "not run" with that reason. Every case runs by default.
    fn not_runnable(&self, device: bool, capabilities: &[String]) -> Option<String> {
        let _ = (device, capabilities);
        None
    }
    /// Why this adapter cannot run a case's scenario ([`Scenario`]), if it
    /// cannot: its trials are then "not run" with that reason. By default
    /// an adapter runs only the default scenario (one handover between like
    /// VMMs, a target listening from its start) and says so of any other:
    /// an adapter that maps the scenario keys says which it maps.
    fn scenario_unsupported(&self, scenario: &Scenario, guest_prelaunch: bool) -> Option<String> {
        let mut keys = scenario.keys_set();
        if guest_prelaunch {
            keys.insert(0, "guest = \"prelaunch\"");
        }
        (!keys.is_empty()).then(|| {
            format!(
                "the {} adapter does not map the scenario keys {}",
                self.name(),
                keys.join(", ")
            )
        })
    }
    /// Whether a snapshot of this adapter's trials keeps the ordered steps.
    /// Yes by default; no for a VMM whose own threads report events at
    /// moments the kit cannot order against its holds (QEMU's incoming
    /// `MIGRATION active`, a source's `completed` without return-path): its
    /// snapshots keep the runstates, the device and the verdicts, which are
    /// stable, and `explain` still draws every event.
    fn snapshot_steps(&self) -> bool {
        true
    }
    /// The command that starts a source or a target VMM.
    fn command(&self, spec: &LaunchSpec) -> Result<Command, AdapterError>;
    /// Where the guest keeps its counter.
    fn guest_probe(&self) -> GuestProbe;
    /// Connects to a VMM's monitor, retrying until `deadline` while it is not up yet.
    fn connect(
        &self,
        spec: &LaunchSpec,
        deadline: Instant,
        events: EventSink,
    ) -> Result<Box<dyn Monitor>, AdapterError>;
}

/// The time left until `deadline`, never negative.
pub fn until(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: HandoverShape = HandoverShape {
        channels: Channels::One,
        receive: Receive::MonitorRequest,
        cancel: false,
        source_end: SourceEnd::Exit0,
        outcome: Outcome::Events,
    };

    #[test]
    fn cpr_transfer_plans_every_point() {
        for f in Fault::all() {
            for s in f.steps() {
                assert!(HandoverShape::CPR_TRANSFER.plans(f, *s), "{f}@{s}");
            }
        }
        assert_eq!(HandoverShape::default(), HandoverShape::CPR_TRANSFER);
    }

    #[test]
    fn without_cancel_or_a_main_channel_those_points_are_not_planned() {
        let planned: Vec<String> = Fault::all()
            .into_iter()
            .flat_map(|f| f.steps().iter().map(move |s| (f, *s)))
            .filter(|(f, s)| !f.needs_device() && ONE.plans(*f, *s))
            .map(|(f, s)| format!("{f}@{s}"))
            .collect();
        assert_eq!(
            planned,
            [
                "kill-target@target-listen",
                "kill-target@cpr-save",
                "kill-target@target-init",
                "kill-source@cpr-save",
                "kill-source@target-init",
                "cpr-close@cpr-save",
                "cpr-drop-fds@cpr-save",
                "bad-request:non-unix-cpr@source-stop",
                "bad-request:private-ram@source-stop",
            ]
        );
        let with_cancel = HandoverShape {
            cancel: true,
            ..ONE
        };
        assert!(with_cancel.plans(Fault::Cancel, Step::CprSave));
        assert!(!with_cancel.plans(Fault::Cancel, Step::MainStream));
    }
}
