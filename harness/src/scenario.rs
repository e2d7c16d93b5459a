//! The scenario of a trial, beside its fault: what differs between the two
//! sides (another RAM size, an extra device), how the target is started
//! (listening from its start, or deferred and given its main channel on its
//! monitor, as libvirt does), what it does when a load fails (exits, or stays
//! alive), and how many handovers in a row the trial makes (`hops`). Every
//! key is profile-neutral: each adapter maps it to its VMM's spelling, or
//! says it cannot ([`crate::adapter::Adapter::scenario_unsupported`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::adapter::Role;

/// An extra device one side has and the other lacks; each adapter maps it
/// to a device of its VMM that carries state in the main stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExtraDevice {
    /// A virtio entropy device (QEMU `virtio-rng-pci`, refvmm `--extra-device rng`).
    Rng,
}

impl ExtraDevice {
    pub fn name(self) -> &'static str {
        match self {
            ExtraDevice::Rng => "rng",
        }
    }
}

/// How a target starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetStart {
    /// Listening on both channels from its start (QEMU: two `-incoming` channels).
    #[default]
    Listening,
    /// Listening on its cpr channel only; once the CPR state arrived, the kit
    /// gives it its main channel on its monitor (QEMU: `-incoming defer` and
    /// `migrate-incoming`, as libvirt starts targets).
    Deferred,
}

/// What a target does when loading the incoming state fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailedLoad {
    /// It exits (QEMU's default).
    #[default]
    Exit,
    /// It stays alive, its incoming migration `failed` (QEMU
    /// `exit-on-error=false`).
    Stay,
}

/// What one side has that the other has not.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SideDiff {
    /// Another RAM size than the other side (twice the usual).
    pub other_ram: bool,
    /// Extra devices on this side only.
    pub devices: Vec<ExtraDevice>,
}

impl SideDiff {
    pub fn is_empty(&self) -> bool {
        !self.other_ram && self.devices.is_empty()
    }
}

/// The scenario of a trial; the default is one handover between two like
/// VMMs, the target listening from its start and exiting on a failed load.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scenario {
    pub source: SideDiff,
    pub target: SideDiff,
    pub target_start: TargetStart,
    pub on_failed_load: OnFailedLoad,
    /// Handovers in a row, each to a new target (at least 1).
    pub hops: u32,
    /// The hop at which the trial's fault is injected (1-based).
    pub fault_hop: u32,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            source: SideDiff::default(),
            target: SideDiff::default(),
            target_start: TargetStart::default(),
            on_failed_load: OnFailedLoad::default(),
            hops: 1,
            fault_hop: 1,
        }
    }
}

impl Scenario {
    pub fn side(&self, role: Role) -> &SideDiff {
        match role {
            Role::Source => &self.source,
            Role::Target => &self.target,
        }
    }

    /// Why the target must refuse the state, if the sides differ so that it
    /// cannot load it: another RAM size on either side, or a device the
    /// source has and the target lacks (a device only the target has gets no
    /// state and is no reason to refuse). `None`: the sides match.
    pub fn mismatch(&self) -> Option<String> {
        let mut why = Vec::new();
        if self.source.other_ram != self.target.other_ram {
            let side = if self.target.other_ram {
                "target"
            } else {
                "source"
            };
            why.push(format!("the {side} has another RAM size"));
        }
        let only_source: Vec<&str> = self
            .source
            .devices
            .iter()
            .filter(|d| !self.target.devices.contains(d))
            .map(|d| d.name())
            .collect();
        if !only_source.is_empty() {
            why.push(format!(
                "the source has a device the target lacks ({})",
                only_source.join(", ")
            ));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }

    /// The names of the keys this scenario sets away from their defaults
    /// (for an adapter's "cannot" message).
    pub fn keys_set(&self) -> Vec<&'static str> {
        let mut k = Vec::new();
        if self.source.other_ram || self.target.other_ram {
            k.push("other-ram");
        }
        if !self.source.devices.is_empty() {
            k.push("source-devices");
        }
        if !self.target.devices.is_empty() {
            k.push("target-devices");
        }
        if self.target_start != TargetStart::Listening {
            k.push("target-start");
        }
        if self.on_failed_load != OnFailedLoad::Exit {
            k.push("on-failed-load");
        }
        if self.hops > 1 {
            k.push("hops");
        }
        k
    }
}

impl fmt::Display for TargetStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetStart::Listening => "listening",
            TargetStart::Deferred => "deferred",
        })
    }
}

impl fmt::Display for OnFailedLoad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnFailedLoad::Exit => "exit",
            OnFailedLoad::Stay => "stay",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_difference_the_target_cannot_load_is_a_mismatch() {
        let mut s = Scenario::default();
        assert_eq!(s.mismatch(), None);
        s.target.devices.push(ExtraDevice::Rng);
        assert_eq!(
            s.mismatch(),
            None,
            "a device only the target has gets no state"
        );
        s.source.devices.push(ExtraDevice::Rng);
        assert_eq!(s.mismatch(), None, "both have it");
        s.target.devices.clear();
        assert_eq!(
            s.mismatch().as_deref(),
            Some("the source has a device the target lacks (rng)")
        );
        let ram = Scenario {
            target: SideDiff {
                other_ram: true,
                devices: vec![],
            },
            ..Scenario::default()
        };
        assert_eq!(
            ram.mismatch().as_deref(),
            Some("the target has another RAM size")
        );
        assert_eq!(ram.keys_set(), ["other-ram"]);
    }
}
