/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target for the configuration file parser (evs-cryptd.conf and its drop-ins are written by an
 * operator, but a broken one must give one clear error, never a crash). Checked on every input: loading
 * fails with -EINVAL and a one-line "FILE:LINE: reason" (or -ENOMEM), or gives a configuration whose
 * default backend exists, with the local backend, paths set, every section typed; the exec backends'
 * settings (validated without running anything) open or fail with a reason. */

#include <stdint.h>
#include <stdlib.h>

#include "config.h"
#include "fuzz-util.h"
#include "kms.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(evs_config_done) evs_config c = {};
        _cleanup_free_ char *path = NULL, *error = NULL;
        int r;

        if (size > 64 * 1024)
                return 0;
        if (asprintf(&path, "%s/evs-cryptd.conf", fuzz_scratch_dir()) < 0)
                fuzz_fail();
        fuzz_write_file(path, data, size);

        r = evs_config_load(path, true, &c, &error);
        if (r == -ENOMEM)
                return 0;
        if (r < 0) {
                if (r != -EINVAL || !error || strchr(error, '\n'))
                        fuzz_fail();
                return 0;
        }
        if (error || !c.state_dir || !c.bus_path || !evs_config_backend(&c, c.default_backend) ||
            !evs_config_backend(&c, "local"))
                fuzz_fail();
        for (size_t i = 0; i < c.n_backends; i++) {
                const kms_backend_config *b = &c.backends[i];
                _cleanup_free_ char *e = NULL;
                kms_backend *kb = NULL;

                if (!b->name || !b->type)
                        fuzz_fail();
                if (!streq(b->type, "exec"))
                        continue; /* the others open files, modules or sockets */
                r = kms_backend_open(b, &(kms_context) { .state_dir = "/nonexistent" }, &kb, &e);
                if (r < 0 && r != -ENOMEM && !e)
                        fuzz_fail(); /* a refused setting is named */
                kms_backend_free(kb);
        }
        return 0;
}
