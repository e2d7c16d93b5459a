//! The contract every VMM wrapper meets: how to start a source and a target, how
//! to find the guest's memory, and how to command the VM (a [`Monitor`]).
//!
//! The adapter only knows how to *command* a VMM. The kit spawns the processes
//! itself (so it can kill and stop them), owns the trial directory and the
//! sockets, and decides the faults.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::faults::BadRequest;
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

/// What the kit asks an adapter to launch.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub role: Role,
    /// The trial's private directory (0700).
    pub dir: PathBuf,
    /// Where the VMM must create its monitor socket.
    pub monitor: PathBuf,
    /// For a target: the channels to listen on.
    pub incoming: Option<Incoming>,
    /// Guest RAM shared in a memfd (true) or private (false, an ERR-1 case).
    pub shared_ram: bool,
    /// The vhost-user socket of the kit's virtio-blk device, in profiles with
    /// one: the VMM attaches it (QEMU: `vhost-user-blk-pci`).
    pub vhost_user_blk: Option<PathBuf>,
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
    fn cancel(&mut self) -> Result<(), AdapterError>;
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
