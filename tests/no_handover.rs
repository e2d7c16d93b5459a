//! Nothing passes on nothing: VMMs that never hand over are not certified.
//! Each is driven through an exec adapter, as an outside user would: one whose
//! adapter answers every valid `migrate` with a refusal (the VMM has no
//! cpr-transfer), one whose VMM crashes on it, one whose VMM never answers.
//! And a certification whose trials never exercise a rule of the profile
//! certifies nothing.

use std::path::{Path, PathBuf};

use serde_json::Value;

mod support;
use support::{cprkit, text};

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/exec-adapter")
}

fn example() -> String {
    format!("exec:{}", example_dir().join("refvmm_adapter.py").display())
}

/// An adapter program: the example, with `migrate` of a valid request
/// answered `refused` by the adapter itself.
fn refusing_adapter(dir: &Path) -> String {
    let path = dir.join("no_cpr_adapter.py");
    cprkit_test_support::write_script(
        &path,
        &format!(
            r#"#!/usr/bin/env python3
import sys
sys.path.insert(0, {example:?})
import refvmm_adapter as a

class NoCpr(a.Session):
    def monitor(self, name, req):
        if name == "migrate" and not req.get("malformed"):
            raise a.Failure("refused", "cpr-transfer is not supported", "migrate")
        return super().monitor(name, req)

a.Session = NoCpr
a.main()
"#,
            example = example_dir().display().to_string()
        ),
    );
    format!("exec:{}", path.display())
}

/// `certify --profile memory` of `vmm`; its report.json.
fn certify(vmm: &str, out: &Path, env: &[(&str, &Path)]) -> (std::process::Output, Value) {
    let o = cprkit(
        &[
            "certify",
            "--vmm",
            vmm,
            "--profile",
            "memory",
            "--out",
            out.to_str().unwrap(),
        ],
        env,
    );
    let json = std::fs::read_to_string(out.join("report.json"))
        .map(|t| serde_json::from_str(&t).expect("report.json parses"))
        .unwrap_or(Value::Null);
    (o, json)
}

fn reasons(json: &Value) -> Vec<String> {
    json["reasons"]
        .as_array()
        .map(|a| a.iter().map(|r| r.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn rule<'j>(json: &'j Value, id: &str) -> &'j Value {
    json["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no rule {id} in the report"))
}

/// A cases directory with one memory case of these points.
fn one_case(points: &str) -> tempfile::TempDir {
    let cases = tempfile::tempdir().unwrap();
    std::fs::write(
        cases.path().join("m.toml"),
        format!("profile = \"memory\"\nguest = \"running\"\npoints = {points}\n"),
    )
    .unwrap();
    cases
}

#[test]
fn a_vmm_that_refuses_every_migrate_is_not_certified() {
    let dir = tempfile::tempdir().unwrap();
    let vmm = refusing_adapter(dir.path());
    let out = dir.path().join("bundle");
    let (o, json) = certify(&vmm, &out, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("NOT CERTIFIED"), "{}", text(&o));
    assert_eq!(json["verdict"], "not-certified");
    let why = reasons(&json);
    assert!(
        why.iter().any(|r| r.starts_with("DONE-0 broken in")),
        "{why:?}"
    );
    assert!(
        why.iter().any(|r| r.starts_with("REACH-1 broken in")),
        "{why:?}"
    );
    // Per rule: how many trials exercised it, passed it, broke it.
    let done0 = rule(&json, "DONE-0");
    assert_eq!(done0["verdict"], "fail");
    assert!(done0["exercised_in"].as_u64().unwrap() > 0);
    assert_eq!(
        done0["exercised_in"].as_u64(),
        Some(done0["passed_in"].as_u64().unwrap() + done0["broken_in"].as_u64().unwrap())
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("a valid migrate was refused, during a fault-free handover"),
        "{report}"
    );
    assert!(
        report
            .contains("was never reached: the trial tested nothing it names (explained by DONE-0"),
        "{report}"
    );
}

#[test]
fn a_vmm_that_crashes_on_migrate_is_not_certified_and_its_death_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    let (o, json) = certify(
        &example(),
        &out,
        &[("CPRKIT_EXEC_MUTANT", Path::new("crash-on-migrate"))],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let why = reasons(&json);
    for id in ["DONE-0", "LIVE-1", "REACH-1"] {
        assert!(
            why.iter()
                .any(|r| r.starts_with(&format!("{id} broken in"))),
            "{id} not named: {why:?}"
        );
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("the source died (killed by SIGABRT) during a fault-free handover"),
        "{report}"
    );
}

#[test]
fn a_vmm_that_never_answers_migrate_is_not_certified() {
    let cases = one_case("[\"no-fault\", \"kill-target@cpr-save\"]");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    let (o, json) = certify(
        &example(),
        &out,
        &[
            ("CPRKIT_EXEC_MUTANT", Path::new("hang-on-migrate")),
            ("CPRKIT_CASES", cases.path()),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let why = reasons(&json);
    assert!(
        why.iter()
            .any(|r| r.starts_with("DONE-0 broken in 2 trials")),
        "{why:?}"
    );
    assert!(
        why.iter()
            .any(|r| r.starts_with("REACH-1 broken in 1 trial")),
        "{why:?}"
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("a valid migrate was never answered"),
        "{report}"
    );
}

#[test]
fn a_rule_no_trial_exercised_certifies_nothing() {
    // The correct refvmm, but only a fault-free handover: the failure rules
    // and ERR-1 were never judged.
    let cases = one_case("[\"no-fault\"]");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    let (o, json) = certify("refvmm", &out, &[("CPRKIT_CASES", cases.path())]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let why = reasons(&json);
    for id in ["FAIL-1", "ERR-1", "REACH-1"] {
        assert!(
            why.iter()
                .any(|r| r.starts_with(&format!("{id} was never exercised"))),
            "{id}: {why:?}"
        );
    }
    assert!(
        !why.iter().any(|r| r.starts_with("DONE-0")),
        "DONE-0 passed: {why:?}"
    );
    assert_eq!(rule(&json, "ERR-1")["exercised_in"], 0);
}
