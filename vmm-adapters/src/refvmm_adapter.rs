//! The adapter for refvmm, the kit's reference VMM: where its binary is, its
//! command lines, where its guest keeps the counter, and its mutants with the
//! rules the kit's self-test expects to catch each of them.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::qmp_monitor::connect_qmp;
use cprkit_harness::adapter::{
    Adapter, AdapterError, EventSink, GuestProbe, LaunchSpec, Monitor, RecordRing,
};
use cprkit_harness::launcher::{Helper, Launcher};
use cprkit_harness::scenario::{OnFailedLoad, Scenario, TargetStart};

use crate::VmmError;

/// Guest RAM given to refvmm: small, since nothing copies it.
const RAM_SIZE: u64 = 2 * 1024 * 1024;

/// The rules the self-test expects to catch each mutant (at least one of them
/// must fire somewhere in the matrix). The verdicts themselves come from
/// observation only; this table only checks the kit's own checks.
pub const MUTANT_EXPECTATIONS: &[(&str, &[&str])] = &[
    ("legacy-stop-order", &["ORD-1"]),
    ("no-resume-on-failure", &["FAIL-1"]),
    ("double-resume", &["FAIL-2"]),
    ("resume-when-paused", &["FAIL-1", "FAIL-2"]),
    ("false-completion", &["DONE-2"]),
    ("split-brain-after-cancel", &["FAIL-3"]),
    ("copy-ram", &["MEM-1"]),
    ("target-ignores-paused", &["DONE-1"]),
    ("never-release-owner", &["ORD-2", "OWN-1"]),
    ("no-reacquire-after-failure", &["OWN-2"]),
    ("io-after-cutover", &["ORD-1"]),
    ("ring-before-go", &["OWN-1"]),
    // VMMs that look good while doing nothing.
    ("refuse-migrate", &["DONE-0"]),
    ("crash-on-migrate", &["DONE-0", "LIVE-1"]),
    ("hang-on-migrate", &["DONE-0"]),
    ("stall-in-setup", &["DONE-0"]),
    ("frozen-after-refusal", &["FAIL-1"]),
    ("exit-after-cut-over", &["DONE-0", "LIVE-1"]),
    ("complete-without-transfer", &["DONE-2"]),
];

/// The mutants the matrix cannot catch, with the rules that catch them under
/// fuzzing (`cprkit fuzz`): their bug needs two faults together, so every
/// trial of the matrix (one fault each) passes.
pub const FUZZ_ONLY_MUTANTS: &[(&str, &[&str])] = &[("slow-release-forgets-device", &["OWN-2"])];

/// refvmm, correct or with one mutant.
pub struct RefVmm {
    name: String,
    mutant: Option<String>,
    launcher: Launcher,
    /// The guest's pause between two writes, when not refvmm's own.
    guest_step: Option<Duration>,
}

/// The argument with which a program that hosts refvmm runs it instead of
/// its own main (see [`cprkit_harness::launcher`]).
pub const HOSTED_REFVMM_ARG: &str = "__refvmm";

/// refvmm as one of the kit's helper programs.
pub const REFVMM: Helper = Helper {
    what: "refvmm",
    env: "CPRKIT_REFVMM",
    bin: "refvmm",
    hosted_arg: HOSTED_REFVMM_ARG,
};

/// The variable that gives refvmm's guest a slower step (microseconds
/// between two of its writes, refvmm's `--guest-step-us`): a slow guest, for
/// testing the kit's watches that are derived from the guest's write rate.
pub const GUEST_STEP_ENV: &str = "CPRKIT_REFVMM_GUEST_STEP_US";

fn guest_step_from_env() -> Result<Option<Duration>, VmmError> {
    match std::env::var(GUEST_STEP_ENV) {
        Err(_) => Ok(None),
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .map(|us| Some(Duration::from_micros(us)))
            .map_err(|_| {
                VmmError::Environment(format!(
                    "${GUEST_STEP_ENV} is {v:?}: microseconds, a whole number"
                ))
            }),
    }
}

/// Where refvmm is: $CPRKIT_REFVMM, else beside the running program, else the
/// running program itself if it hosts refvmm.
pub fn refvmm_binary() -> Result<Launcher, VmmError> {
    REFVMM
        .locate()
        .map_err(|e| VmmError::Environment(e.to_string()))
}

impl RefVmm {
    pub fn new(mutant: Option<&str>) -> Result<Self, VmmError> {
        if let Some(m) = mutant
            && !refvmm::MUTANTS.iter().any(|(n, _)| *n == m)
        {
            let known = refvmm::MUTANTS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(VmmError::UnknownMutant {
                name: m.to_string(),
                known,
            });
        }
        let name = match mutant {
            Some(m) => format!("refvmm:{m}"),
            None => "refvmm".to_string(),
        };
        Ok(RefVmm {
            name,
            mutant: mutant.map(str::to_string),
            launcher: refvmm_binary()?,
            guest_step: guest_step_from_env()?,
        })
    }

    /// Every mutant refvmm has, with its description.
    pub fn mutants() -> &'static [(&'static str, &'static str)] {
        refvmm::MUTANTS
    }

    /// The `--vmm` values of refvmm and every mutant, correct refvmm first:
    /// what `selftest` and the conformance runner cross with the cases.
    pub fn family() -> Vec<String> {
        std::iter::once("refvmm".to_string())
            .chain(Self::mutants().iter().map(|(m, _)| format!("refvmm:{m}")))
            .collect()
    }
}

impl Adapter for RefVmm {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> String {
        format!(
            "refvmm {} (cprkit's reference VMM)",
            env!("CARGO_PKG_VERSION")
        )
    }

    fn command(&self, spec: &LaunchSpec) -> Result<Command, AdapterError> {
        let mut cmd = self.launcher.command();
        // Another RAM size (a scenario's `other-ram`): twice the usual.
        let ram = if spec.setup.other_ram {
            2 * RAM_SIZE
        } else {
            RAM_SIZE
        };
        cmd.arg("--qmp")
            .arg(&spec.monitor)
            .arg("--ram-size")
            .arg(ram.to_string());
        if spec.setup.start_stopped {
            cmd.arg("-S");
        }
        for dev in &spec.setup.devices {
            cmd.arg("--extra-device").arg(dev.name());
        }
        if let Some(inc) = &spec.incoming {
            cmd.arg("--incoming-cpr").arg(&inc.cpr);
            match spec.setup.target_start {
                TargetStart::Listening => {
                    cmd.arg("--incoming-main").arg(&inc.main);
                }
                // The main channel comes by `migrate-incoming`.
                TargetStart::Deferred => {
                    cmd.arg("--incoming-defer");
                }
            }
            if spec.setup.on_failed_load == OnFailedLoad::Stay {
                cmd.arg("--stay-on-failed-load");
            }
        }
        if !spec.shared_ram {
            cmd.arg("--private-ram");
        }
        if let Some(sock) = &spec.vhost_user_blk {
            cmd.arg("--vhost-user-blk").arg(sock);
        }
        if let Some(m) = &self.mutant {
            cmd.arg("--mutant").arg(m);
        }
        if let Some(step) = self.guest_step {
            cmd.arg("--guest-step-us").arg(step.as_micros().to_string());
        }
        Ok(cmd)
    }

    /// refvmm maps every scenario key.
    fn scenario_unsupported(&self, _scenario: &Scenario, _prelaunch: bool) -> Option<String> {
        None
    }

    fn guest_probe(&self) -> GuestProbe {
        GuestProbe {
            ram_memfd_name: refvmm::RAM_MEMFD_NAME.to_string(),
            counter_offset: refvmm::COUNTER_OFFSET as u64,
            counter_width: 8,
            ring: Some(RecordRing {
                offset: refvmm::RING_OFFSET as u64,
                entries: refvmm::RING_ENTRIES,
                check: refvmm::RING_CHECK,
            }),
            device_io: true,
        }
    }

    fn connect(
        &self,
        spec: &LaunchSpec,
        deadline: Instant,
        events: EventSink,
    ) -> Result<Box<dyn Monitor>, AdapterError> {
        connect_qmp(spec, deadline, events)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_mutant_has_an_expectation_and_back() {
        for (m, _) in refvmm::MUTANTS {
            assert!(
                super::MUTANT_EXPECTATIONS
                    .iter()
                    .chain(super::FUZZ_ONLY_MUTANTS)
                    .any(|(n, _)| n == m),
                "{m} has no expected rule"
            );
        }
        for (m, _) in super::MUTANT_EXPECTATIONS
            .iter()
            .chain(super::FUZZ_ONLY_MUTANTS)
        {
            assert!(
                refvmm::MUTANTS.iter().any(|(n, _)| n == m),
                "{m} is no refvmm mutant"
            );
        }
    }
}
