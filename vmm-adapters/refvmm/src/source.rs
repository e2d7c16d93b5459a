//! The source side of cpr-transfer: `migrate` stops the VM (source-stop),
//! then a migration thread takes release-owner, cpr-save (the RAM memfd over
//! the cpr channel, then waiting for the target's EOF), main-stream (device
//! state, waiting for `loaded`) and the commit (`go`, `postmigrate`,
//! `completed`); or, on any failure or cancel before the commit, closes both
//! channels, resumes the VM once to its prior runstate and only then reports
//! `failed` or `cancelled`.

use std::io::{BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use sendfd::SendWithFd;

use crate::channels::Channels;
use crate::log::{self, Role};
use crate::migration::{MigrationRecord, MigrationStatus, OutgoingCtl};
use crate::mutant::Mutant;
use crate::proto::{self, CprState, DeviceState};
use crate::runstate::RunState;
use crate::vm::{Vm, VmState};

/// Bound on every write to a migration channel (a stuck peer cannot wedge
/// the source; a cancel also unblocks a write at once).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the migration did not complete.
#[derive(Debug)]
enum Abort {
    /// `migrate_cancel` came.
    Cancelled,
    /// Something failed; the `error-desc`.
    Failed(String),
}

type Step<T> = Result<T, Abort>;

/// Starts an outgoing migration. Called by `migrate`, under the VM lock, once
/// the request passed every check: status `setup`, source-stop (unless the
/// `legacy-stop-order` mutant stops later), then the migration thread.
pub fn start(vm: &Arc<Vm>, st: &mut VmState, channels: Channels) {
    log::set_role(Role::Source);
    let old_state = st.runstate;
    crate::log!(
        "migrate: cpr-transfer from {old_state} (main {}, cpr {})",
        channels.main.display(),
        channels.cpr.display()
    );
    st.migration = MigrationRecord::default();
    st.outgoing = Some(OutgoingCtl::new());
    vm.set_migration_status(st, MigrationStatus::Setup);
    if !vm.has(Mutant::LegacyStopOrder) {
        source_stop(vm, st);
    }
    let vm = Arc::clone(vm);
    std::thread::Builder::new()
        .name("migration".into())
        .spawn(move || migration_thread(&vm, &channels, old_state))
        .expect("spawn the migration thread");
}

fn source_stop(vm: &Vm, st: &mut VmState) {
    crate::log!("step source-stop");
    vm.stop_force_state(st, RunState::FinishMigrate);
    if let Some(ctl) = st.outgoing.as_mut() {
        ctl.stopped_at = Some(Instant::now());
    }
}

/// The sockets the migration thread owns; dropped (closed) when it ends.
#[derive(Default)]
struct Conns {
    cpr: Option<UnixStream>,
    main: Option<UnixStream>,
}

fn migration_thread(vm: &Arc<Vm>, ch: &Channels, old_state: RunState) {
    let mut conns = Conns::default();
    if let Err(abort) = run_steps(vm, ch, old_state, &mut conns) {
        finish_aborted(vm, old_state, conns, abort);
    }
}

/// Takes the VM lock and checks the migration was not cancelled.
fn checkpoint(vm: &Vm) -> Step<MutexGuard<'_, VmState>> {
    let st = vm.lock();
    match &st.outgoing {
        Some(ctl) if !ctl.cancelled => Ok(st),
        _ => Err(Abort::Cancelled),
    }
}

fn connect(vm: &Vm, path: &Path, what: &str) -> Step<UnixStream> {
    let sock = UnixStream::connect(path)
        .map_err(|e| Abort::Failed(format!("Failed to connect to '{}': {e}", path.display())))?;
    let _ = sock.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut st = vm.lock();
    let registered = st.outgoing.as_mut().is_some_and(|ctl| ctl.register(&sock));
    if !registered {
        return Err(Abort::Cancelled);
    }
    crate::log!("{what}: connected to {}", path.display());
    Ok(sock)
}

fn run_steps(vm: &Arc<Vm>, ch: &Channels, old_state: RunState, conns: &mut Conns) -> Step<()> {
    crate::log!("step release-owner: no vhost device to release");
    cpr_save(vm, &ch.cpr, conns)?;
    if vm.has(Mutant::LegacyStopOrder) {
        let mut st = checkpoint(vm)?;
        source_stop(vm, &mut st);
    }
    main_stream(vm, &ch.main, old_state, conns)?;
    commit(vm, conns)
}

/// cpr-save, the cut-over point: the CPR state with the RAM memfd, then the
/// target's readiness (EOF on the cpr channel).
fn cpr_save(vm: &Vm, path: &Path, conns: &mut Conns) -> Step<()> {
    crate::log!("step cpr-save");
    let cpr = conns.cpr.insert(connect(vm, path, "cpr-save")?);
    let size = vm.ram.len() as u64;
    let memfd = vm
        .ram
        .memfd()
        .expect("migrate refuses private RAM")
        .as_raw_fd();
    let msg = proto::line(&CprState::new(size));
    let sent = cpr
        .send_with_fd(&msg, &[memfd])
        .map_err(|e| Abort::Failed(format!("cpr-save: sendmsg: {e}")))?;
    if sent < msg.len() {
        cpr.write_all(&msg[sent..])
            .map_err(|e| Abort::Failed(format!("cpr-save: write: {e}")))?;
    }
    crate::log!("cpr-save: sent the CPR state and the RAM memfd; waiting for the target (HUP)");
    wait_eof(cpr)?;
    // An EOF caused by our own shutdown (a cancel) is no readiness.
    drop(checkpoint(vm)?);
    crate::log!("cpr-save: the target closed the cpr channel (ready)");
    Ok(())
}

/// main-stream: the device state, then the target's `loaded`.
fn main_stream(vm: &Vm, path: &Path, old_state: RunState, conns: &mut Conns) -> Step<()> {
    vm.set_migration_status(&mut *checkpoint(vm)?, MigrationStatus::Active);
    crate::log!("step main-stream");
    let main = conns.main.insert(connect(vm, path, "main-stream")?);
    let size = vm.ram.len() as u64;
    let state = {
        let mut st = checkpoint(vm)?;
        vm.set_migration_status(&mut st, MigrationStatus::Device);
        DeviceState::new(old_state == RunState::Running, vm.vcpu.r(), size)
    };
    main.write_all(&proto::line(&state))
        .map_err(|e| Abort::Failed(format!("main-stream: writing the device state: {e}")))?;
    crate::log!("main-stream: sent the device state (r={})", state.vcpu.r);

    let read = proto::read_line(&mut BufReader::new(&*main));
    if vm.has(Mutant::FalseCompletion) {
        // The bug: any end of the wait counts as the target's `loaded`, a
        // closed channel or garbage included.
        crate::log!(
            "main-stream: the wait for loaded ended ({read:?}): taken as loaded (mutant false-completion)"
        );
        return Ok(());
    }
    let line = read
        .map_err(|e| Abort::Failed(format!("main-stream: reading loaded: {e}")))?
        .ok_or_else(|| {
            Abort::Failed("main-stream: the target closed the main channel before loaded".into())
        })?;
    proto::expect_bare(&line, "loaded").map_err(|e| Abort::Failed(format!("main-stream: {e}")))?;
    crate::log!("main-stream: the target loaded the state");
    Ok(())
}

/// Waits for the peer to close the cpr channel: a read that returns 0.
fn wait_eof(cpr: &UnixStream) -> Step<()> {
    let mut buf = [0u8; 256];
    loop {
        match (&*cpr).read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                return Err(Abort::Failed(format!(
                    "cpr-save: {n} unexpected bytes on the cpr channel"
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Abort::Failed(format!("cpr-save: waiting for HUP: {e}"))),
        }
    }
}

/// The commit: `postmigrate`, `go` to the target, close both channels,
/// `completed`. All under the VM lock, so a cancel comes either before (and
/// wins) or after (and finds nothing to cancel). If `go` cannot be written the
/// target cannot have received it, so this is still a failure.
fn commit(vm: &Vm, conns: &mut Conns) -> Step<()> {
    let mut st = checkpoint(vm)?;
    st.runstate = RunState::PostMigrate;
    let main = conns.main.as_mut().expect("main is connected");
    match main.write_all(&proto::go_line()) {
        Ok(()) => {}
        Err(e) if vm.has(Mutant::FalseCompletion) => {
            crate::log!("main-stream: writing go: {e} (ignored: mutant false-completion)");
        }
        Err(e) => {
            st.runstate = RunState::FinishMigrate;
            return Err(Abort::Failed(format!("main-stream: writing go: {e}")));
        }
    }
    crate::log!("step source-finish: committed (postmigrate)");
    let mut ctl = st.outgoing.take().expect("checked by checkpoint");
    ctl.shutdown_sockets();
    *conns = Conns::default();
    st.migration.total_time = Some(ctl.started.elapsed());
    st.migration.downtime = Some(ctl.stopped_at.map(|t| t.elapsed()).unwrap_or_default());
    vm.set_migration_status(&mut st, MigrationStatus::Completed);
    Ok(())
}

/// The failure path: close both channels, resume once to the prior runstate,
/// then report `failed` or `cancelled`.
fn finish_aborted(vm: &Vm, old_state: RunState, conns: Conns, abort: Abort) {
    let mut st = vm.lock();
    let mut ctl = st.outgoing.take().unwrap_or_default();
    ctl.shutdown_sockets();
    drop(conns);
    let cancelled = ctl.cancelled || matches!(abort, Abort::Cancelled);
    match &abort {
        Abort::Failed(desc) if !cancelled => crate::log!("step cleanup: migration failed: {desc}"),
        _ => crate::log!("step cleanup: migration cancelled"),
    }
    if ctl.stopped_at.is_some() {
        resume(vm, &mut st, old_state);
    }
    if cancelled {
        vm.set_migration_status(&mut st, MigrationStatus::Cancelled);
    } else {
        st.migration.error_desc = match abort {
            Abort::Failed(desc) => Some(desc),
            Abort::Cancelled => None,
        };
        vm.set_migration_status(&mut st, MigrationStatus::Failed);
    }
}

/// Resumes the source after a failed or cancelled transfer: once, to the
/// runstate it had when `migrate` came (or the mutant's bug).
fn resume(vm: &Vm, st: &mut VmState, old_state: RunState) {
    match vm.mutant {
        Some(Mutant::NoResumeOnFailure) => {
            crate::log!("cleanup: not resuming (mutant no-resume-on-failure)");
        }
        Some(Mutant::ResumeWhenPaused) => vm.start(st),
        Some(Mutant::DoubleResume) if old_state == RunState::Running => {
            vm.start(st);
            vm.start(st);
        }
        _ if old_state == RunState::Running => vm.start(st),
        _ => {
            st.runstate = old_state;
            crate::log!("cleanup: back to {old_state}");
        }
    }
}
