//! SIGINT and SIGTERM while the kit runs trials (`run`, `certify`, `selftest`,
//! `explain`, `bench`).
//!
//! The first signal stops the run: no new trial starts, the trials in flight
//! end as usual (their teardown kills their VMMs), then the command prints what
//! ran, removes its run directory and exits 128 + the signal's number (130 for
//! SIGINT, 143 for SIGTERM). Every wait is bounded: the trials in flight get
//! [`GRACE`], after which the run stops waiting for them ([`crate::cli::pool`]);
//! a second signal stops that wait at once; and should the kit still be busy
//! [`QUIT_BOUND`] after a second signal (somewhere else than waiting for
//! trials), the signal thread kills what the kit started, removes the run
//! directories and exits itself.
//!
//! The handlers are signal-hook's: they only write to a pipe, and a thread of
//! the kit reads it and does the rest.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// How the reason of a trial a signal kept from running begins.
pub const INTERRUPTED: &str = "interrupted";

/// How long the trials in flight may take to end after the first signal.
pub const GRACE: Duration = Duration::from_secs(20);
/// How long the kit may take to quit after a second signal before the signal
/// thread quits for it.
pub const QUIT_BOUND: Duration = Duration::from_secs(5);

type Waker = Box<dyn Fn() + Send>;

/// The signals a run has received, and who to wake when one comes.
pub struct Stop {
    first: AtomicI32,
    count: AtomicUsize,
    next_waker: AtomicU64,
    wakers: Mutex<Vec<(u64, Waker)>>,
}

impl Stop {
    pub const fn new() -> Stop {
        Stop {
            first: AtomicI32::new(0),
            count: AtomicUsize::new(0),
            next_waker: AtomicU64::new(0),
            wakers: Mutex::new(Vec::new()),
        }
    }

    /// Records signal `sig` and wakes the waiting runs; returns how many
    /// signals have come, this one included.
    pub fn raise(&self, sig: i32) -> usize {
        let _ = self
            .first
            .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        for (_, wake) in self.lock().iter() {
            wake();
        }
        n
    }

    /// The first signal, if one has come.
    pub fn signal(&self) -> Option<i32> {
        match self.first.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }

    /// How many signals have come.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Calls `wake` on every later signal, until the guard is dropped.
    pub fn on_raise(&self, wake: impl Fn() + Send + 'static) -> WakerGuard<'_> {
        let id = self.next_waker.fetch_add(1, Ordering::SeqCst);
        self.lock().push((id, Box::new(wake)));
        WakerGuard { stop: self, id }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(u64, Waker)>> {
        self.wakers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}

/// Unregisters a waker of [`Stop::on_raise`].
pub struct WakerGuard<'s> {
    stop: &'s Stop,
    id: u64,
}

impl Drop for WakerGuard<'_> {
    fn drop(&mut self) {
        self.stop.lock().retain(|(id, _)| *id != self.id);
    }
}

/// The kit's signals (fed by the signal thread).
pub static STOP: Stop = Stop::new();

/// The run directories to remove should the signal thread have to quit.
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// `SIGINT`, `SIGTERM`, or the number.
pub fn name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

/// 128 + the first signal's number, once a signal has come.
pub fn exit_code() -> Option<ExitCode> {
    STOP.signal().map(|s| ExitCode::from((128 + s) as u8))
}

/// A command's exit status: 128 + the signal if one stopped it, else 0 when
/// `ok`, 1 otherwise.
pub fn status(ok: bool) -> ExitCode {
    exit_code().unwrap_or(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Installs the handlers of SIGINT and SIGTERM and starts the signal thread.
pub fn install() -> Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let n = STOP.raise(sig);
                let name = name(sig);
                if n == 1 {
                    eprintln!(
                        "cprkit: {name}: stopping: no new trial starts, the trials in flight end (at most {} s); {name} again to quit now",
                        GRACE.as_secs()
                    );
                } else if n == 2 {
                    eprintln!("cprkit: {name} again: quitting now");
                    // The run stops waiting for its trials at once; this only
                    // bounds anything else the kit may be blocked in.
                    std::thread::sleep(QUIT_BOUND);
                    quit_now();
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// Kills what the kit started, removes its run directories, exits.
fn quit_now() -> ! {
    let killed = cprkit_harness::leaks::kill_registered();
    let dirs = std::mem::take(&mut *DIRS.lock().unwrap_or_else(|e| e.into_inner()));
    for d in &dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    eprintln!(
        "cprkit: still busy {} s after the second signal: quit, {killed} VMM process(es) killed, the run directory removed",
        QUIT_BOUND.as_secs()
    );
    std::process::exit(128 + STOP.signal().unwrap_or(0))
}

/// Keeps `dir` on the list the signal thread removes should it quit.
pub fn guard_dir(dir: &Path) {
    DIRS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(dir.to_path_buf());
}

/// Takes `dir` off that list (it is being removed as usual).
pub fn unguard_dir(dir: &Path) {
    DIRS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|d| d != dir);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_first_signal_is_kept_and_wakers_called_until_dropped() {
        let stop = Stop::new();
        assert_eq!((stop.signal(), stop.count()), (None, 0));
        let woken = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&woken);
        let guard = stop.on_raise(move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(stop.raise(SIGTERM), 1);
        assert_eq!(stop.raise(SIGINT), 2);
        assert_eq!(stop.signal(), Some(SIGTERM));
        assert_eq!(woken.load(Ordering::SeqCst), 2);
        drop(guard);
        stop.raise(SIGINT);
        assert_eq!(woken.load(Ordering::SeqCst), 2);
        assert_eq!(name(SIGINT), "SIGINT");
    }
}
