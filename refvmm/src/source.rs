//! The source side of cpr-transfer: `migrate` stops the VM (source-stop),
//! then a migration thread takes release-owner (stops and gives up its vhost
//! devices), cpr-save (the RAM memfd over
//! the cpr channel, then waiting for the target's EOF), main-stream (device
//! state, waiting for `loaded`) and the commit (`go`, `postmigrate`,
//! `completed`); or, on any failure or cancel before the commit, closes both
//! channels, takes its devices back, resumes the VM once to its prior
//! runstate and only then reports `failed` or `cancelled`.

use std::io::{BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use sendfd::SendWithFd;

use crate::blk::Blk;
use crate::channels::Channels;
use crate::log::{self, Role};
use crate::migration::{MigrationRecord, MigrationStatus, OutgoingCtl};
use crate::mutant::{Mutant, SLOW_RELEASE};
use crate::proto::{self, BlkState, CprState, DeviceState};
use crate::runstate::RunState;
use crate::vm::{Vm, VmState};

/// Bound on every write to a migration channel (a stuck peer cannot wedge
/// the source; a cancel also unblocks a write at once).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the stall-in-setup mutant looks for a cancel.
const STALL_POLL: Duration = Duration::from_millis(10);

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
    let keep_io = vm.blk.is_some() && vm.has(Mutant::IoAfterCutover);
    if keep_io {
        crate::log!(
            "source-stop: stopping the vCPU only, device I/O goes on (mutant io-after-cutover)"
        );
    }
    vm.stop_force_state_keeping_io(st, RunState::FinishMigrate, keep_io);
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
    match vm.mutant {
        Some(Mutant::StallInSetup) => return stall_in_setup(vm),
        Some(Mutant::CompleteWithoutTransfer) => {
            crate::log!(
                "main-stream: nothing sent, taken as done (mutant complete-without-transfer)"
            );
            return commit(vm, conns);
        }
        _ => {}
    }
    let has_devices = vm.blk.is_some() || vm.vhost_kernel.is_some();
    let legacy = vm.has(Mutant::LegacyStopOrder);
    if !has_devices {
        crate::log!("step release-owner: no vhost device to release");
    } else if !legacy {
        release_owner(vm)?;
    }
    cpr_save(vm, &ch.cpr, conns)?;
    if legacy {
        let mut st = checkpoint(vm)?;
        source_stop(vm, &mut st);
        drop(st);
        if has_devices {
            // The legacy order releases the devices when the VM stops.
            release_owner(vm)?;
        }
    }
    if let Some(blk) = vm.blk.as_ref().filter(|_| vm.has(Mutant::IoAfterCutover)) {
        crate::log!(
            "release-owner: stopping device I/O and releasing vhost-user-blk now (mutant io-after-cutover)"
        );
        blk.io.stop();
        release_blk(vm, blk)?;
    }
    main_stream(vm, &ch.main, old_state, conns)?;
    commit(vm, conns)
}

/// The stall-in-setup mutant's migration: stays in `setup` (the VM stopped,
/// nothing connected) until a cancel, which then takes the usual cleanup
/// path.
fn stall_in_setup(vm: &Vm) -> Step<()> {
    crate::log!("setup: stalling, connecting nothing (mutant stall-in-setup)");
    loop {
        drop(checkpoint(vm)?);
        std::thread::sleep(STALL_POLL);
    }
}

/// release-owner: stops and gives up every vhost device (the device I/O is
/// stopped already, by source-stop). A refused or failed release fails the
/// migration.
fn release_owner(vm: &Vm) -> Step<()> {
    crate::log!("step release-owner");
    if vm.has(Mutant::NeverReleaseOwner) {
        crate::log!("release-owner: keeping every vhost device (mutant never-release-owner)");
        return Ok(());
    }
    if let Some(blk) = &vm.blk {
        if vm.has(Mutant::IoAfterCutover) {
            crate::log!(
                "release-owner: vhost-user-blk released only after cpr-save (mutant io-after-cutover)"
            );
        } else {
            release_blk(vm, blk)?;
        }
    }
    if let Some(dev) = &vm.vhost_kernel {
        dev.reset_owner()
            .map_err(|e| Abort::Failed(format!("release-owner: VHOST_RESET_OWNER: {e}")))?;
        crate::log!("release-owner: kernel vhost device released (VHOST_RESET_OWNER)");
    }
    Ok(())
}

/// Releases the vhost-user-blk device: SET_VRING_ENABLE 0, GET_VRING_BASE,
/// RESET_OWNER.
fn release_blk(vm: &Vm, blk: &Blk) -> Step<()> {
    let asked = Instant::now();
    let released = blk.release();
    if vm.has(Mutant::SlowReleaseForgetsDevice) && asked.elapsed() >= SLOW_RELEASE {
        crate::log!(
            "release-owner: the device answered late: forgetting it was released (mutant slow-release-forgets-device)"
        );
        FORGOT_RELEASE.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    released
        .map(|base| crate::log!("release-owner: vhost-user-blk released at base {base}"))
        .map_err(|e| Abort::Failed(format!("release-owner: vhost-user-blk: {e:#}")))
}

/// slow-release-forgets-device: the release was answered late (one VM per
/// process: the flag is the process's).
static FORGOT_RELEASE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The vhost-user-blk part of the device state: the base GET_VRING_BASE
/// answered, or (never-release-owner, which asked nothing) the driver's own
/// ring index.
fn blk_state(vm: &Vm) -> Option<BlkState> {
    let blk = vm.blk.as_ref()?;
    let base = match blk.base() {
        Some(base) if !vm.has(Mutant::NeverReleaseOwner) => base,
        _ => blk.driver_index(),
    };
    Some(BlkState { base })
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
    let mut fds = vec![memfd];
    if let Some(dev) = &vm.vhost_kernel {
        fds.push(dev.fd().as_raw_fd());
    }
    let msg = proto::line(&CprState::new(size));
    let sent = cpr
        .send_with_fd(&msg, &fds)
        .map_err(|e| Abort::Failed(format!("cpr-save: sendmsg: {e}")))?;
    if sent < msg.len() {
        cpr.write_all(&msg[sent..])
            .map_err(|e| Abort::Failed(format!("cpr-save: write: {e}")))?;
    }
    crate::log!("cpr-save: sent the CPR state and the RAM memfd; waiting for the target (HUP)");
    wait_eof(cpr)?;
    // An EOF caused by our own shutdown (a cancel) is no readiness.
    drop(checkpoint(vm)?);
    if vm.has(Mutant::ExitAfterCutOver) {
        // The bug: the fds crossed and the target took them, so the VMM
        // takes its job as done and quits, before the main stream. (It waits
        // for the target's HUP first, as a correct source does, and a cancel
        // still cancels: so its exit never races the cut-over.)
        crate::log!("cpr-save: the target has the RAM memfd; exiting (mutant exit-after-cut-over)");
        log::exit(0);
    }
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
        let mut state = DeviceState::new(old_state == RunState::Running, vm.vcpu.r(), size);
        state.blk = blk_state(vm);
        state.devices = vm.extra_devices.clone();
        state.prelaunch = old_state == RunState::Prelaunch;
        state
    };
    main.write_all(&proto::line(&state))
        .map_err(|e| Abort::Failed(format!("main-stream: writing the device state: {e}")))?;
    crate::log!("main-stream: sent the device state (r={})", state.vcpu.r);
    if let Some(blk) = &state.blk {
        crate::log!("main-stream: vhost-user-blk ring base {}", blk.base);
    }

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
/// target cannot have received it, so this is still a failure. (The
/// complete-without-transfer mutant comes here with no channel at all and
/// sends no `go`.)
fn commit(vm: &Vm, conns: &mut Conns) -> Step<()> {
    let mut st = checkpoint(vm)?;
    st.runstate = RunState::PostMigrate;
    let go = match conns.main.as_mut() {
        None if vm.has(Mutant::CompleteWithoutTransfer) => Ok(()),
        main => main
            .expect("main is connected")
            .write_all(&proto::go_line()),
    };
    match go {
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
fn finish_aborted(vm: &Arc<Vm>, old_state: RunState, conns: Conns, abort: Abort) {
    let mut st = vm.lock();
    let mut ctl = st.outgoing.take().unwrap_or_default();
    ctl.shutdown_sockets();
    drop(conns);
    let cancelled = ctl.cancelled || matches!(abort, Abort::Cancelled);
    match &abort {
        Abort::Failed(desc) if !cancelled => crate::log!("step cleanup: migration failed: {desc}"),
        _ => crate::log!("step cleanup: migration cancelled"),
    }
    if let Some(dev) = vm.vhost_kernel.as_ref().filter(|d| d.released()) {
        if vm.has(Mutant::NoReacquireAfterFailure) {
            crate::log!(
                "cleanup: not taking the kernel vhost device back (mutant no-reacquire-after-failure)"
            );
        } else {
            match dev.set_owner() {
                Ok(()) => crate::log!("cleanup: kernel vhost device owned again (VHOST_SET_OWNER)"),
                Err(e) => crate::log!("cleanup: VHOST_SET_OWNER: {e}; resuming without the device"),
            }
        }
    }
    if ctl.stopped_at.is_some() {
        resume(vm, &mut st, old_state);
    }
    // The device comes back in the background: an `exclusive` device refuses
    // it while the target still owns it, and the target only lets go once it
    // sees the channels closed; the guest's I/O waits for the ring meanwhile.
    if vm.blk.as_ref().is_some_and(|b| b.needs_reacquire()) {
        take_blk_back(vm);
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
        Some(m @ (Mutant::NoResumeOnFailure | Mutant::FrozenAfterRefusal)) => {
            crate::log!("cleanup: not resuming (mutant {m})");
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

/// Takes the vhost-user-blk device back after a failed transfer, before the
/// VM resumes (the I/O is stopped); if it cannot within the bound, logs it
/// and the VM resumes anyway.
fn take_blk_back(vm: &Arc<Vm>) {
    if vm.has(Mutant::NoReacquireAfterFailure) {
        crate::log!(
            "step cleanup: not taking the vhost-user-blk device back (mutant no-reacquire-after-failure)"
        );
        return;
    }
    if FORGOT_RELEASE.load(std::sync::atomic::Ordering::SeqCst) {
        crate::log!(
            "step cleanup: not taking the vhost-user-blk device back: forgot it was released (mutant slow-release-forgets-device)"
        );
        return;
    }
    crate::log!("step cleanup: taking the vhost-user-blk device back (in the background)");
    let vm = Arc::clone(vm);
    std::thread::Builder::new()
        .name("blk-reacquire".into())
        .spawn(move || {
            if let Some(blk) = vm.blk.as_ref()
                && let Err(e) = blk.reacquire()
            {
                crate::log!("cleanup: vhost-user-blk: {e:#}; the guest goes on without the device");
            }
        })
        .expect("spawn the reacquire thread");
}
