//! The VM: its runstate, RAM, vCPU and devices, and the transitions between runstates
//! with their events. One lock (the VM state) orders every transition, every
//! event and every QMP reply: whoever changes the state holds it while
//! emitting the matching event, and the monitor holds it from a command's
//! start until its reply is written.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};

use crate::blk::Blk;
use crate::migration::{MigrationRecord, MigrationStatus, OutgoingCtl};
use crate::mutant::Mutant;
use crate::outbox::Outbox;
use crate::ram::GuestRam;
use crate::runstate::RunState;
use crate::vcpu::Vcpu;
use crate::vhost_kernel::VhostKernel;

/// Everything about the VM that changes, under one lock.
#[derive(Debug)]
pub struct VmState {
    pub runstate: RunState,
    /// Whether a target runs once the incoming migration is done (false with
    /// `-S` or after a `stop` in `inmigrate`, as in QEMU).
    pub autostart: bool,
    /// The `events` migration capability.
    pub events_cap: bool,
    /// The `mode` migration parameter.
    pub mode: String,
    /// What `query-migrate` reports.
    pub migration: MigrationRecord,
    /// The outgoing migration in progress, if any.
    pub outgoing: Option<OutgoingCtl>,
    /// A deferred target waiting for `migrate-incoming`: where the request
    /// goes (taken by the first one).
    pub incoming_request: Option<std::sync::mpsc::SyncSender<IncomingRequest>>,
}

/// A `migrate-incoming` for a deferred target: the main channel to listen
/// on, and whether to exit when the load fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingRequest {
    pub main: std::path::PathBuf,
    pub exit_on_error: bool,
}

/// The VM.
#[derive(Debug)]
pub struct Vm {
    state: Mutex<VmState>,
    pub outbox: Outbox,
    pub ram: Arc<GuestRam>,
    pub vcpu: Vcpu,
    pub mutant: Option<Mutant>,
    /// The vhost-user-blk device (`--vhost-user-blk`); its I/O runs while
    /// the VM runs.
    pub blk: Option<Blk>,
    /// The kernel vhost device (`--vhost-kernel`).
    pub vhost_kernel: Option<VhostKernel>,
    /// The extra devices (`--extra-device`), sent in the device state.
    pub extra_devices: Vec<String>,
}

impl Vm {
    /// A VM in `runstate` on `ram`, its vCPU parked with `r = 0`, pausing
    /// `guest_step` between two guest steps.
    pub fn new(
        ram: GuestRam,
        runstate: RunState,
        autostart: bool,
        mutant: Option<Mutant>,
        guest_step: Duration,
    ) -> Self {
        let ram = Arc::new(ram);
        Self {
            state: Mutex::new(VmState {
                runstate,
                autostart,
                events_cap: false,
                mode: "normal".into(),
                migration: MigrationRecord::default(),
                outgoing: None,
                incoming_request: None,
            }),
            outbox: Outbox::default(),
            vcpu: Vcpu::new(Arc::clone(&ram), 0, guest_step),
            ram,
            mutant,
            blk: None,
            vhost_kernel: None,
            extra_devices: Vec::new(),
        }
    }

    /// Takes the VM state lock.
    pub fn lock(&self) -> MutexGuard<'_, VmState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the mutant `m` is on.
    pub fn has(&self, m: Mutant) -> bool {
        self.mutant == Some(m)
    }

    /// `stop`: a running VM becomes `paused` (STOP event); other runstates
    /// stay as they are.
    pub fn stop(&self, st: &mut VmState) {
        if st.runstate == RunState::Running {
            self.vcpu.stop();
            self.stop_io();
            st.runstate = RunState::Paused;
            crate::log!("vm: stopped (paused)");
            self.outbox.event("STOP", Value::Null);
        }
    }

    /// QEMU's vm_stop_force_state: stops the vCPU and the device I/O if they
    /// run (STOP event) and sets `state` in any case.
    pub fn stop_force_state(&self, st: &mut VmState, state: RunState) {
        self.stop_force_state_keeping_io(st, state, false);
    }

    /// [`Self::stop_force_state`], leaving the device I/O running if
    /// `keep_io` (the `io-after-cutover` mutant's bug).
    pub fn stop_force_state_keeping_io(&self, st: &mut VmState, state: RunState, keep_io: bool) {
        let was_running = st.runstate == RunState::Running;
        if was_running {
            self.vcpu.stop();
            if !keep_io {
                self.stop_io();
            }
        }
        st.runstate = state;
        crate::log!("vm: stopped ({state})");
        if was_running {
            self.outbox.event("STOP", Value::Null);
        }
    }

    /// Stops the device I/O (returns once no request is in flight).
    pub fn stop_io(&self) {
        if let Some(blk) = &self.blk {
            blk.io.stop();
        }
    }

    /// Starts the vCPU and the device I/O, runstate `running`, RESUME event.
    pub fn start(&self, st: &mut VmState) {
        let r = self.vcpu.r();
        self.vcpu.start();
        if let Some(blk) = &self.blk {
            blk.io.start();
        }
        st.runstate = RunState::Running;
        crate::log!("vm: running (from r={r})");
        self.outbox.event("RESUME", Value::Null);
    }

    /// Sets the outgoing migration's status and emits the MIGRATION event if
    /// the `events` capability is on.
    pub fn set_migration_status(&self, st: &mut VmState, status: MigrationStatus) {
        st.migration.status = Some(status);
        crate::log!("migration: status {}", status.as_str());
        if st.events_cap {
            self.outbox
                .event("MIGRATION", json!({ "status": status.as_str() }));
        }
    }
}
