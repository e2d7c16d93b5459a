//! A worker thread the VM runs and parks: the vCPU and the guest's block
//! I/O are both one. It runs turns while the VM wants it to and parks
//! otherwise; stopping is synchronous: [`Parkable::stop`] returns once the
//! thread has acknowledged that it is parked, so nothing of a turn follows.
//! A turn begins under the worker's lock (what it does there can never be
//! seen half done by a stop) and may go on outside it.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Ctl<S> {
    /// The VM wants the worker to run.
    run: bool,
    /// The thread is parked (acknowledges `run == false`).
    parked: bool,
    /// The worker's own state, shared with its handle.
    state: S,
}

#[derive(Debug)]
struct Shared<S> {
    ctl: Mutex<Ctl<S>>,
    cv: Condvar,
}

impl<S> Shared<S> {
    fn lock(&self) -> MutexGuard<'_, Ctl<S>> {
        self.ctl.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Handle on a worker thread.
/// The timer slack of a worker thread, in nanoseconds.
const WORKER_TIMER_SLACK_NS: libc::c_ulong = 1_000;

#[derive(Debug)]
pub struct Parkable<S> {
    shared: Arc<Shared<S>>,
}

impl<S: Send + 'static> Parkable<S> {
    /// Spawns the worker thread `name`, parked, with `state`; `body` is its
    /// whole life, taking one [`Turns::next`] after another.
    pub fn spawn(name: &str, state: S, body: impl FnOnce(Turns<S>) + Send + 'static) -> Self {
        let shared = Arc::new(Shared {
            ctl: Mutex::new(Ctl {
                run: false,
                parked: false,
                state,
            }),
            cv: Condvar::new(),
        });
        let turns = Turns {
            shared: Arc::clone(&shared),
        };
        thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                // The worker's pauses last what it asks for, not up to
                // 50 µs more (the default timer slack): a guest keeps its
                // pace. Best effort: without it the pauses are longer.
                let _ = nix::sys::prctl::set_timerslack(WORKER_TIMER_SLACK_NS);
                body(turns)
            })
            .unwrap_or_else(|e| panic!("spawn the {name} thread: {e}"));
        Self { shared }
    }
}

impl<S> Parkable<S> {
    /// Lets the worker run (starting a running worker does nothing).
    pub fn start(&self) {
        self.shared.lock().run = true;
        self.shared.cv.notify_all();
    }

    /// Stops the worker and returns once it is parked: `true`; or, with a
    /// `bound`, `false` if it did not park within it.
    pub fn stop(&self, bound: Option<Duration>) -> bool {
        let deadline = bound.map(|b| Instant::now() + b);
        let mut ctl = self.shared.lock();
        ctl.run = false;
        self.shared.cv.notify_all();
        while !ctl.parked {
            ctl = match deadline {
                None => self.shared.cv.wait(ctl).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.shared
                        .cv
                        .wait_timeout(ctl, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
        true
    }

    /// Whether the worker is stopped and parked.
    pub fn is_stopped(&self) -> bool {
        let ctl = self.shared.lock();
        !ctl.run && ctl.parked
    }

    /// Reads or changes the worker's state (under its lock: never during the
    /// locked part of a turn).
    pub fn with<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        f(&mut self.shared.lock().state)
    }
}

/// The worker thread's side: its turns.
#[derive(Debug)]
pub struct Turns<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Turns<S> {
    /// Parks while the VM does not want the worker to run (acknowledging the
    /// park to a waiting stop), then begins a turn: the state, under the
    /// lock until the [`Turn`] is dropped.
    pub fn next(&self) -> Turn<'_, S> {
        let mut ctl = self.shared.lock();
        while !ctl.run {
            if !ctl.parked {
                ctl.parked = true;
                self.shared.cv.notify_all();
            }
            ctl = self.shared.cv.wait(ctl).unwrap_or_else(|p| p.into_inner());
        }
        ctl.parked = false;
        Turn(ctl)
    }
}

/// The locked part of a turn: the worker's state.
pub struct Turn<'a, S>(MutexGuard<'a, Ctl<S>>);

impl<S> Deref for Turn<'_, S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.0.state
    }
}

impl<S> DerefMut for Turn<'_, S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.0.state
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[test]
    fn no_turn_after_a_stop_and_turns_again_after_a_start() {
        let outside = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&outside);
        let w = Parkable::spawn("test-worker", 0u64, move |turns| {
            loop {
                let n = {
                    let mut t = turns.next();
                    *t += 1;
                    *t
                };
                seen.store(n, Ordering::SeqCst);
                thread::sleep(Duration::from_micros(100));
            }
        });
        assert!(w.stop(None));
        assert!(w.is_stopped());
        assert_eq!(w.with(|n| *n), 0, "spawned parked");
        w.start();
        w.start();
        thread::sleep(Duration::from_millis(20));
        assert!(w.stop(Some(Duration::from_secs(2))));
        let n = w.with(|n| *n);
        assert!(n > 0);
        thread::sleep(Duration::from_millis(10));
        assert_eq!(w.with(|n| *n), n, "no turn after the stop");
        w.with(|n| *n = 100);
        w.start();
        thread::sleep(Duration::from_millis(10));
        w.stop(None);
        assert!(w.with(|n| *n) > 100);
    }

    #[test]
    fn a_bounded_stop_gives_up_on_a_turn_that_goes_on_outside_the_lock() {
        let w = Parkable::spawn("test-slow", (), |turns| {
            loop {
                drop(turns.next());
                thread::sleep(Duration::from_millis(300));
            }
        });
        w.start();
        thread::sleep(Duration::from_millis(20));
        assert!(!w.stop(Some(Duration::from_millis(30))), "mid-turn");
        assert!(!w.is_stopped());
        assert!(w.stop(None), "parks once the turn ends");
        assert!(w.is_stopped());
    }
}
