//! How many trials the machine has room for. A trial that waits (for a
//! bound, for a slow VMM) needs no core; one whose guest spins (QEMU under
//! TCG) needs one. So trials are not limited to the number of CPUs: up to
//! one per CPU always runs, and another starts only while the machine has
//! CPU time to spare: over the last [`WINDOW`] at least [`SPARE_CPU`] of a
//! core was idle (`/proc/stat`), up to [`LoadGate::most`] at once.
//!
//! One reading admits one trial, so that the next reading covers what it
//! started (a trial's VMMs take a moment to load the machine) and
//! admissions never come in a burst. One thread reads at a time; the others
//! wait for its answer rather than read again.
//!
//! Why idle time and not a count of runnable threads: VMMs whose guests
//! and devices wake every few hundred microseconds keep several threads
//! runnable at any instant on a machine that is mostly idle, so a count
//! read at an instant says "busy" when cores are free. The idle time is the
//! whole machine's: other work on it leaves fewer trials running, which
//! keeps each trial's timing as on a machine with room for it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Trials at once at most, per CPU, when the load allows: most trials
/// spend most of their time waiting (for a VMM's step, a bound, a
/// process's exit), on no CPU.
pub const TRIALS_PER_CPU: usize = 32;
/// The shortest span a reading of the idle time covers (the kernel counts
/// it in hundredths of a second).
const WINDOW: Duration = Duration::from_millis(40);
/// The idle CPU time, in cores, over a window that admits one more trial.
const SPARE_CPU: f64 = 0.5;
/// How long a trial waits before it asks again.
const RETRY: Duration = Duration::from_millis(10);

/// The number of CPUs the kit may use.
pub fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(2)
}

/// The machine's CPU time so far, from the first line of `/proc/stat`: idle
/// (idle and iowait) and total, in the kernel's ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub idle: u64,
    pub total: u64,
}

impl CpuTimes {
    /// Now; `None` where `/proc/stat` cannot be read.
    pub fn now() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal (guest time is
        // already in user).
        let idle = ticks.get(3)? + ticks.get(4).unwrap_or(&0);
        let total = ticks.iter().take(8).sum();
        Some(CpuTimes { idle, total })
    }

    /// The idle share of the CPU time since `earlier` (0 to 1); `None` if
    /// no tick passed.
    pub fn idle_since(&self, earlier: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let idle = self.idle.checked_sub(earlier.idle)?;
        (total > 0).then(|| idle as f64 / total as f64)
    }
}

/// Admits trials as the machine's load allows; shared by the threads that
/// run them.
#[derive(Debug)]
pub struct LoadGate {
    cpus: usize,
    most: usize,
    running: AtomicUsize,
    /// The reading the next decision compares with, held by the one thread
    /// reading the load.
    reading: std::sync::Mutex<Option<(Instant, CpuTimes)>>,
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
    /// else once the machine had CPU time to spare since the last decision.
    pub fn admit(&self, stop: impl Fn() -> bool) -> Option<Admitted<'_>> {
        loop {
            if stop() {
                return None;
            }
            let running = self.running.load(Ordering::SeqCst);
            let room = running < self.cpus || (running < self.most && self.spare());
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

    /// Whether the machine had [`SPARE_CPU`] idle since the last reading,
    /// at least [`WINDOW`] ago. A reading that says so is spent on the one
    /// trial it admits; one that cannot be taken says no.
    fn spare(&self) -> bool {
        let mut last = self.reading.lock().unwrap_or_else(|e| e.into_inner());
        let Some(now) = CpuTimes::now() else {
            return false;
        };
        match *last {
            Some((at, _)) if at.elapsed() < WINDOW => false,
            Some((_, before)) => {
                *last = Some((Instant::now(), now));
                now.idle_since(&before)
                    .is_some_and(|idle| idle * self.cpus as f64 >= SPARE_CPU)
            }
            None => {
                *last = Some((Instant::now(), now));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_times_are_read_from_proc_stat() {
        let stat = "cpu  100 5 50 800 20 1 2 3 0 0\ncpu0 50 2 25 400 10 0 1 1 0 0\n";
        let t = CpuTimes::parse(stat).unwrap();
        assert_eq!(
            t,
            CpuTimes {
                idle: 820,
                total: 981
            }
        );
        let later = CpuTimes {
            idle: 880,
            total: 1081,
        };
        assert_eq!(later.idle_since(&t), Some(0.6));
        assert_eq!(t.idle_since(&t), None, "no tick passed");
        assert!(CpuTimes::parse("intr 1 2 3\n").is_none());
        assert!(CpuTimes::now().is_some(), "this machine has /proc/stat");
    }

    #[test]
    fn a_spinning_thread_takes_its_cpu_out_of_the_idle_time() {
        let before = CpuTimes::now().unwrap();
        let spin = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let s = std::sync::Arc::clone(&spin);
        let t = std::thread::spawn(move || while s.load(Ordering::Relaxed) {});
        std::thread::sleep(Duration::from_millis(300));
        spin.store(false, Ordering::Relaxed);
        t.join().unwrap();
        let idle = CpuTimes::now().unwrap().idle_since(&before).unwrap();
        // One of the machine's CPUs was busy the whole time.
        assert!(idle <= 1.0 - 0.8 / cpus() as f64, "idle {idle}");
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
    fn beyond_the_cpus_one_reading_admits_one_trial() {
        let gate = LoadGate::new(1);
        let first = gate.admit(|| false).expect("one per CPU at once");
        // The first reading only starts a window; the next, within the
        // window, says nothing yet.
        assert!(!gate.spare());
        assert!(!gate.spare());
        drop(first);
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
