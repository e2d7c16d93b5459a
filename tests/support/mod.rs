//! What the integration tests share: running the real `cprkit` binary (with
//! the refvmm and device daemon it hosts), its output as one text, and whether QEMU 10.0+
//! is installed (required under CI), and Cloud Hypervisor (never required).

#![allow(dead_code)] // each test binary uses its own part

use std::path::Path;
use std::process::{Command, Output};

/// Runs `cprkit` with `args` and extra environment variables.
pub fn cprkit(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cprkit"));
    cmd.args(args)
        .env(cprkit_test_support::HOST_ENV, env!("CARGO_BIN_EXE_cprkit"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("cprkit runs")
}

/// stdout then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Whether QEMU 10.0 or newer is installed; under CI (`CI=true`) it must be.
pub fn qemu_installed() -> bool {
    let found = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("QEMU emulator version 1"));
    if !found {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "QEMU 10.0+ is required under CI"
        );
        eprintln!("SKIPPED: QEMU 10.0 or newer not found (see README: bookworm-backports)");
    }
    found
}

/// Checks `doc` against the JSON Schema `docs/NAME` (draft 2020-12), naming
/// every error.
pub fn assert_matches_schema(doc: &serde_json::Value, name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema: serde_json::Value = serde_json::from_str(&text).expect("the schema is JSON");
    jsonschema::meta::validate(&schema).expect("a valid draft 2020-12 schema");
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the document does not match docs/{name}:\n{}",
        errors.join("\n")
    );
}

/// Whether Cloud Hypervisor is there for `--vmm cloud-hypervisor`: the binary
/// `$CPRKIT_CLOUD_HYPERVISOR` names, else `cloud-hypervisor` on PATH. Never
/// required (CI has none): a test without it prints why it is skipped.
pub fn cloud_hypervisor_installed() -> bool {
    let binary = std::env::var_os("CPRKIT_CLOUD_HYPERVISOR")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "cloud-hypervisor".into());
    let found = Command::new(&binary)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).starts_with("cloud-hypervisor v"));
    if !found {
        eprintln!(
            "SKIPPED: Cloud Hypervisor not found (set CPRKIT_CLOUD_HYPERVISOR to its binary, or put cloud-hypervisor on PATH)"
        );
    }
    found
}

fn example_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/exec-adapter")
}

/// An adapter program: the example, refusing a valid `migrate` every other
/// time it is asked (the first, the third, ...), counted in a file of `dir`
/// shared by every launch.
pub fn flaky_adapter(dir: &Path) -> String {
    let path = dir.join("flaky_adapter.py");
    cprkit_test_support::write_script(
        &path,
        &format!(
            r#"#!/usr/bin/env python3
import fcntl, os, sys
sys.path.insert(0, {example:?})
import refvmm_adapter as a

COUNTER = {counter:?}

def next_count():
    fd = os.open(COUNTER, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        n = int(os.read(fd, 32) or b"0") + 1
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, str(n).encode())
        return n
    finally:
        os.close(fd)

class Flaky(a.Session):
    def monitor(self, name, req):
        if name == "migrate" and not req.get("malformed") and next_count() % 2 == 1:
            raise a.Failure("refused", "not this time", "migrate")
        return super().monitor(name, req)

a.Session = Flaky
a.main()
"#,
            example = example_dir().display().to_string(),
            counter = dir.join("migrates").display().to_string(),
        ),
    );
    format!("exec:{}", path.display())
}
