//! The known violations of the VMMs of a run, loaded as `cprkit run` loads
//! them: `snapshots/<vmm>/known-violations.toml` (`:` in the VMM name spelled
//! `-`), under `$CPRKIT_SNAPSHOTS` when set.

use std::collections::BTreeMap;

use cprkit_cases::CaseError;
use cprkit_cases::known::{KnownViolations, snapshots_dir};
use cprkit_cases::runner::TrialResult;

/// Known violations by VMM name.
#[derive(Debug, Default)]
pub struct Known {
    by_vmm: BTreeMap<String, KnownViolations>,
}

impl Known {
    /// Loads the file of every VMM of `results` (no file: nothing known).
    pub fn load(results: &[TrialResult]) -> Result<Known, CaseError> {
        let mut by_vmm = BTreeMap::new();
        for r in results {
            if !by_vmm.contains_key(&r.id.vmm) {
                let dir = snapshots_dir().join(r.id.vmm.replace(':', "-"));
                by_vmm.insert(r.id.vmm.clone(), KnownViolations::load(&dir)?);
            }
        }
        Ok(Known { by_vmm })
    }

    pub fn get(&self, vmm: &str) -> Option<&KnownViolations> {
        self.by_vmm.get(vmm)
    }
}
