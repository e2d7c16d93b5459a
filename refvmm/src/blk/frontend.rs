//! One vhost-user connection to the vhost-user-blk backend, as a frontend:
//! the handshake, ownership (SET_OWNER, RESET_OWNER), the memory table and
//! starting or stopping ring 0. Every reply is awaited at most
//! [`REPLY_TIMEOUT`] (a watchdog shuts the socket down after that); with REPLY_ACK every message asks for a reply, so a
//! refused message comes back as an error and a closed connection as an I/O
//! error.

use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserProtocolFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::virtqueue::SplitQueue;
use crate::ram::GuestRam;

/// Bound on the wait for any reply of the backend: well above the longest
/// late answer the kit's device makes on purpose (400 ms), and what a
/// target waits for a backend that serves another frontend first.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// VIRTIO_F_VERSION_1.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// VHOST_USER_F_PROTOCOL_FEATURES.
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;
/// Bytes of virtio-blk config space read (as QEMU 10.0 reads).
const CONFIG_LEN: u32 = 57;
/// The queue refvmm uses.
const QUEUE: usize = 0;

/// The eventfds of a started ring: the driver kicks, the device calls.
#[derive(Debug)]
pub struct RingFds {
    pub kick: EventFd,
    pub call: EventFd,
}

/// A connection to the backend.
pub struct Conn {
    fe: Frontend,
    /// The same socket, for the watchdog to shut down.
    sock: UnixStream,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Conn")
    }
}

impl Conn {
    /// Connects to the backend's socket (each request bounded, see [`Conn::call`]).
    pub fn connect(path: &Path) -> Result<Self> {
        let sock = UnixStream::connect(path)
            .with_context(|| format!("connecting to {}", path.display()))?;
        let watched = sock.try_clone().context("dup of the device socket")?;
        Ok(Self {
            fe: Frontend::from_stream(sock, 1),
            sock: watched,
        })
    }

    /// One request and its reply, bounded by [`REPLY_TIMEOUT`]: the vhost
    /// crate retries a read that times out, so a watchdog shuts the socket
    /// down instead, and the request fails (a backend that does not answer,
    /// like one busy with another frontend, cannot wedge refvmm).
    fn call<T, E: std::error::Error + Send + Sync + 'static>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Frontend) -> std::result::Result<T, E>,
    ) -> Result<T> {
        let (done, wait) = mpsc::channel::<()>();
        let sock = self.sock.try_clone().context("dup of the device socket")?;
        let watchdog = std::thread::spawn(move || {
            let late = matches!(
                wait.recv_timeout(REPLY_TIMEOUT),
                Err(RecvTimeoutError::Timeout)
            );
            if late {
                let _ = sock.shutdown(Shutdown::Both);
            }
            late
        });
        let r = f(&mut self.fe);
        drop(done);
        let late = watchdog.join().unwrap_or(false);
        match r {
            Ok(v) => Ok(v),
            Err(e) if late => Err(anyhow::anyhow!(
                "{what}: no answer within {REPLY_TIMEOUT:?} ({e}); connection shut down"
            )),
            Err(e) => Err(anyhow::Error::new(e).context(what.to_string())),
        }
    }

    /// The handshake: GET_FEATURES, SET_FEATURES (VERSION_1 and
    /// PROTOCOL_FEATURES), GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES
    /// (REPLY_ACK, CONFIG, MQ, as offered); then NEED_REPLY on every message
    /// if REPLY_ACK is on. Returns the acked protocol features.
    pub fn handshake(&mut self) -> Result<VhostUserProtocolFeatures> {
        let offered = self.call("GET_FEATURES", |fe| fe.get_features())?;
        if offered & VHOST_USER_F_PROTOCOL_FEATURES == 0 {
            bail!("the backend does not offer VHOST_USER_F_PROTOCOL_FEATURES ({offered:#x})");
        }
        let features = (VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES) & offered;
        self.call("SET_FEATURES", |fe| fe.set_features(features))?;
        let proto = self.call("GET_PROTOCOL_FEATURES", |fe| fe.get_protocol_features())?;
        let want = (VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ)
            & proto;
        self.call("SET_PROTOCOL_FEATURES", |fe| fe.set_protocol_features(want))?;
        if want.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            self.fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        crate::log!(
            "vhost-user-blk: features {features:#x} (offered {offered:#x}), protocol features {:#x} (offered {:#x})",
            want.bits(),
            proto.bits()
        );
        Ok(want)
    }

    /// SET_OWNER.
    pub fn set_owner(&mut self) -> Result<()> {
        self.call("SET_OWNER refused", |fe| fe.set_owner())
    }

    /// RESET_OWNER.
    pub fn reset_owner(&mut self) -> Result<()> {
        self.call("RESET_OWNER refused", |fe| fe.reset_owner())
    }

    /// GET_CONFIG: the capacity in 512-byte sectors (0 if the backend does
    /// not offer CONFIG).
    pub fn capacity(&mut self, proto: VhostUserProtocolFeatures) -> Result<u64> {
        if !proto.contains(VhostUserProtocolFeatures::CONFIG) {
            return Ok(0);
        }
        let buf = vec![0u8; CONFIG_LEN as usize];
        let (_, payload) = self.call("GET_CONFIG", |fe| {
            fe.get_config(0, CONFIG_LEN, VhostUserConfigFlags::empty(), &buf)
        })?;
        let cap: [u8; 8] = payload
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .context("GET_CONFIG: short config space")?;
        Ok(u64::from_le_bytes(cap))
    }

    /// SET_MEM_TABLE: one region, guest RAM at guest physical 0, mapped at
    /// its address in this process, from its memfd at offset 0.
    pub fn set_mem_table(&mut self, ram: &GuestRam) -> Result<()> {
        let memfd = ram
            .memfd()
            .context("SET_MEM_TABLE: guest RAM is not in a memfd")?;
        let region = VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: ram.len() as u64,
            userspace_addr: ram.host_addr(),
            mmap_offset: 0,
            mmap_handle: memfd.as_raw_fd(),
        };
        self.call("SET_MEM_TABLE", |fe| fe.set_mem_table(&[region]))?;
        Ok(())
    }

    /// Starts ring 0 at `base`: SET_VRING_NUM, SET_VRING_ADDR,
    /// SET_VRING_BASE, SET_VRING_CALL, SET_VRING_KICK (fresh eventfds),
    /// SET_VRING_ENABLE 1.
    pub fn start_ring(&mut self, ram: &GuestRam, base: u16) -> Result<RingFds> {
        let q = SplitQueue::new(ram);
        let cfg = q.vring_config();
        self.call("SET_VRING_NUM", |fe| {
            fe.set_vring_num(QUEUE, cfg.queue_size)
        })?;
        self.call("SET_VRING_ADDR", |fe| fe.set_vring_addr(QUEUE, &cfg))?;
        self.call("SET_VRING_BASE", |fe| fe.set_vring_base(QUEUE, base))?;
        let fds = RingFds {
            kick: EventFd::new(EFD_NONBLOCK).context("eventfd (kick)")?,
            call: EventFd::new(EFD_NONBLOCK).context("eventfd (call)")?,
        };
        self.call("SET_VRING_CALL", |fe| fe.set_vring_call(QUEUE, &fds.call))?;
        self.call("SET_VRING_KICK", |fe| fe.set_vring_kick(QUEUE, &fds.kick))?;
        self.call("SET_VRING_ENABLE 1", |fe| fe.set_vring_enable(QUEUE, true))?;
        Ok(fds)
    }

    /// Stops ring 0: SET_VRING_ENABLE 0, then GET_VRING_BASE (the device's
    /// next available index, the base a new owner starts from).
    pub fn stop_ring(&mut self) -> Result<u16> {
        self.call("SET_VRING_ENABLE 0", |fe| fe.set_vring_enable(QUEUE, false))?;
        let base = self.call("GET_VRING_BASE", |fe| fe.get_vring_base(QUEUE))?;
        u16::try_from(base).with_context(|| format!("GET_VRING_BASE: base {base} is not a u16"))
    }
}
