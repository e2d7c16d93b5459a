//! Handovers in a row (a case's `hops = N`): after each completed hop the
//! previous source goes, the target becomes the source (its monitor
//! reconnected as the source's, the migration mode set again: QEMU's new
//! VMM is back in mode `normal`), and a new target is started for the next
//! hop. The trial's fault is injected at its hop only. Each hop's record is
//! kept whole, so the rules judge every hop's handover, and CHAIN-1 the
//! chain ([`crate::rules`]).

use std::time::Instant;

use crate::adapter::Role;
use crate::guestmem::GuestRam;
use crate::interposer::Directive;
use crate::record::{Chain, DeviceObs, LaterFault, TrialRecord};

use super::{Controller, STARTUP, Signal, TrialError};

impl Controller<'_> {
    /// The hops after the first, while each hop hands the VM over.
    pub(super) fn further_hops(&mut self) -> Result<(), TrialError> {
        while self.hop < self.spec.scenario.hops && self.handed_over() {
            self.next_hop()?;
        }
        Ok(())
    }

    /// Whether the hop just run handed the VM over: the source reported
    /// completion and the target lives in the source's prior runstate.
    fn handed_over(&self) -> bool {
        self.record.completed()
            && self.alive(Role::Target)
            && self.record.target.runstate.as_deref() == Some(self.record.prior.as_str())
    }

    /// The chain so far, for the final record (`None` for one handover).
    pub(super) fn chain(&mut self) -> Option<Chain> {
        let hops = self.spec.scenario.hops;
        (hops > 1).then(|| Chain {
            hops,
            fault_hop: self.spec.scenario.fault_hop,
            point: self.spec.schedule.first(),
            earlier: std::mem::take(&mut self.earlier),
        })
    }

    /// Ends the hop just run and starts the next: its record kept, the
    /// previous source gone, the target as the new source, a new target.
    fn next_hop(&mut self) -> Result<(), TrialError> {
        self.hop += 1;
        let hop = self.hop;
        if let Some(mut i) = self.interposer.take() {
            i.stop();
        }
        for s in self.deferred.drain(..) {
            if let Signal::Hold(_, r) = s {
                let _ = r.send(Directive::Close);
            }
        }
        // The interposer's front sockets are made again for the next hop.
        for front in ["cpr.sock", "main.sock"] {
            let _ = std::fs::remove_file(self.dir.join(front));
        }
        let fresh = self.fresh_record();
        let mut done = std::mem::replace(&mut self.record, fresh);
        done.timeline = self.hop_entries();
        self.earlier.push(done);
        // The previous source goes (its exit belongs to neither hop's record).
        if let Some(old) = self.source.take() {
            old.proc.kill();
        }
        self.hop_start = self.timeline.start().elapsed();
        self.action(format!(
            "hop {hop}: the previous source gone, the target becomes the source"
        ));
        let mut source = self
            .target
            .take()
            .expect("a hop that handed over has a target");
        source.spec.role = Role::Source;
        source.proc.set_actor(Role::Source);
        source.spec.incoming = None;
        // Its monitor's events came as the target's: connected again as the source's.
        source.monitor = None;
        let mon = self.connect(&source, Instant::now() + STARTUP)?;
        source.monitor = Some(mon);
        if source.ram.is_none() {
            source.ram = Some(self.open_ram(source.proc.pid())?);
        }
        self.record.source_ram_inode = source.ram.as_ref().map(GuestRam::inode);
        self.source = Some(source);

        self.source_status = None;
        self.main_route = None;
        self.main_given = false;
        self.hang_pending = false;
        if let (Some(setup), true) = (self.spec.device, self.device.is_some()) {
            self.record.device = Some(DeviceObs::new(setup.backend, setup.policy));
        }

        let blk = self.device.as_ref().map(|d| d.socket().to_path_buf());
        let spec = self.target_spec(&format!("h{hop}-t-"), blk);
        let incoming = self.start_target(spec)?;

        let caps = &self.spec.capabilities;
        let mon = self
            .source
            .as_mut()
            .and_then(|s| s.monitor.as_mut())
            .expect("just connected");
        let prior = mon.runstate()?;
        // The mode again: a VMM that received a cpr-transfer is back in `normal`.
        mon.prepare_cpr(caps)?;
        self.record.prior = prior;
        self.handover(&incoming)
    }

    /// The timeline entries of the hop being run.
    pub(super) fn hop_entries(&self) -> Vec<crate::timeline::Entry> {
        let start = self.hop_start;
        self.timeline
            .entries()
            .into_iter()
            .filter(|e| e.at >= start)
            .collect()
    }

    /// The record a hop starts with.
    pub(super) fn fresh_record(&self) -> TrialRecord {
        let spec = self.spec;
        let at_this_hop = spec.scenario.fault_hop == self.hop;
        let mut record = TrialRecord::new(
            spec.name.clone(),
            self.adapter.name().to_string(),
            spec.guest,
            spec.schedule.first().filter(|_| at_this_hop),
            spec.settle,
            self.dir.path().to_path_buf(),
            self.dir.kept(),
        );
        record.shape = self.adapter.handover_shape();
        if at_this_hop {
            record.later = spec
                .schedule
                .later()
                .iter()
                .map(|&point| LaterFault {
                    point,
                    injected: false,
                })
                .collect();
            record.holds = spec.schedule.holds.clone();
        }
        record.mismatch = spec.scenario.mismatch();
        record
    }
}
