//! A connection's guest memory: the regions SET_MEM_TABLE passed, mapped from their fds,
//! and the translation of frontend user addresses (ring addresses) to guest addresses.

use std::fs::File;

use vhost::vhost_user::message::VhostUserMemoryRegion;
use vm_memory::{
    Address, FileOffset, GuestAddress, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
    MmapRegion,
};

/// A mem table that cannot be mapped.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("{regions} regions but {files} fds")]
    FdCount { regions: usize, files: usize },
    #[error("region {index} (guest 0x{gpa:x}, {size} bytes): size does not fit in usize")]
    TooLarge { index: usize, gpa: u64, size: u64 },
    #[error(
        "region {index} (guest 0x{gpa:x}, {size} bytes, fd offset 0x{offset:x}): mmap: {source}"
    )]
    Map {
        index: usize,
        gpa: u64,
        size: u64,
        offset: u64,
        source: vm_memory::mmap::MmapRegionError,
    },
    #[error("region {index} (guest 0x{gpa:x}): guest address overflows")]
    Overflow { index: usize, gpa: u64 },
    #[error("regions do not form a guest memory: {0}")]
    Collection(vm_memory::GuestRegionCollectionError),
}

/// One region's place in the frontend's address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UserRange {
    user_addr: u64,
    size: u64,
    gpa: u64,
}

/// The mapped guest memory of one connection.
#[derive(Debug)]
pub struct GuestMap {
    pub mem: GuestMemoryMmap,
    ranges: Vec<UserRange>,
}

impl GuestMap {
    /// Maps every region from its fd.
    pub fn map(regions: &[VhostUserMemoryRegion], files: Vec<File>) -> Result<Self, MemoryError> {
        if regions.len() != files.len() {
            return Err(MemoryError::FdCount {
                regions: regions.len(),
                files: files.len(),
            });
        }
        let mut mapped = Vec::with_capacity(regions.len());
        let mut ranges = Vec::with_capacity(regions.len());
        for (index, (region, file)) in regions.iter().zip(files).enumerate() {
            let gpa = region.guest_phys_addr;
            let size = region.memory_size;
            let len =
                usize::try_from(size).map_err(|_| MemoryError::TooLarge { index, gpa, size })?;
            let offset = region.mmap_offset;
            let mapping =
                MmapRegion::from_file(FileOffset::new(file, offset), len).map_err(|source| {
                    MemoryError::Map {
                        index,
                        gpa,
                        size,
                        offset,
                        source,
                    }
                })?;
            let guest = GuestRegionMmap::new(mapping, GuestAddress(gpa))
                .ok_or(MemoryError::Overflow { index, gpa })?;
            mapped.push(guest);
            ranges.push(UserRange {
                user_addr: region.user_addr,
                size,
                gpa,
            });
        }
        mapped.sort_by_key(|r| r.start_addr().raw_value());
        let mem = GuestMemoryMmap::from_regions(mapped).map_err(MemoryError::Collection)?;
        Ok(GuestMap { mem, ranges })
    }

    /// The guest address of frontend user address `ua`, if a region holds it.
    pub fn user_to_guest(&self, ua: u64) -> Option<GuestAddress> {
        self.ranges
            .iter()
            .find(|r| ua >= r.user_addr && ua - r.user_addr < r.size)
            .map(|r| GuestAddress(r.gpa + (ua - r.user_addr)))
    }
}
