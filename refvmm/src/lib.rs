//! refvmm, cprkit's reference VMM.
//!
//! A small VMM process: guest RAM in a memfd, a vCPU thread running a guest
//! workload that writes sequence-numbered records into guest RAM, a QMP monitor
//! on a UNIX socket, and cpr-transfer (source and target side) in the order the
//! contract (docs/contract.md) prescribes. Named [`MUTANTS`] turn on real bugs, so
//! the kit can prove that each of its checks catches something.
//!
//! The guest RAM layout below is a contract with the kit, which reads guest RAM
//! through `/proc/PID/fd` while the VMM runs.

pub mod blk;
pub mod boot;
pub mod channels;
pub mod cli;
pub mod commands;
pub mod listen;
pub mod log;
pub mod migration;
pub mod monitor;
pub mod mutant;
pub mod outbox;
pub mod parkable;
pub mod proto;
pub mod ram;
pub mod runstate;
pub mod source;
pub mod target;
pub mod vcpu;
pub mod vhost_kernel;
pub mod vm;

pub use mutant::{MUTANTS, Mutant};

/// Offset in guest RAM of the counter: a little-endian u64, the last sequence
/// number the guest wrote.
pub const COUNTER_OFFSET: usize = 0x1000;
/// Offset in guest RAM of the ring of [`RING_ENTRIES`] records of 16 bytes:
/// record `seq` lives in slot `seq % RING_ENTRIES` as `(seq, seq ^ RING_CHECK)`,
/// both little-endian u64.
pub const RING_OFFSET: usize = 0x2000;
/// Number of slots in the record ring.
pub const RING_ENTRIES: u64 = 256;
/// Size of one ring record, in bytes.
pub const RING_RECORD_SIZE: usize = 16;
/// The check word of a record is `seq ^ RING_CHECK`.
pub const RING_CHECK: u64 = 0x5A5A_5A5A_5A5A_5A5A;
/// Name of the guest RAM memfd (it shows as `/memfd:cprkit-ram (deleted)`).
pub const RAM_MEMFD_NAME: &str = "cprkit-ram";
/// Default guest RAM size (4 MiB).
pub const DEFAULT_RAM_SIZE: u64 = 4 * 1024 * 1024;
/// Smallest guest RAM that holds the counter and the ring.
pub const MIN_RAM_SIZE: u64 = (RING_OFFSET + RING_ENTRIES as usize * RING_RECORD_SIZE) as u64;

// The vhost-user-blk device's part of guest RAM (used only with
// `--vhost-user-blk`), after the record ring: one split virtqueue of
// [`VQ_SIZE`] entries and the buffers of the one request in flight. The guest
// physical address of an offset is the offset itself (one region at 0).

/// Entries in the virtqueue (queue 0 of the vhost-user-blk device).
pub const VQ_SIZE: u16 = 16;
/// Offset of the virtqueue's descriptor table: [`VQ_SIZE`] descriptors of 16
/// bytes (`addr` u64, `len` u32, `flags` u16, `next` u16).
pub const VQ_DESC_OFFSET: usize = 0x3000;
/// Offset of the available ring: `flags` u16, `idx` u16, `ring[VQ_SIZE]` u16.
/// Its `idx` is the driver's ring index, the one the device's base follows.
pub const VQ_AVAIL_OFFSET: usize = 0x3100;
/// Offset of the used ring: `flags` u16, `idx` u16, `ring[VQ_SIZE]` of
/// (`id` u32, `len` u32).
pub const VQ_USED_OFFSET: usize = 0x3200;
/// Offset of the request header (`type` u32, reserved u32, `sector` u64).
pub const BLK_HDR_OFFSET: usize = 0x3400;
/// Offset of the request's status byte (written by the device; 0 is OK).
pub const BLK_STATUS_OFFSET: usize = 0x3410;
/// Offset of the guest's request counter: a little-endian u64, the number of
/// the last request the guest submitted (it stamps the sectors it writes).
pub const BLK_SEQ_OFFSET: usize = 0x3418;
/// Offset of the request's 512-byte data buffer.
pub const BLK_DATA_OFFSET: usize = 0x3600;
/// Size of a sector and of the data buffer.
pub const BLK_SECTOR_SIZE: usize = 512;
/// Smallest guest RAM that also holds the vhost-user-blk ring and buffers
/// (the minimum with `--vhost-user-blk`; [`MIN_RAM_SIZE`] stays as it is
/// without it).
pub const MIN_RAM_SIZE_BLK: u64 = (BLK_DATA_OFFSET + BLK_SECTOR_SIZE) as u64;

/// Runs refvmm with the given command-line arguments (without the program
/// name). Returns the exit status for the cases that return (usage errors,
/// `--list-mutants`); a running VMM ends the process itself (`quit`, or a
/// target whose incoming migration fails).
pub fn run(args: Vec<String>) -> i32 {
    let cfg = match cli::parse(&args) {
        Ok(cli::Parsed::ListMutants) => {
            for (name, desc) in MUTANTS {
                println!("{name}\t{desc}");
            }
            return 0;
        }
        Ok(cli::Parsed::Run(cfg)) => cfg,
        Err(e) => {
            eprintln!("refvmm: {e}");
            eprintln!("{}", cli::USAGE);
            return 2;
        }
    };
    match &cfg.incoming {
        Some(incoming) => target::run(&cfg, incoming),
        None => boot::run(&cfg),
    }
}

/// The entry point of the `refvmm` binary: [`run`] with the process arguments.
pub fn main() -> ! {
    std::process::exit(run(std::env::args().skip(1).collect()))
}
