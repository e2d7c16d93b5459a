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

/// The kernel vhost devices the `vhost-kernel` profile can use, in the order tried.
pub const KERNEL_VHOST_DEVICES: [&str; 2] = ["/dev/vhost-net", "/dev/vhost-vsock"];

/// The first kernel vhost device this host has; otherwise why the
/// `vhost-kernel` profile cannot run here.
pub fn kernel_vhost_device() -> Result<&'static str, String> {
    match KERNEL_VHOST_DEVICES
        .into_iter()
        .find(|d| std::path::Path::new(d).exists())
    {
        Some(d) => Err(format!(
            "profile `vhost-kernel`: {d} exists, but cprkit's kernel vhost trials are not \
             built yet (refvmm can hold the fd; the kit cannot observe its owner yet)"
        )),
        None => Err(format!(
            "no {} on this host (the kernel was built without vhost): profile `vhost-kernel` \
             runs where one of them exists",
            KERNEL_VHOST_DEVICES.join(" or ")
        )),
    }
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
}
