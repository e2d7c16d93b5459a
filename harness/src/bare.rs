//! A bare handover: two VMMs and a migrate, with no interposer, no hold, no
//! fault and no observation beyond "the target runs". The benchmark's baseline.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::adapter::{Adapter, Incoming, LaunchSpec, MigrateRequest, Role};
use crate::process::VmmProcess;
use crate::timeline::Timeline;
use crate::trial::TrialError;
use crate::trialdir::TrialDir;
use crate::unixnet;

/// The times of one bare handover.
#[derive(Debug, Clone, Copy)]
pub struct BareTimes {
    /// From starting the target to the target running, the VMMs stopped.
    pub whole: Duration,
    /// From the migrate command to the target running.
    pub handover: Duration,
}

/// Runs one bare handover of a running guest.
pub fn handover(adapter: &dyn Adapter, root: &Path) -> Result<BareTimes, TrialError> {
    let start = Instant::now();
    let dir = TrialDir::new(root, "bare", false).map_err(TrialError::Dir)?;
    let tl = Timeline::new();
    let incoming = Incoming {
        main: dir.join("t-main.sock"),
        cpr: dir.join("t-cpr.sock"),
    };
    let spec = |role, monitor: &str, incoming: Option<Incoming>| LaunchSpec {
        role,
        dir: dir.path().to_path_buf(),
        monitor: dir.join(monitor),
        incoming,
        shared_ram: true,
        vhost_user_blk: None,
        setup: Default::default(),
    };
    let target_spec = spec(Role::Target, "t-qmp.sock", Some(incoming.clone()));
    let source_spec = spec(Role::Source, "s-qmp.sock", None);
    let spawn = |s: &LaunchSpec| {
        VmmProcess::spawn(
            s.role,
            adapter.command(s)?,
            &dir.join(&format!("{}.log", s.role.name())),
            &tl,
            |_| {},
        )
        .map_err(|source| TrialError::Spawn {
            role: s.role.name(),
            source,
        })
    };
    let target = spawn(&target_spec)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    if !unixnet::wait_listening(&incoming.cpr, deadline, || !target.is_alive()) {
        return Err(TrialError::setup(
            "the target never listened",
            &dir.join("target.log"),
        ));
    }
    let _source = spawn(&source_spec)?;
    let mut src = adapter.connect(&source_spec, deadline, Box::new(|_| {}))?;
    src.prepare_cpr(&[])?;
    let migrate_at = Instant::now();
    src.migrate(&MigrateRequest {
        main: incoming.main.clone(),
        cpr: incoming.cpr.clone(),
        malformed: None,
    })?;
    let mut tgt = adapter.connect(&target_spec, deadline, Box::new(|_| {}))?;
    loop {
        if tgt.runstate()? == "running" {
            break;
        }
        if Instant::now() >= deadline {
            return Err(TrialError::setup(
                "the target never ran",
                &dir.join("target.log"),
            ));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let handover = migrate_at.elapsed();
    drop((src, tgt));
    Ok(BareTimes {
        whole: start.elapsed(),
        handover,
    })
}
