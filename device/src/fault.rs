//! Device faults armed at run time: what they are, and the book that fires each once.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// What an armed fault does to the message it fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceFaultKind {
    /// Refuse a take-over as busy, even if nobody owns the device.
    Busy,
    /// Refuse a release.
    ReleaseFail,
    /// Drop the connection at that message, before answering.
    Disconnect,
    /// Answer that message `delay_ms` later.
    Delay,
}

impl DeviceFaultKind {
    /// The kebab-case name, as in the ledger.
    pub fn name(self) -> &'static str {
        match self {
            DeviceFaultKind::Busy => "busy",
            DeviceFaultKind::ReleaseFail => "release-fail",
            DeviceFaultKind::Disconnect => "disconnect",
            DeviceFaultKind::Delay => "delay",
        }
    }
}

/// Which messages a fault fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// A SET_OWNER.
    Take,
    /// The first of SET_VRING_ENABLE 0, GET_VRING_BASE, RESET_OWNER.
    Release,
}

/// A fault armed for one frontend pid; fires once, on the first matching message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFault {
    pub kind: DeviceFaultKind,
    pub pid: i32,
    pub on: Trigger,
    /// Only for `delay`.
    #[serde(default)]
    pub delay_ms: u64,
}

/// The armed faults, in arming order.
#[derive(Debug, Default)]
pub struct FaultBook {
    armed: Mutex<Vec<DeviceFault>>,
}

impl FaultBook {
    /// Arms a fault.
    pub fn arm(&self, fault: DeviceFault) {
        self.armed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(fault);
    }

    /// Disarms and returns the first fault armed for `pid` on `on`, if any.
    pub fn fire(&self, pid: Option<i32>, on: Trigger) -> Option<DeviceFault> {
        let pid = pid?;
        let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
        let at = armed.iter().position(|f| f.pid == pid && f.on == on)?;
        Some(armed.remove(at))
    }
}
