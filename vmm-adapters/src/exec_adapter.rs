//! The exec adapter: an adapter that is a separate program, written in any
//! language, speaking the `cprkit-exec/1` protocol on its stdin and stdout
//! (JSON lines; see `docs/exec-adapter-protocol.md`). `--vmm exec:PROGRAM`.
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
    Adapter, AdapterError, EventSink, GuestProbe, LaunchSpec, MigrateRequest, MigrationInfo,
    Monitor, RecordRing, Role, until,
};
use serde_json::{Map, Value, json};

use crate::VmmError;

mod session;

use session::{Kind, Session};

/// The protocol and version this kit speaks, exchanged in `hello`.
pub const PROTOCOL: &str = "cprkit-exec/1";
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
            json!({"protocol": PROTOCOL, "session": kind.name(), "role": role.map(Role::name)}),
            self.timeout,
        )?;
        match reply.get("protocol").and_then(Value::as_str) {
            Some(PROTOCOL) => {
                self.note_version(&reply);
                Ok(s)
            }
            Some(other) => Err(AdapterError::Environment(format!(
                "{} speaks protocol {other}; this kit speaks {PROTOCOL}",
                s.what
            ))),
            None => Err(AdapterError::Environment(format!(
                "{} answered hello without naming its protocol (this kit speaks {PROTOCOL})",
                s.what
            ))),
        }
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
        }))
    }
}

/// A VMM's monitor, through a monitor session of the exec adapter.
pub struct ExecMonitor {
    session: Session,
    timeout: Duration,
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
