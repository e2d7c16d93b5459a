//! A [`Monitor`] over QMP: how the refvmm and QEMU adapters command their VMMs.

use std::path::Path;
use std::time::{Duration, Instant};

use cprkit_qmp::{Client, QmpError, ReceivedEvent};
use serde_json::{Value, json};

use cprkit_harness::adapter::{
    AdapterError, EventSink, MigrateRequest, MigrationInfo, Monitor, VmEvent, until,
};
use cprkit_harness::plan::BadRequest;
use cprkit_harness::scenario::OnFailedLoad;

/// A connected QMP monitor.
pub struct QmpMonitor {
    client: Client,
}

impl QmpMonitor {
    /// Connects (retrying while the socket is not there yet) until `deadline`.
    pub fn connect(
        path: &Path,
        deadline: Instant,
        events: EventSink,
    ) -> Result<Self, AdapterError> {
        let on_event =
            Box::new(move |ev: ReceivedEvent| events(to_vm_event(&ev.event.event, &ev.event.data)));
        let client = Client::connect(
            path,
            until(deadline).max(Duration::from_millis(1)),
            on_event,
        )
        .map_err(|e| AdapterError::Monitor(e.to_string()))?;
        Ok(QmpMonitor { client })
    }

    fn exec(&self, command: &str, args: Option<Value>) -> Result<Value, AdapterError> {
        self.client.execute(command, args).map_err(|e| match e {
            QmpError::Command { command, desc, .. } => AdapterError::Refused { command, desc },
            other => AdapterError::Monitor(other.to_string()),
        })
    }
}

/// Connects to the QMP monitor a VMM was told to create (`spec.monitor`): the
/// whole `Adapter::connect` of a VMM commanded over QMP.
pub fn connect_qmp(
    spec: &cprkit_harness::adapter::LaunchSpec,
    deadline: Instant,
    events: EventSink,
) -> Result<Box<dyn Monitor>, AdapterError> {
    Ok(Box::new(QmpMonitor::connect(
        &spec.monitor,
        deadline,
        events,
    )?))
}

fn to_vm_event(name: &str, data: &Value) -> VmEvent {
    match name {
        "STOP" => VmEvent::Stop,
        "RESUME" => VmEvent::Resume,
        "MIGRATION" => VmEvent::Migration(data["status"].as_str().unwrap_or("?").to_string()),
        other => VmEvent::Other(other.to_string()),
    }
}

fn unix(path: &Path) -> Value {
    json!({"transport": "socket", "type": "unix", "path": path.to_string_lossy()})
}

/// The `channels` argument of `migrate` for a request, malformed on purpose when asked.
pub fn migrate_channels(req: &MigrateRequest) -> Value {
    let main = json!({"channel-type": "main", "addr": unix(&req.main)});
    let cpr = json!({"channel-type": "cpr", "addr": unix(&req.cpr)});
    match req.malformed {
        None | Some(BadRequest::PrivateRam) => json!([main, cpr]),
        Some(BadRequest::NoMainChannel) => json!([cpr]),
        Some(BadRequest::NonUnixCpr) => json!([main, {
            "channel-type": "cpr",
            "addr": {"transport": "socket", "type": "inet", "host": "127.0.0.1", "port": "9"}
        }]),
    }
}

impl Monitor for QmpMonitor {
    fn prepare_cpr(&mut self, capabilities: &[String]) -> Result<(), AdapterError> {
        let caps: Vec<Value> = std::iter::once("events")
            .chain(capabilities.iter().map(String::as_str))
            .map(|c| json!({"capability": c, "state": true}))
            .collect();
        self.exec(
            "migrate-set-capabilities",
            Some(json!({ "capabilities": caps })),
        )?;
        self.exec(
            "migrate-set-parameters",
            Some(json!({"mode": "cpr-transfer"})),
        )?;
        Ok(())
    }

    fn set_answer_bound(&mut self, bound: Duration) {
        self.client.set_reply_timeout(bound);
    }

    fn migrate(&mut self, req: &MigrateRequest) -> Result<(), AdapterError> {
        self.exec("migrate", Some(json!({"channels": migrate_channels(req)})))
            .map(|_| ())
    }

    /// `migrate-incoming` with the main channel; `exit-on-error` false for
    /// a target that stays alive when its load fails.
    fn incoming_main(
        &mut self,
        main: &Path,
        on_failed_load: OnFailedLoad,
    ) -> Result<(), AdapterError> {
        let mut args = json!({"channels": [{"channel-type": "main", "addr": unix(main)}]});
        if on_failed_load == OnFailedLoad::Stay {
            args["exit-on-error"] = json!(false);
        }
        self.exec("migrate-incoming", Some(args)).map(|_| ())
    }

    fn cancel(&mut self) -> Result<(), AdapterError> {
        self.exec("migrate_cancel", None).map(|_| ())
    }

    fn stop(&mut self) -> Result<(), AdapterError> {
        self.exec("stop", None).map(|_| ())
    }

    fn cont(&mut self) -> Result<(), AdapterError> {
        self.exec("cont", None).map(|_| ())
    }

    fn runstate(&mut self) -> Result<String, AdapterError> {
        let v = self.exec("query-status", None)?;
        v["status"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| AdapterError::Monitor(format!("query-status: {v}")))
    }

    fn migration(&mut self) -> Result<MigrationInfo, AdapterError> {
        let v = self.exec("query-migrate", None)?;
        Ok(MigrationInfo {
            status: v["status"].as_str().unwrap_or("none").to_string(),
            error: v["error-desc"].as_str().map(str::to_string),
        })
    }
}
