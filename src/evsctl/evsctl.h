/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <json-c/json.h>
#include <stdarg.h>
#include <stdbool.h>
#include <systemd/sd-bus.h>

#include "macro.h"
#include "server.h"

extern bool arg_json;
extern const char *arg_bus_path;


/* Calls a method; on failure prints the daemon's one-line reason and returns its -errno. */
int call(sd_bus *bus, const char *method, sd_bus_message **ret, const char *types, ...);
int callv(sd_bus *bus, const char *method, sd_bus_message **ret, const char *types, va_list ap);
/* call() that prints nothing on failure (for additive methods an older daemon may not have). */
int call_quiet(sd_bus *bus, const char *method, sd_bus_message **ret, const char *types, ...);
/* Adds the fields of GetKeyRotation(@id) to key @k: version, rotation_days, next_rotation, rotated (nothing when
 * the daemon or backend does not say). */
void add_key_rotation(sd_bus *bus, json_object *k);
/* Adds key_version, key_latest_version and key_outdated to volume @v (from a VOLUME_KEY_VERSION). */
int add_volume_key_version(json_object *v, unsigned version, unsigned latest);
/* Adds "created" to volume @v (from a VOLUME_CREATED; null when 0: unknown, or an older daemon). */
int add_volume_created(json_object *v, uint64_t created);

/* Output: a table for people, stable JSON with --json. */
typedef struct table table;
/* A table with the NULL-terminated @columns as its header. NULL on OOM. */
table *table_new(const char *const *columns);
int table_add_row(table *t, ...);
void table_print(table *t);
table *table_free(table *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(table *, table_free);
void json_print(json_object *o);

/* A list verb: calls @method, reads its array of @sig items with @read, prints them as a JSON array
 * (--json) or as a table with @columns, one row per item from @add_row. */
int list_verb(sd_bus *bus, const char *method, const char *sig, int (*read)(sd_bus_message *m, json_object **ret),
              const char *const *columns, int (*add_row)(table *t, json_object *item));
/* list_verb() of images, servers or AS configurations (@kind as in ListUnreadableRecords): each item gains
 * "unreadable", the reason its record file does not load or null; in text, a line on stderr for each such
 * item, "evsctl: WHAT ID: REASON.". */
int list_records_verb(sd_bus *bus, const char *method, const char *kind, const char *what, const char *sig,
                      int (*read)(sd_bus_message *m, json_object **ret), const char *const *columns,
                      int (*add_row)(table *t, json_object *item));

/* KEY and VOLUME structs of bus-api.h, read from a message into JSON objects. */
int read_key(sd_bus_message *m, json_object **ret);
int read_volume(sd_bus_message *m, json_object **ret);
/* A SERVER or AS_CONFIG struct into JSON: "id" (the first string), the @n_names strings named @names, then
 * the disks and the creation time (read_disks_and_created()). 1 when read, 0 at the end of an array. */
int read_disk_owner(sd_bus_message *m, disk_kind kind, const char *const *names, size_t n_names,
                    json_object **ret);
/* One struct of @reply read with @read: -EBADMSG when there is none. show_reply() prints it with @print;
 * call_read() calls @method(s @arg) first; show_verb() calls, reads and prints. */
int read_reply(sd_bus_message *reply, int (*read)(sd_bus_message *m, json_object **ret), json_object **ret);
int show_reply(sd_bus_message *reply, int (*read)(sd_bus_message *m, json_object **ret),
               void (*print)(json_object *v));
int call_read(sd_bus *bus, const char *method, const char *arg, int (*read)(sd_bus_message *m, json_object **ret),
              json_object **ret);
int show_verb(sd_bus *bus, const char *method, const char *arg, int (*read)(sd_bus_message *m, json_object **ret),
              void (*print)(json_object *v));
/* VOLUME_EX (VOLUME plus "unbound_keyslots", "recovery_keyslot", "attached_by") and CHECK (VOLUME_EX plus
 * "attachable", "error", "error_message"). */
int read_volume_ex(sd_bus_message *m, json_object **ret);
int read_check(sd_bus_message *m, json_object **ret);
/* The tail SERVER and AS_CONFIG structs share: the system disk, the array of data disks (read with
 * one codec of server.h for both kinds), the creation time; added to @o as "system_disk", "data_disks",
 * "created". */
int read_disks_and_created(sd_bus_message *m, disk_kind kind, json_object *o);
void print_key(json_object *k);
void print_volume(json_object *v);
const char *json_str(json_object *o, const char *key);
/* For text output: @s (or the string at @key) with control characters escaped (cescape()), valid until a
 * few dozen later calls; NULL for NULL. Every string from the daemon goes through it before a person sees
 * it; --json prints the exact strings. */
const char *esc(const char *s);
/* @bytes for people, 1024-based like systemd's: "512B", "64.0K", "2.9M", "1.5G". */
#define FORMAT_BYTES_MAX 16
const char *format_bytes(char *buf, size_t l, uint64_t bytes);
const char *json_text(json_object *o, const char *key);
/* Prints "evsctl: MESSAGE" for a failed call, escaped. */
void print_call_error(const sd_bus_error *error, int r);

/* The daemon runs elsewhere: paths are made absolute here. Prints "evsctl: PATH: reason." and returns
 * -ENXIO for a missing path, else -errno. */
int absolute_path_arg(const char *arg, char **ret);

/* The verbs: argv[0] is the verb name, argv[1..] its arguments. -EDOM means a usage error. */
int verb_key_create(sd_bus *bus, int argc, char *argv[]);
int verb_key_list(sd_bus *bus, int argc, char *argv[]);
int verb_key_show(sd_bus *bus, int argc, char *argv[]);
int verb_key_disable(sd_bus *bus, int argc, char *argv[]);
int verb_key_enable(sd_bus *bus, int argc, char *argv[]);
int verb_key_schedule_deletion(sd_bus *bus, int argc, char *argv[]);
int verb_key_cancel_deletion(sd_bus *bus, int argc, char *argv[]);
int verb_key_rotate(sd_bus *bus, int argc, char *argv[]);
int verb_key_set_rotation(sd_bus *bus, int argc, char *argv[]);
int verb_volume_create(sd_bus *bus, int argc, char *argv[]);
int verb_volume_attach(sd_bus *bus, int argc, char *argv[]);
int verb_volume_detach(sd_bus *bus, int argc, char *argv[]);
int verb_volume_list(sd_bus *bus, int argc, char *argv[]);
int verb_volume_show(sd_bus *bus, int argc, char *argv[]);
int verb_volume_rewrap(sd_bus *bus, int argc, char *argv[]);
int verb_volume_repair(sd_bus *bus, int argc, char *argv[]);
int verb_volume_check(sd_bus *bus, int argc, char *argv[]);
int verb_volume_recovery(sd_bus *bus, int argc, char *argv[]);
int verb_image_import(sd_bus *bus, int argc, char *argv[]);
int verb_image_list(sd_bus *bus, int argc, char *argv[]);
int verb_image_show(sd_bus *bus, int argc, char *argv[]);
int verb_image_delete(sd_bus *bus, int argc, char *argv[]);
int verb_image_rewrap(sd_bus *bus, int argc, char *argv[]);
int verb_image_create(sd_bus *bus, int argc, char *argv[]);
int verb_server_create(sd_bus *bus, int argc, char *argv[]);
int verb_server_list(sd_bus *bus, int argc, char *argv[]);
int verb_server_show(sd_bus *bus, int argc, char *argv[]);
int verb_server_delete(sd_bus *bus, int argc, char *argv[]);
int verb_as_config_create(sd_bus *bus, int argc, char *argv[]);
int verb_as_config_list(sd_bus *bus, int argc, char *argv[]);
int verb_as_config_show(sd_bus *bus, int argc, char *argv[]);
int verb_as_config_delete(sd_bus *bus, int argc, char *argv[]);
int verb_status(sd_bus *bus, int argc, char *argv[]);
int verb_metrics(sd_bus *bus, int argc, char *argv[]);

#define EVSCTL_CALL_TIMEOUT (300 * USEC_PER_SEC)
