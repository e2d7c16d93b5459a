//! The driver side of one split virtqueue (virtio 1.x, 2.7) in guest RAM:
//! writing descriptors, publishing a chain in the available ring, and reading
//! the used ring the device fills. The ring lives at [`crate::VQ_DESC_OFFSET`],
//! [`crate::VQ_AVAIL_OFFSET`] and [`crate::VQ_USED_OFFSET`]; its indices live in
//! guest RAM too, so a target that maps the same RAM carries on from them.

use std::sync::atomic::{Ordering, fence};

use vhost::VringConfigData;

use crate::ram::GuestRam;
use crate::{VQ_AVAIL_OFFSET, VQ_DESC_OFFSET, VQ_SIZE, VQ_USED_OFFSET};

/// The descriptor continues in `next`.
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
/// The device writes the buffer (otherwise it reads it).
pub const VIRTQ_DESC_F_WRITE: u16 = 2;

/// One descriptor: a buffer of guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    /// Guest physical address (= offset in guest RAM).
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

/// A completion in the used ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Used {
    /// Head of the completed chain.
    pub id: u32,
    /// Bytes the device wrote.
    pub len: u32,
}

/// The driver's view of the queue in guest RAM.
#[derive(Debug, Clone, Copy)]
pub struct SplitQueue<'a> {
    ram: &'a GuestRam,
}

impl<'a> SplitQueue<'a> {
    /// The queue in `ram` (the layout is fixed; nothing is written).
    pub fn new(ram: &'a GuestRam) -> Self {
        Self { ram }
    }

    /// The addresses of the ring in this process's mapping, for
    /// SET_VRING_ADDR (vhost-user takes frontend virtual addresses).
    pub fn vring_config(&self) -> VringConfigData {
        let base = self.ram.host_addr();
        VringConfigData {
            queue_max_size: VQ_SIZE,
            queue_size: VQ_SIZE,
            flags: 0,
            desc_table_addr: base + VQ_DESC_OFFSET as u64,
            used_ring_addr: base + VQ_USED_OFFSET as u64,
            avail_ring_addr: base + VQ_AVAIL_OFFSET as u64,
            log_addr: None,
        }
    }

    /// Writes descriptor `i`. The device reads it only once its chain is
    /// published (the release fence in [`Self::publish`] orders it).
    pub fn write_desc(&self, i: u16, d: Desc) {
        assert!(i < VQ_SIZE, "descriptor {i} out of the table");
        let off = VQ_DESC_OFFSET + usize::from(i) * 16;
        self.ram.store_u64(off, d.addr);
        let word = u64::from(d.len) | u64::from(d.flags) << 32 | u64::from(d.next) << 48;
        self.ram.store_u64(off + 8, word);
    }

    /// The driver's ring index: `avail.idx`, the number of chains published
    /// so far (wrapping).
    pub fn avail_idx(&self) -> u16 {
        self.ram.load_u16(VQ_AVAIL_OFFSET + 2)
    }

    /// The device's completion index: `used.idx` (wrapping).
    pub fn used_idx(&self) -> u16 {
        let idx = self.ram.load_u16(VQ_USED_OFFSET + 2);
        // The used elements before `idx` are read after it.
        fence(Ordering::Acquire);
        idx
    }

    /// Publishes the chain at `head`: its slot in the available ring, then
    /// (after a release fence, so the device sees the descriptors and the slot
    /// first) the new `avail.idx`, then a full fence before the caller kicks,
    /// so the index is visible before the device is notified. Returns the new
    /// `avail.idx`.
    pub fn publish(&self, head: u16) -> u16 {
        let idx = self.avail_idx();
        let slot = VQ_AVAIL_OFFSET + 4 + usize::from(idx % VQ_SIZE) * 2;
        self.ram.store_u16(slot, head);
        fence(Ordering::Release);
        let next = idx.wrapping_add(1);
        self.ram.store_u16(VQ_AVAIL_OFFSET + 2, next);
        fence(Ordering::SeqCst);
        next
    }

    /// The used element the device wrote for completion number `idx` (read
    /// only after [`Self::used_idx`] went past it).
    pub fn used_elem(&self, idx: u16) -> Used {
        let off = VQ_USED_OFFSET + 4 + usize::from(idx % VQ_SIZE) * 8;
        Used {
            id: self.ram.load_u32(off),
            len: self.ram.load_u32(off + 4),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_is_laid_out_as_virtio_says() {
        let ram = GuestRam::new_memfd(crate::MIN_RAM_SIZE_BLK).unwrap();
        let q = SplitQueue::new(&ram);
        q.write_desc(
            1,
            Desc {
                addr: 0x1234,
                len: 512,
                flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
                next: 2,
            },
        );
        assert_eq!(ram.load_u64(VQ_DESC_OFFSET + 16), 0x1234);
        assert_eq!(ram.load_u32(VQ_DESC_OFFSET + 24), 512);
        assert_eq!(ram.load_u16(VQ_DESC_OFFSET + 28), 3);
        assert_eq!(ram.load_u16(VQ_DESC_OFFSET + 30), 2);
        for i in 0..=VQ_SIZE {
            assert_eq!(q.publish(i % 3), i + 1);
        }
        assert_eq!(q.avail_idx(), VQ_SIZE + 1);
        // Slot 0 was written twice (idx 0 and VQ_SIZE).
        assert_eq!(ram.load_u16(VQ_AVAIL_OFFSET + 4), VQ_SIZE % 3);
        ram.store_u32(VQ_USED_OFFSET + 4 + 8 * 5, 7);
        ram.store_u32(VQ_USED_OFFSET + 8 + 8 * 5, 16);
        ram.store_u16(VQ_USED_OFFSET + 2, 6);
        assert_eq!(q.used_idx(), 6);
        assert_eq!(q.used_elem(5), Used { id: 7, len: 16 });
        let cfg = q.vring_config();
        assert_eq!(
            cfg.avail_ring_addr - cfg.desc_table_addr,
            (VQ_AVAIL_OFFSET - VQ_DESC_OFFSET) as u64
        );
    }
}
