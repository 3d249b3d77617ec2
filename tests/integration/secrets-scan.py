#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Looks for known secrets in files: raw, as hex (either case) and as base64 (standard and URL-safe, with and
without padding), also each 16-byte half of a secret (a key printed in two pieces).

  secrets-scan.py SECRETS-DIR FILE...
SECRETS-DIR holds one file per secret (its raw bytes; the file name says what it is). Prints every hit as
"LEAK: <secret> as <form> in <file>" and exits 1 when there was one, 0 otherwise."""

import base64
import os
import sys


def forms(secret):
    out = {}
    for name, part in (("whole", secret), ("first half", secret[:16]), ("second half", secret[16:])):
        if len(part) < 16:
            continue
        out[name + " raw"] = part
        out[name + " hex"] = part.hex().encode()
        out[name + " HEX"] = part.hex().upper().encode()
        b64 = base64.b64encode(part)
        out[name + " base64"] = b64
        out[name + " base64 unpadded"] = b64.rstrip(b"=")
        out[name + " base64url"] = base64.urlsafe_b64encode(part).rstrip(b"=")
    return out


def main():
    secrets_dir, files = sys.argv[1], sys.argv[2:]
    secrets = {}
    for name in sorted(os.listdir(secrets_dir)):
        with open(os.path.join(secrets_dir, name), "rb") as f:
            secrets[name] = f.read()
    if not secrets or any(len(s) < 16 for s in secrets.values()):
        print("secrets-scan: no secrets, or one shorter than 16 bytes", file=sys.stderr)
        return 2
    leaks = 0
    scanned = 0
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        scanned += 1
        for name, secret in secrets.items():
            for form, needle in forms(secret).items():
                if needle in data:
                    print("LEAK: %s as %s in %s" % (name, form, path))
                    leaks += 1
    print("secrets-scan: %d secrets, %d files, %d leaks" % (len(secrets), scanned, leaks))
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main())
