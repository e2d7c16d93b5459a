//! The comparison on sides made by hand: the four classes, the trial outcomes,
//! what is worse, the rule order, and reading a saved report.

use cprkit_harness::rules::Status::{self, Fail, NotApplicable as Na, Pass};

use super::*;

fn verdict(rule: &str, status: Status) -> RawVerdict {
    RawVerdict {
        rule: rule.into(),
        status,
        evidence: format!("{rule} {status:?}"),
        detail: String::new(),
    }
}

fn judged(vmm: &str, key: &str, verdicts: &[(&str, Status)]) -> Trial {
    trial(
        vmm,
        key,
        Ran::Judged(verdicts.iter().map(|(r, s)| verdict(r, *s)).collect()),
    )
}

fn trial(vmm: &str, key: &str, ran: Ran) -> Trial {
    let (case, point) = key.split_once('/').unwrap();
    Trial {
        name: format!("{vmm}::{key}"),
        case: case.into(),
        point: point.into(),
        ran,
    }
}

fn side(vmm: &str, trials: Vec<Trial>) -> Side {
    Side::new(vmm, Source::Vmm, vmm, trials).unwrap()
}

fn rule<'c>(c: &'c Comparison, id: &str) -> &'c RuleChanges {
    c.rules.iter().find(|r| r.id == id).unwrap()
}

fn keys(changes: &[Change]) -> Vec<&str> {
    changes.iter().map(|c| c.trial.as_str()).collect()
}

#[test]
fn verdicts_are_newly_broken_fixed_or_unchanged_by_case_and_point() {
    let a = side(
        "stock",
        vec![
            judged("stock", "c/no-fault", &[("ORD-1", Pass), ("FAIL-1", Na)]),
            judged("stock", "c/kill@x", &[("ORD-1", Na), ("FAIL-1", Fail)]),
            judged("stock", "c/cancel@y", &[("ORD-1", Fail), ("FAIL-1", Pass)]),
        ],
    );
    let b = side(
        "patched",
        vec![
            judged("patched", "c/no-fault", &[("ORD-1", Fail), ("FAIL-1", Na)]),
            judged("patched", "c/kill@x", &[("ORD-1", Fail), ("FAIL-1", Pass)]),
            judged("patched", "c/cancel@y", &[("ORD-1", Fail), ("FAIL-1", Na)]),
        ],
    );
    let c = compare(&a, &b).unwrap();
    let ord1 = rule(&c, "ORD-1");
    assert_eq!(keys(&ord1.newly_broken), ["c/no-fault", "c/kill@x"]);
    assert_eq!(ord1.newly_broken[1].a, Na, "n/a -> fail is newly broken");
    assert_eq!(ord1.newly_broken[0].evidence, "ORD-1 Fail", "B's evidence");
    assert!(ord1.fixed.is_empty());
    assert_eq!((ord1.unchanged, ord1.still_broken), (1, 1));
    let fail1 = rule(&c, "FAIL-1");
    assert_eq!(keys(&fail1.fixed), ["c/kill@x"]);
    assert_eq!(fail1.fixed[0].evidence, "FAIL-1 Fail", "A's evidence");
    assert_eq!(
        (fail1.unchanged, fail1.still_broken),
        (2, 0),
        "pass -> n/a is unchanged"
    );
    assert_eq!(c.summary.verdicts_newly_broken, 2);
    assert_eq!(c.summary.verdicts_fixed, 1);
    assert_eq!(c.summary.verdicts_unchanged, 3);
    assert_eq!(c.summary.trials_compared, 3);
    assert!(c.is_worse());
    assert_eq!(c.reasons, ["ORD-1 newly broken in 2 trials"]);
    // Outcomes: ok -> VIOLATION once; the others stay violations.
    assert_eq!(c.outcomes.len(), 1);
    assert_eq!(c.outcomes[0].trial, "c/no-fault");
    assert_eq!(
        (c.outcomes[0].a, c.outcomes[0].b, c.outcomes[0].direction),
        (Outcome::Ok, Outcome::Violation, Direction::Worse)
    );
}

#[test]
fn the_reverse_is_fixed_and_not_worse() {
    let bad = side("m", vec![judged("m", "c/no-fault", &[("ORD-1", Fail)])]);
    let good = side("r", vec![judged("r", "c/no-fault", &[("ORD-1", Pass)])]);
    let c = compare(&bad, &good).unwrap();
    assert!(!c.is_worse());
    assert_eq!(keys(&rule(&c, "ORD-1").fixed), ["c/no-fault"]);
    assert_eq!(c.outcomes[0].direction, Direction::Better);
    let md = markdown::render(&c);
    assert!(md.contains("**not worse**"), "{md}");
    assert!(md.contains("fixed: 1 verdict (ORD-1 in 1 trial)"), "{md}");
    assert!(
        md.contains("## ORD-1: newly broken in 0 trials, fixed in 1"),
        "{md}"
    );
}

#[test]
fn known_violations_are_not_excused() {
    // A saved report whose failure a known violation expects is still a failure.
    let text = |result: &str, status: &str| {
        format!(
            r#"{{"schema_version":"1","kind":"run","vmms":[{{"name":"q","version":"1"}}],"trials":[
              {{"name":"q::c/no-fault","vmm":"q","case":"c","point":"no-fault","result":"{result}",
                "verdicts":[{{"rule":"ORD-1","status":"{status}","evidence":"e",
                  "known":{{"reason":"r","upstream":"u","file":"f","line":1}}}}]}}]}}"#
        )
    };
    let a = Side::from_json("a.json", &text("passed", "pass"), None).unwrap();
    let b = Side::from_json("b.json", &text("known", "fail"), None).unwrap();
    let c = compare(&a, &b).unwrap();
    assert!(c.is_worse());
    assert_eq!(keys(&rule(&c, "ORD-1").newly_broken), ["c/no-fault"]);
}

#[test]
fn trials_not_judged_on_both_sides_are_not_comparable() {
    let a = side(
        "a",
        vec![
            judged("a", "c/only-a@x", &[("ORD-1", Pass)]),
            judged("a", "c/err@x", &[("ORD-1", Pass)]),
            trial("a", "c/not-run@x", Ran::NotRun("no device".into())),
            judged("a", "c/no-fault", &[("ORD-1", Pass)]),
        ],
    );
    let b = side(
        "b",
        vec![
            judged("b", "c/no-fault", &[("ORD-1", Pass)]),
            trial("b", "c/err@x", Ran::Error("target never listened".into())),
            trial("b", "c/not-run@x", Ran::NotRun("no device".into())),
            judged("b", "c/only-b@x", &[("ORD-1", Fail)]),
        ],
    );
    let c = compare(&a, &b).unwrap();
    let why: Vec<(&str, &str)> = c
        .not_comparable
        .iter()
        .map(|n| (n.trial.as_str(), n.why.as_str()))
        .collect();
    assert_eq!(
        why,
        [
            ("c/only-a@x", "only in A"),
            ("c/err@x", "error in B: target never listened"),
            (
                "c/not-run@x",
                "not run in A: no device; not run in B: no device"
            ),
            ("c/only-b@x", "only in B"),
        ]
    );
    assert_eq!(c.summary.trials_in_common, 3);
    assert_eq!(c.summary.trials_compared, 1);
    assert_eq!(
        (c.summary.trials_only_in_a, c.summary.trials_only_in_b),
        (1, 1)
    );
    assert_eq!(c.summary.trials_not_comparable, 4);
    // A trial in B only breaks nothing that A had; the one that stopped
    // running in B is worse.
    assert!(rule(&c, "ORD-1").newly_broken.is_empty());
    assert!(c.is_worse());
    assert_eq!(
        c.reasons,
        ["1 trial ran in A but not in B (error or not run)"]
    );
    let o = &c.outcomes[0];
    assert_eq!(
        (o.trial.as_str(), o.a, o.b),
        ("c/err@x", Outcome::Ok, Outcome::Error)
    );
    assert_eq!(o.reason_b.as_deref(), Some("target never listened"));
    assert_eq!(
        c.outcomes.len(),
        1,
        "absent and not-run -> not-run are no change"
    );
}

#[test]
fn an_error_in_a_that_runs_in_b_is_not_worse() {
    let a = side(
        "a",
        vec![trial("a", "c/no-fault", Ran::Error("host".into()))],
    );
    let b = side("b", vec![judged("b", "c/no-fault", &[("ORD-1", Fail)])]);
    let c = compare(&a, &b).unwrap();
    assert!(!c.is_worse());
    assert_eq!(c.outcomes[0].direction, Direction::Other);
}

#[test]
fn a_rule_only_one_side_judges_is_not_comparable_and_rules_come_from_the_reports() {
    // B was judged by a kit with a rule this kit has never heard of, and one
    // more of the contract's.
    let a = side("a", vec![judged("a", "c/no-fault", &[("ORD-1", Pass)])]);
    let b = side(
        "b",
        vec![judged(
            "b",
            "c/no-fault",
            &[("NEW-9", Fail), ("ORD-1", Pass), ("ERR-2", Pass)],
        )],
    );
    let c = compare(&a, &b).unwrap();
    let ids: Vec<&str> = c.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        ["ORD-1", "ERR-2", "NEW-9"],
        "the contract's order, then the others"
    );
    assert!(rule(&c, "NEW-9").text.is_none());
    assert!(rule(&c, "ORD-1").text.is_some());
    let gap = &rule(&c, "NEW-9").not_comparable[0];
    assert_eq!((gap.judged_in, gap.status), (Which::B, Fail));
    assert_eq!(c.summary.verdicts_not_comparable, 2);
    assert!(
        c.is_worse(),
        "ok -> VIOLATION, if only by a rule A did not judge"
    );
    assert_eq!(
        c.reasons,
        ["1 trial ok in A is a VIOLATION in B only by rules A did not judge"]
    );
}

#[test]
fn no_trial_in_common_is_an_error() {
    let a = side("a", vec![judged("a", "c/no-fault", &[])]);
    let b = side("b", vec![judged("b", "d/no-fault", &[])]);
    let e = compare(&a, &b).unwrap_err();
    assert_eq!(e, NothingInCommon { a: 1, b: 1 });
    assert!(e.to_string().contains("no trial in common"), "{e}");
}

#[test]
fn a_side_names_each_trial_once() {
    let t = judged("a", "c/no-fault", &[]);
    let e = Side::new("a", Source::Vmm, "a", vec![t.clone(), t]).unwrap_err();
    assert!(e.contains("c/no-fault twice"), "{e}");
}

#[test]
fn a_saved_report_is_read_checked_and_kept_under_case() {
    let report = r#"{"schema_version":"1","kind":"run","vmms":[{"name":"x","version":""},{"name":"y","version":""}],
        "some_later_field": 1,
        "trials":[
          {"name":"x::c/no-fault","vmm":"x","case":"c","point":"no-fault","result":"passed","verdicts":[]},
          {"name":"y::c/no-fault","vmm":"y","case":"c","point":"no-fault","result":"error","reason":"boom","verdicts":[]}]}"#;
    let e = Side::from_json("r.json", report, None).unwrap_err();
    assert!(
        e.contains("2 VMMs (x, y)") && e.contains("--case 'x::*'"),
        "{e}"
    );
    let s = Side::from_json("r.json", report, Some("y::*")).unwrap();
    assert_eq!((s.vmm.as_str(), s.source), ("y", Source::File));
    assert_eq!(s.trials[0].ran, Ran::Error("boom".into()));

    for (bad, says) in [
        (
            "not json",
            "not a saved `cprkit run --format json` result: expected",
        ),
        ("{}", "missing field `schema_version`"),
        (
            r#"{"schema_version":"2","kind":"run","trials":[]}"#,
            "schema version \"2\"",
        ),
        (
            r#"{"schema_version":"1","kind":"x","trials":[]}"#,
            "kind \"x\"",
        ),
    ] {
        let e = Side::from_json("bad.json", bad, None).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn the_comparison_serializes_with_its_kind_and_verdict() {
    let a = side("a", vec![judged("a", "c/no-fault", &[("ORD-1", Pass)])]);
    let b = side("b", vec![judged("b", "c/no-fault", &[("ORD-1", Fail)])]);
    let json: serde_json::Value =
        serde_json::from_str(&compare(&a, &b).unwrap().to_json()).unwrap();
    assert_eq!(json["kind"], "compare");
    assert_eq!(json["verdict"], "worse");
    assert_eq!(json["rules"][0]["newly_broken"][0]["b"], "fail");
    assert_eq!(json["outcomes"][0]["a"], "ok");
    assert_eq!(json["a"]["source"], "vmm");
}
