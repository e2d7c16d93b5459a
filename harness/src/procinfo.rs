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

/// Whether no thread of process `pid` is running or runnable (every one is
/// asleep on something, stopped or gone): the process goes on only when
/// something from outside wakes it. `None` when /proc cannot be read.
pub fn all_threads_blocked(pid: i32) -> Option<bool> {
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let stat = std::fs::read_to_string(t.path().join("stat")).ok();
        let state = stat
            .as_deref()
            .and_then(|s| s.rsplit_once(')'))
            .and_then(|(_, after)| after.trim_start().chars().next());
        if state == Some('R') {
            return Some(false);
        }
    }
    Some(true)
}

/// The state letter of /proc/PID/stat (R, S, T, Z, ...).
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sleeping_process_is_blocked_and_a_running_one_is_not() {
        // This thread runs while it reads its own process.
        assert_eq!(all_threads_blocked(std::process::id() as i32), Some(false));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep runs");
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while all_threads_blocked(pid) != Some(true) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(all_threads_blocked(pid), Some(true), "sleep(1) sleeps");
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(all_threads_blocked(pid), None, "gone");
    }
}
