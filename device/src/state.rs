//! The ownership policy and the snapshot of the daemon's state the control socket reports.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Who may own the device at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// The vhost-user spec: a second SET_OWNER is let in (recorded as an overlap).
    Shared,
    /// The kernel's vhost_dev_set_owner rule: a SET_OWNER while another open connection owns
    /// the device is refused as busy. The default.
    #[default]
    Exclusive,
}

impl Policy {
    /// "shared" or "exclusive".
    pub fn name(self) -> &'static str {
        match self {
            Policy::Shared => "shared",
            Policy::Exclusive => "exclusive",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A policy name that is neither "shared" nor "exclusive".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown policy {0:?} (expected shared or exclusive)")]
pub struct UnknownPolicy(pub String);

impl FromStr for Policy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "shared" => Ok(Policy::Shared),
            "exclusive" => Ok(Policy::Exclusive),
            other => Err(UnknownPolicy(other.to_string())),
        }
    }
}

/// The daemon's state: its policy and every connection it has accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    pub policy: Policy,
    /// Every connection accepted so far, open or closed, in accept order.
    pub conns: Vec<ConnState>,
    /// The sequence number of the last ledger entry (0 when empty).
    pub last_seq: u64,
    /// The daemon's changes so far, read before the rest of this state: a
    /// `wait-change` past it returns once anything changed.
    #[serde(default)]
    pub version: u64,
}

/// One frontend connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnState {
    pub conn: u32,
    pub pid: Option<i32>,
    pub open: bool,
    pub owner: bool,
    /// The rings the frontend has configured.
    pub rings: Vec<RingState>,
    /// Requests completed on this connection.
    pub io: u64,
}

/// One ring of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingState {
    pub ring: u16,
    pub running: bool,
    /// The next avail index (as of the last stop, or the last SET_VRING_BASE, while not running).
    pub base: u16,
}
