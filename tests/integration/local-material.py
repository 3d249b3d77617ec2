#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Test tool: prints the raw 32-byte material of a local-backend CMK, unsealed from its key file with the root
key (AES-256-GCM: nonce 12 || ciphertext || tag 16, the key id as AAD; kms/local.c), so a test knows the
bytes it must never find anywhere. With a volume's token it also unwraps the volume's data key with that
material ("EVL1" || key id || sealed, AAD "evs-local-wrap-v1\\0" KEYID "\\0" VOLUME-ID), which proves the
unsealing right against what the daemon's own code unwraps.
  local-material.py ROOT-KEY-FILE KEY-FILE [TOKEN-JSON]   (material, or with TOKEN-JSON the data key)"""

import base64
import json
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def main():
    root = open(sys.argv[1], "rb").read()
    key = json.load(open(sys.argv[2]))
    sealed = base64.b64decode(key["material"])
    material = AESGCM(root).decrypt(sealed[:12], sealed[12:], key["id"].encode())
    if len(sys.argv) < 4:
        sys.stdout.buffer.write(material)
        return 0
    token = json.load(open(sys.argv[3]))
    wrapped = base64.b64decode(token["evs_wrapped_key"])
    assert wrapped[:4] == b"EVL1" and wrapped[4:40].decode() == key["id"], "not wrapped by this key"
    aad = b"evs-local-wrap-v1\0" + key["id"].encode() + b"\0" + token["evs_volume_id"].encode()
    body = wrapped[40:]
    sys.stdout.buffer.write(AESGCM(material).decrypt(body[:12], body[12:], aad))
    return 0


if __name__ == "__main__":
    sys.exit(main())
