//! The vocabulary of a trial plan: where a fault is injected (a fault point is
//! a fault at a step) and the guest's state, with the parsing of every name of
//! the plan. The steps themselves are [`crate::steps`], the fault kinds and how
//! each is injected [`crate::faults`]; both are named here too, as one
//! vocabulary.
//!
//! Names are the stable spellings used in case files, trial names and
//! reports (`kill-target@cpr-save`), so they are parsed and printed in one place.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use crate::faults::{BadRequest, DEVICE_DELAY, Fault};
pub use crate::steps::Step;

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
    /// Started stopped and never run (QEMU `-S`).
    Prelaunch,
}

impl GuestState {
    /// The QEMU runstate name of this state.
    pub fn runstate(self) -> &'static str {
        match self {
            GuestState::Running => "running",
            GuestState::Paused => "paused",
            GuestState::Prelaunch => "prelaunch",
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
