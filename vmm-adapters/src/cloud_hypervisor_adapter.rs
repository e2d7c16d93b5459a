//! The adapter for Cloud Hypervisor's local migration (memory handed over as
//! memfds by SCM_RIGHTS on one UNIX socket): `--vmm cloud-hypervisor` (the
//! binary named by `$CPRKIT_CLOUD_HYPERVISOR`, else `cloud-hypervisor` on
//! PATH) or `--vmm cloud-hypervisor:/path/to/cloud-hypervisor`.
//!
//! The guest is the kit's counting PVH ELF ([`crate::pvh_guest`]); guest RAM
//! is the memfd `/memfd:ch_ram`. The command lines:
//!
//! ```text
//! cloud-hypervisor --api-socket path=MONITOR --kernel DIR/cprkit-counter-pvh.elf
//!   --memory size=64M,shared=on --cpus boot=1,nested=off --serial off --console off
//!   --event-monitor path=MONITOR.events
//! ```
//!
//! and, for a target, an empty VMM: `--api-socket path=MONITOR
//! --event-monitor path=MONITOR.events`. The kit asks the target to receive
//! (`PUT /api/v1/vm.receive-migration {"receiver_url": "unix:SOCK"}`: it
//! listens on SOCK only then, and answers that request only once the
//! migration has ended, so the adapter sends it from a thread of its own and
//! reports the target `inmigrate` meanwhile: its API answers nothing else
//! while it receives), then the source to send (`PUT
//! /api/v1/vm.send-migration {"destination_url": "unix:SOCK", "local":
//! true}`, answered as soon as its migration thread starts).
//!
//! Its handover shape ([`HandoverShape`]): one channel (request/response;
//! the memory fds cross on it, then the config, the state, the completion;
//! the target closes it only at the end), a target told to receive, no
//! cancel (the API has none), a source that exits with status 0 once it
//! completed, and the outcome known from events only (there is no migration
//! status query): the event monitor's `migration-started`,
//! `migration-finished`, `migration-failed` on the source,
//! `migration-receive-started`, `-finished`, `-failed` on the target, read
//! from the file Cloud Hypervisor writes them to; `STOP` is its `pausing`
//! and `RESUME` its `resumed` (see [`crate::ch_events::to_vm_event`]).
//!
//! Runstates, from `GET /api/v1/vm.info`'s `state`: `Running` is `running`,
//! `Paused` `paused`, `Created` `prelaunch`, `Shutdown` `shutdown`; a VMM
//! without a VM (a target whose receive failed) is `no-vm`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cprkit_harness::adapter::{
    Adapter, AdapterError, Channels, EventSink, GuestProbe, HandoverShape, Incoming, LaunchSpec,
    MigrateRequest, MigrationInfo, Monitor, Outcome, Receive, Role, SourceEnd, until,
};
use cprkit_harness::faults::BadRequest;
use serde_json::{Value, json};

use crate::VmmError;
use crate::ch_api::{Answer, ApiClient};
use crate::ch_events::{EventFile, events_path};
use crate::pvh_guest;

/// The binary looked up on PATH when neither a path nor [`ENV`] is given.
pub const DEFAULT_BINARY: &str = "cloud-hypervisor";
/// The environment variable naming the binary of `--vmm cloud-hypervisor`.
pub const ENV: &str = "CPRKIT_CLOUD_HYPERVISOR";
/// The name Cloud Hypervisor gives its guest RAM memfd.
pub const RAM_MEMFD_NAME: &str = "ch_ram";
/// Guest RAM, in MiB.
pub const RAM_MIB: u32 = 64;
/// What to do when Cloud Hypervisor is missing.
pub const NOT_FOUND: &str = "Cloud Hypervisor not found: set CPRKIT_CLOUD_HYPERVISOR to its binary, or put `cloud-hypervisor` on PATH";
/// How long `cloud-hypervisor --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one API request may take.
const API_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the target's receive request may take (it is answered at the end).
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(600);
/// How often the event file is read for new events.
const EVENT_POLL: Duration = Duration::from_millis(5);

/// The handover shape of Cloud Hypervisor's local migration.
pub const SHAPE: HandoverShape = HandoverShape {
    channels: Channels::One,
    receive: Receive::MonitorRequest,
    cancel: false,
    source_end: SourceEnd::Exit0,
    outcome: Outcome::Events,
};

/// Reads the version line of `cloud-hypervisor --version`
/// (`cloud-hypervisor v53.0-246-gae44c2971-dirty`): the part after the name.
pub fn parse_version(output: &str) -> Option<String> {
    let line = output.lines().next()?.trim();
    let v = line.strip_prefix("cloud-hypervisor ")?.trim();
    (v.starts_with('v') && v.len() > 1).then(|| v.to_string())
}

/// Cloud Hypervisor, checked to answer `--version`.
pub struct CloudHypervisor {
    name: String,
    binary: PathBuf,
    version: String,
    /// Why Cloud Hypervisor is not here, for [`CloudHypervisor::absent`].
    absent: Option<String>,
}

impl CloudHypervisor {
    /// The Cloud Hypervisor at `binary`, or the one [`ENV`] names, or
    /// `cloud-hypervisor` on PATH; an environment error (exit status 2) when
    /// it is missing or does not print a Cloud Hypervisor version.
    pub fn new(binary: Option<&Path>) -> Result<Self, VmmError> {
        let (name, path, how) = match binary {
            Some(p) => (
                format!("cloud-hypervisor:{}", p.display()),
                p.to_path_buf(),
                "given".to_string(),
            ),
            None => match std::env::var_os(ENV).filter(|v| !v.is_empty()) {
                Some(v) => (
                    "cloud-hypervisor".to_string(),
                    PathBuf::from(v),
                    format!("named by {ENV}"),
                ),
                None => (
                    "cloud-hypervisor".to_string(),
                    PathBuf::from(DEFAULT_BINARY),
                    "on PATH".to_string(),
                ),
            },
        };
        let out = run_version(&path, &how)?;
        let version = parse_version(&out).ok_or_else(|| {
            let first: String = out.lines().next().unwrap_or("").chars().take(120).collect();
            VmmError::Environment(format!(
                "`{} --version` does not print a Cloud Hypervisor version (`{first}`): {NOT_FOUND}",
                path.display()
            ))
        })?;
        Ok(CloudHypervisor {
            name,
            binary: path,
            version,
            absent: None,
        })
    }

    /// Cloud Hypervisor where it is not there (`why`): plans its trials (its
    /// handover shape, its snapshot directory) and runs none of them, each
    /// "not run" with `why` (see [`crate::requirements`]).
    pub fn absent(why: String) -> Self {
        CloudHypervisor {
            name: "cloud-hypervisor".into(),
            binary: PathBuf::from(DEFAULT_BINARY),
            version: "(not installed)".into(),
            absent: Some(why),
        }
    }

    /// The binary the kit starts.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The arguments of a source or a target, with the guest ELF at `kernel`.
    pub fn args(spec: &LaunchSpec, kernel: &Path) -> Vec<String> {
        let mut a = vec![
            "--api-socket".to_string(),
            format!("path={}", spec.monitor.display()),
        ];
        if spec.role == Role::Source {
            let shared = if spec.shared_ram { "on" } else { "off" };
            a.extend([
                "--kernel".to_string(),
                kernel.display().to_string(),
                "--memory".into(),
                format!("size={RAM_MIB}M,shared={shared}"),
                "--cpus".into(),
                "boot=1,nested=off".into(),
                "--serial".into(),
                "off".into(),
                "--console".into(),
                "off".into(),
            ]);
        }
        a.extend([
            "--event-monitor".to_string(),
            format!("path={}", events_path(spec).display()),
        ]);
        a
    }
}

/// Runs `binary --version` (bounded) and returns its standard output.
fn run_version(binary: &Path, how: &str) -> Result<String, VmmError> {
    let shown = binary.display();
    let mut child = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            VmmError::Environment(format!("{NOT_FOUND} (cannot run `{shown}`, {how}: {e})"))
        })?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.by_ref().take(64 * 1024).read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + VERSION_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(VmmError::Environment(format!(
                    "`{shown} --version` did not answer within {VERSION_TIMEOUT:?}"
                )));
            }
            Err(e) => return Err(VmmError::Environment(format!("`{shown} --version`: {e}"))),
        }
    };
    let out = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    if !status.success() {
        return Err(VmmError::Environment(format!(
            "`{shown} --version` failed ({status}): is it Cloud Hypervisor? {NOT_FOUND}"
        )));
    }
    Ok(out)
}

impl Adapter for CloudHypervisor {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> String {
        format!("Cloud Hypervisor {}", self.version)
    }

    /// Both spellings share `snapshots/cloud-hypervisor/`.
    fn snapshot_dir(&self) -> String {
        "cloud-hypervisor".into()
    }

    fn handover_shape(&self) -> HandoverShape {
        SHAPE
    }

    /// Its events are written to a file by a thread of its own, at moments
    /// the kit cannot order against its holds: snapshots keep no steps.
    fn snapshot_steps(&self) -> bool {
        false
    }

    fn not_runnable(&self, device: bool, capabilities: &[String]) -> Option<String> {
        if let Some(why) = &self.absent {
            return Some(why.clone());
        }
        if device {
            return Some(
                "the Cloud Hypervisor adapter does not attach the kit's vhost-user device".into(),
            );
        }
        if !capabilities.is_empty() {
            return Some(format!(
                "Cloud Hypervisor's migration has no capabilities to set (the case sets {})",
                capabilities.join(", ")
            ));
        }
        None
    }

    fn command(&self, spec: &LaunchSpec) -> Result<Command, AdapterError> {
        if let Some(why) = &self.absent {
            return Err(AdapterError::Environment(why.clone()));
        }
        if spec.vhost_user_blk.is_some() {
            return Err(AdapterError::Environment(
                "the Cloud Hypervisor adapter does not attach the kit's vhost-user device".into(),
            ));
        }
        let kernel = pvh_guest::write_into(&spec.dir).map_err(|e| {
            AdapterError::Environment(format!(
                "cannot write the guest ELF into {}: {e}",
                spec.dir.display()
            ))
        })?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(Self::args(spec, &kernel));
        Ok(cmd)
    }

    fn guest_probe(&self) -> GuestProbe {
        GuestProbe {
            ram_memfd_name: RAM_MEMFD_NAME.to_string(),
            counter_offset: pvh_guest::COUNTER_ADDR,
            counter_width: pvh_guest::COUNTER_WIDTH,
            ring: None,
            device_io: false,
        }
    }

    fn connect(
        &self,
        spec: &LaunchSpec,
        deadline: Instant,
        events: EventSink,
    ) -> Result<Box<dyn Monitor>, AdapterError> {
        let api = ApiClient::new(&spec.monitor)
            .map_err(|e| AdapterError::Monitor(format!("a runtime for the API client: {e}")))?;
        loop {
            let left = until(deadline);
            match api.call("GET", "vmm.ping", None, left.min(API_TIMEOUT)) {
                Ok(a) if a.ok() => break,
                Ok(a) => {
                    return Err(AdapterError::Monitor(format!(
                        "vmm.ping answered {}: {}",
                        a.status, a.body
                    )));
                }
                Err(e) if left.is_zero() => {
                    return Err(AdapterError::Monitor(format!(
                        "{}: {e}",
                        spec.monitor.display()
                    )));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        // A source's VM is created, then booted: its monitor is up once the
        // VM runs (before, `vm.info` says `Created`, which no case starts from).
        if spec.role == Role::Source {
            loop {
                let left = until(deadline);
                let state = api
                    .call("GET", "vm.info", None, left.min(API_TIMEOUT))
                    .ok()
                    .filter(Answer::ok)
                    .and_then(|a| serde_json::from_str::<Value>(&a.body).ok())
                    .and_then(|v| v["state"].as_str().map(str::to_string));
                match state.as_deref() {
                    Some("Running" | "Paused") => break,
                    _ if left.is_zero() => {
                        return Err(AdapterError::Monitor(format!(
                            "the source's VM never booted (vm.info state {state:?})"
                        )));
                    }
                    _ => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }
        Ok(Box::new(ChMonitor::new(api, spec, events)))
    }
}

/// A runstate in QEMU's names for a `vm.info` state.
pub fn runstate_of(state: &str) -> String {
    match state {
        "Running" => "running".into(),
        "Paused" => "paused".into(),
        "Created" => "prelaunch".into(),
        "Shutdown" => "shutdown".into(),
        other => other.to_ascii_lowercase(),
    }
}

type ReceiveSlot = Arc<Mutex<Option<Result<Answer, String>>>>;

/// One VMM's API and its events.
struct ChMonitor {
    api: ApiClient,
    events: Arc<Mutex<EventFile>>,
    sink: Arc<EventSink>,
    stop: Arc<AtomicBool>,
    /// The target's receive request, once sent: its answer when it came.
    receive: Option<ReceiveSlot>,
    monitor: PathBuf,
}

impl ChMonitor {
    fn new(api: ApiClient, spec: &LaunchSpec, sink: EventSink) -> Self {
        let path = events_path(spec);
        // The events from now on, as a monitor connection gets them.
        let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let events = Arc::new(Mutex::new(EventFile {
            path,
            offset,
            pending: Vec::new(),
            status: None,
        }));
        let sink: Arc<EventSink> = Arc::new(sink);
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (events, sink, stop) = (events.clone(), sink.clone(), stop.clone());
            let _ = std::thread::Builder::new()
                .name("ch-events".into())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        events.lock().expect("events lock").read(&sink);
                        std::thread::sleep(EVENT_POLL);
                    }
                });
        }
        ChMonitor {
            api,
            events,
            sink,
            stop,
            receive: None,
            monitor: spec.monitor.clone(),
        }
    }

    fn read_events(&self) -> Option<String> {
        let mut e = self.events.lock().expect("events lock");
        e.read(&self.sink);
        e.status.clone()
    }

    fn put(&self, endpoint: &str, body: Option<Value>) -> Result<(), AdapterError> {
        let body = body.map(|b| b.to_string());
        match self.api.call("PUT", endpoint, body.as_deref(), API_TIMEOUT) {
            Ok(a) if a.ok() => Ok(()),
            Ok(a) => Err(AdapterError::Refused {
                command: endpoint.into(),
                desc: refusal(&a),
            }),
            Err(e) => Err(AdapterError::Monitor(e.to_string())),
        }
    }

    /// The receive's answer, if it came; `None` while it is pending or never sent.
    fn received(&self) -> Option<Result<Answer, String>> {
        self.receive
            .as_ref()
            .and_then(|r| r.lock().expect("receive lock").clone())
    }
}

impl Drop for ChMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A refusal's description: Cloud Hypervisor's error text, else the status.
fn refusal(a: &Answer) -> String {
    let text = a.body.trim();
    // Its errors come as a JSON list of causes, or as plain text.
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(causes)) => causes
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(": "),
        _ if text.is_empty() => format!("HTTP {}", a.status),
        _ => text.to_string(),
    }
}

/// The body of `vm.send-migration` for a request, malformed on purpose when asked.
pub fn send_body(req: &MigrateRequest) -> Value {
    let unix = format!("unix:{}", req.cpr.display());
    match req.malformed {
        // No address for the one channel at all.
        Some(BadRequest::NoMainChannel) => json!({"local": true}),
        // A local migration to a TCP address (not a UNIX socket).
        Some(BadRequest::NonUnixCpr) => {
            json!({"destination_url": "tcp:127.0.0.1:1", "local": true})
        }
        // Private RAM is the source's launch (shared=off); the request is valid.
        Some(BadRequest::PrivateRam) | None => json!({"destination_url": unix, "local": true}),
    }
}

impl Monitor for ChMonitor {
    fn prepare_cpr(&mut self, capabilities: &[String]) -> Result<(), AdapterError> {
        if capabilities.is_empty() {
            Ok(())
        } else {
            Err(AdapterError::Refused {
                command: "prepare".into(),
                desc: format!("no migration capabilities: {}", capabilities.join(", ")),
            })
        }
    }

    fn migrate(&mut self, req: &MigrateRequest) -> Result<(), AdapterError> {
        self.put("vm.send-migration", Some(send_body(req)))
    }

    fn receive(&mut self, incoming: &Incoming) -> Result<(), AdapterError> {
        let body = json!({"receiver_url": format!("unix:{}", incoming.cpr.display())}).to_string();
        let slot: ReceiveSlot = Arc::new(Mutex::new(None));
        let api = ApiClient::new(&self.monitor)
            .map_err(|e| AdapterError::Monitor(format!("a runtime for the API client: {e}")))?;
        let answer = slot.clone();
        std::thread::Builder::new()
            .name("ch-receive".into())
            .spawn(move || {
                let r = api
                    .call("PUT", "vm.receive-migration", Some(&body), RECEIVE_TIMEOUT)
                    .map_err(|e| e.to_string());
                *answer.lock().expect("receive lock") = Some(r);
            })
            .map_err(|e| AdapterError::Monitor(format!("a thread for the receive: {e}")))?;
        self.receive = Some(slot);
        Ok(())
    }

    fn cancel(&mut self) -> Result<(), AdapterError> {
        Err(AdapterError::Refused {
            command: "cancel".into(),
            desc: "Cloud Hypervisor's API has no migration cancel".into(),
        })
    }

    fn stop(&mut self) -> Result<(), AdapterError> {
        self.put("vm.pause", None)
    }

    fn cont(&mut self) -> Result<(), AdapterError> {
        self.put("vm.resume", None)
    }

    fn runstate(&mut self) -> Result<String, AdapterError> {
        self.read_events();
        // A target receiving answers nothing until its receive ends.
        if self.receive.is_some() && self.received().is_none() {
            return Ok("inmigrate".into());
        }
        match self.api.call("GET", "vm.info", None, API_TIMEOUT) {
            Ok(a) if a.ok() => {
                let v: Value = serde_json::from_str(&a.body)
                    .map_err(|e| AdapterError::Monitor(format!("vm.info: {e}")))?;
                Ok(runstate_of(v["state"].as_str().unwrap_or("unknown")))
            }
            Ok(_) => Ok("no-vm".into()),
            Err(e) => Err(AdapterError::Monitor(e.to_string())),
        }
    }

    /// From the events (Cloud Hypervisor has no status query), and for a
    /// target from its receive's answer; `none` before any.
    fn migration(&mut self) -> Result<MigrationInfo, AdapterError> {
        let from_events = self.read_events();
        let received = self.received();
        let error = match &received {
            Some(Ok(a)) if !a.ok() => Some(refusal(a)),
            Some(Err(e)) => Some(e.clone()),
            _ => None,
        };
        let from_receive = received.map(|r| match r {
            Ok(a) if a.ok() => "completed",
            _ => "failed",
        });
        let status = match (from_events.as_deref(), from_receive) {
            (Some("completed" | "failed"), _) | (Some(_), None) => from_events.unwrap_or_default(),
            (_, Some(r)) => r.to_string(),
            (None, None) => "none".into(),
        };
        Ok(MigrationInfo { status, error })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ch_events::to_vm_event;
    use cprkit_harness::adapter::VmEvent;
    use rstest::rstest;

    fn spec(role: Role, dir: &Path) -> LaunchSpec {
        LaunchSpec {
            role,
            dir: dir.to_path_buf(),
            monitor: dir.join(if role == Role::Source {
                "s-qmp.sock"
            } else {
                "t-qmp.sock"
            }),
            incoming: (role == Role::Target).then(|| Incoming {
                main: dir.join("t-main.sock"),
                cpr: dir.join("t-cpr.sock"),
            }),
            shared_ram: true,
            vhost_user_blk: None,
            setup: Default::default(),
        }
    }

    #[rstest]
    #[case(
        "cloud-hypervisor v53.0-246-gae44c2971-dirty\nMigration Protocol Versions: 0\n",
        Some("v53.0-246-gae44c2971-dirty")
    )]
    #[case("cloud-hypervisor v48.0\n", Some("v48.0"))]
    #[case("QEMU emulator version 10.0.2\n", None)]
    #[case("cloud-hypervisor \n", None)]
    #[case("", None)]
    fn version_lines(#[case] out: &str, #[case] want: Option<&str>) {
        assert_eq!(parse_version(out).as_deref(), want);
    }

    #[test]
    fn a_source_boots_the_counting_guest_on_shared_memory_and_a_target_starts_empty() {
        let d = Path::new("/run/t");
        let src = CloudHypervisor::args(&spec(Role::Source, d), Path::new("/run/t/g.elf"));
        assert_eq!(
            src.join(" "),
            "--api-socket path=/run/t/s-qmp.sock --kernel /run/t/g.elf --memory size=64M,shared=on \
             --cpus boot=1,nested=off --serial off --console off --event-monitor path=/run/t/s-qmp.sock.events"
        );
        let mut private = spec(Role::Source, d);
        private.shared_ram = false;
        assert!(
            CloudHypervisor::args(&private, Path::new("g"))
                .contains(&"size=64M,shared=off".to_string())
        );
        let tgt = CloudHypervisor::args(&spec(Role::Target, d), Path::new("g"));
        assert_eq!(
            tgt.join(" "),
            "--api-socket path=/run/t/t-qmp.sock --event-monitor path=/run/t/t-qmp.sock.events"
        );
    }

    #[test]
    fn the_send_request_is_local_on_the_one_socket_or_malformed_as_asked() {
        let req = |malformed| MigrateRequest {
            main: "/d/main.sock".into(),
            cpr: "/d/cpr.sock".into(),
            malformed,
        };
        assert_eq!(
            send_body(&req(None)),
            json!({"destination_url": "unix:/d/cpr.sock", "local": true})
        );
        assert_eq!(
            send_body(&req(Some(BadRequest::NonUnixCpr))),
            json!({"destination_url": "tcp:127.0.0.1:1", "local": true})
        );
        assert_eq!(
            send_body(&req(Some(BadRequest::PrivateRam))),
            send_body(&req(None))
        );
    }

    #[rstest]
    #[case("booted", None)]
    #[case("pausing", Some(VmEvent::Stop))]
    #[case("paused", Some(VmEvent::Other("paused".into())))]
    #[case("resumed", Some(VmEvent::Resume))]
    #[case("migration-started", Some(VmEvent::Migration("active".into())))]
    #[case("migration-finished", Some(VmEvent::Migration("completed".into())))]
    #[case("migration-receive-failed", Some(VmEvent::Migration("failed".into())))]
    #[case("snapshotting", Some(VmEvent::Other("snapshotting".into())))]
    fn events(#[case] name: &str, #[case] want: Option<VmEvent>) {
        assert_eq!(to_vm_event(name), want);
    }

    #[test]
    fn the_event_file_is_read_as_it_grows_even_mid_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ev");
        let ev = |name: &str| {
            serde_json::to_string_pretty(&json!({"timestamp": {"secs": 0, "nanos": 1}, "source": "vm", "event": name, "properties": null})).unwrap() + "\n\n"
        };
        let mut text = ev("booted") + &ev("migration-started") + &ev("pausing");
        let half = ev("migration-finished");
        text.push_str(&half[..20]);
        std::fs::write(&path, &text).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let sink: EventSink = Box::new(move |e| g.lock().unwrap().push(e));
        let mut f = EventFile {
            path: path.clone(),
            offset: 0,
            pending: Vec::new(),
            status: None,
        };
        f.read(&sink);
        assert_eq!(
            *got.lock().unwrap(),
            vec![VmEvent::Migration("active".into()), VmEvent::Stop]
        );
        text.push_str(&half[20..]);
        std::fs::write(&path, &text).unwrap();
        f.read(&sink);
        assert_eq!(got.lock().unwrap().len(), 3);
        assert_eq!(f.status.as_deref(), Some("completed"));
    }

    #[test]
    fn refusals_read_cloud_hypervisors_error_list() {
        let a = Answer { status: 500, body: "[\"Error from API\",\"Local migration requires shared memory or hugepages enabled\"]".into() };
        assert_eq!(
            refusal(&a),
            "Error from API: Local migration requires shared memory or hugepages enabled"
        );
        assert_eq!(
            refusal(&Answer {
                status: 400,
                body: String::new()
            }),
            "HTTP 400"
        );
    }

    #[test]
    fn a_missing_binary_is_an_environment_error_that_says_what_to_do() {
        let e = CloudHypervisor::new(Some(Path::new("/nonexistent/cloud-hypervisor")))
            .err()
            .unwrap();
        assert!(matches!(e, VmmError::Environment(_)));
        assert!(e.to_string().contains("CPRKIT_CLOUD_HYPERVISOR"), "{e}");
        let e = CloudHypervisor::new(Some(Path::new("/bin/true")))
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("does not print a Cloud Hypervisor version"),
            "{e}"
        );
    }
}
