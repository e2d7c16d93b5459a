//! A trial's fault schedule: the faults it injects (one at a point of the
//! matrix, or several at once when fuzzing), the channel holds of chosen
//! length (the kit holding a message on purpose before it lets it go), and how
//! late a `device-delay` answers. The controller asks the schedule at each
//! step what to do there; the rules read what became of each fault from the
//! record.
//!
//! A schedule is spelled in one line, parsed and printed here
//! (`kill-target@cpr-save,cancel@main-stream;hold=cpr-save:40;delay=120`):
//! the faults by `FAULT@STEP` in step order, then the holds in ms, then the
//! device delay in ms.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::faults::{DEVICE_DELAY, Fault, Injection};
use crate::plan::{BadRequest, FaultPoint, PlanParseError};
use crate::steps::Step;

/// The steps where the kit holds a message on a channel (a hold of chosen
/// length can be made there).
pub const HOLD_STEPS: [Step; 4] = [
    Step::CprSave,
    Step::TargetInit,
    Step::MainStream,
    Step::TargetResume,
];

/// The kit holds the message of a step for a time before it acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelHold {
    pub step: Step,
    pub ms: u64,
}

/// What a trial injects and where, and how it bends the timing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Schedule {
    /// The faults, in schedule order ([`Schedule::new`] sorts them): by step,
    /// and at one step the device's fault before the kit's.
    pub faults: Vec<FaultPoint>,
    /// Channel holds, at most one per step.
    pub holds: Vec<ChannelHold>,
    /// How late a `device-delay` answers.
    pub device_delay: Duration,
}

/// Why a spelled-out schedule is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("{0}")]
    Point(#[from] PlanParseError),
    #[error("two faults of the {who} at step `{step}`: a step takes one of each")]
    SameStep { step: Step, who: &'static str },
    #[error("a bad request cannot be combined with another fault")]
    BadRequestNotAlone,
    #[error("cancel and hang-target both cancel: a schedule takes one of them")]
    TwoCancels,
    #[error("`{0}` is not a hold: write STEP:MS at a step of {steps}", steps = HOLD_STEPS.map(Step::name).join(", "))]
    BadHold(String),
    #[error("`{0}` is not a number of milliseconds")]
    BadMs(String),
    #[error("unknown schedule part `{0}` (known: the faults, hold=, delay=)")]
    UnknownPart(String),
}

/// The order of faults in a schedule: by step, the device's before the kit's.
fn order_key(p: &FaultPoint) -> (Step, bool) {
    (p.step, !p.fault.needs_device())
}

impl Schedule {
    /// A checked schedule: faults sorted into schedule order, holds by step.
    pub fn new(
        mut faults: Vec<FaultPoint>,
        mut holds: Vec<ChannelHold>,
        device_delay: Duration,
    ) -> Result<Self, ScheduleError> {
        faults.sort_by_key(order_key);
        for w in faults.windows(2) {
            if order_key(&w[0]) == order_key(&w[1]) {
                let who = if w[0].fault.needs_device() {
                    "device"
                } else {
                    "kit"
                };
                return Err(ScheduleError::SameStep {
                    step: w[0].step,
                    who,
                });
            }
        }
        let bad = faults
            .iter()
            .any(|p| matches!(p.fault, Fault::BadRequest(_)));
        if bad && faults.len() > 1 {
            return Err(ScheduleError::BadRequestNotAlone);
        }
        let cancels = faults
            .iter()
            .filter(|p| matches!(p.fault, Fault::Cancel | Fault::HangTarget))
            .count();
        if cancels > 1 {
            return Err(ScheduleError::TwoCancels);
        }
        holds.sort();
        holds.dedup_by_key(|h| h.step);
        if let Some(h) = holds.iter().find(|h| !HOLD_STEPS.contains(&h.step)) {
            return Err(ScheduleError::BadHold(h.step.name().into()));
        }
        Ok(Schedule {
            faults,
            holds,
            device_delay,
        })
    }

    /// The schedule of one matrix trial: its point or none, no hold, the
    /// standard device delay.
    pub fn single(point: Option<FaultPoint>) -> Self {
        Schedule {
            faults: point.into_iter().collect(),
            holds: Vec::new(),
            device_delay: DEVICE_DELAY,
        }
    }

    /// The first fault of the schedule: the one a trial must reach.
    pub fn first(&self) -> Option<FaultPoint> {
        self.faults.first().copied()
    }

    /// The faults after the first.
    pub fn later(&self) -> &[FaultPoint] {
        self.faults.get(1..).unwrap_or(&[])
    }

    /// The fault the kit itself injects at `step` (not the device's), if any.
    pub fn kit_fault_at(&self, step: Step) -> Option<Fault> {
        self.faults
            .iter()
            .find(|p| p.step == step && !p.fault.needs_device())
            .map(|p| p.fault)
    }

    /// The device's faults (armed before the migrate command).
    pub fn device_faults(&self) -> impl Iterator<Item = FaultPoint> + '_ {
        self.faults
            .iter()
            .copied()
            .filter(|p| p.fault.needs_device())
    }

    /// The malformed request, if the schedule's fault is one.
    pub fn bad_request(&self) -> Option<BadRequest> {
        self.faults.iter().find_map(|p| match p.fault.injection() {
            Injection::Request(b) => Some(b),
            _ => None,
        })
    }

    /// How long the kit holds the message of `step` before acting.
    pub fn hold_at(&self, step: Step) -> Option<Duration> {
        self.holds
            .iter()
            .find(|h| h.step == step)
            .map(|h| Duration::from_millis(h.ms))
    }

    /// Whether this is a matrix trial's schedule (at most one fault, no
    /// hold, the standard delay).
    pub fn is_single(&self) -> bool {
        self.faults.len() <= 1 && self.holds.is_empty() && self.device_delay == DEVICE_DELAY
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.faults.is_empty() {
            f.write_str("none")?;
        }
        let faults: Vec<String> = self.faults.iter().map(|p| p.to_string()).collect();
        f.write_str(&faults.join(","))?;
        if !self.holds.is_empty() {
            let holds: Vec<String> = self
                .holds
                .iter()
                .map(|h| format!("{}:{}", h.step, h.ms))
                .collect();
            write!(f, ";hold={}", holds.join(","))?;
        }
        if self.device_delay != DEVICE_DELAY {
            write!(f, ";delay={}", self.device_delay.as_millis())?;
        }
        Ok(())
    }
}

fn ms(s: &str) -> Result<u64, ScheduleError> {
    s.parse().map_err(|_| ScheduleError::BadMs(s.into()))
}

impl FromStr for Schedule {
    type Err = ScheduleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(';');
        let faults_part = parts.next().unwrap_or("").trim();
        let faults = if faults_part.is_empty() || faults_part == "none" {
            Vec::new()
        } else {
            faults_part
                .split(',')
                .map(|p| p.trim().parse::<FaultPoint>())
                .collect::<Result<Vec<_>, _>>()?
        };
        let mut holds = Vec::new();
        let mut delay = DEVICE_DELAY;
        for part in parts {
            let part = part.trim();
            if let Some(list) = part.strip_prefix("hold=") {
                for h in list.split(',') {
                    let (step, n) = h
                        .split_once(':')
                        .ok_or_else(|| ScheduleError::BadHold(h.into()))?;
                    let step: Step = step.parse()?;
                    if !HOLD_STEPS.contains(&step) {
                        return Err(ScheduleError::BadHold(h.into()));
                    }
                    holds.push(ChannelHold { step, ms: ms(n)? });
                }
            } else if let Some(n) = part.strip_prefix("delay=") {
                delay = Duration::from_millis(ms(n)?);
            } else {
                return Err(ScheduleError::UnknownPart(part.into()));
            }
        }
        Schedule::new(faults, holds, delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> FaultPoint {
        s.parse().unwrap()
    }

    #[test]
    fn a_schedule_round_trips_through_its_spelling() {
        let s = Schedule::new(
            vec![p("cancel@main-stream"), p("device-delay@target-init")],
            vec![ChannelHold {
                step: Step::CprSave,
                ms: 40,
            }],
            Duration::from_millis(120),
        )
        .unwrap();
        let text = s.to_string();
        assert_eq!(
            text,
            "device-delay@target-init,cancel@main-stream;hold=cpr-save:40;delay=120"
        );
        assert_eq!(text.parse::<Schedule>().unwrap(), s);
        assert_eq!("none".parse::<Schedule>().unwrap(), Schedule::single(None));
        assert_eq!(Schedule::single(None).to_string(), "none");
    }

    #[test]
    fn the_device_fault_of_a_step_comes_before_the_kits() {
        let s: Schedule = "cancel@target-init,device-busy@target-init"
            .parse()
            .unwrap();
        assert_eq!(s.first(), Some(p("device-busy@target-init")));
        assert_eq!(s.kit_fault_at(Step::TargetInit), Some(Fault::Cancel));
        assert_eq!(s.device_faults().count(), 1);
    }

    #[test]
    fn impossible_schedules_are_refused() {
        let two = "cancel@cpr-save,kill-target@cpr-save".parse::<Schedule>();
        assert_eq!(
            two.unwrap_err(),
            ScheduleError::SameStep {
                step: Step::CprSave,
                who: "kit"
            }
        );
        assert_eq!(
            "bad-request:private-ram@source-stop,kill-target@cpr-save"
                .parse::<Schedule>()
                .unwrap_err(),
            ScheduleError::BadRequestNotAlone
        );
        assert_eq!(
            "hang-target@target-listen,cancel@cpr-save"
                .parse::<Schedule>()
                .unwrap_err(),
            ScheduleError::TwoCancels
        );
        assert!(matches!(
            "cancel@cpr-save;hold=target-listen:5".parse::<Schedule>(),
            Err(ScheduleError::BadHold(_))
        ));
        assert!(matches!(
            "cancel@cpr-save;delay=soon".parse::<Schedule>(),
            Err(ScheduleError::BadMs(_))
        ));
        assert!(matches!(
            "cancel@nowhere".parse::<Schedule>(),
            Err(ScheduleError::Point(_))
        ));
    }

    #[test]
    fn a_matrix_point_is_a_single_schedule() {
        let s = Schedule::single(Some(p("kill-target@cpr-save")));
        assert!(s.is_single());
        assert_eq!(s.later(), &[] as &[FaultPoint]);
        assert_eq!(s.to_string(), "kill-target@cpr-save");
        assert!(
            !"kill-target@cpr-save;hold=cpr-save:3"
                .parse::<Schedule>()
                .unwrap()
                .is_single()
        );
    }
}
