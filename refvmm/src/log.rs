//! The step log on stderr: one line per step, prefixed `refvmm[source]` or
//! `refvmm[target]`, and the files to unlink when the process exits.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

static IS_TARGET: AtomicBool = AtomicBool::new(false);
static CLEANUP: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Which side of a migration this process plays, for the log prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Target,
}

/// Sets the role named in every log line.
pub fn set_role(role: Role) {
    IS_TARGET.store(role == Role::Target, Ordering::Relaxed);
}

/// The role named in log lines.
pub fn role() -> Role {
    if IS_TARGET.load(Ordering::Relaxed) {
        Role::Target
    } else {
        Role::Source
    }
}

/// The prefix of every log line.
pub fn prefix() -> &'static str {
    match role() {
        Role::Source => "refvmm[source]",
        Role::Target => "refvmm[target]",
    }
}

/// Logs one line on stderr, with the role prefix.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        eprintln!("{} {}", $crate::log::prefix(), format_args!($($arg)*))
    };
}

/// Remembers a socket path this process created, to unlink it at exit.
pub fn unlink_at_exit(path: PathBuf) {
    CLEANUP.lock().unwrap_or_else(|p| p.into_inner()).push(path);
}

/// Forgets a path registered with [`unlink_at_exit`] (it was unlinked
/// already, and the name may be reused by another process).
pub fn forget_unlink(path: &std::path::Path) {
    CLEANUP
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|p| p != path);
}

/// Unlinks the socket paths registered with [`unlink_at_exit`] (those that
/// still exist) and ends the process with `code`.
pub fn exit(code: i32) -> ! {
    let paths = std::mem::take(&mut *CLEANUP.lock().unwrap_or_else(|p| p.into_inner()));
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
    std::process::exit(code)
}
