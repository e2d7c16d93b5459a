//! `cprkit`: the command line of the cpr-transfer conformance kit.
//!
//! Exit status: 0 when every outcome is as expected, 1 when one is not, 2 for a
//! usage or environment error (with a message that says what to do), 130 or
//! 143 when SIGINT or SIGTERM stopped the trials (`cli::interrupt`).

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cprkit_adapters::refvmm_adapter::HOSTED_REFVMM_ARG;
use cprkit_harness::device::HOSTED_DEVICE_ARG;
use cprkit_harness::launcher;

fn main() -> ExitCode {
    // `cprkit` hosts refvmm and the device daemon, so `cprkit run` needs
    // nothing else built.
    let mut argv = std::env::args();
    match argv.nth(1).as_deref() {
        Some(HOSTED_REFVMM_ARG) => std::process::exit(refvmm::run(argv.collect())),
        Some(HOSTED_DEVICE_ARG) => std::process::exit(cprkit_device::run(argv.collect())),
        _ => {}
    }
    if let Ok(exe) = std::env::current_exe() {
        launcher::set_host(exe);
    }
    let args = cli::Cli::parse();
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cprkit: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
