//! A trial's timeline as an SVG 1.1 picture: the same drawing as
//! `cprkit_harness::explain::draw`, two columns SOURCE and TARGET with a row
//! per timeline entry and its time in ms; the kit's hold points and actions as
//! full-width bands; channel traffic as arrows between the columns; the rule
//! verdicts at the bottom, failing rule IDs first.

use std::fmt::Write;

use cprkit_harness::outcome::redact;
use cprkit_harness::record::TrialRecord;
use cprkit_harness::rules::{Status, Verdict};
use cprkit_harness::timeline::{Actor, What};

const WIDTH: u32 = 1000;
const ROW: u32 = 22;
const TOP: u32 = 70;
/// The x of the SOURCE and TARGET lifelines.
const XS: u32 = 110;
const XT: u32 = 560;
/// Where the full-width bands start (after the ms column).
const BAND_X: u32 = 78;
/// Characters that fit in a column (monospace 12px is about 7.2px wide).
const COL_CHARS: usize = 58;
const BAND_CHARS: usize = 120;

/// Escapes text for XML character data and attribute values, and replaces
/// the characters XML 1.0 does not allow.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(['…']).collect()
    }
}

/// A text element, clipped, with the whole text as its tooltip when clipped.
fn text(out: &mut String, x: u32, y: u32, anchor: &str, class: &str, s: &str, max: usize) {
    let shown = clip(s, max);
    let title = if shown == s {
        String::new()
    } else {
        format!("<title>{}</title>", escape(s))
    };
    let _ = writeln!(
        out,
        r#"<text x="{x}" y="{y}" text-anchor="{anchor}" class="{class}">{title}{}</text>"#,
        escape(&shown)
    );
}

/// Which way a channel entry goes: to the target, to the source, or neither.
fn direction(label: &str) -> Option<bool> {
    if label.contains("to the target") || label.contains("from source") {
        Some(true)
    } else if label.contains("to the source") || label.contains("from target") {
        Some(false)
    } else {
        None
    }
}

/// The picture, as SVG text.
pub fn draw(r: &TrialRecord, verdicts: &[Verdict]) -> String {
    let failing: Vec<&Verdict> = verdicts
        .iter()
        .filter(|v| v.status == Status::Fail)
        .collect();
    let rows = r.timeline.len() as u32;
    let bottom_lines = 2 + failing.len() as u32;
    let height = TOP + rows * ROW + 30 + bottom_lines * 20 + 10;
    let end = TOP + rows * ROW;

    let mut out = String::new();
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}">"#
    );
    let _ = writeln!(out, "<title>{}</title>", escape(&r.name));
    let _ = writeln!(
        out,
        r##"<defs>
<marker id="head" markerWidth="10" markerHeight="8" refX="9" refY="4" orient="auto" markerUnits="userSpaceOnUse"><path d="M0,0 L10,4 L0,8 z" fill="#1f5fa8"/></marker>
<style type="text/css"><![CDATA[
text {{ font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; fill: #1a1a1a; }}
.title {{ font-size: 15px; font-weight: bold; }}
.head {{ font-weight: bold; font-size: 13px; }}
.ms {{ fill: #666666; }}
.chan {{ fill: #1f5fa8; font-size: 11px; }}
.note {{ fill: #777777; font-style: italic; font-size: 11px; }}
.fail {{ fill: #b00020; font-weight: bold; }}
.pass {{ fill: #1b7f3b; }}
]]></style>
</defs>"##
    );
    let _ = writeln!(
        out,
        r##"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>"##
    );
    text(&mut out, 10, 22, "start", "title", &r.name, BAND_CHARS);
    text(&mut out, 70, 56, "end", "head", "ms", 10);
    text(&mut out, XS, 56, "middle", "head", "SOURCE", 10);
    text(&mut out, XT, 56, "middle", "head", "TARGET", 10);
    for x in [XS, XT] {
        let _ = writeln!(
            out,
            r##"<line x1="{x}" y1="{}" x2="{x}" y2="{end}" stroke="#999999" stroke-width="1.5"/>"##,
            TOP - 8
        );
    }

    for (i, e) in r.timeline.iter().enumerate() {
        let y = TOP + i as u32 * ROW;
        let base = y + 15;
        let ms = format!("{:.1}", e.at.as_secs_f64() * 1000.0);
        text(&mut out, 70, base, "end", "ms", &ms, 12);
        let label = redact(&e.what.label(), r);
        match (e.actor, &e.what) {
            (Actor::Source | Actor::Target, _) => {
                let x = if e.actor == Actor::Source { XS } else { XT };
                let colour = match &e.what {
                    What::Exited(_) => "#b00020",
                    What::Sample(_) => "#777777",
                    What::Device(_) => "#2e7d32",
                    _ => "#333333",
                };
                let _ = writeln!(
                    out,
                    r#"<circle cx="{x}" cy="{}" r="4" fill="{colour}"/>"#,
                    y + 11
                );
                let class = if matches!(e.what, What::Sample(_)) {
                    "note"
                } else {
                    "entry"
                };
                text(&mut out, x + 10, base, "start", class, &label, COL_CHARS);
            }
            (Actor::Kit, What::Point { .. }) => {
                let _ = writeln!(
                    out,
                    r##"<rect x="{BAND_X}" y="{}" width="{}" height="{}" rx="3" fill="#fff3c4" stroke="#d4a000"/>"##,
                    y + 2,
                    WIDTH - BAND_X - 10,
                    ROW - 4
                );
                text(
                    &mut out,
                    (BAND_X + WIDTH - 10) / 2,
                    base,
                    "middle",
                    "band",
                    &format!("hold {label}"),
                    BAND_CHARS,
                );
            }
            (Actor::Kit, _) => {
                let _ = writeln!(
                    out,
                    r##"<rect x="{BAND_X}" y="{}" width="{}" height="{}" rx="3" fill="#e8eef7" stroke="#7a93b8"/>"##,
                    y + 2,
                    WIDTH - BAND_X - 10,
                    ROW - 4
                );
                text(
                    &mut out,
                    (BAND_X + WIDTH - 10) / 2,
                    base,
                    "middle",
                    "band",
                    &format!("kit: {label}"),
                    BAND_CHARS,
                );
            }
            (Actor::Cpr | Actor::Main, _) => {
                let what = format!("{}: {label}", e.actor.name());
                match direction(&label) {
                    Some(to_target) => {
                        let (x1, x2) = if to_target { (XS, XT) } else { (XT, XS) };
                        let _ = writeln!(
                            out,
                            r##"<line x1="{x1}" y1="{0}" x2="{x2}" y2="{0}" stroke="#1f5fa8" stroke-width="1.5" marker-end="url(#head)"/>"##,
                            y + 17
                        );
                        text(
                            &mut out,
                            (XS + XT) / 2,
                            y + 12,
                            "middle",
                            "chan",
                            &what,
                            COL_CHARS,
                        );
                    }
                    None => text(
                        &mut out,
                        (XS + XT) / 2,
                        base,
                        "middle",
                        "note",
                        &format!("({what})"),
                        COL_CHARS,
                    ),
                }
            }
            (Actor::Device, _) => text(
                &mut out,
                (XS + XT) / 2,
                base,
                "middle",
                "note",
                &format!("({label})"),
                COL_CHARS,
            ),
        }
    }

    let mut y = end + 30;
    if failing.is_empty() {
        text(
            &mut out,
            10,
            y,
            "start",
            "pass",
            "no rule broken",
            BAND_CHARS,
        );
    } else {
        let ids: Vec<&str> = failing.iter().map(|v| v.rule).collect();
        text(
            &mut out,
            10,
            y,
            "start",
            "fail",
            &format!("FAILING: {}", ids.join(", ")),
            BAND_CHARS,
        );
        for v in &failing {
            y += 20;
            text(
                &mut out,
                10,
                y,
                "start",
                "entry",
                &format!("{}: {}", v.rule, redact(&v.evidence, r)),
                BAND_CHARS + 15,
            );
        }
    }
    let passing: Vec<&str> = verdicts
        .iter()
        .filter(|v| v.status == Status::Pass)
        .map(|v| v.rule)
        .collect();
    y += 20;
    text(
        &mut out,
        10,
        y,
        "start",
        "pass",
        &format!(
            "pass: {}",
            if passing.is_empty() {
                "none".to_string()
            } else {
                passing.join(", ")
            }
        ),
        BAND_CHARS + 15,
    );
    let _ = writeln!(out, "</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::record;
    use cprkit_harness::adapter::VmEvent;
    use cprkit_harness::plan::Step;

    #[test]
    fn the_picture_is_xml_with_escaped_text() {
        let r = record(&[
            (
                1,
                Actor::Kit,
                What::Point {
                    step: Step::CprSave,
                    note: "first fds held <1 & \"2\">".into(),
                },
            ),
            (2, Actor::Kit, What::Action("migrate".into())),
            (3, Actor::Source, What::Event(VmEvent::Stop)),
            (
                4,
                Actor::Cpr,
                What::Channel("1 fds crossed to the target".into()),
            ),
            (
                5,
                Actor::Main,
                What::Channel("EOF from target passed to source".into()),
            ),
            (6, Actor::Cpr, What::Channel("source connected".into())),
            (
                7,
                Actor::Target,
                What::Event(VmEvent::Other("\u{1}odd'".into())),
            ),
        ]);
        let verdicts = vec![Verdict {
            rule: "ORD-1",
            status: Status::Fail,
            evidence: "source runstate `running` <when> the first fd crossed".into(),
            detail: String::new(),
        }];
        let svg = draw(&r, &verdicts);
        let doc = roxmltree::Document::parse(&svg).expect("the SVG is XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(root.attribute("version"), Some("1.1"));
        let texts: Vec<String> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .map(|n| n.text().unwrap_or_default().to_string())
            .collect();
        assert!(texts.iter().any(|t| t == "FAILING: ORD-1"), "{texts:?}");
        assert!(
            texts
                .iter()
                .any(|t| t == "hold cpr-save: first fds held <1 & \"2\">"),
            "{texts:?}"
        );
        let arrows = doc
            .descendants()
            .filter(|n| n.has_tag_name("line") && n.attribute("marker-end").is_some())
            .count();
        assert_eq!(arrows, 2);
    }
}
