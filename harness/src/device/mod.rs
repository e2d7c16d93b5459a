//! The kit's vhost device in a trial: starting the device backend (the
//! kit's daemon, crate `cprkit-device`, or qemu-storage-daemon) in the trial
//! directory, and reading the daemon's state and ledger; `words` turns its
//! ledger into lines for the timeline and snapshots. (What the daemon is armed
//! with for a device fault is [`crate::faults::device_fault`].)
//!
//! The daemon stamps its ledger with CLOCK_MONOTONIC, the clock of
//! [`std::time::Instant`] on Linux, so its entries fall into the trial's
//! timeline at their real place (see [`Timeline::at_monotonic`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use cprkit_device::client::DeviceClient;
pub use cprkit_device::fault::{DeviceFault, DeviceFaultKind, Trigger};
pub use cprkit_device::ledger::{Answer, EntryKind, LedgerEntry, OwnerChange};
pub use cprkit_device::state::{ConnState, DeviceState, Policy};

use crate::launcher::Helper;
use crate::process::VmmProcess;
use crate::procinfo::ExitInfo;
use crate::timeline::{Actor, Timeline};
use crate::trialdir::TrialDir;
use crate::unixnet;

mod words;

pub use words::{owner_label, timeline_label};

/// The first argument with which a hosting program runs the device daemon.
pub const HOSTED_DEVICE_ARG: &str = "__device";

/// The device daemon as one of the kit's helper programs.
pub const DEVICE_DAEMON: Helper = Helper {
    what: "the device daemon (cprkit-device)",
    env: "CPRKIT_DEVICE",
    bin: "cprkit-device",
    hosted_arg: HOSTED_DEVICE_ARG,
};

/// Which vhost-user-blk backend serves the trial's device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// The kit's own daemon: a ledger, a policy, device faults.
    Kit,
    /// Debian qemu-utils' `qemu-storage-daemon` with a vhost-user-blk export:
    /// a third-party backend serving one frontend at a time, whose rings and
    /// owner the kit cannot see.
    QemuStorageDaemon,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Kit => "kit",
            Backend::QemuStorageDaemon => "qemu-storage-daemon",
        }
    }

    /// Whether the kit sees the device's state and ledger (the device rules need them).
    pub fn observable(self) -> bool {
        self == Backend::Kit
    }

    /// Why this backend cannot run here, if it cannot.
    pub fn missing(self) -> Option<String> {
        match self {
            Backend::Kit => None,
            Backend::QemuStorageDaemon => which(QSD).is_none().then(|| {
                format!("{QSD} not found: install it (Debian: apt-get install qemu-utils)")
            }),
        }
    }
}

/// The kernel vhost devices of the `vhost-kernel` profile, in the order tried.
pub const KERNEL_VHOST_DEVICES: [&str; 2] = ["/dev/vhost-net", "/dev/vhost-vsock"];

/// The program of [`Backend::QemuStorageDaemon`].
const QSD: &str = "qemu-storage-daemon";

/// A program on PATH.
fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// The device a trial hands over with the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSetup {
    pub backend: Backend,
    /// The kit's daemon's policy (a third-party backend has its own rules).
    pub policy: Policy,
}

/// The device daemon could not be started or read.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{0}")]
    NotFound(#[from] crate::launcher::NotFound),
    #[error("cannot start the device daemon: {0}")]
    Spawn(std::io::Error),
    #[error("the device daemon never listened on {0} (see device.log)")]
    NotListening(PathBuf),
    #[error("device daemon: {0}")]
    Control(#[from] cprkit_device::client::DeviceError),
    #[error("cannot write the disk image: {0}")]
    Image(std::io::Error),
    #[error("{0} keeps no ledger: the kit cannot read its state")]
    Unobservable(&'static str),
}

/// One trial's device backend process.
pub struct DeviceDaemon {
    proc: VmmProcess,
    backend: Backend,
    socket: PathBuf,
    /// The control connection (the kit's daemon only).
    client: Option<DeviceClient>,
}

/// How long the daemon gets to listen.
const START: Duration = Duration::from_secs(10);

impl DeviceDaemon {
    /// Starts the backend in `dir` as `setup` says; its exit goes to the timeline.
    pub fn start(
        dir: &TrialDir,
        timeline: &Timeline,
        setup: DeviceSetup,
        on_exit: impl FnOnce(ExitInfo) + Send + 'static,
    ) -> Result<Self, DeviceError> {
        let socket = dir.join("vhost-blk.sock");
        let control = dir.join("device-ctl.sock");
        let cmd = match setup.backend {
            Backend::Kit => {
                // Found once per run: where it is does not change.
                static FOUND: std::sync::OnceLock<crate::launcher::Launcher> =
                    std::sync::OnceLock::new();
                let launcher = match FOUND.get() {
                    Some(l) => l,
                    None => {
                        let l = DEVICE_DAEMON.locate()?;
                        FOUND.get_or_init(|| l)
                    }
                };
                let mut cmd = launcher.command();
                cmd.arg("--socket")
                    .arg(&socket)
                    .arg("--control")
                    .arg(&control)
                    .arg("--policy")
                    .arg(setup.policy.name());
                cmd
            }
            Backend::QemuStorageDaemon => {
                // The same disk as the kit's: SeaBIOS boots the counting loop from it.
                let image = dir.join("disk.img");
                std::fs::write(&image, cprkit_device::disk::image()).map_err(DeviceError::Image)?;
                let mut cmd = std::process::Command::new(QSD);
                cmd.arg("--blockdev")
                    .arg(format!(
                        "driver=file,node-name=disk0,filename={}",
                        image.display()
                    ))
                    .arg("--export")
                    .arg(format!(
                        "type=vhost-user-blk,id=exp0,node-name=disk0,writable=on,addr.type=unix,addr.path={}",
                        socket.display()
                    ));
                cmd
            }
        };
        let proc = VmmProcess::spawn(
            Actor::Device,
            cmd,
            &dir.join("device.log"),
            timeline,
            on_exit,
        )
        .map_err(DeviceError::Spawn)?;
        let deadline = Instant::now() + START;
        let observable = setup.backend.observable();
        for path in [&socket, &control]
            .into_iter()
            .take(if observable { 2 } else { 1 })
        {
            if !unixnet::wait_listening(path, deadline, || !proc.is_alive()) {
                return Err(DeviceError::NotListening(path.clone()));
            }
        }
        let client = if observable {
            Some(DeviceClient::connect(&control, START)?)
        } else {
            None
        };
        Ok(DeviceDaemon {
            proc,
            backend: setup.backend,
            socket,
            client,
        })
    }

    fn client(&mut self) -> Result<&mut DeviceClient, DeviceError> {
        let name = self.backend.name();
        self.client.as_mut().ok_or(DeviceError::Unobservable(name))
    }

    /// The vhost-user socket VMMs connect to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn is_alive(&self) -> bool {
        self.proc.is_alive()
    }

    /// Whether the kit sees this backend's state and ledger.
    pub fn observable(&self) -> bool {
        self.client.is_some()
    }

    pub fn state(&mut self) -> Result<DeviceState, DeviceError> {
        Ok(self.client()?.state()?)
    }

    /// The state once `done` holds of it, or at `deadline` (whichever comes
    /// first): the daemon answers each change as it happens, nothing polls.
    pub fn wait_until(
        &mut self,
        deadline: Instant,
        done: impl Fn(&DeviceState) -> bool,
    ) -> Result<DeviceState, DeviceError> {
        let mut st = self.state()?;
        loop {
            let now = Instant::now();
            if done(&st) || now >= deadline {
                return Ok(st);
            }
            st = self.wait_change(st.version, deadline - now)?;
        }
    }

    /// The state once it changed past `version`, or after `timeout`.
    pub fn wait_change(
        &mut self,
        version: u64,
        timeout: Duration,
    ) -> Result<DeviceState, DeviceError> {
        Ok(self.client()?.wait_change(version, timeout)?)
    }

    pub fn ledger(&mut self) -> Result<Vec<LedgerEntry>, DeviceError> {
        Ok(self.client()?.ledger(0)?)
    }

    pub fn arm(&mut self, fault: &DeviceFault) -> Result<(), DeviceError> {
        Ok(self.client()?.arm(fault)?)
    }

    /// Puts a mark in the ledger; its sequence number.
    pub fn mark(&mut self, label: &str) -> Result<u64, DeviceError> {
        Ok(self.client()?.mark(label)?)
    }

    /// Waits (bounded) for an I/O request from `pid` after ledger entry `after`.
    pub fn wait_io(
        &mut self,
        pid: i32,
        after: u64,
        timeout: Duration,
    ) -> Result<Option<LedgerEntry>, DeviceError> {
        Ok(self.client()?.wait_io(pid, after, timeout)?)
    }

    /// Stops the daemon (the trial is over).
    pub fn stop(&self) {
        if self.proc.is_alive() {
            self.proc.kill();
        }
    }
}
