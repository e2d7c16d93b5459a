//! What the integration tests share: running the real `cprkit` binary (with
//! the refvmm and device daemon it hosts), its output as one text, and
//! running a file's tests as libtest-mimic trials, those that need QEMU or
//! Cloud Hypervisor ignored with the reason where it is optional and absent
//! and failed where it is required (`cprkit_adapters::requirements`).

#![allow(dead_code)] // each test binary uses its own part

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, ExitCode, Output};

use cprkit_adapters::requirements::{Availability, Part, Policy};
use cprkit_test_support::{Absent, trial};

/// Runs `cprkit` with `args` and extra environment variables.
pub fn cprkit(args: &[&str], env: &[(&str, &Path)]) -> Output {
    static PATH: std::sync::OnceLock<std::ffi::OsString> = std::sync::OnceLock::new();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cprkit"));
    cmd.args(args)
        .env(cprkit_test_support::HOST_ENV, env!("CARGO_BIN_EXE_cprkit"))
        .env(
            "PATH",
            PATH.get_or_init(cprkit_test_support::path_with_python_first),
        );
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

/// A test of a file run by [`run_tests`]: its name, the external part it
/// needs (if any), the test (a panic fails it).
pub type Test = (&'static str, Option<Part>, fn());

/// What becomes here of a test that needs `part`, as
/// `cprkit_adapters::requirements` decides: `None` when the part is here.
pub fn absent(part: Part) -> Option<Absent> {
    let policy = Policy::for_tests().unwrap_or_else(|e| panic!("{e}"));
    match policy.availability(part) {
        Availability::Present => None,
        Availability::Optional(why) => Some(Absent::Ignored(why)),
        Availability::Missing(e) => Some(Absent::Required(e)),
    }
}

/// Runs `tests` as libtest-mimic trials (the main of a `harness = false`
/// test file): one that needs a part that is absent is ignored with the
/// reason where the part is optional, failed where it is required. `also`
/// overrides that for a test that cannot run for a reason of its own.
pub fn run_tests(tests: &[Test], also: &[(&str, Absent)]) -> ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let mut judged: BTreeMap<Part, Option<Absent>> = BTreeMap::new();
    let trials = tests
        .iter()
        .map(|(name, part, test)| {
            let mut why = part.and_then(|p| judged.entry(p).or_insert_with(|| absent(p)).clone());
            if why.is_none() {
                why = also.iter().find(|(n, _)| n == name).map(|(_, a)| a.clone());
            }
            trial(name, why.as_ref(), *test)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
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
