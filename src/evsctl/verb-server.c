/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "bus-api.h"
#include "evsctl.h"
#include "evsctl-options.h"
#include "json-util.h"
#include "server.h"
#include "strv.h"
#include "time-util.h"

/* A SERVER struct into JSON: 1 when read, 0 at the end of an array. */
static int read_server(sd_bus_message *m, json_object **ret) {
        static const char *const names[] = { "name", "image", "image_name", "as_config", "state", "warning" };

        return read_disk_owner(m, DISK_OF_SERVER, names, ELEMENTSOF(names), ret);
}

static void print_server(json_object *v) {
        json_object *sys = NULL, *data = NULL;

        if (arg_json) {
                json_print(v);
                return;
        }
        printf("%12s: %s\n", "name", json_text(v, "name") ?: "-");
        printf("%12s: %s (%s)\n", "image", json_text(v, "image_name") ?: "-", json_text(v, "image") ?: "-");
        if (json_str(v, "as_config"))
                printf("%12s: %s\n", "as_config", json_text(v, "as_config"));
        printf("%12s: %s\n", "state", json_text(v, "state") ?: "-");
        if (json_str(v, "warning"))
                printf("%12s: %s\n", "warning", json_text(v, "warning"));
        if (json_object_object_get_ex(v, "system_disk", &sys))
                printf("%12s: %s on %s, key %s (%s), %s, %s\n", "system_disk", json_text(sys, "volume_id") ?: "-",
                       json_text(sys, "device") ?: "-", json_text(sys, "key_alias") ?: json_text(sys, "key_id") ?: "-",
                       json_text(sys, "key_state") ?: "-", json_text(sys, "cipher") ?: "-",
                       json_text(sys, "mapping") ?: "detached");
        if (json_object_object_get_ex(v, "data_disks", &data))
                for (size_t i = 0; i < json_object_array_length(data); i++) {
                        json_object *d = json_object_array_get_idx(data, i);

                        if (json_object_get_boolean(json_object_object_get(d, "plain")))
                                printf("%10s%zu: %s, plain (not encrypted)\n", "data_disk", i + 1,
                                       json_text(d, "device") ?: "-");
                        else
                                printf("%10s%zu: %s on %s, key %s (%s), %s, %s\n", "data_disk", i + 1,
                                       json_text(d, "volume_id") ?: "-", json_text(d, "device") ?: "-",
                                       json_text(d, "key_alias") ?: json_text(d, "key_id") ?: "-",
                                       json_text(d, "key_state") ?: "-", json_text(d, "cipher") ?: "-",
                                       json_text(d, "mapping") ?: "detached");
                }
        printf("%12s: %s\n", "created", json_text(v, "created") ?: "-");
}

/* "DEVICE[:key=KEY|:plain]" with DEVICE made absolute. */
static int absolute_disk_spec(const char *spec, char **ret) {
        _cleanup_free_ char *device = NULL, *key = NULL, *path = NULL;
        bool plain = false;
        int r;

        r = server_disk_spec_parse(spec, &device, &key, &plain);
        if (r == -EINVAL) {
                fprintf(stderr, "evsctl: invalid --data-disk '%s': DEVICE[:key=KEY|:plain].\n", spec);
                return -EDOM;
        }
        if (r < 0)
                return r;
        r = absolute_path_arg(device, &path);
        if (r < 0)
                return r;
        if (asprintf(ret, "%s%s%s", path, plain ? ":plain" : key ? ":key=" : "", plain ? "" : strempty(key)) < 0)
                return -ENOMEM;
        return 0;
}

int verb_server_create(sd_bus *bus, int argc, char *argv[]) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *msg = NULL, *reply = NULL;
        _cleanup_free_ char *system = NULL;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        size_t n = strv_length(opt_data_disks);
        char **disks;
        int r;

        if (!opt_image == !opt_as_config) {
                fprintf(stderr, "evsctl: server create needs exactly one of --image IMAGE and --as-config CONFIG.\n");
                return -EDOM;
        }
        if (!opt_system_disk) {
                fprintf(stderr, "evsctl: server create needs --system-disk DEVICE.\n");
                return -EDOM;
        }
        r = absolute_path_arg(opt_system_disk, &system);
        if (r < 0)
                return r;
        disks = calloc(n + 1, sizeof(char *));
        if (!disks)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                r = absolute_disk_spec(opt_data_disks[i], &disks[i]);
                if (r < 0) {
                        strv_free(disks);
                        return r;
                }
        }

        r = sd_bus_message_new_method_call(bus, &msg, NULL, EVS_BUS_OBJECT, EVS_BUS_INTERFACE, "CreateServer");
        if (r >= 0)
                r = sd_bus_message_append(msg, "ssss", argv[1], strempty(opt_image), strempty(opt_as_config), system);
        if (r >= 0)
                r = sd_bus_message_append_strv(msg, disks);
        if (r >= 0)
                r = sd_bus_message_append(msg, "b", (int) opt_force);
        strv_free(disks);
        if (r < 0)
                return r;
        /* Formatting disks and copying an image onto one take longer than sd-bus's default 25 s. */
        r = sd_bus_call(bus, msg, 600 * USEC_PER_SEC, &error, &reply);
        if (r < 0) {
                print_call_error(&error, r);
                sd_bus_error_free(&error);
                return r;
        }
        return show_reply(reply, read_server, print_server);
}

int verb_server_show(sd_bus *bus, int argc, char *argv[]) {
        return show_verb(bus, "GetServer", argv[1], read_server, print_server);
}

int verb_server_delete(sd_bus *bus, int argc, char *argv[]) {
        _cleanup_(json_object_putp) json_object *v = NULL;
        int r;

        if (opt_force) {
                /* DeleteServerEx: the daemon's detach guard skipped for every volume (no KMS call). */
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;

                r = call(bus, "DeleteServerEx", &reply, "sb", argv[1], (int) true);
                if (r >= 0)
                        r = read_reply(reply, read_server, &v);
        } else
                r = call_read(bus, "DeleteServer", argv[1], read_server, &v);
        if (r < 0)
                return r;
        if (arg_json)
                json_print(v);
        else
                printf("Deleted server %s; its volumes are detached, its disks and their data left as they are.\n",
                       json_text(v, "name"));
        return 0;
}

static int server_row(table *t, json_object *v) {
        json_object *sys = NULL, *data = NULL;
        char n_data[32];

        json_object_object_get_ex(v, "system_disk", &sys);
        json_object_object_get_ex(v, "data_disks", &data);
        snprintf(n_data, sizeof n_data, "%zu", data ? json_object_array_length(data) : 0);
        return table_add_row(t, json_str(v, "name"), json_str(v, "image_name") ?: json_str(v, "image"),
                             json_str(v, "state"), json_str(sys, "device"),
                             json_str(sys, "key_alias") ?: json_str(sys, "key_id"), n_data);
}

int verb_server_list(sd_bus *bus, int argc, char *argv[]) {
        static const char *const columns[] = { "SERVER", "IMAGE", "STATE", "SYSTEM_DISK", "KEY", "DATA_DISKS", NULL };

        return list_records_verb(bus, "ListServers", "servers", "server", EVS_SERVER_SIG, read_server, columns,
                                 server_row);
}
