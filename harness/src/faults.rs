//! The fault kinds, and everything each one means to a trial in one place:
//! its name, the steps it can be injected at (planning), how the kit injects
//! it ([`Injection`]: a kill, a hang, a cancel, an act of the interposer on the
//! held message, a malformed request, or an act of the device daemon armed
//! before the migrate command), and what the device daemon is armed with
//! ([`device_fault`]). Every match on a fault kind here is exhaustive: a new
//! kind is added here, with its tests, and the compiler names each decision
//! it still needs.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::steps::Step;
use cprkit_device::fault::{DeviceFault, DeviceFaultKind, Trigger};

/// A malformed migrate request (rule ERR-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BadRequest {
    /// A `channels` list with only a cpr entry.
    NoMainChannel,
    /// A cpr channel whose address is not a UNIX socket.
    NonUnixCpr,
    /// The source's guest RAM is not shared (not in a memfd).
    PrivateRam,
}

impl BadRequest {
    pub const ALL: [BadRequest; 3] = [
        BadRequest::NoMainChannel,
        BadRequest::NonUnixCpr,
        BadRequest::PrivateRam,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BadRequest::NoMainChannel => "no-main-channel",
            BadRequest::NonUnixCpr => "non-unix-cpr",
            BadRequest::PrivateRam => "private-ram",
        }
    }
}

/// A fault kind of the contract: the memory profile's, and the device faults
/// of the profiles with a vhost device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Fault {
    /// SIGKILL to the target.
    KillTarget,
    /// SIGKILL to the source.
    KillSource,
    /// SIGSTOP to the target; the kit then cancels on the source and continues the target.
    HangTarget,
    /// The VMM's own cancel (QMP `migrate_cancel`).
    Cancel,
    /// The interposer closes the cpr channel.
    CprClose,
    /// The interposer forwards the cpr bytes but not the fds.
    CprDropFds,
    /// The interposer closes the main channel.
    MainClose,
    /// The interposer flips the bytes of the held main-channel message.
    MainCorrupt,
    /// A malformed migrate request.
    BadRequest(BadRequest),
    /// The kit's device refuses the target's take-over (SET_OWNER) as busy.
    DeviceBusy,
    /// The kit's device refuses the source's release (its first ring stop or RESET_OWNER).
    DeviceReleaseFail,
    /// The kit's device drops the connection at the message (the source's release, the target's take-over).
    DeviceDisconnect,
    /// The kit's device answers that message late (DEVICE_DELAY).
    DeviceDelay,
}

/// How late a `device-delay` answers.
pub const DEVICE_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

impl Fault {
    /// Every fault kind (bad-request once per variant).
    pub fn all() -> Vec<Fault> {
        let mut v = vec![
            Fault::KillTarget,
            Fault::KillSource,
            Fault::HangTarget,
            Fault::Cancel,
            Fault::CprClose,
            Fault::CprDropFds,
            Fault::MainClose,
            Fault::MainCorrupt,
        ];
        v.extend(BadRequest::ALL.map(Fault::BadRequest));
        v.extend(Fault::DEVICE);
        v
    }

    /// The faults of the kit's vhost device.
    pub const DEVICE: [Fault; 4] = [
        Fault::DeviceBusy,
        Fault::DeviceReleaseFail,
        Fault::DeviceDisconnect,
        Fault::DeviceDelay,
    ];

    /// The steps at which this fault can be injected at an exact point.
    ///
    /// A point is where the kit holds something: the target listening before
    /// `migrate` (target-listen), the migrate request itself (source-stop), the
    /// first fd-carrying message on the cpr channel (cpr-save), the target's close
    /// of the cpr channel (target-init), the first source-to-target bytes on the
    /// main channel (main-stream), the first target-to-source bytes on the main
    /// channel (target-resume).
    pub fn steps(self) -> &'static [Step] {
        use Step::*;
        match self {
            Fault::KillTarget => &[TargetListen, CprSave, TargetInit, MainStream, TargetResume],
            Fault::KillSource => &[CprSave, TargetInit, MainStream, TargetResume],
            Fault::HangTarget => &[TargetListen, CprSave, TargetInit, MainStream, TargetResume],
            Fault::Cancel => &[CprSave, TargetInit, MainStream, TargetResume],
            Fault::CprClose => &[CprSave],
            Fault::CprDropFds => &[CprSave],
            Fault::MainClose => &[MainStream, TargetResume],
            Fault::MainCorrupt => &[MainStream, TargetResume],
            Fault::BadRequest(_) => &[SourceStop],
            Fault::DeviceBusy => &[TargetInit],
            Fault::DeviceReleaseFail => &[ReleaseOwner],
            Fault::DeviceDisconnect | Fault::DeviceDelay => &[ReleaseOwner, TargetInit],
        }
    }

    pub fn name(self) -> String {
        match self {
            Fault::KillTarget => "kill-target".into(),
            Fault::KillSource => "kill-source".into(),
            Fault::HangTarget => "hang-target".into(),
            Fault::Cancel => "cancel".into(),
            Fault::CprClose => "cpr-close".into(),
            Fault::CprDropFds => "cpr-drop-fds".into(),
            Fault::MainClose => "main-close".into(),
            Fault::MainCorrupt => "main-corrupt".into(),
            Fault::BadRequest(b) => format!("bad-request:{}", b.name()),
            Fault::DeviceBusy => "device-busy".into(),
            Fault::DeviceReleaseFail => "device-release-fail".into(),
            Fault::DeviceDisconnect => "device-disconnect".into(),
            Fault::DeviceDelay => "device-delay".into(),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Which VMM an injection acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Victim {
    Source,
    Target,
}

/// What the interposer does to the message it holds at the fault's point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelAct {
    /// Close the channel both ways; the held message is not forwarded.
    Close,
    /// Forward the bytes, close the fds.
    DropFds,
    /// Flip every byte of the held message, then forward it.
    Corrupt,
}

/// How the kit injects a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injection {
    /// SIGKILL to a VMM at the point (a killed sender never sent the held message).
    Kill(Victim),
    /// SIGSTOP to the target; the kit then cancels on the source (at the next
    /// hold when the target was frozen before the migrate command) and
    /// continues the target.
    HangTarget,
    /// The VMM's own cancel on the source.
    Cancel,
    /// The interposer acts on the held message.
    Channel(ChannelAct),
    /// The migrate request itself is malformed.
    Request(BadRequest),
    /// The kit's device daemon, armed before the migrate command, acts on the
    /// message of the point's step ([`device_fault`]).
    Device(DeviceFaultKind),
}

impl Fault {
    /// How the kit injects this fault.
    pub fn injection(self) -> Injection {
        match self {
            Fault::KillTarget => Injection::Kill(Victim::Target),
            Fault::KillSource => Injection::Kill(Victim::Source),
            Fault::HangTarget => Injection::HangTarget,
            Fault::Cancel => Injection::Cancel,
            Fault::CprClose | Fault::MainClose => Injection::Channel(ChannelAct::Close),
            Fault::CprDropFds => Injection::Channel(ChannelAct::DropFds),
            Fault::MainCorrupt => Injection::Channel(ChannelAct::Corrupt),
            Fault::BadRequest(b) => Injection::Request(b),
            Fault::DeviceBusy => Injection::Device(DeviceFaultKind::Busy),
            Fault::DeviceReleaseFail => Injection::Device(DeviceFaultKind::ReleaseFail),
            Fault::DeviceDisconnect => Injection::Device(DeviceFaultKind::Disconnect),
            Fault::DeviceDelay => Injection::Device(DeviceFaultKind::Delay),
        }
    }

    /// Whether the fault is injected by the kit's vhost device (a profile with a device only).
    pub fn needs_device(self) -> bool {
        matches!(self.injection(), Injection::Device(_))
    }
}

/// What a correct VMM's handover must end with, given the trial's fault
/// point: the table DONE-0 judges (docs/contract.md, "The handover happens").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// The fault is harmless (or there is none): the transfer completes.
    Completes,
    /// The transfer fails or is cancelled. With `refusal`, a VMM may also
    /// refuse the migrate command itself (its target was gone before it came).
    Fails { refusal: bool },
    /// Either end is correct (the source is killed, or the device's act may
    /// be recovered from); other rules judge what it leaves behind.
    Either,
    /// The migrate request is malformed: it must be refused (ERR-1).
    Refused,
}

/// The end a correct VMM reaches with `fault` at `step`; `None` is the
/// fault-free handover.
pub fn expected_end(point: Option<(Fault, Step)>) -> Expected {
    let Some((fault, step)) = point else {
        return Expected::Completes;
    };
    match fault {
        Fault::DeviceDelay => Expected::Completes,
        Fault::KillTarget | Fault::HangTarget => Expected::Fails {
            refusal: step == Step::TargetListen,
        },
        Fault::Cancel
        | Fault::CprClose
        | Fault::CprDropFds
        | Fault::MainClose
        | Fault::MainCorrupt
        | Fault::DeviceBusy => Expected::Fails { refusal: false },
        Fault::KillSource | Fault::DeviceReleaseFail | Fault::DeviceDisconnect => Expected::Either,
        Fault::BadRequest(_) => Expected::Refused,
    }
}

/// The end a correct VMM reaches under a schedule: its first fault's
/// ([`expected_end`]), combined with each later fault that was injected (a
/// fault the handover never got to changes nothing). A fault that must fail
/// the transfer fails it whatever came before; a refusal is allowed if any
/// fault allows it; a fault that allows either end makes a harmless
/// schedule allow either.
pub fn expected_end_of(
    first: Option<(Fault, Step)>,
    later_injected: impl IntoIterator<Item = (Fault, Step)>,
) -> Expected {
    later_injected
        .into_iter()
        .fold(expected_end(first), |acc, p| {
            combine(acc, expected_end(Some(p)))
        })
}

fn combine(a: Expected, b: Expected) -> Expected {
    use Expected::*;
    match (a, b) {
        (Refused, _) | (_, Refused) => Refused,
        (Fails { refusal: r1 }, Fails { refusal: r2 }) => Fails { refusal: r1 || r2 },
        (Fails { refusal }, _) | (_, Fails { refusal }) => Fails { refusal },
        (Either, _) | (_, Either) => Either,
        (Completes, Completes) => Completes,
    }
}

/// Which process's which message a device fault at `step` acts on: the
/// source's release at release-owner, the target's take-over at target-init;
/// `None` at a step with no device message (never planned for a device fault:
/// see [`Fault::steps`]).
fn device_trigger(step: Step) -> Option<(Victim, Trigger)> {
    match step {
        Step::ReleaseOwner => Some((Victim::Source, Trigger::Release)),
        Step::TargetInit => Some((Victim::Target, Trigger::Take)),
        Step::TargetListen
        | Step::SourceStop
        | Step::CprSave
        | Step::MainStream
        | Step::TargetResume
        | Step::SourceFinish
        | Step::Cleanup => None,
    }
}

/// What the device daemon is armed with for a device fault at `step`, given
/// the pids; `None` for a fault the device does not inject.
pub fn device_fault(fault: Fault, step: Step, source: i32, target: i32) -> Option<DeviceFault> {
    device_fault_delayed(fault, step, source, target, DEVICE_DELAY)
}

/// [`device_fault`] with a `device-delay` of `delay` (a fuzzed schedule's).
pub fn device_fault_delayed(
    fault: Fault,
    step: Step,
    source: i32,
    target: i32,
    delay: std::time::Duration,
) -> Option<DeviceFault> {
    let Injection::Device(kind) = fault.injection() else {
        return None;
    };
    let (victim, on) = device_trigger(step)?;
    let pid = match victim {
        Victim::Source => source,
        Victim::Target => target,
    };
    let delay_ms = match kind {
        DeviceFaultKind::Delay => delay.as_millis() as u64,
        DeviceFaultKind::Busy | DeviceFaultKind::ReleaseFail | DeviceFaultKind::Disconnect => 0,
    };
    Some(DeviceFault {
        kind,
        pid,
        on,
        delay_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::FaultPoint;

    #[test]
    fn every_device_fault_point_arms_the_device() {
        for p in FaultPoint::matrix(true) {
            let armed = device_fault(p.fault, p.step, 10, 20);
            assert_eq!(armed.is_some(), p.fault.needs_device(), "{p}");
            if let Some(f) = armed {
                let want = if p.step == Step::ReleaseOwner { 10 } else { 20 };
                assert_eq!(f.pid, want, "{p}");
            }
        }
    }

    #[test]
    fn only_a_harmless_fault_expects_a_completed_handover() {
        assert_eq!(expected_end(None), Expected::Completes);
        for p in FaultPoint::matrix(true) {
            let e = expected_end(Some((p.fault, p.step)));
            assert_eq!(
                e == Expected::Completes,
                p.fault == Fault::DeviceDelay,
                "{p}: {e:?}"
            );
        }
        assert_eq!(
            expected_end(Some((Fault::KillTarget, Step::TargetListen))),
            Expected::Fails { refusal: true }
        );
        assert_eq!(
            expected_end(Some((Fault::KillTarget, Step::CprSave))),
            Expected::Fails { refusal: false }
        );
    }

    #[test]
    fn a_schedules_end_combines_its_injected_faults() {
        use Step::*;
        let single = expected_end_of(Some((Fault::DeviceDelay, TargetInit)), []);
        assert_eq!(single, Expected::Completes);
        assert_eq!(
            expected_end_of(
                Some((Fault::DeviceDelay, ReleaseOwner)),
                [(Fault::Cancel, TargetInit)]
            ),
            Expected::Fails { refusal: false }
        );
        assert_eq!(
            expected_end_of(
                Some((Fault::DeviceReleaseFail, ReleaseOwner)),
                [(Fault::DeviceDelay, TargetInit)]
            ),
            Expected::Either
        );
        assert_eq!(
            expected_end_of(
                Some((Fault::KillTarget, TargetListen)),
                [(Fault::DeviceDisconnect, ReleaseOwner)]
            ),
            Expected::Fails { refusal: true }
        );
        for p in FaultPoint::matrix(true) {
            assert_eq!(
                expected_end_of(Some((p.fault, p.step)), []),
                expected_end(Some((p.fault, p.step))),
                "{p}"
            );
        }
    }

    #[test]
    fn only_a_delay_waits() {
        let delay = FaultPoint::new(Fault::DeviceDelay, Step::TargetInit).unwrap();
        assert_eq!(
            device_fault(delay.fault, delay.step, 1, 2)
                .unwrap()
                .delay_ms,
            200
        );
        let busy = FaultPoint::new(Fault::DeviceBusy, Step::TargetInit).unwrap();
        assert_eq!(
            device_fault(busy.fault, busy.step, 1, 2).unwrap().delay_ms,
            0
        );
    }
}
