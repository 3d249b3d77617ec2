/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target for the evs-kms token codec: the token JSON comes from a disk header, so it is
 * untrusted. Checked on every input: parsing succeeds or fails with -EBADMSG and a reason (or
 * -ENOMEM), and whatever parses serialises and parses back to the same token.
 *
 * Built with -DEVS_FUZZ_STANDALONE it gets a main() that runs built-in seeds and deterministic
 * mutations of them (a regression test), or the files given as arguments. */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "token.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(evs_token_done) evs_token t = {}, u = {};
        _cleanup_free_ char *text = NULL, *json = NULL;
        const char *reason = NULL;
        int r;

        if (size > 64 * 1024)
                return 0;
        text = malloc(size + 1);
        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = 0;

        r = evs_token_from_json(text, &t, &reason);
        if (r == -ENOMEM)
                return 0;
        if (r < 0) {
                if (r != -EBADMSG || !reason)
                        abort();
                return 0;
        }
        if (evs_token_to_json(&t, &json) < 0)
                abort(); /* everything that parses must serialise */
        if (evs_token_from_json(json, &u, &reason) < 0)
                abort();
        if (u.keyslot != t.keyslot || !streq(u.backend, t.backend) || !streq(u.key_id, t.key_id) ||
            !streq_ptr(u.key_alias, t.key_alias) || !streq(u.volume_id, t.volume_id) ||
            u.wrapped_size != t.wrapped_size || memcmp(u.wrapped, t.wrapped, t.wrapped_size) != 0)
                abort();
        return 0;
}

#ifdef EVS_FUZZ_STANDALONE
static const char *const seeds[] = {
        ("{\"type\":\"evs-kms\",\"keyslots\":[\"0\"],\"evs_version\":1,\"evs_backend\":\"local\","
         "\"evs_key_id\":\"2bcc9a9b-fc80-4ad6-85cf-1d0825f88232\",\"evs_key_alias\":\"evs/default\","
         "\"evs_volume_id\":\"vol-1\",\"evs_context\":{\"volume_id\":\"vol-1\"},\"evs_wrapped_key\":\"AAECAwQFBgc=\"}"),
        ("{\"type\":\"evs-kms\",\"keyslots\":[\"3\"],\"evs_version\":1,\"evs_backend\":\"kmip\",\"evs_key_id\":\"42\","
         "\"evs_volume_id\":\"a\",\"evs_context\":{\"volume_id\":\"a\"},\"evs_wrapped_key\":\"/w==\"}"),
        "{}",
        "[1,2,3]",
        "{\"type\":\"evs-kms\",\"keyslots\":\"0\"}",
};

static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint64_t next(void) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return rng;
}

static void run_file(const char *path) {
        FILE *f = fopen(path, "re");
        char buf[65536];
        size_t n;

        if (!f) {
                perror(path);
                exit(EXIT_FAILURE);
        }
        n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        (void) LLVMFuzzerTestOneInput((const uint8_t *) buf, n);
}

int main(int argc, char *argv[]) {
        unsigned runs = 0;

        if (argc > 1) {
                for (int i = 1; i < argc; i++)
                        run_file(argv[i]);
                return 0;
        }
        for (size_t s = 0; s < ELEMENTSOF(seeds); s++) {
                size_t len = strlen(seeds[s]);
                uint8_t buf[1024];

                (void) LLVMFuzzerTestOneInput((const uint8_t *) seeds[s], len);
                runs++;
                for (unsigned m = 0; m < 20000; m++) {
                        size_t n = len;

                        memcpy(buf, seeds[s], len);
                        /* Flip, replace, truncate or duplicate: a few edits per case. */
                        for (unsigned e = 0; e < 1 + next() % 4; e++) {
                                size_t at = n ? next() % n : 0;
                                switch (next() % 4) {
                                case 0:
                                        if (n)
                                                buf[at] ^= (uint8_t) (1u << (next() % 8));
                                        break;
                                case 1:
                                        if (n)
                                                buf[at] = "{}[]\":,0123456789-ae\\ \x01\xff"[next() % 25];
                                        break;
                                case 2:
                                        n = at;
                                        break;
                                case 3:
                                        if (n && n + (n - at) < sizeof buf) {
                                                memmove(buf + n, buf + at, n - at);
                                                n += n - at;
                                        }
                                        break;
                                }
                        }
                        (void) LLVMFuzzerTestOneInput(buf, n);
                        runs++;
                }
        }
        printf("fuzz-token: %u inputs, no crash, every parsed token round-trips\n", runs);
        return 0;
}
#endif
