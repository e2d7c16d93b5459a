//! `cprkit certify` and the CI-facing outputs of `cprkit run` (--format json |
//! junit, --partition), as a user and a CI system meet them: exit statuses,
//! the bundle's files, parsed back with a real XML parser and checked against
//! the published JSON Schema (docs/report.schema.json). Runs the real binary
//! on refvmm, and on QEMU where it is installed (required under CI).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use serde_json::Value;

mod support;
use cprkit_adapters::requirements::Part;
use support::{cprkit, text};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn schema() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/report.schema.json");
    serde_json::from_str(&read(&path)).expect("the schema is JSON")
}

/// Checks a report against docs/report.schema.json, naming every error.
fn assert_valid(report: &Value) {
    support::assert_matches_schema(report, "report.schema.json");
}

fn certify(vmm: &str, profile: &str, out: &Path, env: &[(&str, &Path)]) -> Output {
    cprkit(
        &[
            "certify",
            "--vmm",
            vmm,
            "--profile",
            profile,
            "--out",
            out.to_str().unwrap(),
        ],
        env,
    )
}

/// The test cases of a JUnit file: (classname, name, failure message if any,
/// error message if any).
type JunitCase = (String, String, Option<String>, Option<String>);

fn junit_cases(xml: &str) -> Vec<JunitCase> {
    let doc = roxmltree::Document::parse(xml).expect("junit.xml is XML");
    assert_eq!(doc.root_element().tag_name().name(), "testsuites");
    doc.descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|tc| {
            let child = |tag: &str| {
                tc.children()
                    .find(|c| c.has_tag_name(tag))
                    .map(|c| c.attribute("message").unwrap_or("").to_string())
            };
            (
                tc.attribute("classname").unwrap_or("").to_string(),
                tc.attribute("name").unwrap_or("").to_string(),
                child("failure"),
                child("error"),
            )
        })
        .collect()
}

fn list(args: &[&str]) -> Vec<String> {
    let mut all = vec!["list"];
    all.extend_from_slice(args);
    let o = cprkit(&all, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split("  (").next().unwrap().to_string())
        .collect()
}

fn the_correct_refvmm_is_certified_and_the_bundle_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    let o = certify("refvmm", "memory", &out, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("verdict: CERTIFIED"), "{}", text(&o));

    // The memory profile's trials: every case but those with a device.
    let device_cases: Vec<String> = cprkit_suite::load_dir(&cprkit_suite::cases_dir())
        .unwrap()
        .into_iter()
        .filter(|c| c.profile != cprkit_suite::Profile::Memory)
        .map(|c| format!("::{}/", c.name))
        .collect();
    let trials: Vec<String> = list(&["--vmm", "refvmm"])
        .into_iter()
        .filter(|t| !device_cases.iter().any(|d| t.contains(d.as_str())))
        .collect();
    let md = read(&out.join("report.md"));
    assert!(md.contains("**Verdict: CERTIFIED**"), "{md}");
    assert!(md.contains("| ORD-1 |"), "{md}");
    assert!(md.contains("downtime"), "{md}");

    let json: Value = serde_json::from_str(&read(&out.join("report.json"))).unwrap();
    assert_valid(&json);
    assert_eq!(json["schema_version"], "1");
    assert_eq!(json["verdict"], "certified");
    assert_eq!(json["profile"], "memory");
    assert_eq!(json["trials"].as_array().unwrap().len(), trials.len());
    assert!(
        json["host"]["kernel"]
            .as_str()
            .unwrap()
            .starts_with("Linux ")
    );

    let cases = junit_cases(&read(&out.join("junit.xml")));
    assert_eq!(cases.len(), trials.len(), "one testcase per trial");
    assert!(cases.iter().all(|c| c.2.is_none() && c.3.is_none()));
    let names: BTreeSet<String> = cases
        .iter()
        .map(|(class, name, ..)| format!("refvmm::{class}/{name}"))
        .collect();
    assert_eq!(names, trials.iter().cloned().collect());

    // A text and an SVG timeline per trial; every SVG is XML, an SVG 1.1 root.
    let files: Vec<_> = std::fs::read_dir(out.join("timelines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let svgs: Vec<_> = files
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "svg"))
        .collect();
    assert_eq!(svgs.len(), trials.len());
    assert_eq!(files.len(), 2 * trials.len());
    for svg in svgs {
        let text = read(svg);
        let doc = roxmltree::Document::parse(&text)
            .unwrap_or_else(|e| panic!("{}: not XML: {e}", svg.display()));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        assert_eq!(doc.root_element().attribute("version"), Some("1.1"));
    }
    let no_fault = read(&out.join("timelines/refvmm__memory-running_no-fault.txt"));
    assert!(no_fault.contains("SOURCE") && no_fault.contains("TARGET"));

    // Certifying again into the same directory replaces the bundle.
    let again = certify("refvmm", "memory", &out, &[]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
}

fn a_mutant_is_not_certified_even_with_its_violations_known() {
    // A known-violations file that expects every ORD-1 of the mutant: `run`
    // accepts them, certification does not.
    let snaps = tempfile::tempdir().unwrap();
    let d = snaps.path().join("refvmm-legacy-stop-order");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("known-violations.toml"),
        "[[violation]]\nrule = \"ORD-1\"\ntrials = [\"refvmm:legacy-stop-order::*\"]\nevidence = \"source runstate `running`*\"\nreason = \"fds before stop\"\nupstream = \"https://example.org\"\n",
    )
    .unwrap();
    let env = [("CPRKIT_SNAPSHOTS", snaps.path())];
    let run = cprkit(
        &[
            "run",
            "--vmm",
            "refvmm:legacy-stop-order",
            "--case",
            "memory-running",
            "--format",
            "json",
        ],
        &env,
    );
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let json: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_valid(&json);
    assert_eq!(json["verdict"], "passed");
    assert!(json["summary"]["known"].as_u64().unwrap() > 0);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    let o = certify("refvmm:legacy-stop-order", "memory", &out, &env);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("NOT CERTIFIED"), "{}", text(&o));

    let md = read(&out.join("report.md"));
    assert!(md.contains("**Verdict: NOT CERTIFIED**"), "{md}");
    assert!(md.contains("### ORD-1"), "{md}");
    assert!(
        md.contains("source runstate `running` when the first fd crossed"),
        "{md}"
    );

    let json: Value = serde_json::from_str(&read(&out.join("report.json"))).unwrap();
    assert_valid(&json);
    assert_eq!(json["verdict"], "not-certified");
    let failed: BTreeSet<String> = json["trials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["result"] == "failed")
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert!(failed.contains("refvmm:legacy-stop-order::memory-running/no-fault"));
    // A paused guest is stopped already: the mutant's order does not matter.
    assert!(!failed.contains("refvmm:legacy-stop-order::memory-paused/no-fault"));

    let cases = junit_cases(&read(&out.join("junit.xml")));
    assert_eq!(cases.len(), json["trials"].as_array().unwrap().len());
    let failing: BTreeSet<String> = cases
        .iter()
        .filter(|c| c.2.is_some())
        .map(|(class, name, ..)| format!("refvmm:legacy-stop-order::{class}/{name}"))
        .collect();
    assert_eq!(failing, failed, "a <failure> exactly for each failed trial");
    let no_fault = cases
        .iter()
        .find(|c| c.0 == "memory-running" && c.1 == "no-fault")
        .unwrap();
    assert_eq!(no_fault.2.as_deref(), Some("broke ORD-1"));
}

fn a_profile_without_a_case_is_not_certified() {
    let cases = tempfile::tempdir().unwrap();
    std::fs::write(
        cases.path().join("m.toml"),
        "profile = \"memory\"\nguest = \"running\"\npoints = [\"no-fault\"]\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    let o = certify(
        "refvmm",
        "vhost-user",
        &out,
        &[("CPRKIT_CASES", cases.path())],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("no case has profile `vhost-user`"),
        "{}",
        text(&o)
    );
    let json: Value = serde_json::from_str(&read(&out.join("report.json"))).unwrap();
    assert_valid(&json);
    assert_eq!(json["verdict"], "not-certified");
    let cases = junit_cases(&read(&out.join("junit.xml")));
    assert_eq!(cases.len(), 1);
    assert!(cases[0].2.is_some(), "{cases:?}");
}

fn a_trial_not_run_fails_the_certification_with_its_reason() {
    let cases = tempfile::tempdir().unwrap();
    std::fs::write(
        cases.path().join("vk.toml"),
        "profile = \"vhost-kernel\"\nguest = \"running\"\npoints = [\"no-fault\", \"kill-target@cpr-save\"]\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    let o = certify(
        "refvmm",
        "vhost-kernel",
        &out,
        &[("CPRKIT_CASES", cases.path())],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("refvmm::vk/no-fault not run: "),
        "{}",
        text(&o)
    );
    let json: Value = serde_json::from_str(&read(&out.join("report.json"))).unwrap();
    assert_valid(&json);
    assert_eq!(json["summary"]["not_run"], 2);
    let cases = junit_cases(&read(&out.join("junit.xml")));
    assert_eq!(cases.len(), 2);
    assert!(
        cases
            .iter()
            .all(|c| c.3.as_deref().is_some_and(|m| m.starts_with("not run: "))),
        "not run is an <error> in a certification, never <skipped>: {cases:?}"
    );
}

fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let o = certify("refvmm", "vhost", &dir.path().join("b"), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("unknown profile `vhost`"), "{}", text(&o));
    let o = certify("nosuchvmm", "memory", &dir.path().join("b"), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // A directory that holds something else is never overwritten.
    std::fs::write(dir.path().join("precious"), "x").unwrap();
    let o = certify("refvmm", "memory", dir.path(), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(dir.path().join("precious").exists());
    let o = cprkit(&["list", "--partition", "3/2"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is not a partition"), "{}", text(&o));
}

fn run_prints_json_and_junit() {
    let o = cprkit(&["run", "--case", "memory-paused", "--format", "json"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let json: Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON alone");
    assert_valid(&json);
    assert_eq!(json["kind"], "run");
    assert_eq!(json["verdict"], "passed");
    assert_eq!(json["reconcile"]["ok"], true);
    let n = json["trials"].as_array().unwrap().len();
    assert_eq!(n, list(&["--case", "memory-paused"]).len());
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("[{n:>3}/{n}]")));

    let o = cprkit(
        &[
            "run",
            "--vmm",
            "refvmm:legacy-stop-order",
            "--case",
            "*::memory-running/no-fault",
            "--format",
            "junit",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let cases = junit_cases(&String::from_utf8(o.stdout).unwrap());
    assert_eq!(cases.len(), 1);
    assert_eq!(cases[0].2.as_deref(), Some("broke ORD-1"));
}

fn a_known_violation_not_seen_fails_the_junit_and_the_json() {
    let snaps = tempfile::tempdir().unwrap();
    let d = snaps.path().join("refvmm");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("known-violations.toml"),
        "[[violation]]\nrule = \"ORD-1\"\ntrials = [\"refvmm::memory-paused/*\"]\nreason = \"never happens\"\nupstream = \"https://example.org\"\n",
    )
    .unwrap();
    let env = [("CPRKIT_SNAPSHOTS", snaps.path())];
    let args = ["run", "--case", "*::memory-paused/no-fault", "--format"];
    let o = cprkit(&[&args[..], &["junit"]].concat(), &env);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let cases = junit_cases(&String::from_utf8(o.stdout).unwrap());
    assert_eq!(cases.len(), 2, "{cases:?}");
    assert!(cases[0].2.is_none(), "the trial itself passed: {cases:?}");
    assert_eq!(cases[1].0, "known-violations");
    assert!(
        cases[1]
            .2
            .as_deref()
            .unwrap()
            .starts_with("expected violation not seen: ORD-1")
    );

    let o = cprkit(&[&args[..], &["json"]].concat(), &env);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let json: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_valid(&json);
    assert_eq!(json["verdict"], "failed");
    assert_eq!(json["reconcile"]["ok"], false);
    assert_eq!(json["reconcile"]["vmms"][0]["unseen"][0]["line"], 1);
}

fn partitions_cover_every_trial_exactly_once() {
    let all = list(&["--vmm", "refvmm", "--vmm", "refvmm:copy-ram"]);
    let one = list(&[
        "--vmm",
        "refvmm",
        "--vmm",
        "refvmm:copy-ram",
        "--partition",
        "1/2",
    ]);
    let two = list(&[
        "--vmm",
        "refvmm",
        "--vmm",
        "refvmm:copy-ram",
        "--partition",
        "2/2",
    ]);
    assert_eq!(one.len() + two.len(), all.len());
    let mut both: Vec<String> = one.iter().chain(&two).cloned().collect();
    both.sort();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(both, sorted, "every trial exactly once");
    // Trial i (0-based, list order) is in part (i % N) + 1.
    assert_eq!(one[1], all[2]);
    assert_eq!(two[0], all[1]);

    // `run --partition` runs exactly the trials `list --partition` names.
    let o = cprkit(
        &[
            "run",
            "--case",
            "memory-running",
            "--partition",
            "2/3",
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let json: Value = serde_json::from_slice(&o.stdout).unwrap();
    let ran: Vec<String> = json["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ran,
        list(&["--case", "memory-running", "--partition", "2/3"])
    );
}

fn the_schema_names_every_rule_and_figure() {
    let schema = schema();
    jsonschema::meta::validate(&schema).expect("the schema is a valid draft 2020-12 schema");
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(!validator.is_valid(&serde_json::json!({ "schema_version": "2" })));
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let rules: Vec<&str> = schema["$defs"]["rule_id"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // Every rule, CHAIN-1 (judged in handovers in a row only) before REACH-1.
    let mut ids: Vec<&str> = cprkit_harness::rules::RULES.iter().map(|r| r.id).collect();
    ids.insert(ids.len() - 1, cprkit_harness::rules::CHAIN_RULE.id);
    assert_eq!(rules, ids);
    let keys: Vec<&str> = schema["$defs"]["figure_key"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let figures: Vec<&str> = cprkit_report::Figure::ALL.iter().map(|f| f.key()).collect();
    assert_eq!(keys, figures);
    let props: Vec<&str> = schema["$defs"]["figures"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = figures.clone();
    sorted.sort();
    let mut props_sorted = props.clone();
    props_sorted.sort();
    assert_eq!(props_sorted, sorted);
    assert_eq!(
        schema["properties"]["schema_version"]["const"],
        cprkit_report::model::SCHEMA_VERSION
    );
}

fn stock_qemu_is_not_certified_and_the_report_names_ord1_with_its_evidence() {
    let out = tempfile::tempdir().unwrap();
    let bundle = out.path().join("bundle");
    let o = certify("qemu", "memory", &bundle, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let md = read(&bundle.join("report.md"));
    assert!(
        md.contains("QEMU 10."),
        "the report names the version:\n{md}"
    );
    assert!(md.contains("### ORD-1"), "{md}");
    assert!(
        md.contains("`qemu::memory-running/no-fault`")
            && md.contains("source runstate `running` when the first fd crossed"),
        "ORD-1's evidence is the source's runstate when the first fd crossed:\n{md}"
    );
    let report: Value = serde_json::from_str(&read(&bundle.join("report.json"))).unwrap();
    assert_valid(&report);
}

fn a_vhost_user_certification_judges_the_device_rules() {
    let cases = tempfile::tempdir().unwrap();
    std::fs::write(
        cases.path().join("vu.toml"),
        "profile = \"vhost-user\"\nguest = \"running\"\n\
         points = [\"no-fault\", \"device-busy@target-init\", \"kill-target@target-init\", \"bad-request:no-main-channel@source-stop\"]\n",
    )
    .unwrap();
    // Every rule of the profile is exercised (a bad request for ERR-1):
    // certification needs positive evidence of each.
    let env = [("CPRKIT_CASES", cases.path())];
    let dir = tempfile::tempdir().unwrap();

    let good = dir.path().join("good");
    let o = certify("refvmm", "vhost-user", &good, &env);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let json: Value = serde_json::from_str(&read(&good.join("report.json"))).unwrap();
    assert_valid(&json);
    let rules: Vec<&str> = json["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    for id in ["ORD-2", "OWN-1", "OWN-2"] {
        assert!(rules.contains(&id), "{id} judged: {rules:?}");
    }

    let bad = dir.path().join("bad");
    let o = certify("refvmm:never-release-owner", "vhost-user", &bad, &env);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let md = read(&bad.join("report.md"));
    assert!(md.contains("ORD-2"), "{md}");
    assert!(
        md.contains("still ran when the first fd crossed"),
        "the evidence, as observed: {md}"
    );
}

fn main() -> std::process::ExitCode {
    support::run_tests(
        &[
            (
                "the_correct_refvmm_is_certified_and_the_bundle_is_complete",
                None,
                the_correct_refvmm_is_certified_and_the_bundle_is_complete,
            ),
            (
                "a_mutant_is_not_certified_even_with_its_violations_known",
                None,
                a_mutant_is_not_certified_even_with_its_violations_known,
            ),
            (
                "a_profile_without_a_case_is_not_certified",
                None,
                a_profile_without_a_case_is_not_certified,
            ),
            (
                "a_trial_not_run_fails_the_certification_with_its_reason",
                None,
                a_trial_not_run_fails_the_certification_with_its_reason,
            ),
            ("usage_errors_exit_2", None, usage_errors_exit_2),
            ("run_prints_json_and_junit", None, run_prints_json_and_junit),
            (
                "a_known_violation_not_seen_fails_the_junit_and_the_json",
                None,
                a_known_violation_not_seen_fails_the_junit_and_the_json,
            ),
            (
                "partitions_cover_every_trial_exactly_once",
                None,
                partitions_cover_every_trial_exactly_once,
            ),
            (
                "the_schema_names_every_rule_and_figure",
                None,
                the_schema_names_every_rule_and_figure,
            ),
            (
                "stock_qemu_is_not_certified_and_the_report_names_ord1_with_its_evidence",
                Some(Part::Qemu),
                stock_qemu_is_not_certified_and_the_report_names_ord1_with_its_evidence,
            ),
            (
                "a_vhost_user_certification_judges_the_device_rules",
                Some(Part::QemuStorageDaemon),
                a_vhost_user_certification_judges_the_device_rules,
            ),
        ],
        &[],
    )
}
