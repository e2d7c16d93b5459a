//! Which snapshot file belongs to which planned trial, and the files under
//! the snapshots directory that belong to none: the reviewed snapshots must
//! be exactly those of the plan, so a snapshot left behind by a deleted case,
//! point or VMM is found (and fails the conformance run) instead of being
//! read as evidence by whatever reads the files.
//!
//! The plan here is every trial the conformance runner plans, run or not: a
//! trial "not run" on this host (an optional VMM that is absent, a backend
//! that is missing) still owns its snapshot.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::TrialId;
use crate::runner::Planned;

/// The name of a trial's snapshot (`memory-running__kill-target@cpr-save`),
/// without its `.snap`.
pub fn snapshot_name(id: &TrialId) -> String {
    format!("{}__{}", id.case, id.point_name()).replace(':', "-")
}

/// The snapshot file of a planned trial under the snapshots directory `root`.
pub fn snapshot_file(root: &Path, p: &Planned) -> PathBuf {
    root.join(p.adapter.snapshot_dir())
        .join(format!("{}.snap", snapshot_name(&p.id)))
}

/// Whether a file name is a snapshot, reviewed or pending (`.snap.new`,
/// `.pending-snap`, which insta leaves when it is told to write them).
fn is_snapshot(name: &str) -> bool {
    name.ends_with(".snap") || name.ends_with(".snap.new") || name.ends_with(".pending-snap")
}

/// The snapshot files under `root` (at any depth) that no trial of `planned`
/// has, sorted; pending ones are never planned.
pub fn stray_snapshots(root: &Path, planned: &[Planned]) -> Vec<PathBuf> {
    let wanted: BTreeSet<PathBuf> = planned.iter().map(|p| snapshot_file(root, p)).collect();
    let mut found = Vec::new();
    walk(root, &mut found);
    found.retain(|f| !wanted.contains(f));
    found.sort();
    found
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&path, out);
        } else if e.file_name().to_str().is_some_and(is_snapshot) {
            out.push(path);
        }
    }
}
