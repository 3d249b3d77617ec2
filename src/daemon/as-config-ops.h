/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Auto-scaling (AS) configurations: STATE/as-configs/<name>.json records a server's encryption mode (its
 * image, its system disk's CMK and cipher, each data disk's size and CMK or plain); every server launched
 * from it follows it (server-ops.c). */

#include <systemd/sd-bus.h>

#include "manager.h"
#include "time-util.h"

typedef struct as_disk {
        uint64_t size; /* data disks: the source disk's size in bytes, the least a new disk must have */
        char *key_id;  /* NULL for a plain disk */
        char *key_alias;
        char *backend;
        char *cipher;
        const char *key_state; /* live; NULL for a plain disk */
        bool plain;
} as_disk;

typedef struct as_config_view {
        char *name;
        char *image; /* image id */
        char *image_name;
        char *source_server;
        as_disk system;
        as_disk *data;
        size_t n_data;
        usec_t created;
} as_config_view;

void as_config_view_done(as_config_view *v);
void as_config_view_array_free(as_config_view *v, size_t n);

/* Each sets @error (a one-line reason) and returns -errno: -EINVAL for an invalid name, -EEXIST, -ENXIO
 * for an unknown configuration or server, -ENODATA for a server whose system disk is not encrypted. */
int as_config_create(manager *m, const char *name, const char *server, as_config_view *ret, sd_bus_error *error);
int as_config_get(manager *m, const char *name, as_config_view *ret, sd_bus_error *error);
int as_config_list(manager *m, as_config_view **ret, size_t *ret_n, sd_bus_error *error);
int as_config_delete(manager *m, const char *name, as_config_view *ret, sd_bus_error *error);
