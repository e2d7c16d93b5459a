//! `cprkit`: the command line of the cpr-transfer conformance kit.
//!
//! Exit status: 0 when every outcome is as expected, 1 when one is not, 2 for a
//! usage or environment error (with a message that says what to do).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cprkit: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
