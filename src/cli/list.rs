//! `cprkit list`: the trials, one a line (of one part, with --partition K/N).

use std::process::ExitCode;

use anyhow::Result;

use super::{Select, load_cases};

pub fn run(select: &Select) -> Result<ExitCode> {
    let cases = load_cases()?;
    for p in select.select(&cases)?.planned {
        match p.case.runnable() {
            Ok(()) => println!("{}", p.id.name()),
            Err(why) => println!("{}  (not run: {why})", p.id.name()),
        }
    }
    Ok(ExitCode::SUCCESS)
}
