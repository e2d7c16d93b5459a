//! One frontend connection: its negotiated state, its rings and memory, and the vhost-user
//! message handlers (ownership, faults, refusals, ledger entries for every message).

use std::collections::BTreeMap;
use std::fs::File;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use vhost::VhostUserMemoryRegionBase;
use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight,
    VhostUserLog, VhostUserMemoryRegion, VhostUserProtocolFeatures, VhostUserShMemConfig,
    VhostUserSharedMsg, VhostUserSingleMemoryRegion, VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::{
    Error as VuError, GpuBackend, Result as VuResult, VhostUserBackendReqHandler,
};

use crate::device::{Device, OwnerId, TakeOutcome};
use crate::disk::Disk;
use crate::fault::{DeviceFaultKind, Trigger};
use crate::ledger::{Answer, EntryKind, OwnerChange};
use crate::memory::GuestMap;
use crate::ring::{self, Ring, RingAddrs};
use crate::state::{ConnState, RingState};

/// VIRTIO_F_VERSION_1.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// VHOST_USER_F_PROTOCOL_FEATURES.
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;
/// VIRTIO_BLK_F_FLUSH.
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
/// VIRTIO_BLK_F_BLK_SIZE.
pub const VIRTIO_BLK_F_BLK_SIZE: u64 = 1 << 6;
/// The virtio features the device offers.
pub const FEATURES: u64 = VIRTIO_F_VERSION_1
    | VHOST_USER_F_PROTOCOL_FEATURES
    | VIRTIO_BLK_F_FLUSH
    | VIRTIO_BLK_F_BLK_SIZE;
/// Rings a connection may configure (GET_QUEUE_NUM answers 1; a few more are tolerated).
pub const MAX_RINGS: u32 = 8;

/// What the connection loop must do after a handler refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A non-zero status reply went out: keep serving.
    Kept,
    /// Close the connection (the refusal, or an injected disconnect).
    Close,
}

/// Negotiated and per-message state, behind the connection's lock.
#[derive(Debug, Default)]
struct Inner {
    /// NEED_REPLY of the message being handled (from the peeked header).
    need_reply: bool,
    /// GET_FEATURES answered (with VHOST_USER_F_PROTOCOL_FEATURES in the offer).
    features_offered: bool,
    acked_features: u64,
    acked_protocol: u64,
    map: Option<Arc<GuestMap>>,
    rings: BTreeMap<u16, Ring>,
    outcome: Option<Outcome>,
}

impl Inner {
    fn reply_ack(&self) -> bool {
        self.features_offered
            && self.acked_protocol & VhostUserProtocolFeatures::REPLY_ACK.bits() != 0
    }

    fn protocol_features(&self) -> bool {
        self.acked_features & VHOST_USER_F_PROTOCOL_FEATURES != 0
    }
}

/// One frontend connection.
#[derive(Debug)]
pub struct Connection {
    pub id: u32,
    pub pid: Option<i32>,
    device: Arc<Device>,
    /// A clone of the socket, to shut it down (injected disconnect, daemon stop).
    socket: UnixStream,
    open: AtomicBool,
    /// Set once by [`Conn::closed`]; `open` turns false only after the
    /// disconnect's ledger entries, so whoever sees the connection closed
    /// finds them in the ledger.
    closing: AtomicBool,
    io: Arc<AtomicU64>,
    inner: Mutex<Inner>,
}

/// A pid for log lines: the number, or "?" when SO_PEERCRED gave none.
pub fn show_pid(pid: Option<i32>) -> String {
    pid.map_or_else(|| "?".to_string(), |p| p.to_string())
}

fn refused(why: &str) -> VuError {
    VuError::ReqHandlerError(std::io::Error::other(why.to_string()))
}

impl Connection {
    /// A connection on `socket` (a clone of the stream the handler reads).
    pub fn new(id: u32, pid: Option<i32>, device: Arc<Device>, socket: UnixStream) -> Self {
        Connection {
            id,
            pid,
            device,
            socket,
            open: AtomicBool::new(true),
            closing: AtomicBool::new(false),
            io: Arc::new(AtomicU64::new(0)),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn who(&self) -> OwnerId {
        OwnerId {
            conn: self.id,
            pid: self.pid,
        }
    }

    fn push(&self, kind: EntryKind) -> u64 {
        self.device.ledger.push(Some(self.id), self.pid, kind)
    }

    /// Appends an entry of this connection to the ledger.
    pub fn ledger_push(&self, kind: EntryKind) -> u64 {
        self.push(kind)
    }

    fn owner_change(&self, change: OwnerChange) {
        self.push(EntryKind::Owner { change });
    }

    fn record(&self, name: &str, detail: &str, answer: Answer, delayed_ms: u64) {
        self.push(EntryKind::Message {
            name: name.to_string(),
            detail: detail.to_string(),
            answer,
            delayed_ms,
        });
    }

    fn ok(&self, name: &str, detail: &str, delayed_ms: u64) {
        self.record(name, detail, Answer::Ok, delayed_ms);
    }

    /// Sets the NEED_REPLY flag of the message about to be handled.
    pub fn begin_message(&self, need_reply: bool) {
        let mut inner = self.lock();
        inner.need_reply = need_reply;
        inner.outcome = None;
    }

    /// What a handler decided about the connection for the last message, if it refused it.
    pub fn take_outcome(&self) -> Option<Outcome> {
        self.lock().outcome.take()
    }

    /// Whether the connection is still open.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    /// Shuts the socket down, which ends the connection loop's blocking read.
    pub fn shutdown(&self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }

    /// Refuses a message: a non-zero status reply if the frontend asked for one and the
    /// message has a status, else the connection is closed.
    fn refuse(
        &self,
        name: &str,
        detail: &str,
        why: &str,
        has_status: bool,
        delayed_ms: u64,
    ) -> VuError {
        let keep = {
            let mut inner = self.lock();
            let keep = has_status && inner.need_reply && inner.reply_ack();
            inner.outcome = Some(if keep { Outcome::Kept } else { Outcome::Close });
            keep
        };
        let answer = if keep {
            Answer::Error {
                why: why.to_string(),
            }
        } else {
            Answer::Closed {
                why: why.to_string(),
            }
        };
        eprintln!(
            "cprkit-device: conn {} (pid {}): {name} {detail} refused: {why}{}",
            self.id,
            show_pid(self.pid),
            if keep {
                " (error reply)"
            } else {
                " (closing the connection)"
            }
        );
        self.record(name, detail, answer, delayed_ms);
        if !keep {
            self.closed();
        }
        refused(why)
    }

    /// Drops the connection at this message, before answering (injected disconnect).
    fn drop_now(&self, name: &str, detail: &str) -> VuError {
        self.lock().outcome = Some(Outcome::Close);
        let why = "injected disconnect";
        eprintln!(
            "cprkit-device: conn {} (pid {}): {name} {detail}: {why}",
            self.id,
            show_pid(self.pid)
        );
        self.record(
            name,
            detail,
            Answer::Closed {
                why: why.to_string(),
            },
            0,
        );
        // Closed here and now: its rings stop and the device is released in
        // the ledger before anything the frontend does next.
        self.closed();
        refused(why)
    }

    /// Fires an armed fault for this message, if any: `Ok(delayed_ms)` to go on, `Err` to stop.
    fn gate(
        &self,
        on: Trigger,
        name: &str,
        detail: &str,
        has_status: bool,
    ) -> Result<u64, VuError> {
        let Some(fault) = self.device.faults.fire(self.pid, on) else {
            return Ok(0);
        };
        let message = if detail.is_empty() {
            name.to_string()
        } else {
            format!("{name} {detail}")
        };
        self.push(EntryKind::Fault {
            fault: fault.kind.name().to_string(),
            message,
        });
        match fault.kind {
            DeviceFaultKind::Delay => {
                std::thread::sleep(Duration::from_millis(fault.delay_ms));
                Ok(fault.delay_ms)
            }
            DeviceFaultKind::Disconnect => Err(self.drop_now(name, detail)),
            DeviceFaultKind::Busy if on == Trigger::Take => {
                let owner = self.device.other_owner(self.id);
                self.owner_change(OwnerChange::RefusedBusy {
                    owner_conn: owner.map(|o| o.conn),
                    owner_pid: owner.and_then(|o| o.pid),
                    injected: true,
                });
                Err(self.refuse(name, detail, "busy (injected)", has_status, 0))
            }
            kind => Err(self.refuse(
                name,
                detail,
                &format!("injected {}", kind.name()),
                has_status,
                0,
            )),
        }
    }

    fn ring_index(
        &self,
        name: &str,
        detail: &str,
        index: u32,
        has_status: bool,
    ) -> Result<u16, VuError> {
        if index < MAX_RINGS {
            Ok(index as u16)
        } else {
            Err(self.refuse(name, detail, &format!("no ring {index}"), has_status, 0))
        }
    }

    fn ring_owner(&self) -> ring::Owner {
        ring::Owner {
            device: Arc::clone(&self.device),
            conn: self.id,
            pid: self.pid,
            io: Arc::clone(&self.io),
        }
    }

    /// Stops ring `index` if it runs, recording how.
    fn stop_ring(&self, inner: &mut Inner, index: u16, how: &str) -> u16 {
        let Some(ring) = inner.rings.get_mut(&index) else {
            return 0;
        };
        let was_running = ring.running();
        let base = ring.stop();
        if was_running {
            self.owner_change(OwnerChange::RingStop {
                ring: index,
                base,
                how: how.to_string(),
            });
        }
        base
    }

    /// Starts ring `index` if it is ready and not running.
    fn maybe_start(&self, inner: &mut Inner, index: u16) {
        let proto = inner.protocol_features();
        let Some(map) = inner.map.clone() else {
            return;
        };
        let owner = self.ring_owner();
        let Some(ring) = inner.rings.get_mut(&index) else {
            return;
        };
        if ring.running() || !ring.ready(proto, true) {
            return;
        }
        match ring.start(index, &map, owner) {
            Ok(base) => self.owner_change(OwnerChange::RingStart { ring: index, base }),
            Err(e) => {
                eprintln!(
                    "cprkit-device: conn {} (pid {}): {e}",
                    self.id,
                    show_pid(self.pid)
                );
                self.push(EntryKind::ProtocolError {
                    what: e.to_string(),
                });
            }
        }
    }

    /// Stops ring `index` (if running), applies `change`, and starts it again if ready.
    fn reconfigure(&self, index: u16, how: &str, change: impl FnOnce(&mut Ring)) {
        let mut inner = self.lock();
        self.stop_ring(&mut inner, index, how);
        change(inner.rings.entry(index).or_default());
        self.maybe_start(&mut inner, index);
    }

    /// Stops every running ring, recording `how`; marks them stopped.
    fn stop_all(&self, how: &str) {
        let mut inner = self.lock();
        let indexes: Vec<u16> = inner.rings.keys().copied().collect();
        for index in indexes {
            self.stop_ring(&mut inner, index, how);
            if let Some(ring) = inner.rings.get_mut(&index) {
                ring.stopped = true;
            }
        }
    }

    /// The connection ended: stop its rings, release the device, record the disconnect.
    pub fn closed(&self) {
        if self.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        self.stop_all("disconnect");
        {
            let mut inner = self.lock();
            for ring in inner.rings.values_mut() {
                ring.kick = None;
                *ring.call.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
            inner.map = None;
        }
        self.device.release(self.who(), "disconnect");
        self.push(EntryKind::Disconnect);
        self.open.store(false, Ordering::SeqCst);
        self.shutdown();
        eprintln!(
            "cprkit-device: conn {} (pid {}) closed",
            self.id,
            show_pid(self.pid)
        );
    }

    /// This connection's part of the device state.
    pub fn state(&self, owner: bool) -> ConnState {
        let inner = self.lock();
        ConnState {
            conn: self.id,
            pid: self.pid,
            open: self.is_open(),
            owner,
            rings: inner
                .rings
                .iter()
                .map(|(&ring, r)| RingState {
                    ring,
                    running: r.running(),
                    base: r.base,
                })
                .collect(),
            io: self.io.load(Ordering::Relaxed),
        }
    }

    fn unsupported(&self, name: &str, has_status: bool) -> VuError {
        self.refuse(name, "", "unsupported", has_status, 0)
    }
}

fn fd_detail(index: u8, fd: &Option<File>) -> String {
    match fd {
        Some(_) => format!("ring {index}"),
        None => format!("ring {index} no fd"),
    }
}

impl VhostUserBackendReqHandler for Connection {
    fn set_owner(&self) -> VuResult<()> {
        const NAME: &str = "SET_OWNER";
        let delayed = self.gate(Trigger::Take, NAME, "", true)?;
        match self.device.take(self.who()) {
            TakeOutcome::Taken { overlap } => {
                if let Some(other) = overlap {
                    self.owner_change(OwnerChange::Overlap {
                        with_conn: other.conn,
                        with_pid: other.pid,
                    });
                }
                self.owner_change(OwnerChange::Take);
                self.ok(NAME, "", delayed);
                Ok(())
            }
            TakeOutcome::Already => {
                self.ok(NAME, "already owner", delayed);
                Ok(())
            }
            TakeOutcome::Busy { owner } => {
                self.owner_change(OwnerChange::RefusedBusy {
                    owner_conn: Some(owner.conn),
                    owner_pid: owner.pid,
                    injected: false,
                });
                let why = format!(
                    "busy: owned by conn {} (pid {})",
                    owner.conn,
                    show_pid(owner.pid)
                );
                Err(self.refuse(NAME, "", &why, true, delayed))
            }
        }
    }

    fn reset_owner(&self) -> VuResult<()> {
        const NAME: &str = "RESET_OWNER";
        let delayed = self.gate(Trigger::Release, NAME, "", true)?;
        self.stop_all(NAME);
        self.device.release(self.who(), NAME);
        self.ok(NAME, "", delayed);
        Ok(())
    }

    fn reset_device(&self) -> VuResult<()> {
        Err(self.unsupported("RESET_DEVICE", true))
    }

    fn get_features(&self) -> VuResult<u64> {
        self.lock().features_offered = true;
        self.ok("GET_FEATURES", &format!("0x{FEATURES:x}"), 0);
        Ok(FEATURES)
    }

    fn set_features(&self, features: u64) -> VuResult<()> {
        let detail = format!("0x{features:x}");
        if features & !FEATURES != 0 {
            return Err(self.refuse("SET_FEATURES", &detail, "features not offered", true, 0));
        }
        self.lock().acked_features = features;
        self.ok("SET_FEATURES", &detail, 0);
        Ok(())
    }

    fn set_mem_table(
        &self,
        regions: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy: Option<bool>,
    ) -> VuResult<Option<Vec<VhostUserMemoryRegionBase>>> {
        const NAME: &str = "SET_MEM_TABLE";
        let detail = format!("{} regions", regions.len());
        let map = match GuestMap::map(regions, files) {
            Ok(map) => Arc::new(map),
            Err(e) => return Err(self.refuse(NAME, &detail, &e.to_string(), true, 0)),
        };
        let mut inner = self.lock();
        let running: Vec<u16> = inner
            .rings
            .iter()
            .filter(|(_, r)| r.running())
            .map(|(&i, _)| i)
            .collect();
        for &index in &running {
            self.stop_ring(&mut inner, index, NAME);
        }
        inner.map = Some(map);
        let all: Vec<u16> = inner.rings.keys().copied().collect();
        for index in all {
            self.maybe_start(&mut inner, index);
        }
        drop(inner);
        self.ok(NAME, &detail, 0);
        Ok(None)
    }

    fn set_vring_num(&self, index: u32, num: u32) -> VuResult<()> {
        const NAME: &str = "SET_VRING_NUM";
        let detail = format!("ring {index} num {num}");
        let ring = self.ring_index(NAME, &detail, index, true)?;
        let size = match u16::try_from(num) {
            Ok(n) if n > 0 && n <= ring::MAX_RING_SIZE && n.is_power_of_two() => n,
            _ => return Err(self.refuse(NAME, &detail, "bad ring size", true, 0)),
        };
        self.reconfigure(ring, NAME, |r| r.num = size);
        self.ok(NAME, &detail, 0);
        Ok(())
    }

    fn set_vring_addr(
        &self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> VuResult<()> {
        const NAME: &str = "SET_VRING_ADDR";
        let detail =
            format!("ring {index} desc 0x{descriptor:x} avail 0x{available:x} used 0x{used:x}");
        let ring = self.ring_index(NAME, &detail, index, true)?;
        self.reconfigure(ring, NAME, |r| {
            r.addrs = Some(RingAddrs {
                desc: descriptor,
                avail: available,
                used,
            });
            r.stopped = false;
        });
        self.ok(NAME, &detail, 0);
        Ok(())
    }

    fn set_vring_base(&self, index: u32, base: u32) -> VuResult<()> {
        const NAME: &str = "SET_VRING_BASE";
        let detail = format!("ring {index} base {base}");
        let ring = self.ring_index(NAME, &detail, index, true)?;
        let Ok(base) = u16::try_from(base) else {
            return Err(self.refuse(NAME, &detail, "base above 65535", true, 0));
        };
        self.reconfigure(ring, NAME, |r| {
            r.base = base;
            r.used = base;
            r.stopped = false;
        });
        self.ok(NAME, &detail, 0);
        Ok(())
    }

    fn get_vring_base(&self, index: u32) -> VuResult<VhostUserVringState> {
        const NAME: &str = "GET_VRING_BASE";
        let ring = self.ring_index(NAME, &format!("ring {index}"), index, false)?;
        let delayed = self.gate(Trigger::Release, NAME, &format!("ring {index}"), false)?;
        let base = {
            let mut inner = self.lock();
            let base = self.stop_ring(&mut inner, ring, NAME);
            let ring = inner.rings.entry(ring).or_default();
            ring.stopped = true;
            base
        };
        self.ok(NAME, &format!("ring {index} base {base}"), delayed);
        Ok(VhostUserVringState::new(index, u32::from(base)))
    }

    fn set_vring_kick(&self, index: u8, fd: Option<File>) -> VuResult<()> {
        const NAME: &str = "SET_VRING_KICK";
        let detail = fd_detail(index, &fd);
        let ring = self.ring_index(NAME, &detail, u32::from(index), true)?;
        self.reconfigure(ring, NAME, |r| {
            r.kick = fd;
            r.stopped = false;
        });
        self.ok(NAME, &detail, 0);
        Ok(())
    }

    fn set_vring_call(&self, index: u8, fd: Option<File>) -> VuResult<()> {
        const NAME: &str = "SET_VRING_CALL";
        let detail = fd_detail(index, &fd);
        let ring = self.ring_index(NAME, &detail, u32::from(index), true)?;
        {
            let mut inner = self.lock();
            let r = inner.rings.entry(ring).or_default();
            *r.call.lock().unwrap_or_else(|e| e.into_inner()) = fd;
        }
        self.ok(NAME, &detail, 0);
        Ok(())
    }

    fn set_vring_err(&self, index: u8, fd: Option<File>) -> VuResult<()> {
        const NAME: &str = "SET_VRING_ERR";
        let detail = fd_detail(index, &fd);
        self.ring_index(NAME, &detail, u32::from(index), true)?;
        self.ok(NAME, &detail, 0);
        Ok(())
    }

    fn get_protocol_features(&self) -> VuResult<VhostUserProtocolFeatures> {
        let features = VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIG;
        self.ok(
            "GET_PROTOCOL_FEATURES",
            &format!("0x{:x}", features.bits()),
            0,
        );
        Ok(features)
    }

    fn set_protocol_features(&self, features: u64) -> VuResult<()> {
        self.lock().acked_protocol = features;
        self.ok("SET_PROTOCOL_FEATURES", &format!("0x{features:x}"), 0);
        Ok(())
    }

    fn get_queue_num(&self) -> VuResult<u64> {
        self.ok("GET_QUEUE_NUM", "1", 0);
        Ok(1)
    }

    fn set_vring_enable(&self, index: u32, enable: bool) -> VuResult<()> {
        const NAME: &str = "SET_VRING_ENABLE";
        let detail = format!("ring {index} enable {}", u8::from(enable));
        let ring = self.ring_index(NAME, &detail, index, true)?;
        let delayed = if enable {
            0
        } else {
            self.gate(Trigger::Release, NAME, &detail, true)?
        };
        {
            let mut inner = self.lock();
            if !enable {
                self.stop_ring(&mut inner, ring, "SET_VRING_ENABLE 0");
            }
            inner.rings.entry(ring).or_default().enabled = Some(enable);
            if enable {
                self.maybe_start(&mut inner, ring);
            }
        }
        self.ok(NAME, &detail, delayed);
        Ok(())
    }

    fn get_config(
        &self,
        offset: u32,
        size: u32,
        _flags: VhostUserConfigFlags,
    ) -> VuResult<Vec<u8>> {
        self.ok("GET_CONFIG", &format!("offset {offset} size {size}"), 0);
        Ok(Disk::config(offset, size))
    }

    fn set_config(&self, offset: u32, buf: &[u8], _flags: VhostUserConfigFlags) -> VuResult<()> {
        // The config space is read-only; writes are accepted and ignored.
        self.ok(
            "SET_CONFIG",
            &format!("offset {offset} size {}", buf.len()),
            0,
        );
        Ok(())
    }

    fn set_gpu_socket(&self, _gpu_backend: GpuBackend) -> VuResult<()> {
        Err(self.unsupported("GPU_SET_SOCKET", true))
    }

    fn get_shared_object(&self, _uuid: VhostUserSharedMsg) -> VuResult<File> {
        Err(self.unsupported("GET_SHARED_OBJECT", false))
    }

    fn get_inflight_fd(
        &self,
        _inflight: &VhostUserInflight,
    ) -> VuResult<(VhostUserInflight, File)> {
        Err(self.unsupported("GET_INFLIGHT_FD", false))
    }

    fn set_inflight_fd(&self, _inflight: &VhostUserInflight, _file: File) -> VuResult<()> {
        Err(self.unsupported("SET_INFLIGHT_FD", true))
    }

    fn get_max_mem_slots(&self) -> VuResult<u64> {
        Err(self.unsupported("GET_MAX_MEM_SLOTS", false))
    }

    fn add_mem_region(
        &self,
        _region: &VhostUserSingleMemoryRegion,
        _fd: File,
        _postcopy: Option<bool>,
    ) -> VuResult<Option<VhostUserMemoryRegionBase>> {
        Err(self.unsupported("ADD_MEM_REG", true))
    }

    fn remove_mem_region(&self, _region: &VhostUserSingleMemoryRegion) -> VuResult<()> {
        Err(self.unsupported("REM_MEM_REG", true))
    }

    fn set_device_state_fd(
        &self,
        _direction: VhostTransferStateDirection,
        _phase: VhostTransferStatePhase,
        _fd: File,
    ) -> VuResult<Option<File>> {
        Err(self.unsupported("SET_DEVICE_STATE_FD", false))
    }

    fn check_device_state(&self) -> VuResult<()> {
        Err(self.unsupported("CHECK_DEVICE_STATE", false))
    }

    fn get_shmem_config(&self) -> VuResult<VhostUserShMemConfig> {
        Err(self.unsupported("GET_SHMEM_CONFIG", false))
    }

    fn set_log_base(&self, _log: &VhostUserLog, _file: File) -> VuResult<()> {
        Err(self.unsupported("SET_LOG_BASE", false))
    }
}
