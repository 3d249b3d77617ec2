/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The one table that ties an errno to its D-Bus error name (org.evs.Cryptd1.Error.<Name>) and to
 * evsctl's exit code. The daemon answers with sd_bus_error_set_errnof(); sd-bus maps the errno to the
 * name through evs_bus_error_map on the server and back to the errno on the client. */

#include <systemd/sd-bus.h>

#include "macro.h"

#define EVS_BUS_ERROR_PREFIX "org.evs.Cryptd1.Error."

enum {
        EXIT_OK = 0,
        EXIT_FAILURE_OTHER = 1,
        EXIT_USAGE = 2,
        EXIT_KEY_STATE = 3,
        EXIT_NOT_FOUND = 4,
        EXIT_BUSY = 5,
        EXIT_KMS_UNAVAILABLE = 6,
        EXIT_PERMISSION = 7,
        EXIT_DEVICE_HAS_DATA = 8,
};

extern const sd_bus_error_map evs_bus_error_map[];

/* Registers the map with sd-bus (idempotent). */
int evs_errors_register(void);

/* Sets @error to org.evs.Cryptd1.Error.<Name> for @r (±errno) with the formatted one-line message;
 * returns -abs(@r). */
int evs_bus_error_setf(sd_bus_error *error, int r, const char *fmt, ...) _printf_(3, 4);

/* evsctl's exit code for a -errno. */
int evs_exit_code(int r) _const_;
