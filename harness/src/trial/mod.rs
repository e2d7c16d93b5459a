//! One trial: start a target and a source through an adapter, put the
//! interposer between them, hand the VM over, inject the fault at its point,
//! wait (bounded) for the end, and take the final readings.
//!
//! The controller runs on one thread and is the only one that acts; the
//! interposer, the monitors and the process watchers report to it through one
//! channel of [`Signal`]s. A hold point blocks the interposer until the
//! controller answers, so every sample and every fault happens at an exact
//! place in the protocol.

mod controller;
mod device;
mod ending;
mod holds;
mod signals;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::time::Duration;

use crate::adapter::{Adapter, AdapterError, LaunchSpec, Monitor, Role, VmEvent};
use crate::device::{DeviceDaemon, DeviceError, DeviceSetup};
use crate::guestmem::GuestRam;
use crate::interposer::{Directive, Held, Interposer};
use crate::plan::{FaultPoint, GuestState};
use crate::process::VmmProcess;
use crate::record::TrialRecord;
use crate::timeline::Timeline;
use crate::trialdir::TrialDir;

/// What a trial is asked to do.
#[derive(Debug, Clone)]
pub struct TrialSpec {
    /// The full trial name (for logs and the kept directory's name).
    pub name: String,
    pub guest: GuestState,
    /// The fault to inject, or none for a fault-free handover.
    pub point: Option<FaultPoint>,
    /// The bound for "within a bounded time" (return to a runstate, a cancel, an exit).
    pub settle: Duration,
    /// The bound for the whole migration to end.
    pub migration_bound: Duration,
    /// Migration capabilities to set on the source (QEMU's names).
    pub capabilities: Vec<String>,
    /// The kit's vhost-user-blk device, handed over with the VM (profile `vhost-user`).
    pub device: Option<DeviceSetup>,
    /// Keep the trial directory (sockets, logs) afterwards.
    pub keep: bool,
}

/// The trial could not be carried out (not a verdict on the VMM).
#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    #[error("trial directory: {0}")]
    Dir(std::io::Error),
    #[error("cannot start the {role}: {source}")]
    Spawn {
        role: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    Adapter(#[from] AdapterError),
    #[error("{what} (see {log})")]
    Setup { what: String, log: String },
    #[error("interposer: {0}")]
    Interposer(std::io::Error),
    #[error("{0}")]
    Device(#[from] DeviceError),
}

/// The time the kit holds the first fds to see whether the guest still runs.
const CUTOVER_WATCH: Duration = Duration::from_millis(20);
/// Bounds of start-up steps that are not under test.
const STARTUP: Duration = Duration::from_secs(10);

/// Reports from the trial's helpers to its controller.
enum Signal {
    Hold(Held, SyncSender<Directive>),
    Event(Role, VmEvent),
    /// A VMM process ended (the watcher wakes the controller).
    Exit,
}

/// Runs one trial; `root` is the run's directory for trial directories.
pub fn run(
    adapter: &dyn Adapter,
    spec: &TrialSpec,
    root: &Path,
) -> Result<TrialRecord, TrialError> {
    let dir = TrialDir::new(root, &spec.name, spec.keep).map_err(TrialError::Dir)?;
    let (tx, rx) = mpsc::channel();
    let mut c = Controller::new(adapter, spec, &dir, tx, rx);
    let result = c.run();
    let record = c.finish(result.is_ok());
    result.map(|()| record)
}

struct Side {
    proc: VmmProcess,
    spec: LaunchSpec,
    monitor: Option<Box<dyn Monitor>>,
    ram: Option<GuestRam>,
}

struct Controller<'a> {
    adapter: &'a dyn Adapter,
    spec: &'a TrialSpec,
    dir: &'a TrialDir,
    timeline: Timeline,
    tx: Sender<Signal>,
    rx: Receiver<Signal>,
    deferred: VecDeque<Signal>,
    source: Option<Side>,
    target: Option<Side>,
    interposer: Option<Interposer>,
    /// The trial's device daemon, in profiles with a device.
    device: Option<DeviceDaemon>,
    source_status: Option<String>,
    /// The main channel's route, opened at target-init.
    main_route: Option<crate::interposer::Route>,
    /// A hang-target fault waiting for its cancel at the next hold.
    hang_pending: bool,
    record: TrialRecord,
}
