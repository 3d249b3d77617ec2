/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Bus methods of the auto-scaling configurations. */

#include "as-config-ops.h"
#include "bus-api.h"
#include "bus-methods.h"
#include "errors.h"
#include "log.h"
#include "manager.h"

static int append_as_config(sd_bus_message *reply, const as_config_record *v) {
        int r;

        r = sd_bus_message_open_container(reply, 'r', "ssss" EVS_AS_DISK_SIG "a" EVS_AS_DISK_SIG "t");
        if (r >= 0)
                r = sd_bus_message_append(reply, "ssss", strempty(v->name), strempty(v->image), strempty(v->image_name),
                                          strempty(v->source_server));
        if (r >= 0)
                r = disk_list_bus_append(reply, DISK_OF_AS_CONFIG, &v->system, v->data, v->n_data);
        if (r >= 0)
                r = sd_bus_message_append(reply, "t", (uint64_t) v->created);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        return r;
}

static int append_as_config_item(sd_bus_message *reply, const void *item) {
        return append_as_config(reply, item);
}

static int reply_as_config(sd_bus_message *msg, const as_config_record *v) {
        return bus_reply(msg, append_as_config_item, v);
}

int method_create_as_config(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(as_config_record_done) as_config_record v = {};
        const char *name, *server;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "ss", &name, &server);
        if (r < 0)
                return r;
        r = as_config_create(userdata, name, server, &v, error);
        if (r < 0)
                return r;
        return reply_as_config(msg, &v);
}

static int method_get_or_delete_as_config(sd_bus_message *msg, manager *m, bool delete, sd_bus_error *error) {
        _cleanup_(as_config_record_done) as_config_record v = {};
        const char *name;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "s", &name);
        if (r < 0)
                return r;
        r = delete ? as_config_delete(m, name, &v, error) : as_config_get(m, name, &v, error);
        if (r < 0)
                return r;
        return reply_as_config(msg, &v);
}

int method_get_as_config(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return method_get_or_delete_as_config(msg, userdata, false, error);
}

int method_delete_as_config(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return method_get_or_delete_as_config(msg, userdata, true, error);
}

int method_list_as_configs(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        as_config_record *l = NULL;
        size_t n = 0;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = as_config_list(userdata, &l, &n, error);
        if (r < 0)
                return r;
        r = bus_reply_array(msg, EVS_AS_CONFIG_SIG, l, n, sizeof(as_config_record), append_as_config_item);
        as_config_record_array_free(l, n);
        return r;
}
