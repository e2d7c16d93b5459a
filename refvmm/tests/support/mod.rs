//! Test support: real refvmm processes, a plain QMP client over a UnixStream,
//! and observation through /proc (LISTEN sockets, memfd mappings, guest RAM).
//!
//! How a test gets a refvmm process: if `REFVMM_BIN` is set, that executable
//! (e.g. the root package's `target/debug/refvmm`); otherwise the test binary
//! re-executes itself, running only its `refvmm_child` test, which calls
//! `refvmm::run` with the arguments passed in `REFVMM_CHILD_ARGS` (the
//! rusty-fork pattern). The second way keeps `cargo test -p refvmm`
//! self-contained: it needs no nested cargo build and does not depend on the
//! rest of the workspace compiling; the child runs exactly the library code
//! the `refvmm` binary runs (its main.rs only calls `refvmm::main`).

#![allow(dead_code)]

pub mod peers;

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cprkit_qmp::wire::{ErrorBody, Event, ServerMessage};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// The environment variable carrying a child's arguments (JSON array).
pub const CHILD_ENV: &str = "REFVMM_CHILD_ARGS";

/// Runs refvmm when this test process is a re-executed child.
pub fn child_main() {
    if let Ok(args) = std::env::var(CHILD_ENV) {
        let args: Vec<String> = serde_json::from_str(&args).expect("child arguments");
        std::process::exit(refvmm::run(args));
    }
}

/// A command that runs refvmm with `args`.
pub fn refvmm_command(args: &[String]) -> Command {
    match std::env::var_os("REFVMM_BIN") {
        Some(bin) => {
            let mut c = Command::new(bin);
            c.args(args);
            c
        }
        None => {
            let mut c = Command::new(std::env::current_exe().expect("current exe"));
            c.args([
                "refvmm_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(CHILD_ENV, serde_json::to_string(args).unwrap());
            c
        }
    }
}

/// A refvmm process; killed (SIGKILL) and reaped when dropped. If the test
/// is failing, its stderr log is printed.
pub struct Vmm {
    pub name: String,
    pub child: Child,
    pub qmp: PathBuf,
    pub log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Vmm {
    /// Starts refvmm named `name` in `dir` with QMP at `dir/NAME-qmp.sock`.
    pub fn spawn(dir: &Path, name: &str, extra: &[&str]) -> Self {
        let qmp = dir.join(format!("{name}-qmp.sock"));
        let log = dir.join(format!("{name}.log"));
        let mut args = vec!["--qmp".to_string(), qmp.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = refvmm_command(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("spawn refvmm");
        Self {
            name: name.into(),
            child,
            qmp,
            log,
            exited: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig).expect("kill");
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                self.exited = Some(s);
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Connects a QMP client (retrying while the socket does not exist yet).
    pub fn qmp(&self) -> Qmp {
        Qmp::connect(&self.qmp, Duration::from_secs(10))
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!(
                "---- {} log ----\n{log}---- end of {} log ----",
                self.name, self.name
            );
        }
    }
}

/// A QMP client: commands, replies, and every event seen, in order.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    /// Every event received so far.
    pub events: Vec<Event>,
}

impl Qmp {
    /// Connects, reads the greeting and negotiates capabilities.
    pub fn connect(path: &Path, timeout: Duration) -> Self {
        let mut q = Self::connect_raw(path, timeout);
        let greeting = q.read_line(Duration::from_secs(5)).expect("greeting");
        let g: Value = serde_json::from_str(&greeting).unwrap();
        assert_eq!(g["QMP"]["version"]["package"], "refvmm", "{greeting}");
        q.execute("qmp_capabilities", json!({}))
            .expect("qmp_capabilities");
        q
    }

    /// Connects without reading anything.
    pub fn connect_raw(path: &Path, timeout: Duration) -> Self {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e)
                    if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused)
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => panic!("connect {}: {e}", path.display()),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        Self {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
            next_id: 0,
            events: Vec::new(),
        }
    }

    /// Reads one line, or None on timeout. Panics on EOF.
    pub fn read_line(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut line = String::new();
        loop {
            match self.reader.read_line(&mut line) {
                Ok(0) => panic!("QMP connection closed"),
                Ok(_) if line.ends_with('\n') => return Some(line),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if Instant::now() > deadline {
                        return None;
                    }
                }
                Err(e) => panic!("QMP read: {e}"),
            }
        }
    }

    /// Sends a raw line.
    pub fn send_line(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    /// Reads one server message (an event is also recorded).
    pub fn next_message(&mut self, timeout: Duration) -> Option<ServerMessage> {
        let line = self.read_line(timeout)?;
        let msg = ServerMessage::parse(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if let ServerMessage::Event(ev) = &msg {
            self.events.push(ev.clone());
        }
        Some(msg)
    }

    /// Executes a command and returns its reply.
    pub fn execute(&mut self, name: &str, args: Value) -> Result<Value, ErrorBody> {
        self.next_id += 1;
        let id = json!(format!("t{}", self.next_id));
        let cmd = json!({"execute": name, "arguments": args, "id": id});
        self.send_line(&cmd.to_string());
        loop {
            match self.next_message(Duration::from_secs(10)) {
                None => panic!("no reply to {name}"),
                Some(ServerMessage::Return { value, id: Some(i) }) if i == id => return Ok(value),
                Some(ServerMessage::Error { error, id: Some(i) }) if i == id => return Err(error),
                Some(ServerMessage::Event(_)) => {}
                Some(other) => panic!("unexpected reply {other:?}"),
            }
        }
    }

    /// The runstate.
    pub fn status(&mut self) -> String {
        let v = self.execute("query-status", json!({})).unwrap();
        assert_eq!(v["running"], v["status"] == "running", "{v}");
        v["status"].as_str().unwrap().to_string()
    }

    /// Turns on migration events and cpr-transfer mode.
    pub fn prepare_cpr(&mut self) {
        self.execute(
            "migrate-set-capabilities",
            json!({"capabilities": [{"capability": "events", "state": true}]}),
        )
        .unwrap();
        self.execute("migrate-set-parameters", json!({"mode": "cpr-transfer"}))
            .unwrap();
        assert_eq!(
            self.execute("query-migrate-parameters", json!({})).unwrap()["mode"],
            "cpr-transfer"
        );
    }

    /// Waits for a MIGRATION event with a terminal status and returns it.
    pub fn wait_migration_end(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self
                .migration_statuses()
                .into_iter()
                .find(|s| matches!(s.as_str(), "completed" | "failed" | "cancelled"))
            {
                return s;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "migration did not end; events {:?}",
                self.event_names()
            );
            self.next_message(left.min(Duration::from_millis(100)));
        }
    }

    /// Polls query-status until it is `want`.
    pub fn wait_status(&mut self, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status();
            if s == want {
                return;
            }
            assert!(Instant::now() < deadline, "status {s}, want {want}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The statuses of the MIGRATION events seen so far.
    pub fn migration_statuses(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e.event == "MIGRATION")
            .map(|e| e.data["status"].as_str().unwrap().to_string())
            .collect()
    }

    /// Event names, MIGRATION events as `MIGRATION:status`.
    pub fn event_names(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|e| match e.event.as_str() {
                "MIGRATION" => format!("MIGRATION:{}", e.data["status"].as_str().unwrap()),
                other => other.to_string(),
            })
            .collect()
    }

    /// Drains the events that arrive within `d`.
    pub fn drain_events(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            self.next_message(left);
        }
    }
}

/// The `migrate` arguments for a cpr-transfer over these two UNIX sockets.
pub fn migrate_args(main: &Path, cpr: &Path) -> Value {
    json!({"channels": [
        {"channel-type": "main", "addr": {"transport": "socket", "type": "unix", "path": main}},
        {"channel-type": "cpr", "addr": {"transport": "socket", "type": "unix", "path": cpr}},
    ]})
}

/// Waits until a socket is LISTENing at `path`, from /proc/net/unix (never
/// by connecting: a probe connection on the cpr socket would be taken as
/// the source's).
pub fn wait_listening(path: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let want = path.to_str().unwrap();
    loop {
        let table = std::fs::read_to_string("/proc/net/unix").unwrap();
        let listening = table.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // Num RefCount Protocol Flags Type St Inode Path; __SO_ACCEPTCON.
            f.len() >= 8 && f[3] == "00010000" && f[7] == want
        });
        if listening {
            return;
        }
        assert!(Instant::now() < deadline, "nothing listens on {want}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

const RAM_LINK: &str = "/memfd:cprkit-ram (deleted)";

/// The /proc path of the process's guest RAM memfd.
pub fn ram_fd_path(pid: i32) -> PathBuf {
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let path = entry.unwrap().path();
        if std::fs::read_link(&path).is_ok_and(|l| l.to_str() == Some(RAM_LINK)) {
            return path;
        }
    }
    panic!("process {pid} has no {RAM_LINK} fd");
}

/// The inode of the process's guest RAM memfd fd.
pub fn ram_fd_inode(pid: i32) -> u64 {
    std::fs::metadata(ram_fd_path(pid)).unwrap().ino()
}

/// The inodes of the `cprkit-ram` memfds the process maps.
pub fn mapped_ram_inodes(pid: i32) -> Vec<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut v: Vec<u64> = maps
        .lines()
        .filter(|l| l.ends_with(RAM_LINK))
        .map(|l| l.split_whitespace().nth(4).unwrap().parse().unwrap())
        .collect();
    v.dedup();
    v
}

/// The guest counter, read from the process's RAM memfd.
pub fn read_counter(pid: i32) -> u64 {
    let f = File::open(ram_fd_path(pid)).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, refvmm::COUNTER_OFFSET as u64)
        .unwrap();
    u64::from_le_bytes(b)
}

/// Waits until the guest counter of `pid` exceeds `than`.
pub fn wait_counter_above(pid: i32, than: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let c = read_counter(pid);
        if c > than {
            return c;
        }
        assert!(Instant::now() < deadline, "counter stuck at {c}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
