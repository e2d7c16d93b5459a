//! Starting a VMM that is not a migration target: fresh zeroed guest RAM,
//! its devices (a vhost-user-blk device with ring 0 started, a kernel vhost
//! device owned), the vCPU (running, or `prelaunch` with `-S`) and the QMP
//! monitor.

use std::sync::Arc;

use crate::blk::Blk;
use crate::cli::Config;
use crate::log::{self, Role};
use crate::ram::GuestRam;
use crate::runstate::RunState;
use crate::vhost_kernel::VhostKernel;
use crate::vm::Vm;

/// Boots the VM and serves QMP until `quit` or a signal ends the process.
pub fn run(cfg: &Config) -> ! {
    log::set_role(Role::Source);
    let ram = if cfg.private_ram {
        GuestRam::new_private(cfg.ram_size)
    } else {
        GuestRam::new_memfd(cfg.ram_size)
    };
    let ram = match ram {
        Ok(ram) => ram,
        Err(e) => {
            crate::log!("boot: guest RAM: {e:#}");
            log::exit(1)
        }
    };
    crate::log!(
        "boot: {} bytes of guest RAM ({})",
        cfg.ram_size,
        if cfg.private_ram { "private" } else { "memfd" }
    );
    if let Some(m) = cfg.mutant {
        crate::log!("boot: mutant {m}");
    }
    let mut vm = Vm::new(
        ram,
        RunState::Prelaunch,
        !cfg.no_autostart,
        cfg.mutant,
        cfg.guest_step,
    );
    vm.extra_devices = cfg.extra_devices.clone();
    attach_devices(cfg, &mut vm);
    let vm = Arc::new(vm);
    if !cfg.no_autostart {
        vm.start(&mut vm.lock());
    } else {
        crate::log!("boot: prelaunch (-S)");
    }
    if let Err(e) = crate::monitor::start(&cfg.qmp, Arc::clone(&vm)) {
        crate::log!("boot: QMP socket {}: {e}", cfg.qmp.display());
        log::exit(1)
    }
    crate::log!("boot: QMP monitor on {}", cfg.qmp.display());
    loop {
        std::thread::park();
    }
}

/// Takes the devices of the command line: the vhost-user-blk device (owned,
/// ring 0 started at the driver's index) and the kernel vhost device
/// (VHOST_SET_OWNER). A device that cannot be had ends the process.
fn attach_devices(cfg: &Config, vm: &mut Vm) {
    if let Some(path) = &cfg.vhost_user_blk {
        let blk = Blk::new(path, std::sync::Arc::clone(&vm.ram));
        let started = blk
            .attach()
            .and_then(|()| blk.start_ring(blk.driver_index()));
        if let Err(e) = started {
            crate::log!("boot: vhost-user-blk {}: {e:#}", path.display());
            log::exit(1)
        }
        vm.blk = Some(blk);
    }
    if let Some(path) = &cfg.vhost_kernel {
        let dev = match VhostKernel::open(path) {
            Ok(dev) => dev,
            Err(e) => {
                crate::log!("boot: {e:#}");
                log::exit(1)
            }
        };
        if let Err(e) = dev.set_owner() {
            crate::log!("boot: VHOST_SET_OWNER on {}: {e}", path.display());
            log::exit(1)
        }
        crate::log!(
            "boot: vhost device {} owned (VHOST_SET_OWNER)",
            path.display()
        );
        vm.vhost_kernel = Some(dev);
    }
}
