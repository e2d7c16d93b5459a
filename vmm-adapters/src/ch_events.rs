//! Cloud Hypervisor's event monitor (`--event-monitor path=FILE`): where a
//! VMM writes its events, the file read as it grows (an event half written
//! waits for the next read), and each event in the kit's words. It is the
//! only way the kit learns a Cloud Hypervisor migration's outcome.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use cprkit_harness::adapter::{EventSink, LaunchSpec, VmEvent};
use serde_json::Value;

/// Where a VMM writes its events: beside its api socket.
pub fn events_path(spec: &LaunchSpec) -> PathBuf {
    let mut p = spec.monitor.clone().into_os_string();
    p.push(".events");
    PathBuf::from(p)
}

/// The events read so far from a VMM's event file.
pub(crate) struct EventFile {
    pub(crate) path: PathBuf,
    pub(crate) offset: u64,
    pub(crate) pending: Vec<u8>,
    /// The last migration status its events gave (`active`, `completed`, `failed`).
    pub(crate) status: Option<String>,
}

impl EventFile {
    /// Reads what was appended since the last read and hands each event on.
    pub(crate) fn read(&mut self, sink: &EventSink) {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if let Ok(n) = f.read_to_end(&mut buf) {
            self.offset += n as u64;
            self.pending.extend_from_slice(&buf);
        }
        let mut stream = serde_json::Deserializer::from_slice(&self.pending).into_iter::<Value>();
        let mut used = 0;
        let mut events = Vec::new();
        // An event half written stops the loop: the rest comes with the next read.
        while let Some(Ok(v)) = stream.next() {
            used = stream.byte_offset();
            events.push(v);
        }
        self.pending.drain(..used);
        for v in events {
            if let Some(ev) = v["event"].as_str().and_then(to_vm_event) {
                if let VmEvent::Migration(s) = &ev {
                    self.status = Some(s.clone());
                }
                sink(ev);
            }
        }
    }
}

/// The kit's event for one of Cloud Hypervisor's; `None` for those of its
/// start-up (`starting`, `booting`, `booted`), which precede every handover.
///
/// `STOP` is its `pausing`, the moment it starts stopping the vCPUs, not
/// the `paused` that follows within a fraction of a millisecond: it writes
/// its events from a thread of its own, and a process killed while it pauses
/// (its migration worker, by its own seccomp filter, at `snapshotting`) was
/// seen to lose the `paused`, never the `pausing` written before it.
pub fn to_vm_event(name: &str) -> Option<VmEvent> {
    Some(match name {
        "starting" | "booting" | "booted" => return None,
        "pausing" => VmEvent::Stop,
        "resumed" => VmEvent::Resume,
        "migration-started" | "migration-receive-started" => VmEvent::Migration("active".into()),
        "migration-finished" | "migration-receive-finished" => {
            VmEvent::Migration("completed".into())
        }
        "migration-failed" | "migration-receive-failed" => VmEvent::Migration("failed".into()),
        other => VmEvent::Other(other.to_string()),
    })
}
