//! The daemon's listeners: the vhost-user socket (one thread per frontend connection) and the
//! control socket, started together; `Daemon` stops both when dropped.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use crate::conn::Connection;
use crate::control;
use crate::device::Device;
use crate::ledger::EntryKind;
use crate::session;
use crate::state::{DeviceState, Policy};

/// How long an accept loop waits before looking at its stop flag again.
pub(crate) const ACCEPT_POLL_MS: u16 = 100;

/// An in-process daemon (threads). Dropping it stops serving, closes every connection and
/// removes the socket files it created.
#[derive(Debug)]
pub struct Daemon {
    device: Arc<Device>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    sockets: Vec<PathBuf>,
}

impl Daemon {
    /// The device's current state (as the control socket's `state` reports it).
    pub fn state(&self) -> DeviceState {
        self.device.state()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for conn in self.device.conns() {
            conn.shutdown();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        for path in &self.sockets {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds `path`, replacing a stale socket file (one nobody accepts on).
fn bind(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{}: another daemon is listening", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        Err(e) => Err(e),
    }
    .map_err(|e| io::Error::new(e.kind(), format!("bind {}: {e}", path.display())))
}

/// Waits up to one poll period for a connection; `None` on timeout.
pub(crate) fn accept_timed(listener: &UnixListener) -> io::Result<Option<UnixStream>> {
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(ACCEPT_POLL_MS)) {
        Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(None),
        Ok(_) => {}
        Err(e) => return Err(io::Error::from(e)),
    }
    match listener.accept() {
        Ok((stream, _)) => {
            stream.set_nonblocking(false)?;
            Ok(Some(stream))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Starts a daemon: vhost-user-blk on `socket`, the control protocol on `control`.
pub fn serve(socket: &Path, control: &Path, policy: Policy) -> io::Result<Daemon> {
    let vhost_listener = bind(socket)?;
    let control_listener = match bind(control) {
        Ok(l) => l,
        Err(e) => {
            let _ = std::fs::remove_file(socket);
            return Err(e);
        }
    };
    vhost_listener.set_nonblocking(true)?;
    control_listener.set_nonblocking(true)?;
    let device = Arc::new(Device::new(policy));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    {
        let device = Arc::clone(&device);
        let stop = Arc::clone(&stop);
        threads.push(
            std::thread::Builder::new()
                .name("cprkit-device-accept".into())
                .spawn(move || accept_loop(&vhost_listener, &device, &stop))?,
        );
    }
    {
        let device = Arc::clone(&device);
        let stop = Arc::clone(&stop);
        threads.push(
            std::thread::Builder::new()
                .name("cprkit-device-control".into())
                .spawn(move || control::accept_loop(&control_listener, &device, &stop))?,
        );
    }
    eprintln!(
        "cprkit-device: serving vhost-user-blk on {} (policy {policy})",
        socket.display()
    );
    Ok(Daemon {
        device,
        stop,
        threads,
        sockets: vec![socket.to_path_buf(), control.to_path_buf()],
    })
}

fn accept_loop(listener: &UnixListener, device: &Arc<Device>, stop: &AtomicBool) {
    let next_id = AtomicU32::new(1);
    let mut sessions: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let stream = match accept_timed(listener) {
            Ok(Some(stream)) => stream,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("cprkit-device: accept: {e}");
                std::thread::sleep(std::time::Duration::from_millis(u64::from(ACCEPT_POLL_MS)));
                continue;
            }
        };
        let id = next_id.fetch_add(1, Ordering::SeqCst);
        let pid = getsockopt(&stream, PeerCredentials).ok().map(|c| c.pid());
        let clone = match stream.try_clone() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("cprkit-device: conn {id}: cannot clone the socket: {e}");
                continue;
            }
        };
        let conn = Arc::new(Connection::new(id, pid, Arc::clone(device), clone));
        device.add_conn(Arc::clone(&conn));
        device.ledger.push(Some(id), pid, EntryKind::Connect);
        eprintln!(
            "cprkit-device: conn {id} from pid {}",
            crate::conn::show_pid(pid)
        );
        let spawned = std::thread::Builder::new()
            .name(format!("cprkit-device-conn-{id}"))
            .spawn(move || session::serve(conn, stream));
        match spawned {
            Ok(handle) => sessions.push(handle),
            Err(e) => eprintln!("cprkit-device: conn {id}: cannot start its thread: {e}"),
        }
        sessions.retain(|h| !h.is_finished());
    }
    for conn in device.conns() {
        conn.shutdown();
    }
    for handle in sessions {
        let _ = handle.join();
    }
}
