//! What cprkit's tests share, and nothing else: a dev-only crate.
//!
//! - [`write_script`]: writing an executable script without leaving a writable
//!   fd of this process open (which would make running it fail with ETXTBSY);
//! - [`HOST_ENV`]: the variable that points the kit at a program hosting its
//!   helpers (refvmm, the device daemon), so that a test runs the helpers of
//!   the build under test and never a stale binary left beside it;
//! - [`path_with_python_first`]: the `PATH` under which an adapter program's
//!   `#!/usr/bin/env python3` starts the interpreter itself, not a version
//!   manager's shim in front of it;
//! - [`trial`]: a test that needs an external part (QEMU, Cloud Hypervisor)
//!   as a libtest-mimic trial: run where the part is here, ignored with the
//!   reason where it is optional and absent, failed where it is required and
//!   absent; never an `ok` that tested nothing.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The environment variable naming the program that hosts the kit's helpers
/// (cprkit-harness's `launcher`): tests set it to the `cprkit` binary cargo
/// built for them (`env!("CARGO_BIN_EXE_cprkit")`).
pub use cprkit_harness::launcher::HOST_ENV;

/// `PATH` with the directory of the `python3` interpreter itself first,
/// where `python3` on `PATH` is a version manager's shim (pyenv's is a
/// shell script that costs 90 ms a start here, twice Python's own start-up,
/// and the exec adapter's tests start four Python programs a trial); `PATH`
/// as it is otherwise. The interpreter is the one the shim runs.
pub fn path_with_python_first() -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dir = Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(os.path.dirname(sys.executable))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|d| !d.is_empty());
    let Some(dir) = dir else {
        return path;
    };
    let mut dirs: Vec<std::path::PathBuf> = vec![dir.into()];
    dirs.extend(std::env::split_paths(&path));
    std::env::join_paths(dirs).unwrap_or(path)
}

/// Writes `text` to `path` as an executable script, without holding a
/// writable fd of this process: a child (`sh`) writes it. A file this process
/// had open for writing could leak, between fork and exec, into a program
/// another test thread starts, and executing the script would then fail with
/// ETXTBSY.
pub fn write_script(path: &Path, text: &str) {
    let mut child = Command::new("sh")
        .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("sh runs");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .expect("script written");
    assert!(
        child.wait().expect("sh ends").success(),
        "writing {}",
        path.display()
    );
}

/// What becomes of a test whose external part is absent (what
/// `cprkit_adapters::requirements` decided).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Absent {
    /// Optional: the test is ignored, with this reason.
    Ignored(String),
    /// Required: the test fails with this error (the part, how to install it).
    Required(String),
}

/// The libtest-mimic trial of the test `name`: `test` runs (a panic fails
/// it) unless `absent` says the part it needs is absent. Ignored, it shows
/// its reason as its kind (`[not run: ...] name ... ignored`) and fails if
/// run anyway (`--include-ignored`): it cannot run, and passes nothing.
pub fn trial(name: &str, absent: Option<&Absent>, test: fn()) -> libtest_mimic::Trial {
    use libtest_mimic::Trial;
    match absent.cloned() {
        None => Trial::test(name, move || {
            test();
            Ok(())
        }),
        Some(Absent::Ignored(why)) => {
            let kind = format!("not run: {why}");
            Trial::test(name, move || Err(format!("not run: {why}").into()))
                .with_ignored_flag(true)
                .with_kind(kind)
        }
        Some(Absent::Required(e)) => Trial::test(name, move || Err(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_script_runs() {
        let dir = std::env::temp_dir().join(format!("cprkit-test-support-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hello.sh");
        write_script(&path, "#!/bin/sh\necho hello \"$1\"\n");
        let out = Command::new(&path).arg("there").output().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello there\n");
    }

    fn passes() {}

    #[test]
    fn an_absent_part_ignores_or_fails_the_trial_and_never_passes_it() {
        let here = trial("t", None, passes);
        assert!(!here.has_ignored_flag());
        let why = Absent::Ignored("QEMU not found".into());
        let ignored = trial("t", Some(&why), passes);
        assert!(ignored.has_ignored_flag());
        assert_eq!(ignored.kind(), "not run: QEMU not found");
        let required = trial(
            "t",
            Some(&Absent::Required("QEMU is required".into())),
            passes,
        );
        assert!(!required.has_ignored_flag());
    }
}
