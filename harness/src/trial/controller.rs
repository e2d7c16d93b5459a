//! The controller's start-up and its small tools: spawning, monitors,
//! flushes and barriers, signals to the processes.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use crate::adapter::{
    Adapter, AdapterError, Channels, HandoverShape, Incoming, LaunchSpec, MigrateRequest, Monitor,
    Receive, Role, SideSetup, VmEvent,
};
use crate::faults::Fault;
use crate::guestmem::GuestRam;
use crate::interposer::{self, Directive, Held, Interposer};
use crate::plan::{BadRequest, FaultPoint, GuestState, Step};
use crate::process::VmmProcess;
use crate::record::{MigrateReply, TrialRecord};
use crate::scenario::TargetStart;
use crate::schedule::Schedule;
use crate::timeline::{Actor, Timeline, What};
use crate::trialdir::TrialDir;
use crate::unixnet;

use super::{Controller, STARTUP, Side, Signal, TrialError, TrialSpec, watch};

impl<'a> Controller<'a> {
    pub(super) fn new(
        adapter: &'a dyn Adapter,
        spec: &'a TrialSpec,
        dir: &'a TrialDir,
        tx: Sender<Signal>,
        rx: Receiver<Signal>,
    ) -> Self {
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
            device: None,
            source_status: None,
            main_route: None,
            main_given: false,
            hang_pending: false,
            write_rate: None,
            request_interval: None,
            device_pace: None,
            step_bound: spec.migration_bound,
            hop: 1,
            hop_start: std::time::Duration::ZERO,
            earlier: Vec::new(),
            record: TrialRecord::new(
                spec.name.clone(),
                adapter.name().to_string(),
                spec.guest,
                None,
                spec.settle,
                dir.path().to_path_buf(),
                dir.kept(),
            ),
        }
        .with_first_record()
    }

    fn with_first_record(mut self) -> Self {
        self.record = self.fresh_record();
        self
    }

    /// What the scenario asks of one side at its start.
    pub(super) fn side_setup(&self, role: Role) -> SideSetup {
        let sc = &self.spec.scenario;
        let diff = sc.side(role);
        SideSetup {
            start_stopped: role == Role::Source && self.spec.guest == GuestState::Prelaunch,
            other_ram: diff.other_ram,
            devices: diff.devices.clone(),
            target_start: sc.target_start,
            on_failed_load: sc.on_failed_load,
        }
    }

    /// A deferred target ([`TargetStart::Deferred`]) gets its main channel
    /// once the CPR state went on to it: the kit connects its monitor (it
    /// answers once the state is loaded) and gives it the main channel, as
    /// libvirt does. Once per handover; not if the source's migration ended.
    pub(super) fn give_main_channel(&mut self) {
        if self.spec.scenario.target_start != TargetStart::Deferred
            || self.main_given
            || !self.record.cutover.as_ref().is_some_and(|c| c.forwarded)
            || self.source_terminal()
            || !self.alive(Role::Target)
        {
            return;
        }
        self.main_given = true;
        if !self.target_ready() {
            return;
        }
        let Some(main) = self
            .target
            .as_ref()
            .and_then(|t| t.spec.incoming.as_ref())
            .map(|i| i.main.clone())
        else {
            return;
        };
        self.action("give the target its main channel");
        let on_failed_load = self.spec.scenario.on_failed_load;
        let reply = self
            .target
            .as_mut()
            .and_then(|t| t.monitor.as_mut())
            .map(|m| m.incoming_main(&main, on_failed_load));
        if let Some(Err(e)) = reply {
            let (command, desc) = match e {
                AdapterError::Refused { command, desc } => (command, desc),
                other => ("incoming-main".to_string(), other.to_string()),
            };
            self.timeline
                .record(Actor::Target, What::Refused { command, desc });
        }
    }

    /// The trial's schedule at the hop being run: the whole schedule at the
    /// hop its faults are placed at, no fault, hold or delay at the others.
    pub(super) fn schedule(&self) -> &Schedule {
        static NO_FAULT: std::sync::LazyLock<Schedule> =
            std::sync::LazyLock::new(|| Schedule::single(None));
        if self.spec.scenario.fault_hop == self.hop {
            &self.spec.schedule
        } else {
            &NO_FAULT
        }
    }

    pub(super) fn log(&self, role: Role) -> String {
        // From the second hop on, the source is the previous hop's target.
        let name = match (role, self.hop) {
            (_, 1) => format!("{}.log", role.name()),
            (Role::Source, 2) => "target.log".to_string(),
            (Role::Source, h) => format!("target-h{}.log", h - 1),
            (Role::Target, h) => format!("target-h{h}.log"),
        };
        self.dir.join(&name).display().to_string()
    }

    /// The shape of the VMM's handover.
    pub(super) fn shape(&self) -> HandoverShape {
        self.record.shape
    }

    /// The fault the kit injects at `step` (a device fault is the device's).
    pub(super) fn fault_at(&self, step: Step) -> Option<Fault> {
        self.schedule().kit_fault_at(step)
    }

    pub(super) fn bad_request(&self) -> Option<BadRequest> {
        self.schedule().bad_request()
    }

    pub(super) fn action(&self, what: impl Into<String>) {
        self.timeline.record(Actor::Kit, What::Action(what.into()));
    }

    pub(super) fn spawn(&self, spec: LaunchSpec) -> Result<Side, TrialError> {
        let role = spec.role;
        let cmd = self.adapter.command(&spec)?;
        let tx = self.tx.clone();
        let proc = VmmProcess::spawn(
            role,
            cmd,
            Path::new(&self.log(role)),
            &self.timeline,
            move |_| {
                let _ = tx.send(Signal::Exit);
            },
        )
        .map_err(|source| TrialError::Spawn {
            role: role.name(),
            source,
        })?;
        Ok(Side {
            proc,
            spec,
            monitor: None,
            ram: None,
        })
    }

    pub(super) fn connect(
        &self,
        side: &Side,
        deadline: Instant,
    ) -> Result<Box<dyn Monitor>, AdapterError> {
        let role = side.spec.role;
        let tl = self.timeline.clone();
        let tx = self.tx.clone();
        let sink = Box::new(move |ev: VmEvent| {
            tl.record(role.into(), What::Event(ev.clone()));
            let _ = tx.send(Signal::Event(role, ev));
        });
        self.adapter.connect(&side.spec, deadline, sink)
    }

    /// The trial: the first source and target, the handover, then any
    /// further hops ([`super::hops`]).
    pub(super) fn run(&mut self) -> Result<(), TrialError> {
        let incoming = self.start_pair()?;
        self.handover(&incoming)?;
        self.further_hops()
    }

    /// The launch of a target of this trial; `prefix` names its sockets
    /// (`t-` for the first, `h2-t-` for the second hop's).
    pub(super) fn target_spec(&self, prefix: &str, blk: Option<std::path::PathBuf>) -> LaunchSpec {
        let d = self.dir;
        LaunchSpec {
            role: Role::Target,
            dir: d.path().to_path_buf(),
            monitor: d.join(&format!("{prefix}qmp.sock")),
            incoming: Some(Incoming {
                main: d.join(&format!("{prefix}main.sock")),
                cpr: d.join(&format!("{prefix}cpr.sock")),
            }),
            shared_ram: true,
            vhost_user_blk: blk,
            setup: self.side_setup(Role::Target),
        }
    }

    /// Starts a target and waits (bounded) until it listens on its cpr
    /// socket (a target that starts empty is asked to, on its monitor).
    pub(super) fn start_target(&mut self, spec: LaunchSpec) -> Result<Incoming, TrialError> {
        let incoming = spec.incoming.clone().expect("a target's channels");
        let mut target = self.spawn(spec)?;
        if self.shape().receive == Receive::MonitorRequest {
            let mut mon = self.connect(&target, Instant::now() + STARTUP)?;
            self.action("receive");
            mon.receive(&incoming)?;
            target.monitor = Some(mon);
        }
        let listening = unixnet::wait_listening(&incoming.cpr, Instant::now() + STARTUP, || {
            !target.proc.is_alive()
        });
        self.target = Some(target);
        if !listening {
            return Err(TrialError::setup(
                "the target never listened on its cpr socket",
                Path::new(&self.log(Role::Target)),
            ));
        }
        Ok(incoming)
    }

    /// The first target and source, the guest started as the case says.
    fn start_pair(&mut self) -> Result<Incoming, TrialError> {
        let started = Instant::now();
        let d = self.dir;
        let blk = self.start_device()?;
        let target_spec = self.target_spec("t-", blk.clone());
        let source_spec = LaunchSpec {
            role: Role::Source,
            dir: d.path().to_path_buf(),
            monitor: d.join("s-qmp.sock"),
            incoming: None,
            shared_ram: self.bad_request() != Some(BadRequest::PrivateRam),
            // A vhost-user device needs shared guest RAM: the source whose
            // RAM is private (ERR-1) runs without it.
            vhost_user_blk: blk.filter(|_| self.bad_request() != Some(BadRequest::PrivateRam)),
            setup: self.side_setup(Role::Source),
        };

        // The target first: it must be listening on its cpr socket.
        let incoming = self.start_target(target_spec)?;

        // The source, its monitor, its guest running or paused.
        let source_spec_has_device = source_spec.vhost_user_blk.is_some();
        let mut source = self.spawn(source_spec)?;
        let mut mon = self.connect(&source, Instant::now() + STARTUP)?;
        // Both VMMs started and the source answers: the measure of the
        // VMMs' speed the bound of a step is derived from.
        let startup = started.elapsed();
        self.step_bound = watch::step_bound(startup, self.spec.settle, self.spec.migration_bound);
        self.timeline.record(
            Actor::Kit,
            What::Sample(format!(
                "step bound {} ms ({}x the start-up of {:.1} ms, within the settle bound and {} ms)",
                self.step_bound.as_millis(),
                watch::STEP_FACTOR,
                startup.as_secs_f64() * 1000.0,
                self.spec.migration_bound.as_millis()
            )),
        );
        // A guest started stopped (prelaunch) never runs: nothing to wait for.
        let runs = self.spec.guest != GuestState::Prelaunch;
        if self.bad_request() != Some(BadRequest::PrivateRam) {
            source.ram = Some(self.open_ram(source.proc.pid())?);
            self.record.source_ram_inode = source.ram.as_ref().map(GuestRam::inode);
            if runs {
                let ram = source.ram.as_ref().expect("just opened");
                self.wait_guest_started(ram)?;
                self.write_rate = watch::measure_writes(ram, self.spec.settle);
            }
        }
        if source_spec_has_device {
            self.wait_device_started(source.proc.pid(), runs)?;
        }
        if self.spec.guest == GuestState::Paused {
            mon.stop()?;
        }
        self.record.prior = mon.runstate()?;
        mon.prepare_cpr(&self.spec.capabilities)?;
        source.monitor = Some(mon);
        self.source = Some(source);
        Ok(incoming)
    }

    /// One handover from the source to the target listening on `incoming`:
    /// the interposer between them, the migrate command, the migration
    /// followed to its end, and the final readings.
    pub(super) fn handover(&mut self, incoming: &Incoming) -> Result<(), TrialError> {
        let d = self.dir;
        // The interposer between them.
        let tx = self.tx.clone();
        let on_hold: interposer::HoldHandler = Arc::new(move |held: Held| {
            let (reply_tx, reply_rx) = mpsc::sync_channel(1);
            if tx.send(Signal::Hold(held, reply_tx)).is_err() {
                return Directive::Forward;
            }
            reply_rx
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or(Directive::Forward)
        });
        // The cpr channel now; the main channel once the target listens on its
        // own (at target-init), so a source that reaches for it earlier finds
        // no socket, as it would without the kit.
        // With one channel, there is no main channel to open.
        let routes = interposer::routes(d.path(), &incoming.cpr, &incoming.main);
        let channels = self.shape().channels;
        self.interposer = Some(
            Interposer::start_shaped(&routes[..1], &self.timeline, on_hold, channels)
                .map_err(TrialError::Interposer)?,
        );
        self.main_route = (channels == Channels::CprAndMain).then(|| routes[1].clone());

        // target-listen: the last moment before the migrate command.
        self.barrier_point(Step::TargetListen, "target listening");
        if let Some(fault) = self.fault_at(Step::TargetListen) {
            self.inject_before_migrate(fault);
        }

        self.arm_device();

        // The migrate command.
        if let Some(fault) = self.fault_at(Step::SourceStop) {
            self.inject(Step::SourceStop, fault);
        }
        let req = MigrateRequest {
            main: routes[1].front.clone(),
            cpr: routes[0].front.clone(),
            malformed: self.bad_request(),
        };
        self.action("migrate");
        let bound = self.step_bound;
        let reply = self.source_monitor().map(|m| {
            m.set_answer_bound(bound);
            m.migrate(&req)
        });
        self.record.migrate = match reply {
            Some(Ok(())) => MigrateReply::Accepted,
            Some(Err(AdapterError::Refused { command, desc })) => {
                self.timeline.record(
                    Actor::Source,
                    What::Refused {
                        command,
                        desc: desc.clone(),
                    },
                );
                MigrateReply::Refused(desc)
            }
            Some(Err(e)) => {
                // No answer: the source may be dying, or its monitor hung (a
                // hung main loop answers nothing more). It is not asked again
                // in this trial: every later reading would wait its whole
                // timeout for nothing.
                if let Some(s) = self.source.as_mut() {
                    s.monitor = None;
                }
                self.timeline.record(
                    Actor::Source,
                    What::Sample("its monitor did not answer migrate: not asked again".into()),
                );
                let deadline = Instant::now() + self.spec.settle;
                self.serve_until(deadline, |c| !c.alive(Role::Source));
                MigrateReply::NoAnswer(e.to_string())
            }
            None => MigrateReply::NoAnswer("no monitor".into()),
        };
        if self.record.migrate == MigrateReply::Accepted {
            self.follow_migration();
        }
        self.settle();
        Ok(())
    }

    pub(super) fn open_ram(&self, pid: i32) -> Result<GuestRam, TrialError> {
        let probe = self.adapter.guest_probe();
        let deadline = Instant::now() + STARTUP;
        loop {
            match GuestRam::open(pid, &probe) {
                Ok(r) => return Ok(r),
                Err(e) if Instant::now() >= deadline => {
                    return Err(TrialError::setup(
                        format!("guest RAM: {e}"),
                        Path::new(&self.log(Role::Source)),
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }

    /// Waits until the guest has written into its RAM (it is really running).
    pub(super) fn wait_guest_started(&self, ram: &GuestRam) -> Result<(), TrialError> {
        let deadline = Instant::now() + STARTUP;
        while ram.counter().unwrap_or(0) == 0 {
            if Instant::now() >= deadline {
                return Err(TrialError::setup(
                    "the guest counter never moved",
                    Path::new(&self.log(Role::Source)),
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    pub(super) fn source_monitor(&mut self) -> Option<&mut Box<dyn Monitor>> {
        self.source.as_mut().and_then(|s| s.monitor.as_mut())
    }

    pub(super) fn side(&self, role: Role) -> Option<&Side> {
        match role {
            Role::Source => self.source.as_ref(),
            Role::Target => self.target.as_ref(),
        }
    }

    pub(super) fn alive(&self, role: Role) -> bool {
        self.side(role).is_some_and(|s| s.proc.is_alive())
    }

    /// A monitor round trip on each live side: every event sent before is then in the timeline.
    pub(super) fn flush(&mut self) -> (Option<String>, Option<String>) {
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

    pub(super) fn barrier_point(
        &mut self,
        step: Step,
        note: &str,
    ) -> (Option<String>, Option<String>) {
        let states = self.flush();
        self.timeline.record(
            Actor::Kit,
            What::Point {
                step,
                note: note.into(),
            },
        );
        states
    }

    /// The schedule's `fault` at `step` is injected: the record says so.
    pub(super) fn inject(&mut self, step: Step, fault: Fault) {
        let point = FaultPoint { fault, step };
        if self.record.point == Some(point) {
            self.record.injected = true;
        } else if let Some(l) = self.record.later.iter_mut().find(|l| l.point == point) {
            l.injected = true;
        }
    }

    pub(super) fn kill(&mut self, role: Role) {
        self.action(format!("SIGKILL {}", role.name()));
        if let Some(s) = self.side(role) {
            s.proc.kill();
        }
        if role == Role::Target {
            self.target_gone();
        }
    }

    pub(super) fn freeze_target(&mut self) {
        self.action("SIGSTOP target");
        if let Some(t) = &self.target {
            let _ = t.proc.freeze();
        }
    }

    pub(super) fn thaw_target(&mut self) {
        self.action("SIGCONT target");
        if let Some(t) = &self.target {
            let _ = t.proc.thaw();
        }
    }

    /// The target has loaded the CPR state and listens on its main socket: the
    /// interposer opens the main channel's front (once).
    pub(super) fn open_main(&mut self) {
        if let (Some(route), Some(i)) = (self.main_route.take(), self.interposer.as_mut())
            && let Err(e) = i.open(&route)
        {
            self.timeline.record(
                Actor::Main,
                What::Channel(format!("cannot open the main channel: {e}")),
            );
        }
    }

    /// The target is dead: the source's next connection fails as it would
    /// without the kit in between.
    pub(super) fn target_gone(&self) {
        if let Some(i) = &self.interposer {
            i.refuse_new_connections();
        }
    }

    /// Connects to a side's monitor, retrying while its process lives,
    /// until `deadline`.
    pub(super) fn connect_while_alive(
        &self,
        role: Role,
        deadline: Instant,
    ) -> Option<Box<dyn Monitor>> {
        let side = self.side(role)?;
        // Short attempts first (a dying VMM is noticed at once), then longer
        // ones (an adapter that starts a program per attempt gets its time).
        let mut attempt = Duration::from_millis(20);
        while side.proc.is_alive() && Instant::now() < deadline {
            match self.connect(side, (Instant::now() + attempt).min(deadline)) {
                Ok(m) => return Some(m),
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
            attempt = (attempt * 2).min(Duration::from_secs(1));
        }
        None
    }

    /// Whether a side answers that it is in runstate `want` (false if it cannot answer).
    pub(super) fn runstate_is(&mut self, role: Role, want: &str) -> bool {
        if !self.alive(role) {
            return false;
        }
        let side = match role {
            Role::Source => self.source.as_mut(),
            Role::Target => self.target.as_mut(),
        };
        side.and_then(|s| s.monitor.as_mut())
            .is_some_and(|m| m.runstate().is_ok_and(|rs| rs == want))
    }
}
