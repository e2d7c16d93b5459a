//! report.md: the report for people.

use std::fmt::Write;

use cprkit_harness::rules::Status;

use crate::figures::Figure;
use crate::model::{Kind, Report, RuleVerdict, TrialOutcome};

/// Text for a Markdown table cell: no line breaks, `|` escaped, no raw HTML
/// (`<` escaped; a lone `>` starts nothing inside a cell).
pub fn cell(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace(['\n', '\r'], " ")
}

/// A code span for a table cell (names: VMMs, trials, profiles).
pub fn code(s: &str) -> String {
    format!(
        "`{}`",
        s.replace('`', "'")
            .replace('|', "\\|")
            .replace(['\n', '\r'], " ")
    )
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) => format!("{v:.1} ms"),
        None => "–".into(),
    }
}

/// report.md.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let vmm_names: Vec<&str> = r.vmms.iter().map(|v| v.name.as_str()).collect();
    match r.kind {
        Kind::Certification => {
            let _ = writeln!(
                out,
                "# cprkit certification: {}, profile {}\n",
                code(&vmm_names.join(", ")),
                code(r.profile.as_deref().unwrap_or("?"))
            );
        }
        Kind::Run => {
            let _ = writeln!(out, "# cprkit run: {}\n", vmm_names.join(", "));
        }
    }
    let verdict = r.verdict.name().to_uppercase();
    let _ = writeln!(out, "**Verdict: {verdict}**\n");
    if !r.reasons.is_empty() {
        let _ = writeln!(out, "Why:\n");
        for why in &r.reasons {
            let _ = writeln!(out, "- {}", why.replace('\n', " "));
        }
        let _ = writeln!(out);
    }

    let _ = writeln!(out, "| | |\n|---|---|");
    for v in &r.vmms {
        let _ = writeln!(out, "| VMM | {} |", code(&v.name));
        let _ = writeln!(out, "| VMM version | {} |", cell(&v.version));
    }
    if let Some(p) = &r.profile {
        let _ = writeln!(out, "| Profile | {} |", code(p));
    }
    let _ = writeln!(
        out,
        "| Contract | version {} (docs/contract.md) |",
        cell(&r.contract_version)
    );
    let _ = writeln!(
        out,
        "| Host | kernel {}; {}; {} cores |",
        cell(&r.host.kernel),
        cell(&r.host.os),
        r.host.cores
    );
    let _ = writeln!(
        out,
        "| Tool | {} {} |",
        cell(&r.tool.name),
        cell(&r.tool.version)
    );
    let s = &r.summary;
    let known = if r.kind == Kind::Run {
        format!(", {} known violations", s.known)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "| Trials | {}: {} passed, {} failed{known}, {} errors, {} not run |",
        s.trials, s.passed, s.failed, s.errors, s.not_run
    );
    if let Some(l) = &r.leak_check {
        let _ = writeln!(out, "| Leak check | {} |", cell(&l.text));
    }
    let _ = writeln!(out);

    let _ = writeln!(out, "## Rules\n");
    let _ = writeln!(
        out,
        "| ID | MUST | Verdict | Trials exercised | broken | passed | not applicable |\n|---|---|---|---:|---:|---:|---:|"
    );
    for rule in &r.rules {
        let verdict = match rule.verdict {
            RuleVerdict::Fail => "**FAIL**".to_string(),
            v => v.name().to_string(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {verdict} | {} | {} | {} | {} |",
            rule.id,
            cell(&rule.text),
            rule.exercised_in,
            rule.broken_in,
            rule.passed_in,
            rule.not_applicable_in
        );
    }
    let _ = writeln!(out);

    let broken: Vec<_> = r
        .rules
        .iter()
        .filter(|x| x.verdict == RuleVerdict::Fail)
        .collect();
    if !broken.is_empty() {
        let _ = writeln!(out, "## Broken rules\n");
        for rule in broken {
            let _ = writeln!(
                out,
                "### {} (broken in {} of {} trials)\n\n> {}\n",
                rule.id,
                rule.broken_in,
                rule.broken_in + rule.passed_in + rule.not_applicable_in,
                rule.text
            );
            let _ = writeln!(out, "| Trial | Evidence | Detail |\n|---|---|---|");
            for t in &r.trials {
                for v in t
                    .verdicts
                    .iter()
                    .filter(|v| v.rule == rule.id && v.status == Status::Fail)
                {
                    let trial = match &t.timeline {
                        Some(files) => format!("[{}]({})", code(&t.name), files.svg),
                        None => code(&t.name),
                    };
                    let mut evidence = cell(&v.evidence);
                    if let Some(k) = &v.known {
                        let _ = write!(evidence, " (known: {})", cell(&k.reason));
                    }
                    let _ = writeln!(out, "| {trial} | {evidence} | {} |", cell(&v.detail));
                }
            }
            let _ = writeln!(out);
        }
    }

    let unrun: Vec<_> = r
        .trials
        .iter()
        .filter(|t| matches!(t.result, TrialOutcome::Error | TrialOutcome::NotRun))
        .collect();
    if !unrun.is_empty() {
        let _ = writeln!(out, "## Trials that did not run\n");
        if r.kind == Kind::Certification {
            let _ = writeln!(
                out,
                "Certification allows no skip: each of these fails it.\n"
            );
        }
        let _ = writeln!(out, "| Trial | Result | Reason |\n|---|---|---|");
        for t in unrun {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                code(&t.name),
                t.result.name(),
                cell(t.reason.as_deref().unwrap_or(""))
            );
        }
        let _ = writeln!(out);
    }

    let _ = writeln!(out, "## Figures\n");
    let _ = writeln!(
        out,
        "Medians of each trial's figures, in milliseconds, measured between the kit's hold points \
         (so they include the time the kit held the channel). A trial without a figure (a fault \
         came first, a paused guest never stops or resumes) does not count towards its median; \
         `n` says how many did.\n"
    );
    let _ = writeln!(
        out,
        "| Figure | median, fault-free trials | n | median, all trials | n |\n|---|---:|---:|---:|---:|"
    );
    for f in &r.figures {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            cell(&f.label),
            ms(f.fault_free.median_ms),
            f.fault_free.trials,
            ms(f.all.median_ms),
            f.all.trials
        );
    }
    let _ = writeln!(out);

    if let Some(rec) = &r.reconcile {
        let _ = writeln!(out, "## Known violations\n");
        for v in &rec.vmms {
            let _ = writeln!(
                out,
                "{} ({}): {} expected, {} unexpected, {} known not seen\n",
                code(&v.vmm),
                cell(&v.file),
                v.expected.len(),
                v.unexpected.len(),
                v.unseen.len()
            );
            for u in &v.unseen {
                let _ = writeln!(
                    out,
                    "- EXPECTED VIOLATION NOT SEEN {} in {} (line {}): {}",
                    u.rule,
                    cell(&u.trials.join(", ")),
                    u.line,
                    cell(&u.reason)
                );
            }
            if !v.unseen.is_empty() {
                let _ = writeln!(out);
            }
        }
    }

    let _ = writeln!(out, "## Trials\n");
    let has_files = r.trials.iter().any(|t| t.timeline.is_some());
    let _ = write!(
        out,
        "| Trial | Result | Broken rules | {} | {} |",
        Figure::Downtime.label(),
        Figure::Total.label()
    );
    let _ = writeln!(out, "{}", if has_files { " Timeline |" } else { "" });
    let _ = writeln!(
        out,
        "|---|---|---|---:|---:|{}",
        if has_files { "---|" } else { "" }
    );
    for t in &r.trials {
        let figures = t.figures.unwrap_or_default();
        let _ = write!(
            out,
            "| {} | {} | {} | {} | {} |",
            code(&t.name),
            t.result.name(),
            t.broken_rules.join(", "),
            ms(figures.get(Figure::Downtime)),
            ms(figures.get(Figure::Total)),
        );
        match (&t.timeline, has_files) {
            (Some(files), _) => {
                let _ = writeln!(out, " [text]({}), [svg]({}) |", files.text, files.svg);
            }
            (None, true) => {
                let _ = writeln!(out, " |");
            }
            (None, false) => {
                let _ = writeln!(out);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_keep_tables_whole() {
        assert_eq!(cell("a | b\nc <x> & `d`"), "a \\| b c &lt;x> &amp; `d`");
        assert_eq!(code("refvmm:x::c/p|q"), "`refvmm:x::c/p\\|q`");
        assert_eq!(ms(None), "–");
        assert_eq!(ms(Some(1.25)), "1.2 ms");
    }
}
