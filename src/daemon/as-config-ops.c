/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* AS configurations: made from a server, list, show, delete. */

#include <fcntl.h>

#include "evs-messages.h"
#include "as-config-ops.h"
#include "docstore.h"
#include "errors.h"
#include "json-util.h"
#include "log.h"
#include "luks.h"
#include "server.h"
#include "server-ops.h"
#include "strv.h"
#include "string-util.h"

#define KIND "as-configs"

static void as_disk_done(as_disk *d) {
        free(d->key_id);
        free(d->key_alias);
        free(d->backend);
        free(d->cipher);
        *d = (as_disk) {};
}

void as_config_view_done(as_config_view *v) {
        if (!v)
                return;
        free(v->name);
        free(v->image);
        free(v->image_name);
        free(v->source_server);
        as_disk_done(&v->system);
        for (size_t i = 0; i < v->n_data; i++)
                as_disk_done(&v->data[i]);
        free(v->data);
        *v = (as_config_view) {};
}

void as_config_view_array_free(as_config_view *v, size_t n) {
        for (size_t i = 0; i < n; i++)
                as_config_view_done(&v[i]);
        free(v);
}

static json_object *disk_to_json(const as_disk *d) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        if (json_add_uint64(o, "size", d->size) < 0 || json_add_string(o, "key_id", d->key_id, true) < 0 ||
            json_add_string(o, "key_alias", d->key_alias, true) < 0 ||
            json_add_string(o, "backend", d->backend, true) < 0 || json_add_string(o, "cipher", d->cipher, true) < 0 ||
            json_object_object_add(o, "plain", json_object_new_boolean(d->plain)) < 0)
                return NULL;
        return TAKE_PTR(o);
}

static int disk_from_json(json_object *o, as_disk *ret) {
        _cleanup_(as_disk_done) as_disk d = {};
        json_object *p;

        if (!json_object_is_type(o, json_type_object) || json_get_uint64(o, "size", false, &d.size) < 0 ||
            json_get_string_dup(o, "key_id", &d.key_id) < 0 || json_get_string_dup(o, "key_alias", &d.key_alias) < 0 ||
            json_get_string_dup(o, "backend", &d.backend) < 0 || json_get_string_dup(o, "cipher", &d.cipher) < 0)
                return -EUCLEAN;
        d.plain = json_object_object_get_ex(o, "plain", &p) && json_object_get_boolean(p);
        if (!d.plain && (!d.key_id || !d.backend))
                return -EUCLEAN;
        *ret = d;
        d = (as_disk) {};
        return 0;
}

static int record_save(manager *m, const as_config_view *v) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        json_object *sys, *arr;
        int r;

        if (!o)
                return -ENOMEM;
        if ((r = json_add_string(o, "name", v->name, false)) < 0 ||
            (r = json_add_string(o, "image", v->image, false)) < 0 ||
            (r = json_add_string(o, "image_name", v->image_name, true)) < 0 ||
            (r = json_add_string(o, "source_server", v->source_server, true)) < 0 ||
            (r = json_add_uint64(o, "created", v->created)) < 0)
                return r;
        sys = disk_to_json(&v->system);
        if (!sys || json_object_object_add(o, "system_disk", sys) < 0)
                return -ENOMEM;
        arr = json_object_new_array();
        if (!arr || json_object_object_add(o, "data_disks", arr) < 0)
                return -ENOMEM;
        for (size_t i = 0; i < v->n_data; i++) {
                json_object *d = disk_to_json(&v->data[i]);

                if (!d || json_object_array_add(arr, d) < 0)
                        return -ENOMEM;
        }
        return docstore_save(m->config.state_dir, KIND, v->name, o);
}

static int record_load(manager *m, const char *name, as_config_view *ret) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        _cleanup_(as_config_view_done) as_config_view v = {};
        json_object *sys, *arr;
        uint64_t created = 0;
        int r;

        if (!server_name_valid(name))
                return -ENXIO;
        r = docstore_load(m->config.state_dir, KIND, name, &o);
        if (r == -ENOENT)
                return -ENXIO;
        if (r < 0)
                return r;
        if (json_get_string_dup(o, "name", &v.name) < 0 || !streq_ptr(v.name, name) ||
            json_get_string_dup(o, "image", &v.image) < 0 || !v.image ||
            json_get_string_dup(o, "image_name", &v.image_name) < 0 ||
            json_get_string_dup(o, "source_server", &v.source_server) < 0 ||
            json_get_uint64(o, "created", false, &created) < 0 || !json_object_object_get_ex(o, "system_disk", &sys) ||
            disk_from_json(sys, &v.system) < 0 || v.system.plain || !json_object_object_get_ex(o, "data_disks", &arr) ||
            !json_object_is_type(arr, json_type_array))
                return -EUCLEAN;
        v.created = created;
        v.n_data = json_object_array_length(arr);
        if (v.n_data > SERVER_DATA_DISKS_MAX)
                return -EUCLEAN;
        v.data = calloc(MAX(v.n_data, (size_t) 1), sizeof(as_disk));
        if (!v.data)
                return -ENOMEM;
        for (size_t i = 0; i < v.n_data; i++)
                if (disk_from_json(json_object_array_get_idx(arr, i), &v.data[i]) < 0)
                        return -EUCLEAN;
        *ret = v;
        v = (as_config_view) {};
        return 0;
}

static const char *key_state_of(manager *m, const as_disk *d) {
        _cleanup_(kms_key_done) kms_key key = {};
        kms_backend *b;
        int r;

        if (d->plain)
                return NULL;
        if (kms_registry_get(m->registry, d->backend, &b) < 0)
                return "unavailable";
        r = kms_key_get(b, d->key_id, &key);
        return r >= 0 ? kms_key_state_to_string(key.state) : r == -ENOENT ? "destroyed" : "unavailable";
}

static void fill_live(manager *m, as_config_view *v) {
        v->system.key_state = key_state_of(m, &v->system);
        for (size_t i = 0; i < v->n_data; i++)
                v->data[i].key_state = key_state_of(m, &v->data[i]);
}

static int disk_from_server(const server_disk *s, as_disk *ret) {
        _cleanup_(as_disk_done) as_disk d = { .plain = s->plain };
        int r;

        if (!s->plain && ((r = free_and_strdup_nonempty(&d.key_id, s->key_id)) < 0 ||
                          (r = free_and_strdup_nonempty(&d.key_alias, s->key_alias)) < 0 ||
                          (r = free_and_strdup_nonempty(&d.backend, s->backend)) < 0 ||
                          (r = free_and_strdup_nonempty(&d.cipher, s->cipher)) < 0))
                return r;
        *ret = d;
        d = (as_disk) {};
        return 0;
}

static int device_size(const char *device, uint64_t *ret) {
        _cleanup_(closep) int fd = -EBADF;
        off_t end;

        fd = open(device, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        end = lseek(fd, 0, SEEK_END);
        if (end < 0)
                return negative_errno();
        *ret = (uint64_t) end;
        return 0;
}

int as_config_create(manager *m, const char *name, const char *server, as_config_view *ret, sd_bus_error *error) {
        _cleanup_(as_config_view_done) as_config_view v = {};
        _cleanup_(server_view_done) server_view s = {};
        _cleanup_(luks_info_done) luks_info info = {};
        const char *reason = NULL;
        int r;

        if (!server_name_valid(name))
                return evs_bus_error_setf(
                        error, EINVAL,
                        "Invalid AS configuration name '%s': 1-%u characters of [A-Za-z0-9._-], not starting with '.'.",
                        strempty(name), SERVER_NAME_MAX);
        r = record_load(m, name, &v);
        if (r != -ENXIO)
                return r >= 0 ? evs_bus_error_setf(error, EEXIST, "An AS configuration named %s exists already.", name)
                              : evs_bus_error_setf(error, -r, "Cannot read AS configuration %s: %s.", name,
                                                   strerror(-r));
        r = server_get(m, server, &s, error);
        if (r < 0)
                return r;
        /* The system disk's header is the truth for its CMK and mode. */
        if (s.system.plain || luks_read(s.system.device, &info, &reason) < 0 ||
            !streq_ptr(info.label, s.system.volume_id))
                return evs_bus_error_setf(
                        error, ENODATA,
                        "Refusing to make AS configuration %s from server %s: its system disk %s is not encrypted.",
                        name, s.name, s.system.device);
        if (!s.image)
                return evs_bus_error_setf(error, ENODATA, "Server %s has no image recorded.", s.name);

        v.created = now_realtime();
        if ((r = free_and_strdup_nonempty(&v.name, name)) < 0 ||
            (r = free_and_strdup_nonempty(&v.image, s.image)) < 0 ||
            (r = free_and_strdup_nonempty(&v.image_name, s.image_name)) < 0 ||
            (r = free_and_strdup_nonempty(&v.source_server, s.name)) < 0 ||
            (r = disk_from_server(&s.system, &v.system)) < 0)
                return r;
        v.data = calloc(MAX(s.n_data, (size_t) 1), sizeof(as_disk));
        if (!v.data)
                return -ENOMEM;
        for (size_t i = 0; i < s.n_data; i++) {
                r = disk_from_server(&s.data[i], &v.data[i]);
                if (r < 0)
                        return r;
                v.n_data++;
                r = device_size(s.data[i].device, &v.data[i].size);
                if (r < 0)
                        return evs_bus_error_setf(error, -r, "Cannot size data disk %s of server %s: %s.",
                                                  s.data[i].device, s.name, strerror(-r));
                if (!v.data[i].plain && !v.data[i].key_id)
                        return evs_bus_error_setf(error, ENODATA,
                                                  "Data disk %s of server %s: its header cannot be read.",
                                                  s.data[i].device, s.name);
        }
        r = device_size(s.system.device, &v.system.size);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot size the system disk of server %s: %s.", s.name,
                                          strerror(-r));
        r = record_save(m, &v);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot record AS configuration %s: %s.", name, strerror(-r));
        log_id(LOG_INFO, 0, EVS_MESSAGE_AS_CONFIG_CREATED, "Created AS configuration %s from server %s: image %s, system key %s (%s), %zu data disk(s).", name,
                 s.name, v.image, v.system.key_id, v.system.backend, v.n_data);
        fill_live(m, &v);
        *ret = v;
        v = (as_config_view) {};
        return 0;
}

int as_config_get(manager *m, const char *name, as_config_view *ret, sd_bus_error *error) {
        int r;

        if (isempty(name))
                return evs_bus_error_setf(error, EINVAL, "No AS configuration given.");
        r = record_load(m, name, ret);
        if (r == -ENXIO)
                return evs_bus_error_setf(error, ENXIO, "No AS configuration %s.", name);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot read AS configuration %s: %s.", name, strerror(-r));
        fill_live(m, ret);
        return 0;
}

static int load_one(void *userdata, const char *name, void *record) {
        int r = record_load(userdata, name, record);

        if (r >= 0)
                fill_live(userdata, record);
        return r;
}

int as_config_list(manager *m, as_config_view **ret, size_t *ret_n, sd_bus_error *error) {
        int r;

        r = docstore_load_all(m->config.state_dir, KIND, sizeof(as_config_view), load_one, m, (void **) ret, ret_n);
        if (r < 0)
                return evs_bus_error_setf(error, r, "Cannot list AS configurations: %s.", strerror(-r));
        return 0;
}

int as_config_delete(manager *m, const char *name, as_config_view *ret, sd_bus_error *error) {
        _cleanup_(as_config_view_done) as_config_view v = {};
        int r;

        r = as_config_get(m, name, &v, error);
        if (r < 0)
                return r;
        r = docstore_remove(m->config.state_dir, KIND, v.name);
        if (r < 0 && r != -ENOENT)
                return evs_bus_error_setf(error, -r, "Cannot delete AS configuration %s: %s.", v.name, strerror(-r));
        log_id(LOG_INFO, 0, EVS_MESSAGE_AS_CONFIG_DELETED, "Deleted AS configuration %s.", v.name);
        *ret = v;
        v = (as_config_view) {};
        return 0;
}
