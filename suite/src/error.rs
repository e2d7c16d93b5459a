//! Why a case file could not be loaded: the file, the line and the field.

use std::io;
use std::path::{Path, PathBuf};

/// Why a case file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// The file or directory could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}:{line}: bad TOML: {message}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        message: String,
    },
    /// A field is missing, unknown, of the wrong type or has a bad value.
    #[error("{}:{line}: field `{field}`: {message}", file.display())]
    Field {
        file: PathBuf,
        line: usize,
        field: String,
        message: String,
    },
    /// The file's stem cannot be a case name.
    #[error("{}: bad case name `{name}`: {message}", file.display())]
    BadName {
        file: PathBuf,
        name: String,
        message: String,
    },
    /// Two case files have the same stem.
    #[error("{}: case `{name}` is already defined by {}", second.display(), first.display())]
    DuplicateName {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
}

impl CaseError {
    /// The file the error is about (the second one for a duplicate name).
    pub fn file(&self) -> &Path {
        match self {
            CaseError::Io { path, .. } => path,
            CaseError::Syntax { file, .. }
            | CaseError::Field { file, .. }
            | CaseError::BadName { file, .. } => file,
            CaseError::DuplicateName { second, .. } => second,
        }
    }

    /// The 1-based line, for errors inside a file.
    pub fn line(&self) -> Option<usize> {
        match self {
            CaseError::Syntax { line, .. } | CaseError::Field { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// The field, for errors about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            CaseError::Field { field, .. } => Some(field),
            _ => None,
        }
    }
}
