//! What the kit must leave behind: nothing. Keeps the register of the processes
//! it spawned and, at the end of a run, checks against a [`Census`] taken
//! before it that no process of the run's tree is left (a spawned VMM never
//! reaped, a child, a grandchild that double-forked away: the census makes the
//! kit a child subreaper, so an orphaned descendant becomes its child and is
//! seen), nothing is left in the run directory (every file, socket, FIFO and
//! directory under it but its owner file), and the kit holds no fd it did not
//! hold before, of any kind (memfd, socket, pipe, file, eventfd or other).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::os::unix::fs::FileTypeExt;
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

/// What an fd of the kit refers to, from its link in /proc/self/fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FdKind {
    Memfd,
    Socket,
    Pipe,
    /// A path in the file system (a log, a device node, a directory).
    File,
    Eventfd,
    /// Anything else: an epoll, a timerfd, a pidfd, a signalfd, ...
    Other,
}

impl FdKind {
    /// The kind of an fd whose /proc/self/fd link reads `target`.
    pub fn of(target: &str) -> FdKind {
        if target.starts_with("/memfd:") {
            FdKind::Memfd
        } else if target.starts_with("socket:") {
            FdKind::Socket
        } else if target.starts_with("pipe:") {
            FdKind::Pipe
        } else if target == "anon_inode:[eventfd]" {
            FdKind::Eventfd
        } else if target.starts_with('/') {
            FdKind::File
        } else {
            FdKind::Other
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FdKind::Memfd => "memfd",
            FdKind::Socket => "socket",
            FdKind::Pipe => "pipe",
            FdKind::File => "file",
            FdKind::Eventfd => "eventfd",
            FdKind::Other => "other",
        }
    }
}

impl fmt::Display for FdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kit before a run: every fd it holds (number and what it refers to).
/// Taking it makes the kit a child subreaper (PR_SET_CHILD_SUBREAPER), so
/// that a descendant whose parent exits (a double fork) is reparented to the
/// kit rather than to init, and [`Leaks::check`] sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    fds: BTreeMap<i32, String>,
}

impl Census {
    pub fn take() -> Self {
        // Best effort: without it (an old kernel) a double-forked process
        // escapes to init; the direct children are seen either way.
        let _ = nix::sys::prctl::set_child_subreaper(true);
        Census { fds: open_fds() }
    }

    /// How many fds the kit held, of each kind.
    pub fn by_kind(&self) -> BTreeMap<FdKind, usize> {
        let mut n = BTreeMap::new();
        for t in self.fds.values() {
            *n.entry(FdKind::of(t)).or_default() += 1;
        }
        n
    }
}

/// This process's fds and their link targets, but the one the listing itself
/// holds (its directory, /proc/PID/fd).
fn open_fds() -> BTreeMap<i32, String> {
    let listing = format!("/proc/{}/fd", std::process::id());
    let mut fds = BTreeMap::new();
    let Ok(dir) = fs::read_dir("/proc/self/fd") else {
        return fds;
    };
    for e in dir.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(target) = fs::read_link(e.path()) else {
            continue; // closed since the listing was read
        };
        let target = target.to_string_lossy().into_owned();
        if target != listing {
            fds.insert(fd, target);
        }
    }
    fds
}

/// An fd the kit holds that it did not hold before the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeakedFd {
    pub fd: i32,
    pub kind: FdKind,
    /// Its /proc/self/fd link (`pipe:[1234]`, `/tmp/x/source.log`).
    pub target: String,
}

/// What a run left behind, compared with a census taken before it.
#[derive(Debug, Default)]
pub struct Leaks {
    pub processes: Vec<String>,
    /// What is left under the run directory, with its kind.
    pub paths: Vec<(PathBuf, &'static str)>,
    pub fds: Vec<LeakedFd>,
}

impl Leaks {
    /// Checks that no spawned process remains (alive or unreaped), no process
    /// descends from the kit (a child, or an orphan reparented to it; one of
    /// those that has died, a zombie the kit adopted as subreaper and that no
    /// register names, is reaped here and is no leak: nothing is left
    /// running), nothing
    /// is left under `run_root` (the directory holding the trial directories)
    /// but its owner file, and the kit holds no fd that it did not hold in
    /// `before` (the same number referring to the same thing).
    pub fn check(before: &Census, run_root: Option<&Path>) -> Leaks {
        let mut leaks = Leaks::default();
        let registered = LIVE.lock().expect("leak register").clone();
        for pid in &registered {
            let state = crate::procinfo::proc_state(*pid)
                .map(|c| c.to_string())
                .unwrap_or_else(|| "gone".into());
            leaks
                .processes
                .push(format!("pid {pid} (state {state}) was never reaped"));
        }
        leaks.processes.extend(
            descendants_of_self()
                .into_iter()
                .filter(|d| !registered.contains(&d.pid) && !reaped_orphan(d))
                .map(|d| d.to_string()),
        );
        if let Some(root) = run_root {
            left_under(root, true, &mut leaks.paths);
        }
        leaks.fds = open_fds()
            .into_iter()
            .filter(|(fd, target)| before.fds.get(fd) != Some(target))
            .map(|(fd, target)| LeakedFd {
                fd,
                kind: FdKind::of(&target),
                target,
            })
            .collect();
        leaks
    }

    pub fn is_clean(&self) -> bool {
        self.processes.is_empty() && self.paths.is_empty() && self.fds.is_empty()
    }

    /// The leaked fds of each kind.
    pub fn fds_of(&self, kind: FdKind) -> usize {
        self.fds.iter().filter(|f| f.kind == kind).count()
    }
}

impl fmt::Display for Leaks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_clean() {
            return f.write_str(
                "nothing left behind: no process, nothing in the run directory, no fd the kit did not hold before",
            );
        }
        for p in &self.processes {
            writeln!(f, "left behind: process {p}")?;
        }
        for (p, kind) in &self.paths {
            writeln!(f, "left behind: {kind} {}", p.display())?;
        }
        let mut kinds: BTreeMap<FdKind, Vec<&LeakedFd>> = BTreeMap::new();
        for fd in &self.fds {
            kinds.entry(fd.kind).or_default().push(fd);
        }
        for (kind, fds) in kinds {
            let shown: Vec<String> = fds
                .iter()
                .take(8)
                .map(|l| format!("{} -> {}", l.fd, l.target))
                .collect();
            let more = if fds.len() > shown.len() { ", ..." } else { "" };
            writeln!(
                f,
                "left behind: {} {kind} fd(s) in the kit ({}{more})",
                fds.len(),
                shown.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Every entry under `dir` (depth first, a directory before what it holds),
/// with its kind; at the top, the owner file is not one.
fn left_under(dir: &Path, top: bool, out: &mut Vec<(PathBuf, &'static str)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if top && e.file_name() == crate::runowner::OWNER_FILE {
            continue;
        }
        let kind = match e.file_type() {
            Ok(t) if t.is_dir() => "directory",
            Ok(t) if t.is_socket() => "socket",
            Ok(t) if t.is_fifo() => "FIFO",
            Ok(t) if t.is_symlink() => "symlink",
            Ok(t) if t.is_file() => "file",
            _ => "entry",
        };
        out.push((e.path(), kind));
        if kind == "directory" {
            left_under(&e.path(), false, out);
        }
    }
}

/// Reaps `d` if it is a dead child of the kit that no register names (an
/// orphan the kit adopted as subreaper, such as the `sleep` of an adapter
/// script whose process group was killed); whether it did.
fn reaped_orphan(d: &Descendant) -> bool {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    d.state == 'Z'
        && d.ppid == std::process::id() as i32
        && matches!(
            waitpid(
                nix::unistd::Pid::from_raw(d.pid),
                Some(WaitPidFlag::WNOHANG)
            ),
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..))
        )
}

/// A process of the kit's tree.
struct Descendant {
    pid: i32,
    ppid: i32,
    comm: String,
    state: char,
}

impl fmt::Display for Descendant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.ppid == std::process::id() as i32 {
            "a child of the kit".to_string()
        } else {
            format!("a descendant of the kit (parent {})", self.ppid)
        };
        write!(
            f,
            "pid {} ({}, state {}) is still {how}",
            self.pid, self.comm, self.state
        )
    }
}

/// Every process descending from this one (threads aside): its children,
/// theirs, and so on, in pid order.
fn descendants_of_self() -> Vec<Descendant> {
    let mut all = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return all;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((comm, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (Some(state), Some(ppid)) = (
            fields.first().and_then(|s| s.chars().next()),
            fields.get(1).and_then(|p| p.parse::<i32>().ok()),
        ) else {
            continue;
        };
        all.push(Descendant {
            pid,
            ppid,
            comm: comm.split_once('(').map(|x| x.1).unwrap_or("?").to_string(),
            state,
        });
    }
    let mut tree: BTreeSet<i32> = BTreeSet::from([std::process::id() as i32]);
    // Parents before children is not the pid order: grow until nothing joins.
    loop {
        let before = tree.len();
        for d in &all {
            if tree.contains(&d.ppid) {
                tree.insert(d.pid);
            }
        }
        if tree.len() == before {
            break;
        }
    }
    all.retain(|d| d.pid != std::process::id() as i32 && tree.contains(&d.pid));
    all.sort_by_key(|d| d.pid);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_kinds_are_read_off_their_links() {
        for (target, kind) in [
            ("/memfd:memory-backend-memfd (deleted)", FdKind::Memfd),
            ("socket:[123]", FdKind::Socket),
            ("pipe:[456]", FdKind::Pipe),
            ("/tmp/cprkit-run-1-x/t/source.log", FdKind::File),
            ("/dev/null", FdKind::File),
            ("anon_inode:[eventfd]", FdKind::Eventfd),
            ("anon_inode:[eventpoll]", FdKind::Other),
            ("anon_inode:[timerfd]", FdKind::Other),
        ] {
            assert_eq!(FdKind::of(target), kind, "{target}");
        }
    }
}
