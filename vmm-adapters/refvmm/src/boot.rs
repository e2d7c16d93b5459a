//! Starting a VMM that is not a migration target: fresh zeroed guest RAM,
//! the vCPU (running, or `prelaunch` with `-S`) and the QMP monitor.

use std::sync::Arc;

use crate::cli::Config;
use crate::log::{self, Role};
use crate::ram::GuestRam;
use crate::runstate::RunState;
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
    let vm = Arc::new(Vm::new(
        ram,
        RunState::Prelaunch,
        !cfg.no_autostart,
        cfg.mutant,
    ));
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
