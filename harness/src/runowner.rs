//! Who owns a run directory, and the sweep of the run directories whose kit is
//! gone (killed with SIGKILL, or by the OOM killer, before it could remove its
//! own).
//!
//! A run directory is named `cprkit-run-PID-XXXXXX` and holds an [`OWNER_FILE`]
//! naming its kit: the pid, the process's start time (from `/proc/PID/stat`,
//! so that another process given the same pid later is not taken for the kit),
//! the boot it ran in, and its pid namespace (a kit in another container that
//! shares the temp directory has pids this one cannot look up). A directory is
//! removed only when its kit is known to be gone; one that cannot be judged
//! (another pid namespace, another user, an older kit's name without a pid) is
//! left alone.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The file in a run directory that names its kit.
pub const OWNER_FILE: &str = "owner";
/// The start of a run directory's name; the kit's pid and `-` follow.
pub const RUN_PREFIX: &str = "cprkit-run-";
/// How old a run directory without an owner file must be before the sweep
/// judges it by the pid in its name alone (a kit writes the file right after
/// creating the directory, so a younger one may be a kit starting up).
const OWNERLESS_AGE: Duration = Duration::from_secs(60);

/// The kit a run directory belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub pid: i32,
    /// Field 22 of /proc/PID/stat: clock ticks from boot to the process's start.
    pub start: u64,
    /// /proc/sys/kernel/random/boot_id.
    pub boot: String,
    /// The target of /proc/PID/ns/pid, e.g. `pid:[4026531836]`.
    pub pidns: String,
}

/// Whether a run directory's kit is still there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Gone,
    /// It cannot be told from here; such a directory is kept.
    Unknown(String),
}

impl Owner {
    /// The running process.
    pub fn me() -> io::Result<Owner> {
        Owner::of_pid(std::process::id() as i32)
    }

    /// Process `pid` as it is now.
    pub fn of_pid(pid: i32) -> io::Result<Owner> {
        Ok(Owner {
            pid,
            start: start_time(pid)?,
            boot: boot_id()?,
            pidns: fs::read_link(format!("/proc/{pid}/ns/pid"))?
                .to_string_lossy()
                .into_owned(),
        })
    }

    /// Writes the owner file into `dir`.
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        fs::write(dir.join(OWNER_FILE), self.to_text())
    }

    /// The owner file of `dir`; `None` if there is none.
    pub fn read(dir: &Path) -> io::Result<Option<Owner>> {
        match fs::read_to_string(dir.join(OWNER_FILE)) {
            Ok(text) => Owner::parse(&text)
                .map(Some)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable owner file")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn to_text(&self) -> String {
        format!(
            "# the cprkit run that owns this directory\npid {}\nstart {}\nboot {}\npidns {}\n",
            self.pid, self.start, self.boot, self.pidns
        )
    }

    fn parse(text: &str) -> Option<Owner> {
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
                .map(str::trim)
        };
        Some(Owner {
            pid: field("pid")?.parse().ok()?,
            start: field("start")?.parse().ok()?,
            boot: field("boot")?.to_string(),
            pidns: field("pidns")?.to_string(),
        })
    }

    /// Whether this kit is still running, as seen from this process.
    pub fn liveness(&self) -> Liveness {
        match boot_id() {
            Ok(b) if b != self.boot => return Liveness::Gone,
            Ok(_) => {}
            Err(e) => return Liveness::Unknown(format!("boot id: {e}")),
        }
        match fs::read_link("/proc/self/ns/pid") {
            Ok(ns) if ns.to_string_lossy() != self.pidns => {
                return Liveness::Unknown(format!("pid namespace {}", self.pidns));
            }
            Ok(_) => {}
            Err(e) => return Liveness::Unknown(format!("pid namespace: {e}")),
        }
        match start_time(self.pid) {
            // Another process has the pid now.
            Ok(start) if start != self.start => Liveness::Gone,
            Ok(_) => Liveness::Alive,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Liveness::Gone,
            Err(e) => Liveness::Unknown(format!("/proc/{}/stat: {e}", self.pid)),
        }
    }
}

/// Field 22 of /proc/PID/stat (after the command name, which may hold spaces
/// and parentheses: the fields start after its last `)`).
fn start_time(pid: i32) -> io::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc/PID/stat");
    let after = stat.rsplit_once(')').ok_or_else(bad)?.1;
    // `after` starts with field 3 (the state).
    after
        .split_whitespace()
        .nth(22 - 3)
        .and_then(|f| f.parse().ok())
        .ok_or_else(bad)
}

fn boot_id() -> io::Result<String> {
    Ok(fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_string())
}

/// The pid in a run directory's name, `cprkit-run-PID-XXXXXX`.
pub fn pid_in_name(name: &str) -> Option<i32> {
    let (pid, rest) = name.strip_prefix(RUN_PREFIX)?.split_once('-')?;
    if rest.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok().filter(|p| *p > 0)
}

/// A run directory the sweep removed.
#[derive(Debug)]
pub struct Stale {
    pub dir: PathBuf,
    pub pid: i32,
}

/// What the sweep did with one directory it could not remove.
#[derive(Debug)]
pub struct NotRemoved {
    pub dir: PathBuf,
    pub error: io::Error,
}

/// Removes the run directories in `tmp` whose kit is gone: those of this user,
/// named by [`pid_in_name`], whose owner file names a process that no longer
/// runs (or, with no owner file and older than a minute, whose pid no longer
/// runs). Never one of a live kit, nor one it cannot judge.
pub fn sweep(tmp: &Path) -> (Vec<Stale>, Vec<NotRemoved>) {
    let (mut removed, mut failed) = (Vec::new(), Vec::new());
    let Ok(entries) = fs::read_dir(tmp) else {
        return (removed, failed);
    };
    let me = std::process::id() as i32;
    let uid = nix::unistd::getuid().as_raw();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(pid_in_name) else {
            continue;
        };
        let dir = e.path();
        // Not a symlink, and this user's.
        let Ok(meta) = fs::symlink_metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != uid || pid == me {
            continue;
        }
        let gone = match Owner::read(&dir) {
            Ok(Some(owner)) => owner.pid == pid && owner.liveness() == Liveness::Gone,
            Ok(None) => {
                let old = meta
                    .modified()
                    .ok()
                    .and_then(|m| SystemTime::now().duration_since(m).ok())
                    .is_some_and(|age| age >= OWNERLESS_AGE);
                old && !Path::new(&format!("/proc/{pid}")).exists()
            }
            Err(_) => false,
        };
        if !gone {
            continue;
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => removed.push(Stale { dir, pid }),
            // Another kit's sweep was first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(error) => failed.push(NotRemoved { dir, error }),
        }
    }
    (removed, failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// The owner a process had, once it has exited and been reaped.
    fn dead_owner() -> Owner {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let owner = Owner::of_pid(child.id() as i32).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        owner
    }

    fn run_dir(tmp: &Path, pid: i32, owner: Option<&Owner>) -> PathBuf {
        let d = tmp.join(format!("{RUN_PREFIX}{pid}-AbC123"));
        fs::create_dir(&d).unwrap();
        fs::create_dir(d.join("t1")).unwrap();
        fs::write(d.join("t1").join("source.log"), "log").unwrap();
        if let Some(o) = owner {
            o.write(&d).unwrap();
        }
        d
    }

    #[test]
    fn the_owner_file_reads_back() {
        let me = Owner::me().unwrap();
        assert_eq!(Owner::parse(&me.to_text()), Some(me.clone()));
        assert_eq!(me.liveness(), Liveness::Alive);
        assert!(me.start > 0 && me.pidns.starts_with("pid:"), "{me:?}");
    }

    #[test]
    fn names_give_their_pid() {
        assert_eq!(pid_in_name("cprkit-run-1234-AbC123"), Some(1234));
        // An older kit's name, with no pid: never judged.
        assert_eq!(pid_in_name("cprkit-run-AbC123"), None);
        assert_eq!(pid_in_name("cprkit-run-123456"), None);
        assert_eq!(pid_in_name("cprkit-run--AbC123"), None);
        assert_eq!(pid_in_name("cprkit-refvmm__a-AbC123"), None);
    }

    #[test]
    fn the_directory_of_a_gone_kit_is_removed_a_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dead = dead_owner();
        assert_eq!(dead.liveness(), Liveness::Gone);
        let gone = run_dir(tmp.path(), dead.pid, Some(&dead));

        // The parent of this test is alive: its directory stays.
        let parent = nix::unistd::getppid().as_raw();
        let live = run_dir(tmp.path(), parent, Some(&Owner::of_pid(parent).unwrap()));

        // The pid is this live process's, but the start time is another's:
        // the kit that wrote it is gone and its pid was given again.
        let mut reused = Owner::of_pid(parent).unwrap();
        reused.start += 1;
        let reused_dir = tmp.path().join(format!("{RUN_PREFIX}{parent}-XyZ789"));
        fs::create_dir(&reused_dir).unwrap();
        reused.write(&reused_dir).unwrap();

        // Another pid namespace cannot be judged from here.
        let mut elsewhere = dead.clone();
        elsewhere.pidns = "pid:[1]".into();
        let elsewhere_dir = tmp.path().join(format!("{RUN_PREFIX}{}-Other1", dead.pid));
        fs::create_dir(&elsewhere_dir).unwrap();
        elsewhere.write(&elsewhere_dir).unwrap();

        // No owner file, just made: may be a kit starting up.
        let fresh = run_dir(tmp.path(), dead.pid + 1_000_000, None);
        // An older kit's directory.
        let older = tmp.path().join("cprkit-run-QwErTy");
        fs::create_dir(&older).unwrap();

        let (removed, failed) = sweep(tmp.path());
        assert!(failed.is_empty(), "{failed:?}");
        let mut dirs: Vec<&Path> = removed.iter().map(|s| s.dir.as_path()).collect();
        dirs.sort();
        let mut want = vec![gone.as_path(), reused_dir.as_path()];
        want.sort();
        assert_eq!(dirs, want);
        assert!(!gone.exists() && !reused_dir.exists());
        for kept in [&live, &elsewhere_dir, &fresh, &older] {
            assert!(kept.exists(), "{} was removed", kept.display());
        }
    }
}
