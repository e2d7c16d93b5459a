//! Records made by hand for the unit tests.

use std::path::PathBuf;
use std::time::Duration;

use cprkit_harness::plan::GuestState;
use cprkit_harness::record::{MigrateReply, TrialRecord};
use cprkit_harness::timeline::{Actor, Entry, What};

/// A timeline entry at `at` milliseconds.
pub fn entry(seq: usize, at: u64, actor: Actor, what: What) -> Entry {
    Entry {
        seq: seq as u64,
        at: Duration::from_millis(at),
        epoch: 0,
        actor,
        what,
    }
}

/// A record of a fault-free trial whose timeline is `entries` (ms, actor, what).
pub fn record(entries: &[(u64, Actor, What)]) -> TrialRecord {
    TrialRecord {
        prior: "running".into(),
        migrate: MigrateReply::Accepted,
        timeline: entries
            .iter()
            .enumerate()
            .map(|(i, (at, actor, what))| entry(i, *at, *actor, what.clone()))
            .collect(),
        ..TrialRecord::new(
            "refvmm::memory-running/no-fault".into(),
            "refvmm".into(),
            GuestState::Running,
            None,
            Duration::from_secs(1),
            PathBuf::from("/tmp/cprkit-test/trial"),
            false,
        )
    }
}
