//! The disk: 1 MiB in memory, shared by every connection, with a boot sector; and the
//! virtio-blk config space that describes it.

use std::sync::{Mutex, MutexGuard};

/// Bytes in a sector.
pub const SECTOR_SIZE: u64 = 512;
/// Bytes on the disk.
pub const DISK_SIZE: usize = 1 << 20;
/// The text after the boot code in sector 0, at [`BOOT_TEXT_OFFSET`].
pub const BOOT_TEXT: &[u8] = b"cprkit boot sector";
/// Where [`BOOT_TEXT`] is in sector 0 (the boot code comes first).
pub const BOOT_TEXT_OFFSET: usize = 16;
/// The GET_ID answer (zero-padded to 20 bytes).
pub const DISK_ID: &[u8] = b"cprkit-disk";
/// VIRTIO_BLK_ID_BYTES.
pub const ID_BYTES: usize = 20;

/// An I/O request outside the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bytes {offset}..{offset}+{len} are outside the {DISK_SIZE}-byte disk")]
pub struct OutOfRange {
    pub offset: u64,
    pub len: usize,
}

/// The disk's bytes as it starts: zeroes, with the boot sector in sector 0
/// (the counting guest of [`crate::boot`], a text, the 0x55AA signature).
/// Also the image the kit gives a third-party backend.
pub fn image() -> Vec<u8> {
    let mut bytes = vec![0u8; DISK_SIZE];
    let code = crate::boot::counting_loop();
    bytes[..code.len()].copy_from_slice(&code);
    bytes[BOOT_TEXT_OFFSET..BOOT_TEXT_OFFSET + BOOT_TEXT.len()].copy_from_slice(BOOT_TEXT);
    bytes[510] = 0x55;
    bytes[511] = 0xAA;
    bytes
}

/// The in-memory disk.
#[derive(Debug)]
pub struct Disk {
    bytes: Mutex<Vec<u8>>,
}

impl Default for Disk {
    fn default() -> Self {
        Self::new()
    }
}

impl Disk {
    /// The disk as it starts: see [`image`].
    pub fn new() -> Self {
        Disk {
            bytes: Mutex::new(image()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.bytes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn range(sector: u64, len: usize) -> Result<std::ops::Range<usize>, OutOfRange> {
        let offset = sector.saturating_mul(SECTOR_SIZE);
        let err = OutOfRange { offset, len };
        let start = usize::try_from(offset).map_err(|_| err)?;
        let end = start.checked_add(len).ok_or(err)?;
        if end > DISK_SIZE {
            return Err(err);
        }
        Ok(start..end)
    }

    /// Reads `len` bytes from `sector` on.
    pub fn read(&self, sector: u64, len: usize) -> Result<Vec<u8>, OutOfRange> {
        let range = Self::range(sector, len)?;
        Ok(self.lock()[range].to_vec())
    }

    /// Writes `data` from `sector` on.
    pub fn write(&self, sector: u64, data: &[u8]) -> Result<(), OutOfRange> {
        let range = Self::range(sector, data.len())?;
        self.lock()[range].copy_from_slice(data);
        Ok(())
    }

    /// The virtio_blk_config bytes `offset..offset+size`, zero-padded.
    pub fn config(offset: u32, size: u32) -> Vec<u8> {
        // struct virtio_blk_config: capacity u64 @0, size_max u32 @8, seg_max u32 @12,
        // geometry @16, blk_size u32 @20, ..., num_queues u16 @34; 60 bytes in Linux 6.x.
        let mut space = [0u8; 64];
        let capacity = DISK_SIZE as u64 / SECTOR_SIZE;
        space[0..8].copy_from_slice(&capacity.to_le_bytes());
        space[12..16].copy_from_slice(&128u32.to_le_bytes());
        space[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        space[34..36].copy_from_slice(&1u16.to_le_bytes());
        let mut out = vec![0u8; size as usize];
        let start = offset as usize;
        if start < space.len() {
            let n = (space.len() - start).min(out.len());
            out[..n].copy_from_slice(&space[start..start + n]);
        }
        out
    }
}
