//! What the kit must leave behind: nothing. Keeps the register of the processes
//! it spawned and, at the end of a run, checks that none of them, no trial
//! directory, and no fd of its own (memfd or socket) is left.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

static LIVE: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

pub(crate) fn register_process(pid: i32) {
    LIVE.lock().expect("leak register").insert(pid);
}

/// The processes the kit started that are not reaped yet.
pub fn registered() -> Vec<i32> {
    LIVE.lock()
        .expect("leak register")
        .iter()
        .copied()
        .collect()
}

pub(crate) fn unregister_process(pid: i32) {
    LIVE.lock().expect("leak register").remove(&pid);
}

/// SIGKILLs the process group of every process the kit spawned and has not
/// reaped yet, and says how many: for a kit that quits with trials still in
/// flight (their own teardown would do it, but they are not waited for). A
/// registered process is unreaped, so its pid, and its group's, still name it.
pub fn kill_registered() -> usize {
    let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    for pid in live.iter() {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    live.len()
}

/// The kit's own fds, by kind, at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdCensus {
    pub memfds: usize,
    pub sockets: usize,
    pub total: usize,
}

impl FdCensus {
    pub fn take() -> Self {
        let mut c = FdCensus::default();
        if let Ok(dir) = fs::read_dir("/proc/self/fd") {
            for e in dir.flatten() {
                c.total += 1;
                let Ok(target) = fs::read_link(e.path()) else {
                    continue;
                };
                let t = target.to_string_lossy();
                if t.starts_with("/memfd:") {
                    c.memfds += 1;
                } else if t.starts_with("socket:") {
                    c.sockets += 1;
                }
            }
        }
        c
    }
}

/// What a run left behind, compared with a census taken before it.
#[derive(Debug, Default)]
pub struct Leaks {
    pub processes: Vec<String>,
    pub paths: Vec<PathBuf>,
    pub memfds: usize,
    pub sockets: usize,
}

impl Leaks {
    /// Checks that no spawned process remains (alive or unreaped), nothing is
    /// left under `run_root` (the directory holding the trial directories) but
    /// its owner file, and
    /// the kit holds no more memfds or sockets than `before`.
    pub fn check(before: &FdCensus, run_root: Option<&Path>) -> Leaks {
        let mut leaks = Leaks::default();
        for pid in LIVE.lock().expect("leak register").iter() {
            let state = crate::procinfo::proc_state(*pid)
                .map(|c| c.to_string())
                .unwrap_or_else(|| "gone".into());
            leaks
                .processes
                .push(format!("pid {pid} (state {state}) was never reaped"));
        }
        leaks.processes.extend(children_of_self());
        if let Some(root) = run_root
            && let Ok(dir) = fs::read_dir(root)
        {
            leaks.paths.extend(
                dir.flatten()
                    .filter(|e| e.file_name() != crate::runowner::OWNER_FILE)
                    .map(|e| e.path()),
            );
        }
        let now = FdCensus::take();
        leaks.memfds = now.memfds.saturating_sub(before.memfds);
        leaks.sockets = now.sockets.saturating_sub(before.sockets);
        leaks
    }

    pub fn is_clean(&self) -> bool {
        self.processes.is_empty() && self.paths.is_empty() && self.memfds == 0 && self.sockets == 0
    }
}

impl std::fmt::Display for Leaks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_clean() {
            return f.write_str(
                "nothing left behind: no process, no trial directory, no memfd or socket fd",
            );
        }
        for p in &self.processes {
            writeln!(f, "left behind: process {p}")?;
        }
        for p in &self.paths {
            writeln!(f, "left behind: {}", p.display())?;
        }
        if self.memfds > 0 {
            writeln!(f, "left behind: {} memfd fd(s) in the kit", self.memfds)?;
        }
        if self.sockets > 0 {
            writeln!(f, "left behind: {} socket fd(s) in the kit", self.sockets)?;
        }
        Ok(())
    }
}

/// Processes whose parent is this process and that are not threads of it.
fn children_of_self() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((comm, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1) == Some(&me.as_str()) {
            let comm = comm.split_once('(').map(|x| x.1).unwrap_or("?");
            found.push(format!("pid {pid} ({comm}) is still a child of the kit"));
        }
    }
    found
}
