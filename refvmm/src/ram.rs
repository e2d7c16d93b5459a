//! Guest RAM: a shared mapping of the `cprkit-ram` memfd (or, with
//! `--private-ram`, an anonymous private mapping), and the guest's stores into
//! it, as atomic (volatile) accesses since another process maps it too.

use std::fs::File;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, mmap_anonymous, munmap};

use crate::{
    COUNTER_OFFSET, RAM_MEMFD_NAME, RING_CHECK, RING_ENTRIES, RING_OFFSET, RING_RECORD_SIZE,
};

/// The guest's RAM.
#[derive(Debug)]
pub struct GuestRam {
    ptr: NonNull<u8>,
    len: usize,
    /// The memfd backing the mapping; `None` for private RAM.
    memfd: Option<File>,
}

// SAFETY: the mapping lives as long as the value; every access to it goes
// through atomic operations on aligned words.
unsafe impl Send for GuestRam {}
// SAFETY: as above.
unsafe impl Sync for GuestRam {}

impl GuestRam {
    /// Creates zeroed guest RAM in a fresh memfd named [`RAM_MEMFD_NAME`].
    pub fn new_memfd(size: u64) -> Result<Self> {
        let memfd = memfd::MemfdOptions::default()
            .close_on_exec(true)
            .create(RAM_MEMFD_NAME)
            .context("memfd_create")?
            .into_file();
        memfd.set_len(size).context("ftruncate of the RAM memfd")?;
        Self::map_file(memfd, size)
    }

    /// Creates zeroed guest RAM in an anonymous private mapping (no fd: it
    /// cannot take part in cpr-transfer).
    pub fn new_private(size: u64) -> Result<Self> {
        let len = nonzero(size)?;
        // SAFETY: a fresh anonymous mapping, owned by the returned value.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
        .context("mmap of private RAM")?;
        Ok(Self {
            ptr: ptr.cast(),
            len: len.get(),
            memfd: None,
        })
    }

    /// Maps, in place and shared, a RAM memfd received from a source. The fd
    /// stays open as long as the RAM exists.
    pub fn from_received_fd(fd: OwnedFd, size: u64) -> Result<Self> {
        let file = File::from(fd);
        let actual = file
            .metadata()
            .context("fstat of the received RAM fd")?
            .len();
        if actual < size {
            bail!("received RAM fd holds {actual} bytes, the VM needs {size}");
        }
        Self::map_file(file, size)
    }

    /// Copies the content of a received RAM fd into a fresh memfd of our own
    /// (same name) and closes the received fd: the `copy-ram` mutant.
    pub fn copied_from_received_fd(fd: OwnedFd, size: u64) -> Result<Self> {
        let received = File::from(fd);
        let actual = received
            .metadata()
            .context("fstat of the received RAM fd")?
            .len();
        if actual < size {
            bail!("received RAM fd holds {actual} bytes, the VM needs {size}");
        }
        let ram = Self::new_memfd(size)?;
        let own = ram.memfd.as_ref().expect("a memfd RAM has its file");
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        while off < size {
            let n = buf.len().min((size - off) as usize);
            received
                .read_exact_at(&mut buf[..n], off)
                .context("reading the received RAM")?;
            own.write_all_at(&buf[..n], off).context("copying RAM")?;
            off += n as u64;
        }
        drop(received);
        Ok(ram)
    }

    fn map_file(file: File, size: u64) -> Result<Self> {
        let len = nonzero(size)?;
        // SAFETY: a fresh shared mapping of a file we own, owned by the
        // returned value.
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                file.as_fd(),
                0,
            )
        }
        .context("mmap MAP_SHARED of the RAM memfd")?;
        Ok(Self {
            ptr: ptr.cast(),
            len: len.get(),
            memfd: Some(file),
        })
    }

    /// The RAM size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: RAM has at least [`crate::MIN_RAM_SIZE`] bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memfd backing the RAM, if it is shareable.
    pub fn memfd(&self) -> Option<BorrowedFd<'_>> {
        self.memfd.as_ref().map(|f| f.as_fd())
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        assert!(
            offset.is_multiple_of(8) && offset + 8 <= self.len,
            "guest RAM access out of range: {offset:#x}"
        );
        // SAFETY: in range and 8-aligned (the mapping is page-aligned); the
        // memory lives as long as `self` and is only accessed atomically.
        unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(offset).cast()) }
    }

    /// Reads a little-endian u64 of guest RAM.
    pub fn load_u64(&self, offset: usize) -> u64 {
        u64::from_le(self.word(offset).load(Ordering::Acquire))
    }

    /// Writes a little-endian u64 of guest RAM.
    pub fn store_u64(&self, offset: usize, value: u64) {
        self.word(offset).store(value.to_le(), Ordering::Release);
    }

    /// The host address where guest RAM is mapped in this process (guest
    /// physical address 0), the `userspace_addr` a vhost-user backend needs.
    pub fn host_addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    fn at<T>(&self, offset: usize) -> *mut T {
        let size = std::mem::size_of::<T>();
        assert!(
            offset.is_multiple_of(size) && offset + size <= self.len,
            "guest RAM access out of range: {offset:#x} ({size} bytes)"
        );
        // SAFETY: in range (checked above); the mapping lives as long as `self`.
        unsafe { self.ptr.as_ptr().add(offset).cast() }
    }

    /// Reads a little-endian u32 of guest RAM.
    pub fn load_u32(&self, offset: usize) -> u32 {
        // SAFETY: in range and aligned (checked by `at`), accessed atomically.
        let a = unsafe { AtomicU32::from_ptr(self.at(offset)) };
        u32::from_le(a.load(Ordering::Acquire))
    }

    /// Writes a little-endian u32 of guest RAM.
    pub fn store_u32(&self, offset: usize, value: u32) {
        // SAFETY: in range and aligned (checked by `at`), accessed atomically.
        let a = unsafe { AtomicU32::from_ptr(self.at(offset)) };
        a.store(value.to_le(), Ordering::Release);
    }

    /// Reads a little-endian u16 of guest RAM.
    pub fn load_u16(&self, offset: usize) -> u16 {
        // SAFETY: in range and aligned (checked by `at`), accessed atomically.
        let a = unsafe { AtomicU16::from_ptr(self.at(offset)) };
        u16::from_le(a.load(Ordering::Acquire))
    }

    /// Writes a little-endian u16 of guest RAM.
    pub fn store_u16(&self, offset: usize, value: u16) {
        // SAFETY: in range and aligned (checked by `at`), accessed atomically.
        let a = unsafe { AtomicU16::from_ptr(self.at(offset)) };
        a.store(value.to_le(), Ordering::Release);
    }

    /// Reads a byte of guest RAM.
    pub fn load_u8(&self, offset: usize) -> u8 {
        // SAFETY: in range (checked by `at`), accessed atomically.
        let a = unsafe { AtomicU8::from_ptr(self.at(offset)) };
        a.load(Ordering::Acquire)
    }

    /// Writes a byte of guest RAM.
    pub fn store_u8(&self, offset: usize, value: u8) {
        // SAFETY: in range (checked by `at`), accessed atomically.
        let a = unsafe { AtomicU8::from_ptr(self.at(offset)) };
        a.store(value, Ordering::Release);
    }

    /// The guest counter: the last sequence number written.
    pub fn counter(&self) -> u64 {
        self.load_u64(COUNTER_OFFSET)
    }

    /// One guest step: writes record `seq` into its ring slot, then the counter.
    pub fn write_record(&self, seq: u64) {
        let slot = RING_OFFSET + (seq % RING_ENTRIES) as usize * RING_RECORD_SIZE;
        self.store_u64(slot, seq);
        self.store_u64(slot + 8, seq ^ RING_CHECK);
        self.store_u64(COUNTER_OFFSET, seq);
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: the mapping was created by this value and is unmapped once.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

fn nonzero(size: u64) -> Result<NonZeroUsize> {
    usize::try_from(size)
        .ok()
        .and_then(NonZeroUsize::new)
        .context("bad RAM size")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn records_land_in_the_memfd() {
        let ram = GuestRam::new_memfd(crate::DEFAULT_RAM_SIZE).unwrap();
        ram.write_record(300);
        let fd = ram.memfd().unwrap().as_raw_fd();
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        assert_eq!(link.to_str().unwrap(), "/memfd:cprkit-ram (deleted)");
        let file = File::open(format!("/proc/self/fd/{fd}")).unwrap();
        let mut b = [0u8; 8];
        file.read_exact_at(&mut b, COUNTER_OFFSET as u64).unwrap();
        assert_eq!(u64::from_le_bytes(b), 300);
        let slot = (RING_OFFSET + 44 * RING_RECORD_SIZE) as u64;
        file.read_exact_at(&mut b, slot + 8).unwrap();
        assert_eq!(u64::from_le_bytes(b), 300 ^ RING_CHECK);
    }

    #[test]
    fn a_copy_is_a_different_memfd_with_the_same_content() {
        let ram = GuestRam::new_memfd(crate::MIN_RAM_SIZE).unwrap();
        ram.write_record(7);
        let fd = ram.memfd().unwrap().try_clone_to_owned().unwrap();
        let copy = GuestRam::copied_from_received_fd(fd, crate::MIN_RAM_SIZE).unwrap();
        assert_eq!(copy.counter(), 7);
        copy.write_record(8);
        assert_eq!(ram.counter(), 7);
        let private = GuestRam::new_private(crate::MIN_RAM_SIZE).unwrap();
        assert!(private.memfd().is_none());
    }
}
