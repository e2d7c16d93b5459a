//! Repeats of a trial (`cprkit run --repeat K`): what each repeat gave, the
//! distinct outcomes seen with their counts (as web-platform-tests'
//! expectations record a set of statuses), and the one result that stands for
//! the K repeats.
//!
//! A repeat's *outcome* is its set of (rule, status) pairs, or that it could
//! not be carried out (error) or was not run. A trial whose repeats gave more
//! than one outcome is *intermittent*. The result that stands for the repeats
//! never picks the lucky pass: a rule that failed in any repeat fails in it.

use cprkit_harness::outcome::{Outcome, redact};
use cprkit_harness::rules::{Status, Verdict};

use crate::runner::{TrialResult, Verdicts};

/// What one repeat gave, for the reconciliation and the outcome set: its
/// verdicts (evidence and detail redacted of the trial's directory), or why it
/// gave none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    Judged(Vec<Verdict>),
    Error(String),
    NotRun(String),
}

impl Run {
    /// The run of a trial result, its texts redacted of the trial's directory.
    pub fn of(r: &TrialResult) -> Run {
        match &r.verdicts {
            Verdicts::Judged {
                record, verdicts, ..
            } => Run::Judged(
                verdicts
                    .iter()
                    .map(|v| Verdict {
                        evidence: redact(&v.evidence, record),
                        detail: redact(&v.detail, record),
                        ..v.clone()
                    })
                    .collect(),
            ),
            Verdicts::Error(e) => Run::Error(e.clone()),
            Verdicts::NotRun(why) => Run::NotRun(why.clone()),
        }
    }

    /// The outcome the repeats are compared by.
    pub fn outcome(&self) -> RunOutcome {
        match self {
            Run::Judged(vs) => RunOutcome::Judged(vs.iter().map(|v| (v.rule, v.status)).collect()),
            Run::Error(_) => RunOutcome::Error,
            Run::NotRun(_) => RunOutcome::NotRun,
        }
    }
}

/// A repeat's outcome as repeats are compared: its (rule, status) pairs (in
/// the rules' order), or that it errored or was not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    Judged(Vec<(&'static str, Status)>),
    Error,
    NotRun,
}

impl RunOutcome {
    /// The rules it broke.
    pub fn broken(&self) -> Vec<&'static str> {
        match self {
            RunOutcome::Judged(vs) => vs
                .iter()
                .filter(|(_, s)| *s == Status::Fail)
                .map(|(r, _)| *r)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// As the progress lines say it: `ok`, `VIOLATES A, B`, `ERROR`, `not run`.
    pub fn label(&self) -> String {
        match self {
            RunOutcome::Judged(_) if self.broken().is_empty() => "ok".into(),
            RunOutcome::Judged(_) => format!("VIOLATES {}", self.broken().join(", ")),
            RunOutcome::Error => "ERROR".into(),
            RunOutcome::NotRun => "not run".into(),
        }
    }

    fn status_of(&self, rule: &str) -> Option<Status> {
        match self {
            RunOutcome::Judged(vs) => vs.iter().find(|(r, _)| *r == rule).map(|(_, s)| *s),
            _ => None,
        }
    }
}

fn status_name(s: Option<Status>) -> &'static str {
    match s {
        Some(Status::Pass) => "pass",
        Some(Status::Fail) => "FAIL",
        Some(Status::NotApplicable) => "n/a",
        None => "none",
    }
}

/// One distinct outcome among a trial's repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub outcome: RunOutcome,
    /// Its label, told apart from another outcome of the same label by the
    /// statuses that differ (`ok [ORD-1 n/a]`).
    pub label: String,
    pub count: usize,
    /// The repeats (from 1) that gave it.
    pub repeats: Vec<usize>,
    /// Its first repeat's failing verdicts.
    pub failures: Vec<Verdict>,
    /// Its first repeat's error or reason for not running.
    pub reason: Option<String>,
}

/// The distinct outcomes of `runs` (one trial's repeats), in the order first
/// seen, with their counts.
pub fn outcome_set(runs: &[Run]) -> Vec<Seen> {
    let mut seen: Vec<Seen> = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let outcome = run.outcome();
        if let Some(s) = seen.iter_mut().find(|s| s.outcome == outcome) {
            s.count += 1;
            s.repeats.push(i + 1);
            continue;
        }
        let (failures, reason) = match run {
            Run::Judged(vs) => (
                vs.iter()
                    .filter(|v| v.status == Status::Fail)
                    .cloned()
                    .collect(),
                None,
            ),
            Run::Error(e) | Run::NotRun(e) => (Vec::new(), Some(e.clone())),
        };
        seen.push(Seen {
            label: outcome.label(),
            outcome,
            count: 1,
            repeats: vec![i + 1],
            failures,
            reason,
        });
    }
    // Outcomes that read alike: add the statuses that tell them apart.
    let labels: Vec<String> = seen.iter().map(|s| s.outcome.label()).collect();
    for i in 0..seen.len() {
        let alike: Vec<usize> = (0..seen.len())
            .filter(|&j| labels[j] == labels[i])
            .collect();
        if alike.len() < 2 {
            continue;
        }
        let RunOutcome::Judged(pairs) = &seen[i].outcome else {
            continue;
        };
        let differing: Vec<String> = pairs
            .iter()
            .filter(|(rule, status)| {
                alike
                    .iter()
                    .any(|&j| seen[j].outcome.status_of(rule) != Some(*status))
            })
            .map(|(rule, status)| format!("{rule} {}", status_name(Some(*status))))
            .collect();
        if !differing.is_empty() {
            seen[i].label = format!("{} [{}]", labels[i], differing.join(", "));
        }
    }
    seen
}

/// A trial's repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repeats {
    /// Each repeat's run, in order.
    pub runs: Vec<Run>,
    /// The distinct outcomes, in the order first seen.
    pub outcomes: Vec<Seen>,
}

impl Repeats {
    pub fn of(runs: Vec<Run>) -> Self {
        let outcomes = outcome_set(&runs);
        Repeats { runs, outcomes }
    }

    pub fn count(&self) -> usize {
        self.runs.len()
    }

    /// More than one outcome.
    pub fn intermittent(&self) -> bool {
        self.outcomes.len() > 1
    }

    /// `19x ok, 1x VIOLATES FAIL-2`, the most frequent first.
    pub fn summary(&self) -> String {
        summary(&self.outcomes)
    }
}

/// `19x ok, 1x VIOLATES FAIL-2`: the outcomes by count, most frequent first
/// (in the order first seen among equals).
pub fn summary(outcomes: &[Seen]) -> String {
    let mut by_count: Vec<&Seen> = outcomes.iter().collect();
    by_count.sort_by_key(|s| std::cmp::Reverse(s.count));
    by_count
        .iter()
        .map(|s| format!("{}x {}", s.count, s.label))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The result that stands for the K repeats of one trial (`results`, in
/// repeat order, at least one), with the repeats kept in its `repeats`. Its
/// record is that of the first repeat that broke a rule (else the first
/// judged one, else the first); a rule that failed in any repeat fails in it,
/// with the evidence of the first repeat that broke it in a way
/// `unexpected(trial, verdict)` says no known violation expects, else of the
/// first that broke it.
pub fn merge(
    mut results: Vec<TrialResult>,
    unexpected: impl Fn(&str, &Verdict) -> bool,
) -> TrialResult {
    assert!(!results.is_empty(), "a trial runs at least once");
    let runs: Vec<Run> = results.iter().map(Run::of).collect();
    let judged = |i: usize| matches!(runs[i], Run::Judged(_));
    let broke = |i: usize| matches!(&runs[i], Run::Judged(vs) if vs.iter().any(|v| v.status == Status::Fail));
    let pick = (0..runs.len())
        .find(|&i| broke(i))
        .or_else(|| (0..runs.len()).find(|&i| judged(i)))
        .unwrap_or(0);
    let mut r = results.swap_remove(pick);
    let name = r.name();
    if let Verdicts::Judged {
        record,
        verdicts,
        outcome,
    } = &mut r.verdicts
    {
        for v in verdicts.iter_mut() {
            let fails: Vec<&Verdict> = runs
                .iter()
                .filter_map(|run| match run {
                    Run::Judged(vs) => vs
                        .iter()
                        .find(|f| f.rule == v.rule && f.status == Status::Fail),
                    _ => None,
                })
                .collect();
            let chosen = fails
                .iter()
                .find(|f| unexpected(&name, f))
                .or(fails.first());
            if let Some(f) = chosen {
                *v = (*f).clone();
            }
        }
        **outcome = Outcome::new(record, verdicts);
    }
    r.repeats = Some(Box::new(Repeats::of(runs)));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(rule: &'static str, status: Status, evidence: &str) -> Verdict {
        Verdict {
            rule,
            status,
            evidence: evidence.into(),
            detail: String::new(),
        }
    }

    fn ok() -> Run {
        Run::Judged(vec![
            v("DONE-0", Status::Pass, "completed"),
            v("FAIL-2", Status::NotApplicable, "no failure"),
        ])
    }

    fn fail2() -> Run {
        Run::Judged(vec![
            v("DONE-0", Status::Pass, "completed"),
            v("FAIL-2", Status::Fail, "the source did not resume"),
        ])
    }

    #[test]
    fn the_same_outcome_every_time_is_not_intermittent() {
        let r = Repeats::of(vec![ok(), ok(), ok()]);
        assert!(!r.intermittent());
        assert_eq!(r.summary(), "3x ok");
        assert_eq!(r.outcomes[0].repeats, vec![1, 2, 3]);
        // Evidence is not part of the outcome: the same statuses, the same outcome.
        let other = Run::Judged(vec![
            v("DONE-0", Status::Pass, "completed, said otherwise"),
            v("FAIL-2", Status::NotApplicable, "no failure"),
        ]);
        assert!(!Repeats::of(vec![ok(), other]).intermittent());
    }

    #[test]
    fn differing_outcomes_are_counted_most_frequent_first() {
        let mut runs = vec![ok(); 19];
        runs.insert(4, fail2());
        let r = Repeats::of(runs);
        assert!(r.intermittent());
        assert_eq!(r.summary(), "19x ok, 1x VIOLATES FAIL-2");
        let f = &r.outcomes[1];
        assert_eq!(f.repeats, vec![5]);
        assert_eq!(f.failures[0].evidence, "the source did not resume");
    }

    #[test]
    fn an_error_or_not_run_is_an_outcome_of_its_own() {
        let r = Repeats::of(vec![
            ok(),
            Run::Error("the target never listened".into()),
            ok(),
        ]);
        assert!(r.intermittent());
        assert_eq!(r.summary(), "2x ok, 1x ERROR");
        assert_eq!(
            r.outcomes[1].reason.as_deref(),
            Some("the target never listened")
        );
        let n = Repeats::of(vec![Run::NotRun("no device".into()); 2]);
        assert!(!n.intermittent());
        assert_eq!(n.summary(), "2x not run");
    }

    fn result(run: Run) -> TrialResult {
        use cprkit_harness::plan::GuestState;
        use cprkit_harness::record::TrialRecord;
        let Run::Judged(verdicts) = run else {
            panic!("judged runs only")
        };
        let record = TrialRecord::new(
            "refvmm::memory-running/no-fault".into(),
            "refvmm".into(),
            GuestState::Running,
            None,
            std::time::Duration::from_secs(1),
            std::path::PathBuf::from("/tmp/cprkit-test/trial"),
            false,
        );
        let outcome = Outcome::new(&record, &verdicts);
        TrialResult {
            id: crate::TrialId {
                vmm: "refvmm".into(),
                case: "memory-running".into(),
                point: None,
                hop: 1,
            },
            snapshot_dir: "refvmm".into(),
            elapsed: std::time::Duration::from_millis(40),
            verdicts: Verdicts::Judged {
                record: Box::new(record),
                verdicts,
                outcome: Box::new(outcome),
            },
            repeats: None,
        }
    }

    fn statuses(r: &TrialResult) -> Vec<(&'static str, Status, String)> {
        let Verdicts::Judged { verdicts, .. } = &r.verdicts else {
            panic!("judged")
        };
        verdicts
            .iter()
            .map(|v| (v.rule, v.status, v.evidence.clone()))
            .collect()
    }

    #[test]
    fn the_merged_result_never_picks_the_lucky_pass() {
        let m = merge(vec![result(ok()), result(fail2()), result(ok())], |_, _| {
            true
        });
        assert_eq!(
            statuses(&m)[1],
            ("FAIL-2", Status::Fail, "the source did not resume".into())
        );
        assert!(m.intermittent());
        assert_eq!(m.repeats.as_ref().unwrap().count(), 3);
        assert_eq!(m.violations(), vec!["FAIL-2"]);
        // Broken two ways: the way no known violation expects is shown.
        let other = Run::Judged(vec![
            v("DONE-0", Status::Pass, "completed"),
            v("FAIL-2", Status::Fail, "the source was killed"),
        ]);
        let m = merge(vec![result(fail2()), result(other)], |_, v| {
            v.evidence != "the source did not resume"
        });
        assert_eq!(statuses(&m)[1].2, "the source was killed");
        assert!(!m.intermittent(), "the same statuses: one outcome");
        // One repeat: itself.
        let one = merge(vec![result(ok())], |_, _| true);
        assert_eq!(statuses(&one), statuses(&result(ok())));
        assert!(!one.intermittent());
    }

    #[test]
    fn outcomes_that_read_alike_are_told_apart_by_their_statuses() {
        let na = Run::Judged(vec![
            v("DONE-0", Status::NotApplicable, "malformed"),
            v("FAIL-2", Status::NotApplicable, "no failure"),
        ]);
        let r = Repeats::of(vec![ok(), na.clone(), na]);
        assert_eq!(r.summary(), "2x ok [DONE-0 n/a], 1x ok [DONE-0 pass]");
    }
}
