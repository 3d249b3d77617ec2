/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus-api.h"
#include "docstore.h"
#include "json-util.h"
#include "server.h"
#include "string-util.h"
#include "token.h"

bool server_name_valid(const char *name) {
        return volume_id_valid(name) && strlen(name) <= SERVER_NAME_MAX;
}

int server_volume_id(const char *name, unsigned index, char **ret) {
        int n;

        if (!server_name_valid(name) || index > SERVER_DATA_DISKS_MAX)
                return -EINVAL;
        n = index == 0 ? asprintf(ret, "%s-sys", name) : asprintf(ret, "%s-data%u", name, index);
        return n < 0 ? -ENOMEM : 0;
}

int server_disk_spec_parse(const char *spec, char **ret_device, char **ret_key, bool *ret_plain) {
        _cleanup_free_ char *device = NULL, *key = NULL;
        const char *colon, *suffix;
        bool plain = false;

        if (isempty(spec))
                return -EINVAL;
        /* The suffix starts at the last ":key=" or ":plain"; a device path may hold other colons. */
        colon = NULL;
        for (const char *p = strchr(spec, ':'); p; p = strchr(p + 1, ':'))
                if (strncmp(p, ":key=", 5) == 0 || strcmp(p, ":plain") == 0)
                        colon = p;
        if (!colon)
                device = strdup(spec);
        else {
                device = strndup(spec, (size_t) (colon - spec));
                suffix = colon + 1;
                if (streq(suffix, "plain"))
                        plain = true;
                else {
                        suffix += strlen("key=");
                        if (isempty(suffix))
                                return -EINVAL;
                        key = strdup(suffix);
                        if (!key)
                                return -ENOMEM;
                }
        }
        if (!device)
                return -ENOMEM;
        if (isempty(device))
                return -EINVAL;
        *ret_device = TAKE_PTR(device);
        *ret_key = TAKE_PTR(key);
        *ret_plain = plain;
        return 0;
}

void disk_spec_done(disk_spec *d) {
        if (!d)
                return;
        free(d->volume_id);
        free(d->device);
        free(d->key_id);
        free(d->key_alias);
        free(d->backend);
        free(d->cipher);
        free(d->key_state);
        free(d->mapping);
        *d = (disk_spec) {};
}

void disk_spec_array_free(disk_spec *d, size_t n) {
        for (size_t i = 0; d && i < n; i++)
                disk_spec_done(&d[i]);
        free(d);
}

int disk_spec_copy(const disk_spec *d, disk_spec *ret) {
        _cleanup_(disk_spec_done) disk_spec c = { .size = d->size, .plain = d->plain };

        if (free_and_strdup_nonempty(&c.volume_id, d->volume_id) < 0 ||
            free_and_strdup_nonempty(&c.device, d->device) < 0 || free_and_strdup_nonempty(&c.key_id, d->key_id) < 0 ||
            free_and_strdup_nonempty(&c.key_alias, d->key_alias) < 0 ||
            free_and_strdup_nonempty(&c.backend, d->backend) < 0 || free_and_strdup_nonempty(&c.cipher, d->cipher) < 0 ||
            free_and_strdup_nonempty(&c.key_state, d->key_state) < 0 ||
            free_and_strdup_nonempty(&c.mapping, d->mapping) < 0)
                return -ENOMEM;
        *ret = c;
        c = (disk_spec) {};
        return 0;
}

/* --- JSON --- */

/* The order of the members is the order of the bus struct: evsctl's output and the records stay as they
 * were when each kind had its own writer. */
static json_object *disk_to_json(const disk_spec *d, disk_kind kind, disk_json_mode mode, bool with_plain) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        bool api = mode == DISK_JSON_API;

        if (!o)
                return NULL;
        if (kind == DISK_OF_SERVER) {
                if (json_add_string(o, "volume_id", d->volume_id, true) < 0 ||
                    json_add_string(o, "device", d->device, true) < 0)
                        return NULL;
        } else if (json_add_uint64(o, "size", d->size) < 0)
                return NULL;
        if (json_add_string(o, "key_id", d->key_id, true) < 0 || json_add_string(o, "key_alias", d->key_alias, true) < 0 ||
            (api && json_add_string(o, "key_state", d->key_state, true) < 0) ||
            json_add_string(o, "backend", d->backend, true) < 0 || json_add_string(o, "cipher", d->cipher, true) < 0 ||
            (api && kind == DISK_OF_SERVER && json_add_string(o, "mapping", d->mapping, true) < 0))
                return NULL;
        if (with_plain && json_object_object_add(o, "plain", json_object_new_boolean(d->plain)) < 0)
                return NULL;
        return TAKE_PTR(o);
}

int disk_list_to_json(json_object *o, disk_kind kind, disk_json_mode mode, const disk_spec *system,
                      const disk_spec *data, size_t n_data) {
        json_object *sys, *arr;

        sys = disk_to_json(system, kind, mode, mode == DISK_JSON_RECORD);
        if (!sys || json_object_object_add(o, "system_disk", sys) < 0)
                return -ENOMEM;
        arr = json_object_new_array();
        if (!arr || json_object_object_add(o, "data_disks", arr) < 0)
                return -ENOMEM;
        for (size_t i = 0; i < n_data; i++) {
                json_object *d = disk_to_json(&data[i], kind, mode, true);

                if (!d || json_object_array_add(arr, d) < 0)
                        return -ENOMEM;
        }
        return 0;
}

static int disk_from_json(json_object *o, disk_kind kind, disk_spec *ret) {
        _cleanup_(disk_spec_done) disk_spec d = {};
        json_object *p;

        if (!json_object_is_type(o, json_type_object))
                return -EUCLEAN;
        if (kind == DISK_OF_SERVER) {
                if (json_get_string_dup(o, "volume_id", &d.volume_id) < 0 ||
                    json_get_string_dup(o, "device", &d.device) < 0 || !d.device)
                        return -EUCLEAN;
        } else if (json_get_uint64(o, "size", false, &d.size) < 0)
                return -EUCLEAN;
        if (json_get_string_dup(o, "key_id", &d.key_id) < 0 || json_get_string_dup(o, "key_alias", &d.key_alias) < 0 ||
            json_get_string_dup(o, "backend", &d.backend) < 0 || json_get_string_dup(o, "cipher", &d.cipher) < 0)
                return -EUCLEAN;
        d.plain = json_object_object_get_ex(o, "plain", &p) && json_object_get_boolean(p);
        if (!d.plain && kind == DISK_OF_SERVER && (!d.volume_id || !volume_id_valid(d.volume_id)))
                return -EUCLEAN;
        if (!d.plain && kind == DISK_OF_AS_CONFIG && (!d.key_id || !d.backend))
                return -EUCLEAN;
        *ret = d;
        d = (disk_spec) {};
        return 0;
}

int disk_list_from_json(json_object *o, disk_kind kind, disk_spec *ret_system, disk_spec **ret_data,
                        size_t *ret_n_data) {
        _cleanup_(disk_spec_done) disk_spec sys = {};
        disk_spec *data = NULL;
        json_object *s, *arr;
        size_t n;
        int r;

        if (!json_object_object_get_ex(o, "system_disk", &s) || disk_from_json(s, kind, &sys) < 0 ||
            !json_object_object_get_ex(o, "data_disks", &arr) || !json_object_is_type(arr, json_type_array))
                return -EUCLEAN;
        n = json_object_array_length(arr);
        if (n > SERVER_DATA_DISKS_MAX)
                return -EUCLEAN;
        data = calloc(MAX(n, (size_t) 1), sizeof(disk_spec));
        if (!data)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                r = disk_from_json(json_object_array_get_idx(arr, i), kind, &data[i]);
                if (r < 0) {
                        disk_spec_array_free(data, i);
                        return r;
                }
        }
        *ret_system = sys;
        sys = (disk_spec) {};
        *ret_data = data;
        *ret_n_data = n;
        return 0;
}

/* --- bus --- */

const char *disk_bus_signature(disk_kind kind) {
        return kind == DISK_OF_SERVER ? EVS_DISK_SIG : EVS_AS_DISK_SIG;
}

int disk_spec_bus_append(sd_bus_message *m, disk_kind kind, const disk_spec *d) {
        if (kind == DISK_OF_SERVER)
                return sd_bus_message_append(m, EVS_DISK_SIG, strempty(d->volume_id), strempty(d->device),
                                             strempty(d->key_id), strempty(d->key_alias), strempty(d->key_state),
                                             strempty(d->backend), strempty(d->cipher), strempty(d->mapping),
                                             (int) d->plain);
        return sd_bus_message_append(m, EVS_AS_DISK_SIG, d->size, strempty(d->key_id), strempty(d->key_alias),
                                     strempty(d->key_state), strempty(d->backend), strempty(d->cipher), (int) d->plain);
}

int disk_spec_bus_read(sd_bus_message *m, disk_kind kind, disk_spec *ret) {
        _cleanup_(disk_spec_done) disk_spec d = {};
        const char *volume_id = NULL, *device = NULL, *key_id, *key_alias, *key_state, *backend, *cipher,
                   *mapping = NULL;
        int plain, r;

        if (kind == DISK_OF_SERVER)
                r = sd_bus_message_read(m, EVS_DISK_SIG, &volume_id, &device, &key_id, &key_alias, &key_state,
                                        &backend, &cipher, &mapping, &plain);
        else
                r = sd_bus_message_read(m, EVS_AS_DISK_SIG, &d.size, &key_id, &key_alias, &key_state, &backend,
                                        &cipher, &plain);
        if (r <= 0)
                return r;
        d.plain = plain;
        if (free_and_strdup_nonempty(&d.volume_id, volume_id) < 0 || free_and_strdup_nonempty(&d.device, device) < 0 ||
            free_and_strdup_nonempty(&d.key_id, key_id) < 0 || free_and_strdup_nonempty(&d.key_alias, key_alias) < 0 ||
            free_and_strdup_nonempty(&d.key_state, key_state) < 0 ||
            free_and_strdup_nonempty(&d.backend, backend) < 0 || free_and_strdup_nonempty(&d.cipher, cipher) < 0 ||
            free_and_strdup_nonempty(&d.mapping, mapping) < 0)
                return -ENOMEM;
        *ret = d;
        d = (disk_spec) {};
        return 1;
}

int disk_list_bus_append(sd_bus_message *m, disk_kind kind, const disk_spec *system, const disk_spec *data,
                         size_t n_data) {
        int r;

        r = disk_spec_bus_append(m, kind, system);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', disk_bus_signature(kind));
        for (size_t i = 0; r >= 0 && i < n_data; i++)
                r = disk_spec_bus_append(m, kind, &data[i]);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

int disk_list_bus_read(sd_bus_message *m, disk_kind kind, disk_spec *ret_system, disk_spec **ret_data,
                       size_t *ret_n_data) {
        _cleanup_(disk_spec_done) disk_spec sys = {};
        disk_spec *data = NULL;
        size_t n = 0;
        int r;

        r = disk_spec_bus_read(m, kind, &sys);
        if (r <= 0)
                return r < 0 ? r : -EBADMSG;
        r = sd_bus_message_enter_container(m, 'a', disk_bus_signature(kind));
        if (r < 0)
                return r;
        data = calloc(SERVER_DATA_DISKS_MAX, sizeof(disk_spec));
        if (!data)
                return -ENOMEM;
        for (;;) {
                disk_spec d = {};

                r = disk_spec_bus_read(m, kind, &d);
                if (r == 0)
                        break;
                if (r > 0 && n >= SERVER_DATA_DISKS_MAX) {
                        disk_spec_done(&d);
                        r = -EBADMSG;
                }
                if (r < 0) {
                        disk_spec_array_free(data, n);
                        return r;
                }
                data[n++] = d;
        }
        r = sd_bus_message_exit_container(m);
        if (r < 0) {
                disk_spec_array_free(data, n);
                return r;
        }
        *ret_system = sys;
        sys = (disk_spec) {};
        *ret_data = data;
        *ret_n_data = n;
        return 0;
}

/* --- records --- */

void server_record_done(server_record *v) {
        if (!v)
                return;
        free(v->name);
        free(v->image);
        free(v->image_name);
        free(v->as_config);
        free(v->warning);
        free(v->corrupt);
        disk_spec_done(&v->system);
        disk_spec_array_free(v->data, v->n_data);
        *v = (server_record) {};
}

void server_record_array_free(server_record *v, size_t n) {
        for (size_t i = 0; i < n; i++)
                server_record_done(&v[i]);
        free(v);
}

void as_config_record_done(as_config_record *v) {
        if (!v)
                return;
        free(v->name);
        free(v->image);
        free(v->image_name);
        free(v->source_server);
        free(v->corrupt);
        disk_spec_done(&v->system);
        disk_spec_array_free(v->data, v->n_data);
        *v = (as_config_record) {};
}

void as_config_record_array_free(as_config_record *v, size_t n) {
        for (size_t i = 0; i < n; i++)
                as_config_record_done(&v[i]);
        free(v);
}

int server_db_save(const char *state_dir, const server_record *v) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        int r;

        if (!o)
                return -ENOMEM;
        if ((r = json_add_string(o, "name", v->name, false)) < 0 ||
            (r = json_add_string(o, "image", v->image, true)) < 0 ||
            (r = json_add_string(o, "image_name", v->image_name, true)) < 0 ||
            (r = json_add_string(o, "as_config", v->as_config, true)) < 0 ||
            (r = json_add_uint64(o, "created", v->created)) < 0 ||
            (r = disk_list_to_json(o, DISK_OF_SERVER, DISK_JSON_RECORD, &v->system, v->data, v->n_data)) < 0)
                return r;
        return docstore_save(state_dir, SERVER_KIND, v->name, o);
}

int server_db_load(const char *state_dir, const char *name, server_record *ret) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        _cleanup_(server_record_done) server_record v = {};
        uint64_t created = 0;
        int r;

        if (!server_name_valid(name))
                return -ENXIO;
        r = docstore_load(state_dir, SERVER_KIND, name, &o);
        if (r == -ENOENT)
                return -ENXIO;
        if (r < 0)
                return r;
        if (json_get_string_dup(o, "name", &v.name) < 0 || !streq_ptr(v.name, name) ||
            json_get_string_dup(o, "image", &v.image) < 0 || json_get_string_dup(o, "image_name", &v.image_name) < 0 ||
            json_get_string_dup(o, "as_config", &v.as_config) < 0 ||
            json_get_uint64(o, "created", false, &created) < 0)
                return -EUCLEAN;
        r = disk_list_from_json(o, DISK_OF_SERVER, &v.system, &v.data, &v.n_data);
        if (r < 0)
                return r;
        v.created = created;
        *ret = v;
        v = (server_record) {};
        return 0;
}

int as_config_db_save(const char *state_dir, const as_config_record *v) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        int r;

        if (!o)
                return -ENOMEM;
        if ((r = json_add_string(o, "name", v->name, false)) < 0 ||
            (r = json_add_string(o, "image", v->image, false)) < 0 ||
            (r = json_add_string(o, "image_name", v->image_name, true)) < 0 ||
            (r = json_add_string(o, "source_server", v->source_server, true)) < 0 ||
            (r = json_add_uint64(o, "created", v->created)) < 0 ||
            (r = disk_list_to_json(o, DISK_OF_AS_CONFIG, DISK_JSON_RECORD, &v->system, v->data, v->n_data)) < 0)
                return r;
        return docstore_save(state_dir, AS_CONFIG_KIND, v->name, o);
}

int as_config_db_load(const char *state_dir, const char *name, as_config_record *ret) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        _cleanup_(as_config_record_done) as_config_record v = {};
        uint64_t created = 0;
        int r;

        if (!server_name_valid(name))
                return -ENXIO;
        r = docstore_load(state_dir, AS_CONFIG_KIND, name, &o);
        if (r == -ENOENT)
                return -ENXIO;
        if (r < 0)
                return r;
        if (json_get_string_dup(o, "name", &v.name) < 0 || !streq_ptr(v.name, name) ||
            json_get_string_dup(o, "image", &v.image) < 0 || !v.image ||
            json_get_string_dup(o, "image_name", &v.image_name) < 0 ||
            json_get_string_dup(o, "source_server", &v.source_server) < 0 ||
            json_get_uint64(o, "created", false, &created) < 0)
                return -EUCLEAN;
        r = disk_list_from_json(o, DISK_OF_AS_CONFIG, &v.system, &v.data, &v.n_data);
        if (r < 0)
                return r;
        if (v.system.plain) /* a configuration is made from an encrypted system disk only */
                return -EUCLEAN;
        v.created = created;
        *ret = v;
        v = (as_config_record) {};
        return 0;
}
