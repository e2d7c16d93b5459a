//! junit.xml, written with quick-junit: a test suite per VMM, a test case per
//! trial (classname = case, name = point).
//!
//! - a trial that broke a rule: `<failure>`, its message naming the rules, its
//!   text each rule's evidence and detail;
//! - a trial that could not run (the kit or host failed): `<error>`;
//! - a trial not run on this host: `<skipped>` in a run, but `<error
//!   type="not-run">` in a certification, which allows no skip;
//! - in a run, a trial whose repeats (`--repeat K`) gave more than one
//!   outcome: `<failure type="intermittent">`, its message the outcomes and
//!   their counts, unless `intermittent` known-violation entries account
//!   for it (then it passes, naming them in its system-out);
//! - in a run, a trial whose violations are all known passes (as the run's
//!   exit status has it), naming them in its system-out; a known violation
//!   that no trial reproduced is a failing test case of classname
//!   `known-violations`, and a dirty leak check one of classname `cprkit`;
//! - a certification of a profile without any trial: one failing test case of
//!   classname `certification` named after the profile, with the reason.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, TestCase, TestCaseStatus, TestSuite};

use crate::model::{Kind, Report, TrialOutcome, TrialReport};

fn description(t: &TrialReport) -> String {
    t.unexpected()
        .map(|v| {
            if v.detail.is_empty() {
                format!("{}: {}", v.rule, v.evidence)
            } else {
                format!("{}: {} [{}]", v.rule, v.evidence, v.detail)
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each outcome of an intermittent trial's repeats, with its repeats and
/// its first repeat's failures or error.
fn repeats_description(t: &TrialReport) -> String {
    let Some(rep) = &t.repeats else {
        return String::new();
    };
    let mut lines = Vec::new();
    for o in &rep.outcomes {
        let which: Vec<String> = o.repeats.iter().map(|n| n.to_string()).collect();
        lines.push(format!(
            "{}x {} (repeats {})",
            o.count,
            o.outcome,
            which.join(", ")
        ));
        for f in &o.failures {
            lines.push(format!("  {}: {}", f.rule, f.evidence));
        }
        if let Some(why) = &o.reason {
            lines.push(format!("  {why}"));
        }
    }
    lines.join("\n")
}

/// `19x ok, 1x VIOLATES FAIL-2`.
fn repeats_summary(t: &TrialReport) -> String {
    let Some(rep) = &t.repeats else {
        return String::new();
    };
    let mut by_count: Vec<_> = rep.outcomes.iter().collect();
    by_count.sort_by_key(|s| std::cmp::Reverse(s.count));
    by_count
        .iter()
        .map(|o| format!("{}x {}", o.count, o.outcome))
        .collect::<Vec<_>>()
        .join(", ")
}

fn test_case(r: &Report, t: &TrialReport) -> TestCase {
    let intermittent = t.intermittent == Some(true);
    let accounted = t.repeats.as_ref().is_some_and(|rep| !rep.known.is_empty());
    let status = match t.result {
        _ if intermittent && !accounted => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(format!("intermittent: {}", repeats_summary(t)))
                .set_type("intermittent")
                .set_description(repeats_description(t));
            s
        }
        TrialOutcome::Passed | TrialOutcome::Known => TestCaseStatus::success(),
        TrialOutcome::Failed => {
            let rules: Vec<&str> = t.unexpected().map(|v| v.rule.as_str()).collect();
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(format!("broke {}", rules.join(", ")))
                .set_type("rule-violation")
                .set_description(description(t));
            s
        }
        TrialOutcome::Error => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
            s.set_message(format!(
                "the trial could not run: {}",
                t.reason.as_deref().unwrap_or("")
            ))
            .set_type("trial-error");
            s
        }
        TrialOutcome::NotRun if r.kind == Kind::Certification => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
            s.set_message(format!(
                "not run: {} (certification allows no skip)",
                t.reason.as_deref().unwrap_or("")
            ))
            .set_type("not-run");
            s
        }
        TrialOutcome::NotRun => {
            let mut s = TestCaseStatus::skipped();
            s.set_message(format!("not run: {}", t.reason.as_deref().unwrap_or("")));
            s
        }
    };
    let mut tc = TestCase::new(t.point.as_str(), status);
    tc.set_classname(t.case.as_str())
        .set_time(Duration::from_secs_f64(t.elapsed_ms.max(0.0) / 1000.0))
        .add_property(Property::new("trial", t.name.as_str()));
    let known: Vec<String> = t
        .known()
        .map(|v| {
            let k = v.known.as_ref().expect("known() yields known verdicts");
            format!(
                "known {}: {} ({}; {})",
                v.rule, v.evidence, k.reason, k.upstream
            )
        })
        .collect();
    let mut known = known;
    if intermittent && accounted {
        let rep = t.repeats.as_ref().expect("accounted for: has repeats");
        for k in &rep.known {
            known.push(format!(
                "known intermittent: {} ({}; {})",
                repeats_summary(t),
                k.reason,
                k.upstream
            ));
        }
    }
    if !known.is_empty() {
        tc.set_system_out(known.join("\n"));
    }
    if let Some(files) = &t.timeline {
        tc.add_property(Property::new("timeline", files.text.as_str()));
        tc.add_property(Property::new("timeline-svg", files.svg.as_str()));
    }
    tc
}

/// junit.xml.
pub fn render(r: &Report) -> String {
    let name = match (&r.kind, &r.profile) {
        (Kind::Certification, Some(p)) => format!(
            "cprkit certify {} --profile {p}",
            r.vmms.first().map(|v| v.name.as_str()).unwrap_or("?")
        ),
        _ => "cprkit run".to_string(),
    };
    let mut report = quick_junit::Report::new(name);
    for vmm in &r.vmms {
        let mut suite = TestSuite::new(vmm.name.as_str());
        suite.add_property(Property::new("vmm.version", vmm.version.as_str()));
        suite.add_property(Property::new(
            "contract.version",
            r.contract_version.as_str(),
        ));
        if let Some(p) = &r.profile {
            suite.add_property(Property::new("profile", p.as_str()));
        }
        suite.add_property(Property::new("verdict", r.verdict.key()));
        suite.add_property(Property::new("host.kernel", r.host.kernel.as_str()));
        suite.add_property(Property::new("host.os", r.host.os.as_str()));
        suite.add_property(Property::new("host.cores", r.host.cores.to_string()));
        let mut time = Duration::ZERO;
        for t in r.trials.iter().filter(|t| t.vmm == vmm.name) {
            time += Duration::from_secs_f64(t.elapsed_ms.max(0.0) / 1000.0);
            suite.add_test_case(test_case(r, t));
        }
        if let Some(rec) = r.reconcile.as_ref() {
            for v in rec.vmms.iter().filter(|v| v.vmm == vmm.name) {
                for u in &v.unseen {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(format!(
                        "expected violation not seen: {} in {}",
                        u.rule,
                        u.trials.join(", ")
                    ))
                    .set_type("known-violation-not-seen")
                    .set_description(format!(
                        "{}:{}: {} ({})",
                        v.file, u.line, u.reason, u.upstream
                    ));
                    let mut tc = TestCase::new(format!("{} line {}", u.rule, u.line), s);
                    tc.set_classname("known-violations");
                    suite.add_test_case(tc);
                }
            }
        }
        if r.kind == Kind::Certification && r.trials.is_empty() {
            // Nothing ran, so nothing would be red: say why it is not certified.
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(r.reasons.join("; ")).set_type("no-trial");
            let mut tc = TestCase::new(r.profile.as_deref().unwrap_or("?"), s);
            tc.set_classname("certification");
            suite.add_test_case(tc);
        }
        suite.set_time(time);
        report.add_test_suite(suite);
    }
    if let Some(l) = r.leak_check.as_ref().filter(|l| !l.clean) {
        let mut suite = TestSuite::new("cprkit");
        let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
        s.set_message("the run left something behind")
            .set_type("leak")
            .set_description(l.text.as_str());
        let mut tc = TestCase::new("leak check", s);
        tc.set_classname("cprkit");
        suite.add_test_case(tc);
        report.add_test_suite(suite);
    }
    report.to_string().expect("a JUnit report serializes")
}
