//! Shrinking a failing schedule: smaller schedules tried one at a time
//! (drop a fault, drop a hold, move a fault to an earlier step the case
//! plans, shorten a hold or the device delay), each kept if it still breaks
//! the same rule with the same kind of evidence, until none does or the
//! budget of trials is spent.

use std::time::Duration;

use cprkit_harness::plan::{DEVICE_DELAY, FaultPoint};
use cprkit_harness::schedule::{ChannelHold, Schedule};

/// The schedules one shrinking step tries after `s`, smallest change to the
/// size first: fewer faults, fewer holds, earlier faults, shorter times.
pub fn candidates(s: &Schedule, points: &[FaultPoint]) -> Vec<Schedule> {
    let mut out = Vec::new();
    let mut push = |faults: Vec<FaultPoint>, holds: Vec<ChannelHold>, delay: Duration| {
        if let Ok(c) = Schedule::new(faults, holds, delay)
            && c != *s
            && !out.contains(&c)
        {
            out.push(c);
        }
    };
    // Drop a fault (the last ones first: the first is most often the cause).
    for i in (0..s.faults.len()).rev() {
        let mut f = s.faults.clone();
        f.remove(i);
        push(f, s.holds.clone(), s.device_delay);
    }
    for i in 0..s.holds.len() {
        let mut h = s.holds.clone();
        h.remove(i);
        push(s.faults.clone(), h, s.device_delay);
    }
    // Move a fault to an earlier step where the case plans it.
    for (i, p) in s.faults.iter().enumerate() {
        for q in points
            .iter()
            .filter(|q| q.fault == p.fault && q.step < p.step)
        {
            let mut f = s.faults.clone();
            f[i] = *q;
            push(f, s.holds.clone(), s.device_delay);
        }
    }
    for i in 0..s.holds.len() {
        if s.holds[i].ms > 1 {
            let mut h = s.holds.clone();
            h[i].ms /= 2;
            push(s.faults.clone(), h, s.device_delay);
        }
    }
    let has_delay = s
        .faults
        .iter()
        .any(|p| p.fault == cprkit_harness::plan::Fault::DeviceDelay);
    if has_delay && s.device_delay > Duration::from_millis(20) {
        push(s.faults.clone(), s.holds.clone(), s.device_delay / 2);
    }
    // Without a device-delay the delay means nothing: the standard one.
    if !has_delay && s.device_delay != DEVICE_DELAY {
        push(s.faults.clone(), s.holds.clone(), DEVICE_DELAY);
    }
    out
}

/// What a shrink ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shrunk {
    pub schedule: Schedule,
    /// Trials run while shrinking.
    pub tried: usize,
    /// Smaller schedules kept on the way.
    pub steps: usize,
}

/// Shrinks `original` while `still_breaks` says a candidate breaks the same
/// rule the same way, trying at most `budget` candidates.
pub fn shrink(
    original: &Schedule,
    points: &[FaultPoint],
    budget: usize,
    mut still_breaks: impl FnMut(&Schedule) -> bool,
) -> Shrunk {
    let mut current = original.clone();
    let mut tried = 0;
    let mut steps = 0;
    'outer: while tried < budget {
        for c in candidates(&current, points) {
            if tried >= budget {
                break 'outer;
            }
            tried += 1;
            if still_breaks(&c) {
                current = c;
                steps += 1;
                continue 'outer;
            }
        }
        break;
    }
    Shrunk {
        schedule: current,
        tried,
        steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cprkit_harness::plan::{Fault, Step};

    fn s(text: &str) -> Schedule {
        text.parse().unwrap()
    }

    #[test]
    fn a_bug_of_one_fault_shrinks_to_that_fault_at_its_earliest_step() {
        let points = FaultPoint::matrix(true);
        let original = s(
            "device-delay@release-owner,kill-target@main-stream;hold=cpr-save:90,target-init:40;delay=300",
        );
        // The bug: any kill-target breaks the rule.
        let out = shrink(&original, &points, 100, |c| {
            c.faults.iter().any(|p| p.fault == Fault::KillTarget)
        });
        assert_eq!(out.schedule, s("kill-target@target-listen"));
        assert!(out.steps >= 4, "{out:?}");
    }

    #[test]
    fn a_bug_of_two_faults_keeps_both() {
        let points = FaultPoint::matrix(true);
        let original = s(
            "device-delay@target-init,cancel@target-init,kill-source@main-stream;hold=main-stream:80;delay=250",
        );
        // The bug: a cancel during a late device answer to the target.
        let out = shrink(&original, &points, 100, |c| {
            c.faults
                .contains(&FaultPoint::new(Fault::DeviceDelay, Step::TargetInit).unwrap())
                && c.faults.iter().any(|p| p.fault == Fault::Cancel)
                && c.device_delay >= Duration::from_millis(100)
        });
        assert_eq!(out.schedule.faults.len(), 2, "{}", out.schedule);
        assert!(out.schedule.holds.is_empty());
        assert_eq!(
            out.schedule.to_string(),
            "cancel@cpr-save,device-delay@target-init;delay=125"
        );
    }

    #[test]
    fn the_budget_bounds_the_trials() {
        let points = FaultPoint::matrix(false);
        let original = s("kill-target@main-stream;hold=cpr-save:90");
        let mut n = 0;
        let out = shrink(&original, &points, 3, |_| {
            n += 1;
            false
        });
        assert_eq!((out.tried, n), (3, 3));
        assert_eq!(out.schedule, original);
    }
}
