//! Where the repository keeps its data: the case files and the reviewed
//! snapshots (with each VMM's known-violations list). Each has one function
//! here, and an environment variable that points it elsewhere.

use std::path::{Path, PathBuf};

/// The cases directory: `$CPRKIT_CASES` if set, else the repository's `cases/`.
pub fn cases_dir() -> PathBuf {
    from_env_or("CPRKIT_CASES", "cases")
}

/// The snapshots directory: `$CPRKIT_SNAPSHOTS` if set, else the
/// repository's `snapshots/`.
pub fn snapshots_dir() -> PathBuf {
    from_env_or("CPRKIT_SNAPSHOTS", "snapshots")
}

/// One VMM's snapshots (and known-violations list): `snapshots_dir()/<dir>`,
/// where `dir` is the adapter's `snapshot_dir()`.
pub fn vmm_snapshots_dir(dir: &str) -> PathBuf {
    snapshots_dir().join(dir)
}

fn from_env_or(var: &str, repo_dir: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the suite crate sits in the repository")
            .join(repo_dir),
    }
}
