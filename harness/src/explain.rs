//! Draws a trial's timeline as two columns, SOURCE and TARGET, like the
//! diagram in the QEMU patch's comment: what each side did, the channel
//! traffic between them, the kit's own actions across, then the verdicts.

use std::fmt::Write;

use crate::outcome::redact;
use crate::record::TrialRecord;
use crate::rules::{Status, Verdict};
use crate::timeline::{Actor, What};

const COL: usize = 34;

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(['…']).collect()
    }
}

/// The drawing, as text.
pub fn draw(r: &TrialRecord, verdicts: &[Verdict]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", r.name);
    let _ = writeln!(out, "{:>9}  {:<COL$}   {:<COL$}", "ms", "SOURCE", "TARGET");
    let _ = writeln!(
        out,
        "{:>9}  {:<COL$}   {:<COL$}",
        "",
        "-".repeat(6),
        "-".repeat(6)
    );
    for e in &r.timeline {
        let ms = format!("{:.1}", e.at.as_secs_f64() * 1000.0);
        let label = redact(&e.what.label(), r);
        let line = match (e.actor, &e.what) {
            (Actor::Source, _) => format!("{:<COL$} |", clip(&label, COL)),
            (Actor::Target, _) => format!("{:<COL$} | {}", "", clip(&label, COL)),
            (Actor::Kit, What::Point { .. }) => {
                format!("{:=^w$}", format!(" hold {label} "), w = 2 * COL + 3)
            }
            (Actor::Kit, _) => format!("{:-^w$}", format!(" kit: {label} "), w = 2 * COL + 3),
            (Actor::Device, _) => {
                format!(
                    "{:^w$}",
                    format!("({})", clip(&label, COL + 6)),
                    w = 2 * COL + 3
                )
            }
            (Actor::Cpr | Actor::Main, _) => {
                let chan = e.actor.name();
                let text = clip(&format!("{chan}: {label}"), COL + 6);
                if label.contains("to the target") || label.contains("from source") {
                    format!("{:>w$} --->", text, w = COL + 2)
                } else if label.contains("to the source") || label.contains("from target") {
                    format!("{:<w$}<--- {text}", "", w = COL - 3)
                } else {
                    format!("{:^w$}", format!("({text})"), w = 2 * COL + 3)
                }
            }
        };
        let _ = writeln!(out, "{ms:>9}  {line}");
    }
    let _ = writeln!(out);
    for v in verdicts {
        let mark = match v.status {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::NotApplicable => "n/a ",
        };
        let _ = write!(out, "  {:<7} {mark}  {}", v.rule, redact(&v.evidence, r));
        if !v.detail.is_empty() && v.status != Status::NotApplicable {
            let _ = write!(out, "  [{}]", redact(&v.detail, r));
        }
        let _ = writeln!(out);
    }
    if r.kept_dir {
        let _ = writeln!(
            out,
            "\n  kept: {} (logs: source.log, target.log)",
            r.dir.display()
        );
    }
    out
}
