//! A comparison for people, in Markdown: the summary line, then a section per
//! rule whose verdicts changed (the trials newly broken with B's evidence, the
//! trials fixed with A's), the trials whose outcome changed, the trials that
//! cannot be compared and why, and the rules where nothing changed.

use std::fmt::Write;

use cprkit_harness::rules::Status;

use super::{Change, Comparison, Direction, RuleChanges, SideSummary, Source, Verdict};
use crate::markdown::{cell, code};
use crate::summaries::plural;

/// The comparison as Markdown.
pub fn render(c: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# cprkit compare: A {} -> B {}\n",
        code(&c.a.given),
        code(&c.b.given)
    );
    let _ = writeln!(out, "{}\n", summary_line(c));
    let _ = writeln!(out, "- A: {}", side(&c.a));
    let _ = writeln!(out, "- B: {}\n", side(&c.b));
    if !c.reasons.is_empty() {
        let _ = writeln!(out, "Worse because:\n");
        for why in &c.reasons {
            let _ = writeln!(out, "- {why}");
        }
        let _ = writeln!(out);
    }

    for r in c.rules.iter().filter(|r| r.changed()) {
        rule_section(&mut out, r);
    }

    if !c.outcomes.is_empty() {
        let _ = writeln!(out, "## Trial outcomes\n");
        let mut groups: Vec<(Direction, &str, &str, Vec<&super::OutcomeChange>)> = Vec::new();
        for o in &c.outcomes {
            let (a, b) = (o.a.name(), o.b.name());
            match groups.iter_mut().find(|g| g.1 == a && g.2 == b) {
                Some(g) => g.3.push(o),
                None => groups.push((o.direction, a, b, vec![o])),
            }
        }
        // Worse first, then better, then the others; A's order within.
        groups.sort_by_key(|g| g.0);
        for (direction, a, b, trials) in &groups {
            let _ = writeln!(
                out,
                "{a} -> {b} ({}, {}):\n",
                match direction {
                    Direction::Worse => "worse",
                    Direction::Better => "better",
                    Direction::Other => "changed",
                },
                plural(trials.len(), "trial", "trials")
            );
            for o in trials {
                let mut what = Vec::new();
                if !o.broken_in_a.is_empty() {
                    what.push(format!("A broke {}", o.broken_in_a.join(", ")));
                }
                if !o.broken_in_b.is_empty() {
                    what.push(format!("B broke {}", o.broken_in_b.join(", ")));
                }
                if let Some(r) = &o.reason_a {
                    what.push(format!("A: {}", cell(r)));
                }
                if let Some(r) = &o.reason_b {
                    what.push(format!("B: {}", cell(r)));
                }
                let _ = writeln!(out, "- {} ({})", code(&o.trial), what.join("; "));
            }
            let _ = writeln!(out);
        }
    }

    if !c.not_comparable.is_empty() {
        let _ = writeln!(
            out,
            "## Not comparable ({})\n",
            plural(c.not_comparable.len(), "trial", "trials")
        );
        for n in &c.not_comparable {
            let _ = writeln!(out, "- {}: {}", code(&n.trial), cell(&n.why));
        }
        let _ = writeln!(out);
    }

    let quiet: Vec<&RuleChanges> = c.rules.iter().filter(|r| !r.changed()).collect();
    if !quiet.is_empty() {
        let _ = writeln!(out, "## No verdict changed\n");
        let names: Vec<String> = quiet
            .iter()
            .map(|r| {
                if r.still_broken > 0 {
                    format!(
                        "{} (broken in both in {})",
                        r.id,
                        plural(r.still_broken, "trial", "trials")
                    )
                } else {
                    r.id.clone()
                }
            })
            .collect();
        let _ = writeln!(out, "{}", names.join(", "));
    }
    out
}

/// The line that says it all: worse or not, what broke, what was fixed.
pub fn summary_line(c: &Comparison) -> String {
    let verdict = match c.verdict {
        Verdict::Worse => "**WORSE**",
        Verdict::NotWorse => "**not worse**",
    };
    let by_rule = |pick: fn(&RuleChanges) -> usize| {
        let parts: Vec<String> = c
            .rules
            .iter()
            .filter(|r| pick(r) > 0)
            .map(|r| format!("{} in {}", r.id, plural(pick(r), "trial", "trials")))
            .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    };
    let s = &c.summary;
    format!(
        "{verdict}: newly broken: {}{}; fixed: {}{}; {} in common ({} compared, {} not comparable), {} only in A, {} only in B",
        plural(s.verdicts_newly_broken, "verdict", "verdicts"),
        by_rule(|r| r.newly_broken.len()),
        plural(s.verdicts_fixed, "verdict", "verdicts"),
        by_rule(|r| r.fixed.len()),
        plural(s.trials_in_common, "trial", "trials"),
        s.trials_compared,
        s.trials_in_common - s.trials_compared,
        s.trials_only_in_a,
        s.trials_only_in_b,
    )
}

fn side(s: &SideSummary) -> String {
    let from = match s.source {
        Source::Vmm => "run here",
        Source::File => "saved report",
    };
    format!(
        "{} ({from}): {} of {}",
        code(&s.given),
        plural(s.trials, "trial", "trials"),
        code(&s.vmm)
    )
}

fn status(s: Status) -> &'static str {
    match s {
        Status::Pass => "pass",
        Status::Fail => "fail",
        Status::NotApplicable => "n/a",
    }
}

fn rule_section(out: &mut String, r: &RuleChanges) {
    let _ = writeln!(
        out,
        "## {}: newly broken in {}, fixed in {}, unchanged in {}{}\n",
        r.id,
        plural(r.newly_broken.len(), "trial", "trials"),
        r.fixed.len(),
        r.unchanged,
        if r.still_broken > 0 {
            format!(" (broken in both in {})", r.still_broken)
        } else {
            String::new()
        }
    );
    if let Some(text) = &r.text {
        let _ = writeln!(out, "> {}\n", cell(text));
    }
    let list = |out: &mut String, title: &str, changes: &[Change]| {
        if changes.is_empty() {
            return;
        }
        let _ = writeln!(out, "{title}:\n");
        for ch in changes {
            let detail = if ch.detail.is_empty() {
                String::new()
            } else {
                format!(" [{}]", cell(&ch.detail))
            };
            let _ = writeln!(
                out,
                "- {} ({} -> {}): {}{detail}",
                code(&ch.trial),
                status(ch.a),
                status(ch.b),
                cell(&ch.evidence)
            );
        }
        let _ = writeln!(out);
    };
    list(out, "Newly broken (B's evidence)", &r.newly_broken);
    list(out, "Fixed (A's evidence)", &r.fixed);
    if !r.not_comparable.is_empty() {
        let _ = writeln!(out, "Not comparable (judged on one side only):\n");
        for g in &r.not_comparable {
            let _ = writeln!(
                out,
                "- {}: only {} judges {} here ({}); {} does not",
                code(&g.trial),
                g.judged_in.name(),
                r.id,
                status(g.status),
                g.judged_in.other().name()
            );
        }
        let _ = writeln!(out);
    }
}
