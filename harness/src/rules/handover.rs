//! DONE-0: the handover that should happen happens. A valid migrate command
//! is accepted (or refused only where the fault point allows it), answered,
//! and survived; and where the fault point is harmless, the transfer
//! completes. What each fault point requires is [`crate::faults::expected_end`]; a
//! schedule of several, [`crate::faults::expected_end_of`].

use super::Verdict;
use crate::faults::{Expected, expected_end_of};
use crate::record::{MigrateReply, TrialRecord};

/// The fault point, in words for evidence.
pub(super) fn context(r: &TrialRecord) -> String {
    match r.point {
        None => "during a fault-free handover".into(),
        Some(p) if r.later.is_empty() => format!("during the handover with {p}"),
        Some(p) => {
            let all: Vec<String> = std::iter::once(p.to_string())
                .chain(r.later.iter().map(|l| l.point.to_string()))
                .collect();
            format!("during the handover with {}", all.join(", "))
        }
    }
}

pub fn done0(r: &TrialRecord) -> Verdict {
    const ID: &str = "DONE-0";
    // A matrix trial: its point, reached or not (REACH-1 judges that). A
    // schedule of several: the faults it injected (a pre-empted one changes
    // nothing), or its first if none was.
    let injected = r.injected_points();
    let mut expected = match injected.split_first() {
        Some((first, rest)) if !r.later.is_empty() => expected_end_of(
            Some((first.fault, first.step)),
            rest.iter().map(|p| (p.fault, p.step)),
        ),
        _ => expected_end_of(r.point.map(|p| (p.fault, p.step)), []),
    };
    if expected == Expected::Refused {
        return Verdict::na(ID, "a malformed request: ERR-1 judges it");
    }
    // A scenario whose sides differ so that the target cannot load the
    // state (another RAM size, a device it lacks) must not complete.
    if let Some(why) = &r.mismatch {
        if r.completed() {
            return Verdict::fail(
                ID,
                format!(
                    "the handover completed although {why}: the target took a state that does not fit it"
                ),
            );
        }
        if expected == Expected::Completes {
            expected = Expected::Fails { refusal: false };
        }
    }
    let context = context(r);
    match &r.migrate {
        MigrateReply::NotSent => Verdict::na(ID, "the migrate command was never sent"),
        MigrateReply::NoAnswer(e) => {
            let why = match r.source.exit {
                Some(x) => format!("the source {x} on a valid migrate, {context}"),
                None => format!("a valid migrate was never answered, {context}"),
            };
            Verdict::fail(ID, why).with_detail(e.clone())
        }
        MigrateReply::Refused(desc) => match expected {
            Expected::Fails { refusal: true } => Verdict::pass(
                ID,
                "the migrate was refused, as it may be: the target was gone before it came",
            ),
            _ => Verdict::fail(ID, format!("a valid migrate was refused, {context}"))
                .with_detail(desc.clone()),
        },
        MigrateReply::Accepted => {
            if r.completed() {
                return Verdict::pass(ID, "the handover completed");
            }
            if expected != Expected::Completes {
                // A failure is what the point asks for, or allows: the
                // FAIL rules judge it, DONE-2 a completion it should not be.
                let end = r.status().unwrap_or("none");
                return Verdict::pass(
                    ID,
                    format!("the migrate was accepted and the transfer ended `{end}`"),
                );
            }
            let why = match (r.source.exit, r.status()) {
                (Some(x), _) => format!("the source {x} before the handover completed"),
                (None, Some(s)) if !r.ended_in_time => {
                    format!("the source's migration never completed (still `{s}`)")
                }
                (None, Some(s)) => format!("the source's migration ended `{s}`, not `completed`"),
                (None, None) => "the source never reported a migration status".into(),
            };
            Verdict::fail(ID, format!("{why}, {context}"))
        }
    }
}
