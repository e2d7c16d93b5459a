//! cprkit's built-in VMM adapters, and the parsing of `--vmm`.
//!
//! - `refvmm` and `refvmm:MUTANT`: the kit's reference VMM ([`refvmm_adapter`]).
//!
//! QEMU and the exec protocol come as further adapters behind the same trait.

pub mod refvmm_adapter;

use std::sync::Arc;

use cprkit_harness::adapter::Adapter;

pub use refvmm_adapter::RefVmm;

/// Why a `--vmm` value names no adapter.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("unknown VMM `{0}`: use refvmm or refvmm:MUTANT")]
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
        _ => Err(VmmError::Unknown(spec.to_string())),
    }
}
