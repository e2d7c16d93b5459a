//! One session of an exec adapter program: the process, its stdin/stdout
//! JSON lines, the reader and stderr threads, requests with timeouts, and its
//! end (kill the process group, reap).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cprkit_harness::adapter::{AdapterError, EventSink, Role, VmEvent, until};
use cprkit_harness::process::{dies_with_spawner, spawn_armed};
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use serde_json::{Map, Value};

use super::{EXIT_GRACE, ExecAdapter, JOIN_BOUND, LOG_LIMIT, MAX_LINE, TAIL_LINES};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Launch,
    Monitor,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Launch => "launch",
            Kind::Monitor => "monitor",
        }
    }
}

/// Why the program's stdout can no longer be read.
#[derive(Debug, Clone)]
pub(super) enum Closed {
    Eof,
    Garbage(String),
    Read(String),
}

#[derive(Default)]
pub(super) struct State {
    /// The id of the request waiting for its reply.
    pub(super) awaited: Option<u64>,
    pub(super) reply: Option<Map<String, Value>>,
    pub(super) closed: Option<Closed>,
    /// Set once the session is unusable; every later request fails with it.
    pub(super) broken: Option<String>,
    /// The last lines of the program's stderr.
    pub(super) tail: VecDeque<String>,
    pub(super) reader_done: bool,
    pub(super) stderr_done: bool,
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    pub(super) cond: Condvar,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `done` holds or `deadline` passes; true if it holds.
    pub(super) fn wait_for(&self, deadline: Instant, done: impl Fn(&State) -> bool) -> bool {
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
pub(super) struct Session {
    /// `exec adapter PATH (monitor session for the source, pid N)`.
    pub(super) what: String,
    pub(super) kind: Kind,
    pub(super) child: Child,
    pub(super) pid: Pid,
    pub(super) stdin: Option<ChildStdin>,
    pub(super) shared: Arc<Shared>,
    pub(super) threads: Vec<JoinHandle<()>>,
    pub(super) next_id: u64,
}

impl Session {
    pub(super) fn spawn(
        adapter: &ExecAdapter,
        kind: Kind,
        role: Option<Role>,
        log: Option<PathBuf>,
        events: Option<EventSink>,
    ) -> Result<Session, AdapterError> {
        let mut cmd = Command::new(&adapter.program);
        // Tells the program where the kit is: the program hosting the kit's
        // helpers (a refvmm adapter can run the kit's refvmm from it, as
        // `$CPRKIT_EXE __refvmm`: see the example).
        if let Some(exe) = cprkit_harness::launcher::host().or_else(|| std::env::current_exe().ok())
        {
            cmd.env("CPRKIT_EXE", exe);
        }
        // Its own process group (killed whole at the session's end), and
        // killed with the kit's thread that started it, as the VMMs are: a
        // program that ignores the end of its stdin must not outlive a kit
        // killed with SIGKILL. The thread that starts a session outlives it (a
        // trial's thread, or the caller of `guest_probe`).
        let mut cmd = dies_with_spawner(cmd);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = spawn_armed(&mut cmd).map_err(|e| {
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
    pub(super) fn error(&self, msg: String) -> AdapterError {
        match self.kind {
            Kind::Launch => AdapterError::Environment(msg),
            Kind::Monitor => AdapterError::Monitor(msg),
        }
    }

    /// Sends one request and waits (at most `timeout`) for its reply; the
    /// events sent before the reply have been handed to the sink when it returns.
    pub(super) fn request(
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
    pub(super) fn refusal(&self, request: &str, reply: &Map<String, Value>) -> AdapterError {
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
    pub(super) fn fail(&self, why: String) -> AdapterError {
        self.shared.lock().broken.get_or_insert_with(|| why.clone());
        self.error(why)
    }

    /// What the program did to end its stdout, waiting for `request`'s reply.
    pub(super) fn closed_text(&self, request: &str) -> String {
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
    pub(super) fn exit_status(&self, grace: Duration) -> Option<String> {
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
    pub(super) fn kill_for_tail(&self) -> String {
        let _ = killpg(self.pid, Signal::SIGKILL);
        self.shared
            .wait_for(Instant::now() + EXIT_GRACE, |st| st.stderr_done);
        self.stderr_tail()
    }

    pub(super) fn stderr_tail(&self) -> String {
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

pub(super) fn spawn_thread(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(f)
}

/// At most 200 characters of `text`, for error messages.
pub(super) fn snippet(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("`{}`...", &text[..i]),
        None => format!("`{text}`"),
    }
}

pub(super) enum Line {
    Blank,
    Reply(u64, Map<String, Value>),
    Event(VmEvent),
    Garbage(String),
}

pub(super) fn parse_line(line: &[u8]) -> Line {
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
pub(super) fn read_stdout(out: ChildStdout, shared: &Shared, events: Option<EventSink>) {
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
pub(super) fn pump_stderr(err: ChildStderr, log: Option<PathBuf>, prefix: &str, shared: &Shared) {
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
