//! `cprkit list`: the trials, one a line.

use std::process::ExitCode;

use anyhow::Result;
use cprkit_cases::runner::plan;

use super::{Select, adapters, load_cases};

pub fn run(select: &Select) -> Result<ExitCode> {
    let cases = load_cases()?;
    for p in plan(&adapters(&select.vmm)?, &cases, select.case.as_deref()) {
        match p.case.runnable() {
            Ok(()) => println!("{}", p.id.name()),
            Err(why) => println!("{}  (not run: {why})", p.id.name()),
        }
    }
    Ok(ExitCode::SUCCESS)
}
