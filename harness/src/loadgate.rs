//! How many trials the machine has room for. A trial that waits (for a
//! bound, for a slow VMM) needs no core; one whose guest spins (QEMU under
//! TCG) needs one. So trials are not limited to the number of CPUs: up to
//! one per CPU always runs, and another starts only while the machine has a
//! core to spare, read from the kernel's count of runnable threads
//! (`procs_running` in /proc/stat, the whole machine's: other work on it
//! counts too), up to [`LoadGate::most`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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
            if running < self.cpus || (running < self.most && !self.busy()) {
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
            sum += procs_running().unwrap_or(usize::MAX / 8).saturating_sub(1);
        }
        sum / READINGS as usize >= self.cpus
    }
}

/// The machine's runnable threads now (`procs_running` in /proc/stat).
pub fn procs_running() -> Option<usize> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("procs_running "))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_has_runnable_threads() {
        // At least this one, which reads.
        assert!(procs_running().is_some_and(|n| n >= 1));
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
