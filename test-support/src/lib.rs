//! What cprkit's tests share, and nothing else: a dev-only crate.
//!
//! - [`write_script`]: writing an executable script without leaving a writable
//!   fd of this process open (which would make running it fail with ETXTBSY);
//! - [`HOST_ENV`]: the variable that points the kit at a program hosting its
//!   helpers (refvmm, the device daemon), so that a test runs the helpers of
//!   the build under test and never a stale binary left beside it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The environment variable naming the program that hosts the kit's helpers
/// (cprkit-harness's `launcher`): tests set it to the `cprkit` binary cargo
/// built for them (`env!("CARGO_BIN_EXE_cprkit")`).
pub use cprkit_harness::launcher::HOST_ENV;

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
}
