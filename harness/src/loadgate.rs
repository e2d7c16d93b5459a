//! How many trials the machine has room for. A trial that waits (for a
//! bound, for a slow VMM) needs no core; one whose guest spins (QEMU under
//! TCG) needs one. So trials are not limited to the number of CPUs: up to
//! one per CPU always runs, and another starts only while the running trials
//! leave a core to spare: fewer of the kit's own threads and its VMMs'
//! (the processes it started, read in /proc) are runnable than there are
//! CPUs, up to [`LoadGate::most`]. One thread reads at a time; the others
//! wait for its answer rather than read again. Other work on the machine is not counted:
//! it slows the trials alike whatever their number.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Trials at once at most, per CPU, when the load allows.
pub const TRIALS_PER_CPU: usize = 4;
/// Readings of the runnable count averaged for one decision, this far apart.
const READINGS: u32 = 4;
const READING_GAP: Duration = Duration::from_millis(2);
/// How long a trial waits before the machine is read again.
const RETRY: Duration = Duration::from_millis(10);

/// The number of CPUs the kit may use.
pub fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(2)
}

/// Admits trials as the machine's load allows; shared by the threads that
/// run them.
#[derive(Debug)]
pub struct LoadGate {
    cpus: usize,
    most: usize,
    running: AtomicUsize,
    /// The last reading (when, and whether every CPU was busy), held by the
    /// one thread reading the load.
    reading: std::sync::Mutex<Option<(Instant, bool)>>,
}

/// A trial admitted by a [`LoadGate`]: it counts as running until dropped.
#[derive(Debug)]
pub struct Admitted<'g>(&'g LoadGate);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Default for LoadGate {
    fn default() -> Self {
        Self::new(cpus())
    }
}

impl LoadGate {
    /// A gate for a machine of `cpus` CPUs.
    pub fn new(cpus: usize) -> Self {
        let cpus = cpus.max(1);
        LoadGate {
            cpus,
            most: cpus * TRIALS_PER_CPU,
            running: AtomicUsize::new(0),
            reading: std::sync::Mutex::new(None),
        }
    }

    /// Trials at once at most (the number of threads to run them on).
    pub fn most(&self) -> usize {
        self.most
    }

    /// Trials running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Waits until the machine has room for one more trial, or `stop` says
    /// to give up (then `None`): at once while fewer trials than CPUs run,
    /// else once fewer threads are runnable than there are CPUs.
    pub fn admit(&self, stop: impl Fn() -> bool) -> Option<Admitted<'_>> {
        loop {
            if stop() {
                return None;
            }
            let running = self.running.load(Ordering::SeqCst);
            let room = running < self.cpus
                || (running < self.most && {
                    // One reader: the others wait here and take its
                    // reading while it is fresh.
                    let mut last = self.reading.lock().unwrap_or_else(|e| e.into_inner());
                    let busy = match *last {
                        Some((at, busy)) if at.elapsed() < RETRY => busy,
                        _ => {
                            let busy = self.busy();
                            *last = Some((Instant::now(), busy));
                            busy
                        }
                    };
                    !busy
                });
            if room {
                // Another thread may have been admitted since the reading.
                if self
                    .running
                    .compare_exchange(running, running + 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    return Some(Admitted(self));
                }
                continue;
            }
            std::thread::sleep(RETRY);
        }
    }

    /// Whether every CPU has a runnable thread, on average over a few readings.
    fn busy(&self) -> bool {
        let mut sum = 0;
        for i in 0..READINGS {
            if i > 0 {
                std::thread::sleep(READING_GAP);
            }
            // The reading thread itself is running while it reads.
            sum += own_runnable().unwrap_or(usize::MAX / 8).saturating_sub(1);
        }
        sum / READINGS as usize >= self.cpus
    }
}

/// The runnable threads (state `R`) of this process and of the processes it
/// started (its VMMs, device daemons, adapter programs: the kit's register
/// of them), now.
pub fn own_runnable() -> Option<usize> {
    let me = std::process::id();
    std::fs::metadata(format!("/proc/{me}/task")).ok()?;
    let started = crate::leaks::registered();
    Some(
        std::iter::once(me)
            .chain(started.into_iter().filter_map(|p| u32::try_from(p).ok()))
            .map(runnable_threads)
            .sum(),
    )
}

/// The runnable threads of process `pid` (0 once it is gone).
fn runnable_threads(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, after)| after.trim_start().chars().next())
                    == Some('R')
            })
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kit_and_what_it_started_have_runnable_threads() {
        // At least this one, which reads.
        assert!(own_runnable().is_some_and(|n| n >= 1));
        // A spinning thread of this process is counted.
        let spin = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let s = std::sync::Arc::clone(&spin);
        let t = std::thread::spawn(move || while s.load(Ordering::Relaxed) {});
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut seen = 0;
        while seen < 2 && std::time::Instant::now() < deadline {
            seen = seen.max(own_runnable().unwrap_or(0));
        }
        spin.store(false, Ordering::Relaxed);
        t.join().unwrap();
        assert!(seen >= 2, "the spinning thread is runnable: {seen}");
    }

    #[test]
    fn one_trial_per_cpu_is_admitted_at_once_and_counted_until_done() {
        let gate = LoadGate::new(2);
        assert_eq!(gate.most(), 2 * TRIALS_PER_CPU);
        let a = gate.admit(|| false).expect("admitted");
        let b = gate.admit(|| false).expect("admitted");
        assert_eq!(gate.running(), 2);
        drop(a);
        assert_eq!(gate.running(), 1);
        drop(b);
        assert_eq!(gate.running(), 0);
    }

    #[test]
    fn no_more_than_the_most_and_a_stop_ends_the_wait() {
        let gate = LoadGate::new(1);
        let held: Vec<_> = (0..gate.most())
            .map_while(|_| {
                // The machine may be busy: admitted or not, each wait ends.
                let deadline = std::time::Instant::now() + Duration::from_millis(200);
                gate.admit(|| std::time::Instant::now() > deadline)
            })
            .collect();
        assert!(!held.is_empty() && held.len() <= gate.most());
        if held.len() == gate.most() {
            assert!(gate.admit(|| true).is_none(), "full: only a stop ends it");
        }
        drop(held);
        assert_eq!(gate.running(), 0);
    }
}
