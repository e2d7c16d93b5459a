//! refvmm, cprkit's reference VMM.
//!
//! A small VMM process: guest RAM in a memfd, a vCPU thread running a guest
//! workload that writes sequence-numbered records into guest RAM, a QMP monitor
//! on a UNIX socket, and cpr-transfer (source and target side) in the order the
//! contract (`CONTRACT.md`) prescribes. Named [`MUTANTS`] turn on real bugs, so
//! the kit can prove that each of its checks catches something.
//!
//! The guest RAM layout below is a contract with the kit, which reads guest RAM
//! through `/proc/PID/fd` while the VMM runs.

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
pub mod proto;
pub mod ram;
pub mod runstate;
pub mod source;
pub mod target;
pub mod vcpu;
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
