//! Figures of a trial, read from its timeline: how long each step of the
//! handover took, the guest's downtime, and the whole migration.
//!
//! Every figure is the time between two timeline entries. When either entry is
//! missing (the fault came before it, the guest was paused so nothing stopped
//! or resumed, the migration never ended), the figure is absent: never zero.
//!
//! The step figures are measured between the kit's hold points, so they include
//! the time the kit held the channel there (it reads the source's runstate and
//! the guest counter at the cut-over hold): they describe the handover as the
//! kit drove it, not the VMM alone.

use std::time::Duration;

use cprkit_harness::adapter::VmEvent;
use cprkit_harness::plan::Step;
use cprkit_harness::record::TrialRecord;
use cprkit_harness::timeline::{Actor, What};
use serde::Serialize;

/// One figure of a trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    /// The kit's `migrate` action to the cut-over hold (the first fds held).
    MigrateToCutover,
    /// The cut-over hold to the target-init hold (the target closed the cpr channel).
    CutoverToTargetInit,
    /// The target-init hold to the main-stream hold (the first device-state bytes).
    TargetInitToMainStream,
    /// The main-stream hold to the target's RESUME.
    MainStreamToTargetResume,
    /// The source's STOP (after `migrate`) to the target's RESUME: the guest ran nowhere.
    Downtime,
    /// The kit's `migrate` action to the source's terminal MIGRATION event
    /// (completed, failed or cancelled).
    Total,
}

impl Figure {
    pub const ALL: [Figure; 6] = [
        Figure::MigrateToCutover,
        Figure::CutoverToTargetInit,
        Figure::TargetInitToMainStream,
        Figure::MainStreamToTargetResume,
        Figure::Downtime,
        Figure::Total,
    ];

    /// The key in report.json (`figures` of a trial), in milliseconds.
    pub fn key(self) -> &'static str {
        match self {
            Figure::MigrateToCutover => "migrate_to_cutover_ms",
            Figure::CutoverToTargetInit => "cutover_to_target_init_ms",
            Figure::TargetInitToMainStream => "target_init_to_main_stream_ms",
            Figure::MainStreamToTargetResume => "main_stream_to_target_resume_ms",
            Figure::Downtime => "downtime_ms",
            Figure::Total => "total_ms",
        }
    }

    /// What it measures, for people.
    pub fn label(self) -> &'static str {
        match self {
            Figure::MigrateToCutover => "migrate → cut-over hold",
            Figure::CutoverToTargetInit => "cut-over → target-init",
            Figure::TargetInitToMainStream => "target-init → main-stream",
            Figure::MainStreamToTargetResume => "main-stream → target RESUME",
            Figure::Downtime => "downtime: source STOP → target RESUME",
            Figure::Total => "total: migrate → source's last MIGRATION event",
        }
    }
}

/// The figures of one trial, in milliseconds; `None` where the trial has no
/// such figure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Figures {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migrate_to_cutover_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cutover_to_target_init_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_init_to_main_stream_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub main_stream_to_target_resume_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<f64>,
}

fn ms(d: Duration) -> f64 {
    // Microsecond resolution is plenty; it keeps report.json short.
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// `end - start` when both are there and in that order.
fn span(start: Option<Duration>, end: Option<Duration>) -> Option<f64> {
    match (start, end) {
        (Some(s), Some(e)) if e >= s => Some(ms(e - s)),
        _ => None,
    }
}

impl Figures {
    /// The figures of a trial, from its timeline.
    pub fn of(r: &TrialRecord) -> Figures {
        let migrate = r.migrate_at();
        let hold = |step: Step| {
            r.of(Actor::Kit)
                .find(|e| matches!(&e.what, What::Point { step: s, .. } if *s == step))
                .map(|e| e.at)
        };
        let event_after =
            |actor: Actor, after: Option<Duration>, want: &dyn Fn(&VmEvent) -> bool| {
                let after = after?;
                r.events(actor)
                    .find(|(e, ev)| e.at >= after && want(ev))
                    .map(|(e, _)| e.at)
            };
        let cutover = hold(Step::CprSave).filter(|&c| migrate.is_some_and(|m| c >= m));
        let target_init = hold(Step::TargetInit);
        let main_stream = hold(Step::MainStream);
        let is_resume = |ev: &VmEvent| *ev == VmEvent::Resume;
        let target_resume = event_after(Actor::Target, main_stream, &is_resume);
        let source_stop = event_after(Actor::Source, migrate, &|ev| *ev == VmEvent::Stop);
        let resumed = event_after(Actor::Target, source_stop, &is_resume);
        let terminal = event_after(
            Actor::Source,
            migrate,
            &|ev| matches!(ev, VmEvent::Migration(s) if matches!(s.as_str(), "completed" | "failed" | "cancelled")),
        );
        Figures {
            migrate_to_cutover_ms: span(migrate, cutover),
            cutover_to_target_init_ms: span(cutover, target_init),
            target_init_to_main_stream_ms: span(target_init, main_stream),
            main_stream_to_target_resume_ms: span(main_stream, target_resume),
            downtime_ms: span(source_stop, resumed),
            total_ms: span(migrate, terminal),
        }
    }

    pub fn get(&self, f: Figure) -> Option<f64> {
        match f {
            Figure::MigrateToCutover => self.migrate_to_cutover_ms,
            Figure::CutoverToTargetInit => self.cutover_to_target_init_ms,
            Figure::TargetInitToMainStream => self.target_init_to_main_stream_ms,
            Figure::MainStreamToTargetResume => self.main_stream_to_target_resume_ms,
            Figure::Downtime => self.downtime_ms,
            Figure::Total => self.total_ms,
        }
    }
}

/// The median of some figures (the mean of the two middle ones for an even
/// count); `None` for none.
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let m = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((m * 1000.0).round() / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::record;

    fn kit_point(at: u64, step: Step) -> (u64, Actor, What) {
        (
            at,
            Actor::Kit,
            What::Point {
                step,
                note: String::new(),
            },
        )
    }

    #[test]
    fn a_full_handover_has_every_figure() {
        let r = record(&[
            kit_point(1, Step::TargetListen),
            (2, Actor::Kit, What::Action("migrate".into())),
            (3, Actor::Source, What::Event(VmEvent::Stop)),
            kit_point(5, Step::CprSave),
            kit_point(9, Step::TargetInit),
            kit_point(14, Step::MainStream),
            kit_point(15, Step::TargetResume),
            (20, Actor::Target, What::Event(VmEvent::Resume)),
            (
                22,
                Actor::Source,
                What::Event(VmEvent::Migration("completed".into())),
            ),
        ]);
        let f = Figures::of(&r);
        assert_eq!(f.migrate_to_cutover_ms, Some(3.0));
        assert_eq!(f.cutover_to_target_init_ms, Some(4.0));
        assert_eq!(f.target_init_to_main_stream_ms, Some(5.0));
        assert_eq!(f.main_stream_to_target_resume_ms, Some(6.0));
        assert_eq!(f.downtime_ms, Some(17.0));
        assert_eq!(f.total_ms, Some(20.0));
    }

    #[test]
    fn a_missing_figure_is_absent_not_zero() {
        // A paused guest killed at the cut-over: nothing stops, nothing resumes.
        let r = record(&[
            (2, Actor::Kit, What::Action("migrate".into())),
            kit_point(5, Step::CprSave),
            (6, Actor::Kit, What::Action("SIGKILL target".into())),
            (
                8,
                Actor::Source,
                What::Event(VmEvent::Migration("failed".into())),
            ),
        ]);
        let f = Figures::of(&r);
        assert_eq!(f.migrate_to_cutover_ms, Some(3.0));
        assert_eq!(f.cutover_to_target_init_ms, None);
        assert_eq!(f.downtime_ms, None);
        assert_eq!(f.total_ms, Some(6.0));
        let json = serde_json::to_value(f).unwrap();
        assert!(json.get("downtime_ms").is_none(), "{json}");
        assert_eq!(Figures::of(&record(&[])), Figures::default());
    }

    #[test]
    fn medians() {
        assert_eq!(median([]), None);
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
