//! ORD-1: the source is stopped when the first CPR fd crosses.

use super::{Verdict, ms};
use crate::record::TrialRecord;

/// Judged at the cut-over hold: the source's runstate while the fds were held,
/// and whether the guest counter moved in its memfd during the hold.
pub fn ord1(r: &TrialRecord) -> Verdict {
    const ID: &str = "ORD-1";
    let Some(c) = &r.cutover else {
        return Verdict::na(ID, "no fd crossed the cpr channel");
    };
    if c.source_runstate.is_none() && c.counter.is_none() {
        return Verdict::na(
            ID,
            "the source could not be observed at the cut-over (no runstate, no guest RAM)",
        );
    }
    let runstate = c.source_runstate.as_deref().unwrap_or("unknown");
    let moved = c.counter.is_some_and(|(a, b)| b != a);
    let device_io = r
        .device
        .as_ref()
        .map_or(0, |d| super::devices::source_io_after_cutover(r, d).len());
    let mut detail = match c.counter {
        Some((a, b)) => format!(
            "at {}: source runstate {runstate}, guest counter {a} -> {b} during the hold",
            ms(c.at)
        ),
        None => format!("at {}: source runstate {runstate}", ms(c.at)),
    };
    if let Some(w) = &c.watch {
        detail.push_str(&format!("; {w}"));
    }
    if device_io > 0 {
        detail.push_str(&format!(
            "; {device_io} device I/O request(s) of the source after the cut-over"
        ));
    }
    if runstate == "running" || moved || device_io > 0 {
        let mut why = Vec::new();
        if runstate == "running" || moved {
            why.push(format!(
                "source runstate `{runstate}` when the first fd crossed"
            ));
        }
        if moved {
            why.push("the guest counter moved while the fds were held".to_string());
        }
        if device_io > 0 {
            why.push(
                "the device served I/O from the source after the first fd crossed".to_string(),
            );
        }
        Verdict::fail(ID, why.join("; ")).with_detail(detail)
    } else {
        Verdict::pass(
            ID,
            format!("source `{runstate}` and its guest still when the first fd crossed"),
        )
        .with_detail(detail)
    }
}
