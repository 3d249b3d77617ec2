/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Servers and auto-scaling (AS) configurations: names, the volume ids of a server's disks, and the
 * --data-disk argument. Their records are documents of kinds "servers" and "as-configs" (docstore.h). */

#include <stdbool.h>
#include <stddef.h>

#include "macro.h"

#define SERVER_NAME_MAX 48U /* leaves room for "-data<N>" in a 64-character volume id */
#define SERVER_DATA_DISKS_MAX 16U

/* Server and AS configuration names: 1 to 48 characters of [A-Za-z0-9._-]. */
bool server_name_valid(const char *name) _pure_;

/* The volume id of a server's disk: "<name>-sys" for @index 0, "<name>-data<index>" for data disk @index
 * (1-based). -EINVAL for an invalid name or index, -ENOMEM. */
int server_volume_id(const char *name, unsigned index, char **ret);

/* Parses a --data-disk argument "DEVICE", "DEVICE:key=KEY" or "DEVICE:plain". *ret_key is NULL when no
 * key was named; *ret_plain says ":plain". -EINVAL for an empty device, an empty key or an unknown
 * suffix, -ENOMEM. */
int server_disk_spec_parse(const char *spec, char **ret_device, char **ret_key, bool *ret_plain);
