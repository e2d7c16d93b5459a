//! A trial's device fault point as the device daemon is armed with it: which
//! kind, aimed at which process, on which of its messages.

use super::{DeviceFault, DeviceFaultKind, Trigger};
use crate::plan::{DEVICE_DELAY, Fault, FaultPoint, Step};

/// What the daemon is told to do for a device fault point, given the pids.
pub fn fault_for(point: FaultPoint, source: i32, target: i32) -> Option<DeviceFault> {
    let kind = match point.fault {
        Fault::DeviceBusy => DeviceFaultKind::Busy,
        Fault::DeviceReleaseFail => DeviceFaultKind::ReleaseFail,
        Fault::DeviceDisconnect => DeviceFaultKind::Disconnect,
        Fault::DeviceDelay => DeviceFaultKind::Delay,
        _ => return None,
    };
    let (pid, on) = match point.step {
        Step::ReleaseOwner => (source, Trigger::Release),
        Step::TargetInit => (target, Trigger::Take),
        _ => return None,
    };
    Some(DeviceFault {
        kind,
        pid,
        on,
        delay_ms: if kind == DeviceFaultKind::Delay {
            DEVICE_DELAY.as_millis() as u64
        } else {
            0
        },
    })
}
