//! The report of `cprkit run --format json`: any VMMs, their violations
//! reconciled against the known ones as the run's exit status decides.

use std::collections::BTreeMap;

use cprkit_harness::outcome::redact;
use cprkit_harness::rules;
use cprkit_suite::known::KnownByVmm as Known;
use cprkit_suite::known::{KnownViolations, reconcile_runs};
use cprkit_suite::repeat::Run;
use cprkit_suite::runner::{TrialResult, Verdicts};

use crate::host::Host;
use crate::model::{
    IntermittentTrial, Kind, KnownRef, LeakCheck, Reconcile, ReconciledViolation, Report,
    ReportVerdict, SCHEMA_VERSION, TrialReport, UnseenEntry, Vmm, VmmReconcile,
};
use crate::summaries::{figure_summaries, plural, rule_summaries, summary, tool, trial_report};

impl Report {
    /// The report of a `cprkit run`: violations reconciled against `known`,
    /// the verdict as the run's exit status decides it.
    pub fn run(
        vmms: Vec<Vmm>,
        host: Host,
        results: &[TrialResult],
        known: &Known,
        leaks: Option<LeakCheck>,
    ) -> Report {
        let trials: Vec<TrialReport> = results
            .iter()
            .map(|r| trial_report(r, known.get(&r.id.vmm)))
            .collect();
        let reconcile = reconcile_run(results, known);
        let mut summary = summary(&trials);
        summary.intermittent = Some(
            trials
                .iter()
                .filter(|t| t.intermittent == Some(true))
                .count(),
        );
        let mut reasons = Vec::new();
        let unexpected: usize = reconcile.vmms.iter().map(|v| v.unexpected.len()).sum();
        let unseen: usize = reconcile.vmms.iter().map(|v| v.unseen.len()).sum();
        if unexpected > 0 {
            reasons.push(plural(
                unexpected,
                "unexpected violation",
                "unexpected violations",
            ));
        }
        let intermittent: usize = reconcile.vmms.iter().map(|v| v.intermittent.len()).sum();
        if intermittent > 0 {
            reasons.push(plural(
                intermittent,
                "intermittent trial no intermittent known violation accounts for",
                "intermittent trials no intermittent known violation accounts for",
            ));
        }
        if unseen > 0 {
            reasons.push(plural(
                unseen,
                "known violation not seen",
                "known violations not seen",
            ));
        }
        if summary.errors > 0 {
            reasons.push(plural(
                summary.errors,
                "trial could not run (error)",
                "trials could not run (errors)",
            ));
        }
        if let Some(l) = leaks.as_ref().filter(|l| !l.clean) {
            reasons.push(format!("the run left something behind: {}", l.text));
        }
        let verdict = if reasons.is_empty() {
            ReportVerdict::Passed
        } else {
            ReportVerdict::Failed
        };
        Report {
            schema_version: SCHEMA_VERSION.into(),
            kind: Kind::Run,
            tool: tool(),
            contract_version: rules::CONTRACT_VERSION.into(),
            host,
            vmms,
            profile: None,
            verdict,
            reasons,
            summary,
            rules: rule_summaries(&trials),
            figures: figure_summaries(&trials),
            trials,
            leak_check: leaks,
            reconcile: Some(reconcile),
        }
    }
}

/// Sorts a run's violations against the known ones, VMM by VMM, as `cprkit
/// run`'s exit status does.
fn reconcile_run(results: &[TrialResult], known: &Known) -> Reconcile {
    let mut per_vmm: BTreeMap<&str, Vec<(String, Vec<Run>)>> = BTreeMap::new();
    let mut errors = 0;
    for r in results {
        match &r.verdicts {
            Verdicts::Judged { .. } => per_vmm.entry(&r.id.vmm).or_default().push((
                r.name(),
                match &r.repeats {
                    Some(rep) => rep.runs.clone(),
                    None => vec![Run::of(r)],
                },
            )),
            Verdicts::Error(_) => errors += 1,
            Verdicts::NotRun(_) => {}
        }
    }
    let empty = KnownViolations::default();
    let redacted = |trial: &str, evidence: &str| {
        results
            .iter()
            .find(|r| r.name() == trial)
            .and_then(|r| match &r.verdicts {
                Verdicts::Judged { record, .. } => Some(redact(evidence, record)),
                _ => None,
            })
            .unwrap_or_else(|| evidence.to_string())
    };
    let mut vmms = Vec::new();
    let mut ok = errors == 0;
    for (vmm, run) in &per_vmm {
        let k = known.get(vmm).unwrap_or(&empty);
        let rec = reconcile_runs(k, run);
        let known_ref = |e: &cprkit_suite::known::KnownViolation| KnownRef {
            reason: e.reason.clone(),
            upstream: e.upstream.clone(),
            file: k.path.display().to_string(),
            line: e.line,
        };
        ok &= rec.is_clean();
        vmms.push(VmmReconcile {
            vmm: vmm.to_string(),
            file: k.path.display().to_string(),
            expected: rec
                .expected
                .iter()
                .map(|(t, v, e)| ReconciledViolation {
                    trial: t.clone(),
                    rule: v.rule.into(),
                    evidence: redacted(t, &v.evidence),
                    reason: Some(e.reason.clone()),
                    upstream: Some(e.upstream.clone()),
                })
                .collect(),
            unexpected: rec
                .unexpected
                .iter()
                .map(|(t, v)| ReconciledViolation {
                    trial: t.clone(),
                    rule: v.rule.into(),
                    evidence: redacted(t, &v.evidence),
                    reason: None,
                    upstream: None,
                })
                .collect(),
            unseen: rec
                .unseen
                .iter()
                .map(|e| UnseenEntry {
                    rule: e.rule.clone(),
                    trials: e.trials.clone(),
                    evidence: e.evidence.clone(),
                    line: e.line,
                    reason: e.reason.clone(),
                    upstream: e.upstream.clone(),
                })
                .collect(),
            intermittent: rec
                .intermittent
                .iter()
                .map(|(t, o)| IntermittentTrial {
                    trial: t.clone(),
                    outcomes: o.clone(),
                    known: Vec::new(),
                })
                .collect(),
            intermittent_expected: rec
                .intermittent_expected
                .iter()
                .map(|(t, o, es)| IntermittentTrial {
                    trial: t.clone(),
                    outcomes: o.clone(),
                    known: es.iter().map(|e| known_ref(e)).collect(),
                })
                .collect(),
        });
    }
    Reconcile { ok, vmms }
}
