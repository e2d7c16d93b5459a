//! One timeline of stamped events from every observer of a trial: the monitors'
//! events, the interposer, the processes' exits, the kit's own actions and samples.
//!
//! Each entry has a monotonic time (for drawing and figures) and an *epoch*: the
//! number of barriers before it. A barrier is a point where the kit has flushed
//! every monitor (a query round trip returns only after every earlier event) and
//! then acted (a hold point, a fault, a command). Sorting by epoch, then actor,
//! then arrival gives an order that does not depend on thread scheduling, which
//! is what snapshots record; the times are what `explain` draws.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::adapter::{Role, VmEvent};
use crate::procinfo::ExitInfo;
use crate::steps::Step;

/// Who an entry comes from; the order here is the order within an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Actor {
    Kit,
    Source,
    Target,
    Cpr,
    Main,
    /// The kit's device daemon (its own process's end).
    Device,
}

impl Actor {
    pub fn name(self) -> &'static str {
        match self {
            Actor::Kit => "kit",
            Actor::Source => "source",
            Actor::Target => "target",
            Actor::Cpr => "cpr",
            Actor::Main => "main",
            Actor::Device => "device",
        }
    }
}

impl From<Role> for Actor {
    fn from(r: Role) -> Self {
        match r {
            Role::Source => Actor::Source,
            Role::Target => Actor::Target,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum What {
    /// The kit holds a channel at this step's point (a barrier).
    Point { step: Step, note: String },
    /// The kit did something to a VMM (a barrier): a command, a signal, a channel fault.
    Action(String),
    /// An event the VMM reported on its monitor.
    Event(VmEvent),
    /// The VMM refused a command.
    Refused { command: String, desc: String },
    /// The process ended.
    Exited(ExitInfo),
    /// A reading the kit took (runstate, guest counter).
    Sample(String),
    /// Interposer detail (connections, EOFs, fds forwarded); not part of snapshots.
    Channel(String),
    /// From the device daemon's ledger (ownership, rings, refusals), put in at
    /// its time; not part of the steps (a snapshot has the device's own story).
    Device(String),
}

impl What {
    /// Whether the entry's place in the order is deterministic (kept in snapshots).
    pub fn is_step(&self) -> bool {
        !matches!(self, What::Sample(_) | What::Channel(_) | What::Device(_))
    }

    pub fn is_barrier(&self) -> bool {
        matches!(self, What::Point { .. } | What::Action(_))
    }

    /// A one-line description without times, pids or paths.
    pub fn label(&self) -> String {
        match self {
            What::Point { step, note } if note.is_empty() => format!("{step}"),
            What::Point { step, note } => format!("{step}: {note}"),
            What::Action(a) => a.clone(),
            What::Event(e) => e.label(),
            What::Refused { command, desc } => format!("{command} refused: {desc}"),
            What::Exited(x) => x.to_string(),
            What::Sample(s) | What::Channel(s) | What::Device(s) => s.clone(),
        }
    }
}

/// One stamped entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Arrival order in the whole timeline.
    pub seq: u64,
    /// Time since the trial started.
    pub at: Duration,
    pub epoch: u32,
    pub actor: Actor,
    pub what: What,
}

#[derive(Debug, Default)]
struct Inner {
    entries: Vec<Entry>,
    epoch: u32,
}

/// The shared, append-only timeline of one trial.
#[derive(Debug, Clone)]
pub struct Timeline {
    start: Instant,
    /// CLOCK_MONOTONIC at `start`, in nanoseconds.
    start_mono_ns: u64,
    inner: Arc<Mutex<Inner>>,
}

/// CLOCK_MONOTONIC now, in nanoseconds (the clock of `Instant` on Linux).
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

impl Timeline {
    pub fn new() -> Self {
        let start = Instant::now();
        Timeline {
            start,
            start_mono_ns: monotonic_ns(),
            inner: Arc::default(),
        }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    /// Appends an entry; a barrier opens a new epoch and is its first entry.
    pub fn record(&self, actor: Actor, what: What) -> Duration {
        let at = self.start.elapsed();
        let mut inner = self.inner.lock().expect("timeline lock");
        if what.is_barrier() {
            inner.epoch += 1;
        }
        let entry = Entry {
            seq: inner.entries.len() as u64,
            at,
            epoch: inner.epoch,
            actor,
            what,
        };
        inner.entries.push(entry);
        at
    }

    /// The time since the start of a CLOCK_MONOTONIC stamp taken by another
    /// process (zero for a stamp before the start).
    pub fn at_monotonic(&self, t_ns: u64) -> Duration {
        Duration::from_nanos(t_ns.saturating_sub(self.start_mono_ns))
    }

    /// Puts in entries observed elsewhere, each at its time: after every
    /// entry stamped no later, in the epoch of the entry before it.
    pub fn insert_at(&self, observed: Vec<(Duration, Actor, What)>) {
        let mut inner = self.inner.lock().expect("timeline lock");
        for (at, actor, what) in observed {
            let i = inner.entries.partition_point(|e| e.at <= at);
            let epoch = i.checked_sub(1).map_or(0, |p| inner.entries[p].epoch);
            inner.entries.insert(
                i,
                Entry {
                    seq: 0,
                    at,
                    epoch,
                    actor,
                    what,
                },
            );
        }
        for (i, e) in inner.entries.iter_mut().enumerate() {
            e.seq = i as u64;
        }
    }

    /// Everything so far, in arrival order.
    pub fn entries(&self) -> Vec<Entry> {
        self.inner.lock().expect("timeline lock").entries.clone()
    }
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new()
    }
}

/// The entries of a snapshot, in the scheduling-independent order: epoch, then
/// actor, then arrival (a process's exit last among its own entries of the epoch).
pub fn step_order(entries: &[Entry]) -> Vec<&Entry> {
    let mut steps: Vec<&Entry> = entries.iter().filter(|e| e.what.is_step()).collect();
    steps.sort_by_key(|e| (e.epoch, e.actor, matches!(e.what, What::Exited(_)), e.seq));
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barriers_open_epochs_and_order_ignores_arrival_across_actors() {
        let t = Timeline::new();
        t.record(Actor::Target, What::Event(VmEvent::Resume));
        t.record(Actor::Source, What::Event(VmEvent::Stop));
        t.record(Actor::Kit, What::Action("migrate".into()));
        t.record(
            Actor::Target,
            What::Event(VmEvent::Migration("active".into())),
        );
        t.record(Actor::Source, What::Sample("runstate running".into()));
        t.record(
            Actor::Source,
            What::Event(VmEvent::Migration("setup".into())),
        );
        let entries = t.entries();
        let labels: Vec<String> = step_order(&entries)
            .iter()
            .map(|e| e.what.label())
            .collect();
        assert_eq!(
            labels,
            [
                "STOP",
                "RESUME",
                "migrate",
                "MIGRATION setup",
                "MIGRATION active"
            ]
        );
        assert_eq!(entries[2].epoch, 1);
        assert_eq!(entries[0].epoch, 0);
    }
}
