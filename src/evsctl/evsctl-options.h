/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* Verb options, parsed once in main.c; each verb declares the ones it takes. */
extern const char *opt_description;
extern const char *opt_backend;
extern const char *opt_volume_id;
extern const char *opt_key;
extern uint32_t opt_days;
extern bool opt_force;
extern bool opt_off;    /* key set-rotation --off */
extern bool opt_latest; /* volume/image rewrap --latest */
extern bool opt_all;    /* volume rewrap --all */
extern const char *opt_name;
extern const char *opt_image;
extern const char *opt_as_config;
extern const char *opt_system_disk;
extern char **opt_data_disks; /* --data-disk, in order */
extern const char *opt_from_server;
extern bool opt_prometheus; /* metrics --format prometheus */
extern const char *opt_output; /* metrics --output */

enum {
        OPT_DESCRIPTION = 1 << 0,
        OPT_BACKEND = 1 << 1,
        OPT_ID = 1 << 2,
        OPT_KEY = 1 << 3,
        OPT_DAYS = 1 << 4,
        OPT_FORCE = 1 << 5,
        OPT_NAME = 1 << 6,
        OPT_IMAGE = 1 << 7,
        OPT_AS_CONFIG = 1 << 8,
        OPT_SYSTEM_DISK = 1 << 9,
        OPT_DATA_DISK = 1 << 10,
        OPT_FROM_SERVER = 1 << 11,
        OPT_OFF = 1 << 12,
        OPT_LATEST = 1 << 13,
        OPT_ALL = 1 << 14,
        OPT_FORMAT = 1 << 15,
        OPT_OUTPUT = 1 << 16,
};
