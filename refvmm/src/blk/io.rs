//! The guest's block I/O: one thread, created once, that submits a request
//! about every 100 µs while the VM runs (write sector `n % 63 + 1`
//! stamped with `n`; every 8th request, read sector 0 and check its boot
//! signature) and parks otherwise. One request is in flight at most, and it
//! waits for its completion at most [`REQUEST_TIMEOUT`]. Stopping is
//! synchronous like the vCPU's: [`BlkIo::stop`] returns once the thread is
//! parked, so no request is in flight from then on. Failures are logged once
//! per kind (until a request succeeds again); the thread never wedges.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::frontend::RingFds;
use super::virtqueue::{Desc, SplitQueue, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE};
use crate::parkable::{Parkable, Turns};
use crate::ram::GuestRam;
use crate::{BLK_DATA_OFFSET, BLK_HDR_OFFSET, BLK_SECTOR_SIZE, BLK_SEQ_OFFSET, BLK_STATUS_OFFSET};

/// Bound on the wait for one request's completion.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause between two requests.
const REQUEST_PAUSE: Duration = Duration::from_micros(1000);
/// Bound on [`BlkIo::stop`]'s wait (a request in flight ends within
/// [`REQUEST_TIMEOUT`]; this only guards against a bug).
const STOP_BOUND: Duration = Duration::from_secs(2);
/// VIRTIO_BLK_T_IN (read).
const T_IN: u32 = 0;
/// VIRTIO_BLK_T_OUT (write).
const T_OUT: u32 = 1;

/// Handle on the I/O thread; its state is the started ring's eventfds,
/// `None` while the device is not ours.
#[derive(Debug)]
pub struct BlkIo {
    worker: Parkable<Option<Arc<RingFds>>>,
}

impl BlkIo {
    /// Spawns the I/O thread, parked, with no ring.
    pub fn new(ram: Arc<GuestRam>) -> Self {
        Self {
            worker: Parkable::spawn("blk-io", None, move |turns| io_loop(&turns, &ram)),
        }
    }

    /// Lets the I/O run (starting running I/O does nothing).
    pub fn start(&self) {
        self.worker.start();
    }

    /// Stops the I/O and returns once no request is in flight (bounded).
    pub fn stop(&self) {
        if !self.worker.stop(Some(STOP_BOUND)) {
            crate::log!("blk-io: did not park within {STOP_BOUND:?}");
        }
    }

    /// Whether the I/O is stopped (no request in flight).
    pub fn is_stopped(&self) -> bool {
        self.worker.is_stopped()
    }

    /// Sets the started ring, or `None` once the device is released.
    pub fn set_ring(&self, ring: Option<RingFds>) {
        self.worker.with(|r| *r = ring.map(Arc::new));
    }
}

fn io_loop(turns: &Turns<Option<Arc<RingFds>>>, ram: &GuestRam) {
    let mut failures = Failures::default();
    loop {
        let ring = turns.next().clone();
        // The request runs outside the lock; a stop waits for the next turn
        // of the loop, so at most one (bounded) request.
        match ring {
            Some(ring) => match request(ram, &ring) {
                Ok(()) => failures.ok(),
                Err(f) => failures.failed(f),
            },
            None => failures.failed(Failure::new("no ring", "the device is not ours")),
        }
        thread::sleep(REQUEST_PAUSE);
    }
}

/// A failed request: its kind (logged once) and details.
#[derive(Debug)]
struct Failure {
    kind: &'static str,
    detail: String,
}

impl Failure {
    fn new(kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }
}

/// The kinds of failure logged since the last success.
#[derive(Debug, Default)]
struct Failures {
    logged: BTreeSet<&'static str>,
    count: u64,
}

impl Failures {
    fn failed(&mut self, f: Failure) {
        self.count += 1;
        if self.logged.insert(f.kind) {
            crate::log!(
                "blk-io: request failed: {}: {} (logged once; carrying on)",
                f.kind,
                f.detail
            );
        }
    }

    fn ok(&mut self) {
        if self.count > 0 {
            crate::log!(
                "blk-io: requests complete again (after {} failed)",
                self.count
            );
        }
        self.logged.clear();
        self.count = 0;
    }
}

/// One request: the next number `n` from guest RAM, its chain (header, data,
/// status), the kick, the wait for its completion, and the checks.
fn request(ram: &GuestRam, ring: &RingFds) -> Result<(), Failure> {
    let q = SplitQueue::new(ram);
    let avail = q.avail_idx();
    if q.used_idx() != avail {
        // A request that timed out earlier is still the device's: its
        // descriptors cannot be reused yet.
        return Err(Failure::new(
            "earlier request still in flight",
            format!("used.idx {} behind avail.idx {avail}", q.used_idx()),
        ));
    }
    let n = ram.load_u64(BLK_SEQ_OFFSET).wrapping_add(1);
    ram.store_u64(BLK_SEQ_OFFSET, n);
    let read = n.is_multiple_of(8);
    let (kind, sector) = if read { (T_IN, 0) } else { (T_OUT, n % 63 + 1) };
    ram.store_u64(BLK_HDR_OFFSET, u64::from(kind));
    ram.store_u64(BLK_HDR_OFFSET + 8, sector);
    ram.store_u8(BLK_STATUS_OFFSET, 0xff);
    for w in (0..BLK_SECTOR_SIZE).step_by(8) {
        ram.store_u64(BLK_DATA_OFFSET + w, if read { 0 } else { n });
    }
    q.write_desc(
        0,
        Desc {
            addr: BLK_HDR_OFFSET as u64,
            len: 16,
            flags: VIRTQ_DESC_F_NEXT,
            next: 1,
        },
    );
    q.write_desc(
        1,
        Desc {
            addr: BLK_DATA_OFFSET as u64,
            len: BLK_SECTOR_SIZE as u32,
            flags: VIRTQ_DESC_F_NEXT | if read { VIRTQ_DESC_F_WRITE } else { 0 },
            next: 2,
        },
    );
    q.write_desc(
        2,
        Desc {
            addr: BLK_STATUS_OFFSET as u64,
            len: 1,
            flags: VIRTQ_DESC_F_WRITE,
            next: 0,
        },
    );
    let want = q.publish(0);
    ring.kick
        .write(1)
        .map_err(|e| Failure::new("kick", e.to_string()))?;
    wait_used(&q, ring, want)?;
    let used = q.used_elem(want.wrapping_sub(1));
    if used.id != 0 {
        return Err(Failure::new(
            "bad used element",
            format!("id {} (the chain was 0)", used.id),
        ));
    }
    let status = ram.load_u8(BLK_STATUS_OFFSET);
    if status != 0 {
        let what = if read { "read" } else { "write" };
        return Err(Failure::new(
            "status",
            format!("{what} of sector {sector}: status {status}"),
        ));
    }
    if read {
        let sig = ram.load_u16(BLK_DATA_OFFSET + 510);
        if sig != 0xAA55 {
            return Err(Failure::new(
                "boot signature",
                format!("sector 0 ends with {sig:#06x}, not 0x55 0xAA"),
            ));
        }
    }
    Ok(())
}

/// Waits, at most [`REQUEST_TIMEOUT`], for `used.idx` to reach `want`,
/// sleeping on the call eventfd.
fn wait_used(q: &SplitQueue<'_>, ring: &RingFds, want: u16) -> Result<(), Failure> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    loop {
        if q.used_idx() == want {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::new(
                "timeout",
                format!(
                    "no completion within {REQUEST_TIMEOUT:?} (used.idx {}, want {want})",
                    q.used_idx()
                ),
            ));
        }
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        // SAFETY: the eventfd outlives this borrow (`ring` holds it).
        let call = unsafe { BorrowedFd::borrow_raw(ring.call.as_raw_fd()) };
        let mut fds = [PollFd::new(call, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Failure::new("poll", e.to_string())),
        }
        // Drain the call (non-blocking; nothing to read is fine).
        let _ = ring.call.read();
    }
}
