#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Host side of disk hot-plug for `evs-vm system-run`.

    system-ctl.py QMP_SOCKET CTL_SOCKET [SERIAL=IMAGE...]

Connects to qemu's QMP socket and to the chardev socket behind the guest's
virtio-serial port evs.ctl (both created by qemu with server=on,wait=off),
then serves the guest's requests, one line each:

    plug SERIAL...     blockdev-add (raw over the file IMAGE) + device_add
                       (virtio-blk-pci, id and serial SERIAL), for each SERIAL
                       back to back: many disks appear at once
    unplug SERIAL...   device_del of each, then wait for their DEVICE_DELETED,
                       blockdev-del

answering "ok" or "error REASON" on the same port.  Only the SERIALs given on
the command line can be plugged.  Exits when qemu goes away.  Logs to stderr.
"""

import json
import select
import socket
import sys
import time


def log(msg):
    print(f"system-ctl: {msg}", file=sys.stderr, flush=True)


def connect(path, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Qmp:
    def __init__(self, path):
        self.sock = connect(path)
        self.buf = b""
        self.events = []
        greeting = self._read()
        if "QMP" not in greeting:
            raise RuntimeError(f"not a QMP greeting: {greeting}")
        self.command("qmp_capabilities")

    def _read(self, timeout=60):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("QMP did not answer")
            r, _, _ = select.select([self.sock], [], [], left)
            if r:
                data = self.sock.recv(65536)
                if not data:
                    raise EOFError("QMP socket closed")
                self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def command(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise RuntimeError(f"{name}: {reply['error'].get('desc', reply['error'])}")
            return reply.get("return")

    def wait_event(self, name, match, timeout):
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name and match(ev.get("data", {})):
                    del self.events[i]
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {name} event within {timeout}s")
            reply = self._read(left)
            if "event" in reply:
                self.events.append(reply)


def plug(qmp, disks, plugged, serial):
    if serial not in disks:
        raise RuntimeError(f"no hot-plug disk with serial {serial}")
    if serial in plugged:
        raise RuntimeError(f"{serial} is already plugged")
    node = f"hp-{serial}"
    qmp.command("blockdev-add", **{"driver": "raw", "node-name": node,
                                   "file": {"driver": "file", "filename": disks[serial]}})
    try:
        qmp.command("device_add", driver="virtio-blk-pci", id=f"hp-dev-{serial}", drive=node, serial=serial)
    except Exception:
        qmp.command("blockdev-del", **{"node-name": node})
        raise
    plugged.add(serial)


def unplug(qmp, plugged, serials):
    for serial in serials:
        if serial not in plugged:
            raise RuntimeError(f"{serial} is not plugged")
    for serial in serials:
        qmp.command("device_del", id=f"hp-dev-{serial}")
    for serial in serials:
        dev = f"hp-dev-{serial}"
        # The guest has to acknowledge the ACPI eject first.
        qmp.wait_event("DEVICE_DELETED", lambda d, dev=dev: d.get("device") == dev, 60 + 3 * len(serials))
        qmp.command("blockdev-del", **{"node-name": f"hp-{serial}"})
        plugged.discard(serial)


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    qmp_path, ctl_path = sys.argv[1:3]
    disks = {}
    for spec in sys.argv[3:]:
        serial, _, path = spec.partition("=")
        disks[serial] = path
    qmp = Qmp(qmp_path)
    ctl = connect(ctl_path)
    log(f"connected; hot-plug disks: {', '.join(sorted(disks)) or 'none'}")
    plugged = set()
    buf = b""
    while True:
        r, _, _ = select.select([ctl, qmp.sock], [], [])
        if qmp.sock in r:
            data = qmp.sock.recv(65536)
            if not data:
                return 0
            qmp.buf += data
            while b"\n" in qmp.buf:
                line, qmp.buf = qmp.buf.split(b"\n", 1)
                qmp.events.append(json.loads(line))
            qmp.events = [e for e in qmp.events if e.get("event") == "DEVICE_DELETED"][-32:]
        if ctl not in r:
            continue
        data = ctl.recv(4096)
        if not data:
            return 0
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            words = line.decode(errors="replace").split()
            log(f"guest: {' '.join(words)}")
            try:
                if len(words) >= 2 and words[0] == "plug":
                    for serial in words[1:]:
                        plug(qmp, disks, plugged, serial)
                elif len(words) >= 2 and words[0] == "unplug":
                    unplug(qmp, plugged, words[1:])
                else:
                    raise RuntimeError("want 'plug SERIAL...' or 'unplug SERIAL...'")
                answer = "ok"
            except (EOFError, BrokenPipeError):
                return 0
            except Exception as e:  # pylint: disable=broad-except
                answer = f"error {e}"
            log(f"host: {answer}")
            ctl.sendall(answer.encode() + b"\n")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
