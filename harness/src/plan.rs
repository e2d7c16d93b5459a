//! The vocabulary of a trial plan: the contract's steps, the fault kinds, and
//! where a fault can be injected (a fault point is a fault at a step).
//!
//! Names here are the stable spellings used in case files, trial names and
//! reports (`kill-target@cpr-save`), so they are parsed and printed in one place.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A step of cpr-transfer, in the order a correct VMM takes them (CONTRACT.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// The target is started with a cpr channel and waits for the CPR state.
    TargetListen,
    /// The source VM is stopped (runstate `finish-migrate`).
    SourceStop,
    /// The source gives up every vhost device.
    ReleaseOwner,
    /// CPR state and fds cross the cpr channel: the cut-over point.
    CprSave,
    /// The target maps the passed fds and creates its devices.
    TargetInit,
    /// Device state on the main channel.
    MainStream,
    /// The target VM runs.
    TargetResume,
    /// The source reaches `postmigrate`.
    SourceFinish,
    /// Failure path: the source goes back to its prior runstate.
    Cleanup,
}

impl Step {
    pub const ALL: [Step; 9] = [
        Step::TargetListen,
        Step::SourceStop,
        Step::ReleaseOwner,
        Step::CprSave,
        Step::TargetInit,
        Step::MainStream,
        Step::TargetResume,
        Step::SourceFinish,
        Step::Cleanup,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::TargetListen => "target-listen",
            Step::SourceStop => "source-stop",
            Step::ReleaseOwner => "release-owner",
            Step::CprSave => "cpr-save",
            Step::TargetInit => "target-init",
            Step::MainStream => "main-stream",
            Step::TargetResume => "target-resume",
            Step::SourceFinish => "source-finish",
            Step::Cleanup => "cleanup",
        }
    }
}

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

    /// Whether the fault is injected by the kit's vhost device (a profile with a device only).
    pub fn needs_device(self) -> bool {
        Fault::DEVICE.contains(&self)
    }

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

/// Where a trial injects its fault; `None` in a [`Trial`](crate::trial) means a
/// fault-free handover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FaultPoint {
    pub fault: Fault,
    pub step: Step,
}

impl fmt::Display for FaultPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.fault.name(), self.step.name())
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Why a name is not a step, a fault or a fault point; lists what would be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanParseError {
    #[error("unknown step `{0}` (known: {known})", known = Step::ALL.map(Step::name).join(", "))]
    UnknownStep(String),
    #[error("unknown fault `{0}` (known: {known})", known = Fault::all().iter().map(|f| f.name()).collect::<Vec<_>>().join(", "))]
    UnknownFault(String),
    #[error("fault `{fault}` cannot be injected at step `{step}` (it can at: {known})",
        known = fault.steps().iter().map(|s| s.name()).collect::<Vec<_>>().join(", "))]
    NotAtStep { fault: Fault, step: Step },
    #[error("`{0}` is not a fault point: write FAULT@STEP, e.g. kill-target@cpr-save")]
    NoAt(String),
}

impl FromStr for Step {
    type Err = PlanParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Step::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| PlanParseError::UnknownStep(s.into()))
    }
}

impl FromStr for Fault {
    type Err = PlanParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fault::all()
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| PlanParseError::UnknownFault(s.into()))
    }
}

impl FaultPoint {
    /// A fault point, checked: the fault must be injectable at that step.
    pub fn new(fault: Fault, step: Step) -> Result<Self, PlanParseError> {
        if fault.steps().contains(&step) {
            Ok(FaultPoint { fault, step })
        } else {
            Err(PlanParseError::NotAtStep { fault, step })
        }
    }

    /// Every point of every fault of the memory profile (no device fault).
    pub fn all() -> Vec<FaultPoint> {
        Self::matrix(false)
    }

    /// Every point of every fault; the device faults' too with `device`.
    pub fn matrix(device: bool) -> Vec<FaultPoint> {
        Fault::all()
            .into_iter()
            .filter(|f| device || !f.needs_device())
            .flat_map(|fault| {
                fault
                    .steps()
                    .iter()
                    .map(move |&step| FaultPoint { fault, step })
            })
            .collect()
    }
}

impl FromStr for FaultPoint {
    type Err = PlanParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (f, st) = s
            .split_once('@')
            .ok_or_else(|| PlanParseError::NoAt(s.into()))?;
        FaultPoint::new(f.parse()?, st.parse()?)
    }
}

/// The state the guest is in when the migrate command comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuestState {
    Running,
    Paused,
}

impl GuestState {
    /// The QEMU runstate name of this state.
    pub fn runstate(self) -> &'static str {
        match self {
            GuestState::Running => "running",
            GuestState::Paused => "paused",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn every_point_round_trips_through_its_name() {
        for p in FaultPoint::all() {
            assert_eq!(p.to_string().parse::<FaultPoint>().unwrap(), p);
        }
    }

    #[rstest]
    #[case("kill-target@nowhere", PlanParseError::UnknownStep("nowhere".into()))]
    #[case("explode@cpr-save", PlanParseError::UnknownFault("explode".into()))]
    #[case("cpr-close@main-stream", PlanParseError::NotAtStep { fault: Fault::CprClose, step: Step::MainStream })]
    #[case("kill-target", PlanParseError::NoAt("kill-target".into()))]
    fn bad_points_are_refused(#[case] text: &str, #[case] want: PlanParseError) {
        assert_eq!(text.parse::<FaultPoint>().unwrap_err(), want);
    }

    #[test]
    fn the_memory_matrix_has_every_fault_somewhere() {
        let all = FaultPoint::all();
        for f in Fault::all().into_iter().filter(|f| !f.needs_device()) {
            assert!(all.iter().any(|p| p.fault == f), "{f} has no point");
        }
        assert_eq!(all.len(), 27);
    }

    #[test]
    fn the_device_matrix_adds_six_device_points() {
        let all = FaultPoint::matrix(true);
        assert_eq!(all.len(), 33);
        let device: Vec<String> = all
            .iter()
            .filter(|p| p.fault.needs_device())
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            device,
            [
                "device-busy@target-init",
                "device-release-fail@release-owner",
                "device-disconnect@release-owner",
                "device-disconnect@target-init",
                "device-delay@release-owner",
                "device-delay@target-init",
            ]
        );
    }
}
