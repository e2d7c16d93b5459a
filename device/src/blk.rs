//! One virtio-blk request: parse the descriptor chain, do it on the disk, write the status.

use std::io::{Read, Write};
use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{ByteValued, GuestMemoryMmap};

use crate::disk::{DISK_ID, DISK_SIZE, Disk, ID_BYTES};

/// VIRTIO_BLK_T_IN.
pub const T_IN: u32 = 0;
/// VIRTIO_BLK_T_OUT.
pub const T_OUT: u32 = 1;
/// VIRTIO_BLK_T_FLUSH.
pub const T_FLUSH: u32 = 4;
/// VIRTIO_BLK_T_GET_ID.
pub const T_GET_ID: u32 = 8;
/// VIRTIO_BLK_S_OK.
pub const S_OK: u8 = 0;
/// VIRTIO_BLK_S_IOERR.
pub const S_IOERR: u8 = 1;
/// VIRTIO_BLK_S_UNSUPP.
pub const S_UNSUPP: u8 = 2;

/// struct virtio_blk_outhdr.
#[derive(Debug, Default, Clone, Copy)]
#[repr(C)]
pub struct RequestHeader {
    pub kind: u32,
    pub ioprio: u32,
    pub sector: u64,
}

// SAFETY: plain old data, every bit pattern is valid.
unsafe impl ByteValued for RequestHeader {}

/// What one request did, for the ledger and the used ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    pub op: &'static str,
    pub sector: u64,
    /// Data bytes moved.
    pub len: u32,
    pub status: u8,
    /// Bytes written into the chain (data + status), for the used element.
    pub written: u32,
}

/// A chain the device cannot even answer (no header, or no room for the status byte).
#[derive(Debug, thiserror::Error)]
pub enum BadChain {
    #[error("descriptor chain unreadable: {0}")]
    Chain(#[from] virtio_queue::Error),
    #[error("request header unreadable: {0}")]
    Header(std::io::Error),
    #[error("no writable byte for the status")]
    NoStatus,
    #[error("status byte unwritable: {0}")]
    Status(std::io::Error),
}

/// Serves one request chain.
pub fn serve<M>(
    disk: &Disk,
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<M>,
) -> Result<Done, BadChain>
where
    M: Deref<Target = GuestMemoryMmap> + Clone,
{
    let mut reader = chain.clone().reader(mem)?;
    let mut writer = chain.writer(mem)?;
    let header: RequestHeader = reader.read_obj().map_err(BadChain::Header)?;
    let room = writer.available_bytes();
    if room == 0 {
        return Err(BadChain::NoStatus);
    }
    let mut status_writer = writer.split_at(room - 1)?;
    let data_room = room - 1;
    let sector = header.sector;
    let (op, len, status) = match header.kind {
        T_IN => {
            let (status, len) = match disk.read(sector, data_room) {
                Ok(data) => match writer.write_all(&data) {
                    Ok(()) => (S_OK, data.len()),
                    Err(_) => (S_IOERR, 0),
                },
                Err(_) => (S_IOERR, 0),
            };
            ("in", len, status)
        }
        T_OUT if reader.available_bytes() > DISK_SIZE => ("out", 0, S_IOERR),
        T_OUT => {
            let mut data = vec![0u8; reader.available_bytes()];
            let status = match reader.read_exact(&mut data) {
                Ok(()) => match disk.write(sector, &data) {
                    Ok(()) => S_OK,
                    Err(_) => S_IOERR,
                },
                Err(_) => S_IOERR,
            };
            ("out", data.len(), status)
        }
        T_FLUSH => ("flush", 0, S_OK),
        T_GET_ID => {
            let mut id = [0u8; ID_BYTES];
            id[..DISK_ID.len()].copy_from_slice(DISK_ID);
            let n = ID_BYTES.min(data_room);
            let status = match writer.write_all(&id[..n]) {
                Ok(()) => S_OK,
                Err(_) => S_IOERR,
            };
            ("get-id", n, status)
        }
        _ => ("unknown", 0, S_UNSUPP),
    };
    status_writer
        .write_all(&[status])
        .map_err(BadChain::Status)?;
    let written = writer.bytes_written() + 1;
    Ok(Done {
        op,
        sector,
        len: len as u32,
        status,
        written: written as u32,
    })
}
