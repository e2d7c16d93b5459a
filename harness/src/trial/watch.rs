//! How long the kit watches, while it holds the first fds, for a source that
//! still runs: not a fixed quiet period but a bound derived from the guest's
//! own rates, measured while it runs before the migrate (its counter writes in
//! the RAM memfd, its device I/O requests in the device's ledger). A watch ends
//! early once everything it watches for has been seen, and goes on past its
//! bound (up to the ceiling) while the source has a thread that could run but
//! may not have been given a CPU.
//!
//! The other waits of a trial, and why each is what it is:
//! - the start-up bounds (`STARTUP`, the device's start and close waits) and
//!   the settle bound: each ends at the event it waits for (a socket
//!   listening, a monitor answer, a process exit, a ledger change), and is
//!   reached only by a VMM that never gets there;
//! - the bound of a step of the handover (the answer to `migrate`, the
//!   migration's end): it ends at the answer or the end, and its length is
//!   derived from the VMM's own speed, measured at its start-up
//!   ([`step_bound`]);
//! - the device's settle at the final readings (`wait_still` in `device.rs`):
//!   a VMM's close or release reaches the daemon a moment after the VMM went
//!   on, and nothing announces that the last one has come, so a quiet period
//!   stays (each change is awaited as an event from the daemon); its length
//!   is derived from the source's own pace at its device work, measured in
//!   its start-up handshake (`still_period`);
//! - the final readings' check that a running guest's counter moves
//!   (`counter_moves` in `ending.rs`): it ends at the first write, and only a
//!   guest that does not run waits out its settle bound;
//! - a main-stream fault's wait for a source that may have sent its whole
//!   stream (`holds.rs`): it ends at the source's report, at its exit, or once
//!   every thread of the source is found blocked three readings in a row
//!   (1 ms apart: it waits on something outside it), bounded by
//!   `SOURCE_DONE_WAIT` for a source that keeps busy without reporting.

use std::time::{Duration, Instant};

use crate::guestmem::GuestRam;
use crate::procinfo;
use crate::record::WatchBound;

/// Guest counter writes the cut-over watch spans: a guest that still runs
/// writes this many times within the bound, so a counter still for that long
/// is a stopped guest.
pub(super) const WATCH_WRITES: u32 = 50;
/// Device I/O requests the cut-over watch spans, for a guest that does I/O:
/// a device still for the time of this many requests of a guest that keeps
/// its pace sees no more I/O (the counter's writes, many more, span the
/// watch too).
pub(super) const WATCH_REQUESTS: u32 = 8;
/// Never shorter. A running guest whose vCPU thread is not given a CPU for
/// a few scheduler ticks on a busy host looks still (QEMU's TCG guest under
/// load does, for 5 ms): that is not what the floor is for, since such a
/// thread is runnable and [`watch_counter`] watches on while any thread of
/// the source is. The floor covers what the rates cannot show: a guest
/// that wakes on a timer coarser than the pace it kept while timed.
pub(super) const WATCH_FLOOR: Duration = Duration::from_millis(2);
/// The watch spans this many times the longest still spell seen while the
/// rate was measured (a guest that writes in bursts).
pub(super) const GAP_FACTOR: u32 = 4;
/// Counter writes timed to measure the guest's write rate.
const RATE_WRITES: u64 = 8;
/// Device requests timed to measure the guest's request rate.
pub(super) const RATE_REQUESTS: u32 = 3;
/// How often the counter is read while the kit waits for it to move (the
/// memfd has no change notification).
const COUNTER_POLL: Duration = Duration::from_micros(50);

/// The guest's writes as the kit saw them while it timed them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct WriteRate {
    /// The mean time between two counter writes.
    pub interval: Duration,
    /// The longest time the counter was seen still between two writes.
    pub longest_gap: Duration,
}

/// Times [`RATE_WRITES`] guest counter writes from the first write seen (so
/// the timing starts on a write); `None` if fewer came within `ceiling`.
pub(super) fn measure_writes(ram: &GuestRam, ceiling: Duration) -> Option<WriteRate> {
    let deadline = Instant::now() + ceiling;
    let start = ram.counter().ok()?;
    let (first, t0) = wait_counter(ram, |c| c != start, deadline)?;
    let (mut last, mut seen) = (first, t0);
    let mut longest_gap = Duration::ZERO;
    while last.wrapping_sub(first) < RATE_WRITES {
        let (c, t) = wait_counter(ram, |c| c != last, deadline)?;
        longest_gap = longest_gap.max(t - seen);
        (last, seen) = (c, t);
    }
    let writes = u32::try_from(last.wrapping_sub(first))
        .unwrap_or(u32::MAX)
        .max(1);
    Some(WriteRate {
        interval: (seen - t0) / writes,
        longest_gap,
    })
}

/// The counter and the time once `done` holds of it, polling; `None` at `deadline`.
fn wait_counter(
    ram: &GuestRam,
    done: impl Fn(u64) -> bool,
    deadline: Instant,
) -> Option<(u64, Instant)> {
    loop {
        let c = ram.counter().ok()?;
        let now = Instant::now();
        if done(c) {
            return Some((c, now));
        }
        if now >= deadline {
            return None;
        }
        std::thread::sleep(COUNTER_POLL.min(deadline - now));
    }
}

/// The counter at the end of a watch that began at `before`: it ends as soon
/// as the counter moves, or at `deadline` if the source (process `pid`) then
/// has no thread that could run. A source with a runnable thread may just
/// not have been given a CPU (a busy host): a still counter says nothing
/// yet, and the watch goes on, up to `ceiling`.
pub(super) fn watch_counter(
    ram: &GuestRam,
    before: u64,
    deadline: Instant,
    ceiling: Instant,
    pid: Option<i32>,
) -> Option<u64> {
    let mut until = deadline;
    loop {
        if let Some((c, _)) = wait_counter(ram, |c| c != before, until) {
            return Some(c);
        }
        let runnable = pid.and_then(procinfo::all_threads_blocked) == Some(false);
        if !runnable || Instant::now() >= ceiling {
            return ram.counter().ok();
        }
        until = (Instant::now() + STARVED_STEP).min(ceiling);
    }
}

/// How much longer the watch goes on each time it finds the source runnable.
const STARVED_STEP: Duration = Duration::from_millis(1);

/// The watch's bound from the measured rates: the time of
/// [`WATCH_WRITES`] counter writes, [`GAP_FACTOR`] times the longest still
/// spell seen, and the time of [`WATCH_REQUESTS`] device requests, whichever
/// is longest, never below [`WATCH_FLOOR`] nor above `ceiling` (a rate that
/// could not be measured gives the ceiling).
pub(super) fn bound(
    rate: Option<WriteRate>,
    request_interval: Option<Duration>,
    measured_io: bool,
    ceiling: Duration,
) -> WatchBound {
    let write_interval = rate.map(|r| r.interval);
    let writes = rate.map(|r| (r.interval * WATCH_WRITES).max(r.longest_gap * GAP_FACTOR));
    let requests = request_interval.map(|i| i * WATCH_REQUESTS);
    let unknown = write_interval.is_none() || (measured_io && request_interval.is_none());
    let derived = writes.max(requests).unwrap_or(ceiling);
    let bound = if unknown {
        ceiling
    } else {
        derived.clamp(WATCH_FLOOR.min(ceiling), ceiling)
    };
    WatchBound {
        bound,
        write_interval,
        longest_gap: rate.map(|r| r.longest_gap),
        writes: WATCH_WRITES,
        request_interval,
        requests: WATCH_REQUESTS,
    }
}

/// A step of the handover may take this many times the VMMs' start-up
/// (spawning both and the source's monitor answering).
pub(super) const STEP_FACTOR: u32 = 50;

/// The bound of one step of the handover (the answer to `migrate`, the
/// migration's end): [`STEP_FACTOR`] times the VMMs' measured start-up, at
/// least the case's settle bound (what a handover is given to settle) and
/// at most `ceiling` (the runner's migration bound). A VMM that starts in a
/// few milliseconds gets the settle bound; one that takes a tenth of a
/// second to start (QEMU under TCG) gets seconds, and so does any VMM on a
/// machine slowed down by load.
pub(super) fn step_bound(startup: Duration, settle: Duration, ceiling: Duration) -> Duration {
    (startup * STEP_FACTOR).clamp(settle.min(ceiling), ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CEILING: Duration = Duration::from_secs(1);
    const US: Duration = Duration::from_micros(1);

    fn steady(interval: Duration) -> Option<WriteRate> {
        Some(WriteRate {
            interval,
            longest_gap: interval,
        })
    }

    #[test]
    fn the_bound_is_the_time_of_the_writes_within_floor_and_ceiling() {
        // A guest writing every ~250 us: 50 writes, 12.5 ms.
        let b = bound(steady(250 * US), None, false, CEILING);
        assert_eq!(b.bound, 12500 * US);
        // A fast guest (QEMU under TCG, refvmm): the floor.
        assert_eq!(bound(steady(US), None, false, CEILING).bound, WATCH_FLOOR);
        // A slow one: 5 ms a write is 250 ms; 50 ms a write hits the ceiling.
        let slow = Duration::from_millis(5);
        assert_eq!(
            bound(steady(slow), None, false, CEILING).bound,
            Duration::from_millis(250)
        );
        assert_eq!(
            bound(steady(slow * 10), None, false, CEILING).bound,
            CEILING
        );
    }

    #[test]
    fn a_guest_that_writes_in_bursts_is_watched_for_its_longest_still_spell() {
        // Fast writes, but once still for 6 ms (its vCPU thread not run).
        let bursty = Some(WriteRate {
            interval: US,
            longest_gap: Duration::from_millis(6),
        });
        let b = bound(bursty, None, false, CEILING);
        assert_eq!(b.bound, Duration::from_millis(6) * GAP_FACTOR);
    }

    #[test]
    fn device_requests_lengthen_the_bound_and_an_unknown_rate_gives_the_ceiling() {
        let b = bound(
            steady(150 * US),
            Some(Duration::from_millis(1)),
            true,
            CEILING,
        );
        assert_eq!(b.bound, Duration::from_millis(8));
        assert_eq!(bound(None, None, false, CEILING).bound, CEILING);
        // A guest whose device I/O was looked for and not timed.
        assert_eq!(bound(steady(150 * US), None, true, CEILING).bound, CEILING);
    }

    #[test]
    fn a_step_takes_the_start_up_times_the_factor_within_settle_and_ceiling() {
        let (settle, ceiling) = (Duration::from_secs(1), Duration::from_secs(5));
        let ms = Duration::from_millis;
        // refvmm starts in a few ms: the settle bound.
        assert_eq!(step_bound(ms(4), settle, ceiling), settle);
        // A VMM that takes 60 ms to start: 3 s; 200 ms: the ceiling.
        assert_eq!(step_bound(ms(60), settle, ceiling), ms(3000));
        assert_eq!(step_bound(ms(200), settle, ceiling), ceiling);
        // A case whose settle bound is above the ceiling: the ceiling.
        assert_eq!(step_bound(ms(4), ms(8000), ceiling), ceiling);
    }
}
