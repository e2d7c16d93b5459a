//! A small synchronous QMP (QEMU Machine Protocol) client, and the wire types
//! it shares with refvmm's monitor.
//!
//! - [`wire`]: the line format (greeting, command, reply, event).
//! - [`client`]: a thread-based client over a UNIX socket; its types are
//!   re-exported at the crate root.

pub mod client;
pub mod wire;

pub use client::{Client, DEFAULT_REPLY_TIMEOUT, EventHandler, QmpError, ReceivedEvent};
