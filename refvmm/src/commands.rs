//! The QMP commands refvmm implements, executed under the VM state lock.

use std::sync::Arc;

use cprkit_qmp::wire::ErrorBody;
use serde_json::{Value, json};

use crate::migration::MigrationStatus;
use crate::mutant::Mutant;
use crate::runstate::RunState;
use crate::vm::{Vm, VmState};

/// What a command did.
#[derive(Debug)]
pub struct Outcome {
    pub result: Result<Value, ErrorBody>,
    /// The process must exit once the reply is written.
    pub quit: bool,
}

/// The migration modes QEMU knows.
const MODES: [&str; 4] = ["normal", "cpr-reboot", "cpr-transfer", "cpr-exec"];

/// The commands, for `query-commands`.
const COMMANDS: [&str; 13] = [
    "qmp_capabilities",
    "query-commands",
    "query-status",
    "query-migrate",
    "migrate-set-capabilities",
    "migrate-set-parameters",
    "query-migrate-parameters",
    "migrate",
    "migrate_cancel",
    "migrate-incoming",
    "stop",
    "cont",
    "quit",
];

fn generic(desc: impl Into<String>) -> ErrorBody {
    ErrorBody {
        class: "GenericError".into(),
        desc: desc.into(),
    }
}

/// Executes one command (past capabilities negotiation).
pub fn execute(vm: &Arc<Vm>, st: &mut VmState, name: &str, args: &Value) -> Outcome {
    let result = match name {
        "qmp_capabilities" => Err(ErrorBody {
            class: "CommandNotFound".into(),
            desc: "Capabilities negotiation is already complete, command ignored".into(),
        }),
        "query-commands" => Ok(Value::Array(
            COMMANDS.iter().map(|c| json!({ "name": c })).collect(),
        )),
        "query-status" => Ok(json!({
            "status": st.runstate.as_str(),
            "running": st.runstate == RunState::Running,
            "singlestep": false,
        })),
        "query-migrate" => Ok(st.migration.to_json()),
        "migrate-set-capabilities" => set_capabilities(st, args),
        "migrate-set-parameters" => set_parameters(st, args),
        "query-migrate-parameters" => Ok(json!({ "mode": st.mode })),
        "migrate" => migrate(vm, st, args),
        "migrate_cancel" => {
            cancel(vm, st);
            Ok(json!({}))
        }
        "stop" => {
            if st.runstate == RunState::InMigrate {
                st.autostart = false;
                crate::log!("monitor: stop in inmigrate: will not autostart");
            } else {
                vm.stop(st);
            }
            Ok(json!({}))
        }
        "cont" => cont(vm, st),
        "migrate-incoming" => migrate_incoming(st, args),
        "quit" => {
            return Outcome {
                result: Ok(json!({})),
                quit: true,
            };
        }
        other => Err(ErrorBody {
            class: "CommandNotFound".into(),
            desc: format!("The command {other} has not been found"),
        }),
    };
    Outcome {
        result,
        quit: false,
    }
}

/// `migrate-incoming` on a deferred target: its main channel (one `main`
/// entry of `channels`, a unix socket) and `exit-on-error` (default true).
fn migrate_incoming(st: &mut VmState, args: &Value) -> Result<Value, ErrorBody> {
    if st.runstate != RunState::InMigrate {
        return Err(generic("'-incoming' was not specified on the command line"));
    }
    let Some(tx) = st.incoming_request.as_ref() else {
        return Err(generic("The incoming migration has already been started"));
    };
    let channels = args
        .get("channels")
        .and_then(Value::as_array)
        .ok_or_else(|| generic("Parameter 'channels' is missing"))?;
    let [main] = channels.as_slice() else {
        return Err(generic("Need exactly one main channel"));
    };
    if main.get("channel-type").and_then(Value::as_str) != Some("main") {
        return Err(generic("Need exactly one main channel"));
    }
    let addr = &main["addr"];
    if addr.get("type").and_then(Value::as_str) != Some("unix") {
        return Err(generic("refvmm listens on unix sockets only"));
    }
    let path = addr
        .get("path")
        .and_then(Value::as_str)
        .ok_or_else(|| generic("Parameter 'path' is missing"))?;
    let exit_on_error = args
        .get("exit-on-error")
        .map(|v| {
            v.as_bool()
                .ok_or_else(|| generic("Parameter 'exit-on-error' expects a boolean"))
        })
        .transpose()?
        .unwrap_or(true);
    let req = crate::vm::IncomingRequest {
        main: path.into(),
        exit_on_error,
    };
    tx.send(req)
        .map_err(|_| generic("The incoming migration is gone"))?;
    st.incoming_request = None;
    crate::log!("monitor: migrate-incoming on {path} (exit-on-error {exit_on_error})");
    Ok(json!({}))
}

fn set_capabilities(st: &mut VmState, args: &Value) -> Result<Value, ErrorBody> {
    if st.migration.in_progress() {
        return Err(generic("There's a migration process in progress"));
    }
    let caps = args
        .get("capabilities")
        .and_then(Value::as_array)
        .ok_or_else(|| generic("Parameter 'capabilities' is missing"))?;
    let mut events = st.events_cap;
    for cap in caps {
        let name = cap
            .get("capability")
            .and_then(Value::as_str)
            .ok_or_else(|| generic("Parameter 'capability' is missing"))?;
        let state = cap
            .get("state")
            .and_then(Value::as_bool)
            .ok_or_else(|| generic("Parameter 'state' is missing"))?;
        // Other capabilities are accepted and have no effect on refvmm.
        if name == "events" {
            events = state;
        }
    }
    st.events_cap = events;
    Ok(json!({}))
}

fn set_parameters(st: &mut VmState, args: &Value) -> Result<Value, ErrorBody> {
    if let Some(mode) = args.get("mode") {
        let mode = mode
            .as_str()
            .filter(|m| MODES.contains(m))
            .ok_or_else(|| generic(format!("Parameter 'mode' does not accept value '{mode}'")))?;
        st.mode = mode.to_string();
    }
    Ok(json!({}))
}

/// `migrate`: the refusals (a migration in progress, the runstate, then the
/// request itself), the mutants' answers to a valid request, then the start
/// of the outgoing migration.
fn migrate(vm: &Arc<Vm>, st: &mut VmState, args: &Value) -> Result<Value, ErrorBody> {
    if st.migration.in_progress() || st.outgoing.is_some() {
        return Err(generic("There's a migration process in progress"));
    }
    match st.runstate {
        RunState::InMigrate => return Err(generic("Guest is waiting for an incoming migration")),
        RunState::PostMigrate => {
            return Err(generic(
                "Can't migrate the vm that was paused due to previous migration",
            ));
        }
        _ => {}
    }
    let channels = match check_request(vm, st, args) {
        Ok(channels) => channels,
        Err(e) => {
            if vm.has(Mutant::FrozenAfterRefusal) {
                // The bug: the VM was stopped before the request was
                // checked, and a refusal does not resume it.
                crate::log!("migrate: refused, staying stopped (mutant frozen-after-refusal)");
                vm.stop_force_state(st, RunState::FinishMigrate);
            }
            return Err(e);
        }
    };
    match vm.mutant {
        Some(Mutant::RefuseMigrate) => {
            crate::log!("migrate: refused (mutant refuse-migrate)");
            return Err(generic("cpr-transfer is not supported"));
        }
        Some(Mutant::CrashOnMigrate) => crash(),
        Some(Mutant::HangOnMigrate) => hang(),
        _ => {}
    }
    crate::source::start(vm, st, channels);
    Ok(json!({}))
}

/// The checks of the request itself: the mode, the channels, and RAM that
/// can be passed (a memfd).
fn check_request(
    vm: &Vm,
    st: &VmState,
    args: &Value,
) -> Result<crate::channels::Channels, ErrorBody> {
    if args.get("uri").is_none() && st.mode != "cpr-transfer" {
        return Err(generic("refvmm supports only mode cpr-transfer"));
    }
    let channels = crate::channels::parse(args).map_err(generic)?;
    if vm.ram.memfd().is_none() {
        return Err(generic(
            "Memory region ram0 is not compatible with CPR. share=on is required for \
             memory-backend objects, and aux-ram-share=on is required.",
        ));
    }
    Ok(channels)
}

/// The crash-on-migrate mutant: dies by SIGABRT, as a VMM crashing in its
/// migrate handler does. The core limit is set to 0 first, so the crash
/// leaves no core file behind.
fn crash() -> ! {
    crate::log!("migrate: aborting (mutant crash-on-migrate)");
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit only reads the struct passed to it.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    std::process::abort()
}

/// The hang-on-migrate mutant: never returns, with the monitor thread and
/// the VM state lock held, as a main loop hung in its migrate handler holds
/// QEMU's big lock. So the migrate gets no reply, nor does any command after
/// it (a new client gets no greeting: the monitor serves one client at a
/// time); the vCPU, which does not take the lock, runs on.
fn hang() -> ! {
    crate::log!("migrate: hanging the monitor (mutant hang-on-migrate)");
    loop {
        std::thread::park();
    }
}

fn cancel(vm: &Vm, st: &mut VmState) {
    let Some(ctl) = st.outgoing.as_mut() else {
        crate::log!("monitor: migrate_cancel: no migration to cancel");
        return;
    };
    if ctl.cancelled {
        return;
    }
    crate::log!("monitor: migrate_cancel");
    ctl.cancel();
    vm.set_migration_status(st, MigrationStatus::Cancelling);
}

fn cont(vm: &Vm, st: &mut VmState) -> Result<Value, ErrorBody> {
    match st.runstate {
        RunState::Running => Ok(json!({})),
        RunState::Paused | RunState::Prelaunch | RunState::PostMigrate => {
            vm.start(st);
            Ok(json!({}))
        }
        RunState::InMigrate => Err(generic(
            "Guest is waiting for an incoming migration; cont is refused until it has loaded",
        )),
        RunState::FinishMigrate => Err(generic(
            "A migration is in progress (finish-migrate); cont is refused",
        )),
    }
}
