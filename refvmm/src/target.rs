//! The target side of cpr-transfer: target-listen (the CPR state and the RAM
//! memfd over the cpr channel, before any monitor), target-init (map the
//! passed memfd in place, take the vhost devices (vhost-user-blk: handshake,
//! SET_OWNER, SET_MEM_TABLE; kernel vhost: VHOST_SET_OWNER on the passed fd),
//! start the monitor, listen on the main channel, then signal readiness by
//! shutting down our write side of the cpr channel), main-stream (load the
//! device state, answer `loaded`) and target-resume (on the source's `go`
//! only: start the vhost-user-blk ring at the source's base, then run). Any failure before `go` ends the process with
//! status 1: a target that did not get `go` never runs; but a target told
//! to stay alive when its load fails (`--stay-on-failed-load`, or
//! `migrate-incoming` with `exit-on-error` false, QEMU's
//! `exit-on-error=false`) stays, once past target-init, with its incoming
//! migration `failed`, its main channel shut, never running.
//!
//! A deferred target (`--incoming-defer`, QEMU's `-incoming defer`) has no
//! main channel on its command line: at target-init, once its monitor is up,
//! it waits for `migrate-incoming` to name it, and only then listens on it
//! and signals readiness on the cpr channel.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use sendfd::RecvWithFd;

use crate::blk::Blk;
use crate::cli::{Config, Incoming};
use crate::listen::Listener;
use crate::log::{self, Role};
use crate::migration::MigrationStatus;
use crate::mutant::Mutant;
use crate::proto::{self, CprState, DeviceState};
use crate::ram::GuestRam;
use crate::runstate::RunState;
use crate::vhost_kernel::VhostKernel;
use crate::vm::{IncomingRequest, Vm, VmState};

/// A target that stays alive when its load fails: its VM (set at the end
/// of target-init) and its main channel (once accepted), for [`die`].
static STAY: OnceLock<Arc<Vm>> = OnceLock::new();
static MAIN_FD: AtomicI32 = AtomicI32::new(-1);

/// Logs why the incoming migration failed and exits with status 1; a
/// target told to stay alive on a failed load stays instead, its incoming
/// migration `failed`, its main channel shut (so the source learns it),
/// never running.
fn die(msg: impl std::fmt::Display) -> ! {
    let Some(vm) = STAY.get() else {
        crate::log!("incoming migration failed: {msg}; exiting");
        log::exit(1)
    };
    crate::log!("incoming migration failed: {msg}; staying (exit-on-error off)");
    // The device goes back to the source: a target that will never run
    // must not keep it.
    if let Some(blk) = &vm.blk
        && let Err(e) = blk.release()
    {
        crate::log!("vhost-user-blk: letting the device go: {e:#} (connection closed)");
    }
    {
        let mut st = vm.lock();
        st.migration.error_desc = Some(format!("load of migration failed: {msg}"));
        vm.set_migration_status(&mut st, MigrationStatus::Failed);
    }
    let fd = MAIN_FD.swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        // The main channel's fd, still owned by its stream (never dropped:
        // the thread that failed parks for good below); only shut down here.
        let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
    }
    loop {
        std::thread::park();
    }
}

/// Runs a target: receives the VM, then serves QMP until `quit`.
pub fn run(cfg: &Config, inc: &Incoming) -> ! {
    log::set_role(Role::Target);
    if let Some(m) = cfg.mutant {
        crate::log!("boot: mutant {m}");
    }
    let (cpr, ram_fd, vhost_fd) = target_listen(cfg, inc);
    let (vm, main_listener) = target_init(cfg, inc, &cpr, ram_fd, vhost_fd);
    let main = wait_main(main_listener, &cpr);
    MAIN_FD.store(main.as_raw_fd(), Ordering::SeqCst);
    crate::log!("step main-stream: main channel accepted");
    let mut reader = BufReader::new(&main);
    let state = load_state(cfg, &vm, &mut reader);

    let ring_early = vm.has(Mutant::RingBeforeGo);
    if ring_early {
        // The bug: the device's ring starts with the loaded state, while the
        // source may still cancel and take the device back.
        crate::log!("main-stream: starting the device ring before go (mutant ring-before-go)");
        start_blk(&vm, &state);
    }
    let early = vm.has(Mutant::SplitBrainAfterCancel);
    if early {
        // The bug: runs as soon as the state is loaded, before telling the
        // source and without waiting for its go.
        crate::log!("target-resume: not waiting for go (mutant split-brain-after-cancel)");
        start_blk(&vm, &state);
        target_resume(&vm, &mut vm.lock(), &state);
    }
    match (&main).write_all(&proto::loaded_line()) {
        Ok(()) => {}
        Err(e) if early => crate::log!("main-stream: writing loaded: {e}"),
        Err(e) => die(format!("writing loaded: {e}")),
    }
    let go = match proto::read_line(&mut reader) {
        Ok(Some(line)) => proto::expect_bare(&line, "go"),
        Ok(None) => Err("the main channel closed before go".into()),
        Err(e) => Err(format!("reading go: {e}")),
    };
    match go {
        Ok(()) => crate::log!("main-stream: go"),
        Err(e) if early => crate::log!("main-stream: no go ({e}); running anyway"),
        Err(e) => die(format!("the source did not commit: {e}")),
    }
    if !early {
        if !ring_early {
            start_blk(&vm, &state);
        }
        target_resume(&vm, &mut vm.lock(), &state);
    }
    drop(reader);
    drop(main);
    drop(cpr);
    loop {
        std::thread::park();
    }
}

/// target-listen: no monitor yet; accepts one cpr connection and reads the
/// CPR state with the RAM fd (and the kernel vhost fd, second, if any).
fn target_listen(cfg: &Config, inc: &Incoming) -> (UnixStream, OwnedFd, Option<OwnedFd>) {
    crate::log!("step target-listen on {}", inc.cpr.display());
    let listener = Listener::bind(&inc.cpr)
        .unwrap_or_else(|e| die(format!("cpr socket {}: {e}", inc.cpr.display())));
    let cpr = listener
        .accept_once()
        .unwrap_or_else(|e| die(format!("accepting the cpr channel: {e}")));
    crate::log!("target-listen: cpr channel accepted");
    let (msg, fds) = recv_cpr(&cpr).unwrap_or_else(|e| die(e));
    let cpr_state = CprState::parse(&msg).unwrap_or_else(|e| die(e));
    if cpr_state.ram_size != cfg.ram_size {
        die(format!(
            "the CPR state has {} bytes of RAM, this VM has {}",
            cpr_state.ram_size, cfg.ram_size
        ));
    }
    let nfds = fds.len();
    let mut fds = fds.into_iter();
    let Some(ram_fd) = fds.next() else {
        die("the CPR state came without the RAM fd")
    };
    crate::log!("target-listen: CPR state received with {nfds} fd(s)");
    (cpr, ram_fd, fds.next())
}

/// target-init: maps the RAM fd in place, starts the monitor, listens on the
/// main channel, then signals readiness (half-closes the cpr channel).
fn target_init(
    cfg: &Config,
    inc: &Incoming,
    cpr: &UnixStream,
    ram_fd: OwnedFd,
    vhost_fd: Option<OwnedFd>,
) -> (Arc<Vm>, Listener) {
    crate::log!("step target-init");
    let ram = if cfg.mutant == Some(Mutant::CopyRam) {
        crate::log!("target-init: copying guest RAM (mutant copy-ram)");
        GuestRam::copied_from_received_fd(ram_fd, cfg.ram_size)
    } else {
        GuestRam::from_received_fd(ram_fd, cfg.ram_size)
    }
    .unwrap_or_else(|e| die(format!("mapping guest RAM: {e:#}")));
    crate::log!("target-init: guest RAM mapped (counter {})", ram.counter());
    let mut vm = Vm::new(
        ram,
        RunState::InMigrate,
        !cfg.no_autostart,
        cfg.mutant,
        cfg.guest_step,
    );
    vm.extra_devices = cfg.extra_devices.clone();
    take_devices(cfg, &mut vm, vhost_fd);
    let vm = Arc::new(vm);
    // A deferred target takes its main channel from `migrate-incoming`.
    let request = inc.main.is_none().then(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<IncomingRequest>(1);
        vm.lock().incoming_request = Some(tx);
        rx
    });
    if let Err(e) = crate::monitor::start(&cfg.qmp, Arc::clone(&vm)) {
        die(format!("QMP socket {}: {e}", cfg.qmp.display()));
    }
    crate::log!("target-init: QMP monitor on {}", cfg.qmp.display());
    let (main, exit_on_error) = match (&inc.main, request) {
        (Some(main), _) => (main.clone(), !cfg.stay_on_failed_load),
        (None, Some(rx)) => {
            crate::log!("target-init: deferred: waiting for migrate-incoming");
            match rx.recv() {
                Ok(req) => (req.main, req.exit_on_error),
                Err(_) => die("the monitor is gone before migrate-incoming"),
            }
        }
        (None, None) => unreachable!("a deferred target has a request channel"),
    };
    if !exit_on_error {
        let _ = STAY.set(Arc::clone(&vm));
    }
    let main_listener = Listener::bind(&main)
        .unwrap_or_else(|e| die(format!("main socket {}: {e}", main.display())));
    if let Err(e) = cpr.shutdown(Shutdown::Write) {
        die(format!("signalling readiness on the cpr channel: {e}"));
    }
    crate::log!(
        "target-init: ready (cpr channel half-closed), listening on {}",
        main.display()
    );
    (vm, main_listener)
}

/// target-init's take-over of the devices: the vhost-user-blk device on our
/// own `--vhost-user-blk` path (handshake, SET_OWNER, GET_CONFIG,
/// SET_MEM_TABLE with the received memfd; its ring starts at main-stream) and
/// the received kernel vhost fd (VHOST_SET_OWNER). Any refusal (busy: an
/// error reply or a closed connection, EBUSY) ends the process.
fn take_devices(cfg: &Config, vm: &mut Vm, vhost_fd: Option<OwnedFd>) {
    if let Some(path) = &cfg.vhost_user_blk {
        let blk = Blk::new(path, Arc::clone(&vm.ram));
        if let Err(e) = blk.attach() {
            die(format!("vhost-user-blk: {e:#}"));
        }
        crate::log!("target-init: vhost-user-blk device taken (SET_OWNER, SET_MEM_TABLE)");
        vm.blk = Some(blk);
    }
    if cfg.vhost_kernel.is_some() {
        let Some(fd) = vhost_fd else {
            die("the CPR state came without the kernel vhost fd")
        };
        let dev = VhostKernel::from_fd(fd);
        if let Err(e) = dev.set_owner() {
            die(format!("VHOST_SET_OWNER: {e}"));
        }
        crate::log!("target-init: kernel vhost device taken (VHOST_SET_OWNER)");
        vm.vhost_kernel = Some(dev);
    }
}

/// main-stream: reads, checks and loads the device state. Besides its own
/// members, the state must agree with guest RAM: the source's last guest
/// write was `r` (the vCPU is stopped before the state is taken), so the
/// counter must equal `r`; this catches a flipped digit in the state.
fn load_state<R: BufRead>(cfg: &Config, vm: &Vm, reader: &mut R) -> DeviceState {
    let line = match proto::read_line(reader) {
        Ok(Some(line)) => line,
        Ok(None) => die("the main channel closed before the device state"),
        Err(e) => die(format!("reading the device state: {e}")),
    };
    let state = DeviceState::parse(&line).unwrap_or_else(|e| die(e));
    if state.ram_size != cfg.ram_size {
        die(format!(
            "the device state has {} bytes of RAM, this VM has {}",
            state.ram_size, cfg.ram_size
        ));
    }
    let counter = vm.ram.counter();
    // The split-brain mutant, in a hurry to run, does not check: so its bug
    // shows whatever the source did to the RAM meanwhile.
    if counter != state.vcpu.r && !vm.has(Mutant::SplitBrainAfterCancel) {
        die(format!(
            "the device state (r={}) does not match guest RAM (counter {counter})",
            state.vcpu.r
        ));
    }
    vm.vcpu.set_r(state.vcpu.r);
    check_blk(vm, &state);
    // A device the state has and this VM lacks cannot be loaded (QEMU:
    // "Unknown savevm section"); one this VM has and the state lacks keeps
    // its reset state.
    if let Some(d) = state.devices.iter().find(|d| !vm.extra_devices.contains(d)) {
        die(format!(
            "the device state has a section for device '{d}', this VM has no such device"
        ));
    }
    crate::log!(
        "main-stream: device state loaded (r={}, source was {})",
        state.vcpu.r,
        if state.running {
            "running"
        } else {
            "not running"
        }
    );
    state
}

/// Checks the vhost-user-blk ring state: the state must carry one exactly
/// when this VM has the device.
fn check_blk(vm: &Vm, state: &DeviceState) {
    match (&vm.blk, &state.blk) {
        (Some(_), None) => die("the device state has no vhost-user-blk ring state"),
        (None, Some(_)) => {
            die("the device state has a vhost-user-blk ring state, this VM has no such device")
        }
        _ => {}
    }
}

/// Starts the vhost-user-blk ring at the source's base: only once the source
/// committed (its `go`), with the VM, as the device was the source's until
/// then (a cancelled transfer must not leave the device with two rings).
fn start_blk(vm: &Vm, state: &DeviceState) {
    let (Some(blk), Some(s)) = (&vm.blk, &state.blk) else {
        return;
    };
    let driver = blk.driver_index();
    if driver != s.base {
        crate::log!(
            "target-resume: vhost-user-blk base {} differs from the driver's index {driver} (requests the device has not consumed)",
            s.base
        );
    }
    if let Err(e) = blk.start_ring(s.base) {
        die(format!(
            "vhost-user-blk: starting ring 0 at base {}: {e:#}",
            s.base
        ));
    }
}

/// target-resume: runs the VM if the source was running (and `-S` or a
/// `stop` did not say otherwise), else ends `paused` (`prelaunch` if the
/// source had never run, as QEMU's target takes the source's runstate).
fn target_resume(vm: &Vm, st: &mut VmState, state: &DeviceState) {
    crate::log!("step target-resume");
    let run = (state.running && st.autostart) || vm.has(Mutant::TargetIgnoresPaused);
    if run {
        vm.start(st);
    } else if state.prelaunch {
        st.runstate = RunState::Prelaunch;
        crate::log!("target-resume: prelaunch (the source never ran)");
    } else {
        st.runstate = RunState::Paused;
        crate::log!("target-resume: paused");
    }
}

/// Reads the CPR message: bytes up to a newline, with every fd that came
/// along (in any segment).
fn recv_cpr(sock: &UnixStream) -> Result<(Vec<u8>, Vec<OwnedFd>), String> {
    let mut bytes = Vec::new();
    let mut fds = Vec::new();
    loop {
        let mut buf = [0u8; 4096];
        let mut fd_buf = [-1; 16];
        let (n, nfd) = match sock.recv_with_fd(&mut buf, &mut fd_buf) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading the CPR state: {e}")),
        };
        for &fd in &fd_buf[..nfd] {
            // SAFETY: the kernel just installed this fd for us; nothing else owns it.
            fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        if n == 0 {
            return Err("the cpr channel closed before the CPR state was complete".into());
        }
        bytes.extend_from_slice(&buf[..n]);
        if let Some(i) = bytes.iter().position(|&b| b == b'\n') {
            if i + 1 != bytes.len() {
                return Err("unexpected bytes after the CPR state".into());
            }
            bytes.truncate(i);
            return Ok((bytes, fds));
        }
        if bytes.len() > proto::MAX_LINE {
            return Err("the CPR state is too long".into());
        }
    }
}

/// Waits for the source's main connection; the source closing the cpr
/// channel first means it went away.
fn wait_main(listener: Listener, cpr: &UnixStream) -> UnixStream {
    loop {
        let (main_ready, cpr_ready) = {
            let mut fds = [
                PollFd::new(listener.listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(cpr.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => die(format!("poll: {e}")),
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if main_ready {
            return listener
                .accept_once()
                .unwrap_or_else(|e| die(format!("accepting the main channel: {e}")));
        }
        if cpr_ready {
            let mut b = [0u8; 64];
            match (&*cpr).read(&mut b) {
                Ok(0) => {
                    die("the source closed the cpr channel before connecting the main channel")
                }
                Ok(n) => die(format!("{n} unexpected bytes on the cpr channel")),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => die(format!("cpr channel: {e}")),
            }
        }
    }
}
