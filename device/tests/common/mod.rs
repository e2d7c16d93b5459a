//! Test fixtures: an in-process daemon in a temp dir, and a real frontend (the vhost crate's
//! `Frontend`) with memfd guest memory and a split virtqueue laid out by hand.
#![allow(dead_code)]

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cprkit_device::{Daemon, DeviceClient, EntryKind, LedgerEntry, Policy, serve};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use vhost::vhost_user::message::VhostUserHeaderFlag;
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{
    Address, Bytes, FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion,
};
use vmm_sys_util::eventfd::EventFd;

pub const GUEST_SIZE: usize = 1 << 20;
/// A made-up frontend user address of guest address 0 (the daemon must translate).
pub const USER_BASE: u64 = 0x7f12_0000_0000;
pub const QSIZE: u16 = 16;
pub const DESC: u64 = 0x1000;
pub const AVAIL: u64 = 0x2000;
pub const USED: u64 = 0x3000;
pub const HDRS: u64 = 0x4000;
pub const STATUS: u64 = 0x5000;
pub const DATA: u64 = 0x10000;
pub const SLOTS: u16 = 5;
pub const WAIT: Duration = Duration::from_secs(3);

pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;

/// A daemon serving in a temp dir.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub control: PathBuf,
    pub daemon: Option<Daemon>,
}

impl Fixture {
    pub fn new(policy: Policy) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("vhost.sock");
        let control = dir.path().join("control.sock");
        let daemon = serve(&socket, &control, policy).expect("serve");
        Fixture {
            dir,
            socket,
            control,
            daemon: Some(daemon),
        }
    }

    pub fn client(&self) -> DeviceClient {
        DeviceClient::connect(&self.control, WAIT).expect("control connect")
    }

    pub fn frontend(&self) -> Front {
        Front::connect(&self.socket)
    }

    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.client().ledger(0).expect("ledger")
    }

    /// Waits (on the daemon's condvar, through wait-io-like polling of the ledger) until an
    /// entry matching `pred` exists.
    pub fn wait_entry(&self, pred: impl Fn(&LedgerEntry) -> bool) -> LedgerEntry {
        let deadline = Instant::now() + WAIT;
        let mut client = self.client();
        loop {
            let entries = client.ledger(0).expect("ledger");
            if let Some(e) = entries.iter().find(|e| pred(e)) {
                return e.clone();
            }
            assert!(Instant::now() < deadline, "no such entry in {entries:#?}");
            // Block until anything new is appended (a mark from nobody never comes, so this
            // is a bounded wait on the ledger condvar via wait-io on an impossible pid).
            let _ = client.wait_io(-1, 0, Duration::from_millis(20));
        }
    }
}

pub fn me() -> i32 {
    std::process::id() as i32
}

/// Waits until `fd` is readable, or `timeout`.
pub fn wait_readable(fd: RawFd, timeout: Duration) -> bool {
    // SAFETY: fd stays open for the duration of the call (owned by the caller).
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0)
}

/// Guest memory (a memfd) with a split virtqueue in it.
pub struct Guest {
    pub file: std::fs::File,
    pub mem: GuestMemoryMmap,
    pub avail_idx: u16,
    pub used_seen: u16,
}

impl Guest {
    pub fn new() -> Self {
        let memfd = memfd::MemfdOptions::default()
            .create("cprkit-test-guest")
            .expect("memfd");
        let file = memfd.into_file();
        file.set_len(GUEST_SIZE as u64).expect("set_len");
        let region = MmapRegion::from_file(
            FileOffset::new(file.try_clone().expect("clone"), 0),
            GUEST_SIZE,
        )
        .expect("mmap");
        let region = GuestRegionMmap::new(region, GuestAddress(0)).expect("region");
        let mem = GuestMemoryMmap::from_regions(vec![region]).expect("guest memory");
        Guest {
            file,
            mem,
            avail_idx: 0,
            used_seen: 0,
        }
    }

    pub fn region(&self) -> VhostUserMemoryRegionInfo {
        VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: GUEST_SIZE as u64,
            userspace_addr: USER_BASE,
            mmap_offset: 0,
            mmap_handle: self.file.as_raw_fd(),
        }
    }

    fn desc(&self, id: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(DESC + u64::from(id) * 16);
        self.mem.write_obj(addr, at).unwrap();
        self.mem.write_obj(len, at.unchecked_add(8)).unwrap();
        self.mem.write_obj(flags, at.unchecked_add(12)).unwrap();
        self.mem.write_obj(next, at.unchecked_add(14)).unwrap();
    }

    /// Lays out one request in slot `avail_idx % SLOTS` and publishes it; returns the slot.
    pub fn push(&mut self, kind: u32, sector: u64, out: &[u8], in_len: u32) -> u16 {
        const NEXT: u16 = 1;
        const WRITE: u16 = 2;
        let slot = self.avail_idx % SLOTS;
        let head = slot * 3;
        let hdr = HDRS + u64::from(slot) * 16;
        let data = DATA + u64::from(slot) * 0x1000;
        let status = STATUS + u64::from(slot) * 16;
        self.mem.write_obj(kind, GuestAddress(hdr)).unwrap();
        self.mem.write_obj(0u32, GuestAddress(hdr + 4)).unwrap();
        self.mem.write_obj(sector, GuestAddress(hdr + 8)).unwrap();
        self.mem.write_obj(0xffu8, GuestAddress(status)).unwrap();
        let (data_len, data_flags) = if kind == T_OUT {
            self.mem.write_slice(out, GuestAddress(data)).unwrap();
            (out.len() as u32, 0)
        } else {
            (in_len, WRITE)
        };
        if data_len > 0 {
            self.desc(head, hdr, 16, NEXT, head + 1);
            self.desc(head + 1, data, data_len, data_flags | NEXT, head + 2);
            self.desc(head + 2, status, 1, WRITE, 0);
        } else {
            self.desc(head, hdr, 16, NEXT, head + 2);
            self.desc(head + 2, status, 1, WRITE, 0);
        }
        let ring_at = AVAIL + 4 + u64::from(self.avail_idx % QSIZE) * 2;
        self.mem.write_obj(head, GuestAddress(ring_at)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
            .unwrap();
        slot
    }

    pub fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }

    pub fn status(&self, slot: u16) -> u8 {
        self.mem
            .read_obj(GuestAddress(STATUS + u64::from(slot) * 16))
            .unwrap()
    }

    pub fn data(&self, slot: u16, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.mem
            .read_slice(&mut buf, GuestAddress(DATA + u64::from(slot) * 0x1000))
            .unwrap();
        buf
    }
}

/// A frontend connection with its guest and eventfds.
pub struct Front {
    pub fe: Frontend,
    pub guest: Guest,
    pub kick: EventFd,
    pub call: EventFd,
}

impl Front {
    pub fn connect(path: &std::path::Path) -> Self {
        let fe = Frontend::connect(path, 1).expect("frontend connect");
        Front {
            fe,
            guest: Guest::new(),
            kick: EventFd::new(0).unwrap(),
            call: EventFd::new(0).unwrap(),
        }
    }

    /// GET_FEATURES, GET/SET_PROTOCOL_FEATURES (MQ | REPLY_ACK | CONFIG); with `need_reply`,
    /// every later message asks for a reply, as the reference VMM does.
    pub fn negotiate(&mut self, need_reply: bool) -> u64 {
        let features = self.fe.get_features().expect("get_features");
        let proto = self
            .fe
            .get_protocol_features()
            .expect("get_protocol_features");
        let want = VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIG;
        assert_eq!(proto, want);
        self.fe
            .set_protocol_features(want)
            .expect("set_protocol_features");
        if need_reply {
            self.fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        features
    }

    /// SET_FEATURES, mem table, ring 0 with `base`, kick, call, enable.
    pub fn start_ring(&mut self, features: u64, base: u16) {
        self.fe.set_features(features).expect("set_features");
        self.fe
            .set_mem_table(&[self.guest.region()])
            .expect("set_mem_table");
        self.fe
            .set_vring_call(0, &self.call)
            .expect("set_vring_call");
        self.fe.set_vring_num(0, QSIZE).expect("set_vring_num");
        self.fe.set_vring_base(0, base).expect("set_vring_base");
        let config = VringConfigData {
            queue_max_size: QSIZE,
            queue_size: QSIZE,
            flags: 0,
            desc_table_addr: USER_BASE + DESC,
            used_ring_addr: USER_BASE + USED,
            avail_ring_addr: USER_BASE + AVAIL,
            log_addr: None,
        };
        self.fe.set_vring_addr(0, &config).expect("set_vring_addr");
        self.fe
            .set_vring_kick(0, &self.kick)
            .expect("set_vring_kick");
        self.fe.set_vring_enable(0, true).expect("set_vring_enable");
    }

    /// The whole start-up: negotiate, SET_OWNER, ring 0 running from `base`.
    pub fn up(path: &std::path::Path, need_reply: bool, base: u16) -> Self {
        let mut front = Front::connect(path);
        let features = front.negotiate(need_reply);
        front.fe.set_owner().expect("set_owner");
        front.start_ring(features, base);
        front
    }

    /// Submits one request, kicks, waits for its completion; returns (slot, status).
    pub fn request(&mut self, kind: u32, sector: u64, out: &[u8], in_len: u32) -> (u16, u8) {
        let slot = self.guest.push(kind, sector, out, in_len);
        self.kick.write(1).unwrap();
        let want = self.guest.avail_idx;
        let deadline = Instant::now() + WAIT;
        while self.guest.used_idx() != want {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "request not completed (used {} want {want})",
                self.guest.used_idx()
            );
            if wait_readable(self.call.as_raw_fd(), left) {
                let _ = self.call.read();
            }
        }
        self.guest.used_seen = want;
        (slot, self.guest.status(slot))
    }

    pub fn write(&mut self, sector: u64, data: &[u8]) -> u8 {
        self.request(T_OUT, sector, data, 0).1
    }

    pub fn read(&mut self, sector: u64, len: u32) -> (u8, Vec<u8>) {
        let (slot, status) = self.request(T_IN, sector, &[], len);
        (status, self.guest.data(slot, len as usize))
    }
}

/// True if the peer closed `stream` (read returns 0 or a reset) within the wait.
pub fn closed_by_peer(stream: &mut UnixStream) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

pub fn kinds(entries: &[LedgerEntry]) -> Vec<&EntryKind> {
    entries.iter().map(|e| &e.kind).collect()
}

pub fn message<'a>(entries: &'a [LedgerEntry], name: &str) -> Vec<&'a LedgerEntry> {
    entries
        .iter()
        .filter(|e| matches!(&e.kind, EntryKind::Message { name: n, .. } if n == name))
        .collect()
}
