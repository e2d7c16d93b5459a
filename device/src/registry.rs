//! The daemon's connections: every frontend connection ever accepted, beside
//! the device they share, and the state snapshot the control socket reports
//! (the device's owners seen through each connection).

use std::sync::{Arc, Mutex, MutexGuard};

use crate::conn::Connection;
use crate::device::Device;
use crate::state::DeviceState;

/// The shared device and its connections.
#[derive(Debug)]
pub struct Registry {
    pub device: Arc<Device>,
    conns: Mutex<Vec<Arc<Connection>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    pub fn new(device: Arc<Device>) -> Self {
        Registry {
            device,
            conns: Mutex::new(Vec::new()),
        }
    }

    /// Registers an accepted connection.
    pub fn add(&self, conn: Arc<Connection>) {
        lock(&self.conns).push(conn);
    }

    /// Shuts every connection down (the daemon is stopping).
    pub fn shutdown_all(&self) {
        for conn in lock(&self.conns).clone() {
            conn.shutdown();
        }
    }

    /// The snapshot the control socket reports.
    pub fn state(&self) -> DeviceState {
        // First: a change while the rest is read makes the state newer than
        // its version says, never older.
        let version = self.device.ledger.version();
        let conns = lock(&self.conns)
            .clone()
            .iter()
            .map(|c| c.state(|| self.device.is_owner(c.id)))
            .collect();
        DeviceState {
            policy: self.device.policy,
            conns,
            last_seq: self.device.ledger.last_seq(),
            version,
        }
    }
}
