//! cprkit's vhost-user device daemon: a virtio-blk backend (rust-vmm `vhost` crate) that
//! serves several frontend connections at once, records every message in a ledger, applies
//! an ownership policy (`shared` or `exclusive`) and fires device faults armed at run time
//! through a JSON-lines control socket.
//!
//! Modules: [`ledger`] (entries), [`state`] (policy, state snapshot), [`fault`] (armed
//! faults), [`client`] (control client), [`protocol`] (control messages); the daemon itself
//! in `server` (listeners), `accept` (binding, timed accept), `session` (one connection's
//! loop), `conn` (message handlers), `registry` (the connections and the state snapshot),
//! `device` (shared device, ownership), `ring` (virtqueue workers), `blk` (requests),
//! `disk`, `memory` (guest memory), `control` (control server), `cli` (the process's main).

mod accept;
mod blk;
pub mod boot;
mod cli;
pub mod client;
mod conn;
mod control;
mod device;
pub mod disk;
pub mod fault;
pub mod ledger;
mod memory;
pub mod protocol;
mod registry;
mod ring;
mod server;
mod session;
pub mod state;

pub use cli::{USAGE, run};
pub use client::{DeviceClient, DeviceError};
pub use fault::{DeviceFault, DeviceFaultKind, Trigger};
pub use ledger::{Answer, EntryKind, LedgerEntry, OwnerChange};
pub use server::{Daemon, serve};
pub use state::{ConnState, DeviceState, Policy, RingState};

/// The virtio features the device offers.
pub use conn::FEATURES;
