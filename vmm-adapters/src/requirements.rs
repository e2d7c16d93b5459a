//! The external parts a run needs, and whether each is required: the one
//! place that decides. A part is QEMU, qemu-storage-daemon, a Cloud
//! Hypervisor build or a kernel vhost device; a trial needs the part of its
//! VMM ([`Part::of_vmm`]) and of its case ([`Part::of_case`]).
//!
//! A part is *required* when `CPRKIT_REQUIRE` names it (a comma-separated
//! list: `qemu,qemu-storage-daemon`; `.ci/run` sets it); for the kit's own
//! tests ([`Policy::for_tests`]), QEMU and qemu-storage-daemon are also
//! required when `CI` is `true` or `1` (as CI systems set it), while the
//! `cprkit` command, which other projects run in their CI, requires only what
//! `CPRKIT_REQUIRE` names ([`Policy::for_command`]). A required part that is absent is an error naming it and
//! how to install it; an optional one that is absent makes the trials that
//! need it "not run" with the reason ([`Availability::Optional`]): reported
//! as ignored, never passed, never dropped from the count.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use cprkit_harness::adapter::Adapter;
use cprkit_harness::device::{Backend, KERNEL_VHOST_DEVICES};

use crate::{CloudHypervisor, Qemu, VmmError, adapter_for};

/// The variable that lists the required parts.
pub const REQUIRE_ENV: &str = "CPRKIT_REQUIRE";

/// An external part a trial can need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    Qemu,
    QemuStorageDaemon,
    CloudHypervisor,
    /// /dev/vhost-net or /dev/vhost-vsock.
    VhostKernelDevice,
}

impl Part {
    pub const ALL: [Part; 4] = [
        Part::Qemu,
        Part::QemuStorageDaemon,
        Part::CloudHypervisor,
        Part::VhostKernelDevice,
    ];

    /// Its spelling in `CPRKIT_REQUIRE`.
    pub fn key(self) -> &'static str {
        match self {
            Part::Qemu => "qemu",
            Part::QemuStorageDaemon => "qemu-storage-daemon",
            Part::CloudHypervisor => "cloud-hypervisor",
            Part::VhostKernelDevice => "vhost-kernel",
        }
    }

    /// What it is, for messages.
    pub fn what(self) -> &'static str {
        match self {
            Part::Qemu => "QEMU 10.0+ (qemu-system-x86_64)",
            Part::QemuStorageDaemon => "qemu-storage-daemon",
            Part::CloudHypervisor => "Cloud Hypervisor",
            Part::VhostKernelDevice => "a kernel vhost device (/dev/vhost-net or /dev/vhost-vsock)",
        }
    }

    /// How to install it.
    pub fn install(self) -> &'static str {
        match self {
            Part::Qemu => {
                "install it with `sudo bash ci/install-deps.sh` (Debian 12: qemu-system-x86 from bookworm-backports)"
            }
            Part::QemuStorageDaemon => {
                "install it with `sudo bash ci/install-deps.sh` (Debian: qemu-utils from bookworm-backports)"
            }
            Part::CloudHypervisor => {
                "build Cloud Hypervisor and set CPRKIT_CLOUD_HYPERVISOR to its binary, or put `cloud-hypervisor` on PATH"
            }
            Part::VhostKernelDevice => "load the vhost_net or vhost_vsock kernel module",
        }
    }

    /// The part a `--vmm` value needs, if any (refvmm and exec programs are the kit's or the user's).
    pub fn of_vmm(vmm: &str) -> Option<Part> {
        match vmm.split_once(':').map_or(vmm, |(kind, _)| kind) {
            "qemu" => Some(Part::Qemu),
            "cloud-hypervisor" => Some(Part::CloudHypervisor),
            _ => None,
        }
    }

    /// The parts a case needs: its device backend's program, its kernel device.
    pub fn of_case(backend: Option<Backend>, kernel_vhost: bool) -> Vec<Part> {
        let mut parts = Vec::new();
        if backend == Some(Backend::QemuStorageDaemon) {
            parts.push(Part::QemuStorageDaemon);
        }
        if kernel_vhost {
            parts.push(Part::VhostKernelDevice);
        }
        parts
    }

    /// Why it is absent on this host, or `None` when it is here.
    pub fn absent(self) -> Option<String> {
        match self {
            Part::Qemu => Qemu::new(None).err().map(|e| e.to_string()),
            Part::QemuStorageDaemon => Backend::QemuStorageDaemon.missing(),
            Part::CloudHypervisor => CloudHypervisor::new(None).err().map(|e| e.to_string()),
            Part::VhostKernelDevice => (!KERNEL_VHOST_DEVICES
                .iter()
                .any(|d| std::path::Path::new(d).exists()))
            .then(|| format!("no {} on this host", KERNEL_VHOST_DEVICES.join(" or "))),
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what())
    }
}

/// Whether a part can be used here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    Present,
    /// Absent and optional: what needs it is not run, for this reason.
    Optional(String),
    /// Absent and required: the error, naming the part and how to install it.
    Missing(String),
}

/// Which parts are required.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    required: BTreeSet<Part>,
    /// Where the requirement comes from, for messages.
    source: String,
}

impl Policy {
    /// The kit's tests' policy: from `CPRKIT_REQUIRE` and `CI`; an unknown
    /// name in `CPRKIT_REQUIRE` is an error.
    pub fn for_tests() -> Result<Policy, String> {
        Policy::new(
            std::env::var(REQUIRE_ENV).ok().as_deref(),
            std::env::var("CI").ok().as_deref(),
        )
    }

    /// The `cprkit` command's policy: from `CPRKIT_REQUIRE` alone (a VMM
    /// project's CI sets `CI` without meaning the kit's own parts).
    pub fn for_command() -> Result<Policy, String> {
        Policy::new(std::env::var(REQUIRE_ENV).ok().as_deref(), None)
    }

    /// From the values of `CPRKIT_REQUIRE` and `CI`.
    pub fn new(require: Option<&str>, ci: Option<&str>) -> Result<Policy, String> {
        let mut required = BTreeSet::new();
        let mut source = Vec::new();
        if let Some(list) = require.filter(|l| !l.trim().is_empty()) {
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let part = Part::ALL
                    .into_iter()
                    .find(|p| p.key() == name)
                    .ok_or_else(|| {
                        let known: Vec<&str> = Part::ALL.iter().map(|p| p.key()).collect();
                        format!(
                            "{REQUIRE_ENV}: unknown part `{name}` (known: {})",
                            known.join(", ")
                        )
                    })?;
                required.insert(part);
            }
            source.push(format!("{REQUIRE_ENV}={list}"));
        }
        if let Some(ci) = ci.filter(|v| matches!(*v, "true" | "1")) {
            required.extend([Part::Qemu, Part::QemuStorageDaemon]);
            source.push(format!("CI={ci}"));
        }
        Ok(Policy {
            required,
            source: source.join(", "),
        })
    }

    pub fn required(&self, part: Part) -> bool {
        self.required.contains(&part)
    }

    /// Whether `part` is here, and if not, whether that is an error.
    pub fn availability(&self, part: Part) -> Availability {
        self.judge(part, part.absent())
    }

    /// [`Policy::availability`] given why the part is absent (`None`: present).
    pub fn judge(&self, part: Part, absent: Option<String>) -> Availability {
        match absent {
            None => Availability::Present,
            Some(why) if self.required(part) => Availability::Missing(format!(
                "{} is required ({}) but missing: {why}; {}",
                part.what(),
                self.source,
                part.install()
            )),
            Some(why) => Availability::Optional(format!(
                "{why} (optional; {REQUIRE_ENV}={} requires it)",
                part.key()
            )),
        }
    }

    /// The adapter of the VMM `vmm` needs, for planning its trials: the real
    /// one when its part is here, one that runs none of them (each not run,
    /// with the reason) when it is optional and absent; an error when it is
    /// required and absent. For the runners that plan every VMM they know.
    pub fn adapter_or_absent(&self, vmm: &str) -> Result<Arc<dyn Adapter>, String> {
        let part = Part::of_vmm(vmm);
        let found = adapter_for(vmm);
        let why = match (&found, part) {
            (Ok(_), _) | (Err(_), None) => return found.map_err(|e| e.to_string()),
            (Err(VmmError::Environment(why)), Some(_)) => why.clone(),
            (Err(e), Some(_)) => return Err(e.to_string()),
        };
        let part = part.expect("matched above");
        match self.judge(part, Some(why)) {
            Availability::Missing(e) => Err(e),
            Availability::Optional(why) => Ok(match part {
                Part::CloudHypervisor => Arc::new(CloudHypervisor::absent(why)),
                _ => Arc::new(Qemu::absent(why)),
            }),
            Availability::Present => unreachable!("judged absent"),
        }
    }

    /// The first required part among `parts` that is missing, as its error.
    pub fn check(&self, parts: impl IntoIterator<Item = Part>) -> Result<(), String> {
        let parts: BTreeSet<Part> = parts.into_iter().collect();
        for part in parts {
            if let Availability::Missing(e) = self.availability(part) {
                return Err(e);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cprkit_require_names_the_required_parts() {
        let p = Policy::new(Some("qemu, qemu-storage-daemon"), None).unwrap();
        assert!(p.required(Part::Qemu) && p.required(Part::QemuStorageDaemon));
        assert!(!p.required(Part::CloudHypervisor));
        let none = Policy::new(None, None).unwrap();
        assert!(Part::ALL.iter().all(|x| !none.required(*x)));
        let e = Policy::new(Some("qemu,kvm"), None).unwrap_err();
        assert!(e.contains("unknown part `kvm`"), "{e}");
    }

    #[test]
    fn ci_true_or_1_requires_qemu_and_its_storage_daemon() {
        for ci in ["true", "1"] {
            let p = Policy::new(None, Some(ci)).unwrap();
            assert!(p.required(Part::Qemu) && p.required(Part::QemuStorageDaemon));
            assert!(!p.required(Part::CloudHypervisor));
        }
        assert!(
            !Policy::new(None, Some("false"))
                .unwrap()
                .required(Part::Qemu)
        );
    }

    #[test]
    fn a_required_part_absent_is_named_with_how_to_install_it() {
        let p = Policy::new(Some("qemu"), None).unwrap();
        let Availability::Missing(e) = p.judge(Part::Qemu, Some("QEMU not found".into())) else {
            panic!("not an error");
        };
        assert!(
            e.contains("QEMU 10.0+") && e.contains("CPRKIT_REQUIRE=qemu"),
            "{e}"
        );
        assert!(e.contains("ci/install-deps.sh"), "{e}");
        assert_eq!(p.judge(Part::Qemu, None), Availability::Present);
    }

    #[test]
    fn an_optional_part_absent_gives_the_reason_to_not_run() {
        let p = Policy::new(Some("qemu"), None).unwrap();
        let a = p.judge(
            Part::QemuStorageDaemon,
            Some("qemu-storage-daemon not found".into()),
        );
        let Availability::Optional(why) = a else {
            panic!("{a:?}")
        };
        assert!(why.starts_with("qemu-storage-daemon not found"), "{why}");
    }

    #[test]
    fn the_parts_of_vmms_and_cases() {
        assert_eq!(Part::of_vmm("qemu"), Some(Part::Qemu));
        assert_eq!(Part::of_vmm("qemu:/opt/q"), Some(Part::Qemu));
        assert_eq!(
            Part::of_vmm("cloud-hypervisor"),
            Some(Part::CloudHypervisor)
        );
        assert_eq!(Part::of_vmm("refvmm:copy-ram"), None);
        assert_eq!(Part::of_vmm("exec:./a.py"), None);
        assert_eq!(
            Part::of_case(Some(Backend::QemuStorageDaemon), false),
            vec![Part::QemuStorageDaemon]
        );
        assert_eq!(
            Part::of_case(Some(Backend::Kit), true),
            vec![Part::VhostKernelDevice]
        );
    }

    /// An absent optional VMM is planned by an adapter that runs nothing and
    /// says why.
    #[test]
    fn an_absent_optional_vmm_plans_trials_that_say_why_not_run() {
        let q: Arc<dyn Adapter> = Arc::new(Qemu::absent("QEMU not found".into()));
        assert_eq!(q.name(), "qemu");
        assert_eq!(q.snapshot_dir(), "qemu");
        assert_eq!(
            q.not_runnable(false, &[]).as_deref(),
            Some("QEMU not found")
        );
        let ch: Arc<dyn Adapter> = Arc::new(CloudHypervisor::absent("no CH".into()));
        assert_eq!(ch.snapshot_dir(), "cloud-hypervisor");
        assert_eq!(ch.not_runnable(false, &[]).as_deref(), Some("no CH"));
    }
}
