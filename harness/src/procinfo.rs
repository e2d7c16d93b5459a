//! What the kit reads of a process from outside: how it ended, and its state
//! in /proc. Below both the processes the kit runs and the timeline that
//! records their ends.

use std::fmt;

use nix::sys::signal::Signal;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitInfo {
    Code(i32),
    Signal(i32),
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitInfo::Code(c) => write!(f, "exited (status {c})"),
            ExitInfo::Signal(s) => write!(f, "exited (killed by {})", signal_name(*s)),
        }
    }
}

/// A signal's name (`SIGABRT`), or `?` for a number Linux does not name.
pub fn signal_name(sig: i32) -> &'static str {
    Signal::try_from(sig).map(|s| s.as_str()).unwrap_or("?")
}

/// The state letter of /proc/PID/stat (R, S, T, Z, ...).
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}
