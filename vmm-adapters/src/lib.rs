//! cprkit's built-in VMM adapters, and the parsing of `--vmm`.
//!
//! - `refvmm` and `refvmm:MUTANT`: the kit's reference VMM ([`refvmm_adapter`]);
//! - `exec:PROGRAM`: an adapter that is a program of its own, speaking the
//!   `cprkit-exec/2` protocol (or `/1`) on its stdin and stdout ([`exec_adapter`]);
//! - `qemu` and `qemu:/path/to/qemu-system-x86_64`: QEMU 10.0 or newer, with
//!   the kit's counting firmware as its guest ([`qemu_adapter`], [`firmware`]);
//! - `cloud-hypervisor` and `cloud-hypervisor:PATH`: Cloud Hypervisor's local
//!   migration, with the kit's counting PVH guest
//!   ([`cloud_hypervisor_adapter`], [`pvh_guest`], its REST client [`ch_api`], its event monitor [`ch_events`]);
//! - [`qmp_monitor`]: the QMP monitor the refvmm and QEMU adapters share;
//! - [`requirements`]: which external parts (QEMU, qemu-storage-daemon, ...) a run needs, and whether each is required.

pub mod ch_api;
pub mod ch_events;
pub mod cloud_hypervisor_adapter;
pub mod exec_adapter;
pub mod firmware;
pub mod guest_file;
pub mod pvh_guest;
pub mod qemu_adapter;
pub mod qmp_monitor;
pub mod refvmm_adapter;
pub mod requirements;

use std::sync::Arc;

use cprkit_harness::adapter::Adapter;

pub use cloud_hypervisor_adapter::CloudHypervisor;
pub use exec_adapter::ExecAdapter;
pub use qemu_adapter::Qemu;
pub use refvmm_adapter::RefVmm;

/// Every spelling `--vmm` takes, with what it names: the one list the help
/// texts and the errors are made from.
pub const VMM_SPELLINGS: &[(&str, &str)] = &[
    ("refvmm", "the kit's reference VMM, the default"),
    ("refvmm:MUTANT", "refvmm with one of its named bugs"),
    ("qemu", "QEMU 10.0+, the qemu-system-x86_64 on PATH"),
    ("qemu:PATH", "QEMU 10.0+ at PATH"),
    (
        "cloud-hypervisor",
        "Cloud Hypervisor, the binary $CPRKIT_CLOUD_HYPERVISOR names, else cloud-hypervisor on PATH",
    ),
    ("cloud-hypervisor:PATH", "Cloud Hypervisor at PATH"),
    (
        "exec:PROGRAM",
        "a VMM driven by an adapter program of your own, over the cprkit-exec protocol",
    ),
];

/// The help text of a `--vmm` option: every spelling, and the mutants.
pub fn vmm_help() -> String {
    let spellings = VMM_SPELLINGS
        .iter()
        .map(|(s, what)| format!("{s}: {what}"))
        .collect::<Vec<_>>()
        .join("; ");
    let mutants = RefVmm::mutants()
        .iter()
        .map(|(m, _)| *m)
        .collect::<Vec<_>>()
        .join(", ");
    format!("The VMM under test. {spellings}. refvmm's mutants: {mutants}.")
}

fn spellings() -> String {
    let names: Vec<&str> = VMM_SPELLINGS.iter().map(|(s, _)| *s).collect();
    names.join(", ")
}

/// Why a `--vmm` value names no adapter.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("unknown VMM `{0}`: use one of {known}", known = spellings())]
    Unknown(String),
    #[error("unknown refvmm mutant `{name}` (known: {known})")]
    UnknownMutant { name: String, known: String },
    #[error("{0}")]
    Environment(String),
}

/// The adapter a `--vmm` value names.
pub fn adapter_for(spec: &str) -> Result<Arc<dyn Adapter>, VmmError> {
    match spec.split_once(':') {
        None if spec == "refvmm" => Ok(Arc::new(RefVmm::new(None)?)),
        Some(("refvmm", mutant)) => Ok(Arc::new(RefVmm::new(Some(mutant))?)),
        Some(("exec", program)) => Ok(Arc::new(ExecAdapter::new(program)?)),
        None if spec == "qemu" => Ok(Arc::new(Qemu::new(None)?)),
        Some(("qemu", path)) if !path.is_empty() => {
            Ok(Arc::new(Qemu::new(Some(std::path::Path::new(path)))?))
        }
        None if spec == "cloud-hypervisor" => Ok(Arc::new(CloudHypervisor::new(None)?)),
        Some(("cloud-hypervisor", path)) if !path.is_empty() => Ok(Arc::new(CloudHypervisor::new(
            Some(std::path::Path::new(path)),
        )?)),
        _ => Err(VmmError::Unknown(spec.to_string())),
    }
}
