//! Supervision of the VMM processes a trial starts: each in its own process
//! group, its output captured in the trial's log, signals sent to the whole
//! group, its exit seen as it happens (a watcher thread), and always reaped.
//!
//! The watcher waits with `WNOWAIT`, so the exited process stays a zombie (and
//! its pid cannot be reused) until [`VmmProcess`] is dropped and reaps it; a
//! signal sent in between can never reach another process.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

use crate::leaks;
use crate::procinfo::{ExitInfo, proc_state};
use crate::timeline::{Actor, Timeline, What};

/// Has the child killed if the kit's thread that spawned it goes away
/// without cleaning up (a kit killed with SIGKILL; a Ctrl-C reaches the kit's
/// process group only, since each VMM has its own; a killed test runner):
/// PR_SET_PDEATHSIG, then a check that the parent is still there (it may
/// have died before the prctl). The thread must outlive the child: a
/// trial's. Spawn the command with [`spawn_armed`].
///
/// Where util-linux's `setpriv` and a `/bin/sh` are installed (every
/// Debian), the command runs as `setpriv --pdeathsig KILL -- /bin/sh -c
/// CHECK`, where `sh` checks its parent and execs the program, all in the
/// same process: the kit spawns it without a `fork` of its own (the
/// standard library's `posix_spawn`), which in a kit running many trials on
/// many threads costs more than the trial's own work (the copy of its page
/// tables, then a copy-on-write fault on every page any of its threads
/// writes next). Elsewhere, the child does both between `fork` and `exec`.
///
/// The command is rebuilt from its program, arguments, environment
/// changes and working directory: set its stdio and process group on the
/// command this returns (an `env_clear` would not carry over; no caller
/// makes one).
pub fn dies_with_spawner(cmd: Command) -> Command {
    let parent = nix::unistd::getpid();
    match setpriv() {
        Some(setpriv) => {
            let mut wrapped = Command::new(setpriv);
            wrapped
                .args(["--pdeathsig", "KILL", "--", SH, "-c", PARENT_CHECK, "sh"])
                .arg(parent.to_string())
                .arg(cmd.get_program())
                .args(cmd.get_args());
            for (k, v) in cmd.get_envs() {
                match v {
                    Some(v) => wrapped.env(k, v),
                    None => wrapped.env_remove(k),
                };
            }
            if let Some(dir) = cmd.get_current_dir() {
                wrapped.current_dir(dir);
            }
            wrapped
        }
        None => {
            let mut cmd = cmd;
            // SAFETY: between fork and exec the child only makes
            // async-signal-safe system calls (prctl, getppid, kill on itself).
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                    if nix::unistd::getppid() != parent {
                        nix::sys::signal::kill(nix::unistd::getpid(), Signal::SIGKILL)?;
                    }
                    Ok(())
                });
            }
            cmd
        }
    }
}

/// The shell that checks the parent, in the `setpriv` form.
const SH: &str = "/bin/sh";
/// Run by [`SH`] after `setpriv` set the death signal: `$1` is the kit's
/// pid; a parent that is no longer the kit died before the prctl.
const PARENT_CHECK: &str = r#"p=$1; shift; [ "$PPID" = "$p" ] && exec "$@"; kill -9 $$"#;

/// util-linux's `setpriv`, if it and [`SH`] are installed (looked for once).
fn setpriv() -> Option<&'static Path> {
    static SETPRIV: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            if !Path::new(SH).is_file() {
                return None;
            }
            ["/usr/bin/setpriv", "/bin/setpriv", "/usr/sbin/setpriv"]
                .into_iter()
                .map(std::path::PathBuf::from)
                .find(|p| p.is_file())
        })
        .as_deref()
}

/// How long [`spawn_armed`] waits for `setpriv` to set the death signal.
const ARM_BOUND: Duration = Duration::from_secs(2);

/// Spawns a command made by [`dies_with_spawner`] and returns once its death
/// signal is set: at once when it was set before `exec`; in the `setpriv`
/// form, once the process no longer runs `setpriv` (it set the signal, then
/// exec'd), so that the spawning thread is still there when it is set.
pub fn spawn_armed(cmd: &mut Command) -> io::Result<Child> {
    let child = cmd.spawn()?;
    if let Some(setpriv) = setpriv().filter(|s| Path::new(cmd.get_program()) == *s) {
        let exe = format!("/proc/{}/exe", child.id());
        let deadline = Instant::now() + ARM_BOUND;
        // A process that exited has no exe to read: nothing to wait for.
        while std::fs::read_link(&exe).is_ok_and(|p| p == setpriv) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    Ok(child)
}

type ExitSlot = Arc<(Mutex<Option<ExitInfo>>, Condvar)>;

/// One running VMM process of a trial.
pub struct VmmProcess {
    /// Who it is in the timeline; a target that becomes the next hop's
    /// source is named again ([`VmmProcess::set_actor`]).
    actor: Arc<Mutex<Actor>>,
    pid: Pid,
    child: Option<Child>,
    exit: ExitSlot,
    watcher: Option<JoinHandle<()>>,
}

impl VmmProcess {
    /// Spawns `cmd` in a new process group, stdout and stderr appended to `log`.
    /// `on_exit` is called from the watcher thread when the process ends.
    pub fn spawn(
        actor: impl Into<Actor>,
        cmd: Command,
        log: &Path,
        timeline: &Timeline,
        on_exit: impl FnOnce(ExitInfo) + Send + 'static,
    ) -> io::Result<Self> {
        let out = File::options().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let mut cmd = dies_with_spawner(cmd);
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let actor = actor.into();
        let child = spawn_armed(&mut cmd)?;
        let pid = Pid::from_raw(child.id() as i32);
        leaks::register_process(pid.as_raw());
        let exit: ExitSlot = Arc::default();
        let slot = Arc::clone(&exit);
        let timeline = timeline.clone();
        let name = format!("watch-{}", actor.name());
        let actor = Arc::new(Mutex::new(actor));
        let watched = Arc::clone(&actor);
        let watcher = std::thread::Builder::new().name(name).spawn(move || {
            let info = wait_exit_nowait(pid);
            let actor = *watched.lock().unwrap_or_else(|p| p.into_inner());
            timeline.record(actor, What::Exited(info));
            *slot.0.lock().expect("exit lock") = Some(info);
            slot.1.notify_all();
            on_exit(info);
        })?;
        Ok(VmmProcess {
            actor,
            pid,
            child: Some(child),
            exit,
            watcher: Some(watcher),
        })
    }

    /// Who it is in the timeline.
    pub fn actor(&self) -> Actor {
        *self.actor.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Names it again in the timeline (the next hop's source was its target).
    pub fn set_actor(&self, actor: impl Into<Actor>) {
        *self.actor.lock().unwrap_or_else(|p| p.into_inner()) = actor.into();
    }

    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// How it ended, if it has.
    pub fn exit(&self) -> Option<ExitInfo> {
        *self.exit.0.lock().expect("exit lock")
    }

    pub fn is_alive(&self) -> bool {
        self.exit().is_none()
    }

    /// Waits until the process has ended, at most `timeout`.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitInfo> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.exit.0.lock().expect("exit lock");
        while guard.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            guard = self.exit.1.wait_timeout(guard, left).expect("exit lock").0;
        }
        *guard
    }

    /// Sends `sig` to the process group (a no-op once it has ended).
    pub fn signal(&self, sig: Signal) -> io::Result<()> {
        if !self.is_alive() {
            return Ok(());
        }
        killpg(self.pid, sig).map_err(io::Error::from)
    }

    /// SIGKILL, then waits for the exit (bounded).
    pub fn kill(&self) -> Option<ExitInfo> {
        let _ = self.signal(Signal::SIGKILL);
        self.wait_exit(Duration::from_secs(10))
    }

    /// SIGSTOP, and waits until the kernel shows it stopped (bounded).
    pub fn freeze(&self) -> io::Result<bool> {
        self.signal(Signal::SIGSTOP)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match proc_state(self.pid.as_raw()) {
                Some('T') | Some('t') => return Ok(true),
                None | Some('Z') | Some('X') => return Ok(false),
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        Ok(false)
    }

    pub fn thaw(&self) -> io::Result<()> {
        self.signal(Signal::SIGCONT)
    }
}

impl Drop for VmmProcess {
    fn drop(&mut self) {
        if self.is_alive() {
            let _ = killpg(self.pid, Signal::SIGKILL);
        }
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
        // Out of the register before the pid is freed: leaks::kill_registered
        // never signals a pid that may name another process.
        leaks::unregister_process(self.pid.as_raw());
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

/// Blocks until `pid` has exited, leaving it unreaped.
fn wait_exit_nowait(pid: Pid) -> ExitInfo {
    loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(WaitStatus::Exited(_, code)) => return ExitInfo::Code(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return ExitInfo::Signal(sig as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                // ECHILD: already reaped elsewhere; nothing more can be known.
                let _ = e;
                return ExitInfo::Code(-1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::Role;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn a_child_dies_with_the_thread_that_spawned_it() {
        let dir = tmp();
        let log = dir.path().join("log");
        let t = Timeline::new();
        let t2 = t.clone();
        // The spawning thread ends at once, as a killed kit's would, without
        // killing the child: the child must not outlive it.
        let p = std::thread::spawn(move || {
            let mut cmd = Command::new("sleep");
            cmd.arg("30");
            VmmProcess::spawn(Role::Source, cmd, &log, &t2, |_| {}).unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(
            p.wait_exit(Duration::from_secs(5)),
            Some(ExitInfo::Signal(libc::SIGKILL))
        );
    }

    #[test]
    fn a_child_whose_spawner_died_before_it_was_armed_kills_itself() {
        // The setpriv form, told that its parent is a pid that is not: as
        // if the kit had died before the prctl.
        let Some(setpriv) = setpriv() else {
            return;
        };
        let mut cmd = Command::new(setpriv);
        cmd.args(["--pdeathsig", "KILL", "--", SH, "-c", PARENT_CHECK, "sh"])
            .args(["1", "sleep", "30"]);
        let status = cmd.status().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        // Its true parent passes the check, and the program runs.
        let mut cmd = Command::new(setpriv);
        cmd.args(["--pdeathsig", "KILL", "--", SH, "-c", PARENT_CHECK, "sh"])
            .arg(std::process::id().to_string())
            .args(["sh", "-c", "exit 7"]);
        assert_eq!(cmd.status().unwrap().code(), Some(7));
    }

    #[test]
    fn exit_code_is_seen_and_logged() {
        let dir = tmp();
        let log = dir.path().join("log");
        let t = Timeline::new();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo hello; exit 3"]);
        let p = VmmProcess::spawn(Role::Target, cmd, &log, &t, |_| {}).unwrap();
        assert_eq!(p.wait_exit(Duration::from_secs(5)), Some(ExitInfo::Code(3)));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "hello\n");
        assert!(
            t.entries()
                .iter()
                .any(|e| e.what == What::Exited(ExitInfo::Code(3)))
        );
    }

    #[test]
    fn freeze_then_kill_a_process_group_and_reap_it() {
        let dir = tmp();
        let t = Timeline::new();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let p = VmmProcess::spawn(Role::Source, cmd, &dir.path().join("log"), &t, |_| {}).unwrap();
        let pid = p.pid();
        assert!(p.freeze().unwrap());
        assert_eq!(proc_state(pid), Some('T'));
        assert_eq!(p.kill(), Some(ExitInfo::Signal(Signal::SIGKILL as i32)));
        drop(p);
        assert_eq!(proc_state(pid), None, "reaped on drop");
    }

    #[test]
    fn drop_kills_a_live_process() {
        let dir = tmp();
        let t = Timeline::new();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let p = VmmProcess::spawn(Role::Source, cmd, &dir.path().join("log"), &t, |_| {}).unwrap();
        let pid = p.pid();
        drop(p);
        assert_eq!(proc_state(pid), None);
    }
}
