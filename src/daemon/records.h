/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The records of servers and AS configurations (src/shared/server.h) loaded for a bus method: the one-line
 * reason in @error. Both server-ops.c and as-config-ops.c read both kinds through here, so neither calls the
 * other. */

#include <systemd/sd-bus.h>

#include "manager.h"
#include "server.h"

/* -EINVAL for an empty name, -ENXIO when there is no such record, -EUCLEAN for a corrupt one, -errno. */
int server_record_load(manager *m, const char *name, server_record *ret, sd_bus_error *error);
int as_config_record_load(manager *m, const char *name, as_config_record *ret, sd_bus_error *error);
