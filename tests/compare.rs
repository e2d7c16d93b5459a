//! `cprkit compare A B` as a patch author meets it: refvmm against its
//! legacy-stop-order mutant and back, VMMs run by compare itself and saved
//! `cprkit run --format json` results alike, the JSON checked against
//! docs/compare.schema.json, and exit status 2 for what cannot be compared.
//! Runs the real binary on refvmm.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use serde_json::Value;

mod support;
use support::{cprkit, text};

const CASE: &str = "memory-running";
const MUTANT: &str = "refvmm:legacy-stop-order";

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", text(o)))
}

/// Checks a comparison against docs/compare.schema.json.
fn assert_valid(comparison: &Value) {
    support::assert_matches_schema(comparison, "compare.schema.json");
}

/// `cprkit run --vmm VMM --case memory-running --format json`, saved in `dir`.
fn saved_run(vmm: &str, dir: &Path, file: &str) -> (std::path::PathBuf, Value) {
    let o = cprkit(
        &["run", "--vmm", vmm, "--case", CASE, "--format", "json"],
        &[],
    );
    let report = json(&o);
    let path = dir.join(file);
    std::fs::write(&path, &o.stdout).unwrap();
    (path, report)
}

/// The `CASE/POINT`s of a saved run's trials that broke `rule`.
fn broken(report: &Value, rule: &str) -> BTreeSet<String> {
    report["trials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            t["broken_rules"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == rule)
        })
        .map(|t| {
            format!(
                "{}/{}",
                t["case"].as_str().unwrap(),
                t["point"].as_str().unwrap()
            )
        })
        .collect()
}

fn rule<'v>(c: &'v Value, id: &str) -> &'v Value {
    c["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no rule {id} in {c}"))
}

fn trials(changes: &Value) -> BTreeSet<String> {
    changes
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["trial"].as_str().unwrap().to_string())
        .collect()
}

/// A comparison without what differs from one run to the next or names the
/// arguments: the sides' `given` and `source`, and every `detail` (numbers).
fn stable(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("detail");
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    for side in ["a", "b"] {
        let s = v[side].as_object_mut().unwrap();
        s.remove("given");
        s.remove("source");
    }
    v
}

#[test]
fn the_legacy_stop_order_newly_breaks_ord1_and_compare_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mutant) = saved_run(MUTANT, dir.path(), "mutant.json");
    let expected = broken(&mutant, "ORD-1");
    assert!(expected.contains("memory-running/no-fault"), "{expected:?}");

    let o = cprkit(&["compare", "refvmm", MUTANT, "--case", CASE], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let md = String::from_utf8_lossy(&o.stdout);
    let first = md
        .lines()
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap();
    assert!(
        first.starts_with(&format!(
            "**WORSE**: newly broken: {n} verdicts (ORD-1 in {n} trials); fixed: 0 verdicts",
            n = expected.len()
        )),
        "{md}"
    );
    let heading = format!(
        "## ORD-1: newly broken in {} trials, fixed in 0",
        expected.len()
    );
    let section = &md[md
        .find(&heading)
        .unwrap_or_else(|| panic!("{heading}:\n{md}"))..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    assert!(section.contains("Newly broken (B's evidence)"), "{section}");
    let listed: BTreeSet<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("- `"))
        .map(|l| l[..l.find('`').unwrap()].to_string())
        .collect();
    assert_eq!(listed, expected, "{section}");
    assert!(
        section.contains("- `memory-running/no-fault` (pass -> fail): source runstate `running` when the first fd crossed"),
        "{section}"
    );
    assert!(
        md.contains(&format!(
            "ok -> VIOLATION (worse, {} trials)",
            expected.len()
        )),
        "{md}"
    );
    assert!(md.contains("## No verdict changed\n\nFAIL-1, "), "{md}");
}

#[test]
fn the_reverse_reports_ord1_fixed_and_exits_0() {
    let o = cprkit(
        &[
            "compare", MUTANT, "refvmm", "--case", CASE, "--format", "json",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let c = json(&o);
    assert_valid(&c);
    assert_eq!(c["verdict"], "not-worse");
    assert_eq!(c["reasons"], serde_json::json!([]));
    assert_eq!(c["a"]["vmm"], MUTANT);
    assert_eq!(c["a"]["source"], "vmm");
    let ord1 = rule(&c, "ORD-1");
    let fixed = trials(&ord1["fixed"]);
    assert!(fixed.contains("memory-running/no-fault"), "{fixed:?}");
    assert_eq!(c["summary"]["verdicts_fixed"], fixed.len());
    assert_eq!(c["summary"]["verdicts_newly_broken"], 0);
    assert!(
        ord1["fixed"][0]["evidence"]
            .as_str()
            .unwrap()
            .starts_with("source runstate `running`"),
        "A's evidence: {}",
        ord1["fixed"][0]
    );
    for r in c["rules"].as_array().unwrap() {
        assert_eq!(r["newly_broken"], serde_json::json!([]), "{r}");
    }
}

#[test]
fn saved_results_compare_as_the_vmms_do() {
    let dir = tempfile::tempdir().unwrap();
    let (stock, _) = saved_run("refvmm", dir.path(), "stock.json");
    let (patched, _) = saved_run(MUTANT, dir.path(), "patched.json");
    let files = cprkit(
        &[
            "compare",
            stock.to_str().unwrap(),
            patched.to_str().unwrap(),
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(files.status.code(), Some(1), "{}", text(&files));
    let vmms = cprkit(
        &[
            "compare", "refvmm", MUTANT, "--case", CASE, "--format", "json",
        ],
        &[],
    );
    assert_eq!(vmms.status.code(), Some(1), "{}", text(&vmms));
    let (files, vmms) = (json(&files), json(&vmms));
    assert_valid(&files);
    assert_valid(&vmms);
    assert_eq!(files["a"]["source"], "file");
    assert_eq!(files["b"]["vmm"], MUTANT);
    assert_eq!(stable(files), stable(vmms));

    // A file and a VMM mix; --case keeps a file's trials too.
    let o = cprkit(
        &[
            "compare",
            stock.to_str().unwrap(),
            "refvmm",
            "--case",
            "*memory-running/no-fault",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("**not worse**: newly broken: 0 verdicts; fixed: 0 verdicts; 1 trial in common (1 compared, 0 not comparable)"),
        "{}",
        text(&o)
    );
}

#[test]
fn what_cannot_be_compared_exits_2_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, content: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p.to_str().unwrap().to_string()
    };
    let report = |case: &str| {
        format!(
            r#"{{"schema_version":"1","kind":"run","vmms":[{{"name":"refvmm","version":""}}],"trials":[
              {{"name":"refvmm::{case}/no-fault","vmm":"refvmm","case":"{case}","point":"no-fault",
                "result":"passed","verdicts":[{{"rule":"ORD-1","status":"pass","evidence":"e"}}]}}]}}"#
        )
    };
    let good = write("good.json", &report("memory-running"));
    let other = write("other.json", &report("memory-paused"));
    let not_json = write("not-json.json", "this is not JSON\n");
    let not_report = write("empty-object.json", "{}\n");
    let missing = dir.path().join("missing.json");
    let missing = missing.to_str().unwrap();
    for (args, says) in [
        (
            vec![not_json.as_str(), good.as_str()],
            "not a saved `cprkit run --format json` result: expected ",
        ),
        (
            vec![good.as_str(), not_report.as_str()],
            "missing field `schema_version`",
        ),
        (
            vec![good.as_str(), missing],
            "no such file, and not a --vmm value",
        ),
        (
            vec!["refvmm:nosuchmutant", good.as_str()],
            "unknown refvmm mutant `nosuchmutant`",
        ),
        (vec![good.as_str(), other.as_str()], "no trial in common"),
    ] {
        let mut argv = vec!["compare"];
        argv.extend(&args);
        let o = cprkit(&argv, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(says), "{args:?}: {}", text(&o));
        assert!(o.stdout.is_empty(), "{args:?}: {}", text(&o));
    }
    let o = cprkit(&["compare", &not_json, &good], &[]);
    assert!(
        text(&o).contains(&format!("cprkit: error: A: {not_json}: ")),
        "names the side and the file: {}",
        text(&o)
    );
}
