//! The vhost-user-blk device (`--vhost-user-blk PATH`): who owns it and in
//! which state its ring is. [`Blk`] ties a backend connection
//! ([`frontend::Conn`]) to the guest's I/O thread ([`io::BlkIo`]) and keeps
//! the ring's base across a release, for the device state and for taking the
//! device back after a failed transfer.

pub mod frontend;
pub mod io;
pub mod virtqueue;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use self::frontend::Conn;
use self::io::BlkIo;
use self::virtqueue::SplitQueue;
use crate::ram::GuestRam;

/// How long the source keeps trying to take the device back after a failed
/// transfer.
pub const REACQUIRE_BOUND: Duration = Duration::from_secs(3);
/// Pause between two attempts to take the device back.
const REACQUIRE_PAUSE: Duration = Duration::from_millis(10);

/// Where the device stands with this process.
#[derive(Debug, Default)]
struct Dev {
    /// The connection, if any (none before attach, or once lost).
    conn: Option<Conn>,
    /// Ring 0 runs on the device.
    ring_started: bool,
    /// We gave the device up (RESET_OWNER) or lost the connection while
    /// owning it: the failure path must take it back.
    released: bool,
    /// The base from the last GET_VRING_BASE.
    base: Option<u16>,
}

/// The vhost-user-blk device of this VM.
#[derive(Debug)]
pub struct Blk {
    path: PathBuf,
    ram: Arc<GuestRam>,
    /// The guest's I/O thread.
    pub io: BlkIo,
    dev: Mutex<Dev>,
}

impl Blk {
    /// The device at the backend socket `path`, for the guest RAM `ram`; not
    /// connected yet, its I/O thread parked.
    pub fn new(path: &Path, ram: Arc<GuestRam>) -> Self {
        Self {
            path: path.to_path_buf(),
            io: BlkIo::new(Arc::clone(&ram)),
            ram,
            dev: Mutex::new(Dev::default()),
        }
    }

    fn dev(&self) -> MutexGuard<'_, Dev> {
        self.dev.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The backend socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The base from the last GET_VRING_BASE (or ring start).
    pub fn base(&self) -> Option<u16> {
        self.dev().base
    }

    /// The driver's ring index in guest RAM (`avail.idx`).
    pub fn driver_index(&self) -> u16 {
        SplitQueue::new(&self.ram).avail_idx()
    }

    /// Connects, handshakes, takes ownership (SET_OWNER), reads the capacity
    /// and sends the memory table. The error names the refused step.
    pub fn attach(&self) -> Result<()> {
        let conn = connect_and_own(&self.path, &self.ram)?;
        let mut dev = self.dev();
        dev.conn = Some(conn);
        dev.released = false;
        Ok(())
    }

    /// Starts ring 0 at `base` and hands its eventfds to the I/O thread.
    pub fn start_ring(&self, base: u16) -> Result<()> {
        let mut dev = self.dev();
        let conn = dev.conn.as_mut().context("no connection to the device")?;
        let fds = conn.start_ring(&self.ram, base)?;
        dev.ring_started = true;
        dev.base = Some(base);
        drop(dev);
        self.io.set_ring(Some(fds));
        crate::log!(
            "vhost-user-blk: ring 0 started at base {base} (SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, SET_VRING_CALL, SET_VRING_KICK, SET_VRING_ENABLE 1)"
        );
        Ok(())
    }

    /// Releases the device (the I/O thread must be stopped):
    /// SET_VRING_ENABLE 0, GET_VRING_BASE, RESET_OWNER, then closes the
    /// connection. Returns the base. On an error the device counts as lost
    /// (the failure path takes it back).
    pub fn release(&self) -> Result<u16> {
        self.io.set_ring(None);
        let mut guard = self.dev();
        let dev = &mut *guard;
        dev.released = true;
        dev.ring_started = false;
        dev.base = None;
        let Some(conn) = dev.conn.as_mut() else {
            anyhow::bail!("the connection to the device is gone");
        };
        let result = conn.stop_ring().and_then(|base| {
            dev.base = Some(base);
            crate::log!(
                "vhost-user-blk: ring 0 stopped (SET_VRING_ENABLE 0, GET_VRING_BASE {base})"
            );
            conn.reset_owner()?;
            crate::log!("vhost-user-blk: released (RESET_OWNER), disconnecting");
            Ok(base)
        });
        // Released or not, the connection goes: a backend that serves one
        // frontend at a time (qemu-storage-daemon) can then serve the target;
        // the failure path reconnects.
        dev.conn = None;
        result
    }

    /// Whether the failure path must take the device back (released, or
    /// the connection lost).
    pub fn needs_reacquire(&self) -> bool {
        let dev = self.dev();
        dev.released || dev.conn.is_none()
    }

    /// Takes the device back after a failed transfer (the I/O thread is
    /// stopped): SET_OWNER on the connection; if refused or gone, reconnect
    /// and redo the handshake every [`REACQUIRE_PAUSE`] for up to
    /// [`REACQUIRE_BOUND`]; then the memory table and ring 0 at the saved
    /// base (or the driver's index if no GET_VRING_BASE answered).
    pub fn reacquire(&self) -> Result<()> {
        let base = self.dev().base.unwrap_or_else(|| self.driver_index());
        let conn = self.dev().conn.take();
        let conn = match conn.map(|mut c| c.set_owner().map(|()| c)) {
            Some(Ok(mut c)) => {
                crate::log!("cleanup: vhost-user-blk: SET_OWNER on the same connection");
                c.set_mem_table(&self.ram)?;
                crate::log!("cleanup: vhost-user-blk: SET_MEM_TABLE");
                c
            }
            Some(Err(e)) => {
                crate::log!("cleanup: vhost-user-blk: {e:#}; reconnecting");
                self.reconnect()?
            }
            None => {
                crate::log!("cleanup: vhost-user-blk: no connection; reconnecting");
                self.reconnect()?
            }
        };
        {
            let mut dev = self.dev();
            dev.conn = Some(conn);
            dev.released = false;
        }
        self.start_ring(base)
            .context("restarting ring 0 after taking the device back")?;
        crate::log!("cleanup: vhost-user-blk: the device is ours again (base {base})");
        Ok(())
    }

    /// Reconnects and takes ownership, retrying within [`REACQUIRE_BOUND`]
    /// (an exclusive device refuses while a dying target still owns it).
    fn reconnect(&self) -> Result<Conn> {
        let deadline = Instant::now() + REACQUIRE_BOUND;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match connect_and_own(&self.path, &self.ram) {
                Ok(conn) => {
                    crate::log!(
                        "cleanup: vhost-user-blk: reconnected and owner again (attempt {attempts})"
                    );
                    return Ok(conn);
                }
                Err(e) if Instant::now() + REACQUIRE_PAUSE < deadline => {
                    if attempts == 1 {
                        crate::log!(
                            "cleanup: vhost-user-blk: {e:#}; retrying for up to {REACQUIRE_BOUND:?}"
                        );
                    }
                    std::thread::sleep(REACQUIRE_PAUSE);
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "could not take the device back in {REACQUIRE_BOUND:?} ({attempts} attempts)"
                    )));
                }
            }
        }
    }
}

/// A new connection, after the handshake, SET_OWNER, GET_CONFIG and
/// SET_MEM_TABLE, each logged.
fn connect_and_own(path: &Path, ram: &GuestRam) -> Result<Conn> {
    let mut conn = Conn::connect(path)?;
    crate::log!("vhost-user-blk: connected to {}", path.display());
    let proto = conn.handshake()?;
    conn.set_owner()?;
    crate::log!("vhost-user-blk: SET_OWNER");
    let capacity = conn.capacity(proto)?;
    crate::log!("vhost-user-blk: GET_CONFIG: capacity {capacity} sectors");
    conn.set_mem_table(ram)?;
    crate::log!(
        "vhost-user-blk: SET_MEM_TABLE (one region: gpa 0, {} bytes, at {:#x})",
        ram.len(),
        ram.host_addr()
    );
    Ok(conn)
}
