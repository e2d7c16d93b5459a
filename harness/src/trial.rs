//! One trial: start a target and a source through an adapter, put the
//! interposer between them, hand the VM over, inject the fault at its point,
//! wait (bounded) for the end, and take the final readings.
//!
//! The controller runs on one thread and is the only one that acts; the
//! interposer, the monitors and the process watchers report to it through one
//! channel of [`Signal`]s. A hold point blocks the interposer until the
//! controller answers, so every sample and every fault happens at an exact
//! place in the protocol.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::time::{Duration, Instant};

use crate::adapter::{Adapter, AdapterError, Incoming, LaunchSpec, MigrateRequest, Monitor, Role, VmEvent};
use crate::guestmem::{GuestRam, mapped_memfd_inodes};
use crate::interposer::{self, Dir, Directive, Held, Interposer};
use crate::plan::{BadRequest, Fault, FaultPoint, GuestState, Step};
use crate::process::VmmProcess;
use crate::record::{CancelObs, CutOver, MigrateReply, ProcEnd, TargetInit, TrialRecord};
use crate::timeline::{Actor, Timeline, What};
use crate::trialdir::TrialDir;
use crate::unixnet;

/// What a trial is asked to do.
#[derive(Debug, Clone)]
pub struct TrialSpec {
    /// The full trial name (for logs and the kept directory's name).
    pub name: String,
    pub guest: GuestState,
    /// The fault to inject, or none for a fault-free handover.
    pub point: Option<FaultPoint>,
    /// The bound for "within a bounded time" (return to a runstate, a cancel, an exit).
    pub settle: Duration,
    /// The bound for the whole migration to end.
    pub migration_bound: Duration,
    /// Keep the trial directory (sockets, logs) afterwards.
    pub keep: bool,
}

/// The trial could not be carried out (not a verdict on the VMM).
#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    #[error("trial directory: {0}")]
    Dir(std::io::Error),
    #[error("cannot start the {role}: {source}")]
    Spawn { role: &'static str, source: std::io::Error },
    #[error("{0}")]
    Adapter(#[from] AdapterError),
    #[error("{what} (see {log})")]
    Setup { what: String, log: String },
    #[error("interposer: {0}")]
    Interposer(std::io::Error),
}

/// The time the kit holds the first fds to see whether the guest still runs.
const CUTOVER_WATCH: Duration = Duration::from_millis(20);
/// Bounds of start-up steps that are not under test.
const STARTUP: Duration = Duration::from_secs(10);

/// Reports from the trial's helpers to its controller.
enum Signal {
    Hold(Held, SyncSender<Directive>),
    Event(Role, VmEvent),
    /// A VMM process ended (the watcher wakes the controller).
    Exit,
}

/// Runs one trial; `root` is the run's directory for trial directories.
pub fn run(adapter: &dyn Adapter, spec: &TrialSpec, root: &Path) -> Result<TrialRecord, TrialError> {
    let dir = TrialDir::new(root, &spec.name, spec.keep).map_err(TrialError::Dir)?;
    let (tx, rx) = mpsc::channel();
    let mut c = Controller::new(adapter, spec, &dir, tx, rx);
    let result = c.run();
    let record = c.finish(result.is_ok());
    result.map(|()| record)
}

struct Side {
    proc: VmmProcess,
    spec: LaunchSpec,
    monitor: Option<Box<dyn Monitor>>,
    ram: Option<GuestRam>,
}

struct Controller<'a> {
    adapter: &'a dyn Adapter,
    spec: &'a TrialSpec,
    dir: &'a TrialDir,
    timeline: Timeline,
    tx: Sender<Signal>,
    rx: Receiver<Signal>,
    deferred: VecDeque<Signal>,
    source: Option<Side>,
    target: Option<Side>,
    interposer: Option<Interposer>,
    source_status: Option<String>,
    /// A hang-target fault waiting for its cancel at the next hold.
    hang_pending: bool,
    record: TrialRecord,
}

impl<'a> Controller<'a> {
    fn new(adapter: &'a dyn Adapter, spec: &'a TrialSpec, dir: &'a TrialDir, tx: Sender<Signal>, rx: Receiver<Signal>) -> Self {
        let record = TrialRecord {
            name: spec.name.clone(),
            vmm: adapter.name().to_string(),
            guest: spec.guest,
            point: spec.point,
            injected: false,
            prior: String::new(),
            migrate: MigrateReply::NotSent,
            cutover: None,
            target_init: None,
            source_ram_inode: None,
            cancel: None,
            source: ProcEnd::default(),
            target: ProcEnd::default(),
            ended_in_time: true,
            settle: spec.settle,
            timeline: Vec::new(),
            dir: dir.path().to_path_buf(),
            kept_dir: dir.kept(),
        };
        Controller {
            adapter,
            spec,
            dir,
            timeline: Timeline::new(),
            tx,
            rx,
            deferred: VecDeque::new(),
            source: None,
            target: None,
            interposer: None,
            source_status: None,
            hang_pending: false,
            record,
        }
    }

    fn fault_at(&self, step: Step) -> Option<Fault> {
        self.spec.point.filter(|p| p.step == step).map(|p| p.fault)
    }

    fn bad_request(&self) -> Option<BadRequest> {
        match self.spec.point.map(|p| p.fault) {
            Some(Fault::BadRequest(b)) => Some(b),
            _ => None,
        }
    }

    fn action(&self, what: impl Into<String>) {
        self.timeline.record(Actor::Kit, What::Action(what.into()));
    }

    fn log(&self, role: Role) -> String {
        self.dir.join(&format!("{}.log", role.name())).display().to_string()
    }

    fn spawn(&self, spec: LaunchSpec) -> Result<Side, TrialError> {
        let role = spec.role;
        let cmd = self.adapter.command(&spec)?;
        let tx = self.tx.clone();
        let proc = VmmProcess::spawn(role, cmd, Path::new(&self.log(role)), &self.timeline, move |_| {
            let _ = tx.send(Signal::Exit);
        })
        .map_err(|source| TrialError::Spawn { role: role.name(), source })?;
        Ok(Side { proc, spec, monitor: None, ram: None })
    }

    fn connect(&self, side: &Side, deadline: Instant) -> Result<Box<dyn Monitor>, AdapterError> {
        let role = side.spec.role;
        let tl = self.timeline.clone();
        let tx = self.tx.clone();
        let sink = Box::new(move |ev: VmEvent| {
            tl.record(role.into(), What::Event(ev.clone()));
            let _ = tx.send(Signal::Event(role, ev));
        });
        self.adapter.connect(&side.spec, deadline, sink)
    }

    fn run(&mut self) -> Result<(), TrialError> {
        let d = self.dir;
        let incoming = Incoming { main: d.join("t-main.sock"), cpr: d.join("t-cpr.sock") };
        let target_spec = LaunchSpec {
            role: Role::Target,
            dir: d.path().to_path_buf(),
            monitor: d.join("t-qmp.sock"),
            incoming: Some(incoming.clone()),
            shared_ram: true,
        };
        let source_spec = LaunchSpec {
            role: Role::Source,
            dir: d.path().to_path_buf(),
            monitor: d.join("s-qmp.sock"),
            incoming: None,
            shared_ram: self.bad_request() != Some(BadRequest::PrivateRam),
        };

        // The target first: it must be listening on its cpr socket.
        let target = self.spawn(target_spec)?;
        let listening =
            unixnet::wait_listening(&incoming.cpr, Instant::now() + STARTUP, || !target.proc.is_alive());
        self.target = Some(target);
        if !listening {
            return Err(TrialError::Setup {
                what: "the target never listened on its cpr socket".into(),
                log: self.log(Role::Target),
            });
        }

        // The source, its monitor, its guest running or paused.
        let mut source = self.spawn(source_spec)?;
        let mut mon = self.connect(&source, Instant::now() + STARTUP)?;
        if self.bad_request() != Some(BadRequest::PrivateRam) {
            source.ram = Some(self.open_ram(source.proc.pid())?);
            self.record.source_ram_inode = source.ram.as_ref().map(GuestRam::inode);
            self.wait_guest_started(source.ram.as_ref().expect("just opened"))?;
        }
        if self.spec.guest == GuestState::Paused {
            mon.stop()?;
        }
        self.record.prior = mon.runstate()?;
        mon.prepare_cpr()?;
        source.monitor = Some(mon);
        self.source = Some(source);

        // The interposer between them.
        let tx = self.tx.clone();
        let on_hold: interposer::HoldHandler = Arc::new(move |held: Held| {
            let (reply_tx, reply_rx) = mpsc::sync_channel(1);
            if tx.send(Signal::Hold(held, reply_tx)).is_err() {
                return Directive::Forward;
            }
            reply_rx.recv_timeout(Duration::from_secs(120)).unwrap_or(Directive::Forward)
        });
        let routes = interposer::routes(d.path(), &incoming.cpr, &incoming.main);
        self.interposer =
            Some(Interposer::start(&routes, &self.timeline, on_hold).map_err(TrialError::Interposer)?);

        // target-listen: the last moment before the migrate command.
        self.barrier_point(Step::TargetListen, "target listening");
        match self.fault_at(Step::TargetListen) {
            Some(Fault::KillTarget) => {
                self.inject();
                self.kill(Role::Target);
            }
            Some(Fault::HangTarget) => {
                self.inject();
                self.freeze_target();
                self.hang_pending = true;
            }
            _ => {}
        }

        // The migrate command.
        if self.fault_at(Step::SourceStop).is_some() {
            self.inject();
        }
        let req = MigrateRequest { main: routes[1].front.clone(), cpr: routes[0].front.clone(), malformed: self.bad_request() };
        self.action("migrate");
        let reply = self.source_monitor().map(|m| m.migrate(&req));
        self.record.migrate = match reply {
            Some(Ok(())) => MigrateReply::Accepted,
            Some(Err(AdapterError::Refused { command, desc })) => {
                self.timeline.record(Actor::Source, What::Refused { command, desc: desc.clone() });
                MigrateReply::Refused(desc)
            }
            Some(Err(e)) => MigrateReply::NoAnswer(e.to_string()),
            None => MigrateReply::NoAnswer("no monitor".into()),
        };
        if self.record.migrate == MigrateReply::Accepted {
            self.follow_migration();
        }
        self.settle();
        Ok(())
    }

    fn open_ram(&self, pid: i32) -> Result<GuestRam, TrialError> {
        let probe = self.adapter.guest_probe();
        let deadline = Instant::now() + STARTUP;
        loop {
            match GuestRam::open(pid, &probe) {
                Ok(r) => return Ok(r),
                Err(e) if Instant::now() >= deadline => {
                    return Err(TrialError::Setup { what: format!("guest RAM: {e}"), log: self.log(Role::Source) });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }

    /// Waits until the guest has written into its RAM (it is really running).
    fn wait_guest_started(&self, ram: &GuestRam) -> Result<(), TrialError> {
        let deadline = Instant::now() + STARTUP;
        while ram.counter().unwrap_or(0) == 0 {
            if Instant::now() >= deadline {
                return Err(TrialError::Setup {
                    what: "the guest counter never moved".into(),
                    log: self.log(Role::Source),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn source_monitor(&mut self) -> Option<&mut Box<dyn Monitor>> {
        self.source.as_mut().and_then(|s| s.monitor.as_mut())
    }

    fn side(&self, role: Role) -> Option<&Side> {
        match role {
            Role::Source => self.source.as_ref(),
            Role::Target => self.target.as_ref(),
        }
    }

    fn alive(&self, role: Role) -> bool {
        self.side(role).is_some_and(|s| s.proc.is_alive())
    }

    /// A monitor round trip on each live side: every event sent before is then in the timeline.
    fn flush(&mut self) -> (Option<String>, Option<String>) {
        let mut out = (None, None);
        for role in [Role::Source, Role::Target] {
            let alive = self.alive(role);
            let side = match role {
                Role::Source => self.source.as_mut(),
                Role::Target => self.target.as_mut(),
            };
            if let Some(mon) = side.and_then(|s| s.monitor.as_mut()).filter(|_| alive) {
                let rs = mon.runstate().ok();
                match role {
                    Role::Source => out.0 = rs,
                    Role::Target => out.1 = rs,
                }
            }
        }
        out
    }

    fn barrier_point(&mut self, step: Step, note: &str) -> (Option<String>, Option<String>) {
        let states = self.flush();
        self.timeline.record(Actor::Kit, What::Point { step, note: note.into() });
        states
    }

    fn inject(&mut self) {
        self.record.injected = true;
    }

    fn kill(&mut self, role: Role) {
        self.action(format!("SIGKILL {}", role.name()));
        if let Some(s) = self.side(role) {
            s.proc.kill();
        }
    }

    fn freeze_target(&mut self) {
        self.action("SIGSTOP target");
        if let Some(t) = &self.target {
            let _ = t.proc.freeze();
        }
    }

    /// Takes the next signal, deferred ones first; `None` once `deadline` passes.
    /// With `holds_ok` false, holds are kept for later (the kit is inside one).
    fn next_signal(&mut self, deadline: Instant, holds_ok: bool) -> Option<Signal> {
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
    fn serve_until(&mut self, deadline: Instant, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            let tick = (Instant::now() + Duration::from_millis(5)).min(deadline);
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
    fn drain_signals(&mut self) {
        while let Ok(s) = self.rx.try_recv() {
            match s {
                Signal::Hold(..) => self.deferred.push_back(s),
                other => self.note(&other),
            }
        }
    }

    fn note(&mut self, s: &Signal) {
        if let Signal::Event(Role::Source, VmEvent::Migration(st)) = s {
            self.source_status = Some(st.clone());
        }
    }

    fn source_terminal(&self) -> bool {
        matches!(self.source_status.as_deref(), Some("completed" | "failed" | "cancelled"))
    }

    fn source_terminal_polled(&mut self) -> bool {
        if self.source_terminal() {
            return true;
        }
        if !self.alive(Role::Source) {
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
    fn follow_migration(&mut self) {
        let deadline = Instant::now() + self.spec.migration_bound;
        let mut last_progress = Instant::now();
        loop {
            if self.source_terminal() || !self.alive(Role::Source) {
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
                    last_progress = Instant::now();
                    let d = self.on_hold(h);
                    let _ = reply.send(d);
                }
                Some(s) => self.note(&s),
                // Polling backs up the events, for a VMM that sends none.
                None => {
                    let _ = self.source_terminal_polled();
                }
            }
        }
    }

    /// What the kit does at a hold point: observe, then inject the fault if it is here.
    fn on_hold(&mut self, h: Held) -> Directive {
        // Once the source's migration is over (or the source is gone), nothing
        // more is under test: what still crosses passes, noted but no barrier.
        self.flush();
        self.drain_signals();
        if self.source_terminal() || !self.alive(Role::Source) {
            let what = format!("after the migration ended: {} passed", h.step);
            self.timeline.record(h.chan_actor(), What::Channel(what));
            return Directive::Forward;
        }
        // The target's EOF is target-init only if the target loaded the CPR
        // state and lives (its monitor answers); a dying target closes too.
        if h.step == Step::TargetInit && !self.target_ready() {
            self.timeline
                .record(Actor::Cpr, What::Channel("the target closed the cpr channel without loading".into()));
            return Directive::Forward;
        }
        let note = match h.step {
            Step::CprSave => format!("first fds held ({} fds)", h.fds),
            Step::TargetInit => "target closed the cpr channel".into(),
            Step::MainStream => "first bytes from the source held".into(),
            _ => "first bytes from the target held".into(),
        };
        let (src_state, _) = self.barrier_point(h.step, &note);
        match h.step {
            Step::CprSave => self.observe_cutover(h, src_state),
            Step::TargetInit => self.observe_target_init(),
            _ => {}
        }
        let fault = self.fault_at(h.step);
        let directive = match fault {
            Some(f) => {
                self.inject();
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

    fn inject_at_hold(&mut self, fault: Fault, h: Held) -> Directive {
        // A killed sender never sent the held message.
        let sender = if h.dir == Dir::ToTarget { Role::Source } else { Role::Target };
        match fault {
            Fault::KillTarget | Fault::KillSource => {
                let role = if fault == Fault::KillTarget { Role::Target } else { Role::Source };
                self.kill(role);
                if role == sender { Directive::Discard } else { Directive::Forward }
            }
            Fault::HangTarget => {
                self.freeze_target();
                self.cancel(h.step);
                self.thaw_target();
                Directive::Forward
            }
            Fault::Cancel => {
                self.cancel(h.step);
                Directive::Forward
            }
            Fault::CprClose | Fault::MainClose => Directive::Close,
            Fault::CprDropFds => Directive::DropFds,
            Fault::MainCorrupt => Directive::Corrupt,
            Fault::BadRequest(_) => Directive::Forward,
        }
    }

    fn thaw_target(&mut self) {
        self.action("SIGCONT target");
        if let Some(t) = &self.target {
            let _ = t.proc.thaw();
        }
    }

    /// The VMM's own cancel, then a bounded wait for the source's migration to end.
    fn cancel(&mut self, step: Step) {
        self.action("migrate_cancel");
        let refused = match self.source_monitor().map(|m| m.cancel()) {
            Some(Err(AdapterError::Refused { command, desc })) => {
                self.timeline.record(Actor::Source, What::Refused { command, desc: desc.clone() });
                Some(desc)
            }
            Some(Err(e)) => Some(e.to_string()),
            _ => None,
        };
        let deadline = Instant::now() + self.spec.settle;
        while !self.source_terminal_polled() && self.alive(Role::Source) && Instant::now() < deadline {
            let tick = (Instant::now() + Duration::from_millis(20)).min(deadline);
            if let Some(s) = self.next_signal(tick, false) {
                self.note(&s);
            }
        }
        let ended = self.source_terminal().then(|| self.source_status.clone()).flatten();
        self.record.cancel = Some(CancelObs { step, refused, ended });
    }

    fn observe_cutover(&mut self, h: Held, source_runstate: Option<String>) {
        let ram = self.source.as_ref().and_then(|s| s.ram.as_ref());
        let counter = ram.and_then(|r| {
            let before = r.counter().ok()?;
            std::thread::sleep(CUTOVER_WATCH);
            Some((before, r.counter().ok()?))
        });
        if let Some((a, b)) = counter {
            self.timeline.record(Actor::Source, What::Sample(format!("guest counter {a} -> {b} while the fds were held")));
        }
        self.record.cutover =
            Some(CutOver { at: self.timeline.start().elapsed(), fds: h.fds, source_runstate, counter, forwarded: false });
    }

    /// Connects the target's monitor, which answers only once the target has
    /// loaded the CPR state; false when the target dies first.
    fn target_ready(&mut self) -> bool {
        if self.target.as_ref().is_some_and(|t| t.monitor.is_some()) {
            return true;
        }
        match self.connect_while_alive(Role::Target) {
            Some(m) => {
                self.target.as_mut().expect("connected").monitor = Some(m);
                true
            }
            None => false,
        }
    }

    /// At target-init: which memfds the target maps, and its guest RAM.
    fn observe_target_init(&mut self) {
        let Some(target) = self.target.as_ref() else { return };
        let pid = target.proc.pid();
        let probe = self.adapter.guest_probe();
        let mapped_inodes = match mapped_memfd_inodes(pid, &probe.ram_memfd_name) {
            Ok(set) => Some(set),
            Err(e) => {
                self.timeline.record(Actor::Target, What::Sample(format!("cannot read its maps: {e}")));
                None
            }
        };
        let ram = GuestRam::open(pid, &probe).ok();
        let at = self.timeline.start().elapsed();
        self.target.as_mut().expect("checked").ram = ram;
        self.record.target_init = Some(TargetInit { at, monitor: true, mapped_inodes });
    }

    /// Connects to a side's monitor, retrying while its process lives (bounded).
    fn connect_while_alive(&self, role: Role) -> Option<Box<dyn Monitor>> {
        let side = self.side(role)?;
        let deadline = Instant::now() + STARTUP;
        while side.proc.is_alive() && Instant::now() < deadline {
            match self.connect(side, Instant::now() + Duration::from_millis(20)) {
                Ok(m) => return Some(m),
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        None
    }

    /// After the migration: bounded waits for each side to reach where it
    /// should, serving any hold that still comes.
    fn settle(&mut self) {
        let completed = self.source_status.as_deref() == Some("completed");
        let prior = self.record.prior.clone();
        let deadline = Instant::now() + self.spec.settle;
        if completed {
            // The target should reach the source's prior runstate.
            if self.target.as_ref().is_some_and(|t| t.monitor.is_none())
                && let Some(m) = self.connect_while_alive(Role::Target)
            {
                self.target.as_mut().expect("checked").monitor = Some(m);
            }
            self.serve_until(deadline, |c| !c.alive(Role::Target) || c.runstate_is(Role::Target, &prior));
        } else if self.record.migrate == MigrateReply::Accepted {
            self.serve_until(deadline, |c| !c.alive(Role::Source) || c.runstate_is(Role::Source, &prior));
            // A target the transfer reached must end by itself; one never
            // contacted may wait on (the kit stops it).
            let contacted = self
                .interposer
                .as_ref()
                .is_some_and(|i| i.traffic().target_contacted.load(std::sync::atomic::Ordering::SeqCst));
            if contacted {
                self.serve_until(deadline, |c| !c.alive(Role::Target));
            }
        }
        self.barrier_point_final();
    }

    /// Whether a side answers that it is in runstate `want` (false if it cannot answer).
    fn runstate_is(&mut self, role: Role, want: &str) -> bool {
        if !self.alive(role) {
            return false;
        }
        let side = match role {
            Role::Source => self.source.as_mut(),
            Role::Target => self.target.as_mut(),
        };
        side.and_then(|s| s.monitor.as_mut()).is_some_and(|m| m.runstate().is_ok_and(|rs| rs == want))
    }

    fn barrier_point_final(&mut self) {
        let (src, tgt) = self.flush();
        self.action("final readings");
        let settle = self.spec.settle;
        for role in [Role::Source, Role::Target] {
            let alive = self.alive(role);
            let Some(side) = (match role {
                Role::Source => self.source.as_mut(),
                Role::Target => self.target.as_mut(),
            }) else {
                continue;
            };
            let mut end = ProcEnd { exit: side.proc.exit(), ..ProcEnd::default() };
            if alive && let Some(mon) = side.monitor.as_mut() {
                end.runstate = match role {
                    Role::Source => src.clone(),
                    Role::Target => tgt.clone(),
                };
                end.migration = mon.migration().ok();
            }
            if let Some(ram) = side.ram.as_ref() {
                end.counter = ram.counter().ok();
                if alive && end.runstate.as_deref() == Some("running") {
                    end.counter_moving = Some(counter_moves(ram, settle));
                }
                if let Some(c) = ram.counter().ok() {
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
    fn finish(&mut self, ran: bool) -> TrialRecord {
        let mut killed = Vec::new();
        for role in [Role::Source, Role::Target] {
            if self.alive(role) {
                killed.push(role);
            }
        }
        if !killed.is_empty() {
            self.action("stop the VMMs left");
        }
        for side in [self.source.as_mut(), self.target.as_mut()].into_iter().flatten() {
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
        self.record.timeline = self.timeline.entries();
        self.record.clone()
    }
}

/// Whether the guest counter moves within `bound`.
fn counter_moves(ram: &GuestRam, bound: Duration) -> bool {
    let Ok(start) = ram.counter() else { return false };
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if ram.counter().is_ok_and(|c| c != start) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}
