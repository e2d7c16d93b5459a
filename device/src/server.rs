//! The daemon's listeners: the vhost-user socket (one thread per frontend connection) and the
//! control socket, started together; `Daemon` stops both when dropped.

use std::io;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use crate::accept::{ACCEPT_POLL_MS, accept_timed, bind};
use crate::conn::Connection;
use crate::control;
use crate::device::Device;
use crate::ledger::EntryKind;
use crate::registry::Registry;
use crate::session;
use crate::state::{DeviceState, Policy};

/// An in-process daemon (threads). Dropping it stops serving, closes every connection and
/// removes the socket files it created.
#[derive(Debug)]
pub struct Daemon {
    registry: Arc<Registry>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    sockets: Vec<PathBuf>,
}

impl Daemon {
    /// The device's current state (as the control socket's `state` reports it).
    pub fn state(&self) -> DeviceState {
        self.registry.state()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.registry.shutdown_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        for path in &self.sockets {
            let _ = std::fs::remove_file(path);
        }
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
    let registry = Arc::new(Registry::new(Arc::new(Device::new(policy))));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    {
        let registry = Arc::clone(&registry);
        let stop = Arc::clone(&stop);
        threads.push(
            std::thread::Builder::new()
                .name("cprkit-device-accept".into())
                .spawn(move || accept_loop(&vhost_listener, &registry, &stop))?,
        );
    }
    {
        let registry = Arc::clone(&registry);
        let stop = Arc::clone(&stop);
        threads.push(
            std::thread::Builder::new()
                .name("cprkit-device-control".into())
                .spawn(move || control::accept_loop(&control_listener, &registry, &stop))?,
        );
    }
    eprintln!(
        "cprkit-device: serving vhost-user-blk on {} (policy {policy})",
        socket.display()
    );
    Ok(Daemon {
        registry,
        stop,
        threads,
        sockets: vec![socket.to_path_buf(), control.to_path_buf()],
    })
}

fn accept_loop(listener: &UnixListener, registry: &Registry, stop: &AtomicBool) {
    let device = &registry.device;
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
        registry.add(Arc::clone(&conn));
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
    registry.shutdown_all();
    for handle in sessions {
        let _ = handle.join();
    }
}
