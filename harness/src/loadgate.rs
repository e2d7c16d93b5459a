//! How many trials the machine has room for. A trial that waits (for a
//! bound, for a slow VMM) needs no core; one whose guest spins (QEMU under
//! TCG) needs one. So trials are not limited to the number of CPUs: the
//! gate keeps a level, one trial per CPU at first, and reads the machine's
//! idle CPU time (`/proc/stat`) at most once a [`WINDOW`] while trials wait
//! to start: when the trials at the level left at least [`SPARE_CPU`] of a
//! core idle, the level goes up by one; when they left less than
//! [`STARVED_CPU`], down by one (never below the CPUs, never above
//! [`LoadGate::most`]). A trial starts at once while fewer run than the
//! level: one that ends is replaced without a reading.
//!
//! Why idle time and not a count of runnable threads: VMMs whose guests
//! and devices wake every few hundred microseconds keep several threads
//! runnable at any instant on a machine that is mostly idle, so a count
//! read at an instant says "busy" when cores are free. The idle time is the
//! whole machine's: other work on it keeps the level lower, which keeps each
//! trial's timing as on a machine with room for it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Trials at once at most, per CPU, when the load allows: most trials
/// spend most of their time waiting (for a VMM's step, a bound, a
/// process's exit), on no CPU.
pub const TRIALS_PER_CPU: usize = 32;
/// The shortest span a reading of the idle time covers (the kernel counts
/// it in hundredths of a second).
const WINDOW: Duration = Duration::from_millis(40);
/// The idle CPU time, in cores, over a window that raises the level.
const SPARE_CPU: f64 = 0.5;
/// The idle CPU time, in cores, below which a window lowers the level.
const STARVED_CPU: f64 = 0.1;
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
    /// Trials at once the machine has shown room for.
    level: AtomicUsize,
    /// The reading the next one compares with, held by the one thread
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
            level: AtomicUsize::new(cpus),
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

    /// Trials at once the machine has shown room for, now.
    pub fn level(&self) -> usize {
        self.level.load(Ordering::SeqCst)
    }

    /// Waits until the machine has room for one more trial, or `stop` says
    /// to give up (then `None`): while fewer trials run than the level.
    pub fn admit(&self, stop: impl Fn() -> bool) -> Option<Admitted<'_>> {
        loop {
            if stop() {
                return None;
            }
            let running = self.running.load(Ordering::SeqCst);
            self.adjust(running);
            if running < self.level() {
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

    /// Reads the machine once a [`WINDOW`] has passed since the last
    /// reading, and moves the level: up by one when the trials running
    /// (as many as the level) left [`SPARE_CPU`] idle, down by one when
    /// they left less than [`STARVED_CPU`].
    fn adjust(&self, running: usize) {
        let Ok(mut last) = self.reading.try_lock() else {
            // Another thread is reading.
            return;
        };
        if last.is_some_and(|(at, _)| at.elapsed() < WINDOW) {
            return;
        }
        let Some(now) = CpuTimes::now() else {
            return;
        };
        let before = last.replace((Instant::now(), now));
        let Some(idle) = before.and_then(|(_, b)| now.idle_since(&b)) else {
            return;
        };
        let spare = idle * self.cpus as f64;
        let level = self.level();
        if spare >= SPARE_CPU && running >= level && level < self.most {
            self.level.store(level + 1, Ordering::SeqCst);
        } else if spare < STARVED_CPU && level > self.cpus {
            self.level.store(level - 1, Ordering::SeqCst);
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
    fn the_level_starts_at_the_cpus_and_moves_one_step_a_window() {
        let gate = LoadGate::new(1);
        assert_eq!(gate.level(), 1);
        // The first reading only starts a window; another within the
        // window does nothing.
        gate.adjust(1);
        gate.adjust(1);
        assert_eq!(gate.level(), 1);
        std::thread::sleep(WINDOW + Duration::from_millis(20));
        // A mostly idle test machine (this thread sleeps): up by one at
        // most, and never below the CPUs.
        gate.adjust(1);
        assert!((1..=2).contains(&gate.level()), "{}", gate.level());
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
