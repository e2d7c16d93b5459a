//! The ledger: every event the daemon sees, in order, with a global sequence number and a
//! CLOCK_MONOTONIC time stamp. Owns the entry types and the waiting on new I/O entries.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::time::{ClockId, clock_gettime};
use serde::{Deserialize, Serialize};

/// One event of the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Global sequence number, from 1, in the order the entries were appended.
    pub seq: u64,
    /// CLOCK_MONOTONIC time in nanoseconds.
    pub t_ns: u64,
    /// The connection (1, 2, ... in accept order), if the event belongs to one.
    pub conn: Option<u32>,
    /// The frontend's pid (SO_PEERCRED), if the event belongs to a connection.
    pub pid: Option<i32>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EntryKind,
}

/// What a ledger entry records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EntryKind {
    /// A frontend connected.
    Connect,
    /// A connection ended (frontend closed it, or the daemon dropped it).
    Disconnect,
    /// A frontend message and the daemon's answer; `detail` e.g. "ring 0 base 17", "enable 0".
    Message {
        name: String,
        detail: String,
        #[serde(flatten)]
        answer: Answer,
        delayed_ms: u64,
    },
    /// A change of ownership or of a ring's running state.
    Owner {
        #[serde(flatten)]
        change: OwnerChange,
    },
    /// One virtio-blk request completed.
    Io {
        ring: u16,
        op: String,
        sector: u64,
        len: u32,
        status: u8,
    },
    /// An armed device fault fired.
    Fault { fault: String, message: String },
    /// A label set through the control socket.
    Mark { label: String },
    /// A frontend sent something the daemon could not parse or handle: a message (that
    /// connection is then dropped), a ring it cannot start, or a request chain it cannot
    /// answer (that request is skipped).
    ProtocolError { what: String },
}

/// How the daemon answered a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "kebab-case")]
pub enum Answer {
    /// Done (with a reply where the protocol has one).
    Ok,
    /// Refused with a non-zero status reply; the connection stays.
    Error { why: String },
    /// Refused by closing the connection (the message has no status or none was asked for).
    Closed { why: String },
}

/// An ownership or ring change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum OwnerChange {
    /// SET_OWNER accepted.
    Take,
    /// Ownership given up: "RESET_OWNER" or "disconnect".
    Release { how: String },
    /// Shared policy: a second owner was let in while `with_conn` owned the device.
    Overlap {
        with_conn: u32,
        with_pid: Option<i32>,
    },
    /// A SET_OWNER refused as busy (`injected`: by an armed fault, not the policy).
    RefusedBusy {
        owner_conn: Option<u32>,
        owner_pid: Option<i32>,
        injected: bool,
    },
    /// A ring started processing requests from avail index `base`.
    RingStart { ring: u16, base: u16 },
    /// A ring stopped at avail index `base`; `how`: "GET_VRING_BASE", "SET_VRING_ENABLE 0",
    /// "RESET_OWNER", "disconnect", or the reconfiguring message.
    RingStop { ring: u16, base: u16, how: String },
}

/// CLOCK_MONOTONIC now, in nanoseconds.
pub fn now_ns() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => (ts.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec() as u64),
        Err(_) => 0,
    }
}

/// The append-only, shared ledger. It also counts the daemon's changes (its
/// version): every entry appended, and every change of state that comes
/// after its entry (a connection seen closed once its disconnect is in), so
/// that a control client can wait for the next change instead of polling.
#[derive(Debug, Default)]
pub struct Ledger {
    book: Mutex<Book>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Book {
    entries: Vec<LedgerEntry>,
    /// Changes with no entry of their own.
    touches: u64,
}

impl Book {
    fn version(&self) -> u64 {
        self.entries.len() as u64 + self.touches
    }
}

impl Ledger {
    fn lock(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends an entry and returns its sequence number.
    pub fn push(&self, conn: Option<u32>, pid: Option<i32>, kind: EntryKind) -> u64 {
        let mut book = self.lock();
        let seq = book.entries.len() as u64 + 1;
        book.entries.push(LedgerEntry {
            seq,
            t_ns: now_ns(),
            conn,
            pid,
            kind,
        });
        drop(book);
        self.changed.notify_all();
        seq
    }

    /// Counts a change of the daemon's state that has no entry of its own.
    pub fn touch(&self) {
        self.lock().touches += 1;
        self.changed.notify_all();
    }

    /// The number of changes so far (read it before the state it stands for).
    pub fn version(&self) -> u64 {
        self.lock().version()
    }

    /// The entries with `seq >= since`.
    pub fn since(&self, since: u64) -> Vec<LedgerEntry> {
        let book = self.lock();
        let skip = since.saturating_sub(1) as usize;
        book.entries.iter().skip(skip).cloned().collect()
    }

    /// The sequence number of the last entry (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.lock().entries.len() as u64
    }

    /// Waits until the version is past `since`, or `timeout` passes; returns
    /// whether it is.
    pub fn wait_change(&self, since: u64, timeout: Duration) -> bool {
        self.wait_for(timeout, |book| (book.version() > since).then_some(()))
            .is_some()
    }

    /// Waits until an Io entry from `pid` with `seq > after` exists, or `timeout` passes.
    pub fn wait_io(&self, pid: i32, after: u64, timeout: Duration) -> Option<LedgerEntry> {
        self.wait_for(timeout, |book| {
            book.entries
                .iter()
                .skip(after as usize)
                .find(|e| {
                    e.seq > after && e.pid == Some(pid) && matches!(e.kind, EntryKind::Io { .. })
                })
                .cloned()
        })
    }

    /// What `found` finds in the ledger, looked for again at each change
    /// until `timeout` passes.
    fn wait_for<T>(&self, timeout: Duration, found: impl Fn(&Book) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut book = self.lock();
        loop {
            if let Some(it) = found(&book) {
                return Some(it);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            book = match self.changed.wait_timeout(book, deadline - now) {
                Ok((guard, _)) => guard,
                Err(e) => e.into_inner().0,
            };
        }
    }
}
