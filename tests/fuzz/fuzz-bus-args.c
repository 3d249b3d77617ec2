/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target for what validates and parses the arguments of the bus methods before the daemon acts
 * on them (any root caller can send anything): the naming rules (names.c: volume ids, labels, aliases,
 * backend names), image and server names, a server's --data-disk specs, key references [BACKEND:]KEY
 * and the volume ids and mapping names derived from them. Input: NUL-separated strings, each run through
 * every check. Checked: each accepted name is what its rule says (lengths, characters, no leading dot,
 * no path separators), and whatever is derived from an accepted name is accepted in turn. */

#include <stdint.h>
#include <stdlib.h>

#include "fuzz-util.h"
#include "image.h"
#include "kms.h"
#include "names.h"
#include "server.h"
#include "token.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool plain_chars(const char *s, const char *extra) {
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
                      strchr(extra, *s)))
                        return false;
        return true;
}

static void check_one(const char *s) {
        size_t n = strlen(s);
        _cleanup_free_ char *device = NULL, *key = NULL, *backend = NULL, *ref = NULL, *mapping = NULL;
        bool plain = false;
        int r;

        if (volume_id_valid(s)) {
                if (n == 0 || n > 64 || s[0] == '.' || !plain_chars(s, "._-") || !volume_label_valid(s))
                        fuzz_fail();
                if (volume_mapping_name(s, &mapping) < 0 || strncmp(mapping, "evs-", 4) != 0 ||
                    !streq(mapping + 4, s))
                        fuzz_fail();
        }
        if (volume_label_valid(s) && (n == 0 || n > 64 || streq(s, ".") || streq(s, "..") || strchr(s, '/')))
                fuzz_fail();
        if (kms_alias_valid(s) && (n == 0 || n > 128 || !plain_chars(s, "/_.-") || strstr(s, "..") ||
                                   s[0] == '/' || s[n - 1] == '/'))
                fuzz_fail();
        if (backend_name_valid(s) && (n == 0 || n > 64 || !plain_chars(s, "_-")))
                fuzz_fail();
        if (image_name_valid(s) && (n == 0 || strchr(s, '/') || s[0] == '.'))
                fuzz_fail();
        if (server_name_valid(s)) {
                if (n == 0 || n > SERVER_NAME_MAX || strchr(s, '/'))
                        fuzz_fail();
                for (unsigned i = 0; i <= SERVER_DATA_DISKS_MAX; i++) {
                        _cleanup_free_ char *vid = NULL;

                        if (server_volume_id(s, i, &vid) < 0 || !volume_id_valid(vid))
                                fuzz_fail(); /* a server's disks always get valid volume ids */
                }
        }

        r = server_disk_spec_parse(s, &device, &key, &plain);
        if (r >= 0 && (isempty(device) || (plain && key) || (key && isempty(key))))
                fuzz_fail();
        if (r < 0 && r != -EINVAL && r != -ENOMEM)
                fuzz_fail();

        r = kms_ref_split(s, &backend, &ref);
        if (r >= 0 && (isempty(ref) || (backend && (isempty(backend) || strchr(backend, ':')))))
                fuzz_fail();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_free_ char *buf = NULL;

        if (size > 16 * 1024)
                return 0;
        buf = malloc(size + 1);
        if (!buf)
                return 0;
        memcpy(buf, data, size);
        buf[size] = 0;
        for (size_t at = 0; at <= size; at += strlen(buf + at) + 1)
                check_one(buf + at);
        return 0;
}
