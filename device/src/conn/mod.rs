//! One frontend connection: its negotiated state, its rings and memory, its
//! ledger entries, and what happens when it closes. The vhost-user message
//! handlers are in [`handlers`], how a message is refused or an armed fault
//! fires in [`refusal`], starting and stopping its rings in [`rings`].

mod handlers;
mod refusal;
mod rings;

use std::collections::BTreeMap;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use vhost::vhost_user::message::VhostUserProtocolFeatures;

use crate::device::{Device, OwnerId};
use crate::ledger::{Answer, EntryKind, OwnerChange};
use crate::memory::GuestMap;
use crate::ring::Ring;
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
        self.device.ledger.touch();
        self.shutdown();
        eprintln!(
            "cprkit-device: conn {} (pid {}) closed",
            self.id,
            show_pid(self.pid)
        );
    }

    /// This connection's part of the device state; `owner` says whether it
    /// owns the device. Read in the order [`Connection::closed`] changes
    /// things backwards: whether it is open first, so a connection seen
    /// closed has already stopped its rings and released the device.
    pub fn state(&self, owner: impl FnOnce() -> bool) -> ConnState {
        let open = self.is_open();
        let owner = owner();
        let inner = self.lock();
        ConnState {
            conn: self.id,
            pid: self.pid,
            open,
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
}
