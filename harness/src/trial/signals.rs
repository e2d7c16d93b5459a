//! The controller's inbox: holds, events and exits, served while the
//! migration runs and until the end.

use std::time::{Duration, Instant};

use crate::adapter::{Outcome, Role, VmEvent};
use crate::plan::Step;

use super::{Controller, Signal};

/// How often [`Controller::serve_until`] looks again without an event.
const SERVE_TICK: Duration = Duration::from_millis(20);

impl Controller<'_> {
    /// Takes the next signal, deferred ones first; `None` once `deadline` passes.
    /// With `holds_ok` false, holds are kept for later (the kit is inside one).
    pub(super) fn next_signal(&mut self, deadline: Instant, holds_ok: bool) -> Option<Signal> {
        if holds_ok && let Some(s) = self.deferred.pop_front() {
            return Some(s);
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.rx.recv_timeout(left) {
                Ok(Signal::Hold(h, r)) if !holds_ok => self.deferred.push_back(Signal::Hold(h, r)),
                Ok(s) => return Some(s),
                Err(_) => return None,
            }
        }
    }

    /// Serves signals (answers holds, notes events) until `done` or `deadline`.
    pub(super) fn serve_until(
        &mut self,
        deadline: Instant,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> bool {
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            // Each event (a runstate change, an exit) ends the tick at
            // once; the tick is for a VMM that changes without saying so,
            // and a short one would ask a waiting VMM hundreds of times.
            let tick = (Instant::now() + SERVE_TICK).min(deadline);
            match self.next_signal(tick, true) {
                Some(Signal::Hold(h, reply)) => {
                    let d = self.on_hold(h);
                    let _ = reply.send(d);
                }
                Some(s) => self.note(&s),
                None => {}
            }
        }
    }

    /// Notes every signal already queued; holds are kept for later.
    pub(super) fn drain_signals(&mut self) {
        while let Ok(s) = self.rx.try_recv() {
            match s {
                Signal::Hold(..) => self.deferred.push_back(s),
                other => self.note(&other),
            }
        }
    }

    pub(super) fn note(&mut self, s: &Signal) {
        if let Signal::Event(Role::Source, VmEvent::Migration(st)) = s {
            self.source_status = Some(st.clone());
        }
    }

    pub(super) fn source_terminal(&self) -> bool {
        matches!(
            self.source_status.as_deref(),
            Some("completed" | "failed" | "cancelled")
        )
    }

    pub(super) fn source_terminal_polled(&mut self) -> bool {
        if self.source_terminal() {
            return true;
        }
        // A monitor that answers from the VMM's events can still be asked
        // once the source is gone: its last events are read then.
        if !self.alive(Role::Source) && self.shape().outcome != Outcome::Events {
            return false;
        }
        if let Some(Ok(m)) = self.source_monitor().map(|m| m.migration())
            && m.is_terminal()
        {
            self.source_status = Some(m.status);
            return true;
        }
        false
    }

    /// Follows the migration from the migrate command to its end.
    pub(super) fn follow_migration(&mut self) {
        // The bound is the VMM's: the time the kit holds a message (its
        // watch, a fault, a hold of the schedule) is added to it.
        let mut deadline = Instant::now() + self.step_bound;
        let mut last_progress = Instant::now();
        loop {
            if self.source_terminal() {
                return;
            }
            if !self.alive(Role::Source) {
                // A source that finishes by exiting reported its end in
                // events that may still be on their way.
                if self.shape().outcome == Outcome::Events {
                    let _ = self.source_terminal_polled();
                }
                return;
            }
            if Instant::now() >= deadline {
                self.record.ended_in_time = self.source_terminal_polled();
                return;
            }
            // A hung target with no hold coming: the kit's timeout, then its cancel.
            if self.hang_pending && last_progress.elapsed() >= self.spec.settle {
                self.hang_pending = false;
                self.cancel(Step::TargetListen);
                self.thaw_target();
            }
            let tick = Instant::now() + Duration::from_millis(50);
            match self.next_signal(tick.min(deadline), true) {
                Some(Signal::Hold(h, reply)) => {
                    let held = Instant::now();
                    let d = self.on_hold(h);
                    let _ = reply.send(d);
                    deadline += held.elapsed();
                    last_progress = Instant::now();
                    self.give_main_channel();
                }
                Some(s) => self.note(&s),
                // Polling backs up the events, for a VMM that sends none.
                None => {
                    let _ = self.source_terminal_polled();
                }
            }
        }
    }
}
