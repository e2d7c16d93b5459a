//! The QMP monitor (server side): a UNIX socket accepting clients one after
//! another, the greeting, capabilities negotiation, and one command per line,
//! each executed and answered under the VM state lock (see [`crate::vm`]).
//! A client going away never ends the VMM.

use std::io::{self, BufReader};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cprkit_qmp::wire::{Command, ErrorBody, Greeting, GreetingBody};
use serde_json::{Value, json};

use crate::commands;
use crate::listen::Listener;
use crate::outbox::Session;
use crate::vm::Vm;

/// Bound on a write to a client (a client that stops reading is dropped).
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The greeting line.
pub fn greeting() -> String {
    let g = Greeting {
        qmp: GreetingBody {
            version: json!({
                "qemu": {"major": 10, "minor": 0, "micro": 0},
                "package": "refvmm",
            }),
            capabilities: vec![],
        },
    };
    serde_json::to_string(&g).expect("the greeting serialises")
}

/// Binds the QMP socket at `path` and serves it on its own thread.
pub fn start(path: &Path, vm: Arc<Vm>) -> io::Result<()> {
    let listener = Listener::bind(path)?;
    std::thread::Builder::new()
        .name("qmp".into())
        .spawn(move || {
            for conn in listener.listener.incoming() {
                match conn {
                    Ok(stream) => serve(stream, &vm),
                    Err(e) => {
                        crate::log!("monitor: accept: {e}");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        })?;
    Ok(())
}

fn serve(stream: UnixStream, vm: &Arc<Vm>) {
    let _ = stream.set_write_timeout(Some(CLIENT_WRITE_TIMEOUT));
    let reader = match stream.try_clone() {
        Ok(r) => r,
        Err(e) => {
            crate::log!("monitor: {e}");
            return;
        }
    };
    let session = vm.outbox.attach(stream, &greeting());
    let mut reader = BufReader::new(reader);
    loop {
        match crate::proto::read_line(&mut reader) {
            Ok(Some(line)) => handle_line(vm, session, &line),
            Ok(None) => break,
            Err(e) => {
                crate::log!("monitor: dropping the client: {e}");
                break;
            }
        }
    }
    vm.outbox.detach(session);
}

fn generic(desc: impl Into<String>) -> ErrorBody {
    ErrorBody {
        class: "GenericError".into(),
        desc: desc.into(),
    }
}

fn handle_line(vm: &Arc<Vm>, session: Session, line: &[u8]) {
    if line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            let err = generic(format!("JSON parse error, {e}"));
            vm.outbox.reply(session, None, Err(err));
            return;
        }
    };
    let id = value.get("id").cloned();
    let cmd: Command = match serde_json::from_value(value) {
        Ok(c) => c,
        Err(_) => {
            let err = generic("QMP input lacks member 'execute'");
            vm.outbox.reply(session, id, Err(err));
            return;
        }
    };
    if !vm.outbox.negotiated(session) {
        let result = if cmd.execute == "qmp_capabilities" {
            vm.outbox.set_negotiated(session);
            Ok(json!({}))
        } else {
            Err(ErrorBody {
                class: "CommandNotFound".into(),
                desc: "Expecting capabilities negotiation with 'qmp_capabilities'".into(),
            })
        };
        vm.outbox.reply(session, id, result);
        return;
    }
    let args = cmd.arguments.unwrap_or_else(|| json!({}));
    let mut st = vm.lock();
    let outcome = commands::execute(vm, &mut st, &cmd.execute, &args);
    vm.outbox.reply(session, id, outcome.result);
    if outcome.quit {
        crate::log!("monitor: quit");
        crate::log::exit(0);
    }
}
