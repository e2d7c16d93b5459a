//! Migration bookkeeping: the statuses QEMU reports, what `query-migrate`
//! shows, and the control block of the outgoing migration in progress (its
//! sockets and its cancel flag).

use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A migration status, QEMU's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationStatus {
    Setup,
    Active,
    Device,
    Completed,
    Failed,
    Cancelling,
    Cancelled,
}

impl MigrationStatus {
    /// QEMU's name for the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Setup => "setup",
            Self::Active => "active",
            Self::Device => "device",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelling => "cancelling",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the migration is over.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// What `query-migrate` reports about the last outgoing migration.
#[derive(Debug, Clone, Default)]
pub struct MigrationRecord {
    pub status: Option<MigrationStatus>,
    pub error_desc: Option<String>,
    pub total_time: Option<Duration>,
    pub downtime: Option<Duration>,
}

impl MigrationRecord {
    /// The `query-migrate` reply.
    pub fn to_json(&self) -> Value {
        let Some(status) = self.status else {
            return json!({});
        };
        let mut v = json!({ "status": status.as_str() });
        if status == MigrationStatus::Failed
            && let Some(desc) = &self.error_desc
        {
            v["error-desc"] = desc.clone().into();
        }
        if status == MigrationStatus::Completed {
            let ms = |d: Option<Duration>| d.unwrap_or_default().as_millis() as u64;
            v["total-time"] = ms(self.total_time).into();
            v["downtime"] = ms(self.downtime).into();
        }
        v
    }

    /// Whether a migration is in progress.
    pub fn in_progress(&self) -> bool {
        self.status.is_some_and(|s| !s.is_terminal())
    }
}

/// Control block of the outgoing migration in progress, shared by the
/// migration thread and the monitor under the VM state lock.
#[derive(Debug)]
pub struct OutgoingCtl {
    /// `migrate_cancel` was received.
    pub cancelled: bool,
    /// Clones of the migration's sockets, so a cancel can shut them down and
    /// unblock the migration thread.
    sockets: Vec<UnixStream>,
    /// When `migrate` came.
    pub started: Instant,
    /// When the VM was stopped for the migration.
    pub stopped_at: Option<Instant>,
}

impl OutgoingCtl {
    /// A new control block for a migration starting now.
    pub fn new() -> Self {
        Self {
            cancelled: false,
            sockets: Vec::new(),
            started: Instant::now(),
            stopped_at: None,
        }
    }

    /// Records a socket of the migration; if the migration is already
    /// cancelled, shuts it down at once and returns false.
    pub fn register(&mut self, sock: &UnixStream) -> bool {
        if self.cancelled {
            let _ = sock.shutdown(Shutdown::Both);
            return false;
        }
        if let Ok(clone) = sock.try_clone() {
            self.sockets.push(clone);
        }
        true
    }

    /// Marks the migration cancelled and shuts its sockets down, which
    /// unblocks every read and write of the migration thread.
    pub fn cancel(&mut self) {
        self.cancelled = true;
        self.shutdown_sockets();
    }

    /// Shuts down every socket of the migration.
    pub fn shutdown_sockets(&mut self) {
        for s in self.sockets.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Default for OutgoingCtl {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_migrate_shapes() {
        let mut r = MigrationRecord::default();
        assert_eq!(r.to_json(), json!({}));
        r.status = Some(MigrationStatus::Failed);
        r.error_desc = Some("boom".into());
        assert_eq!(
            r.to_json(),
            json!({"status": "failed", "error-desc": "boom"})
        );
        r.status = Some(MigrationStatus::Completed);
        r.total_time = Some(Duration::from_millis(12));
        r.downtime = Some(Duration::from_millis(3));
        assert_eq!(
            r.to_json(),
            json!({"status": "completed", "total-time": 12, "downtime": 3})
        );
        assert!(!r.in_progress());
    }
}
