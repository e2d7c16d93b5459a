//! The kit interrupted, with real processes: SIGINT and SIGTERM in the middle
//! of `cprkit run` (a summary, exit 130 or 143, nothing left), a second SIGINT
//! while a trial hangs, a SIGKILL (the exec adapter program dies with the kit,
//! and the next run removes the run directory left behind), and the run
//! directories of kits gone or alive.
//!
//! Each kit gets a private TMPDIR: its run directory is made there, its VMMs
//! and adapter programs inherit it (which is how the tests find them), and the
//! tests do not see each other's directories.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cprkit_harness::runowner::{OWNER_FILE, Owner, RUN_PREFIX};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A running `cprkit`: its stderr line by line, its stdout at the end.
struct Kit {
    pid: i32,
    exited: Receiver<ExitStatus>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    stdout: JoinHandle<String>,
}

impl Kit {
    fn start(args: &[&str], tmp: &Path) -> Kit {
        let mut child: Child = Command::new(env!("CARGO_BIN_EXE_cprkit"))
            .args(args)
            .env(cprkit_test_support::HOST_ENV, env!("CARGO_BIN_EXE_cprkit"))
            .env("TMPDIR", tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cprkit starts");
        let pid = child.id() as i32;
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        let all = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                all.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        let (tx, exited) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait().expect("wait for cprkit"));
        });
        Kit {
            pid,
            exited,
            lines,
            stderr,
            stdout,
        }
    }

    /// Waits (bounded) for a stderr line that `want` accepts.
    fn wait_line(&self, want: impl Fn(&str) -> bool, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if want(&l) => return l,
                Ok(_) => {}
                Err(e) => {
                    let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
                    panic!(
                        "no such line on stderr within {within:?} ({e}); stderr:\n{}",
                        self.stderr.lock().unwrap()
                    );
                }
            }
        }
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid), sig).expect("signal cprkit");
    }

    /// Waits (bounded) for the exit; its status, stdout and stderr.
    fn finish(self, within: Duration) -> (ExitStatus, String, String) {
        let status = match self.exited.recv_timeout(within) {
            Ok(s) => s,
            Err(_) => {
                let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
                panic!(
                    "cprkit did not exit within {within:?}; stderr:\n{}",
                    self.stderr.lock().unwrap()
                );
            }
        };
        let stdout = self.stdout.join().unwrap();
        // Its stderr reaches EOF once the kit and its children are gone.
        let mut stderr = self.stderr.lock().unwrap().clone();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            stderr.push_str(&format!("{l}\n"));
        }
        (status, stdout, stderr)
    }
}

/// The run directories in `tmp`.
fn run_dirs(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(RUN_PREFIX))
        .map(|e| e.path())
        .collect()
}

/// The live processes started with TMPDIR=`tmp` (the kit's VMMs, device
/// daemons, adapter programs), as `pid (comm)`.
fn processes_of(tmp: &Path) -> Vec<String> {
    let want = format!("TMPDIR={}", tmp.display());
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        let ours = env.split(|b| *b == 0).any(|v| v == want.as_bytes());
        if ours && alive(pid) {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            found.push(format!("{pid} ({})", comm.trim()));
        }
    }
    found
}

/// Whether `pid` runs (neither gone nor a zombie).
fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .map(|x| x.1.trim_start().chars().next());
    !matches!(state, Some(Some('Z' | 'X')) | None)
}

/// Waits (bounded) until `pid` no longer runs: another process's end can only
/// be polled. One still there is killed, so that a failing test leaves nothing.
fn gone_within(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while alive(pid) {
        if Instant::now() >= deadline {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// `interrupted by SIG: N of M trials ran, ...`: (N, M).
fn ran_of(stdout: &str, sig: &str) -> (usize, usize) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("interrupted by {sig}: ")))
        .unwrap_or_else(|| panic!("no `interrupted by {sig}` line:\n{stdout}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    (words[3].parse().unwrap(), words[5].parse().unwrap())
}

/// Runs the memory cases on refvmm, one trial at a time, signals the kit once
/// the first trial has ended, and checks what it printed and left.
fn interrupt_a_run(sig: Signal, code: i32) {
    let tmp = tempfile::tempdir().unwrap();
    let kit = Kit::start(&["run", "--case", "memory-*", "--jobs", "1"], tmp.path());
    kit.wait_line(|l| l.starts_with("[  1/"), Duration::from_secs(60));
    kit.signal(sig);
    let (status, stdout, stderr) = kit.finish(Duration::from_secs(60));
    let all = format!("{stdout}\n{stderr}");
    assert_eq!(status.code(), Some(code), "{all}");
    let (ran, total) = ran_of(&stdout, sig.as_str());
    assert!(ran >= 1 && ran < total, "{ran} of {total}:\n{all}");
    // The summary counts the trials that did not run as such.
    assert!(
        stdout.contains(&format!(
            "{} not run\ninterrupted by {}",
            total - ran,
            sig.as_str()
        )),
        "{all}"
    );
    assert!(
        stdout.contains(&format!("interrupted by {}: not started", sig.as_str())),
        "{all}"
    );
    assert!(
        stderr.contains(&format!("cprkit: {}: stopping", sig.as_str())),
        "{all}"
    );
    assert!(stderr.contains("leak check: nothing left behind"), "{all}");
    assert_eq!(run_dirs(tmp.path()), Vec::<PathBuf>::new(), "{all}");
    assert_eq!(processes_of(tmp.path()), Vec::<String>::new(), "{all}");
}

#[test]
fn sigint_mid_run_prints_the_summary_exits_130_and_leaves_nothing() {
    interrupt_a_run(Signal::SIGINT, 130);
}

#[test]
fn sigterm_mid_run_prints_the_summary_exits_143_and_leaves_nothing() {
    interrupt_a_run(Signal::SIGTERM, 143);
}

#[test]
fn the_run_directory_of_a_gone_kit_is_removed_and_a_live_ones_kept() {
    let tmp = tempfile::tempdir().unwrap();
    // A kit that is gone: a process that ran and was reaped.
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let dead = Owner::of_pid(child.id() as i32).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let gone = tmp.path().join(format!("{RUN_PREFIX}{}-Gone01", dead.pid));
    std::fs::create_dir_all(gone.join("t0AbCd")).unwrap();
    std::fs::write(gone.join("t0AbCd/source.log"), "a log").unwrap();
    dead.write(&gone).unwrap();
    // A kit that is alive: this test.
    let me = Owner::me().unwrap();
    let live = tmp.path().join(format!("{RUN_PREFIX}{}-Live01", me.pid));
    std::fs::create_dir(&live).unwrap();
    me.write(&live).unwrap();

    let kit = Kit::start(
        &["run", "--case", "refvmm::memory-running/no-fault"],
        tmp.path(),
    );
    let (status, stdout, stderr) = kit.finish(Duration::from_secs(60));
    let all = format!("{stdout}\n{stderr}");
    assert_eq!(status.code(), Some(0), "{all}");
    let said = format!(
        "cprkit: removed stale run directory {} of pid {} (gone)",
        gone.display(),
        dead.pid
    );
    assert!(stderr.contains(&said), "{all}");
    assert!(!gone.exists(), "{all}");
    assert!(
        live.join(OWNER_FILE).exists(),
        "a live kit's directory was removed"
    );
    assert!(!stderr.contains(&live.display().to_string()), "{all}");
    assert_eq!(run_dirs(tmp.path()), vec![live], "{all}");
}

/// An exec adapter program that writes its pid to a FIFO, then never answers,
/// never reads its stdin again (so never sees its end) and stays. The kit's
/// own hello before planning (to learn the handover shape, `"role":null`) it
/// leaves at once, so the program that hangs is a trial's.
fn hanging_adapter(dir: &Path) -> (PathBuf, Receiver<i32>) {
    let fifo = dir.join("pid.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let script = dir.join("hang.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nread -r hello\ncase \"$hello\" in *'\"role\":null'*) exit 0 ;; esac\necho $$ > '{}'\nexec sleep 600\n",
            fifo.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (tx, rx) = mpsc::channel();
    // Opening a FIFO waits for its writer: a thread, read through a channel.
    std::thread::spawn(move || {
        let mut line = String::new();
        if let Ok(f) = std::fs::File::open(&fifo) {
            let _ = BufReader::new(f).read_line(&mut line);
        }
        if let Ok(pid) = line.trim().parse() {
            let _ = tx.send(pid);
        }
    });
    (script, rx)
}

#[test]
fn an_exec_adapter_that_ignores_eof_dies_with_a_sigkilled_kit_whose_directory_the_next_run_removes()
{
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let (script, pids) = hanging_adapter(scratch.path());
    let vmm = format!("exec:{}", script.display());
    let kit = Kit::start(
        &[
            "run",
            "--vmm",
            &vmm,
            "--case",
            "memory-running",
            "--jobs",
            "1",
        ],
        tmp.path(),
    );
    let kit_pid = kit.pid;
    let adapter = pids
        .recv_timeout(Duration::from_secs(60))
        .expect("the adapter program started");
    assert!(alive(adapter));
    kit.signal(Signal::SIGKILL);
    let (status, _, _) = kit.finish(Duration::from_secs(30));
    assert_eq!(status.signal(), Some(libc_sigkill()), "the kit was killed");
    assert!(
        gone_within(adapter, Duration::from_secs(10)),
        "the adapter program (pid {adapter}) outlived the kit"
    );
    assert_eq!(processes_of(tmp.path()), Vec::<String>::new());

    // The killed kit could not remove its run directory: the next run does.
    let left = run_dirs(tmp.path());
    assert_eq!(left.len(), 1, "{left:?}");
    let kit = Kit::start(
        &["run", "--case", "refvmm::memory-running/no-fault"],
        tmp.path(),
    );
    let (status, stdout, stderr) = kit.finish(Duration::from_secs(60));
    let all = format!("{stdout}\n{stderr}");
    assert_eq!(status.code(), Some(0), "{all}");
    let said = format!(
        "cprkit: removed stale run directory {} of pid {kit_pid} (gone)",
        left[0].display()
    );
    assert!(stderr.contains(&said), "{all}");
    assert_eq!(run_dirs(tmp.path()), Vec::<PathBuf>::new(), "{all}");
}

#[test]
fn a_second_sigint_quits_at_once_while_a_trial_hangs() {
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let (script, pids) = hanging_adapter(scratch.path());
    let vmm = format!("exec:{}", script.display());
    let kit = Kit::start(
        &[
            "run",
            "--vmm",
            &vmm,
            "--case",
            "memory-running",
            "--jobs",
            "1",
        ],
        tmp.path(),
    );
    // A trial is in flight: its adapter program hangs on `hello` (10 s).
    let adapter = pids
        .recv_timeout(Duration::from_secs(60))
        .expect("the adapter program started");
    kit.signal(Signal::SIGINT);
    kit.wait_line(
        |l| l.starts_with("cprkit: SIGINT: stopping"),
        Duration::from_secs(30),
    );
    let again = Instant::now();
    kit.signal(Signal::SIGINT);
    let (status, stdout, stderr) = kit.finish(Duration::from_secs(30));
    let all = format!("{stdout}\n{stderr}");
    assert_eq!(status.code(), Some(130), "{all}");
    assert!(
        again.elapsed() < Duration::from_secs(5),
        "{:?} after the second SIGINT:\n{all}",
        again.elapsed()
    );
    assert!(
        stdout.contains("interrupted by SIGINT: 0 of 28 trials ran, 1 abandoned in flight (a second signal), 27 not started"),
        "{all}"
    );
    assert!(stderr.contains("leak check: not done"), "{all}");
    assert_eq!(run_dirs(tmp.path()), Vec::<PathBuf>::new(), "{all}");
    assert!(
        gone_within(adapter, Duration::from_secs(10)),
        "the adapter program (pid {adapter}) outlived the kit"
    );
}

fn libc_sigkill() -> i32 {
    Signal::SIGKILL as i32
}
