//! The report of `cprkit certify`: one VMM, one profile, no skip, no known
//! violation excused.

use cprkit_harness::rules;
use cprkit_suite::Profile;
use cprkit_suite::runner::TrialResult;

use crate::host::Host;
use crate::model::{
    Kind, LeakCheck, Report, ReportVerdict, RuleVerdict, SCHEMA_VERSION, TrialOutcome, TrialReport,
    Vmm,
};
use crate::summaries::{figure_summaries, plural, rule_summaries, summary, tool, trial_report};

impl Report {
    /// The certification of `vmm` for `profile` from the results of every
    /// trial of the profile's cases. No skip: a trial that did not run fails
    /// the certification, and so does any broken rule (known violations excuse
    /// nothing here), a rule of the profile that no trial exercised, and a
    /// profile without a trial.
    pub fn certification(
        vmm: Vmm,
        profile: Profile,
        host: Host,
        results: &[TrialResult],
        leaks: Option<LeakCheck>,
    ) -> Report {
        let trials: Vec<TrialReport> = results.iter().map(|r| trial_report(r, None)).collect();
        let rules = rule_summaries(&trials);
        let mut reasons = Vec::new();
        if trials.is_empty() {
            reasons.push(format!(
                "no case has profile `{profile}`: there is nothing to certify (a profile is certified only by trials that ran)"
            ));
        }
        for t in &trials {
            match t.result {
                TrialOutcome::Error => reasons.push(format!(
                    "{} could not run: {}",
                    t.name,
                    t.reason.as_deref().unwrap_or("")
                )),
                TrialOutcome::NotRun => reasons.push(format!(
                    "{} not run: {} (certification allows no skip)",
                    t.name,
                    t.reason.as_deref().unwrap_or("")
                )),
                _ => {}
            }
        }
        for r in rules.iter().filter(|r| r.verdict == RuleVerdict::Fail) {
            reasons.push(format!(
                "{} broken in {}",
                r.id,
                plural(r.broken_in, "trial", "trials")
            ));
        }
        // Nothing passes on nothing: a rule of the profile that no trial
        // exercised was never shown to hold.
        if !trials.is_empty() {
            for r in rules.iter().filter(|r| r.exercised_in == 0) {
                reasons.push(format!(
                    "{} was never exercised: not applicable in all {} (a rule is certified only by trials that judged it)",
                    r.id,
                    plural(r.not_applicable_in, "trial", "trials")
                ));
            }
        }
        if let Some(l) = leaks.as_ref().filter(|l| !l.clean) {
            reasons.push(format!("the run left something behind: {}", l.text));
        }
        let verdict = if reasons.is_empty() {
            ReportVerdict::Certified
        } else {
            ReportVerdict::NotCertified
        };
        Report {
            schema_version: SCHEMA_VERSION.into(),
            kind: Kind::Certification,
            tool: tool(),
            contract_version: rules::CONTRACT_VERSION.into(),
            host,
            vmms: vec![vmm],
            profile: Some(profile.to_string()),
            verdict,
            reasons,
            summary: summary(&trials),
            figures: figure_summaries(&trials),
            rules,
            trials,
            leak_check: leaks,
            reconcile: None,
        }
    }
}
