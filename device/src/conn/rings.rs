//! Starting and stopping a connection's rings, each change recorded in the
//! ledger as the ring's owner changing.

use std::sync::Arc;

use super::{Connection, Inner, show_pid};
use crate::ledger::{EntryKind, OwnerChange};
use crate::ring::{self, Ring};

impl Connection {
    pub(super) fn ring_owner(&self) -> ring::Owner {
        ring::Owner {
            device: Arc::clone(&self.device),
            conn: self.id,
            pid: self.pid,
            io: Arc::clone(&self.io),
        }
    }

    /// Stops ring `index` if it runs, recording how.
    pub(super) fn stop_ring(&self, inner: &mut Inner, index: u16, how: &str) -> u16 {
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
    pub(super) fn maybe_start(&self, inner: &mut Inner, index: u16) {
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
    pub(super) fn reconfigure(&self, index: u16, how: &str, change: impl FnOnce(&mut Ring)) {
        let mut inner = self.lock();
        self.stop_ring(&mut inner, index, how);
        change(inner.rings.entry(index).or_default());
        self.maybe_start(&mut inner, index);
    }

    /// Stops every running ring, recording `how`; marks them stopped.
    pub(super) fn stop_all(&self, how: &str) {
        let mut inner = self.lock();
        let indexes: Vec<u16> = inner.rings.keys().copied().collect();
        for index in indexes {
            self.stop_ring(&mut inner, index, how);
            if let Some(ring) = inner.rings.get_mut(&index) {
                ring.stopped = true;
            }
        }
    }
}
