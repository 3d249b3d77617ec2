/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Test tool, never installed: prints the data key of an EVS volume, unwrapped through the same
 * envelope code the daemon uses, so a test can prove the keyslot opens with it:
 *   evs-unwrap-test CONFIG DEVICE | cryptsetup open --test-passphrase --key-file=- DEVICE */

#include "envelope.h"
#include "luks.h"

int main(int argc, char *argv[]) {
        _cleanup_(evs_config_done) evs_config config = {};
        _cleanup_(kms_registry_freep) kms_registry *reg = NULL;
        _cleanup_(luks_info_done) luks_info info = {};
        _cleanup_(secret_freep) secret *key = NULL;
        _cleanup_free_ char *error = NULL;
        const char *reason = NULL;
        kms_backend *b;
        int r;

        if (argc != 3) {
                fprintf(stderr, "usage: evs-unwrap-test CONFIG DEVICE\n");
                return 2;
        }
        r = evs_config_load(argv[1], true, &config, &error);
        if (r >= 0)
                r = kms_registry_new(&config, NULL, &reg, &error);
        if (r < 0) {
                fprintf(stderr, "config: %s\n", error ?: strerror(-r));
                return 1;
        }
        r = luks_read(argv[2], &info, &reason);
        if (r < 0) {
                fprintf(stderr, "%s: %s\n", argv[2], reason ?: strerror(-r));
                return 1;
        }
        r = kms_registry_get(reg, info.token.backend, &b);
        if (r >= 0)
                r = envelope_open(b, &info.token, info.label, NULL, &key);
        if (r < 0) {
                fprintf(stderr, "unwrap: %s\n", kms_backend_error(b) ?: strerror(-r));
                return 1;
        }
        return fwrite(key->data, 1, key->size, stdout) == key->size ? 0 : 1;
}
