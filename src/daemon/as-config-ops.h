/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Auto-scaling (AS) configurations: STATE/as-configs/<name>.json records a server's encryption mode (its
 * image, its system disk's CMK and cipher, each data disk's size and CMK or plain), by the rule
 * inherit_as_config_from_server(); every server launched from it follows it (inherit_*_from_as_config(),
 * src/shared/inherit.h). Records and views are as_config_record (src/shared/server.h). */

#include <systemd/sd-bus.h>

#include "manager.h"
#include "server.h"

/* Each sets @error (a one-line reason) and returns -errno: -EINVAL for an invalid name, -EEXIST, -ENXIO
 * for an unknown configuration or server, -ENODATA for a server whose system disk is not encrypted. */
int as_config_create(manager *m, const char *name, const char *server, as_config_record *ret, sd_bus_error *error);
int as_config_get(manager *m, const char *name, as_config_record *ret, sd_bus_error *error);
int as_config_list(manager *m, as_config_record **ret, size_t *ret_n, sd_bus_error *error);
int as_config_delete(manager *m, const char *name, as_config_record *ret, sd_bus_error *error);
