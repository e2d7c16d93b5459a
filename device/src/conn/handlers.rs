//! The vhost-user message handlers of a connection: ownership (SET_OWNER,
//! RESET_OWNER), negotiation, memory, ring configuration; each answers,
//! refuses, or fires an armed fault, and leaves a ledger entry.

use std::fs::File;
use std::sync::Arc;

use vhost::VhostUserMemoryRegionBase;
use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight,
    VhostUserLog, VhostUserMemoryRegion, VhostUserProtocolFeatures, VhostUserShMemConfig,
    VhostUserSharedMsg, VhostUserSingleMemoryRegion, VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::{GpuBackend, Result as VuResult, VhostUserBackendReqHandler};

use super::{Connection, FEATURES, show_pid};
use crate::device::TakeOutcome;
use crate::disk::Disk;
use crate::fault::Trigger;
use crate::ledger::OwnerChange;
use crate::memory::GuestMap;
use crate::ring::{self, RingAddrs};

fn fd_detail(index: u8, fd: &Option<File>) -> String {
    match fd {
        Some(_) => format!("ring {index}"),
        None => format!("ring {index} no fd"),
    }
}

impl VhostUserBackendReqHandler for Connection {
    fn set_owner(&self) -> VuResult<()> {
        const NAME: &str = "SET_OWNER";
        let delayed = self.gate(Trigger::Take, NAME, "", true)?;
        match self.device.take(self.who()) {
            TakeOutcome::Taken { overlap } => {
                if let Some(other) = overlap {
                    self.owner_change(OwnerChange::Overlap {
                        with_conn: other.conn,
                        with_pid: other.pid,
                    });
                }
                self.owner_change(OwnerChange::Take);
                self.ok(NAME, "", delayed);
                Ok(())
            }
            TakeOutcome::Already => {
                self.ok(NAME, "already owner", delayed);
                Ok(())
            }
            TakeOutcome::Busy { owner } => {
                self.owner_change(OwnerChange::RefusedBusy {
                    owner_conn: Some(owner.conn),
                    owner_pid: owner.pid,
                    injected: false,
                });
                let why = format!(
                    "busy: owned by conn {} (pid {})",
                    owner.conn,
                    show_pid(owner.pid)
                );
                Err(self.refuse(NAME, "", &why, true, delayed))
            }
        }
    }

    fn reset_owner(&self) -> VuResult<()> {
        const NAME: &str = "RESET_OWNER";
        let delayed = self.gate(Trigger::Release, NAME, "", true)?;
        self.stop_all(NAME);
        self.device.release(self.who(), NAME);
        self.ok(NAME, "", delayed);
        Ok(())
    }

    fn reset_device(&self) -> VuResult<()> {
        Err(self.unsupported("RESET_DEVICE", true))
    }

    fn get_features(&self) -> VuResult<u64> {
        self.lock().features_offered = true;
        self.ok("GET_FEATURES", &format!("0x{FEATURES:x}"), 0);
        Ok(FEATURES)
    }

    fn set_features(&self, features: u64) -> VuResult<()> {
        let detail = format!("0x{features:x}");
        if features & !FEATURES != 0 {
            return Err(self.refuse("SET_FEATURES", &detail, "features not offered", true, 0));
        }
        self.lock().acked_features = features;
        self.ok("SET_FEATURES", &detail, 0);
        Ok(())
    }

    fn set_mem_table(
        &self,
        regions: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy: Option<bool>,
    ) -> VuResult<Option<Vec<VhostUserMemoryRegionBase>>> {
        const NAME: &str = "SET_MEM_TABLE";
        let detail = format!("{} regions", regions.len());
        let map = match GuestMap::map(regions, files) {
            Ok(map) => Arc::new(map),
            Err(e) => return Err(self.refuse(NAME, &detail, &e.to_string(), true, 0)),
        };
        let mut inner = self.lock();
        let running: Vec<u16> = inner
            .rings
            .iter()
            .filter(|(_, r)| r.running())
            .map(|(&i, _)| i)
            .collect();
        for &index in &running {
            self.stop_ring(&mut inner, index, NAME);
        }
        inner.map = Some(map);
        let all: Vec<u16> = inner.rings.keys().copied().collect();
        for index in all {
            self.maybe_start(&mut inner, index);
        }
        drop(inner);
        self.ok(NAME, &detail, 0);
        Ok(None)
    }

    fn set_vring_num(&self, index: u32, num: u32) -> VuResult<()> {
        const NAME: &str = "SET_VRING_NUM";
        let detail = format!("ring {index} num {num}");
        let ring = self.ring_index(NAME, &detail, index, true)?;
        let size = match u16::try_from(num) {
            Ok(n) if n > 0 && n <= ring::MAX_RING_SIZE && n.is_power_of_two() => n,
            _ => return Err(self.refuse(NAME, &detail, "bad ring size", true, 0)),
        };
        self.reconfigure(ring, NAME, |r| r.num = size);
        self.ok(NAME, &detail, 0);
        Ok(())
    }

    fn set_vring_addr(
        &self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> VuResult<()> {
        const NAME: &str = "SET_VRING_ADDR";
        let detail =
            format!("ring {index} desc 0x{descriptor:x} avail 0x{available:x} used 0x{used:x}");
        let ring = self.ring_index(NAME, &detail, index, true)?;
        self.reconfigure(ring, NAME, |r| {
            r.addrs = Some(RingAddrs {
                desc: descriptor,
                avail: available,
                used,
            });
            r.stopped = false;
        });
        self.ok(NAME, &detail, 0);
        Ok(())
    }

    fn set_vring_base(&self, index: u32, base: u32) -> VuResult<()> {
        const NAME: &str = "SET_VRING_BASE";
        let detail = format!("ring {index} base {base}");
        let ring = self.ring_index(NAME, &detail, index, true)?;
        let Ok(base) = u16::try_from(base) else {
            return Err(self.refuse(NAME, &detail, "base above 65535", true, 0));
        };
        self.reconfigure(ring, NAME, |r| {
            r.base = base;
            r.used = base;
            r.stopped = false;
        });
        self.ok(NAME, &detail, 0);
        Ok(())
    }

    fn get_vring_base(&self, index: u32) -> VuResult<VhostUserVringState> {
        const NAME: &str = "GET_VRING_BASE";
        let ring = self.ring_index(NAME, &format!("ring {index}"), index, false)?;
        let delayed = self.gate(Trigger::Release, NAME, &format!("ring {index}"), false)?;
        let base = {
            let mut inner = self.lock();
            let base = self.stop_ring(&mut inner, ring, NAME);
            let ring = inner.rings.entry(ring).or_default();
            ring.stopped = true;
            base
        };
        self.ok(NAME, &format!("ring {index} base {base}"), delayed);
        Ok(VhostUserVringState::new(index, u32::from(base)))
    }

    fn set_vring_kick(&self, index: u8, fd: Option<File>) -> VuResult<()> {
        const NAME: &str = "SET_VRING_KICK";
        let detail = fd_detail(index, &fd);
        let ring = self.ring_index(NAME, &detail, u32::from(index), true)?;
        self.reconfigure(ring, NAME, |r| {
            r.kick = fd;
            r.stopped = false;
        });
        self.ok(NAME, &detail, 0);
        Ok(())
    }

    fn set_vring_call(&self, index: u8, fd: Option<File>) -> VuResult<()> {
        const NAME: &str = "SET_VRING_CALL";
        let detail = fd_detail(index, &fd);
        let ring = self.ring_index(NAME, &detail, u32::from(index), true)?;
        {
            let mut inner = self.lock();
            let r = inner.rings.entry(ring).or_default();
            *r.call.lock().unwrap_or_else(|e| e.into_inner()) = fd;
        }
        self.ok(NAME, &detail, 0);
        Ok(())
    }

    fn set_vring_err(&self, index: u8, fd: Option<File>) -> VuResult<()> {
        const NAME: &str = "SET_VRING_ERR";
        let detail = fd_detail(index, &fd);
        self.ring_index(NAME, &detail, u32::from(index), true)?;
        self.ok(NAME, &detail, 0);
        Ok(())
    }

    fn get_protocol_features(&self) -> VuResult<VhostUserProtocolFeatures> {
        let features = VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIG;
        self.ok(
            "GET_PROTOCOL_FEATURES",
            &format!("0x{:x}", features.bits()),
            0,
        );
        Ok(features)
    }

    fn set_protocol_features(&self, features: u64) -> VuResult<()> {
        self.lock().acked_protocol = features;
        self.ok("SET_PROTOCOL_FEATURES", &format!("0x{features:x}"), 0);
        Ok(())
    }

    fn get_queue_num(&self) -> VuResult<u64> {
        self.ok("GET_QUEUE_NUM", "1", 0);
        Ok(1)
    }

    fn set_vring_enable(&self, index: u32, enable: bool) -> VuResult<()> {
        const NAME: &str = "SET_VRING_ENABLE";
        let detail = format!("ring {index} enable {}", u8::from(enable));
        let ring = self.ring_index(NAME, &detail, index, true)?;
        let delayed = if enable {
            0
        } else {
            self.gate(Trigger::Release, NAME, &detail, true)?
        };
        {
            let mut inner = self.lock();
            if !enable {
                self.stop_ring(&mut inner, ring, "SET_VRING_ENABLE 0");
            }
            inner.rings.entry(ring).or_default().enabled = Some(enable);
            if enable {
                self.maybe_start(&mut inner, ring);
            }
        }
        self.ok(NAME, &detail, delayed);
        Ok(())
    }

    fn get_config(
        &self,
        offset: u32,
        size: u32,
        _flags: VhostUserConfigFlags,
    ) -> VuResult<Vec<u8>> {
        self.ok("GET_CONFIG", &format!("offset {offset} size {size}"), 0);
        Ok(Disk::config(offset, size))
    }

    fn set_config(&self, offset: u32, buf: &[u8], _flags: VhostUserConfigFlags) -> VuResult<()> {
        // The config space is read-only; writes are accepted and ignored.
        self.ok(
            "SET_CONFIG",
            &format!("offset {offset} size {}", buf.len()),
            0,
        );
        Ok(())
    }

    fn set_gpu_socket(&self, _gpu_backend: GpuBackend) -> VuResult<()> {
        Err(self.unsupported("GPU_SET_SOCKET", true))
    }

    fn get_shared_object(&self, _uuid: VhostUserSharedMsg) -> VuResult<File> {
        Err(self.unsupported("GET_SHARED_OBJECT", false))
    }

    fn get_inflight_fd(
        &self,
        _inflight: &VhostUserInflight,
    ) -> VuResult<(VhostUserInflight, File)> {
        Err(self.unsupported("GET_INFLIGHT_FD", false))
    }

    fn set_inflight_fd(&self, _inflight: &VhostUserInflight, _file: File) -> VuResult<()> {
        Err(self.unsupported("SET_INFLIGHT_FD", true))
    }

    fn get_max_mem_slots(&self) -> VuResult<u64> {
        Err(self.unsupported("GET_MAX_MEM_SLOTS", false))
    }

    fn add_mem_region(
        &self,
        _region: &VhostUserSingleMemoryRegion,
        _fd: File,
        _postcopy: Option<bool>,
    ) -> VuResult<Option<VhostUserMemoryRegionBase>> {
        Err(self.unsupported("ADD_MEM_REG", true))
    }

    fn remove_mem_region(&self, _region: &VhostUserSingleMemoryRegion) -> VuResult<()> {
        Err(self.unsupported("REM_MEM_REG", true))
    }

    fn set_device_state_fd(
        &self,
        _direction: VhostTransferStateDirection,
        _phase: VhostTransferStatePhase,
        _fd: File,
    ) -> VuResult<Option<File>> {
        Err(self.unsupported("SET_DEVICE_STATE_FD", false))
    }

    fn check_device_state(&self) -> VuResult<()> {
        Err(self.unsupported("CHECK_DEVICE_STATE", false))
    }

    fn get_shmem_config(&self) -> VuResult<VhostUserShMemConfig> {
        Err(self.unsupported("GET_SHMEM_CONFIG", false))
    }

    fn set_log_base(&self, _log: &VhostUserLog, _file: File) -> VuResult<()> {
        Err(self.unsupported("SET_LOG_BASE", false))
    }
}
