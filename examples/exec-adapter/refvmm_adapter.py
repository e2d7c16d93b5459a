#!/usr/bin/env python3
"""A cprkit exec adapter for refvmm, the kit's reference VMM.

    cprkit run --vmm exec:examples/exec-adapter/refvmm_adapter.py

It speaks cprkit-exec/1 (docs/exec-adapter-protocol.md): one JSON object a
line, requests on stdin, replies and events on stdout; stderr is its log. The
kit runs it once per session: a launch session (hello, command, guest-probe) or
a monitor session (hello, connect, then commands for one VMM, over QMP).

refvmm is $CPRKIT_REFVMM, else `refvmm` on PATH, else the kit itself
(`$CPRKIT_EXE __refvmm`). $CPRKIT_EXEC_MUTANT, if set,
starts it with that mutant. Python 3.11, standard library only.

To adapt another VMM, change `command`, `guest_probe` and `Session.monitor`.
"""

import json
import os
import queue
import shutil
import socket
import sys
import threading
import time

PROTOCOL = "cprkit-exec/1"
RAM_SIZE = 2 * 1024 * 1024  # as the built-in refvmm adapter
QMP_TIMEOUT = 5.0  # seconds, for the greeting and for each reply

_stdout = threading.Lock()


def emit(msg):
    """Writes one line to the kit: replies and events, never interleaved."""
    with _stdout:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()


def log(text):
    print(f"refvmm_adapter[{os.getpid()}]: {text}", file=sys.stderr, flush=True)


class Failure(Exception):
    """A failed request: kind is "refused" (the VMM said no), "monitor" or "environment"."""

    def __init__(self, kind, message, command=None):
        super().__init__(message)
        self.kind, self.message, self.command = kind, message, command


# The launch session: how to start refvmm, and where its guest keeps the counter.

def refvmm():
    """The command that starts refvmm: $CPRKIT_REFVMM, refvmm on PATH, or the
    kit itself ($CPRKIT_EXE, set by the kit), which runs the refvmm of its own
    build when called with __refvmm first."""
    binary = os.environ.get("CPRKIT_REFVMM") or shutil.which("refvmm")
    if binary:
        return [binary]
    kit = os.environ.get("CPRKIT_EXE")
    if kit:
        return [kit, "__refvmm"]
    raise Failure("environment", "refvmm not found: set CPRKIT_REFVMM or put refvmm on PATH")


def command(req):
    argv = refvmm() + ["--qmp", req["monitor"], "--ram-size", str(RAM_SIZE)]
    if incoming := req["incoming"]:
        argv += ["--incoming-cpr", incoming["cpr"], "--incoming-main", incoming["main"]]
    if not req["shared_ram"]:
        argv.append("--private-ram")
    if device := req.get("vhost_user_blk"):
        argv += ["--vhost-user-blk", device]
    if mutant := os.environ.get("CPRKIT_EXEC_MUTANT"):
        argv += ["--mutant", mutant]
    return {"argv": argv, "env": {}}


def guest_probe():
    # refvmm's layout (refvmm/src/lib.rs).
    return {
        "ram_memfd_name": "cprkit-ram",
        "counter_offset": 0x1000,
        "counter_width": 8,
        "ring": {"offset": 0x2000, "entries": 256, "check": 0x5A5A5A5A5A5A5A5A},
        "device_io": True,
    }


# The monitor session: one QMP connection.

class Qmp:
    """A QMP client whose reader thread passes events on as they come."""

    def __init__(self, path, deadline):
        while True:  # the VMM may not have created its socket yet
            self.sock = socket.socket(socket.AF_UNIX)
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError) as e:
                self.sock.close()
                if time.monotonic() >= deadline:
                    raise Failure("monitor", f"cannot connect to QMP socket {path}: {e}")
                time.sleep(0.002)
        self.sock.settimeout(QMP_TIMEOUT)
        self.lines = self.sock.makefile("rb")
        try:
            greeting = json.loads(self.lines.readline())["QMP"]
        except (OSError, ValueError, KeyError) as e:
            self.sock.close()
            raise Failure("monitor", f"no QMP greeting on {path}: {e!r}")
        v = greeting["version"]
        self.version = "{} {major}.{minor}.{micro}".format(v.get("package", "?"), **v["qemu"])
        self.sock.settimeout(None)
        self.replies = queue.Queue()
        self.last_id = 0
        threading.Thread(target=self._read, daemon=True).start()
        self.execute("qmp_capabilities")

    def _read(self):
        try:
            for line in self.lines:
                msg = json.loads(line)
                if "event" in msg:
                    # Written before any later reply is queued: the kit's ordering.
                    data = msg.get("data") or {}
                    emit({"event": msg["event"], "status": data.get("status"), "vm": msg})
                else:
                    self.replies.put(msg)
        except (OSError, ValueError) as e:
            log(f"QMP: {e!r}")
        self.replies.put(None)  # the connection is over

    def execute(self, command, arguments=None):
        self.last_id += 1
        msg = {"execute": command, "id": self.last_id}
        if arguments is not None:
            msg["arguments"] = arguments
        try:
            self.sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as e:
            raise Failure("monitor", f"QMP {command}: {e}")
        while True:
            try:
                reply = self.replies.get(timeout=QMP_TIMEOUT)
            except queue.Empty:
                raise Failure("monitor", f"QMP {command}: no reply within {QMP_TIMEOUT:g} s")
            if reply is None:
                self.replies.put(None)
                raise Failure("monitor", f"QMP {command}: the VMM closed the connection")
            if reply.get("id") != self.last_id:
                continue  # the late reply to a command that timed out
            if "error" in reply:
                raise Failure("refused", reply["error"].get("desc", "?"), command)
            return reply.get("return", {})

    def close(self):
        self.sock.close()


def channels(req):
    """The `channels` of the migrate command, malformed when the kit asks."""
    def unix(path):
        return {"transport": "socket", "type": "unix", "path": path}

    main = {"channel-type": "main", "addr": unix(req["main"])}
    cpr = {"channel-type": "cpr", "addr": unix(req["cpr"])}
    bad = req["malformed"]
    if bad == "no-main-channel":
        return [cpr]
    if bad == "non-unix-cpr":
        inet = {"transport": "socket", "type": "inet", "host": "127.0.0.1", "port": "9"}
        return [main, {"channel-type": "cpr", "addr": inet}]
    return [main, cpr]  # also "private-ram": that VM was started without shared RAM


class Session:
    def __init__(self):
        self.qmp = None

    def handle(self, req):
        """The reply's fields for one request; raises Failure."""
        name = req["request"]
        if name == "hello":
            if req.get("protocol") != PROTOCOL:
                raise Failure("environment", f"this adapter speaks {PROTOCOL} only")
            return {"protocol": PROTOCOL}
        if name == "command":
            return command(req)
        if name == "guest-probe":
            return guest_probe()
        if name == "connect":
            self.qmp = Qmp(req["monitor"], time.monotonic() + req["deadline_ms"] / 1000)
            log(f"connected to {req['monitor']} ({self.qmp.version})")
            return {"version": self.qmp.version}
        if self.qmp is None:
            raise Failure("monitor", f"{name} before connect")
        return self.monitor(name, req)

    def monitor(self, name, req):
        q = self.qmp
        if name == "prepare-cpr":
            names = ["events"] + req.get("capabilities", [])
            caps = [{"capability": c, "state": True} for c in names]
            q.execute("migrate-set-capabilities", {"capabilities": caps})
            q.execute("migrate-set-parameters", {"mode": "cpr-transfer"})
        elif name == "migrate":
            q.execute("migrate", {"channels": channels(req)})
        elif name == "cancel":
            q.execute("migrate_cancel")
        elif name in ("stop", "cont"):
            q.execute(name)
        elif name == "runstate":
            return {"runstate": q.execute("query-status")["status"]}
        elif name == "migration":
            info = q.execute("query-migrate")
            return {"status": info.get("status", "none"), "error": info.get("error-desc")}
        else:
            raise Failure("environment", f"unknown request {name}")
        return {}


def main():
    session = Session()
    for line in sys.stdin:  # until the kit closes stdin (or kills us)
        req = json.loads(line)
        try:
            emit({"id": req["id"], "ok": True, **session.handle(req)})
        except Failure as e:
            error = {"kind": e.kind, "message": e.message}
            if e.command:
                error["command"] = e.command
            emit({"id": req["id"], "ok": False, "error": error})
    if session.qmp:
        session.qmp.close()


if __name__ == "__main__":
    main()
