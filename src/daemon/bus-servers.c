/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Bus methods of the servers (a system disk and data disks) and of the auto-scaling configurations (a
 * server's encryption mode): one struct writer and one get/delete/list body for both. */

#include "as-config-ops.h"
#include "bus-api.h"
#include "bus-methods.h"
#include "errors.h"
#include "log.h"
#include "manager.h"
#include "records.h"
#include "server-ops.h"
#include "strv.h"

/* The SERVER and AS_CONFIG structs: strings, the disks (one codec, server.h), the creation time. */
static int append_record(sd_bus_message *reply, disk_kind kind, const char *const *strings, size_t n_strings,
                         const disk_spec *system, const disk_spec *data, size_t n_data, usec_t created) {
        char sig[64];
        int r;

        snprintf(sig, sizeof sig, "%.*s%sa%st", (int) n_strings, "ssssssss", disk_bus_signature(kind),
                 disk_bus_signature(kind));
        r = sd_bus_message_open_container(reply, 'r', sig);
        for (size_t i = 0; r >= 0 && i < n_strings; i++)
                r = sd_bus_message_append_basic(reply, 's', strempty(strings[i]));
        if (r >= 0)
                r = disk_list_bus_append(reply, kind, system, data, n_data);
        if (r >= 0)
                r = sd_bus_message_append(reply, "t", (uint64_t) created);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        return r;
}

static int append_server(sd_bus_message *reply, const void *item) {
        const server_record *v = item;
        const char *strings[] = { v->name, v->image, v->image_name, v->as_config, v->state, v->warning };

        return append_record(reply, DISK_OF_SERVER, strings, ELEMENTSOF(strings), &v->system, v->data, v->n_data,
                             v->created);
}

static int append_as_config(sd_bus_message *reply, const void *item) {
        const as_config_record *v = item;
        const char *strings[] = { v->name, v->image, v->image_name, v->source_server };

        return append_record(reply, DISK_OF_AS_CONFIG, strings, ELEMENTSOF(strings), &v->system, v->data, v->n_data,
                             v->created);
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
        return bus_reply(msg, append_server, &v);
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
        return bus_reply(msg, append_as_config, &v);
}

typedef enum record_op {
        GET_SERVER,
        DELETE_SERVER,
        DELETE_SERVER_EX,
        LIST_SERVERS,
        GET_AS_CONFIG,
        DELETE_AS_CONFIG,
        LIST_AS_CONFIGS,
} record_op;

/* Get, Delete (s name) and List () of both kinds. */
static int method_record(sd_bus_message *msg, manager *m, record_op op, sd_bus_error *error) {
        _cleanup_(server_record_done) server_record s = {};
        _cleanup_(as_config_record_done) as_config_record a = {};
        server_record *sl = NULL;
        as_config_record *al = NULL;
        const char *name = NULL;
        size_t n = 0;
        int force = 0, r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        if (op == DELETE_SERVER_EX)
                r = sd_bus_message_read(msg, "sb", &name, &force);
        else if (op != LIST_SERVERS && op != LIST_AS_CONFIGS)
                r = sd_bus_message_read(msg, "s", &name);
        if (r < 0)
                return r;
        switch (op) {
        case GET_SERVER:
                r = server_get(m, name, &s, error);
                break;
        case DELETE_SERVER:
        case DELETE_SERVER_EX:
                r = server_delete(m, name, force, &s, error);
                manager_notify_status(m);
                break;
        case LIST_SERVERS:
                r = server_list(m, &sl, &n, error);
                break;
        case GET_AS_CONFIG:
                r = as_config_get(m, name, &a, error);
                break;
        case DELETE_AS_CONFIG:
                r = as_config_delete(m, name, &a, error);
                break;
        case LIST_AS_CONFIGS:
                r = as_config_list(m, &al, &n, error);
                break;
        }
        if (r < 0)
                return r;
        switch (op) {
        case LIST_SERVERS:
                r = bus_reply_array(msg, EVS_SERVER_SIG, sl, n, sizeof(server_record), append_server);
                server_record_array_free(sl, n);
                return r;
        case LIST_AS_CONFIGS:
                r = bus_reply_array(msg, EVS_AS_CONFIG_SIG, al, n, sizeof(as_config_record), append_as_config);
                as_config_record_array_free(al, n);
                return r;
        case GET_SERVER:
        case DELETE_SERVER:
        case DELETE_SERVER_EX:
                return bus_reply(msg, append_server, &s);
        default:
                return bus_reply(msg, append_as_config, &a);
        }
}

int method_get_server(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return method_record(msg, userdata, GET_SERVER, error);
}

int method_delete_server(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return method_record(msg, userdata, DELETE_SERVER, error);
}

int method_delete_server_ex(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return method_record(msg, userdata, DELETE_SERVER_EX, error);
}

int method_list_servers(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return method_record(msg, userdata, LIST_SERVERS, error);
}

int method_get_as_config(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return method_record(msg, userdata, GET_AS_CONFIG, error);
}

int method_delete_as_config(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return method_record(msg, userdata, DELETE_AS_CONFIG, error);
}

int method_list_as_configs(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return method_record(msg, userdata, LIST_AS_CONFIGS, error);
}

static int append_unreadable(sd_bus_message *reply, const void *item) {
        const unreadable_record *u = item;

        return sd_bus_message_append(reply, EVS_UNREADABLE_RECORD_SIG, u->kind, u->id, u->reason);
}

int method_list_unreadable_records(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        unreadable_record *l = NULL;
        size_t n = 0;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = records_unreadable(userdata, &l, &n);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot list the state records: %s.", strerror(-r));
        r = bus_reply_array(msg, EVS_UNREADABLE_RECORD_SIG, l, n, sizeof(unreadable_record), append_unreadable);
        unreadable_record_array_free(l, n);
        return r;
}
