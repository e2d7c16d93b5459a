//! How a connection refuses a message (an error reply when the frontend asked
//! for one, else the connection closed), drops itself at an injected
//! disconnect, and fires the device fault armed for a message.

use std::time::Duration;

use vhost::vhost_user::Error as VuError;

use super::{Connection, MAX_RINGS, Outcome, show_pid};
use crate::fault::{DeviceFaultKind, Trigger};
use crate::ledger::{Answer, EntryKind, OwnerChange};

fn refused(why: &str) -> VuError {
    VuError::ReqHandlerError(std::io::Error::other(why.to_string()))
}

impl Connection {
    /// Refuses a message: a non-zero status reply if the frontend asked for one and the
    /// message has a status, else the connection is closed.
    pub(super) fn refuse(
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
    pub(super) fn drop_now(&self, name: &str, detail: &str) -> VuError {
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
    pub(super) fn gate(
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

    pub(super) fn ring_index(
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

    pub(super) fn unsupported(&self, name: &str, has_status: bool) -> VuError {
        self.refuse(name, "", "unsupported", has_status, 0)
    }
}
