//! The vCPU: one thread, created once, that runs the guest workload while the
//! VM runs (`r += 1`, write record `r`, write the counter, sleep ~20 µs, or
//! the step `--guest-step-us` asks for) and
//! parks otherwise. Stopping is synchronous: [`Vcpu::stop`] returns once the
//! thread has acknowledged it is parked, and no guest write follows.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::parkable::{Parkable, Turns};
use crate::ram::GuestRam;

/// Pause between two guest steps, unless `--guest-step-us` says otherwise.
/// Short, like a real vCPU's pace: the kit watches a still counter for the
/// time of a number of writes, so a guest that writes often is judged soon.
pub const STEP_PAUSE: Duration = Duration::from_micros(100);

/// Handle on the vCPU thread; its state is the register.
#[derive(Debug)]
pub struct Vcpu {
    worker: Parkable<u64>,
}

impl Vcpu {
    /// Spawns the vCPU thread, parked, with register `r`, pausing `step`
    /// between two guest steps.
    pub fn new(ram: Arc<GuestRam>, r: u64, step: Duration) -> Self {
        Self {
            worker: Parkable::spawn("vcpu0", r, move |turns| vcpu_loop(&turns, &ram, step)),
        }
    }

    /// Lets the vCPU run. Starting a running vCPU does nothing (there is only
    /// ever one vCPU thread).
    pub fn start(&self) {
        self.worker.start();
    }

    /// Stops the vCPU and returns once it is parked.
    pub fn stop(&self) {
        self.worker.stop(None);
    }

    /// The register (stable only while the vCPU is stopped).
    pub fn r(&self) -> u64 {
        self.worker.with(|r| *r)
    }

    /// Loads the register (a target loading device state; the vCPU is stopped).
    pub fn set_r(&self, r: u64) {
        self.worker.with(|reg| *reg = r);
    }
}

fn vcpu_loop(turns: &Turns<u64>, ram: &GuestRam, step: Duration) {
    loop {
        {
            // The guest step runs in the locked part of the turn, so a stop
            // never sees it half done and nothing is written once it returned.
            let mut r = turns.next();
            *r = r.wrapping_add(1);
            ram.write_record(*r);
        }
        thread::sleep(step);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_is_synchronous_and_r_continues() {
        let ram = Arc::new(GuestRam::new_memfd(crate::MIN_RAM_SIZE).unwrap());
        let vcpu = Vcpu::new(Arc::clone(&ram), 41, STEP_PAUSE);
        vcpu.stop();
        assert_eq!(ram.counter(), 0);
        vcpu.start();
        vcpu.start();
        thread::sleep(Duration::from_millis(20));
        vcpu.stop();
        let c = ram.counter();
        assert!(c > 41);
        assert_eq!(vcpu.r(), c);
        thread::sleep(Duration::from_millis(10));
        assert_eq!(ram.counter(), c, "no guest write after stop");
    }
}
