//! The vCPU: one thread, created once, that runs the guest workload while the
//! VM runs (`r += 1`, write record `r`, write the counter, sleep ~100 µs) and
//! parks otherwise. Stopping is synchronous: [`Vcpu::stop`] returns once the
//! thread has acknowledged it is parked, and no guest write follows.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use crate::ram::GuestRam;

/// Pause between two guest steps.
const STEP_PAUSE: Duration = Duration::from_micros(100);

#[derive(Debug)]
struct Ctl {
    /// The VM wants the vCPU to run.
    run: bool,
    /// The thread is parked (acknowledges `run == false`).
    parked: bool,
    /// The register; the guest step updates it under the lock.
    r: u64,
}

#[derive(Debug)]
struct Shared {
    ctl: Mutex<Ctl>,
    cv: Condvar,
}

/// Handle on the vCPU thread.
#[derive(Debug)]
pub struct Vcpu {
    shared: Arc<Shared>,
}

impl Vcpu {
    /// Spawns the vCPU thread, parked, with register `r`.
    pub fn new(ram: Arc<GuestRam>, r: u64) -> Self {
        let shared = Arc::new(Shared {
            ctl: Mutex::new(Ctl {
                run: false,
                parked: false,
                r,
            }),
            cv: Condvar::new(),
        });
        let s = Arc::clone(&shared);
        thread::Builder::new()
            .name("vcpu0".into())
            .spawn(move || vcpu_loop(&s, &ram))
            .expect("spawn the vCPU thread");
        Self { shared }
    }

    fn lock(&self) -> MutexGuard<'_, Ctl> {
        self.shared.ctl.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets the vCPU run. Starting a running vCPU does nothing (there is only
    /// ever one vCPU thread).
    pub fn start(&self) {
        let mut ctl = self.lock();
        ctl.run = true;
        self.shared.cv.notify_all();
    }

    /// Stops the vCPU and returns once it is parked.
    pub fn stop(&self) {
        let mut ctl = self.lock();
        ctl.run = false;
        self.shared.cv.notify_all();
        while !ctl.parked {
            ctl = self.shared.cv.wait(ctl).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The register (stable only while the vCPU is stopped).
    pub fn r(&self) -> u64 {
        self.lock().r
    }

    /// Loads the register (a target loading device state; the vCPU is stopped).
    pub fn set_r(&self, r: u64) {
        self.lock().r = r;
    }
}

fn vcpu_loop(shared: &Shared, ram: &GuestRam) {
    loop {
        {
            let mut ctl = shared.ctl.lock().unwrap_or_else(|p| p.into_inner());
            while !ctl.run {
                if !ctl.parked {
                    ctl.parked = true;
                    shared.cv.notify_all();
                }
                ctl = shared.cv.wait(ctl).unwrap_or_else(|p| p.into_inner());
            }
            ctl.parked = false;
            // The guest step runs under the lock, so a stop never sees it
            // half done and nothing is written once `run` is false.
            ctl.r = ctl.r.wrapping_add(1);
            ram.write_record(ctl.r);
        }
        thread::sleep(STEP_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_is_synchronous_and_r_continues() {
        let ram = Arc::new(GuestRam::new_memfd(crate::MIN_RAM_SIZE).unwrap());
        let vcpu = Vcpu::new(Arc::clone(&ram), 41);
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
