//! The controller's dealings with the trial's vhost device: starting the
//! daemon, waiting for the source to use it, arming the device fault, the
//! readings at the cut-over and at the end, and the ledger into the timeline.

use std::time::{Duration, Instant};

use crate::adapter::Role;
use crate::device::{
    self, DeviceDaemon, DeviceError, DeviceFault, DeviceState, EntryKind, LedgerEntry, OwnerChange,
    Trigger,
};
use crate::faults;
use crate::plan::Step;
use crate::record::DeviceObs;
use crate::timeline::{Actor, What};

use super::{Controller, STARTUP, Signal, TrialError, watch};

/// How long the kit waits for a dead side's device connections to close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

impl Controller<'_> {
    /// Starts the device daemon if the trial has a device; its vhost-user socket.
    pub(super) fn start_device(&mut self) -> Result<Option<std::path::PathBuf>, TrialError> {
        let Some(setup) = self.spec.device else {
            return Ok(None);
        };
        let tx = self.tx.clone();
        let daemon = DeviceDaemon::start(self.dir, &self.timeline, setup, move |_| {
            let _ = tx.send(Signal::Exit);
        })?;
        let socket = daemon.socket().to_path_buf();
        self.device = Some(daemon);
        self.record.device = Some(DeviceObs::new(setup.backend, setup.policy));
        Ok(Some(socket))
    }

    fn device_obs(&mut self) -> Option<&mut DeviceObs> {
        self.record.device.as_mut()
    }

    /// Waits until the source holds the device, and (a guest that does device
    /// I/O, running) until its I/O gets through.
    pub(super) fn wait_device_started(
        &mut self,
        source_pid: i32,
        guest_runs: bool,
    ) -> Result<(), TrialError> {
        let source_log = std::path::PathBuf::from(self.log(Role::Source));
        let Some(d) = self.device.as_mut().filter(|d| d.observable()) else {
            return Ok(());
        };
        let setup_err = |what: String| TrialError::setup(what, &source_log);
        let deadline = Instant::now() + STARTUP;
        let taken = |st: &DeviceState| {
            st.conns
                .iter()
                .any(|c| c.open && c.owner && c.pid == Some(source_pid))
        };
        // Bounded by the startup wait, and cut short if the daemon died.
        let st = d.wait_until(deadline, taken)?;
        if !taken(&st) {
            return Err(setup_err(if d.is_alive() {
                "the source never took the vhost-user device (SET_OWNER)".into()
            } else {
                "the device daemon died before the source took the device".into()
            }));
        }
        // The source's pace at its device work, for the final readings.
        self.device_pace = handshake_pace(&d.ledger()?);
        if guest_runs && self.adapter.guest_probe().device_io {
            let Some(first) = d.wait_io(source_pid, 0, STARTUP)? else {
                return Err(setup_err("the source's guest never did device I/O".into()));
            };
            // The guest's request rate, for the cut-over watch's bound.
            let (mut last, mut timed) = (first.clone(), 0u32);
            for _ in 0..watch::RATE_REQUESTS {
                match d.wait_io(source_pid, last.seq, self.spec.settle)? {
                    Some(e) => (last, timed) = (e, timed + 1),
                    None => break,
                }
            }
            self.request_interval = (timed > 0)
                .then(|| Duration::from_nanos(last.t_ns.saturating_sub(first.t_ns)) / timed);
        }
        Ok(())
    }

    /// Just before the migrate command: the device's state, and the trial's
    /// device fault armed for the process it is aimed at.
    pub(super) fn arm_device(&mut self) {
        let pids = (
            self.source.as_ref().map(|s| s.proc.pid()),
            self.target.as_ref().map(|t| t.proc.pid()),
        );
        let schedule = self.schedule().clone();
        let delay = schedule.device_delay;
        if let Some(obs) = self.record.device.as_mut() {
            (obs.source_pid, obs.target_pid) = pids;
        }
        let Some(d) = self.device.as_mut().filter(|d| d.observable()) else {
            return;
        };
        let before = d.state();
        let faults: Vec<_> = match pids {
            (Some(s), Some(t)) => schedule
                .device_faults()
                .filter_map(|p| faults::device_fault_delayed(p.fault, p.step, s, t, delay))
                .collect(),
            _ => Vec::new(),
        };
        let armed: Vec<_> = faults.into_iter().map(|f| d.arm(&f).map(|()| f)).collect();
        match before {
            Ok(st) => self.device_obs().expect("a device").before = Some(st),
            Err(e) => self.device_error(e),
        }
        for a in armed {
            self.armed(a, pids.0);
        }
    }

    /// The action line of an armed device fault, or the error arming it.
    fn armed(&mut self, armed: Result<DeviceFault, DeviceError>, source_pid: Option<i32>) {
        match armed {
            Ok(f) => self.action(format!(
                "device: arm {} at the {}'s {}",
                f.kind.name(),
                if Some(f.pid) == source_pid {
                    "source"
                } else {
                    "target"
                },
                match f.on {
                    Trigger::Take => "take-over (SET_OWNER)",
                    Trigger::Release => "release (its first ring stop or RESET_OWNER)",
                }
            )),
            Err(e) => self.device_error(e),
        }
    }

    /// A device fault fired on a message of `pid`: the schedule's device
    /// fault at that side's step is injected (the only one, if the pid is
    /// no side's).
    fn device_fault_fired(&mut self, pid: Option<i32>) {
        let obs = self.record.device.as_ref().expect("a device");
        let step = match obs.role_of(pid) {
            Some(Role::Source) => Some(Step::ReleaseOwner),
            Some(Role::Target) => Some(Step::TargetInit),
            None => None,
        };
        let device: Vec<_> = self.schedule().device_faults().collect();
        let fired = device
            .iter()
            .find(|p| Some(p.step) == step)
            .or_else(|| device.first().filter(|_| device.len() == 1));
        if let Some(p) = fired.copied() {
            self.inject(p.step, p.fault);
        }
    }

    fn device_error(&mut self, e: impl std::fmt::Display) {
        let msg = e.to_string();
        self.timeline.record(
            Actor::Device,
            What::Sample(format!("cannot read the device: {msg}")),
        );
        if let Some(obs) = self.device_obs()
            && obs.error.is_none()
        {
            obs.error = Some(msg);
        }
    }

    /// At the cut-over hold: a mark in the ledger, and the device's state.
    pub(super) fn observe_device_cutover(&mut self) {
        let Some(d) = self.device.as_mut().filter(|d| d.observable()) else {
            return;
        };
        let read = d.mark("cut-over").and_then(|m| Ok((m, d.state()?)));
        match read {
            Ok(r) => self.device_obs().expect("a device").at_cutover = Some(r),
            Err(e) => self.device_error(e),
        }
    }

    /// During the cut-over hold, until `deadline`: waits for an I/O request
    /// of the source after the cut-over mark (the device half of the watch),
    /// ending as soon as one is in the ledger.
    pub(super) fn watch_device_io(&mut self, deadline: Instant) {
        let source = self.source.as_ref().map(|s| s.proc.pid());
        let mark = self
            .record
            .device
            .as_ref()
            .and_then(|o| o.at_cutover.as_ref())
            .map(|(m, _)| *m);
        let Some(d) = self.device.as_mut().filter(|d| d.observable()) else {
            return;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let seen = match (source, mark) {
            (Some(pid), Some(mark)) => d.wait_io(pid, mark, left),
            _ => {
                std::thread::sleep(left);
                Ok(None)
            }
        };
        if let Err(e) = seen {
            self.device_error(e);
        }
    }

    /// At the end of the kit's look during the cut-over hold: a second mark.
    pub(super) fn observe_device_cutover_end(&mut self) {
        let Some(d) = self.device.as_mut().filter(|d| d.observable()) else {
            return;
        };
        match d.mark("cut-over watched") {
            Ok(m) => self.device_obs().expect("a device").cutover_watched = Some(m),
            Err(e) => self.device_error(e),
        }
    }

    /// After a cancel, while the kit still holds the channels: a source
    /// that owned its device takes it back, which it can at once when no one
    /// else owns it (`exclusive`: the target has not got it yet), or at any
    /// time (`shared`: a second frontend is always let in). The kit waits for
    /// that (bounded by `deadline`) before it lets the held message go, so
    /// that a late target meets a device its source already took back, and
    /// a target that already runs a ring is still running it when the source
    /// takes the device back (two owners, OWN-1), every time, instead of
    /// racing the target's exit. Where another side owns an `exclusive`
    /// device, the source can only take it back once that side lets go: no
    /// wait.
    pub(super) fn wait_device_taken_back(&mut self, deadline: Instant) {
        let Some(obs) = self.record.device.clone() else {
            return;
        };
        let owned_before =
            obs.before.as_ref().and_then(|b| obs.owns(b, Role::Source)) == Some(true);
        if !owned_before || !self.alive(Role::Source) {
            return;
        }
        let Some(d) = self.device.as_mut().filter(|d| d.observable()) else {
            return;
        };
        let others_hold = |st: &DeviceState| {
            obs.policy == device::Policy::Exclusive
                && st
                    .conns
                    .iter()
                    .any(|c| c.open && c.pid != obs.source_pid && c.owner)
        };
        // An error reading the daemon ends the wait: the final readings
        // report it.
        let _ = d.wait_until(deadline, |st| obs.source_back(st) || others_hold(st));
    }

    /// At the final readings: the device's state once every dead side's
    /// connection has closed, whether the side that should run the guest gets
    /// its I/O through, and the ledger.
    pub(super) fn observe_device_end(&mut self, states: (Option<String>, Option<String>)) {
        if !self.device.as_ref().is_some_and(|d| d.observable()) {
            return;
        }
        let completed = self.source_status.as_deref() == Some("completed");
        let (runner, runstate) = if completed {
            (Role::Target, states.1)
        } else {
            (Role::Source, states.0)
        };
        let runner_pid = self
            .side(runner)
            .filter(|s| s.proc.is_alive())
            .map(|s| s.proc.pid());
        let dead: Vec<i32> = [Role::Source, Role::Target]
            .into_iter()
            .filter_map(|r| self.side(r))
            .filter(|s| !s.proc.is_alive())
            .map(|s| s.proc.pid())
            .collect();
        let look_for_io = self.adapter.guest_probe().device_io
            && runstate.as_deref() == Some("running")
            && self.record.prior == "running";
        let settle = self.spec.settle;
        let still = still_period(self.device_pace);
        // A source whose transfer failed may take its device back in the
        // background (the target lets go only once it sees the channels
        // closed): it gets the settle bound to own it again.
        let obs = self.record.device.clone().expect("a device");
        let take_back = !completed
            && obs.before.as_ref().and_then(|b| obs.owns(b, Role::Source)) == Some(true)
            && self.alive(Role::Source);
        let d = self.device.as_mut().expect("checked");
        let read = (|| {
            let mut st = wait_closed(d, &dead)?;
            if take_back {
                st = d.wait_until(Instant::now() + settle, |st| obs.source_back(st))?;
            }
            let st = wait_still(d, st, still, settle)?;
            // While the other side still runs a ring on the same guest
            // memory, two drivers share the queue: whose request gets
            // through is a race, so the runner's I/O is not judged.
            let shared_queue = obs.runs_rings(&st, runner.other());
            // A runner that never connected to the device (a source that
            // ran without it, as with private RAM) gets no I/O through:
            // nothing to wait for.
            let connected = |pid: i32| st.conns.iter().any(|c| c.pid == Some(pid));
            let io = match runner_pid.filter(|_| look_for_io && !shared_queue) {
                Some(pid) if !connected(pid) => Some((runner, false)),
                Some(pid) => Some((runner, d.wait_io(pid, st.last_seq, settle)?.is_some())),
                None => None,
            };
            let ledger = d.ledger()?;
            Ok::<_, device::DeviceError>((st, io, ledger))
        })();
        match read {
            Ok((st, io, ledger)) => {
                let fired: Vec<Option<i32>> = ledger
                    .iter()
                    .filter(|e| matches!(e.kind, EntryKind::Fault { .. }))
                    .map(|e| e.pid)
                    .collect();
                let obs = self.device_obs().expect("a device");
                obs.end = Some(st);
                obs.io_at_end = io;
                obs.ledger = ledger;
                for pid in fired {
                    self.device_fault_fired(pid);
                }
            }
            Err(e) => self.device_error(e),
        }
    }

    /// Puts the ledger's ownership story into the timeline, each line at its
    /// time and in the column of the side it concerns; then stops the daemon.
    pub(super) fn finish_device(&mut self) {
        let Some(d) = self.device.take() else {
            return;
        };
        d.stop();
        let Some(obs) = self.record.device.as_ref() else {
            return;
        };
        let lines = obs
            .ledger
            .iter()
            .filter_map(|e| {
                let label = device::timeline_label(e)?;
                let actor = match obs.role_of(e.pid) {
                    Some(role) => role.into(),
                    None => Actor::Device,
                };
                Some((
                    self.timeline.at_monotonic(e.t_ns),
                    actor,
                    What::Device(label),
                ))
            })
            .collect();
        self.timeline.insert_at(lines);
    }
}

/// The quiet period of the final readings spans this many times the
/// source's measured pace ([`handshake_pace`]).
const STILL_GAPS: u32 = 16;
/// Never shorter: a daemon thread that has a message to log gets a CPU
/// within this on a busy host.
const STILL_FLOOR: Duration = Duration::from_millis(2);
/// Never longer, and the period of a pace that could not be measured.
const STILL_CEILING: Duration = Duration::from_millis(50);

/// How long the device's connections, owners and rings must stay as they
/// are for the kit to take them as settled: a VMM's last close or release
/// reaches the daemon a moment after the VMM went on, and nothing announces
/// that it was the last. The moment is the VMM's own pace at its device
/// work, measured in this trial before the migrate: [`STILL_GAPS`] times the
/// source's longest pause between two messages of its start-up handshake,
/// within [`STILL_FLOOR`] and [`STILL_CEILING`] (the ceiling when it could
/// not be measured).
fn still_period(pace: Option<Duration>) -> Duration {
    pace.map_or(STILL_CEILING, |pace| {
        (pace * STILL_GAPS).clamp(STILL_FLOOR, STILL_CEILING)
    })
}

/// The longest pause between two ledger entries of one connection, from
/// its connect to its first ring start, over every connection that got
/// that far (a frontend sends its handshake one message after the other,
/// each when the last was answered and it did its own work in between);
/// `None` if none did. Read before the migrate, only the source's
/// handshake is in the ledger: a target's spans the wait for the migration.
fn handshake_pace(ledger: &[LedgerEntry]) -> Option<Duration> {
    use std::collections::BTreeMap;
    // conn -> (time of its last entry, its longest pause so far)
    let mut open: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    let mut pace: Option<u64> = None;
    for e in ledger {
        let Some(conn) = e.conn else { continue };
        match &e.kind {
            EntryKind::Connect => {
                open.insert(conn, (e.t_ns, 0));
            }
            kind => {
                let Some((last, longest)) = open.get_mut(&conn) else {
                    continue;
                };
                *longest = (*longest).max(e.t_ns.saturating_sub(*last));
                *last = e.t_ns;
                if matches!(
                    kind,
                    EntryKind::Owner {
                        change: OwnerChange::RingStart { .. }
                    }
                ) {
                    let (_, longest) = open.remove(&conn).expect("just seen");
                    pace = Some(pace.unwrap_or(0).max(longest));
                }
            }
        }
    }
    pace.map(Duration::from_nanos)
}

/// The device's state once its connections, owners and rings have not
/// changed for `still` (bounded by `bound`).
fn wait_still(
    d: &mut DeviceDaemon,
    mut st: DeviceState,
    still: Duration,
    bound: Duration,
) -> Result<DeviceState, device::DeviceError> {
    let shape = |st: &DeviceState| {
        st.conns
            .iter()
            .map(|c| {
                let rings: Vec<bool> = c.rings.iter().map(|r| r.running).collect();
                (c.conn, c.open, c.owner, rings)
            })
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + bound;
    let mut since = Instant::now();
    loop {
        let now = Instant::now();
        let still_until = since + still;
        if now >= still_until || now >= deadline {
            return Ok(st);
        }
        let next = d.wait_change(st.version, still_until.min(deadline) - now)?;
        if shape(&next) != shape(&st) {
            since = Instant::now();
        }
        st = next;
    }
}

/// The device's state once no connection of the `dead` pids is open (bounded).
fn wait_closed(d: &mut DeviceDaemon, dead: &[i32]) -> Result<DeviceState, device::DeviceError> {
    d.wait_until(Instant::now() + CLOSE_WAIT, |st| {
        !st.conns
            .iter()
            .any(|c| c.open && c.pid.is_some_and(|p| dead.contains(&p)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn entry(seq: u64, t_ms: u64, conn: u32, kind: EntryKind) -> LedgerEntry {
        LedgerEntry {
            seq,
            t_ns: t_ms * MS,
            conn: Some(conn),
            pid: Some(100 + conn as i32),
            kind,
        }
    }

    fn message(name: &str) -> EntryKind {
        EntryKind::Message {
            name: name.into(),
            detail: String::new(),
            answer: device::Answer::Ok,
            delayed_ms: 0,
        }
    }

    fn ring_start() -> EntryKind {
        EntryKind::Owner {
            change: OwnerChange::RingStart { ring: 0, base: 0 },
        }
    }

    #[test]
    fn the_pace_is_the_longest_pause_of_a_handshake_up_to_its_first_ring_start() {
        let ledger = [
            entry(1, 10, 1, EntryKind::Connect),
            entry(2, 11, 1, message("GET_FEATURES")),
            entry(3, 14, 1, message("SET_OWNER")),
            entry(4, 15, 1, ring_start()),
            // After the ring started: I/O and a late message are no pace.
            entry(5, 40, 1, message("GET_VRING_BASE")),
        ];
        assert_eq!(handshake_pace(&ledger), Some(Duration::from_millis(3)));
        // A connection that never started a ring gives no pace.
        let unfinished = [
            entry(1, 10, 1, EntryKind::Connect),
            entry(2, 30, 1, message("GET_FEATURES")),
        ];
        assert_eq!(handshake_pace(&unfinished), None);
    }

    #[test]
    fn the_quiet_period_is_sixteen_pauses_within_floor_and_ceiling() {
        let us = Duration::from_micros;
        assert_eq!(still_period(Some(us(150))), us(2400));
        assert_eq!(still_period(Some(us(10))), STILL_FLOOR);
        assert_eq!(still_period(Some(us(10_000))), STILL_CEILING);
        assert_eq!(still_period(None), STILL_CEILING, "not measured");
    }
}
