/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Servers and auto-scaling (AS) configurations: names, the volume ids of a server's disks, the --data-disk
 * argument, and their records. Both are a system disk and up to 16 data disks of one type, disk_spec, with
 * one codec for the stored records (documents of kinds "servers" and "as-configs", docstore.h), one for the
 * bus structs DISK and AS_DISK (bus-api.h) and one for evsctl's JSON. The rules of what a disk inherits are
 * in inherit.h. */

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

#include "macro.h"
#include "time-util.h"

#define SERVER_NAME_MAX 48U /* leaves room for "-data<N>" in a 64-character volume id */
#define SERVER_DATA_DISKS_MAX 16U

#define SERVER_KIND "servers"
#define AS_CONFIG_KIND "as-configs"

/* Server and AS configuration names: 1 to 48 characters of [A-Za-z0-9._-]. */
bool server_name_valid(const char *name) _pure_;

/* The volume id of a server's disk: "<name>-sys" for @index 0, "<name>-data<index>" for data disk @index
 * (1-based). -EINVAL for an invalid name or index, -ENOMEM. */
int server_volume_id(const char *name, unsigned index, char **ret);

/* Parses a --data-disk argument "DEVICE", "DEVICE:key=KEY" or "DEVICE:plain". *ret_key is NULL when no
 * key was named; *ret_plain says ":plain". -EINVAL for an empty device, an empty key or an unknown
 * suffix, -ENOMEM. */
int server_disk_spec_parse(const char *spec, char **ret_device, char **ret_key, bool *ret_plain);

/* Whose disk a disk_spec is: a server's (a volume on a device) or an AS configuration's (a size and a
 * CMK, no device). */
typedef enum disk_kind {
        DISK_OF_SERVER,
        DISK_OF_AS_CONFIG,
} disk_kind;

/* One disk of a server or of an AS configuration. Empty strings are NULL. */
typedef struct disk_spec {
        char *volume_id; /* servers; NULL for a plain disk */
        char *device;    /* servers */
        uint64_t size;   /* AS configurations: the source disk's size in bytes, the least a launched disk must
                          * have; servers: not recorded (0 unless the caller sized the device) */
        char *key_id;    /* NULL for a plain disk */
        char *key_alias;
        char *backend;
        char *cipher;
        char *key_state; /* live; NULL for a plain disk */
        char *mapping;   /* live, servers: /dev/mapper/evs-VOLID while attached, else NULL */
        bool plain;
} disk_spec;

void disk_spec_done(disk_spec *d);
/* A deep copy. -ENOMEM. */
int disk_spec_copy(const disk_spec *d, disk_spec *ret);

/* The JSON of a disk: DISK_JSON_RECORD is the stored record (no live fields, "plain" always),
 * DISK_JSON_API is evsctl's --json output (key_state and mapping; "plain" on data disks only). */
typedef enum disk_json_mode {
        DISK_JSON_RECORD,
        DISK_JSON_API,
} disk_json_mode;

/* Adds "system_disk" and "data_disks" to @o. -ENOMEM. */
int disk_list_to_json(json_object *o, disk_kind kind, disk_json_mode mode, const disk_spec *system,
                      const disk_spec *data, size_t n_data);
/* Reads "system_disk" and "data_disks" of a record. *ret_data has room for at least one disk. -EUCLEAN
 * for a missing or invalid disk (a server disk without device, an encrypted one without a valid volume id,
 * an AS disk without size, an encrypted one without key id and backend), more than 16 data disks;
 * -ENOMEM. */
int disk_list_from_json(json_object *o, disk_kind kind, disk_spec *ret_system, disk_spec **ret_data,
                        size_t *ret_n_data);

/* The bus struct of a disk (DISK or AS_DISK of bus-api.h) and the lists "DISK a DISK". append: -errno of
 * sd-bus. read: 1 when read, 0 at the end of an array, -errno of sd-bus, -ENOMEM. */
const char *disk_bus_signature(disk_kind kind) _const_;
int disk_spec_bus_append(sd_bus_message *m, disk_kind kind, const disk_spec *d);
int disk_spec_bus_read(sd_bus_message *m, disk_kind kind, disk_spec *ret);
int disk_list_bus_append(sd_bus_message *m, disk_kind kind, const disk_spec *system, const disk_spec *data,
                         size_t n_data);
/* *ret_data has room for at least one disk. -EBADMSG for a list without a system disk or of more than 16
 * data disks. */
int disk_list_bus_read(sd_bus_message *m, disk_kind kind, disk_spec *ret_system, disk_spec **ret_data,
                       size_t *ret_n_data);
void disk_spec_array_free(disk_spec *d, size_t n);

/* A server: STATE/servers/<name>.json. state and warning are live. */
typedef struct server_record {
        char *name;
        char *image; /* image id */
        char *image_name;
        char *as_config; /* NULL unless launched from one */
        const char *state; /* live: "attached", "detached", "partially-attached" (its encrypted volumes) */
        char *warning;     /* live: why a volume is not attached, a header that cannot be read... */
        disk_spec system;
        disk_spec *data;
        size_t n_data;
        usec_t created;
        char *corrupt; /* set by listings alone: the record file is unreadable, and why (only name is set) */
} server_record;

/* An AS configuration: STATE/as-configs/<name>.json, a server's encryption mode. */
typedef struct as_config_record {
        char *name;
        char *image; /* image id */
        char *image_name;
        char *source_server;
        disk_spec system;
        disk_spec *data;
        size_t n_data;
        usec_t created;
        char *corrupt; /* set by listings alone: the record file is unreadable, and why (only name is set) */
} as_config_record;

void server_record_done(server_record *v);
void server_record_array_free(server_record *v, size_t n);
void as_config_record_done(as_config_record *v);
void as_config_record_array_free(as_config_record *v, size_t n);

/* Records, written atomically. load: -ENXIO for an invalid name or no record, -EUCLEAN for a corrupt one
 * (or one of another name), -errno of docstore_load(). save: -ENOMEM, -errno of docstore_save(). */
int server_db_save(const char *state_dir, const server_record *v);
int server_db_load(const char *state_dir, const char *name, server_record *ret);
int as_config_db_save(const char *state_dir, const as_config_record *v);
int as_config_db_load(const char *state_dir, const char *name, as_config_record *ret);

