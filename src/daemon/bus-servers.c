/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Bus methods of the servers (a system disk and data disks). */

#include "server-ops.h"
#include "strv.h"
#include "bus-api.h"
#include "bus-methods.h"
#include "errors.h"
#include "log.h"
#include "manager.h"

static int append_server(sd_bus_message *reply, const server_record *v) {
        int r;

        r = sd_bus_message_open_container(reply, 'r', "ssssss" EVS_DISK_SIG "a" EVS_DISK_SIG "t");
        if (r >= 0)
                r = sd_bus_message_append(reply, "ssssss", strempty(v->name), strempty(v->image),
                                          strempty(v->image_name), strempty(v->as_config), strempty(v->state),
                                          strempty(v->warning));
        if (r >= 0)
                r = disk_list_bus_append(reply, DISK_OF_SERVER, &v->system, v->data, v->n_data);
        if (r >= 0)
                r = sd_bus_message_append(reply, "t", (uint64_t) v->created);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        return r;
}

static int append_server_item(sd_bus_message *reply, const void *item) {
        return append_server(reply, item);
}

static int reply_server(sd_bus_message *msg, const server_record *v) {
        return bus_reply(msg, append_server_item, v);
}

int method_create_server(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(server_record_done) server_record v = {};
        _cleanup_(strv_freep) char **data = NULL;
        const char *name, *image, *as_config, *system;
        int force, r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "ssss", &name, &image, &as_config, &system);
        if (r < 0)
                return r;
        r = sd_bus_message_read_strv(msg, &data);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "b", &force);
        if (r < 0)
                return r;
        r = server_create(userdata, name, image, as_config, system, data, force, &v, error);
        manager_notify_status(userdata);
        if (r < 0)
                return r;
        return reply_server(msg, &v);
}

static int method_get_or_delete_server(sd_bus_message *msg, manager *m, bool delete, sd_bus_error *error) {
        _cleanup_(server_record_done) server_record v = {};
        const char *name;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "s", &name);
        if (r < 0)
                return r;
        r = delete ? server_delete(m, name, &v, error) : server_get(m, name, &v, error);
        if (delete)
                manager_notify_status(m);
        if (r < 0)
                return r;
        return reply_server(msg, &v);
}

int method_get_server(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return method_get_or_delete_server(msg, userdata, false, error);
}

int method_delete_server(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return method_get_or_delete_server(msg, userdata, true, error);
}

int method_list_servers(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        server_record *l = NULL;
        size_t n = 0;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = server_list(userdata, &l, &n, error);
        if (r < 0)
                return r;
        r = bus_reply_array(msg, EVS_SERVER_SIG, l, n, sizeof(server_record), append_server_item);
        server_record_array_free(l, n);
        return r;
}
