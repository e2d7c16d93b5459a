//! The leak check sees each kind of leak: a test per kind leaks exactly one
//! thing (an fd of each kind, a child never reaped, a double-forked
//! grandchild, a file and a socket left in the run directory) and sees the
//! check name it, then cleans up and sees the check clean again. Each test
//! holds [`serial`]: the fds and children it counts are the whole process's.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cprkit_harness::leaks::{Census, FdKind, Leaks};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Leaks what `leak` makes while the check runs, and returns the check.
fn check_while<T>(leak: impl FnOnce() -> T) -> (Leaks, T) {
    let before = Census::take();
    let held = leak();
    (Leaks::check(&before, None), held)
}

/// The check finds one leaked fd, of `kind`, and nothing else; once it is
/// closed, nothing.
fn one_fd_of(kind: FdKind, leak: impl FnOnce() -> Vec<OwnedFd>) {
    let _one = serial();
    let before = Census::take();
    let fds = leak();
    let leaks = Leaks::check(&before, None);
    assert!(!leaks.is_clean(), "a leaked {kind} fd was not seen");
    assert_eq!(leaks.fds_of(kind), fds.len(), "{leaks}");
    assert_eq!(leaks.fds.len(), fds.len(), "only the {kind} fds: {leaks}");
    assert!(
        leaks.processes.is_empty() && leaks.paths.is_empty(),
        "{leaks}"
    );
    assert!(
        leaks
            .to_string()
            .contains(&format!("{kind} fd(s) in the kit")),
        "{leaks}"
    );
    drop(fds);
    let after = Leaks::check(&before, None);
    assert!(after.is_clean(), "{after}");
}

/// An fd the kernel just handed out, owned.
fn owned(fd: i32) -> OwnedFd {
    assert!(fd >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[test]
fn a_leaked_memfd_is_seen() {
    one_fd_of(FdKind::Memfd, || {
        let m = memfd::MemfdOptions::default().create("leak").unwrap();
        vec![OwnedFd::from(m.into_file())]
    });
}

#[test]
fn a_leaked_socket_is_seen() {
    one_fd_of(FdKind::Socket, || {
        let (a, b) = UnixStream::pair().unwrap();
        vec![OwnedFd::from(a), OwnedFd::from(b)]
    });
}

#[test]
fn a_leaked_pipe_is_seen() {
    one_fd_of(FdKind::Pipe, || {
        let (r, w) = nix::unistd::pipe().unwrap();
        vec![r, w]
    });
}

#[test]
fn a_leaked_file_is_seen() {
    one_fd_of(FdKind::File, || {
        vec![OwnedFd::from(std::fs::File::open("/dev/null").unwrap())]
    });
}

#[test]
fn a_leaked_eventfd_is_seen() {
    // SAFETY: eventfd(2) has no memory arguments.
    one_fd_of(FdKind::Eventfd, || {
        vec![owned(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) })]
    });
}

#[test]
fn a_leaked_fd_of_another_kind_is_seen() {
    // SAFETY: epoll_create1(2) has no memory arguments.
    one_fd_of(FdKind::Other, || {
        vec![owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })]
    });
}

#[test]
fn an_fd_replaced_by_another_under_its_number_is_seen() {
    let _one = serial();
    let mut keep = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
    let before = Census::take();
    // The same number, now a pipe: the count is the same, the fd is not.
    let (r, w) = nix::unistd::pipe().unwrap();
    nix::unistd::dup2(&r, &mut keep).unwrap();
    drop((r, w));
    let leaks = Leaks::check(&before, None);
    assert_eq!(leaks.fds_of(FdKind::Pipe), 1, "{leaks}");
    drop(keep);
}

#[test]
fn a_child_never_reaped_is_seen() {
    let _one = serial();
    let (leaks, mut child) = check_while(|| Command::new("sleep").arg("30").spawn().unwrap());
    let pid = child.id();
    assert!(
        leaks.processes.iter().any(
            |p| p.starts_with(&format!("pid {pid} (sleep")) && p.contains("a child of the kit")
        ),
        "{leaks}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_double_forked_grandchild_is_seen() {
    let _one = serial();
    let before = Census::take();
    // sh starts a sleep in the background and exits: the sleep's parent is
    // gone, and it is reparented to the kit (the census made it a subreaper).
    let out = Command::new("sh")
        .args(["-c", "sleep 30 >/dev/null 2>&1 & echo $!"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let leaks = Leaks::check(&before, None);
    assert!(
        leaks
            .processes
            .iter()
            .any(|p| p.starts_with(&format!("pid {pid} (sleep"))),
        "the grandchild {pid} was not seen: {leaks}"
    );
    let pid = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    nix::sys::wait::waitpid(pid, None).unwrap();
    let after = Leaks::check(&before, None);
    assert!(after.is_clean(), "{after}");
}

#[test]
fn a_double_forked_grandchild_that_died_is_reaped_and_no_leak() {
    let _one = serial();
    let before = Census::take();
    let out = Command::new("sh")
        .args(["-c", "sleep 0.1 >/dev/null 2>&1 & echo $!"])
        .output()
        .unwrap();
    let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    // Adopted by the kit, it dies: a zombie of the kit's until reaped.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cprkit_harness::procinfo::proc_state(pid) != Some('Z') {
        assert!(Instant::now() < deadline, "pid {pid} never became a zombie");
        std::thread::sleep(Duration::from_millis(10));
    }
    let leaks = Leaks::check(&before, None);
    assert!(leaks.is_clean(), "{leaks}");
    assert_eq!(cprkit_harness::procinfo::proc_state(pid), None, "reaped");
}

#[test]
fn a_file_and_a_socket_left_in_the_run_directory_are_seen() {
    let _one = serial();
    let root = tempfile::tempdir().unwrap();
    let before = Census::take();
    std::fs::write(root.path().join("owner"), "the kit").unwrap();
    let trial = root.path().join("trial-1");
    std::fs::create_dir(&trial).unwrap();
    std::fs::write(trial.join("source.log"), "log").unwrap();
    let listener = UnixListener::bind(trial.join("cpr.sock")).unwrap();
    drop(listener);
    let leaks = Leaks::check(&before, Some(root.path()));
    let text = leaks.to_string();
    for want in [
        format!("left behind: directory {}", trial.display()),
        format!("left behind: file {}", trial.join("source.log").display()),
        format!("left behind: socket {}", trial.join("cpr.sock").display()),
    ] {
        assert!(text.contains(&want), "{want} not in:\n{text}");
    }
    assert!(
        !text.contains("owner"),
        "the owner file is no leak:\n{text}"
    );
    std::fs::remove_dir_all(&trial).unwrap();
    let after = Leaks::check(&before, Some(root.path()));
    assert!(after.is_clean(), "{after}");
}

#[test]
fn nothing_leaked_is_clean() {
    let _one = serial();
    let before = Census::take();
    let leaks = Leaks::check(&before, None);
    assert!(leaks.is_clean(), "{leaks}");
    assert_eq!(
        leaks.to_string(),
        "nothing left behind: no process, nothing in the run directory, no fd the kit did not hold before"
    );
}
