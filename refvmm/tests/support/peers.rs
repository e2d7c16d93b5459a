//! Scripted migration peers over real sockets, for faults a test must place
//! exactly: a source that stops after a given step (to test a refvmm
//! target), and a target that drops the main channel without `loaded` (to
//! test a refvmm source). They speak refvmm's migration wire, with a real
//! memfd passed by SCM_RIGHTS.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use sendfd::{RecvWithFd, SendWithFd};

/// A source played by the test: its own `cprkit-ram` memfd, whose counter it
/// sets, and the two channels.
pub struct ScriptedSource {
    pub ram: File,
    pub cpr: UnixStream,
    pub main: Option<BufReader<UnixStream>>,
}

impl ScriptedSource {
    /// Creates RAM with counter `r`, sends the CPR state and the memfd to the
    /// target at `cpr_path`, and waits for its HUP.
    pub fn cpr_save(cpr_path: &Path, ram_size: u64, r: u64) -> Self {
        let ram = memfd::MemfdOptions::default()
            .create(refvmm::RAM_MEMFD_NAME)
            .unwrap()
            .into_file();
        ram.set_len(ram_size).unwrap();
        ram.write_all_at(&r.to_le_bytes(), refvmm::COUNTER_OFFSET as u64)
            .unwrap();
        let cpr = UnixStream::connect(cpr_path).unwrap();
        let msg = format!(
            "{{\"type\":\"cpr-state\",\"magic\":\"cprkit-cpr-1\",\"ram_size\":{ram_size}}}\n"
        );
        assert_eq!(
            cpr.send_with_fd(msg.as_bytes(), &[ram.as_raw_fd()])
                .unwrap(),
            msg.len()
        );
        cpr.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!((&cpr).read(&mut [0u8; 16]).unwrap(), 0, "HUP");
        Self {
            ram,
            cpr,
            main: None,
        }
    }

    /// Connects the main channel and writes `line` (with a newline).
    pub fn send_state(&mut self, main_path: &Path, line: &[u8]) {
        let mut main = UnixStream::connect(main_path).unwrap();
        main.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        main.write_all(line).unwrap();
        main.write_all(b"\n").unwrap();
        self.main = Some(BufReader::new(main));
    }

    /// The target's next line on the main channel (None on EOF).
    pub fn read_line(&mut self) -> Option<String> {
        let mut s = String::new();
        match self.main.as_mut().unwrap().read_line(&mut s) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(s),
        }
    }

    /// The counter in the RAM memfd.
    pub fn counter(&self) -> u64 {
        let mut b = [0u8; 8];
        self.ram
            .read_exact_at(&mut b, refvmm::COUNTER_OFFSET as u64)
            .unwrap();
        u64::from_le_bytes(b)
    }
}

/// The device state line refvmm's source would send.
pub fn state_line(running: bool, r: u64, ram_size: u64) -> Vec<u8> {
    format!(
        "{{\"type\":\"state\",\"magic\":\"cprkit-refvmm-1\",\"running\":{running},\"vcpu\":{{\"r\":{r}}},\"ram_size\":{ram_size}}}"
    )
    .into_bytes()
}

/// A target played by the test: takes the CPR state and its fd, signals
/// readiness, accepts the main channel, reads the device state and closes
/// the channel without `loaded` (the target died while loading).
pub struct DroppingTarget {
    pub cpr: PathBuf,
    pub main: PathBuf,
    thread: Option<JoinHandle<(usize, String)>>,
}

impl DroppingTarget {
    pub fn listen(dir: &Path) -> Self {
        let cpr = dir.join("fake-cpr.sock");
        let main = dir.join("fake-main.sock");
        let cpr_l = UnixListener::bind(&cpr).unwrap();
        let main_l = UnixListener::bind(&main).unwrap();
        let thread = std::thread::spawn(move || {
            let (c, _) = cpr_l.accept().unwrap();
            let mut fds = [-1; 4];
            let mut buf = [0u8; 4096];
            let (_, nfds) = c.recv_with_fd(&mut buf, &mut fds).unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
            let (m, _) = main_l.accept().unwrap();
            let mut state = String::new();
            BufReader::new(&m).read_line(&mut state).unwrap();
            drop(m);
            for fd in &fds[..nfds] {
                // SAFETY: received by us, owned by nothing else.
                unsafe { libc::close(*fd) };
            }
            (nfds, state)
        });
        Self {
            cpr,
            main,
            thread: Some(thread),
        }
    }

    /// Waits for the script to end: the number of fds received and the state line.
    pub fn join(&mut self) -> (usize, String) {
        self.thread.take().unwrap().join().unwrap()
    }
}

/// A target that listens on both channels and never accepts: a test sees
/// whether the source connected at all. A source's connect still succeeds
/// (the listen backlog), and so does a first small write.
pub struct SilentTarget {
    pub cpr: PathBuf,
    pub main: PathBuf,
    cpr_l: UnixListener,
    main_l: UnixListener,
}

impl SilentTarget {
    pub fn listen(dir: &Path) -> Self {
        let cpr = dir.join("silent-cpr.sock");
        let main = dir.join("silent-main.sock");
        let cpr_l = UnixListener::bind(&cpr).unwrap();
        let main_l = UnixListener::bind(&main).unwrap();
        cpr_l.set_nonblocking(true).unwrap();
        main_l.set_nonblocking(true).unwrap();
        Self {
            cpr,
            main,
            cpr_l,
            main_l,
        }
    }

    /// Whether no connection waits on either channel.
    pub fn nobody_connected(&self) -> bool {
        let none = |l: &UnixListener| matches!(l.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        none(&self.cpr_l) && none(&self.main_l)
    }
}
