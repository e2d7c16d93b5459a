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
mod hops;
mod signals;
mod watch;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::time::Duration;

use crate::adapter::{Adapter, AdapterError, LaunchSpec, Monitor, Role, VmEvent};
use crate::device::{DeviceDaemon, DeviceError, DeviceSetup};
use crate::guestmem::GuestRam;
use crate::interposer::{Directive, Held, Interposer};
use crate::plan::GuestState;
use crate::process::VmmProcess;
use crate::record::TrialRecord;
use crate::scenario::Scenario;
use crate::schedule::Schedule;
use crate::timeline::Timeline;
use crate::trialdir::TrialDir;

/// What a trial is asked to do.
#[derive(Debug, Clone)]
pub struct TrialSpec {
    /// The full trial name (for logs and the kept directory's name).
    pub name: String,
    pub guest: GuestState,
    /// The faults to inject (none for a fault-free handover, one for a
    /// matrix trial: [`Schedule::single`]), and the timing the kit bends.
    pub schedule: Schedule,
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
    /// What the sides differ in, how the target starts, the hops
    /// ([`crate::scenario`]; the default is one plain handover).
    pub scenario: Scenario,
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
    /// A step outside the test failed; `log` names the VMM's log and quotes
    /// its last lines (the trial directory is gone after the run unless kept).
    #[error("{what} ({log})")]
    Setup { what: String, log: String },
    #[error("interposer: {0}")]
    Interposer(std::io::Error),
    #[error("{0}")]
    Device(#[from] DeviceError),
}

impl TrialError {
    /// A set-up failure, with the last lines of `log` quoted: the trial
    /// directory that holds the log is removed after the run unless kept.
    pub fn setup(what: impl Into<String>, log: &std::path::Path) -> Self {
        TrialError::Setup {
            what: what.into(),
            log: log_tail(log),
        }
    }
}

/// How many of a log's last lines a set-up error quotes.
const LOG_TAIL_LINES: usize = 5;

/// `NAME, last lines: ...` of a log file, or `NAME is empty`.
fn log_tail(log: &std::path::Path) -> String {
    let name = log
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| log.display().to_string());
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return format!("{name} is empty");
    }
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    format!("{name}, last lines: {}", tail.join(" | "))
}

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
    /// A deferred target was given its main channel (or the kit tried).
    main_given: bool,
    /// A hang-target fault waiting for its cancel at the next hold.
    hang_pending: bool,
    /// The guest's rates, measured while it ran before the migrate: the mean
    /// time between two counter writes, and between two device requests.
    write_rate: Option<watch::WriteRate>,
    request_interval: Option<Duration>,
    /// The bound of one step of the handover, from the VMMs' start-up
    /// ([`watch::step_bound`]).
    step_bound: Duration,
    /// The source's pace at its device work (its longest pause in its
    /// start-up handshake), for the final readings' quiet period.
    device_pace: Option<Duration>,
    /// The hop being run (1-based; [`hops`]).
    hop: u32,
    /// When the hop being run started (its record's timeline starts there).
    hop_start: Duration,
    /// The records of the hops already run, in order.
    earlier: Vec<TrialRecord>,
    record: TrialRecord,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setup_error_quotes_the_log_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("source.log");
        std::fs::write(
            &log,
            "one\ntwo\n\nthree\nfour\nfive\nsix\nqemu: bad thing\n",
        )
        .unwrap();
        let e = TrialError::setup("the guest counter never moved", &log);
        drop(dir);
        assert_eq!(
            e.to_string(),
            "the guest counter never moved (source.log, last lines: three | four | five | six | qemu: bad thing)"
        );
        let gone = TrialError::setup("x", std::path::Path::new("/nonexistent/target.log"));
        assert_eq!(gone.to_string(), "x (target.log is empty)");
    }
}
