//! The steps of a cpr-transfer handover, in the contract's order, and their
//! stable names.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A step of cpr-transfer, in the order a correct VMM takes them
/// (docs/contract.md, "Steps").
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

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
