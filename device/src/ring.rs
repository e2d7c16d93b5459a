//! One virtqueue of a connection: its configuration as the frontend set it, and the worker
//! thread that serves it while it runs (waits on the kick eventfd, pops chains, signals call).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;

use virtio_queue::{Queue, QueueT};

use crate::blk;
use crate::device::Device;
use crate::ledger::EntryKind;
use crate::memory::GuestMap;

/// The largest ring the daemon accepts.
pub const MAX_RING_SIZE: u16 = 32768;
/// How long a worker waits on its eventfds before looking at its stop flag again.
const POLL_MS: u16 = 100;

/// Ring addresses as SET_VRING_ADDR gave them (frontend user addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingAddrs {
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

/// Why a ring could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("ring {ring}: {what} address 0x{addr:x} is in no memory region")]
    Untranslated {
        ring: u16,
        what: &'static str,
        addr: u64,
    },
    #[error("ring {ring}: bad size {size}: {source}")]
    Size {
        ring: u16,
        size: u16,
        source: virtio_queue::Error,
    },
    #[error("ring {ring}: queue invalid for the mapped memory (size {size})")]
    Invalid { ring: u16, size: u16 },
    #[error("ring {ring}: eventfd: {source}")]
    EventFd { ring: u16, source: std::io::Error },
    #[error("ring {ring}: spawn worker: {source}")]
    Spawn { ring: u16, source: std::io::Error },
}

/// Who a worker serves: for the ledger.
#[derive(Debug, Clone)]
pub struct Owner {
    pub device: Arc<Device>,
    pub conn: u32,
    pub pid: Option<i32>,
    pub io: Arc<AtomicU64>,
}

/// A running worker.
#[derive(Debug)]
struct Worker {
    /// Shut down to tell the worker to stop (it polls the other end).
    stop: UnixStream,
    thread: JoinHandle<Queue>,
}

/// One ring of one connection.
#[derive(Debug, Default)]
pub struct Ring {
    pub num: u16,
    pub addrs: Option<RingAddrs>,
    /// The next avail index to start from.
    pub base: u16,
    /// The next used index to start from.
    pub used: u16,
    pub kick: Option<File>,
    /// Shared with the worker, so that SET_VRING_CALL takes effect while running.
    pub call: Arc<Mutex<Option<File>>>,
    /// Explicit SET_VRING_ENABLE; `None` until one arrives.
    pub enabled: Option<bool>,
    /// Stopped by GET_VRING_BASE, until the frontend configures it again.
    pub stopped: bool,
    worker: Option<Worker>,
}

impl Ring {
    /// True while a worker serves the ring.
    pub fn running(&self) -> bool {
        self.worker.is_some()
    }

    /// Whether the ring should run: configured, enabled, not stopped.
    pub fn ready(&self, protocol_features: bool, mapped: bool) -> bool {
        self.addrs.is_some()
            && self.kick.is_some()
            && mapped
            && !self.stopped
            && self.enabled.unwrap_or(!protocol_features)
    }

    /// Starts a worker on the ring; returns the base it starts from.
    pub fn start(
        &mut self,
        index: u16,
        map: &Arc<GuestMap>,
        owner: Owner,
    ) -> Result<u16, StartError> {
        let Some(addrs) = self.addrs else {
            return Err(StartError::Invalid {
                ring: index,
                size: self.num,
            });
        };
        let kick = match &self.kick {
            Some(kick) => kick.try_clone().map_err(|source| StartError::EventFd {
                ring: index,
                source,
            })?,
            None => {
                return Err(StartError::Invalid {
                    ring: index,
                    size: self.num,
                });
            }
        };
        let translate = |what: &'static str, addr: u64| {
            map.user_to_guest(addr).ok_or(StartError::Untranslated {
                ring: index,
                what,
                addr,
            })
        };
        let desc = translate("descriptor", addrs.desc)?;
        let avail = translate("avail", addrs.avail)?;
        let used = translate("used", addrs.used)?;
        let mut queue = Queue::new(MAX_RING_SIZE).map_err(|source| StartError::Size {
            ring: index,
            size: self.num,
            source,
        })?;
        queue
            .try_set_size(self.num)
            .map_err(|source| StartError::Size {
                ring: index,
                size: self.num,
                source,
            })?;
        let _ = queue.try_set_desc_table_address(desc);
        let _ = queue.try_set_avail_ring_address(avail);
        let _ = queue.try_set_used_ring_address(used);
        queue.set_next_avail(self.base);
        queue.set_next_used(self.used);
        queue.set_ready(true);
        if !queue.is_valid(&map.mem) {
            return Err(StartError::Invalid {
                ring: index,
                size: self.num,
            });
        }
        let (stop, stop_clone) = UnixStream::pair().map_err(|source| StartError::EventFd {
            ring: index,
            source,
        })?;
        let map = Arc::clone(map);
        let call = Arc::clone(&self.call);
        let thread = std::thread::Builder::new()
            .name(format!("cprkit-ring-{}-{index}", owner.conn))
            .spawn(move || serve(index, queue, &map, &kick, &call, &stop_clone, &owner))
            .map_err(|source| StartError::Spawn {
                ring: index,
                source,
            })?;
        self.worker = Some(Worker { stop, thread });
        Ok(self.base)
    }

    /// Stops the worker, if any, and keeps where it got to; returns the next avail index.
    pub fn stop(&mut self) -> u16 {
        if let Some(worker) = self.worker.take() {
            let _ = worker.stop.shutdown(Shutdown::Both);
            match worker.thread.join() {
                Ok(queue) => {
                    self.base = queue.next_avail();
                    self.used = queue.next_used();
                }
                Err(_) => eprintln!("cprkit-device: a ring worker panicked"),
            }
        }
        self.base
    }
}

/// The worker: serves whatever is pending, then every kick, until told to stop.
fn serve(
    ring: u16,
    mut queue: Queue,
    map: &GuestMap,
    kick: &File,
    call: &Mutex<Option<File>>,
    stop: &UnixStream,
    owner: &Owner,
) -> Queue {
    drain(ring, &mut queue, map, call, owner);
    loop {
        let mut fds = [
            PollFd::new(kick.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        let ready = poll(&mut fds, PollTimeout::from(POLL_MS));
        let kicked = fds[0].revents().is_some_and(|r| !r.is_empty());
        let stopped = fds[1].revents().is_some_and(|r| !r.is_empty());
        if stopped {
            return queue;
        }
        match ready {
            Ok(0) => continue,
            Ok(_) if kicked => {
                let mut buf = [0u8; 8];
                let mut reader = kick;
                if reader.read(&mut buf).is_err() {
                    // A kick fd that errors (closed by the frontend): keep polling stop only.
                    eprintln!(
                        "cprkit-device: conn {} ring {ring}: kick fd unreadable",
                        owner.conn
                    );
                }
                drain(ring, &mut queue, map, call, owner);
            }
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("cprkit-device: conn {} ring {ring}: poll: {e}", owner.conn);
                // Wait for the stop signal only, with the same timeout.
                let mut fds = [PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, PollTimeout::from(POLL_MS));
            }
        }
    }
}

/// Pops and serves every available chain, then signals the call eventfd if any completed.
fn drain(ring: u16, queue: &mut Queue, map: &GuestMap, call: &Mutex<Option<File>>, owner: &Owner) {
    let mem = &map.mem;
    let mut completed = 0usize;
    while let Some(chain) = queue.pop_descriptor_chain(mem) {
        let head = chain.head_index();
        let written = match blk::serve(&owner.device.disk, mem, chain) {
            Ok(done) => {
                owner.io.fetch_add(1, Ordering::Relaxed);
                owner.device.ledger.push(
                    Some(owner.conn),
                    owner.pid,
                    EntryKind::Io {
                        ring,
                        op: done.op.to_string(),
                        sector: done.sector,
                        len: done.len,
                        status: done.status,
                    },
                );
                done.written
            }
            Err(e) => {
                eprintln!(
                    "cprkit-device: conn {} ring {ring}: request {head}: {e}",
                    owner.conn
                );
                owner.device.ledger.push(
                    Some(owner.conn),
                    owner.pid,
                    EntryKind::ProtocolError {
                        what: format!("ring {ring} request {head}: {e}"),
                    },
                );
                0
            }
        };
        if let Err(e) = queue.add_used(mem, head, written) {
            eprintln!(
                "cprkit-device: conn {} ring {ring}: add_used: {e}",
                owner.conn
            );
            break;
        }
        completed += 1;
    }
    if completed > 0 {
        let guard = call.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut fd) = guard.as_ref() {
            let _ = fd.write(&1u64.to_ne_bytes());
        }
    }
}
