/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The peer-to-peer D-Bus server: one sd-bus connection per accepted client of the daemon's own
 * socket, no broker. Only root may call. */

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-id128.h>

#include "build-config.h"
#include "bus-api.h"
#include "errors.h"
#include "evs-messages.h"
#include "fileio.h"
#include "as-config-ops.h"
#include "image-ops.h"
#include "log.h"
#include "manager.h"
#include "server-ops.h"
#include "strv.h"
#include "volume-db.h"
#include "volume-ops.h"

static int check_root(sd_bus_message *msg, sd_bus_error *error) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        uid_t uid;
        int r;

        r = sd_bus_query_sender_creds(msg, SD_BUS_CREDS_EUID, &creds);
        if (r < 0)
                return evs_bus_error_setf(error, EACCES, "Cannot determine the caller's identity.");
        r = sd_bus_creds_get_euid(creds, &uid);
        if (r < 0 || uid != 0)
                return evs_bus_error_setf(error, EACCES, "Access denied: only root may use evs-cryptd.");
        return 0;
}

static int append_key(sd_bus_message *reply, const kms_key *k) {
        return sd_bus_message_append(reply, EVS_KEY_SIG, strempty(k->backend), strempty(k->id), strempty(k->alias),
                                     strempty(k->description), kms_key_state_to_string(k->state), (uint64_t) k->created,
                                     (uint64_t) k->deletion_date);
}

static int append_volume(sd_bus_message *reply, const volume_view *v) {
        return sd_bus_message_append(reply, EVS_VOLUME_SIG, strempty(v->id), strempty(v->device), strempty(v->mapping),
                                     strempty(v->state), strempty(v->key_id), strempty(v->key_alias),
                                     strempty(v->key_state), strempty(v->backend), strempty(v->warning),
                                     strempty(v->last_error));
}

static int reply_key(sd_bus_message *msg, const kms_key *k) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        r = append_key(reply, k);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

/* Sets @error from a backend failure: the backend's reason when it left one. */
static int key_error(sd_bus_error *error, kms_backend *b, int r, const char *what, const char *ref) {
        const char *e = b ? kms_backend_error(b) : NULL;

        if (r == -ENOENT && !b)
                return evs_bus_error_setf(error, ENOENT, "Unknown KMS backend in key reference '%s'.", ref);
        if (r == -ENOENT)
                return evs_bus_error_setf(error, ENOENT, "No key %s.", ref);
        if (r == -EINVAL && !e)
                return evs_bus_error_setf(error, EINVAL, "Invalid key reference '%s'.", ref);
        return evs_bus_error_setf(error, -r, "Cannot %s key %s: %s.", what, ref, e ?: strerror(-r));
}

static int method_list_keys(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        manager *m = userdata;
        int r;

        r = check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', EVS_KEY_SIG);
        if (r < 0)
                return r;
        for (size_t i = 0; i < m->registry->n_backends; i++) {
                kms_backend *b = m->registry->backends[i];
                kms_key *keys = NULL;
                size_t n = 0;

                r = kms_key_list(b, &keys, &n);
                if (r == -EHOSTDOWN && b != m->registry->backends[0]) {
                        log_warning_errno(r, "Cannot list keys of backend %s: %s", b->name, strna(kms_backend_error(b)));
                        continue;
                }
                if (r < 0)
                        return key_error(error, b, r, "list", b->name);
                for (size_t j = 0; j < n && r >= 0; j++)
                        r = append_key(reply, &keys[j]);
                kms_key_array_free(keys, n);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_key(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(kms_key_done) kms_key k = {};
        manager *m = userdata;
        kms_backend *b = NULL;
        const char *ref;
        int r;

        r = check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "s", &ref);
        if (r < 0)
                return r;
        r = kms_registry_resolve(m->registry, ref, &b, &k);
        if (r < 0)
                return key_error(error, b, r, "look up", ref);
        return reply_key(msg, &k);
}

static int method_create_key(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(kms_key_done) kms_key k = {};
        manager *m = userdata;
        const char *alias, *desc, *backend;
        kms_backend *b;
        int r;

        r = check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "sss", &alias, &desc, &backend);
        if (r < 0)
                return r;
        r = kms_registry_get(m->registry, isempty(backend) ? NULL : backend, &b);
        if (r < 0)
                return evs_bus_error_setf(error, ENOENT, "No KMS backend named '%s' is configured.", backend);
        if (!isempty(alias) && streq(alias, KMS_DEFAULT_KEY_ALIAS))
                return evs_bus_error_setf(error, EEXIST, "The alias %s is reserved for the default key.",
                                               KMS_DEFAULT_KEY_ALIAS);
        r = kms_key_create(b, isempty(alias) ? NULL : alias, isempty(desc) ? NULL : desc, &k);
        if (r < 0)
                return key_error(error, b, r, "create", isempty(alias) ? "(no alias)" : alias);
        log_info("Created key %s%s%s on backend %s.", k.id, k.alias ? " alias " : "", strempty(k.alias), b->name);
        return reply_key(msg, &k);
}

typedef enum key_verb {
        KEY_DISABLE,
        KEY_ENABLE,
        KEY_SCHEDULE_DELETION,
        KEY_CANCEL_DELETION,
} key_verb;

static int key_change(sd_bus_message *msg, manager *m, key_verb verb, sd_bus_error *error) {
        static const char *const what[] = { "disable", "enable", "schedule the deletion of", "cancel the deletion of" };
        _cleanup_(kms_key_done) kms_key k = {}, out = {};
        _cleanup_free_ char *backend = NULL, *key = NULL;
        kms_backend *b = NULL;
        const char *ref;
        uint32_t days = 0;
        int r;

        r = check_root(msg, error);
        if (r < 0)
                return r;
        r = verb == KEY_SCHEDULE_DELETION ? sd_bus_message_read(msg, "su", &ref, &days)
                                          : sd_bus_message_read(msg, "s", &ref);
        if (r < 0)
                return r;
        r = kms_ref_split(ref, &backend, &key);
        if (r < 0)
                return evs_bus_error_setf(error, EINVAL, "Invalid key reference '%s'.", ref);
        r = kms_registry_get(m->registry, backend, &b);
        if (r < 0)
                return key_error(error, NULL, -ENOENT, what[verb], ref);

        switch (verb) {
        case KEY_DISABLE:
        case KEY_ENABLE:
                r = kms_key_set_enabled(b, key, verb == KEY_ENABLE, &out);
                break;
        case KEY_SCHEDULE_DELETION:
                r = kms_key_schedule_deletion(b, key, days, &out);
                break;
        case KEY_CANCEL_DELETION:
                r = kms_key_cancel_deletion(b, key, &out);
                break;
        }
        if (r < 0)
                return key_error(error, b, r, what[verb], ref);

        {
                char f_id[64], f_key[300], f_backend[100], f_state[64];
                const char *fields[] = { f_id, f_key, f_backend, f_state, NULL };

                snprintf(f_id, sizeof f_id, "MESSAGE_ID=%s", EVS_MESSAGE_KEY_CHANGED);
                snprintf(f_key, sizeof f_key, "EVS_KEY_ID=%s", out.id);
                snprintf(f_backend, sizeof f_backend, "EVS_BACKEND=%s", b->name);
                snprintf(f_state, sizeof f_state, "EVS_KEY_STATE=%s", kms_key_state_to_string(out.state));
                log_fields(LOG_NOTICE, 0, fields, "Key %s%s%s%s (%s): now %s.", out.id, out.alias ? " (" : "",
                           strempty(out.alias), out.alias ? ")" : "", b->name, kms_key_state_to_string(out.state));
        }
        /* Open volumes keep working; tell the operator which ones will not re-attach. */
        (void) manager_check_open_volumes(m);
        return reply_key(msg, &out);
}

static int method_disable_key(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return key_change(msg, userdata, KEY_DISABLE, error);
}

static int method_enable_key(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return key_change(msg, userdata, KEY_ENABLE, error);
}

static int method_schedule_key_deletion(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return key_change(msg, userdata, KEY_SCHEDULE_DELETION, error);
}

static int method_cancel_key_deletion(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return key_change(msg, userdata, KEY_CANCEL_DELETION, error);
}

static int reply_volume(sd_bus_message *msg, const volume_view *v, const int *flag) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r < 0)
                return r;
        r = append_volume(reply, v);
        if (r >= 0 && flag)
                r = sd_bus_message_append(reply, "b", *flag);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_create_volume(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(volume_view_done) volume_view v = {};
        const char *device, *id, *key;
        int force, r;

        r = check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "sssb", &device, &id, &key, &force);
        if (r < 0)
                return r;
        r = volume_create(userdata, device, id, key, force, &v, error);
        if (r < 0)
                return r;
        return reply_volume(msg, &v, NULL);
}

static int method_attach_volume(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(volume_view_done) volume_view v = {};
        const char *ref;
        bool already = false;
        int r, flag;

        r = check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "s", &ref);
        if (r < 0)
                return r;
        r = volume_attach(userdata, ref, &v, &already, error);
        manager_notify_status(userdata);
        if (r < 0)
                return r;
        flag = already;
        return reply_volume(msg, &v, &flag);
}

static int method_detach_volume(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        const char *ref;
        bool was_attached = false, deferred = false;
        int force, r;

        r = check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "sb", &ref, &force);
        if (r < 0)
                return r;
        r = volume_detach(userdata, ref, force, &was_attached, &deferred, error);
        manager_notify_status(userdata);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(msg, "bb", was_attached, deferred);
}

static int method_get_volume(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(volume_view_done) volume_view v = {};
        const char *ref;
        int r;

        r = check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "s", &ref);
        if (r < 0)
                return r;
        r = volume_get(userdata, ref, &v, error);
        if (r < 0)
                return r;
        return reply_volume(msg, &v, NULL);
}

static int method_rewrap_volume(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(volume_view_done) volume_view v = {};
        const char *ref, *key;
        int r;

        r = check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "ss", &ref, &key);
        if (r < 0)
                return r;
        r = volume_rewrap(userdata, ref, key, &v, error);
        if (r < 0)
                return r;
        return reply_volume(msg, &v, NULL);
}

static int method_list_volumes(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        volume_view *l = NULL;
        size_t n = 0;
        int r;

        r = check_root(msg, error);
        if (r < 0)
                return r;
        r = volume_list(userdata, &l, &n, error);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', EVS_VOLUME_SIG);
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = append_volume(reply, &l[i]);
        volume_view_array_free(l, n);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int append_image(sd_bus_message *reply, const image_view *v) {
        return sd_bus_message_append(reply, EVS_IMAGE_SIG, strempty(v->id), strempty(v->name), strempty(v->path),
                                     strempty(v->key_id), strempty(v->key_alias), strempty(v->key_state),
                                     strempty(v->backend), strempty(v->cipher), v->size, strempty(v->source),
                                     (uint64_t) v->created);
}

static int reply_image(sd_bus_message *msg, const image_view *v) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = append_image(reply, v);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_import_image(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(image_view_done) image_view v = {};
        const char *file, *name, *key;
        int r;

        r = check_root(msg, error);
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

        r = check_root(msg, error);
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

static int method_rewrap_image(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(image_view_done) image_view v = {};
        const char *ref, *key;
        int r;

        r = check_root(msg, error);
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

static int method_get_image(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return method_get_or_delete_image(msg, userdata, false, error);
}

static int method_delete_image(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return method_get_or_delete_image(msg, userdata, true, error);
}

static int method_list_images(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        image_view *l = NULL;
        size_t n = 0;
        int r;

        r = check_root(msg, error);
        if (r < 0)
                return r;
        r = image_list(userdata, &l, &n, error);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', EVS_IMAGE_SIG);
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = append_image(reply, &l[i]);
        image_view_array_free(l, n);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_create_image_from_server(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(image_view_done) image_view v = {};
        const char *server, *name;
        int r;

        r = check_root(msg, error);
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

static int append_disk(sd_bus_message *reply, const server_disk *d) {
        return sd_bus_message_append(reply, EVS_DISK_SIG, strempty(d->volume_id), strempty(d->device),
                                     strempty(d->key_id), strempty(d->key_alias), strempty(d->key_state),
                                     strempty(d->backend), strempty(d->cipher), strempty(d->mapping), (int) d->plain);
}

static int append_server(sd_bus_message *reply, const server_view *v) {
        int r;

        r = sd_bus_message_open_container(reply, 'r', "ssssss" EVS_DISK_SIG "a" EVS_DISK_SIG "t");
        if (r >= 0)
                r = sd_bus_message_append(reply, "ssssss", strempty(v->name), strempty(v->image), strempty(v->image_name),
                                          strempty(v->as_config), strempty(v->state), strempty(v->warning));
        if (r >= 0)
                r = append_disk(reply, &v->system);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', EVS_DISK_SIG);
        for (size_t i = 0; r >= 0 && i < v->n_data; i++)
                r = append_disk(reply, &v->data[i]);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_message_append(reply, "t", (uint64_t) v->created);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        return r;
}

static int reply_server(sd_bus_message *msg, const server_view *v) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = append_server(reply, v);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_create_server(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(server_view_done) server_view v = {};
        _cleanup_(strv_freep) char **data = NULL;
        const char *name, *image, *as_config, *system;
        int force, r;

        r = check_root(msg, error);
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
        _cleanup_(server_view_done) server_view v = {};
        const char *name;
        int r;

        r = check_root(msg, error);
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

static int method_get_server(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return method_get_or_delete_server(msg, userdata, false, error);
}

static int method_delete_server(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return method_get_or_delete_server(msg, userdata, true, error);
}

static int method_list_servers(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        server_view *l = NULL;
        size_t n = 0;
        int r;

        r = check_root(msg, error);
        if (r < 0)
                return r;
        r = server_list(userdata, &l, &n, error);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', EVS_SERVER_SIG);
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = append_server(reply, &l[i]);
        server_view_array_free(l, n);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int append_as_disk(sd_bus_message *reply, const as_disk *d) {
        return sd_bus_message_append(reply, EVS_AS_DISK_SIG, d->size, strempty(d->key_id), strempty(d->key_alias),
                                     strempty(d->key_state), strempty(d->backend), strempty(d->cipher), (int) d->plain);
}

static int append_as_config(sd_bus_message *reply, const as_config_view *v) {
        int r;

        r = sd_bus_message_open_container(reply, 'r', "ssss" EVS_AS_DISK_SIG "a" EVS_AS_DISK_SIG "t");
        if (r >= 0)
                r = sd_bus_message_append(reply, "ssss", strempty(v->name), strempty(v->image), strempty(v->image_name),
                                          strempty(v->source_server));
        if (r >= 0)
                r = append_as_disk(reply, &v->system);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', EVS_AS_DISK_SIG);
        for (size_t i = 0; r >= 0 && i < v->n_data; i++)
                r = append_as_disk(reply, &v->data[i]);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_message_append(reply, "t", (uint64_t) v->created);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        return r;
}

static int reply_as_config(sd_bus_message *msg, const as_config_view *v) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = append_as_config(reply, v);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_create_as_config(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(as_config_view_done) as_config_view v = {};
        const char *name, *server;
        int r;

        r = check_root(msg, error);
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
        _cleanup_(as_config_view_done) as_config_view v = {};
        const char *name;
        int r;

        r = check_root(msg, error);
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

static int method_get_as_config(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return method_get_or_delete_as_config(msg, userdata, false, error);
}

static int method_delete_as_config(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return method_get_or_delete_as_config(msg, userdata, true, error);
}

static int method_list_as_configs(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        as_config_view *l = NULL;
        size_t n = 0;
        int r;

        r = check_root(msg, error);
        if (r < 0)
                return r;
        r = as_config_list(userdata, &l, &n, error);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', EVS_AS_CONFIG_SIG);
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = append_as_config(reply, &l[i]);
        as_config_view_array_free(l, n);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_status(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        manager *m = userdata;
        volume_record *recs = NULL;
        size_t n_recs = 0;
        int r;

        r = check_root(msg, error);
        if (r < 0)
                return r;
        (void) volume_db_list(m->config.state_dir, &recs, &n_recs);
        volume_record_array_free(recs, n_recs);

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'r', "sssasuu");
        if (r >= 0)
                r = sd_bus_message_append(reply, "sss", PACKAGE_VERSION, m->config.state_dir, m->registry->default_backend);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "s");
        for (size_t i = 0; r >= 0 && i < m->registry->n_backends; i++)
                r = sd_bus_message_append(reply, "s", m->registry->backends[i]->name);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_message_append(reply, "uu", (uint32_t) n_recs, volume_count_attached());
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

#define U SD_BUS_VTABLE_UNPRIVILEGED /* sd-bus's own check does not apply on a p2p socket; check_root() does */

const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("ListKeys", "", "a" EVS_KEY_SIG, method_list_keys, U),
        SD_BUS_METHOD("GetKey", "s", EVS_KEY_SIG, method_get_key, U),
        SD_BUS_METHOD("CreateKey", "sss", EVS_KEY_SIG, method_create_key, U),
        SD_BUS_METHOD("DisableKey", "s", EVS_KEY_SIG, method_disable_key, U),
        SD_BUS_METHOD("EnableKey", "s", EVS_KEY_SIG, method_enable_key, U),
        SD_BUS_METHOD("ScheduleKeyDeletion", "su", EVS_KEY_SIG, method_schedule_key_deletion, U),
        SD_BUS_METHOD("CancelKeyDeletion", "s", EVS_KEY_SIG, method_cancel_key_deletion, U),
        SD_BUS_METHOD("CreateVolume", "sssb", EVS_VOLUME_SIG, method_create_volume, U),
        SD_BUS_METHOD("AttachVolume", "s", EVS_VOLUME_SIG "b", method_attach_volume, U),
        SD_BUS_METHOD("DetachVolume", "sb", "bb", method_detach_volume, U),
        SD_BUS_METHOD("GetVolume", "s", EVS_VOLUME_SIG, method_get_volume, U),
        SD_BUS_METHOD("ListVolumes", "", "a" EVS_VOLUME_SIG, method_list_volumes, U),
        SD_BUS_METHOD("RewrapVolume", "ss", EVS_VOLUME_SIG, method_rewrap_volume, U),
        SD_BUS_METHOD("ImportImage", "sss", EVS_IMAGE_SIG, method_import_image, U),
        SD_BUS_METHOD("ListImages", "", "a" EVS_IMAGE_SIG, method_list_images, U),
        SD_BUS_METHOD("GetImage", "s", EVS_IMAGE_SIG, method_get_image, U),
        SD_BUS_METHOD("DeleteImage", "s", EVS_IMAGE_SIG, method_delete_image, U),
        SD_BUS_METHOD("RewrapImage", "ss", EVS_IMAGE_SIG, method_rewrap_image, U),
        SD_BUS_METHOD("CreateImageFromServer", "ss", EVS_IMAGE_SIG, method_create_image_from_server, U),
        SD_BUS_METHOD("CreateServer", "ssssasb", EVS_SERVER_SIG, method_create_server, U),
        SD_BUS_METHOD("ListServers", "", "a" EVS_SERVER_SIG, method_list_servers, U),
        SD_BUS_METHOD("GetServer", "s", EVS_SERVER_SIG, method_get_server, U),
        SD_BUS_METHOD("DeleteServer", "s", EVS_SERVER_SIG, method_delete_server, U),
        SD_BUS_METHOD("CreateAsConfig", "ss", EVS_AS_CONFIG_SIG, method_create_as_config, U),
        SD_BUS_METHOD("ListAsConfigs", "", "a" EVS_AS_CONFIG_SIG, method_list_as_configs, U),
        SD_BUS_METHOD("GetAsConfig", "s", EVS_AS_CONFIG_SIG, method_get_as_config, U),
        SD_BUS_METHOD("DeleteAsConfig", "s", EVS_AS_CONFIG_SIG, method_delete_as_config, U),
        SD_BUS_METHOD("GetStatus", "", EVS_STATUS_SIG, method_get_status, U),
        SD_BUS_VTABLE_END,
};

typedef struct connection {
        manager *manager;
        sd_bus *bus;
        sd_event_source *cleanup;
} connection;

static int on_cleanup(sd_event_source *s, void *userdata) {
        connection *c = userdata;

        sd_bus_flush_close_unref(c->bus);
        sd_event_source_unref(c->cleanup);
        free(c);
        return 0;
}

static int on_disconnected(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        connection *c = userdata;
        int r;

        /* Free the connection outside its own dispatch. */
        r = sd_event_add_defer(c->manager->event, &c->cleanup, on_cleanup, c);
        if (r < 0)
                return log_warning_errno(r, "Cannot schedule connection cleanup: %m");
        return sd_event_source_set_enabled(c->cleanup, SD_EVENT_ONESHOT);
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        manager *m = userdata;
        _cleanup_(closep) int cfd = -EBADF;
        connection *c;
        sd_id128_t id;
        int r;

        cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
                if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                        return 0;
                return log_error_errno(errno, "Failed to accept a bus connection: %m");
        }

        c = calloc(1, sizeof *c);
        if (!c)
                return log_oom();
        c->manager = m;

        r = sd_id128_randomize(&id);
        if (r >= 0)
                r = sd_bus_new(&c->bus);
        if (r >= 0)
                r = sd_bus_set_fd(c->bus, cfd, cfd);
        if (r >= 0) {
                TAKE_FD(cfd);
                r = sd_bus_set_server(c->bus, 1, id);
        }
        if (r >= 0)
                r = sd_bus_set_anonymous(c->bus, 1);
        if (r >= 0)
                r = sd_bus_negotiate_creds(c->bus, 1, SD_BUS_CREDS_EUID | SD_BUS_CREDS_PID);
        if (r >= 0)
                r = sd_bus_add_object_vtable(c->bus, NULL, EVS_BUS_OBJECT, EVS_BUS_INTERFACE, manager_vtable, m);
        if (r >= 0)
                r = sd_bus_add_match(c->bus, NULL,
                                     "type='signal',path='/org/freedesktop/DBus/Local',"
                                     "interface='org.freedesktop.DBus.Local',member='Disconnected'",
                                     on_disconnected, c);
        if (r >= 0)
                r = sd_bus_start(c->bus);
        if (r >= 0)
                r = sd_bus_attach_event(c->bus, m->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0) {
                log_warning_errno(r, "Failed to set up a bus connection: %m");
                sd_bus_flush_close_unref(c->bus);
                free(c);
        }
        return 0;
}

int bus_server_listen(manager *m) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_(closep) int fd = -EBADF;
        _cleanup_free_ char *dir = NULL;
        char *slash;
        int n, r;

        n = sd_listen_fds(1);
        if (n > 1)
                return log_error_errno(EINVAL, "Expected at most one socket from the service manager, got %d.", n);
        if (n == 1) {
                fd = SD_LISTEN_FDS_START;
                r = sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0);
                if (r <= 0)
                        return log_error_errno(r < 0 ? r : EINVAL, "Passed socket is not a listening AF_UNIX stream socket.");
                log_debug("Using the socket passed by the service manager.");
        } else {
                if (strlen(m->config.bus_path) >= sizeof sa.sun_path)
                        return log_error_errno(ENAMETOOLONG, "BusPath=%s is too long.", m->config.bus_path);
                strcpy(sa.sun_path, m->config.bus_path);

                dir = strdup(m->config.bus_path);
                if (!dir)
                        return log_oom();
                slash = strrchr(dir, '/');
                if (slash && slash != dir) {
                        *slash = 0;
                        r = mkdir_p(dir, 0755);
                        if (r < 0)
                                return log_error_errno(r, "Failed to create %s: %m", dir);
                }

                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (fd < 0)
                        return log_error_errno(errno, "Failed to create the bus socket: %m");
                (void) unlink(sa.sun_path);
                if (bind(fd, (struct sockaddr *) &sa, sizeof sa) < 0)
                        return log_error_errno(errno, "Failed to bind %s: %m", sa.sun_path);
                /* Anyone may connect, so that non-root callers get a clear AccessDenied from us. */
                if (chmod(sa.sun_path, 0666) < 0)
                        return log_error_errno(errno, "Failed to chmod %s: %m", sa.sun_path);
                if (listen(fd, SOMAXCONN) < 0)
                        return log_error_errno(errno, "Failed to listen on %s: %m", sa.sun_path);
                m->listen_fd_ours = true;
        }

        r = sd_event_add_io(m->event, &m->listen_source, fd, EPOLLIN, on_accept, m);
        if (r < 0)
                return log_error_errno(r, "Failed to watch the bus socket: %m");
        m->listen_fd = TAKE_FD(fd);
        return 0;
}
