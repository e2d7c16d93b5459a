//! The private directory of one trial (mode 0700): its sockets and its logs.
//! Removed when the trial ends, unless the user asked to keep it.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::runowner::{Owner, RUN_PREFIX};

/// A directory builder whose directories are 0700 whatever the umask.
fn private() -> tempfile::Builder<'static, 'static> {
    let mut b = tempfile::Builder::new();
    b.permissions(std::fs::Permissions::from_mode(0o700));
    b
}

/// A trial's directory.
pub struct TrialDir {
    dir: Option<TempDir>,
    path: PathBuf,
}

impl TrialDir {
    /// Creates a fresh 0700 directory under `root` (a run's directory), or, with
    /// `keep`, directly in the system temp dir where it stays after the trial.
    pub fn new(root: &Path, label: &str, keep: bool) -> io::Result<Self> {
        let label: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        if keep {
            let dir = tempfile::Builder::new()
                .prefix(&format!("cprkit-{label}-"))
                .tempdir()?;
            let path = dir.keep();
            Ok(TrialDir { dir: None, path })
        } else {
            // Keep socket paths short (sun_path holds 108 bytes).
            let dir = private().prefix("t").tempdir_in(root)?;
            let path = dir.path().to_path_buf();
            Ok(TrialDir {
                dir: Some(dir),
                path,
            })
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Whether the directory outlives the trial.
    pub fn kept(&self) -> bool {
        self.dir.is_none()
    }
}

/// The directory a run puts its trial directories in (0700, removed at the
/// end): `cprkit-run-PID-XXXXXX` in the temp directory, its owner named in it
/// (see [`runowner`](crate::runowner)) so that a later run can remove it should
/// this one be killed before it could.
pub struct RunRoot {
    dir: TempDir,
}

impl RunRoot {
    pub fn new() -> io::Result<Self> {
        let owner = Owner::me()?;
        let dir = private()
            .prefix(&format!("{RUN_PREFIX}{}-", owner.pid))
            .tempdir()?;
        owner.write(dir.path())?;
        Ok(RunRoot { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Removes the directory and all in it, saying why it could not.
    pub fn remove(self) -> io::Result<()> {
        let path = self.dir.path().to_path_buf();
        // Trials still running may add a file while it goes: a few tries.
        let mut result = self.dir.close();
        for _ in 0..3 {
            if result.is_ok() || !path.exists() {
                break;
            }
            result = std::fs::remove_dir_all(&path);
        }
        if path.exists() { result } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_and_removed() {
        let root = RunRoot::new().unwrap();
        let d = TrialDir::new(root.path(), "x", false).unwrap();
        let p = d.path().to_path_buf();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(d);
        assert!(!p.exists());
        let r = root.path().to_path_buf();
        assert!(
            r.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&format!("{RUN_PREFIX}{}-", std::process::id()))
        );
        assert_eq!(
            crate::runowner::Owner::read(&r).unwrap(),
            Some(Owner::me().unwrap())
        );
        root.remove().unwrap();
        assert!(!r.exists());
    }

    #[test]
    fn kept_on_request() {
        let root = RunRoot::new().unwrap();
        let d = TrialDir::new(root.path(), "refvmm::a/b@c", true).unwrap();
        let p = d.path().to_path_buf();
        drop(d);
        assert!(p.exists());
        std::fs::remove_dir_all(p).unwrap();
    }
}
