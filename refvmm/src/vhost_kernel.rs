//! A kernel vhost device (`--vhost-kernel PATH`, /dev/vhost-net or
//! /dev/vhost-vsock): its fd and its ownership, VHOST_SET_OWNER and
//! VHOST_RESET_OWNER. The fd crosses the cpr channel with the RAM memfd; the
//! target takes ownership of the fd it received.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use nix::errno::Errno;

/// The vhost ioctl type (`VHOST_VIRTIO`).
const VHOST_VIRTIO: u8 = 0xAF;

nix::ioctl_none!(vhost_set_owner, VHOST_VIRTIO, 0x01);
nix::ioctl_none!(vhost_reset_owner, VHOST_VIRTIO, 0x02);

/// A kernel vhost device fd.
#[derive(Debug)]
pub struct VhostKernel {
    file: File,
    /// We gave the device up (VHOST_RESET_OWNER).
    released: AtomicBool,
}

impl VhostKernel {
    /// Opens the vhost device at `path` (read-write).
    pub fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("opening the vhost device {}", path.display()))?;
        Ok(Self::from_fd(file.into()))
    }

    /// The device from a received fd.
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self {
            file: File::from(fd),
            released: AtomicBool::new(false),
        }
    }

    /// The fd, to pass with the CPR state.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// VHOST_SET_OWNER (EBUSY if another process owns the device).
    pub fn set_owner(&self) -> Result<(), Errno> {
        // SAFETY: a vhost ioctl without argument on an fd we own.
        unsafe { vhost_set_owner(self.file.as_raw_fd()) }?;
        self.released.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// VHOST_RESET_OWNER.
    pub fn reset_owner(&self) -> Result<(), Errno> {
        // SAFETY: a vhost ioctl without argument on an fd we own.
        unsafe { vhost_reset_owner(self.file.as_raw_fd()) }?;
        self.released.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Whether we released the device.
    pub fn released(&self) -> bool {
        self.released.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_device_is_a_clear_error() {
        let e = VhostKernel::open(Path::new("/nonexistent/vhost-net")).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("opening the vhost device /nonexistent/vhost-net"),
            "{msg}"
        );
        assert!(msg.contains("No such file"), "{msg}");
    }

    #[test]
    fn set_owner_on_a_non_vhost_fd_fails_with_an_errno() {
        let f = File::open("/dev/null").unwrap();
        let dev = VhostKernel::from_fd(f.into());
        assert!(dev.set_owner().is_err());
        assert!(dev.reset_owner().is_err());
        assert!(!dev.released());
    }
}
