//! The device every connection shares: policy, ledger, armed faults, disk, and who owns
//! the device.

use std::sync::{Mutex, MutexGuard};

use crate::disk::Disk;
use crate::fault::FaultBook;
use crate::ledger::{EntryKind, Ledger, OwnerChange};
use crate::state::Policy;

/// An owner of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerId {
    pub conn: u32,
    pub pid: Option<i32>,
}

/// The answer to a take-over request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeOutcome {
    /// Taken; `overlap` is the other owner a shared device let it in beside.
    Taken { overlap: Option<OwnerId> },
    /// This connection already owns the device (shared policy: accepted again).
    Already,
    /// Refused: `owner` holds it.
    Busy { owner: OwnerId },
}

/// The shared device.
#[derive(Debug)]
pub struct Device {
    pub policy: Policy,
    pub ledger: Ledger,
    pub faults: FaultBook,
    pub disk: Disk,
    /// Current owners, in the order they took the device.
    owners: Mutex<Vec<OwnerId>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Device {
    /// A device with a fresh disk and an empty ledger.
    pub fn new(policy: Policy) -> Self {
        Device {
            policy,
            ledger: Ledger::default(),
            faults: FaultBook::default(),
            disk: Disk::new(),
            owners: Mutex::new(Vec::new()),
        }
    }

    /// Whether `conn` owns the device.
    pub fn is_owner(&self, conn: u32) -> bool {
        lock(&self.owners).iter().any(|o| o.conn == conn)
    }

    /// The current owner other than `conn`, if any.
    pub fn other_owner(&self, conn: u32) -> Option<OwnerId> {
        lock(&self.owners).iter().find(|o| o.conn != conn).copied()
    }

    /// A SET_OWNER from `who` under the policy (the ledger entries are the caller's).
    pub fn take(&self, who: OwnerId) -> TakeOutcome {
        let mut owners = lock(&self.owners);
        let mine = owners.iter().any(|o| o.conn == who.conn);
        let other = owners.iter().find(|o| o.conn != who.conn).copied();
        match self.policy {
            Policy::Exclusive => {
                // vhost_dev_set_owner: -EBUSY whenever the device has an owner, itself included.
                if let Some(owner) = other {
                    return TakeOutcome::Busy { owner };
                }
                if mine {
                    return TakeOutcome::Busy { owner: who };
                }
                owners.push(who);
                TakeOutcome::Taken { overlap: None }
            }
            Policy::Shared => {
                if mine {
                    return TakeOutcome::Already;
                }
                owners.push(who);
                TakeOutcome::Taken { overlap: other }
            }
        }
    }

    /// Gives up `conn`'s ownership; true if it owned the device. Records the release.
    pub fn release(&self, who: OwnerId, how: &str) -> bool {
        let mut owners = lock(&self.owners);
        let before = owners.len();
        owners.retain(|o| o.conn != who.conn);
        let released = owners.len() != before;
        drop(owners);
        if released {
            self.ledger.push(
                Some(who.conn),
                who.pid,
                EntryKind::Owner {
                    change: OwnerChange::Release {
                        how: how.to_string(),
                    },
                },
            );
        }
        released
    }
}
