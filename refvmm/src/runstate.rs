//! The VM runstates, with QEMU's names.

use std::fmt;

/// A VM runstate (the subset of QEMU's that refvmm uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Started with `-S`, never run.
    Prelaunch,
    Running,
    Paused,
    /// A target before it has loaded the incoming state.
    InMigrate,
    /// A source stopped for migration.
    FinishMigrate,
    /// A source after a completed migration.
    PostMigrate,
}

impl RunState {
    /// QEMU's name for the runstate.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prelaunch => "prelaunch",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::InMigrate => "inmigrate",
            Self::FinishMigrate => "finish-migrate",
            Self::PostMigrate => "postmigrate",
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
