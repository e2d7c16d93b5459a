//! The end of a trial: bounded waits for each side to settle, the final
//! readings, and stopping everything the trial started.

use std::sync::mpsc::{self};
use std::time::{Duration, Instant};

use crate::adapter::{Channels, Receive, Role, SourceEnd};
use crate::guestmem::GuestRam;
use crate::interposer::Directive;
use crate::record::{MigrateReply, ProcEnd, TrialRecord};
use crate::scenario::OnFailedLoad;

use super::{Controller, Signal};

impl Controller<'_> {
    /// After the migration: bounded waits for each side to reach where it
    /// should, serving any hold that still comes.
    pub(super) fn settle(&mut self) {
        let completed = self.source_status.as_deref() == Some("completed");
        let prior = self.record.prior.clone();
        let deadline = Instant::now() + self.spec.settle;
        if completed {
            // The target should reach the source's prior runstate, within
            // the settle bound: its monitor answering is part of that (one
            // that answers only once the state is loaded never answers
            // when nothing was sent).
            if self.target.as_ref().is_some_and(|t| t.monitor.is_none())
                && let Some(m) = self.connect_while_alive(Role::Target, deadline)
            {
                self.target.as_mut().expect("checked").monitor = Some(m);
            }
            // Both sides settle: QEMU reports `completed` a moment before
            // its runstate reaches `postmigrate`; a source that finishes by
            // exiting is waited for.
            let exits = self.shape().source_end == SourceEnd::Exit0;
            self.serve_until(deadline, |c| {
                (!c.alive(Role::Target) || c.runstate_is(Role::Target, &prior))
                    && (!c.alive(Role::Source)
                        || (!exits && !c.runstate_is(Role::Source, "finish-migrate")))
            });
        } else if self.record.migrate == MigrateReply::Accepted {
            self.serve_until(deadline, |c| {
                !c.alive(Role::Source) || c.runstate_is(Role::Source, &prior)
            });
            // A target the transfer reached must end by itself; one never
            // contacted may wait on (the kit stops it).
            let contacted = self.interposer.as_ref().is_some_and(|i| {
                i.traffic()
                    .target_contacted
                    .load(std::sync::atomic::Ordering::SeqCst)
            });
            // A target that receives on request may stay, empty, once its
            // own receive has ended (FAIL-4 reads how it ended).
            // So may one told to stay alive when its load fails.
            let stays = self.shape().receive == Receive::MonitorRequest
                || self.spec.scenario.on_failed_load == OnFailedLoad::Stay;
            if contacted {
                self.serve_until(deadline, |c| {
                    !c.alive(Role::Target) || (stays && c.target_migration_ended())
                });
            }
        }
        self.barrier_point_final();
    }

    /// Whether the target's monitor says its own migration ended.
    fn target_migration_ended(&mut self) -> bool {
        self.target
            .as_mut()
            .and_then(|t| t.monitor.as_mut())
            .is_some_and(|m| m.migration().is_ok_and(|i| i.is_terminal()))
    }

    pub(super) fn barrier_point_final(&mut self) {
        let (src, tgt) = self.flush();
        self.action("final readings");
        self.observe_device_end((src.clone(), tgt.clone()));
        let settle = self.spec.settle;
        let one = self.shape().channels == Channels::One;
        let probe = one.then(|| self.adapter.guest_probe());
        for role in [Role::Source, Role::Target] {
            let alive = self.alive(role);
            let Some(side) = (match role {
                Role::Source => self.source.as_mut(),
                Role::Target => self.target.as_mut(),
            }) else {
                continue;
            };
            let mut end = ProcEnd {
                exit: side.proc.exit(),
                ..ProcEnd::default()
            };
            if alive && let Some(mon) = side.monitor.as_mut() {
                end.runstate = match role {
                    Role::Source => src.clone(),
                    Role::Target => tgt.clone(),
                };
                end.migration = mon.migration().ok();
            }
            // With one channel, the target maps the RAM after target-init.
            if let Some(probe) = probe.as_ref().filter(|_| alive && role == Role::Target)
                && side.ram.is_none()
            {
                side.ram = GuestRam::open(side.proc.pid(), probe).ok();
            }
            if let Some(ram) = side.ram.as_ref() {
                end.counter = ram.counter().ok();
                if alive && end.runstate.as_deref() == Some("running") {
                    end.counter_moving = Some(counter_moves(ram, settle));
                }
                if let Ok(c) = ram.counter() {
                    end.ring = ram.check_ring(c).ok();
                }
            }
            match role {
                Role::Source => self.record.source = end,
                Role::Target => self.record.target = end,
            }
        }
    }

    /// Stops everything the trial started and hands back the record.
    pub(super) fn finish(&mut self, ran: bool) -> TrialRecord {
        let mut killed = Vec::new();
        for role in [Role::Source, Role::Target] {
            if self.alive(role) {
                killed.push(role);
            }
        }
        if !killed.is_empty() {
            self.action("stop the VMMs left");
        }
        for side in [self.source.as_mut(), self.target.as_mut()]
            .into_iter()
            .flatten()
        {
            side.monitor = None;
            side.ram = None;
            if side.proc.is_alive() {
                side.proc.kill();
            }
        }
        if ran {
            for role in killed {
                match role {
                    Role::Source => self.record.source.killed_at_end = true,
                    Role::Target => self.record.target.killed_at_end = true,
                }
            }
        }
        // Release every hold still waiting: the deferred ones are answered, and
        // dropping the receiver answers those in flight (and any later one).
        for s in self.deferred.drain(..) {
            if let Signal::Hold(_, r) = s {
                let _ = r.send(Directive::Close);
            }
        }
        drop(std::mem::replace(&mut self.rx, mpsc::channel().1));
        if let Some(mut i) = self.interposer.take() {
            i.stop();
        }
        self.source = None;
        self.target = None;
        self.finish_device();
        self.record.timeline = self.hop_entries();
        self.record.chain = self.chain();
        self.record.clone()
    }
}

/// Whether the guest counter moves within `bound`.
fn counter_moves(ram: &GuestRam, bound: Duration) -> bool {
    let Ok(start) = ram.counter() else {
        return false;
    };
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if ram.counter().is_ok_and(|c| c != start) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}
