//! ERR-1 and ERR-2: malformed requests and stuck peers.

use super::Verdict;
use crate::adapter::VmEvent;
use crate::plan::Fault;
use crate::record::{MigrateReply, TrialRecord};
use crate::timeline::Actor;

pub fn err1(r: &TrialRecord) -> Verdict {
    const ID: &str = "ERR-1";
    let Some(Fault::BadRequest(b)) = r.fault() else {
        return Verdict::na(ID, "no malformed request");
    };
    let what = b.name();
    if let Some(x) = r.source.exit {
        return Verdict::fail(
            ID,
            format!("the source process died on a malformed request ({what}): {x}"),
        );
    }
    match &r.migrate {
        MigrateReply::Refused(_) => {}
        MigrateReply::Accepted => {
            return Verdict::fail(ID, format!("a malformed request ({what}) was accepted"));
        }
        MigrateReply::NoAnswer(e) => {
            return Verdict::fail(ID, format!("no answer to a malformed request ({what})"))
                .with_detail(e.clone());
        }
        MigrateReply::NotSent => return Verdict::na(ID, "the request was never sent"),
    }
    let from = r.migrate_at().unwrap_or_default();
    let touched: Vec<(&'static str, std::time::Duration)> = r
        .events(Actor::Source)
        .filter(|(e, _)| e.at >= from)
        .filter_map(|(e, ev)| match ev {
            VmEvent::Stop => Some(("STOP", e.at)),
            VmEvent::Resume => Some(("RESUME", e.at)),
            _ => None,
        })
        .collect();
    let rs = r.source.runstate.as_deref().unwrap_or("unknown");
    if !touched.is_empty() {
        let names: Vec<&str> = touched.iter().map(|(n, _)| *n).collect();
        let times: Vec<String> = touched
            .iter()
            .map(|(n, at)| format!("{n} at {}", super::ms(*at)))
            .collect();
        let pair = if names == ["STOP", "RESUME"] {
            "stopped and resumed around the refusal (a STOP/RESUME pair)".to_string()
        } else {
            format!("went through {} around the refusal", names.join(", "))
        };
        return Verdict::fail(
            ID,
            format!(
                "refused, but the source {pair}; it ended `{rs}`, it was `{}`",
                r.prior
            ),
        )
        .with_detail(times.join(", "));
    }
    if rs != r.prior {
        return Verdict::fail(
            ID,
            format!(
                "refused, but the VM state changed (`{}` -> `{rs}`)",
                r.prior
            ),
        );
    }
    if rs == "running" && r.source.counter_moving == Some(false) {
        return Verdict::fail(ID, "refused, but the guest stopped moving");
    }
    Verdict::pass(ID, format!("refused ({what}); the source still `{rs}`"))
}

pub fn err2(r: &TrialRecord) -> Verdict {
    const ID: &str = "ERR-2";
    if r.migrate != MigrateReply::Accepted {
        return Verdict::na(ID, "no transfer started");
    }
    if !r.ended_in_time {
        let st = r.status().unwrap_or("unknown");
        return Verdict::fail(
            ID,
            format!("the source's migration never ended (still `{st}`)"),
        );
    }
    let Some(c) = &r.cancel else {
        return Verdict::pass(ID, "every step ended within its bound");
    };
    if r.completed() {
        return Verdict::pass(ID, "the transfer had completed when the cancel came");
    }
    match &c.ended {
        None => Verdict::fail(
            ID,
            format!(
                "after a cancel at {}, the source's migration did not end",
                c.step
            ),
        )
        .with_detail(format!("bound {} ms", r.settle.as_millis())),
        Some(_) if r.source.exit.is_some() => {
            Verdict::fail(ID, "the source process died after the cancel")
        }
        Some(_) => {
            let rs = r.source.runstate.as_deref().unwrap_or("unknown");
            if rs == r.prior {
                Verdict::pass(
                    ID,
                    format!("the cancel at {} returned the source to `{rs}`", c.step),
                )
            } else {
                Verdict::fail(
                    ID,
                    format!(
                        "after a cancel at {}, the source stayed `{rs}`, not `{}`",
                        c.step, r.prior
                    ),
                )
            }
        }
    }
}
