//! The profiles a case can name (docs/contract.md, "Profiles").

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// What the handed-over VM has besides its memfd RAM (docs/contract.md, "Profiles").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// memfd guest RAM only.
    Memory,
    /// Plus a vhost-user-blk device.
    VhostUser,
    /// Plus /dev/vhost-net or /dev/vhost-vsock.
    VhostKernel,
}

impl Profile {
    pub const ALL: [Profile; 3] = [Profile::Memory, Profile::VhostUser, Profile::VhostKernel];

    /// The spelling used in case files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Memory => "memory",
            Profile::VhostUser => "vhost-user",
            Profile::VhostKernel => "vhost-kernel",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

use cprkit_harness::device::KERNEL_VHOST_DEVICES;

/// Why no trial of the `vhost-kernel` profile runs, on any host: the kit
/// cannot run them yet (no adapter attaches a kernel vhost device, and the kit
/// cannot observe such a device's owner). Not the host's fault, whether or not
/// it has the devices.
pub fn vhost_kernel_not_built() -> String {
    format!(
        "profile `vhost-kernel`: not built yet: no adapter can run its trials (the kit cannot yet \
         attach {} to a VMM nor observe who owns it), on any host",
        KERNEL_VHOST_DEVICES.join(" or ")
    )
}

/// A name that is not a [`Profile`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown profile `{0}` (known: memory, vhost-user, vhost-kernel)")]
pub struct UnknownProfile(pub String);

impl FromStr for Profile {
    type Err = UnknownProfile;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownProfile(s.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_round_trip() {
        for p in Profile::ALL {
            assert_eq!(p.to_string().parse::<Profile>().unwrap(), p);
        }
        assert_eq!(
            "vhost".parse::<Profile>().unwrap_err().to_string(),
            "unknown profile `vhost` (known: memory, vhost-user, vhost-kernel)"
        );
    }

    /// The reason is the kit's, not the host's: it says "not built yet" and
    /// blames no missing device, whatever the host has.
    #[test]
    fn vhost_kernel_says_not_built_yet_and_blames_no_host() {
        let why = vhost_kernel_not_built();
        assert!(why.contains("not built yet"), "{why}");
        for blame in ["no /dev", "on this host", "the kernel was built without"] {
            assert!(!why.contains(blame), "{why}");
        }
    }
}
