/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* What an attach costs before the mapping exists, side by side with a baseline in the same run:
 *   - unwrapping the data key through the local KMS (file read, root-key open, AES-GCM) vs. a bare
 *     AES-256-GCM open of the same size (the floor);
 *   - checking the data key against the volume's keyslot (PBKDF2, 1000 iterations, no benchmark:
 *     the key has full entropy) vs. a keyslot made with libcryptsetup's default PBKDF (argon2id,
 *     benchmarked), which is what a passphrase keyslot would cost on every attach.
 *   - loading the header as an attach does (luks_read_keep(): the header area read, loaded by libcryptsetup
 *     from a private copy, the token parsed, the keyslots looked at) vs. libcryptsetup's own crypt_init() and
 *     crypt_load() of the image;
 *   - the check of the volume key that every activation makes (crypt_volume_key_verify(): the LUKS2 digest,
 *     PBKDF2-SHA256 of 1000 iterations) vs. the same PBKDF2 through OpenSSL alone.
 * The last two are most of the work an attach does under the daemon's engine lock, one attach at a time
 * (bench/attach-storm runs this program on the host and in its guest, to show what TCG costs).
 * Runs on an image file (no device-mapper needed). Usage: bench-unlock [ROUNDS] */

#include <libcryptsetup.h>
#include <openssl/evp.h>
#include <stdio.h>

#include "crypto.h"
#include "envelope.h"
#include "luks.h"
#include "time-util.h"

static double ms_since(usec_t t0) {
        return (double) (now_monotonic() - t0) / 1000.0;
}

static void row(const char *what, double ms, int rounds, const char *baseline, double base_ms, int base_rounds) {
        printf("%-44s %10.3f ms   %-34s %10.3f ms   x%.1f\n", what, ms / rounds, baseline, base_ms / base_rounds,
               (ms / rounds) > 0 ? (base_ms / base_rounds) / (ms / rounds) : 0.0);
}

int main(int argc, char *argv[]) {
        char dir[] = "/tmp/evs-bench.XXXXXX", conf_path[256], img[256];
        _cleanup_(evs_config_done) evs_config config = {};
        _cleanup_(kms_registry_freep) kms_registry *reg = NULL;
        _cleanup_(kms_key_done) kms_key key = {};
        _cleanup_(secret_freep) secret *data_key = NULL, *raw_key = NULL;
        _cleanup_(evs_token_done) evs_token tok = {};
        _cleanup_free_ char *error = NULL, *what = NULL;
        _cleanup_free_ uint8_t *sealed = NULL;
        struct crypt_device *cd = NULL;
        size_t sealed_size;
        kms_backend *b;
        int rounds = argc > 1 ? atoi(argv[1]) : 200, slow_rounds = 3, r, slot;
        double t_unwrap, t_gcm, t_pbkdf2, t_argon, t_read, t_load, t_verify, t_bare;
        char vk[64];
        size_t vk_size = sizeof vk;
        uint8_t digest[32];
        usec_t t0;
        FILE *f;

        if (rounds <= 0 || !mkdtemp(dir))
                return 1;
        snprintf(conf_path, sizeof conf_path, "%s/evs.conf", dir);
        snprintf(img, sizeof img, "%s/vol.img", dir);
        f = fopen(conf_path, "we");
        if (!f)
                return 1;
        fprintf(f, "[Daemon]\nStateDirectory=%s/state\n", dir);
        fclose(f);
        f = fopen(img, "we");
        if (!f || ftruncate(fileno(f), 64 << 20) < 0)
                return 1;
        fclose(f);

        r = evs_config_load(conf_path, true, &config, &error);
        if (r >= 0)
                r = kms_registry_new(&config, NULL, &reg, &error);
        if (r >= 0)
                r = kms_registry_resolve(reg, "evs/default", &b, &key);
        if (r >= 0)
                r = envelope_seal(b, &key, "bench-vol", &data_key, &tok);
        if (r >= 0)
                r = luks_format(img, "bench-vol", data_key, &tok, false, &what);
        if (r < 0) {
                fprintf(stderr, "setup failed: %s\n", error ?: strerror(-r));
                return 1;
        }

        /* 1. Unwrap through the local KMS vs. a bare AES-GCM open. */
        t0 = now_monotonic();
        for (int i = 0; i < rounds; i++) {
                secret *k = NULL;
                if (envelope_open(b, &tok, "bench-vol", NULL, &k) < 0)
                        return 1;
                secret_free(k);
        }
        t_unwrap = ms_since(t0);

        if (crypto_random_secret(AES_GCM_KEY_SIZE, &raw_key) < 0 ||
            aes_gcm_seal(raw_key, "aad", 3, data_key->data, data_key->size, &sealed, &sealed_size) < 0)
                return 1;
        t0 = now_monotonic();
        for (int i = 0; i < rounds; i++) {
                secret *k = NULL;
                if (aes_gcm_open(raw_key, "aad", 3, sealed, sealed_size, &k) < 0)
                        return 1;
                secret_free(k);
        }
        t_gcm = ms_since(t0);

        /* 2. Keyslot check: ours (PBKDF2 1000) vs. a default-PBKDF keyslot on the same header. */
        if (crypt_init(&cd, img) < 0 || crypt_load(cd, CRYPT_LUKS2, NULL) < 0)
                return 1;
        t0 = now_monotonic();
        for (int i = 0; i < rounds / 10 + 1; i++)
                if (crypt_activate_by_passphrase(cd, NULL, 0, (const char *) data_key->data, data_key->size, 0) < 0)
                        return 1;
        t_pbkdf2 = ms_since(t0);

        if (crypt_set_pbkdf_type(cd, crypt_get_pbkdf_default(CRYPT_LUKS2)) < 0)
                return 1;
        slot = crypt_keyslot_add_by_passphrase(cd, CRYPT_ANY_SLOT, (const char *) data_key->data, data_key->size,
                                               "a passphrase", 12);
        if (slot < 0)
                return 1;
        t0 = now_monotonic();
        for (int i = 0; i < slow_rounds; i++)
                if (crypt_activate_by_passphrase(cd, NULL, slot, "a passphrase", 12, 0) < 0)
                        return 1;
        t_argon = ms_since(t0);

        /* 3. The header load of an attach vs. libcryptsetup's own. */
        t0 = now_monotonic();
        for (int i = 0; i < rounds; i++) {
                _cleanup_(luks_info_done) luks_info info = {};
                const char *reason = NULL;

                if (luks_read_keep(img, &info, &reason) < 0)
                        return 1;
        }
        t_read = ms_since(t0);
        t0 = now_monotonic();
        for (int i = 0; i < rounds; i++) {
                struct crypt_device *c = NULL;

                if (crypt_init(&c, img) < 0 || crypt_load(c, CRYPT_LUKS2, NULL) < 0)
                        return 1;
                crypt_free(c);
        }
        t_load = ms_since(t0);

        /* 4. The volume key check of every activation vs. its PBKDF2 alone. */
        if (crypt_volume_key_get(cd, 0, vk, &vk_size, (const char *) data_key->data, data_key->size) < 0)
                return 1;
        t0 = now_monotonic();
        for (int i = 0; i < rounds; i++)
                if (crypt_volume_key_verify(cd, vk, vk_size) < 0)
                        return 1;
        t_verify = ms_since(t0);
        t0 = now_monotonic();
        for (int i = 0; i < rounds; i++)
                if (PKCS5_PBKDF2_HMAC(vk, (int) vk_size, (const unsigned char *) "a salt of 32 bytes, as LUKS2 has", 32,
                                      1000, EVP_sha256(), sizeof digest, digest) != 1)
                        return 1;
        t_bare = ms_since(t0);
        explicit_bzero(vk, sizeof vk);
        crypt_free(cd);

        printf("evs-cryptd attach-path costs (per operation, %d rounds; baseline in the same run)\n\n", rounds);
        printf("%-44s %13s   %-34s %13s   %s\n", "measured", "time", "baseline", "time", "baseline/measured");
        row("unwrap data key via local KMS", t_unwrap, rounds, "bare AES-256-GCM open", t_gcm, rounds);
        row("keyslot check, PBKDF2 1000 (evs keyslot)", t_pbkdf2, rounds / 10 + 1,
            "keyslot check, default argon2id", t_argon, slow_rounds);
        row("header load of an attach (luks_read_keep)", t_read, rounds, "crypt_init + crypt_load", t_load, rounds);
        row("volume key check (LUKS2 digest)", t_verify, rounds, "PBKDF2-SHA256 1000 (OpenSSL)", t_bare, rounds);

        {
                char cmd[300];

                snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", dir); /* mkdtemp name: no quotes in it */
                r = system(cmd);
                (void) r;
        }
        return 0;
}
