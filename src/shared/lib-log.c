/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <libcryptsetup.h>
#include <libdevmapper.h>
#include <stdarg.h>

#include "lib-log.h"
#include "log.h"

static void crypt_log_cb(int level, const char *msg, void *usrptr) {
        size_t n = strlen(msg);

        while (n > 0 && msg[n - 1] == '\n')
                n--;
        log_debug("libcryptsetup: %.*s", (int) n, msg);
}

_printf_(5, 6)
static void dm_log_cb(int level, const char *file, int line, int dm_errno_or_class, const char *f, ...) {
        char msg[512];
        va_list ap;

        va_start(ap, f);
        vsnprintf(msg, sizeof msg, f, ap);
        va_end(ap);
        log_debug("libdevmapper: %s", msg);
}

void lib_log_setup(void) {
        crypt_set_log_callback(NULL, crypt_log_cb, NULL);
        /* At debug level libcryptsetup's own debug messages too (never key material: it prints none). */
        if (log_get_max_level() >= LOG_DEBUG)
                crypt_set_debug_level(CRYPT_DEBUG_ALL);
        dm_log_with_errno_init(dm_log_cb);
}
