//! How long the kit watches, while it holds the first fds, for a source that
//! still runs: not a fixed quiet period but a bound derived from the guest's
//! own rates, measured while it runs before the migrate (its counter writes in
//! the RAM memfd, its device I/O requests in the device's ledger). A watch ends
//! early once everything it watches for has been seen.
//!
//! The waits of a trial that are not derived from a measured rate, and why:
//! - the start-up bounds (`STARTUP`, the device's start and close waits) and
//!   the settle and migration bounds: each ends at the event it waits for
//!   (a socket listening, a monitor answer, a process exit, a ledger change),
//!   and is reached only by a VMM that never gets there;
//! - the device's settle (`wait_still` in `device.rs`): the daemon sees a VMM's
//!   close a moment after the VMM went on, and nothing announces that the
//!   last close has come; it waits for no change for a period derived from
//!   the device's measured request rate, ending at once when nothing is open;
//! - a main-stream fault's wait for a source that may have sent its whole
//!   stream (`holds.rs`): it ends at the source's report, at its exit, or once
//!   the source's monitor answers without its migration ended twice in a row
//!   while the held channel stays still, bounded by `SOURCE_DONE_WAIT`.

use std::time::{Duration, Instant};

use crate::guestmem::GuestRam;
use crate::record::WatchBound;

/// Guest counter writes the cut-over watch spans: a guest that still runs
/// writes this many times within the bound, so a counter still for that long
/// is a stopped guest.
pub(super) const WATCH_WRITES: u32 = 50;
/// Device I/O requests the cut-over watch spans, for a guest that does I/O.
pub(super) const WATCH_REQUESTS: u32 = 16;
/// Never shorter: below a scheduler tick or so, a running guest whose vCPU
/// thread is not scheduled on a busy host looks still.
pub(super) const WATCH_FLOOR: Duration = Duration::from_millis(5);
/// Counter writes timed to measure the guest's write rate.
const RATE_WRITES: u64 = 8;
/// Device requests timed to measure the guest's request rate.
pub(super) const RATE_REQUESTS: u32 = 3;
/// How often the counter is read while the kit waits for it to move (the
/// memfd has no change notification).
const COUNTER_POLL: Duration = Duration::from_micros(50);

/// The mean time between two guest counter writes, timed over
/// [`RATE_WRITES`] writes from the first write seen (so the timing starts on
/// a write); `None` if fewer came within `ceiling`.
pub(super) fn measure_writes(ram: &GuestRam, ceiling: Duration) -> Option<Duration> {
    let deadline = Instant::now() + ceiling;
    let start = ram.counter().ok()?;
    let (first, t0) = wait_counter(ram, |c| c != start, deadline)?;
    let (last, t1) = wait_counter(ram, |c| c.wrapping_sub(first) >= RATE_WRITES, deadline)?;
    let writes = u32::try_from(last.wrapping_sub(first))
        .unwrap_or(u32::MAX)
        .max(1);
    Some((t1 - t0) / writes)
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
/// as the counter moves, or at `deadline`.
pub(super) fn watch_counter(ram: &GuestRam, before: u64, deadline: Instant) -> Option<u64> {
    match wait_counter(ram, |c| c != before, deadline) {
        Some((c, _)) => Some(c),
        None => ram.counter().ok(),
    }
}

/// The watch's bound from the measured rates: the time of
/// [`WATCH_WRITES`] counter writes and of [`WATCH_REQUESTS`] device requests,
/// whichever is longer, never below [`WATCH_FLOOR`] nor above `ceiling` (a
/// rate that could not be measured gives the ceiling).
pub(super) fn bound(
    write_interval: Option<Duration>,
    request_interval: Option<Duration>,
    measured_io: bool,
    ceiling: Duration,
) -> WatchBound {
    let writes = write_interval.map(|i| i * WATCH_WRITES);
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
        writes: WATCH_WRITES,
        request_interval,
        requests: WATCH_REQUESTS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CEILING: Duration = Duration::from_secs(1);
    const US: Duration = Duration::from_micros(1);

    #[test]
    fn the_bound_is_the_time_of_the_writes_within_floor_and_ceiling() {
        // refvmm's guest: a write every ~150 us: 50 writes, 7.5 ms.
        let b = bound(Some(150 * US), None, false, CEILING);
        assert_eq!(b.bound, 7500 * US);
        // A fast guest (QEMU under TCG): the floor.
        assert_eq!(bound(Some(US), None, false, CEILING).bound, WATCH_FLOOR);
        // A slow one: 5 ms a write is 250 ms; 50 ms a write hits the ceiling.
        let slow = Duration::from_millis(5);
        assert_eq!(
            bound(Some(slow), None, false, CEILING).bound,
            Duration::from_millis(250)
        );
        assert_eq!(bound(Some(slow * 10), None, false, CEILING).bound, CEILING);
    }

    #[test]
    fn device_requests_lengthen_the_bound_and_an_unknown_rate_gives_the_ceiling() {
        let b = bound(
            Some(150 * US),
            Some(Duration::from_millis(1)),
            true,
            CEILING,
        );
        assert_eq!(b.bound, Duration::from_millis(16));
        assert_eq!(bound(None, None, false, CEILING).bound, CEILING);
        // A guest whose device I/O was looked for and not timed.
        assert_eq!(bound(Some(150 * US), None, true, CEILING).bound, CEILING);
    }
}
