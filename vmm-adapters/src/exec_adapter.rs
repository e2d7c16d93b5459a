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

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cprkit_harness::adapter::{
    Adapter, AdapterError, EventSink, GuestProbe, LaunchSpec, MigrateRequest, MigrationInfo,
    Monitor, RecordRing, Role, VmEvent, until,
};
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use serde_json::{Map, Value, json};

use crate::VmmError;

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
        let file = Path::new(program)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| program.to_string());
        if file.contains("::") {
            // It would end the VMM part of trial names (`VMM::CASE/POINT`).
            return Err(VmmError::Environment(format!(
                "exec adapter `{program}`: a program name must not contain `::`"
            )));
        }
        Ok(ExecAdapter {
            name: format!("exec:{file}"),
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
    fn prepare_cpr(&mut self) -> Result<(), AdapterError> {
        self.call("prepare-cpr", json!({})).map(drop)
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Launch,
    Monitor,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Launch => "launch",
            Kind::Monitor => "monitor",
        }
    }
}

/// Why the program's stdout can no longer be read.
#[derive(Debug, Clone)]
enum Closed {
    Eof,
    Garbage(String),
    Read(String),
}

#[derive(Default)]
struct State {
    /// The id of the request waiting for its reply.
    awaited: Option<u64>,
    reply: Option<Map<String, Value>>,
    closed: Option<Closed>,
    /// Set once the session is unusable; every later request fails with it.
    broken: Option<String>,
    /// The last lines of the program's stderr.
    tail: VecDeque<String>,
    reader_done: bool,
    stderr_done: bool,
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `done` holds or `deadline` passes; true if it holds.
    fn wait_for(&self, deadline: Instant, done: impl Fn(&State) -> bool) -> bool {
        let mut st = self.lock();
        while !done(&st) {
            let left = until(deadline);
            if left.is_zero() {
                return false;
            }
            st = self
                .cond
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// One run of the adapter program, from spawn to kill.
struct Session {
    /// `exec adapter PATH (monitor session for the source, pid N)`.
    what: String,
    kind: Kind,
    child: Child,
    pid: Pid,
    stdin: Option<ChildStdin>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    next_id: u64,
}

impl Session {
    fn spawn(
        adapter: &ExecAdapter,
        kind: Kind,
        role: Option<Role>,
        log: Option<PathBuf>,
        events: Option<EventSink>,
    ) -> Result<Session, AdapterError> {
        let mut cmd = Command::new(&adapter.program);
        // Tells the program where the kit is (a refvmm adapter can run the
        // kit's refvmm from it: see the example).
        if let Ok(exe) = std::env::current_exe() {
            cmd.env("CPRKIT_EXE", exe);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| {
                AdapterError::Environment(format!(
                    "cannot start the exec adapter {}: {e}",
                    adapter.program.display()
                ))
            })?;
        let pid = Pid::from_raw(child.id() as i32);
        let role = role
            .map(|r| format!(" for the {}", r.name()))
            .unwrap_or_default();
        let what = format!(
            "exec adapter {} ({} session{role}, pid {pid})",
            adapter.program.display(),
            kind.name()
        );
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            cond: Condvar::new(),
        });
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let mut s = Session {
            what,
            kind,
            stdin: child.stdin.take(),
            child,
            pid,
            shared,
            threads: Vec::new(),
            next_id: 1,
        };
        // Should a thread not start, dropping `s` kills the program.
        let sh = Arc::clone(&s.shared);
        let prefix = format!("[{} pid {pid}] ", adapter.name);
        let t = spawn_thread("exec-stderr", move || {
            pump_stderr(stderr, log, &prefix, &sh)
        })
        .map_err(|e| s.error(format!("cannot start a thread: {e}")))?;
        s.threads.push(t);
        let sh = Arc::clone(&s.shared);
        let t = spawn_thread("exec-reader", move || read_stdout(stdout, &sh, events))
            .map_err(|e| s.error(format!("cannot start a thread: {e}")))?;
        s.threads.push(t);
        Ok(s)
    }

    /// A failure of the session itself: the VMM's monitor is lost in a monitor
    /// session; the kit cannot start the VMM in a launch session.
    fn error(&self, msg: String) -> AdapterError {
        match self.kind {
            Kind::Launch => AdapterError::Environment(msg),
            Kind::Monitor => AdapterError::Monitor(msg),
        }
    }

    /// Sends one request and waits (at most `timeout`) for its reply; the
    /// events sent before the reply have been handed to the sink when it returns.
    fn request(
        &mut self,
        request: &str,
        fields: Value,
        timeout: Duration,
    ) -> Result<Map<String, Value>, AdapterError> {
        if let Some(why) = self.shared.lock().broken.clone() {
            return Err(self.error(format!("{why} (the session is over; {request} not sent)")));
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = Map::new();
        msg.insert("id".into(), id.into());
        msg.insert("request".into(), request.into());
        if let Value::Object(f) = fields {
            msg.extend(f);
        }
        let mut line = Value::Object(msg).to_string();
        line.push('\n');
        {
            let mut st = self.shared.lock();
            st.awaited = Some(id);
            st.reply = None;
        }
        let sent = match self.stdin.as_mut() {
            Some(w) => w.write_all(line.as_bytes()).and_then(|()| w.flush()),
            None => Err(io::Error::other("stdin closed")),
        };
        if let Err(e) = sent {
            // Most often the program has exited: say so rather than EPIPE.
            let ended = self
                .shared
                .wait_for(Instant::now() + EXIT_GRACE, |st| st.closed.is_some());
            let why = if ended {
                self.closed_text(request)
            } else {
                format!(
                    "{} does not read its stdin ({e}) when sent {request}",
                    self.what
                )
            };
            return Err(self.fail(why));
        }
        let deadline = Instant::now() + timeout;
        self.shared
            .wait_for(deadline, |st| st.reply.is_some() || st.closed.is_some());
        let reply = {
            let mut st = self.shared.lock();
            st.awaited = None;
            st.reply.take()
        };
        let Some(reply) = reply else {
            let why = if self.shared.lock().closed.is_some() {
                self.closed_text(request)
            } else {
                format!(
                    "{} did not reply to {request} within {} s; the kit killed it{}",
                    self.what,
                    timeout.as_secs_f32(),
                    self.kill_for_tail()
                )
            };
            return Err(self.fail(why));
        };
        match reply.get("ok") {
            Some(Value::Bool(true)) => Ok(reply),
            Some(Value::Bool(false)) => Err(self.refusal(request, &reply)),
            _ => Err(self.fail(format!(
                "{} replied to {request} without `\"ok\": true|false`: {}",
                self.what,
                snippet(&Value::Object(reply).to_string())
            ))),
        }
    }

    /// The error of an `"ok": false` reply.
    fn refusal(&self, request: &str, reply: &Map<String, Value>) -> AdapterError {
        let err = reply.get("error").unwrap_or(&Value::Null);
        let message = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("(no message)")
            .to_string();
        match (err.get("kind").and_then(Value::as_str), self.kind) {
            (Some("refused"), Kind::Monitor) => AdapterError::Refused {
                command: err
                    .get("command")
                    .and_then(Value::as_str)
                    .unwrap_or(request)
                    .to_string(),
                desc: message,
            },
            (Some("environment"), _) => {
                AdapterError::Environment(format!("{}: {request}: {message}", self.what))
            }
            (Some(kind @ ("refused" | "monitor")), _) => self.error(format!(
                "{}: {request} failed ({kind}): {message}",
                self.what
            )),
            (kind, _) => self.error(format!(
                "{}: {request} failed with an unknown error kind {}: {message}",
                self.what,
                kind.map_or("(none)".to_string(), |k| format!("`{k}`"))
            )),
        }
    }

    /// Marks the session unusable and gives its error.
    fn fail(&self, why: String) -> AdapterError {
        self.shared.lock().broken.get_or_insert_with(|| why.clone());
        self.error(why)
    }

    /// What the program did to end its stdout, waiting for `request`'s reply.
    fn closed_text(&self, request: &str) -> String {
        let closed = self.shared.lock().closed.clone();
        match closed {
            Some(Closed::Garbage(what)) => {
                format!(
                    "{} printed {what} (waiting for the reply to {request}); the kit killed it{}",
                    self.what,
                    self.kill_for_tail()
                )
            }
            Some(Closed::Read(e)) => format!(
                "{}: reading its stdout failed: {e} (waiting for the reply to {request})",
                self.what
            ),
            Some(Closed::Eof) | None => {
                let did = match self.exit_status(EXIT_GRACE) {
                    Some(how) => how,
                    None => "closed its stdout".to_string(),
                };
                // Its last words are in the stderr pipe until it closes.
                self.shared
                    .wait_for(Instant::now() + EXIT_GRACE, |st| st.stderr_done);
                format!(
                    "{} {did} before replying to {request}{}",
                    self.what,
                    self.stderr_tail()
                )
            }
        }
    }

    /// How the program ended, if it has within `grace` (it is left unreaped).
    fn exit_status(&self, grace: Duration) -> Option<String> {
        let deadline = Instant::now() + grace;
        loop {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
            match waitid(Id::Pid(self.pid), flags) {
                Ok(WaitStatus::Exited(_, code)) => return Some(format!("exited (status {code})")),
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    return Some(format!("was killed by {}", sig.as_str()));
                }
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return None,
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills the program, then quotes the end of its stderr (all of it by then).
    fn kill_for_tail(&self) -> String {
        let _ = killpg(self.pid, Signal::SIGKILL);
        self.shared
            .wait_for(Instant::now() + EXIT_GRACE, |st| st.stderr_done);
        self.stderr_tail()
    }

    fn stderr_tail(&self) -> String {
        let st = self.shared.lock();
        if st.tail.is_empty() {
            return String::new();
        }
        let lines: Vec<&str> = st.tail.iter().map(String::as_str).collect();
        format!("; its stderr ends with: {}", lines.join(" | "))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.stdin.take());
        // The leader is not reaped yet, so the group id is still this group's.
        let _ = killpg(self.pid, Signal::SIGKILL);
        let _ = self.child.wait();
        // The pipes reach EOF once the whole group is gone; a process that left
        // the group and keeps them open only costs a detached thread.
        if self.shared.wait_for(Instant::now() + JOIN_BOUND, |st| {
            st.reader_done && st.stderr_done
        }) {
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
    }
}

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(f)
}

/// At most 200 characters of `text`, for error messages.
fn snippet(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("`{}`...", &text[..i]),
        None => format!("`{text}`"),
    }
}

enum Line {
    Blank,
    Reply(u64, Map<String, Value>),
    Event(VmEvent),
    Garbage(String),
}

fn parse_line(line: &[u8]) -> Line {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return Line::Blank;
    }
    let map = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            return Line::Garbage(format!(
                "a JSON line that is not an object: {}",
                snippet(text)
            ));
        }
        Err(e) => {
            return Line::Garbage(format!("a line that is not JSON ({e}): {}", snippet(text)));
        }
    };
    if let Some(name) = map.get("event") {
        let Some(name) = name.as_str() else {
            return Line::Garbage(format!(
                "an event whose name is not a string: {}",
                snippet(text)
            ));
        };
        let status = map.get("status").and_then(Value::as_str).unwrap_or("?");
        return Line::Event(match name {
            "STOP" => VmEvent::Stop,
            "RESUME" => VmEvent::Resume,
            "MIGRATION" => VmEvent::Migration(status.to_string()),
            other => VmEvent::Other(other.to_string()),
        });
    }
    match map.get("id").and_then(Value::as_u64) {
        Some(id) => Line::Reply(id, map),
        None => Line::Garbage(format!(
            "a line that is neither a reply (no numeric `id`) nor an event (no `event`): {}",
            snippet(text)
        )),
    }
}

/// The reader thread: replies to the waiting request, events to the sink, in
/// the order they come; ends at EOF or at the first line off the protocol.
fn read_stdout(out: ChildStdout, shared: &Shared, events: Option<EventSink>) {
    let mut r = BufReader::new(out);
    let mut buf = Vec::new();
    let why = loop {
        buf.clear();
        match (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) => break Closed::Eof,
            Ok(_) if buf.last() != Some(&b'\n') => {
                break if buf.len() > MAX_LINE {
                    Closed::Garbage(format!("a line longer than {MAX_LINE} bytes"))
                } else {
                    Closed::Garbage(format!(
                        "an unfinished line and closed its stdout: {}",
                        snippet(&String::from_utf8_lossy(&buf))
                    ))
                };
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Closed::Read(e.to_string()),
        }
        match parse_line(&buf) {
            Line::Blank => {}
            Line::Event(ev) => {
                if let Some(sink) = &events {
                    sink(ev);
                }
            }
            Line::Reply(id, reply) => {
                let mut st = shared.lock();
                // A late reply (after its timeout) is dropped.
                if st.awaited == Some(id) {
                    st.reply = Some(reply);
                    shared.cond.notify_all();
                }
            }
            Line::Garbage(what) => break Closed::Garbage(what),
        }
    };
    let mut st = shared.lock();
    st.closed.get_or_insert(why);
    st.reader_done = true;
    shared.cond.notify_all();
}

/// The stderr thread: the program's log, into `log` (or the kit's stderr, each
/// line prefixed) up to [`LOG_LIMIT`] bytes, its last lines kept for errors.
fn pump_stderr(err: ChildStderr, log: Option<PathBuf>, prefix: &str, shared: &Shared) {
    let mut file = log.and_then(|p| File::options().create(true).append(true).open(p).ok());
    let mut written = 0u64;
    let mut r = BufReader::new(err);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut r).take(4096).read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
        if written < LOG_LIMIT {
            written += buf.len() as u64;
            let mut text = line.clone();
            if written >= LOG_LIMIT {
                text.push_str("\n[cprkit: the adapter's stderr goes on; the rest is not kept]");
            }
            match file.as_mut() {
                Some(f) => {
                    let _ = writeln!(f, "{text}");
                }
                None => eprintln!("{prefix}{text}"),
            }
        }
        if !line.is_empty() {
            let mut st = shared.lock();
            if st.tail.len() == TAIL_LINES {
                st.tail.pop_front();
            }
            st.tail.push_back(line);
        }
    }
    let mut st = shared.lock();
    st.stderr_done = true;
    shared.cond.notify_all();
}

#[cfg(test)]
mod tests {

    /// Writes an executable script without ever holding it open for writing in
    /// this process: a child writes it. (A file this process had open for writing
    /// could leak, between fork and exec, into a program another test thread
    /// starts, and executing the script would then fail with ETXTBSY.)
    fn write_script(path: &std::path::Path, text: &str) {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
            .arg(path)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("sh runs");
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())
            .expect("script written");
        assert!(
            child.wait().expect("sh ends").success(),
            "writing {}",
            path.display()
        );
    }

    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A scratch directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "cprkit-exec-unit-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }

        /// A `sh` adapter program; requests are numbered from 1 (`hello`).
        fn program(&self, name: &str, body: &str) -> ExecAdapter {
            let p = self.0.join(name);
            write_script(&p, &format!("#!/bin/sh\n{body}\n"));
            ExecAdapter::new(p.to_str().unwrap())
                .unwrap()
                .with_request_timeout(Duration::from_secs(2))
        }

        fn spec(&self) -> LaunchSpec {
            LaunchSpec {
                role: Role::Source,
                dir: self.0.clone(),
                monitor: self.0.join("qmp.sock"),
                incoming: None,
                shared_ram: true,
            }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const HELLO: &str = r#"read l; echo '{"id":1,"ok":true,"protocol":"cprkit-exec/1"}'"#;

    fn connect(a: &ExecAdapter, s: &Scratch) -> (Box<dyn Monitor>, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let m = a
            .connect(
                &s.spec(),
                Instant::now() + Duration::from_secs(2),
                Box::new(move |ev: VmEvent| sink.lock().unwrap().push(ev.label())),
            )
            .unwrap();
        (m, seen)
    }

    #[test]
    fn replies_events_and_refusals() {
        let s = Scratch::new();
        let a = s.program(
            "good",
            &format!(
                r#"{HELLO}
read l; echo '{{"id":2,"ok":true}}'
read l; echo '{{"event":"STOP"}}'; echo '{{"event":"MIGRATION","status":"setup"}}'
echo '{{"id":3,"ok":true,"runstate":"paused"}}'
read l; echo '{{"id":4,"ok":false,"error":{{"kind":"refused","message":"no way","command":"migrate"}}}}'
read l; echo '{{"id":5,"ok":true,"status":"failed","error":"it broke"}}'
read l; echo '{{"id":6,"ok":false,"error":{{"kind":"monitor","message":"lost it"}}}}'
cat >/dev/null"#
            ),
        );
        assert_eq!(a.name(), "exec:good");
        let (mut m, seen) = connect(&a, &s);
        assert_eq!(m.runstate().unwrap(), "paused");
        assert_eq!(*seen.lock().unwrap(), ["STOP", "MIGRATION setup"]);
        let req = MigrateRequest {
            main: "/m".into(),
            cpr: "/c".into(),
            malformed: None,
        };
        match m.migrate(&req) {
            Err(AdapterError::Refused { command, desc }) => {
                assert_eq!((command.as_str(), desc.as_str()), ("migrate", "no way"));
            }
            other => panic!("{other:?}"),
        }
        let info = m.migration().unwrap();
        assert_eq!(
            (info.status.as_str(), info.error.as_deref()),
            ("failed", Some("it broke"))
        );
        match m.stop() {
            Err(AdapterError::Monitor(e)) => assert!(e.contains("lost it"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(std::fs::read_dir(&s.0).unwrap().count() >= 1);
    }

    #[test]
    fn an_exit_mid_session_fails_at_once_naming_the_program() {
        let s = Scratch::new();
        let a = s.program(
            "quitter",
            &format!(
                r#"{HELLO}
read l; echo '{{"id":2,"ok":true}}'
read l; echo 'bye now' >&2; exit 7"#
            ),
        );
        let (mut m, _) = connect(&a, &s);
        let t = Instant::now();
        let e = m.runstate().unwrap_err().to_string();
        assert!(e.starts_with("monitor: exec adapter"), "{e}");
        assert!(
            e.contains("/quitter (monitor session for the source"),
            "{e}"
        );
        assert!(
            e.contains("exited (status 7) before replying to runstate"),
            "{e}"
        );
        assert!(e.contains("its stderr ends with: bye now"), "{e}");
        let e2 = m.cont().unwrap_err().to_string();
        assert!(
            e2.contains("exited (status 7)") && e2.contains("cont not sent"),
            "{e2}"
        );
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[test]
    fn garbage_and_silence_end_the_session() {
        let s = Scratch::new();
        let a = s.program(
            "garbage",
            &format!(
                r#"{HELLO}
read l; echo '{{"id":2,"ok":true}}'
read l; echo 'Traceback (most recent call last):'; sleep 30"#
            ),
        );
        let (mut m, _) = connect(&a, &s);
        let e = m.stop().unwrap_err().to_string();
        assert!(e.contains("printed a line that is not JSON"), "{e}");
        assert!(e.contains("`Traceback (most recent call last):`"), "{e}");

        let a = s.program(
            "silent",
            &format!(
                r#"{HELLO}
read l; echo '{{"id":2,"ok":true}}'
sleep 30"#
            ),
        );
        let (mut m, _) = connect(&a, &s);
        let t = Instant::now();
        let e = m.runstate().unwrap_err().to_string();
        assert!(e.contains("did not reply to runstate within 2 s"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(3));
        // Later calls fail at once.
        let t = Instant::now();
        assert!(m.runstate().is_err());
        assert!(t.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn hello_checks_the_version_and_launch_errors_are_environment_errors() {
        let s = Scratch::new();
        let a = s.program(
            "v2",
            r#"read l; echo '{"id":1,"ok":true,"protocol":"cprkit-exec/2"}'; cat >/dev/null"#,
        );
        match a.command(&s.spec()) {
            Err(AdapterError::Environment(e)) => {
                assert!(
                    e.contains("speaks protocol cprkit-exec/2; this kit speaks cprkit-exec/1"),
                    "{e}"
                );
            }
            other => panic!("{other:?}"),
        }
        let a = s.program(
            "nocmd",
            &format!(
                r#"{HELLO}
read l; echo '{{"id":2,"ok":false,"error":{{"kind":"environment","message":"no VMM here"}}}}'"#
            ),
        );
        match a.command(&s.spec()) {
            Err(AdapterError::Environment(e)) => {
                assert!(e.ends_with("command: no VMM here"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn command_and_probe() {
        let s = Scratch::new();
        let a = s.program(
            "launcher",
            &format!(
                r#"{HELLO}
read l; echo '{{"id":2,"ok":true,"argv":["/bin/echo","a b"],"env":{{"X":"1"}}}}'
read l; echo '{{"id":3,"ok":true,"ram_memfd_name":"ram","counter_offset":4096,"counter_width":4,"ring":{{"offset":8192,"entries":256,"check":6510615555426900570}}}}'"#
            ),
        );
        let cmd = a.command(&s.spec()).unwrap();
        assert_eq!(cmd.get_program(), "/bin/echo");
        assert_eq!(cmd.get_args().collect::<Vec<_>>(), ["a b"]);
        assert_eq!(a.guest_probe().counter_width, 4);
        assert_eq!(a.guest_probe().ring.unwrap().check, 0x5A5A_5A5A_5A5A_5A5A);
    }

    #[test]
    fn programs_are_found_or_named() {
        assert!(ExecAdapter::new("sh").unwrap().program().is_absolute());
        let e = ExecAdapter::new("./no/such/adapter")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("exec adapter `./no/such/adapter`"), "{e}");
        let e = ExecAdapter::new("no-such-adapter-anywhere")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no executable of that name on PATH"), "{e}");
    }
}
