//! The exec adapter: an adapter that is a separate program, written in any
//! language, speaking the `cprkit-exec/2` protocol (or `cprkit-exec/1`, still
//! accepted) on its stdin and stdout (JSON lines; see
//! `docs/exec-adapter-protocol.md`). `--vmm exec:PROGRAM`. A `/2` program may
//! describe its handover shape and its steps in its reply to `hello`.
//!
//! The kit runs the program once per *session*, each a separate process in its
//! own process group:
//!
//! - a short **launch** session per VMM start: `hello`, `command` (the VMM's
//!   command line, which the kit spawns itself) and, the first time, `guest-probe`;
//! - a **monitor** session per connection to a VMM: `hello`, `connect`, then the
//!   [`Monitor`] requests, with the VMM's events coming in between.
//!
//! The program is never trusted to behave: every request has a timeout, a line
//! that is not the protocol ends the session, and so does the program's exit;
//! each gives an error naming the program, the session and what it did, with the
//! end of its stderr. A session's end (its `Drop`) kills the whole process group
//! and reaps it. The program's stderr goes to the trial directory
//! (`exec-ROLE-launch.log`, `exec-ROLE-monitor.log`), at most [`LOG_LIMIT`] bytes
//! a session.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cprkit_harness::adapter::{
    Adapter, AdapterError, Channels, EventSink, GuestProbe, HandoverShape, Incoming, LaunchSpec,
    MigrateRequest, MigrationInfo, Monitor, Outcome, Receive, RecordRing, Role, SourceEnd, until,
};
use cprkit_harness::steps::Step;
use serde_json::{Map, Value, json};

use crate::VmmError;

mod session;

use session::{Kind, Session};

/// The first version of the protocol, which the kit names in `hello`'s
/// `protocol` (so that a `/1` program that checks it runs unchanged).
pub const PROTOCOL: &str = "cprkit-exec/1";
/// The second version: a program's `hello` reply may carry a handover shape
/// and its steps, and a monitor session may be asked to `receive`.
pub const PROTOCOL_2: &str = "cprkit-exec/2";
/// Every version the kit accepts, offered in `hello`'s `accepts`.
pub const ACCEPTS: [&str; 2] = [PROTOCOL, PROTOCOL_2];
/// How long the kit waits for the reply to a request (`connect`: its deadline, plus this).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest line the program may print on stdout.
pub const MAX_LINE: usize = 1 << 20;
/// How much of a session's stderr is kept in its log.
pub const LOG_LIMIT: u64 = 1 << 20;
/// Stderr lines quoted in an error.
const TAIL_LINES: usize = 6;
/// How long an error waits for a program that closed its stdout to exit.
const EXIT_GRACE: Duration = Duration::from_millis(500);
/// How long a session's end waits for its reader threads after the kill.
const JOIN_BOUND: Duration = Duration::from_secs(1);

/// A VMM driven by an external program.
pub struct ExecAdapter {
    name: String,
    /// `exec-FILE`: the program's file name (a path has no place in a folder name).
    snapshot_dir: String,
    program: PathBuf,
    timeout: Duration,
    probe: OnceLock<GuestProbe>,
    /// The VMM's version, from the first reply to `hello` or `connect` naming it.
    version: OnceLock<String>,
    /// The handover as the program describes it, from the first reply to `hello`.
    described: OnceLock<Described>,
}

/// What a program's reply to `hello` says of its VMM's handover (`/1`: QEMU's
/// shape, every step).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Described {
    shape: HandoverShape,
    /// The steps it has; `None`: every step.
    steps: Option<Vec<Step>>,
}

impl Default for Described {
    fn default() -> Self {
        Described {
            shape: HandoverShape::CPR_TRANSFER,
            steps: None,
        }
    }
}

impl ExecAdapter {
    /// `program` is a path (relative to the current directory) if it has a `/`,
    /// else a name looked up on `PATH`.
    pub fn new(program: &str) -> Result<Self, VmmError> {
        let path = resolve(program)?;
        if program.contains("::") {
            // It would end the VMM part of trial names (`VMM::CASE/POINT`).
            return Err(VmmError::Environment(format!(
                "exec adapter `{program}`: a program name must not contain `::`"
            )));
        }
        let file = Path::new(program)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| program.to_string());
        Ok(ExecAdapter {
            // The program as the user named it, so that every trial name
            // `run` prints can be given back to `explain`.
            name: format!("exec:{program}"),
            snapshot_dir: format!("exec-{file}"),
            program: path,
            timeout: REQUEST_TIMEOUT,
            probe: OnceLock::new(),
            version: OnceLock::new(),
            described: OnceLock::new(),
        })
    }

    /// The same adapter with another request timeout (the default is [`REQUEST_TIMEOUT`]).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The program's absolute path.
    pub fn program(&self) -> &Path {
        &self.program
    }

    fn session(
        &self,
        kind: Kind,
        role: Option<Role>,
        log: Option<PathBuf>,
        events: Option<EventSink>,
    ) -> Result<Session, AdapterError> {
        let mut s = Session::spawn(self, kind, role, log, events)?;
        let reply = s.request(
            "hello",
            json!({
                "protocol": PROTOCOL,
                "accepts": ACCEPTS,
                "session": kind.name(),
                "role": role.map(Role::name),
            }),
            self.timeout,
        )?;
        let accepted = ACCEPTS.join(", ");
        let described = match reply.get("protocol").and_then(Value::as_str) {
            Some(PROTOCOL) => Described::default(),
            Some(PROTOCOL_2) => parse_described(&reply).map_err(|e| {
                AdapterError::Environment(format!("{}: bad reply to hello: {e}", s.what))
            })?,
            Some(other) => {
                return Err(AdapterError::Environment(format!(
                    "{} speaks protocol {other}; this kit accepts {accepted}",
                    s.what
                )));
            }
            None => {
                return Err(AdapterError::Environment(format!(
                    "{} answered hello without naming its protocol (this kit accepts {accepted})",
                    s.what
                )));
            }
        };
        self.note_version(&reply);
        let _ = self.described.set(described);
        Ok(s)
    }

    /// The handover as the program describes it: from the first `hello`, else
    /// asked in a session of its own (the planner asks before any trial ran).
    /// The trait leaves no room for an error: a program whose `hello` fails
    /// gets the default, kept for the run (the planner asks once per trial,
    /// and the trials must agree with it), and each of its trials fails on
    /// its own `hello`.
    fn described(&self) -> Described {
        if let Some(d) = self.described.get() {
            return d.clone();
        }
        if let Err(e) = self.session(Kind::Launch, None, None, None) {
            eprintln!("cprkit: {e}");
        }
        self.described.get_or_init(Described::default).clone()
    }

    fn note_version(&self, reply: &Map<String, Value>) {
        if let Some(v) = reply.get("version").and_then(Value::as_str) {
            let _ = self.version.set(v.to_string());
        }
    }

    /// The guest probe, asked in `session` unless known already.
    fn probe_from(&self, s: &mut Session) -> Result<GuestProbe, AdapterError> {
        if let Some(p) = self.probe.get() {
            return Ok(p.clone());
        }
        let reply = s.request("guest-probe", json!({}), self.timeout)?;
        let p = parse_probe(&reply).map_err(|e| {
            AdapterError::Environment(format!("{}: bad reply to guest-probe: {e}", s.what))
        })?;
        let _ = self.probe.set(p.clone());
        Ok(p)
    }
}

/// Where `program` is: a path with a `/` (made absolute), else the first
/// executable of that name on `PATH`.
fn resolve(program: &str) -> Result<PathBuf, VmmError> {
    let env = |m: String| VmmError::Environment(format!("exec adapter `{program}`: {m}"));
    if program.is_empty() {
        return Err(VmmError::Environment(
            "exec: name the adapter program, `exec:PATH` or `exec:NAME` (on PATH)".into(),
        ));
    }
    if program.contains('/') {
        let p = Path::new(program);
        let abs = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| env(format!("current directory: {e}")))?
                .join(p)
        };
        return match std::fs::metadata(&abs) {
            Err(e) => Err(env(format!("{}: {e}", abs.display()))),
            Ok(m) if !m.is_file() || m.permissions().mode() & 0o111 == 0 => Err(env(format!(
                "{} is not an executable file (chmod +x?)",
                abs.display()
            ))),
            Ok(_) => Ok(abs),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|c| {
            std::fs::metadata(c).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| env("no executable of that name on PATH".into()))
}

fn path_str<'p>(what: &str, p: &'p Path) -> Result<&'p str, AdapterError> {
    p.to_str()
        .ok_or_else(|| AdapterError::Environment(format!("{what}: {} is not UTF-8", p.display())))
}

fn parse_probe(r: &Map<String, Value>) -> Result<GuestProbe, String> {
    let u64_of = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("`{k}` is not an unsigned integer"))
    };
    let v = Value::Object(r.clone());
    let name = r
        .get("ram_memfd_name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or("`ram_memfd_name` is not a non-empty string")?;
    let width = match u64_of(&v, "counter_width")? {
        w @ (4 | 8) => w as u8,
        w => return Err(format!("`counter_width` is {w}, not 4 or 8")),
    };
    let ring = match r.get("ring") {
        None | Some(Value::Null) => None,
        Some(ring) => {
            let entries = u64_of(ring, "entries")?;
            if entries == 0 {
                return Err("`ring.entries` is 0".into());
            }
            Some(RecordRing {
                offset: u64_of(ring, "offset")?,
                entries,
                check: u64_of(ring, "check")?,
            })
        }
    };
    Ok(GuestProbe {
        ram_memfd_name: name.to_string(),
        counter_offset: u64_of(&v, "counter_offset")?,
        counter_width: width,
        ring,
        device_io: match r.get("device_io") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("`device_io` is not a boolean".into()),
        },
    })
}

/// The `shape` and `steps` of a `/2` reply to `hello`; every field optional.
fn parse_described(r: &Map<String, Value>) -> Result<Described, String> {
    let mut d = Described::default();
    match r.get("shape") {
        None | Some(Value::Null) => {}
        Some(Value::Object(shape)) => {
            for key in shape.keys() {
                if !["channels", "receive", "cancel", "source_end", "outcome"]
                    .contains(&key.as_str())
                {
                    return Err(format!("`shape.{key}` is not a field of a shape"));
                }
            }
            let field = |k: &str, values: &[&str]| -> Result<Option<usize>, String> {
                match shape.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(v) => v
                        .as_str()
                        .and_then(|s| values.iter().position(|x| *x == s))
                        .map(Some)
                        .ok_or_else(|| {
                            format!(
                                "`shape.{k}` is {v}, not one of {}",
                                values
                                    .iter()
                                    .map(|x| format!("\"{x}\""))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        }),
                }
            };
            let sh = &mut d.shape;
            if let Some(i) = field("channels", &["cpr-and-main", "one"])? {
                sh.channels = [Channels::CprAndMain, Channels::One][i];
            }
            if let Some(i) = field("receive", &["listening", "monitor-request"])? {
                sh.receive = [Receive::Listening, Receive::MonitorRequest][i];
            }
            match shape.get("cancel") {
                None | Some(Value::Null) => {}
                Some(Value::Bool(b)) => sh.cancel = *b,
                Some(v) => return Err(format!("`shape.cancel` is {v}, not true or false")),
            }
            if let Some(i) = field("source_end", &["postmigrate", "exit-0"])? {
                sh.source_end = [SourceEnd::Postmigrate, SourceEnd::Exit0][i];
            }
            if let Some(i) = field("outcome", &["status-query", "events"])? {
                sh.outcome = [Outcome::StatusQuery, Outcome::Events][i];
            }
        }
        Some(v) => return Err(format!("`shape` is {v}, not an object")),
    }
    match r.get("steps") {
        None | Some(Value::Null) => {}
        Some(Value::Array(steps)) => {
            let mut out = Vec::new();
            for v in steps {
                let step = v
                    .as_str()
                    .and_then(|s| Step::ALL.into_iter().find(|st| st.name() == s))
                    .ok_or_else(|| {
                        format!(
                            "`steps` has {v}, not a step ({})",
                            Step::ALL.map(Step::name).join(", ")
                        )
                    })?;
                out.push(step);
            }
            d.steps = Some(out);
        }
        Some(v) => return Err(format!("`steps` is {v}, not an array of step names")),
    }
    Ok(d)
}

fn log_path(spec: &LaunchSpec, kind: Kind) -> PathBuf {
    spec.dir
        .join(format!("exec-{}-{}.log", spec.role.name(), kind.name()))
}

impl Adapter for ExecAdapter {
    fn name(&self) -> &str {
        &self.name
    }

    fn snapshot_dir(&self) -> String {
        self.snapshot_dir.clone()
    }

    /// As the program first named it (in a reply to `hello` or `connect`).
    fn version(&self) -> String {
        self.version
            .get()
            .cloned()
            .unwrap_or_else(|| "unknown".into())
    }

    /// As the program's reply to `hello` describes it (`cprkit-exec/2`);
    /// QEMU's cpr-transfer for a `/1` program.
    fn handover_shape(&self) -> HandoverShape {
        self.described().shape
    }

    /// The steps a `/2` program lists in its reply to `hello`; every step otherwise.
    fn has_step(&self, step: Step, capabilities: &[String]) -> bool {
        let _ = capabilities;
        self.described()
            .steps
            .is_none_or(|steps| steps.contains(&step))
    }

    fn command(&self, spec: &LaunchSpec) -> Result<Command, AdapterError> {
        let mut s = self.session(
            Kind::Launch,
            Some(spec.role),
            Some(log_path(spec, Kind::Launch)),
            None,
        )?;
        let incoming = match &spec.incoming {
            Some(i) => {
                json!({"main": path_str(&s.what, &i.main)?, "cpr": path_str(&s.what, &i.cpr)?})
            }
            None => Value::Null,
        };
        let req = json!({
            "role": spec.role.name(),
            "dir": path_str(&s.what, &spec.dir)?,
            "monitor": path_str(&s.what, &spec.monitor)?,
            "incoming": incoming,
            "shared_ram": spec.shared_ram,
            "vhost_user_blk": match &spec.vhost_user_blk {
                Some(p) => Value::String(path_str(&s.what, p)?.to_string()),
                None => Value::Null,
            },
        });
        let reply = s.request("command", req, self.timeout)?;
        let bad =
            |m: &str| AdapterError::Environment(format!("{}: bad reply to command: {m}", s.what));
        let argv: Vec<&str> = reply
            .get("argv")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_str).collect::<Option<_>>())
            .filter(|a: &Vec<&str>| !a.is_empty())
            .ok_or_else(|| bad("`argv` is not a non-empty array of strings"))?;
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]);
        match reply.get("env") {
            None | Some(Value::Null) => {}
            Some(Value::Object(env)) => {
                for (k, v) in env {
                    let v = v
                        .as_str()
                        .ok_or_else(|| bad(&format!("`env.{k}` is not a string")))?;
                    cmd.env(k, v);
                }
            }
            Some(_) => return Err(bad("`env` is not an object of strings")),
        }
        self.probe_from(&mut s)?;
        Ok(cmd)
    }

    /// Known from the first `command` (every trial asks for a command first);
    /// asked in a session of its own otherwise, its log on the kit's stderr.
    fn guest_probe(&self) -> GuestProbe {
        if let Some(p) = self.probe.get() {
            return p.clone();
        }
        let asked = self
            .session(Kind::Launch, None, None, None)
            .and_then(|mut s| self.probe_from(&mut s));
        match asked {
            Ok(p) => p,
            Err(e) => {
                // The trait leaves no room for an error: a probe that finds no
                // guest RAM makes the trial fail, naming this.
                eprintln!("cprkit: {e}");
                GuestProbe {
                    ram_memfd_name: format!("(no guest probe from {}: {e})", self.name),
                    counter_offset: 0,
                    counter_width: 8,
                    ring: None,
                    device_io: false,
                }
            }
        }
    }

    fn connect(
        &self,
        spec: &LaunchSpec,
        deadline: Instant,
        events: EventSink,
    ) -> Result<Box<dyn Monitor>, AdapterError> {
        // The program's start-up is not counted against the deadline: a short
        // deadline still gives one attempt to reach the VMM.
        let mut s = self.session(
            Kind::Monitor,
            Some(spec.role),
            Some(log_path(spec, Kind::Monitor)),
            Some(events),
        )?;
        let left = until(deadline);
        let req = json!({
            "role": spec.role.name(),
            "monitor": path_str(&s.what, &spec.monitor)?,
            "deadline_ms": left.as_millis() as u64,
        });
        let reply = s.request("connect", req, left + self.timeout)?;
        self.note_version(&reply);
        Ok(Box::new(ExecMonitor {
            session: s,
            timeout: self.timeout,
            receives: self.described().shape.receive == Receive::MonitorRequest,
        }))
    }
}

/// A VMM's monitor, through a monitor session of the exec adapter.
pub struct ExecMonitor {
    session: Session,
    timeout: Duration,
    /// Whether the program's shape says its target receives on request.
    receives: bool,
}

impl ExecMonitor {
    fn call(&mut self, request: &str, fields: Value) -> Result<Map<String, Value>, AdapterError> {
        self.session.request(request, fields, self.timeout)
    }

    fn bad(&self, request: &str, what: &str) -> AdapterError {
        AdapterError::Monitor(format!(
            "{}: bad reply to {request}: {what}",
            self.session.what
        ))
    }
}

impl Monitor for ExecMonitor {
    fn prepare_cpr(&mut self, capabilities: &[String]) -> Result<(), AdapterError> {
        self.call("prepare-cpr", json!({ "capabilities": capabilities }))
            .map(drop)
    }

    fn migrate(&mut self, req: &MigrateRequest) -> Result<(), AdapterError> {
        let what = &self.session.what;
        let fields = json!({
            "main": path_str(what, &req.main)?,
            "cpr": path_str(what, &req.cpr)?,
            "malformed": req.malformed.map(|b| b.name()),
        });
        self.call("migrate", fields).map(drop)
    }

    /// Sent only to a program whose shape says `"receive": "monitor-request"`
    /// (a `/1` program's never does); refused by the kit otherwise.
    fn receive(&mut self, incoming: &Incoming) -> Result<(), AdapterError> {
        if !self.receives {
            return Err(AdapterError::Refused {
                command: "receive".into(),
                desc: "this adapter's target listens from its start (its shape's `receive` is `listening`)".into(),
            });
        }
        let what = &self.session.what;
        let fields = json!({
            "main": path_str(what, &incoming.main)?,
            "cpr": path_str(what, &incoming.cpr)?,
        });
        self.call("receive", fields).map(drop)
    }

    fn cancel(&mut self) -> Result<(), AdapterError> {
        self.call("cancel", json!({})).map(drop)
    }

    fn stop(&mut self) -> Result<(), AdapterError> {
        self.call("stop", json!({})).map(drop)
    }

    fn cont(&mut self) -> Result<(), AdapterError> {
        self.call("cont", json!({})).map(drop)
    }

    fn runstate(&mut self) -> Result<String, AdapterError> {
        let r = self.call("runstate", json!({}))?;
        match r.get("runstate").and_then(Value::as_str) {
            Some(rs) => Ok(rs.to_string()),
            None => Err(self.bad("runstate", "`runstate` is not a string")),
        }
    }

    fn migration(&mut self) -> Result<MigrationInfo, AdapterError> {
        let r = self.call("migration", json!({}))?;
        let Some(status) = r.get("status").and_then(Value::as_str) else {
            return Err(self.bad("migration", "`status` is not a string"));
        };
        let error = match r.get("error") {
            None | Some(Value::Null) => None,
            Some(Value::String(e)) => Some(e.clone()),
            Some(_) => return Err(self.bad("migration", "`error` is neither a string nor null")),
        };
        Ok(MigrationInfo {
            status: status.to_string(),
            error,
        })
    }
}
#[cfg(test)]
mod tests;
