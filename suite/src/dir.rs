//! Finding the case files of a directory tree and loading them all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{Case, CaseError};

/// Whether a directory entry is kept out of the search for case files (hidden
/// ones: `.git`, an editor's folders).
fn skipped_dir(name: &str) -> bool {
    name.starts_with('.')
}

/// Every `*.toml` case file under `dir`, recursively.
fn case_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CaseError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CaseError::Io { path, source }
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Directories are not followed through symlinks (no loops); files are.
        let ty = entry.file_type().map_err(io_err(&path))?;
        if ty.is_dir() {
            if !skipped_dir(&name) {
                case_files(&path, out)?;
            }
        } else if name.ends_with(".toml") && path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// Loads every case under `dir` (recursively), sorted by name. Two files with
/// the same name are an error naming both.
pub fn load_dir(dir: &Path) -> Result<Vec<Case>, CaseError> {
    let mut files = Vec::new();
    case_files(dir, &mut files)?;
    let mut cases: BTreeMap<String, Case> = BTreeMap::new();
    for file in files {
        let case = Case::load(&file)?;
        if let Some(first) = cases.get(&case.name) {
            return Err(CaseError::DuplicateName {
                name: case.name,
                first: first.path.clone(),
                second: file,
            });
        }
        cases.insert(case.name.clone(), case);
    }
    Ok(cases.into_values().collect())
}
