/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Bus methods of the encrypted images. */

#include "image-ops.h"
#include "server-ops.h"
#include "bus-api.h"
#include "bus-methods.h"
#include "errors.h"
#include "log.h"
#include "manager.h"

static int append_image(sd_bus_message *reply, const image_view *v) {
        return sd_bus_message_append(reply, EVS_IMAGE_SIG, strempty(v->id), strempty(v->name), strempty(v->path),
                                     strempty(v->key_id), strempty(v->key_alias), strempty(v->key_state),
                                     strempty(v->backend), strempty(v->cipher), v->size, strempty(v->source),
                                     (uint64_t) v->created);
}

static int append_image_item(sd_bus_message *reply, const void *item) {
        return append_image(reply, item);
}

static int reply_image(sd_bus_message *msg, const image_view *v) {
        return bus_reply(msg, append_image_item, v);
}

int method_import_image(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(image_view_done) image_view v = {};
        const char *file, *name, *key;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "sss", &file, &name, &key);
        if (r < 0)
                return r;
        r = image_import(userdata, file, name, key, &v, error);
        manager_notify_status(userdata); /* replaces the import's progress STATUS= */
        if (r < 0)
                return r;
        return reply_image(msg, &v);
}

static int method_get_or_delete_image(sd_bus_message *msg, manager *m, bool delete, sd_bus_error *error) {
        _cleanup_(image_view_done) image_view v = {};
        const char *ref;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "s", &ref);
        if (r < 0)
                return r;
        r = delete ? image_delete(m, ref, &v, error) : image_get(m, ref, &v, error);
        if (r < 0)
                return r;
        return reply_image(msg, &v);
}

int method_rewrap_image(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(image_view_done) image_view v = {};
        const char *ref, *key;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "ss", &ref, &key);
        if (r < 0)
                return r;
        r = image_rewrap(userdata, ref, key, &v, error);
        if (r < 0)
                return r;
        return reply_image(msg, &v);
}

int method_get_image(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return method_get_or_delete_image(msg, userdata, false, error);
}

int method_delete_image(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return method_get_or_delete_image(msg, userdata, true, error);
}

int method_list_images(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        image_view *l = NULL;
        size_t n = 0;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = image_list(userdata, &l, &n, error);
        if (r < 0)
                return r;
        r = bus_reply_array(msg, EVS_IMAGE_SIG, l, n, sizeof(image_view), append_image_item);
        image_view_array_free(l, n);
        return r;
}

int method_create_image_from_server(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(image_view_done) image_view v = {};
        const char *server, *name;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "ss", &server, &name);
        if (r < 0)
                return r;
        r = server_create_image(userdata, server, name, &v, error);
        manager_notify_status(userdata); /* replaces the copy's progress STATUS= */
        if (r < 0)
                return r;
        return reply_image(msg, &v);
}
