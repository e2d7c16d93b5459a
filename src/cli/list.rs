//! `cprkit list`: the trials, one a line (of one part, with --partition K/N).

use std::io::{ErrorKind, Write};
use std::process::ExitCode;

use anyhow::{Result, bail};

use super::{Select, load_cases};

pub fn run(select: &Select) -> Result<ExitCode> {
    let cases = load_cases()?;
    let selection = select.select(&cases)?;
    if selection.matching == 0 {
        bail!("no trial matches (see `cprkit list` without --case)");
    }
    let mut out = std::io::stdout().lock();
    for p in selection.planned {
        let line = match p.runnable() {
            Ok(()) => writeln!(out, "{}", p.id.name()),
            Err(why) => writeln!(out, "{}  (not run: {why})", p.id.name()),
        };
        match line {
            // The reader stopped (`cprkit list | head`): nothing more to say.
            Err(e) if e.kind() == ErrorKind::BrokenPipe => break,
            other => other?,
        }
    }
    Ok(ExitCode::SUCCESS)
}
