//! What the kit does at a hold point: observe (the cut-over readings,
//! target-init), then inject the trial's fault.

use std::time::{Duration, Instant};

use crate::adapter::{AdapterError, Channels, Role};
use crate::faults::{ChannelAct, Fault, Injection, Victim};
use crate::guestmem::{GuestRam, held_memfd_inodes, mapped_memfd_inodes};
use crate::interposer::{Dir, Directive, Held};
use crate::plan::Step;
use crate::procinfo;
use crate::record::{CancelObs, CutOver, TargetInit};
use crate::timeline::{Actor, What};

use super::{Controller, STARTUP, watch};

/// How long a fault at main-stream waits at most for a source that may
/// already have sent its whole stream to report so.
const SOURCE_DONE_WAIT: Duration = Duration::from_millis(100);
/// Readings in a row, [`IDLE_SAMPLE`] apart, that find every thread of the
/// source blocked: a source with nothing left to do that is not waiting on
/// anything outside it (the target's answer, the held channel) would have
/// run in between, so it has nothing to report on its own.
const IDLE_SAMPLES: u32 = 3;
const IDLE_SAMPLE: Duration = Duration::from_millis(1);

impl Controller<'_> {
    /// What the kit does at a hold point: observe, then inject the fault if it is here.
    pub(super) fn on_hold(&mut self, h: Held) -> Directive {
        // Once the source's migration is over (or the source is gone), nothing
        // more is under test: what still crosses passes, noted but no barrier.
        self.flush();
        self.drain_signals();
        // A source may hand its whole main stream to the kernel and report
        // `completed` at once (QEMU without return-path): the target is then
        // still under test (DONE-2), so a fault at main-stream goes ahead. The
        // kit first lets such a source say it is done (bounded), so that its
        // report always comes before the fault.
        let stream_fault = h.step == Step::MainStream && self.fault_at(h.step).is_some();
        // The wait ends at the source's report, its exit, or once the source
        // sits blocked (it waits for something from outside: nothing more
        // comes from it while the kit holds); the bound is for a source that
        // keeps busy without reporting.
        if stream_fault {
            let deadline = Instant::now() + SOURCE_DONE_WAIT;
            let pid = self.source.as_ref().map(|s| s.proc.pid());
            let mut idle = 0;
            while !self.source_terminal_polled()
                && self.alive(Role::Source)
                && Instant::now() < deadline
                && idle < IDLE_SAMPLES
            {
                std::thread::sleep(IDLE_SAMPLE);
                let blocked = pid.and_then(procinfo::all_threads_blocked) == Some(true);
                idle = if blocked { idle + 1 } else { 0 };
            }
        }
        if (self.source_terminal() && !stream_fault) || !self.alive(Role::Source) {
            let what = format!("after the migration ended: {} passed", h.step);
            self.timeline.record(h.chan_actor(), What::Channel(what));
            return Directive::Forward;
        }
        // The target's EOF is target-init only if the target loaded the CPR
        // state and lives (its monitor answers); a dying target closes too.
        if h.step == Step::TargetInit && !self.target_ready() {
            self.target_gone();
            self.timeline.record(
                Actor::Cpr,
                What::Channel("the target closed the cpr channel without loading".into()),
            );
            return Directive::Forward;
        }
        // With one channel, the target's first answer after the fds is
        // target-init only if it holds the passed RAM memfd then.
        if h.step == Step::TargetInit && self.shape().channels == Channels::One {
            let holds = self
                .target
                .as_ref()
                .map(|t| {
                    held_memfd_inodes(t.proc.pid(), &self.adapter.guest_probe().ram_memfd_name)
                })
                .is_some_and(|r| r.is_ok_and(|set| !set.is_empty()));
            if !holds {
                self.timeline.record(
                    Actor::Cpr,
                    What::Channel("the target answered without holding the RAM memfd".into()),
                );
                return Directive::Forward;
            }
        }
        let note = match h.step {
            Step::CprSave => format!("first fds held ({} fds)", h.fds),
            Step::TargetInit if self.shape().channels == Channels::One => {
                "the target answered, holding the RAM memfd".into()
            }
            Step::TargetInit => "target closed the cpr channel".into(),
            Step::MainStream => "first bytes from the source held".into(),
            _ => "first bytes from the target held".into(),
        };
        let (src_state, _) = self.barrier_point(h.step, &note);
        match h.step {
            Step::CprSave => self.observe_cutover(h, src_state),
            Step::TargetInit => {
                self.observe_target_init();
                self.open_main();
            }
            _ => {}
        }
        // A channel hold of the schedule: the kit keeps the message on
        // purpose before it acts (a later peer, a slower channel).
        if let Some(d) = self.schedule().hold_at(h.step) {
            self.action(format!("hold {} ms", d.as_millis()));
            std::thread::sleep(d);
        }
        // A device fault is the device's to inject (armed before migrate).
        let mut fault = self.fault_at(h.step);
        if fault.is_some() && self.hang_pending {
            // A hang at target-listen cancels at this hold first; what the
            // schedule has here comes after, if the migration still runs.
            self.hang_pending = false;
            self.cancel(h.step);
            self.thaw_target();
            if self.source_terminal() || !self.alive(Role::Source) {
                fault = None;
            }
        }
        let directive = match fault {
            Some(f) => {
                self.inject(h.step, f);
                let d = self.inject_at_hold(f, h);
                // A barrier: what the VMMs do next comes after the fault.
                self.action(format!("release: {}", d.describe()));
                d
            }
            None if self.hang_pending => {
                self.hang_pending = false;
                self.cancel(h.step);
                self.thaw_target();
                Directive::Forward
            }
            None => Directive::Forward,
        };
        if h.step == Step::CprSave
            && let Some(c) = self.record.cutover.as_mut()
        {
            c.forwarded = matches!(directive, Directive::Forward | Directive::Corrupt);
        }
        directive
    }

    /// Injects a fault at target-listen, the kit's hold before the migrate
    /// command (the target listens; nothing has crossed yet).
    pub(super) fn inject_before_migrate(&mut self, fault: Fault) {
        self.inject(Step::TargetListen, fault);
        match fault.injection() {
            Injection::Kill(victim) => self.kill(role_of(victim)),
            // The cancel comes at the next hold, once the migration runs.
            Injection::HangTarget => {
                self.freeze_target();
                self.hang_pending = true;
            }
            Injection::Cancel => self.cancel(Step::TargetListen),
            // No channel carries anything yet; the request and the device
            // faults are made elsewhere.
            Injection::Channel(_) | Injection::Request(_) | Injection::Device(_) => {}
        }
    }

    /// Injects `fault` at the held message `h`: what [`Fault::injection`] says,
    /// and what then becomes of the message.
    pub(super) fn inject_at_hold(&mut self, fault: Fault, h: Held) -> Directive {
        // A killed sender never sent the held message.
        let sender = if h.dir == Dir::ToTarget {
            Role::Source
        } else {
            Role::Target
        };
        match fault.injection() {
            Injection::Kill(victim) => {
                let role = role_of(victim);
                // A source that reported completion had sent what is held.
                let sent = role == Role::Source && self.source_terminal();
                self.kill(role);
                if role == sender && !sent {
                    Directive::Discard
                } else {
                    Directive::Forward
                }
            }
            Injection::HangTarget => {
                self.freeze_target();
                self.cancel(h.step);
                self.thaw_target();
                Directive::Forward
            }
            Injection::Cancel => {
                self.cancel(h.step);
                Directive::Forward
            }
            Injection::Channel(ChannelAct::Close) => Directive::Close,
            Injection::Channel(ChannelAct::DropFds) => Directive::DropFds,
            Injection::Channel(ChannelAct::Corrupt) => Directive::Corrupt,
            // Made in the migrate request, or armed in the device before the
            // migrate command: never at a hold.
            Injection::Request(_) | Injection::Device(_) => Directive::Forward,
        }
    }

    /// The VMM's own cancel, then a bounded wait for the source's migration to end.
    pub(super) fn cancel(&mut self, step: Step) {
        self.action("migrate_cancel");
        let refused = match self.source_monitor().map(|m| m.cancel()) {
            Some(Err(AdapterError::Refused { command, desc })) => {
                self.timeline.record(
                    Actor::Source,
                    What::Refused {
                        command,
                        desc: desc.clone(),
                    },
                );
                Some(desc)
            }
            Some(Err(e)) => Some(e.to_string()),
            _ => None,
        };
        let deadline = Instant::now() + self.spec.settle;
        while !self.source_terminal_polled()
            && self.alive(Role::Source)
            && Instant::now() < deadline
        {
            let tick = (Instant::now() + Duration::from_millis(20)).min(deadline);
            if let Some(s) = self.next_signal(tick, false) {
                self.note(&s);
            }
        }
        self.wait_device_taken_back(deadline);
        let ended = self
            .source_terminal()
            .then(|| self.source_status.clone())
            .flatten();
        self.record.cancel = Some(CancelObs {
            step,
            refused,
            ended,
        });
    }

    pub(super) fn observe_cutover(&mut self, h: Held, source_runstate: Option<String>) {
        self.observe_device_cutover();
        let device = self.device.as_ref().is_some_and(|d| d.observable());
        let watch = watch::bound(
            self.write_rate,
            self.request_interval,
            device && self.adapter.guest_probe().device_io,
            self.spec.settle,
        );
        let start = Instant::now();
        let (deadline, ceiling) = (start + watch.bound, start + self.spec.settle);
        let ram = self.source.as_ref().and_then(|s| s.ram.as_ref());
        let pid = self.source.as_ref().map(|s| s.proc.pid());
        // The counter is read until it moves (then the evidence is in) or
        // the bound passes.
        let counter = ram.and_then(|r| {
            let before = r.counter().ok()?;
            Some((
                before,
                watch::watch_counter(r, before, deadline, ceiling, pid)?,
            ))
        });
        let watched = counter.is_some() || device;
        if device {
            // The device's ledger is watched for the source's I/O until the
            // bound, ending at the first request seen.
            self.watch_device_io(deadline);
        }
        self.observe_device_cutover_end();
        if let Some((a, b)) = counter {
            self.timeline.record(
                Actor::Source,
                What::Sample(format!(
                    "guest counter {a} -> {b} while the fds were held ({watch})"
                )),
            );
        }
        self.record.cutover = Some(CutOver {
            at: self.timeline.start().elapsed(),
            fds: h.fds,
            source_runstate,
            counter,
            forwarded: false,
            watch: watched.then_some(watch),
        });
    }

    /// Connects the target's monitor, which answers only once the target has
    /// loaded the CPR state; false when the target dies first.
    pub(super) fn target_ready(&mut self) -> bool {
        if self.target.as_ref().is_some_and(|t| t.monitor.is_some()) {
            return true;
        }
        match self.connect_while_alive(Role::Target, Instant::now() + STARTUP) {
            Some(m) => {
                self.target.as_mut().expect("connected").monitor = Some(m);
                true
            }
            None => false,
        }
    }

    /// At target-init: which memfds the target maps, and its guest RAM.
    pub(super) fn observe_target_init(&mut self) {
        let Some(target) = self.target.as_ref() else {
            return;
        };
        let pid = target.proc.pid();
        let probe = self.adapter.guest_probe();
        // With one channel the target holds the memfd now and maps it later.
        let inodes = if self.shape().channels == Channels::One {
            held_memfd_inodes(pid, &probe.ram_memfd_name)
        } else {
            mapped_memfd_inodes(pid, &probe.ram_memfd_name)
        };
        let mapped_inodes = match inodes {
            Ok(set) => Some(set),
            Err(e) => {
                self.timeline.record(
                    Actor::Target,
                    What::Sample(format!("cannot read its maps: {e}")),
                );
                None
            }
        };
        let ram = GuestRam::open(pid, &probe).ok();
        let at = self.timeline.start().elapsed();
        self.target.as_mut().expect("checked").ram = ram;
        self.record.target_init = Some(TargetInit {
            at,
            monitor: true,
            mapped_inodes,
        });
    }
}

/// The VMM an injection acts on.
pub(super) fn role_of(victim: Victim) -> Role {
    match victim {
        Victim::Source => Role::Source,
        Victim::Target => Role::Target,
    }
}
