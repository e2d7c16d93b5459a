//! The certification bundle: a directory holding
//!
//! - `report.md`: the report for people;
//! - `report.json`: the same for machines (docs/report.schema.json);
//! - `junit.xml`: a test case per trial, for CI;
//! - `timelines/NAME.txt` and `timelines/NAME.svg`: each judged trial's
//!   timeline, drawn as text (`cprkit explain`'s drawing) and as a picture,
//!   NAME being the trial name made safe for file systems ([`safe_name`]).

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use cprkit_harness::explain;
use cprkit_suite::runner::{TrialResult, Verdicts};

use crate::model::{Report, TimelineFiles};
use crate::{junit, markdown, svg};

/// The files of a bundle, besides `timelines/`.
pub const FILES: [&str; 3] = ["report.md", "report.json", "junit.xml"];
pub const TIMELINES: &str = "timelines";

/// A trial name as a file name: every character but ASCII letters, digits,
/// `-`, `.` and `@` becomes `_` (`refvmm:copy-ram::memory-running/cancel@cpr-save`
/// is `refvmm_copy-ram__memory-running_cancel@cpr-save`), and a leading `.` too.
pub fn safe_name(trial: &str) -> String {
    let s: String = trial
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '@') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match s.strip_prefix('.') {
        Some(rest) => format!("_{rest}"),
        None if s.is_empty() => "_".into(),
        None => s,
    }
}

fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Makes `dir` ready for a bundle: creates it, or empties a previous bundle
/// there. A directory that holds other things is refused, so that a wrong
/// `--out` never deletes anything else. Call it before the trials run, so that
/// a bad `--out` fails at once.
pub fn prepare(dir: &Path) -> io::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            let is_empty = entries.next().is_none();
            if !is_empty {
                if !dir.join("report.json").is_file() {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!(
                            "{} is not empty and holds no cprkit bundle (no report.json): choose another --out",
                            dir.display()
                        ),
                    ));
                }
                for f in FILES {
                    let p = dir.join(f);
                    match std::fs::remove_file(&p) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(at(&p, e)),
                        _ => {}
                    }
                }
                let t = dir.join(TIMELINES);
                if t.exists() {
                    std::fs::remove_dir_all(&t).map_err(|e| at(&t, e))?;
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(at(dir, e)),
    }
    let t = dir.join(TIMELINES);
    std::fs::create_dir_all(&t).map_err(|e| at(&t, e))
}

fn write(path: PathBuf, text: &str) -> io::Result<()> {
    std::fs::write(&path, text).map_err(|e| at(&path, e))
}

/// Writes the bundle of `report` (made from `results`, in the same order) to
/// `dir`, made ready by [`prepare`], noting each trial's timeline files in the
/// report.
pub fn write_bundle(dir: &Path, report: &mut Report, results: &[TrialResult]) -> io::Result<()> {
    let t = dir.join(TIMELINES);
    std::fs::create_dir_all(&t).map_err(|e| at(&t, e))?;
    let mut used = BTreeSet::new();
    for (t, r) in report.trials.iter_mut().zip(results) {
        debug_assert_eq!(t.name, r.name());
        let Verdicts::Judged {
            record, verdicts, ..
        } = &r.verdicts
        else {
            continue;
        };
        let base = safe_name(&t.name);
        let mut stem = base.clone();
        let mut n = 1;
        while !used.insert(stem.clone()) {
            n += 1;
            stem = format!("{base}-{n}");
        }
        let files = TimelineFiles {
            text: format!("{TIMELINES}/{stem}.txt"),
            svg: format!("{TIMELINES}/{stem}.svg"),
        };
        write(dir.join(&files.text), &explain::draw(record, verdicts))?;
        write(dir.join(&files.svg), &svg::draw(record, verdicts))?;
        t.timeline = Some(files);
    }
    write(dir.join("report.json"), &report.to_json())?;
    write(dir.join("report.md"), &markdown::render(report))?;
    write(dir.join("junit.xml"), &junit::render(report))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_names() {
        assert_eq!(
            safe_name("refvmm:copy-ram::memory-running/bad-request:private-ram@source-stop"),
            "refvmm_copy-ram__memory-running_bad-request_private-ram@source-stop"
        );
        assert_eq!(safe_name("../x"), "_._x");
        assert_eq!(safe_name(""), "_");
    }
}
