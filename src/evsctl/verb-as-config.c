/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "bus-api.h"
#include "evsctl.h"
#include "evsctl-options.h"
#include "json-util.h"
#include "server.h"
#include "time-util.h"

/* An AS_CONFIG struct into JSON: 1 when read, 0 at the end of an array. */
static int read_as_config(sd_bus_message *m, json_object **ret) {
        static const char *const names[] = { "name", "image", "image_name", "source_server" };

        return read_disk_owner(m, DISK_OF_AS_CONFIG, names, ELEMENTSOF(names), ret);
}

static void print_as_config(json_object *v) {
        json_object *sys = NULL, *data = NULL;

        if (arg_json) {
                json_print(v);
                return;
        }
        printf("%13s: %s\n", "name", json_text(v, "name") ?: "-");
        printf("%13s: %s (%s)\n", "image", json_text(v, "image_name") ?: "-", json_text(v, "image") ?: "-");
        printf("%13s: %s\n", "source_server", json_text(v, "source_server") ?: "-");
        if (json_object_object_get_ex(v, "system_disk", &sys))
                printf("%13s: key %s (%s), %s\n", "system_disk", json_text(sys, "key_alias") ?: json_text(sys, "key_id") ?: "-",
                       json_text(sys, "key_state") ?: "-", json_text(sys, "cipher") ?: "-");
        if (json_object_object_get_ex(v, "data_disks", &data))
                for (size_t i = 0; i < json_object_array_length(data); i++) {
                        json_object *d = json_object_array_get_idx(data, i);

                        if (json_object_get_boolean(json_object_object_get(d, "plain")))
                                printf("%11s%zu: %s bytes, plain (not encrypted)\n", "data_disk", i + 1,
                                       json_text(d, "size") ?: "-");
                        else
                                printf("%11s%zu: %s bytes, key %s (%s), %s\n", "data_disk", i + 1, json_text(d, "size") ?: "-",
                                       json_text(d, "key_alias") ?: json_text(d, "key_id") ?: "-",
                                       json_text(d, "key_state") ?: "-", json_text(d, "cipher") ?: "-");
                }
        printf("%13s: %s\n", "created", json_text(v, "created") ?: "-");
}

int verb_as_config_create(sd_bus *bus, int argc, char *argv[]) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        if (!opt_from_server) {
                fprintf(stderr, "evsctl: as-config create needs --from-server SERVER.\n");
                return -EDOM;
        }
        r = call(bus, "CreateAsConfig", &reply, "ss", argv[1], opt_from_server);
        if (r < 0)
                return r;
        return show_reply(reply, read_as_config, print_as_config);
}

int verb_as_config_show(sd_bus *bus, int argc, char *argv[]) {
        return show_verb(bus, "GetAsConfig", argv[1], read_as_config, print_as_config);
}

int verb_as_config_delete(sd_bus *bus, int argc, char *argv[]) {
        _cleanup_(json_object_putp) json_object *v = NULL;
        int r;

        r = call_read(bus, "DeleteAsConfig", argv[1], read_as_config, &v);
        if (r < 0)
                return r;
        if (arg_json)
                json_print(v);
        else
                printf("Deleted AS configuration %s.\n", json_text(v, "name"));
        return 0;
}

static int as_config_row(table *t, json_object *v) {
        json_object *sys = NULL, *data = NULL;
        char n_data[32];

        json_object_object_get_ex(v, "system_disk", &sys);
        json_object_object_get_ex(v, "data_disks", &data);
        snprintf(n_data, sizeof n_data, "%zu", data ? json_object_array_length(data) : 0);
        return table_add_row(t, json_str(v, "name"), json_str(v, "image_name") ?: json_str(v, "image"),
                             json_str(v, "source_server"), json_str(sys, "key_alias") ?: json_str(sys, "key_id"),
                             json_str(v, "unreadable") ? "unreadable" : json_str(sys, "key_state"), n_data);
}

int verb_as_config_list(sd_bus *bus, int argc, char *argv[]) {
        static const char *const columns[] = { "CONFIG", "IMAGE", "SOURCE_SERVER", "SYSTEM_KEY", "KEY_STATE", "DATA_DISKS", NULL };

        return list_records_verb(bus, "ListAsConfigs", "as-configs", "AS configuration", EVS_AS_CONFIG_SIG,
                                 read_as_config, columns, as_config_row);
}
