/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The records of servers and AS configurations (src/shared/server.h) loaded for a bus method: the one-line
 * reason in @error. Both server-ops.c and as-config-ops.c read both kinds through here, so neither calls the
 * other. And the records of every kind that do not load (ListUnreadableRecords). */

#include <systemd/sd-bus.h>

#include "manager.h"
#include "server.h"

/* -EINVAL for an empty name, -ENXIO when there is no such record, -EUCLEAN for a corrupt one, -errno. */
int server_record_load(manager *m, const char *name, server_record *ret, sd_bus_error *error);
int as_config_record_load(manager *m, const char *name, as_config_record *ret, sd_bus_error *error);
/* Warns and sets @error to "WHAT NAME: record STATE/KIND/NAME.json is unreadable: REASON." for an error @r of
 * loading record @name of @kind (StoreCorrupt for a file that is not a record). Returns -errno. */
int record_error(manager *m, const char *kind, const char *what, const char *name, int r, sd_bus_error *error);

/* A state record that does not load. */
typedef struct unreadable_record {
        const char *kind; /* "volumes", "images", "servers", "as-configs" (static) */
        char *id;
        char *reason; /* "record PATH is unreadable: REASON" */
} unreadable_record;

void unreadable_record_array_free(unreadable_record *l, size_t n);
/* Every record of every kind that does not load, by kind then id. Nothing is changed on disk. -ENOMEM. */
int records_unreadable(manager *m, unreadable_record **ret, size_t *ret_n);
/* At start: a warning for each unreadable image, server and AS-configuration record (volume_reconcile() warns
 * for volumes). */
void records_warn_unreadable(manager *m);
