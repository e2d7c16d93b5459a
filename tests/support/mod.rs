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
