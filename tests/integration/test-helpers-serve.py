#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Host integration test: the shipped exec helpers in persistent mode (evs-kms-exec(7), PERSISTENT HELPERS)
and in one-shot mode, helpers/evs-kms-vault against fake-vault-server on 127.0.0.1 and helpers/evs-kms-aws
against the stand-in `aws` CLI in fake-cli/. One `HELPER serve` process answers the handshake with exactly
{"serve":1}, then exactly one reply line per request line (describe, create, list, wrap, unwrap, errors),
an "invalid" error line for a line that is not a JSON object and for a bad request, goes on serving, and exits
0 at EOF; the data keys never reach its stderr. One-shot replies keep their format and interoperate.

  test-helpers-serve.py VAULT_HELPER AWS_HELPER FAKE_VAULT_SERVER FAKE_CLI_DIR
"""

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

VAULT_HELPER, AWS_HELPER, VAULT_SERVER, FAKE_CLI = (os.path.abspath(a) for a in sys.argv[1:5])
failures = 0


def check(what, cond):
    global failures
    print("%s: %s" % ("ok" if cond else "FAIL", what), flush=True)
    if not cond:
        failures += 1
    return cond


class Served:
    """A helper run as `HELPER serve`, stdin and stdout pipes, stderr to a file."""

    def __init__(self, helper, env, errfile):
        self.err = open(errfile, "wb")
        self.p = subprocess.Popen([helper, "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.err, env=env, start_new_session=True)
        self.fd = self.p.stdout.fileno()
        self.buf = b""
        self.lines = 0

    def _fill(self, timeout):
        r, _, _ = select.select([self.fd], [], [], timeout)
        if not r:
            return None
        chunk = os.read(self.fd, 65536)
        self.buf += chunk
        return chunk

    def readline(self, timeout=30):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            chunk = self._fill(max(left, 0)) if left > 0 else None
            if chunk is None:
                raise AssertionError("no reply line within %d s (got %r)" % (timeout, self.buf))
            if not chunk:
                raise AssertionError("EOF on the helper's stdout without a reply line (got %r)" % self.buf)
        line, _, self.buf = self.buf.partition(b"\n")
        self.lines += 1
        return line + b"\n"

    def handshake(self, what, options):
        """The serve handshake; False (after a failed check) when it is not answered exactly."""
        self.write(json.dumps({"version": 1, "op": "serve", "options": options}).encode() + b"\n")
        try:
            hello = self.readline(timeout=20)
        except AssertionError as e:
            check("%s: handshake answered (%s)" % (what, e), False)
            self.finish(what)
            return False
        check("%s: the handshake reply is exactly {\"serve\":1} (%r)" % (what, hello), hello == b'{"serve":1}\n')
        return True

    def write(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def ask(self, what, req, options=None):
        """Sends one request line (an object, or raw bytes); returns the one reply object."""
        if isinstance(req, dict):
            req = dict(req, version=1, options=options)
            data = json.dumps(req).encode() + b"\n"
        else:
            data = req
        self.write(data)
        line = self.readline()
        # Nothing more than that one line, at least for a short while (the final drain checks the rest).
        extra = self.buf or self._fill(0.1)
        check("%s: one reply line and nothing after it" % what, not extra)
        try:
            out = json.loads(line)
        except ValueError:
            out = None
        check("%s: the reply line is one JSON object" % what, isinstance(out, dict))
        return out if isinstance(out, dict) else {}

    def finish(self, what):
        """EOF on stdin: the helper exits 0 and writes nothing more."""
        self.p.stdin.close()
        rest = b""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            chunk = self._fill(deadline - time.monotonic())
            if not chunk:
                break
        rest = self.buf
        try:
            rc = self.p.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            rc = self.p.wait()
            check("%s: exits at EOF on stdin" % what, False)
        check("%s: nothing written after the last reply (%r)" % (what, rest), rest == b"")
        check("%s: exit status 0 at EOF (%s)" % (what, rc), rc == 0)
        self.p.stdout.close()
        self.err.close()


def code(reply):
    e = reply.get("error")
    return e.get("code") if isinstance(e, dict) else None


def one_shot(helper, env, op, req):
    """The helper run once: argv[1] = op, the request on stdin until EOF."""
    p = subprocess.run([helper, op], input=json.dumps(req).encode() + b"\n", capture_output=True, env=env, timeout=60)
    return p.returncode, p.stdout, p.stderr


def check_one_shot_format(what, rc, out):
    """One-shot replies as before: json.dumps's default layout, one line, exit status 0."""
    try:
        obj = json.loads(out)
    except ValueError:
        obj = None
    check("%s: exit status 0 (%d)" % (what, rc), rc == 0)
    check("%s: one JSON object on one line, as json.dumps writes it" % what,
          isinstance(obj, dict) and out == json.dumps(obj).encode() + b"\n")
    return obj if isinstance(obj, dict) else {}


def start_vault(work):
    state = os.path.join(work, "vault")
    os.mkdir(state)
    server = subprocess.Popen(["/usr/bin/python3", VAULT_SERVER, state], stdin=subprocess.DEVNULL,
                              start_new_session=True)
    port_file = os.path.join(state, "port")
    for _ in range(200):
        if os.path.exists(port_file):
            with open(port_file) as f:
                return server, "http://127.0.0.1:%d" % int(f.read())
        if server.poll() is not None:
            break
        time.sleep(0.05)
    server.kill()
    raise SystemExit("fake-vault-server did not start within 10 s")


def test_vault(work, env, addr):
    creds = os.path.join(work, "creds")
    os.mkdir(creds, 0o700)
    with open(os.path.join(creds, "vault-token"), "w") as f:
        f.write("s.test-root-token\n")
    env = dict(env, CREDENTIALS_DIRECTORY=creds)
    opts = {"address": addr, "token-file": "vault-token"}
    dk = os.urandom(32)
    dk_b64 = base64.b64encode(dk).decode()
    errfile = os.path.join(work, "vault-serve.stderr")

    s = Served(VAULT_HELPER, env, errfile)
    if not s.handshake("vault serve", opts):
        return

    r = s.ask("vault describe of a missing key", {"op": "describe", "key": "app/serve-none"}, opts)
    check("vault describe of a missing key: not-found (%r)" % r, code(r) == "not-found")
    k = s.ask("vault create", {"op": "create", "alias": "app/serve-one", "description": None}, opts)
    check("vault create: the key object (%r)" % k,
          k.get("id") == "app.serve-one" and k.get("alias") == "app/serve-one" and k.get("state") == "enabled")
    r = s.ask("vault create again", {"op": "create", "alias": "app/serve-one", "description": None}, opts)
    check("vault create again: exists (%r)" % r, code(r) == "exists")
    r = s.ask("vault describe", {"op": "describe", "key": "app/serve-one"}, opts)
    check("vault describe: the same key (%r)" % r, r == k)
    r = s.ask("vault list", {"op": "list"}, opts)
    check("vault list: the key is listed", any(x.get("id") == "app.serve-one" for x in r.get("keys", [])))

    r = s.ask("malformed line", b"{not json\n")
    check("malformed line: an invalid error (%r)" % r, code(r) == "invalid")
    r = s.ask("a JSON line that is not an object", b'["describe"]\n')
    check("a JSON line that is not an object: an invalid error (%r)" % r, code(r) == "invalid")
    r = s.ask("a request without its key member", {"op": "describe"}, opts)
    check("a request without its key member: an invalid error on one line (%r)" % r,
          code(r) == "invalid" and "\n" not in r["error"].get("message", ""))
    r = s.ask("an unknown op", {"op": "frobnicate", "key": "app/serve-one"}, opts)
    check("an unknown op: unsupported (%r)" % r, code(r) == "unsupported")

    w = s.ask("vault wrap", {"op": "wrap", "key": k.get("id", ""), "context": {"volume_id": "vol-s"},
                             "plaintext": dk_b64}, opts)
    check("vault wrap: a vault:v1: ciphertext with key_version 1 (%r)" % w,
          str(w.get("ciphertext", "")).startswith("vault:v1:") and w.get("key_version") == 1)
    ct = w.get("ciphertext", "")
    r = s.ask("vault unwrap", {"op": "unwrap", "key": k.get("id", ""), "context": {"volume_id": "vol-s"},
                               "ciphertext": ct, "key_version": 1}, opts)
    check("vault unwrap: the data key back", r.get("plaintext") == dk_b64)
    r = s.ask("vault unwrap for another volume", {"op": "unwrap", "key": k.get("id", ""),
                                                  "context": {"volume_id": "vol-other"}, "ciphertext": ct}, opts)
    check("vault unwrap for another volume: bad-ciphertext (%r)" % r, code(r) == "bad-ciphertext")
    down = dict(opts, address="http://127.0.0.1:1")
    r = s.ask("vault unreachable", {"op": "describe", "key": "app/serve-one"}, down)
    check("vault unreachable: unavailable (%r)" % r, code(r) == "unavailable")
    r = s.ask("vault describe after the errors", {"op": "describe", "key": "app/serve-one"}, opts)
    check("vault describe after the errors: still serving", r == k)
    s.write(b"\n")  # a blank line is no request: no reply
    r = s.ask("vault unwrap after a blank line", {"op": "unwrap", "key": k.get("id", ""),
                                                  "context": {"volume_id": "vol-s"}, "ciphertext": ct}, opts)
    check("vault unwrap after a blank line: the data key back", r.get("plaintext") == dk_b64)
    s.finish("vault serve")
    with open(errfile, "rb") as f:
        err = f.read()
    check("vault serve: the data key is not on stderr", dk_b64.encode() not in err and dk not in err)

    # One-shot mode as before, and ciphertexts interchangeable with serve mode.
    rc, out, _ = one_shot(VAULT_HELPER, env, "describe", {"version": 1, "op": "describe", "key": "app/serve-one",
                                                          "options": opts})
    check("vault one-shot describe: the key", check_one_shot_format("vault one-shot describe", rc, out) == k)
    rc, out, _ = one_shot(VAULT_HELPER, env, "describe", {"version": 1, "op": "describe", "key": "app/serve-none",
                                                          "options": opts})
    check("vault one-shot describe of a missing key: not-found",
          code(check_one_shot_format("vault one-shot not-found", rc, out)) == "not-found")
    rc, out, _ = one_shot(VAULT_HELPER, env, "unwrap", {"version": 1, "op": "unwrap", "key": k.get("id", ""),
                                                        "context": {"volume_id": "vol-s"}, "ciphertext": ct,
                                                        "options": opts})
    check("vault one-shot unwrap of a serve-mode wrap: the data key",
          check_one_shot_format("vault one-shot unwrap", rc, out).get("plaintext") == dk_b64)
    p = subprocess.run([VAULT_HELPER, "describe"], input=b"not json", capture_output=True, env=env, timeout=60)
    check("vault one-shot, not JSON: the same error reply as before (%r)" % p.stdout,
          p.returncode == 0 and p.stdout == b'{"error": {"code": "invalid", "message": "request is not JSON"}}\n')


def test_aws(work, env):
    env = dict(env, PATH=FAKE_CLI + ":" + env["PATH"])
    opts = {"region": "eu-west-1"}
    dk = os.urandom(32)
    dk_b64 = base64.b64encode(dk).decode()
    errfile = os.path.join(work, "aws-serve.stderr")

    s = Served(AWS_HELPER, env, errfile)
    if not s.handshake("aws serve", opts):
        return

    r = s.ask("aws describe of a missing key", {"op": "describe", "key": "app/serve-none"}, opts)
    check("aws describe of a missing key: not-found (%r)" % r, code(r) == "not-found")
    k = s.ask("aws create", {"op": "create", "alias": "app/serve-one", "description": "served"}, opts)
    check("aws create: the key object (%r)" % k,
          k.get("alias") == "app/serve-one" and k.get("description") == "served" and k.get("state") == "enabled")
    kid = k.get("id", "")
    r = s.ask("aws describe", {"op": "describe", "key": "app/serve-one"}, opts)
    check("aws describe: the same key (%r)" % r, r.get("id") == kid)
    r = s.ask("malformed line", b"}{\n")
    check("malformed line: an invalid error (%r)" % r, code(r) == "invalid")
    r = s.ask("a JSON line that is not an object", b'"wrap"\n')
    check("a JSON line that is not an object: an invalid error (%r)" % r, code(r) == "invalid")
    r = s.ask("a bad deletion window", {"op": "schedule-deletion", "key": kid, "days": "seven"}, opts)
    check("a bad deletion window: an invalid error on one line (%r)" % r,
          code(r) == "invalid" and "\n" not in r["error"].get("message", ""))

    w = s.ask("aws wrap", {"op": "wrap", "key": kid, "context": {"volume_id": "vol-s"}, "plaintext": dk_b64}, opts)
    ct = w.get("ciphertext", "")
    check("aws wrap: a ciphertext", isinstance(ct, str) and ct)
    r = s.ask("aws unwrap", {"op": "unwrap", "key": kid, "context": {"volume_id": "vol-s"}, "ciphertext": ct}, opts)
    check("aws unwrap: the data key back", r.get("plaintext") == dk_b64)
    r = s.ask("aws unwrap for another volume", {"op": "unwrap", "key": kid, "context": {"volume_id": "vol-other"},
                                                "ciphertext": ct}, opts)
    check("aws unwrap for another volume: bad-ciphertext (%r)" % r, code(r) == "bad-ciphertext")
    r = s.ask("aws disable", {"op": "disable", "key": kid}, opts)
    check("aws disable: {} (%r)" % r, r == {})
    r = s.ask("aws wrap of a disabled key", {"op": "wrap", "key": kid, "context": {"volume_id": "vol-s"},
                                             "plaintext": dk_b64}, opts)
    check("aws wrap of a disabled key: disabled (%r)" % r, code(r) == "disabled")
    r = s.ask("aws enable", {"op": "enable", "key": kid}, opts)
    check("aws enable: {} (%r)" % r, r == {})
    down = dict(opts, **{"endpoint-url": "http://127.0.0.1:1"})
    r = s.ask("aws unreachable", {"op": "describe", "key": kid}, down)
    check("aws unreachable: unavailable (%r)" % r, code(r) == "unavailable")
    r = s.ask("aws list after the errors", {"op": "list"}, opts)
    check("aws list after the errors: still serving, the key listed",
          any(x.get("id") == kid and x.get("state") == "enabled" for x in r.get("keys", [])))
    s.finish("aws serve")
    with open(errfile, "rb") as f:
        err = f.read()
    check("aws serve: the data key is not on stderr", dk_b64.encode() not in err and dk not in err)

    rc, out, _ = one_shot(AWS_HELPER, env, "unwrap", {"version": 1, "op": "unwrap", "key": kid,
                                                      "context": {"volume_id": "vol-s"}, "ciphertext": ct,
                                                      "options": opts})
    check("aws one-shot unwrap of a serve-mode wrap: the data key",
          check_one_shot_format("aws one-shot unwrap", rc, out).get("plaintext") == dk_b64)
    rc, out, _ = one_shot(AWS_HELPER, env, "describe", {"version": 1, "op": "describe", "key": "app/serve-none",
                                                        "options": opts})
    check("aws one-shot describe of a missing key: not-found",
          code(check_one_shot_format("aws one-shot not-found", rc, out)) == "not-found")


def main():
    if subprocess.run(["/usr/bin/python3", "-c", "import cryptography"], capture_output=True).returncode != 0:
        print("SKIP: the fake KMSs need /usr/bin/python3 with python3-cryptography")
        return 77
    work = tempfile.mkdtemp(prefix="evs-helpers-serve.")
    server = None
    try:
        server, addr = start_vault(work)
        # As the daemon runs helpers: PATH, HOME (the fake aws CLI keeps its state there), LANG=C.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": work, "LANG": "C"}
        test_vault(work, env, addr)
        test_aws(work, env)
    finally:
        if server:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(work, ignore_errors=True)
    print("%d failure(s)" % failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
