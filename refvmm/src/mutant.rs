//! The named mutants: real bugs a VMM could have, switched on with
//! `--mutant NAME`. The kit must catch each one by observation only.

use std::fmt;

/// One bug refvmm can be told to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutant {
    /// Source: cpr-save before source-stop (stock QEMU 10.0's order).
    LegacyStopOrder,
    /// Source: never resumes after a failed or cancelled transfer.
    NoResumeOnFailure,
    /// Source: resumes twice after a failed or cancelled transfer.
    DoubleResume,
    /// Source: resumes to running after a failure even when it was paused.
    ResumeWhenPaused,
    /// Source: takes any end of its wait for `loaded` (a closed main channel,
    /// garbage) as `loaded`, and reports completion.
    FalseCompletion,
    /// Target: runs as soon as it has loaded the state, without waiting for `go`.
    SplitBrainAfterCancel,
    /// Target: copies guest RAM into a memfd of its own instead of mapping the
    /// passed one.
    CopyRam,
    /// Target: always resumes to running, even when the source was paused.
    TargetIgnoresPaused,
    /// Source (vhost-user-blk): skips release-owner: its ring keeps running,
    /// no GET_VRING_BASE, no RESET_OWNER; the base it sends is its driver's
    /// ring index.
    NeverReleaseOwner,
    /// Source (vhost-user-blk): after a failed transfer, resumes without
    /// taking the device back.
    NoReacquireAfterFailure,
    /// Source (vhost-user-blk): source-stop stops the vCPU only; the guest's
    /// I/O goes on through cpr-save and is stopped (and the device released)
    /// only once the target closed the cpr channel.
    IoAfterCutover,
    /// Target (vhost-user-blk): starts its ring as soon as it loaded the
    /// device state, before the source's `go`.
    RingBeforeGo,
    /// Source: answers every valid `migrate` with an error ("cpr-transfer is
    /// not supported") and does nothing else; malformed requests are refused
    /// as before.
    RefuseMigrate,
    /// Source: dies by SIGABRT (`abort()`, no core file) on every valid
    /// `migrate`, before answering or sending anything.
    CrashOnMigrate,
    /// Source: a valid `migrate` hangs the monitor with the VM state lock
    /// held (a hung main loop): no reply to it or to any later command, no
    /// greeting for a new client; the guest runs on, nothing is sent.
    HangOnMigrate,
    /// Source: accepts `migrate` and stops the VM as usual, then stays in
    /// `setup`: connects nothing, sends nothing, until a `migrate_cancel`
    /// (whose cleanup is the correct one).
    StallInSetup,
    /// Source: never leaves the stop of a migrate that does not complete: a
    /// refused request (bad channels, private RAM) stops the VM
    /// (`finish-migrate`) before the refusal, and a failed or cancelled
    /// transfer does not resume.
    FrozenAfterRefusal,
    /// Source: exits with status 0 as soon as the target has the CPR state and
    /// the RAM memfd (its HUP on the cpr channel); no main stream, the target
    /// never loads the device state.
    ExitAfterCutOver,
    /// Source: reports `completed` (and goes `postmigrate`) without
    /// connecting either channel: nothing reaches the target.
    CompleteWithoutTransfer,
    /// Source (vhost-user-blk): when its device answered the release late
    /// (at least [`SLOW_RELEASE`]), it forgets it had released it: a transfer
    /// that then fails or is cancelled resumes without taking the device
    /// back. Neither fault alone shows it (a late answer alone completes; a
    /// failure after a prompt release takes the device back): it needs two.
    SlowReleaseForgetsDevice,
}

/// How late a release answer must be for slow-release-forgets-device.
pub const SLOW_RELEASE: std::time::Duration = std::time::Duration::from_millis(100);

/// Every mutant: `(name, one-line description)`, in the order `--list-mutants`
/// prints them.
pub const MUTANTS: &[(&str, &str)] = &[
    (
        "legacy-stop-order",
        "source sends the CPR state and fds before stopping the VM (stock QEMU 10.0 order)",
    ),
    (
        "no-resume-on-failure",
        "source never resumes after a failed or cancelled transfer (stays finish-migrate)",
    ),
    (
        "double-resume",
        "source resumes twice after a failed or cancelled transfer (two RESUME events)",
    ),
    (
        "resume-when-paused",
        "source resumes to running after a failed or cancelled transfer even if it was paused",
    ),
    (
        "false-completion",
        "source takes a closed main channel (or garbage) for the target's loaded and reports completed",
    ),
    (
        "split-brain-after-cancel",
        "target runs as soon as it loaded the state (unchecked against guest RAM), without waiting for the source's go",
    ),
    (
        "copy-ram",
        "target copies guest RAM into a fresh memfd instead of mapping the passed one in place",
    ),
    (
        "target-ignores-paused",
        "target always resumes to running, even when the source was paused",
    ),
    (
        "never-release-owner",
        "source never releases its vhost-user-blk device (ring left running, no GET_VRING_BASE, no RESET_OWNER; sends its driver ring index as the base)",
    ),
    (
        "no-reacquire-after-failure",
        "source resumes after a failed or cancelled transfer without taking its vhost-user-blk device back",
    ),
    (
        "io-after-cutover",
        "source-stop stops the vCPU only: device I/O goes on through cpr-save; I/O stop and device release come after the target closed the cpr channel",
    ),
    (
        "ring-before-go",
        "target starts its vhost-user-blk ring as soon as it loaded the device state, before the source's go",
    ),
    (
        "refuse-migrate",
        "source answers every valid migrate with an error (cpr-transfer is not supported) and does nothing",
    ),
    (
        "crash-on-migrate",
        "source dies by SIGABRT on every valid migrate, before answering or sending anything",
    ),
    (
        "hang-on-migrate",
        "source's monitor hangs on a valid migrate (no reply to it or to anything after); nothing is sent",
    ),
    (
        "stall-in-setup",
        "source accepts migrate, stops the VM and stays in setup (connects nothing) until a cancel",
    ),
    (
        "frozen-after-refusal",
        "source stays stopped after a refused request (stopped before the refusal) or a failed or cancelled transfer",
    ),
    (
        "exit-after-cut-over",
        "source exits 0 once the target has the RAM memfd (its HUP on the cpr channel), never sending the main stream",
    ),
    (
        "complete-without-transfer",
        "source reports completed and goes postmigrate without connecting to the target",
    ),
    (
        "slow-release-forgets-device",
        "source whose vhost-user-blk device answered its release late forgets to take it back when the transfer then fails or is cancelled (needs two faults)",
    ),
];

const ALL: [Mutant; 20] = [
    Mutant::LegacyStopOrder,
    Mutant::NoResumeOnFailure,
    Mutant::DoubleResume,
    Mutant::ResumeWhenPaused,
    Mutant::FalseCompletion,
    Mutant::SplitBrainAfterCancel,
    Mutant::CopyRam,
    Mutant::TargetIgnoresPaused,
    Mutant::NeverReleaseOwner,
    Mutant::NoReacquireAfterFailure,
    Mutant::IoAfterCutover,
    Mutant::RingBeforeGo,
    Mutant::RefuseMigrate,
    Mutant::CrashOnMigrate,
    Mutant::HangOnMigrate,
    Mutant::StallInSetup,
    Mutant::FrozenAfterRefusal,
    Mutant::ExitAfterCutOver,
    Mutant::CompleteWithoutTransfer,
    Mutant::SlowReleaseForgetsDevice,
];

impl Mutant {
    /// The mutant's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::LegacyStopOrder => "legacy-stop-order",
            Self::NoResumeOnFailure => "no-resume-on-failure",
            Self::DoubleResume => "double-resume",
            Self::ResumeWhenPaused => "resume-when-paused",
            Self::FalseCompletion => "false-completion",
            Self::SplitBrainAfterCancel => "split-brain-after-cancel",
            Self::CopyRam => "copy-ram",
            Self::TargetIgnoresPaused => "target-ignores-paused",
            Self::NeverReleaseOwner => "never-release-owner",
            Self::NoReacquireAfterFailure => "no-reacquire-after-failure",
            Self::IoAfterCutover => "io-after-cutover",
            Self::RingBeforeGo => "ring-before-go",
            Self::RefuseMigrate => "refuse-migrate",
            Self::CrashOnMigrate => "crash-on-migrate",
            Self::HangOnMigrate => "hang-on-migrate",
            Self::StallInSetup => "stall-in-setup",
            Self::FrozenAfterRefusal => "frozen-after-refusal",
            Self::ExitAfterCutOver => "exit-after-cut-over",
            Self::CompleteWithoutTransfer => "complete-without-transfer",
            Self::SlowReleaseForgetsDevice => "slow-release-forgets-device",
        }
    }

    /// Looks a mutant up by name.
    pub fn from_name(name: &str) -> Option<Self> {
        ALL.into_iter().find(|m| m.name() == name)
    }

    /// The known names, comma-separated, for error messages.
    pub fn known_names() -> String {
        MUTANTS
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Mutant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mutant_round_trips_by_name() {
        assert_eq!(ALL.len(), MUTANTS.len());
        for (m, (name, _)) in ALL.into_iter().zip(MUTANTS) {
            assert_eq!(m.name(), *name, "ALL and MUTANTS in the same order");
            assert_eq!(Mutant::from_name(name), Some(m));
        }
        assert_eq!(Mutant::from_name("nope"), None);
    }
}
