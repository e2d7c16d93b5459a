//! Running a list of trials on N worker threads, stoppable by a signal.
//!
//! Each worker takes the next trial until none is left or a signal has come;
//! the calling thread collects the results as they come (and reports each). On
//! a signal it waits for the trials in flight at most `grace`, and not at all
//! after a second signal: then it returns without them, leaving their threads
//! to end with the process.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cprkit_harness::loadgate::LoadGate;

use super::interrupt::Stop;

/// How many trials run at once (`--jobs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jobs {
    /// This many, whatever the load.
    Fixed(usize),
    /// `auto`, the default: one per CPU, and more while the machine has a
    /// core to spare (trials that wait need none), up to
    /// [`cprkit_harness::loadgate::TRIALS_PER_CPU`] per CPU.
    Auto,
}

impl From<usize> for Jobs {
    fn from(n: usize) -> Self {
        Jobs::Fixed(n)
    }
}

impl std::fmt::Display for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Jobs::Fixed(n) => write!(f, "{n}"),
            Jobs::Auto => write!(f, "auto (by load, up to {})", LoadGate::default().most()),
        }
    }
}

/// Why the run did not wait for the trials in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quit {
    /// A second signal came.
    Again,
    /// They did not end within this grace.
    Grace(Duration),
}

/// How a signal cut a run short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// The first signal.
    pub signal: i32,
    /// Trials that never started.
    pub not_started: usize,
    /// Trials still running when the run quit waiting (0 unless `quit`).
    pub abandoned: usize,
    pub quit: Option<Quit>,
}

/// What became of one item.
#[derive(Debug, PartialEq, Eq)]
pub enum Slot<R> {
    Done(R),
    /// Still running when the run quit waiting for it.
    Abandoned,
    /// A signal came before it started.
    NotStarted,
}

/// A pool's results, in the order of its items, and whether a signal stopped it.
pub struct Ran<R> {
    pub results: Vec<Slot<R>>,
    pub stopped: Option<Stopped>,
}

enum Msg<R> {
    Done(usize, R),
    WorkerEnded,
    Woken,
}

/// Runs `work` on each item, `jobs` at a time, calling `on_done` on the calling
/// thread for each result as it comes.
pub fn run<P, R>(
    items: Arc<Vec<P>>,
    jobs: impl Into<Jobs>,
    work: Arc<dyn Fn(&P) -> R + Send + Sync>,
    on_done: &mut dyn FnMut(&R),
    stop: &'static Stop,
    grace: Duration,
) -> Ran<R>
where
    P: Send + Sync + 'static,
    R: Send + 'static,
{
    let total = items.len();
    let next = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel::<Msg<R>>();
    let woken = tx.clone();
    let _waker = stop.on_raise(move || {
        let _ = woken.send(Msg::Woken);
    });
    let mut workers = Vec::new();
    let (threads, gate) = match jobs.into() {
        Jobs::Fixed(n) => (n, None),
        Jobs::Auto => {
            let gate = LoadGate::default();
            (gate.most(), Some(Arc::new(gate)))
        }
    };
    for n in 0..threads.max(1).min(total) {
        let (items, next, work, tx, gate) = (
            Arc::clone(&items),
            Arc::clone(&next),
            Arc::clone(&work),
            tx.clone(),
            gate.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("trials-{n}"))
            .spawn(move || {
                while stop.count() == 0 {
                    // By load: the next item once the machine has room.
                    let admitted = match gate.as_deref() {
                        Some(g) => match g.admit(|| stop.count() > 0) {
                            Some(a) => Some(a),
                            None => break,
                        },
                        None => None,
                    };
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    // Sent to a run that quit waiting: nobody reads it.
                    let _ = tx.send(Msg::Done(i, work(item)));
                    drop(admitted);
                }
                let _ = tx.send(Msg::WorkerEnded);
            });
        match spawned {
            Ok(h) => workers.push(h),
            // Fewer workers; with none, the trials are not run (below).
            Err(e) => eprintln!("cprkit: cannot start a worker thread: {e}"),
        }
    }
    drop(tx);

    let mut results: Vec<Option<R>> = (0..total).map(|_| None).collect();
    let mut running = workers.len();
    let mut deadline: Option<Instant> = None;
    let mut quit = None;
    while running > 0 {
        match stop.count() {
            0 => {}
            1 => {
                deadline.get_or_insert_with(|| Instant::now() + grace);
            }
            _ => {
                quit = Some(Quit::Again);
                break;
            }
        }
        // A signal after the count was read sends `Woken`: none is missed.
        let msg = match deadline {
            None => rx.recv().ok(),
            Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    quit = Some(Quit::Grace(grace));
                    break;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => None,
            },
        };
        match msg {
            Some(Msg::Done(i, r)) => {
                on_done(&r);
                results[i] = Some(r);
            }
            Some(Msg::WorkerEnded) => running -= 1,
            Some(Msg::Woken) | None => {}
        }
    }
    if quit.is_none() {
        for w in workers {
            let _ = w.join();
        }
    }
    // Items are taken in order: those below `started` were.
    let started = next.load(Ordering::SeqCst).min(total);
    let results: Vec<Slot<R>> = results
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            Some(r) => Slot::Done(r),
            None if i < started => Slot::Abandoned,
            None => Slot::NotStarted,
        })
        .collect();
    let count = |want: fn(&Slot<R>) -> bool| results.iter().filter(|r| want(r)).count();
    let stopped = stop.signal().map(|signal| Stopped {
        signal,
        not_started: count(|r| matches!(r, Slot::NotStarted)),
        abandoned: count(|r| matches!(r, Slot::Abandoned)),
        quit,
    });
    Ran { results, stopped }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn leak() -> &'static Stop {
        Box::leak(Box::new(Stop::new()))
    }

    /// Items that each block until released, with a channel saying which started.
    struct Gate {
        started: Mutex<mpsc::Sender<usize>>,
        release: Mutex<mpsc::Receiver<()>>,
    }

    fn gated() -> (Arc<Gate>, mpsc::Receiver<usize>, mpsc::Sender<()>) {
        let (s_tx, s_rx) = mpsc::channel();
        let (r_tx, r_rx) = mpsc::channel();
        let gate = Gate {
            started: Mutex::new(s_tx),
            release: Mutex::new(r_rx),
        };
        (Arc::new(gate), s_rx, r_tx)
    }

    fn work(gate: &Arc<Gate>) -> Arc<dyn Fn(&usize) -> usize + Send + Sync> {
        let gate = Arc::clone(gate);
        Arc::new(move |i: &usize| {
            gate.started.lock().unwrap().send(*i).unwrap();
            // Bounded, so that an abandoned worker ends too.
            let _ = gate
                .release
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(30));
            *i * 10
        })
    }

    #[test]
    fn all_run_in_order_without_a_signal() {
        let items = Arc::new((0..7).collect::<Vec<usize>>());
        let mut seen = 0;
        let ran = run(
            items,
            3,
            Arc::new(|i: &usize| i * 10),
            &mut |_| seen += 1,
            leak(),
            Duration::from_secs(1),
        );
        assert_eq!(seen, 7);
        assert!(ran.stopped.is_none());
        let want: Vec<Slot<usize>> = (0..7).map(|i| Slot::Done(i * 10)).collect();
        assert_eq!(ran.results, want);
    }

    #[test]
    fn a_signal_lets_the_trial_in_flight_end_and_starts_no_other() {
        let stop = leak();
        let (gate, started, release) = gated();
        let items = Arc::new((0..5).collect::<Vec<usize>>());
        let w = work(&gate);
        let runner = std::thread::spawn(move || {
            run(items, 1, w, &mut |_| {}, stop, Duration::from_secs(30))
        });
        assert_eq!(started.recv_timeout(Duration::from_secs(10)), Ok(0));
        stop.raise(libc_sigint());
        release.send(()).unwrap();
        let ran = runner.join().unwrap();
        assert_eq!(
            ran.stopped,
            Some(Stopped {
                signal: libc_sigint(),
                not_started: 4,
                abandoned: 0,
                quit: None
            })
        );
        assert_eq!(ran.results[0], Slot::Done(0));
        assert!(ran.results[1..].iter().all(|r| *r == Slot::NotStarted));
        assert!(
            started.try_recv().is_err(),
            "no trial started after the signal"
        );
    }

    #[test]
    fn a_trial_that_does_not_end_within_the_grace_is_abandoned() {
        let stop = leak();
        let (gate, started, _release) = gated();
        let items = Arc::new((0..3).collect::<Vec<usize>>());
        let w = work(&gate);
        let grace = Duration::from_millis(200);
        let runner = std::thread::spawn(move || run(items, 2, w, &mut |_| {}, stop, grace));
        let mut first = [
            started.recv_timeout(Duration::from_secs(10)).unwrap(),
            started.recv_timeout(Duration::from_secs(10)).unwrap(),
        ];
        first.sort();
        assert_eq!(first, [0, 1]);
        let t = Instant::now();
        stop.raise(libc_sigint());
        let ran = runner.join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert_eq!(
            ran.results,
            vec![Slot::Abandoned, Slot::Abandoned, Slot::NotStarted]
        );
        assert_eq!(
            ran.stopped,
            Some(Stopped {
                signal: libc_sigint(),
                not_started: 1,
                abandoned: 2,
                quit: Some(Quit::Grace(grace))
            })
        );
    }

    #[test]
    fn a_second_signal_quits_waiting_at_once() {
        let stop = leak();
        let (gate, started, _release) = gated();
        let items = Arc::new((0..3).collect::<Vec<usize>>());
        let w = work(&gate);
        let runner = std::thread::spawn(move || {
            run(items, 1, w, &mut |_| {}, stop, Duration::from_secs(60))
        });
        assert_eq!(started.recv_timeout(Duration::from_secs(10)), Ok(0));
        let t = Instant::now();
        stop.raise(libc_sigint());
        stop.raise(libc_sigint());
        let ran = runner.join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        let s = ran.stopped.unwrap();
        assert_eq!(
            (s.not_started, s.abandoned, s.quit),
            (2, 1, Some(Quit::Again))
        );
    }

    #[test]
    fn a_signal_before_the_start_runs_nothing() {
        let stop = leak();
        stop.raise(libc_sigint());
        let ran = run(
            Arc::new(vec![1usize, 2]),
            2,
            Arc::new(|i: &usize| *i),
            &mut |_| {},
            stop,
            Duration::from_secs(1),
        );
        assert_eq!(ran.results, vec![Slot::NotStarted, Slot::NotStarted]);
        assert_eq!(ran.stopped.unwrap().not_started, 2);
    }

    fn libc_sigint() -> i32 {
        signal_hook::consts::SIGINT
    }
}
