//! The control protocol's messages: one JSON request object per line, one reply per line.

use serde::{Deserialize, Serialize};

use crate::fault::DeviceFault;
use crate::ledger::LedgerEntry;
use crate::state::DeviceState;

/// The longest `wait-io` or `wait-change` the daemon honours, in milliseconds.
pub const MAX_WAIT_MS: u64 = 600_000;

/// A control request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// `{"cmd":"state"}`
    State,
    /// `{"cmd":"ledger","since":SEQ}`: entries with seq >= SEQ.
    Ledger {
        #[serde(default)]
        since: u64,
    },
    /// `{"cmd":"arm","fault":{...}}`
    Arm { fault: DeviceFault },
    /// `{"cmd":"mark","label":"cut-over"}`
    Mark { label: String },
    /// `{"cmd":"wait-io","pid":P,"after":SEQ,"timeout_ms":N}`
    WaitIo {
        pid: i32,
        #[serde(default)]
        after: u64,
        timeout_ms: u64,
    },
    /// `{"cmd":"wait-change","since":VERSION,"timeout_ms":N}`: the state once
    /// its `version` is past VERSION (something changed), or at the timeout.
    WaitChange { since: u64, timeout_ms: u64 },
}

/// A reply: `{"ok":true,...}` or `{"ok":false,"error":"..."}`. Only the field of the
/// request's kind is present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DeviceState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<LedgerEntry>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// wait-io: the entry, or null on timeout (always present in a wait-io reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<Option<LedgerEntry>>,
}

impl Reply {
    /// `{"ok":true}`
    pub fn ok() -> Self {
        Reply {
            ok: true,
            ..Reply::default()
        }
    }

    /// `{"ok":false,"error":...}`
    pub fn error(why: impl Into<String>) -> Self {
        Reply {
            ok: false,
            error: Some(why.into()),
            ..Reply::default()
        }
    }
}
