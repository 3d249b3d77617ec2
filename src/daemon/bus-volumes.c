/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Bus methods of the volumes, and the daemon status. */

#include "build-config.h"
#include "volume-db.h"
#include "volume-ops.h"
#include "bus-api.h"
#include "bus-methods.h"
#include "errors.h"
#include "log.h"
#include "manager.h"
#include "secret.h"

static int append_volume(sd_bus_message *reply, const volume_view *v) {
        return sd_bus_message_append(reply, EVS_VOLUME_SIG, strempty(v->id), strempty(v->device), strempty(v->mapping),
                                     strempty(v->state), strempty(v->key_id), strempty(v->key_alias),
                                     strempty(v->key_state), strempty(v->backend), strempty(v->warning),
                                     strempty(v->last_error));
}

static int append_volume_item(sd_bus_message *reply, const void *item) {
        return append_volume(reply, item);
}

typedef struct volume_flag {
        const volume_view *view;
        int flag;
} volume_flag;

static int append_volume_flag(sd_bus_message *reply, const void *item) {
        const volume_flag *f = item;
        int r;

        r = append_volume(reply, f->view);
        return r < 0 ? r : sd_bus_message_append(reply, "b", f->flag);
}

static int reply_volume(sd_bus_message *msg, const volume_view *v, const int *flag) {
        if (flag)
                return bus_reply(msg, append_volume_flag, &(volume_flag) { v, *flag });
        return bus_reply(msg, append_volume_item, v);
}

/* GetVolume and its extended twins: one volume, written by @append. */
static int reply_one_volume(sd_bus_message *msg, void *userdata, sd_bus_error *error,
                            int (*append)(sd_bus_message *reply, const void *item)) {
        _cleanup_(volume_view_done) volume_view v = {};
        const char *ref;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "s", &ref);
        if (r < 0)
                return r;
        r = volume_get(userdata, ref, &v, error);
        if (r < 0)
                return r;
        return bus_reply(msg, append, &v);
}

/* ListVolumes and its extended twins: every volume as @sig, written by @append. */
static int reply_all_volumes(sd_bus_message *msg, void *userdata, sd_bus_error *error, const char *sig,
                             int (*append)(sd_bus_message *reply, const void *item)) {
        volume_view *l = NULL;
        size_t n = 0;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = volume_list(userdata, &l, &n, error);
        if (r < 0)
                return r;
        r = bus_reply_array(msg, sig, l, n, sizeof(volume_view), append);
        volume_view_array_free(l, n);
        return r;
}

int method_create_volume(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(volume_view_done) volume_view v = {};
        const char *device, *id, *key;
        int force, r;

        r = bus_check_root(msg, error);
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

int method_attach_volume(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(volume_view_done) volume_view v = {};
        const char *ref;
        bool already = false;
        int r, flag;

        r = bus_check_root(msg, error);
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

static int append_detach_result(sd_bus_message *reply, const void *item) {
        const int *flags = item;

        return sd_bus_message_append(reply, "bb", flags[0], flags[1]);
}

int method_detach_volume(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        const char *ref;
        bool was_attached = false, deferred = false;
        int force, r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "sb", &ref, &force);
        if (r < 0)
                return r;
        r = volume_detach(userdata, ref, force ? VOLUME_DETACH_FORCED : VOLUME_DETACH_GUARDED, &was_attached, &deferred, error);
        manager_notify_status(userdata);
        if (r < 0)
                return r;
        return bus_reply(msg, append_detach_result, (const int[]) { was_attached, deferred });
}

int method_get_volume(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return reply_one_volume(msg, userdata, error, append_volume_item);
}

int method_rewrap_volume(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(volume_view_done) volume_view v = {};
        const char *ref, *key;
        int r;

        r = bus_check_root(msg, error);
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

int method_list_volumes(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return reply_all_volumes(msg, userdata, error, EVS_VOLUME_SIG, append_volume_item);
}

static int append_volume_ex_fields(sd_bus_message *reply, const volume_view *v) {
        return sd_bus_message_append(reply, "ssssssssssuis", strempty(v->id), strempty(v->device), strempty(v->mapping),
                                     strempty(v->state), strempty(v->key_id), strempty(v->key_alias),
                                     strempty(v->key_state), strempty(v->backend), strempty(v->warning),
                                     strempty(v->last_error), (uint32_t) v->unbound_keyslots,
                                     (int32_t) v->recovery_keyslot, strempty(v->attached_by));
}

static int append_volume_ex(sd_bus_message *reply, const void *item) {
        int r;

        r = sd_bus_message_open_container(reply, 'r', "ssssssssssuis");
        if (r >= 0)
                r = append_volume_ex_fields(reply, item);
        return r < 0 ? r : sd_bus_message_close_container(reply);
}

static int append_check(sd_bus_message *reply, const void *item) {
        const volume_check_result *c = item;
        int r;

        r = sd_bus_message_open_container(reply, 'r', "ssssssssssuisss");
        if (r >= 0)
                r = append_volume_ex_fields(reply, &c->view);
        if (r >= 0)
                r = sd_bus_message_append(reply, "ss", strempty(c->error_name), strempty(c->error_message));
        return r < 0 ? r : sd_bus_message_close_container(reply);
}

int method_get_volume_details(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return reply_one_volume(msg, userdata, error, append_volume_ex);
}

int method_list_volume_details(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return reply_all_volumes(msg, userdata, error, EVS_VOLUME_EX_SIG, append_volume_ex);
}

int method_check_volume(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(volume_check_result_done) volume_check_result c = {};
        const char *ref;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "s", &ref);
        if (r < 0)
                return r;
        r = volume_check(userdata, ref, &c);
        if (r < 0)
                return r;
        return bus_reply(msg, append_check, &c);
}

int method_check_all_volumes(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        volume_check_result *l = NULL;
        size_t n = 0;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = volume_check_all(userdata, &l, &n, error);
        if (r < 0)
                return r;
        r = bus_reply_array(msg, EVS_CHECK_SIG, l, n, sizeof(volume_check_result), append_check);
        volume_check_result_array_free(l, n);
        return r;
}

static int append_int(sd_bus_message *reply, const void *item) {
        return sd_bus_message_append(reply, "i", *(const int32_t *) item);
}

int method_add_recovery_passphrase(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(secret_freep) secret *pass = NULL;
        const void *data;
        const char *ref;
        size_t size;
        int32_t slot32;
        int r, slot;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "s", &ref);
        if (r < 0)
                return r;
        r = sd_bus_message_read_array(msg, 'y', &data, &size);
        if (r < 0)
                return r;
        r = secret_new_copy(data, size, &pass); /* the message is wiped when freed (SD_BUS_VTABLE_SENSITIVE) */
        if (r < 0)
                return r;
        r = volume_recovery_add(userdata, ref, pass, &slot, error);
        if (r < 0)
                return r;
        slot32 = slot;
        return bus_reply(msg, append_int, &slot32);
}

int method_remove_recovery_passphrase(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        const char *ref;
        int32_t slot32;
        int r, slot;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "s", &ref);
        if (r < 0)
                return r;
        r = volume_recovery_remove(userdata, ref, &slot, error);
        if (r < 0)
                return r;
        slot32 = slot;
        return bus_reply(msg, append_int, &slot32);
}

int method_get_status(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        manager *m = userdata;
        volume_record *recs = NULL;
        size_t n_recs = 0;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        (void) volume_db_list(m->config.state_dir, &recs, &n_recs);
        volume_record_array_free(recs, n_recs);

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'r', "sssasuu");
        if (r >= 0)
                r = sd_bus_message_append(reply, "sss", PACKAGE_VERSION, m->config.state_dir,
                                          m->registry->default_backend);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "s");
        for (size_t i = 0; r >= 0 && i < m->registry->n_backends; i++)
                r = sd_bus_message_append(reply, "s", m->registry->backends[i]->name);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r >= 0)
                r = sd_bus_message_append(reply, "uu", (uint32_t) n_recs, atomic_load(&m->n_attached));
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int append_key_version_item(sd_bus_message *reply, const void *item) {
        const volume_view *v = item;

        return sd_bus_message_append(reply, EVS_VOLUME_KEY_VERSION_SIG, strempty(v->id), v->key_version,
                                     v->key_latest_version);
}

int method_get_volume_key_version(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return reply_one_volume(msg, userdata, error, append_key_version_item);
}

int method_list_volume_key_versions(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return reply_all_volumes(msg, userdata, error, EVS_VOLUME_KEY_VERSION_SIG, append_key_version_item);
}

static int append_created_item(sd_bus_message *reply, const void *item) {
        const volume_view *v = item;

        return sd_bus_message_append(reply, EVS_VOLUME_CREATED_SIG, strempty(v->id), v->created);
}

int method_get_volume_created(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return reply_one_volume(msg, userdata, error, append_created_item);
}

static int append_record_created(sd_bus_message *reply, const void *item) {
        const volume_record *v = item;

        return sd_bus_message_append(reply, EVS_VOLUME_CREATED_SIG, strempty(v->id), v->created);
}

/* From the records alone: no header is read and no KMS asked (evsctl volume list calls it beside
 * ListVolumeDetails). */
int method_list_volumes_created(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        manager *m = userdata;
        volume_record *l = NULL;
        size_t n = 0;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = volume_db_list(m->config.state_dir, &l, &n);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot list volumes: %s.", strerror(-r));
        r = bus_reply_array(msg, EVS_VOLUME_CREATED_SIG, l, n, sizeof(volume_record), append_record_created);
        volume_record_array_free(l, n);
        return r;
}
