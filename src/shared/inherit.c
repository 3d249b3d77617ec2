/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "inherit.h"
#include "luks.h"
#include "string-util.h"

void disk_plan_done(disk_plan *p) {
        if (!p)
                return;
        free(p->device);
        free(p->volume_id);
        free(p->key_ref);
        *p = (disk_plan) {};
}

int inherit_key_ref(const char *backend, const char *key_id, char **ret) {
        if (isempty(backend) || isempty(key_id))
                return -EINVAL;
        return asprintf(ret, "%s:%s", backend, key_id) < 0 ? -ENOMEM : 0;
}

static uint64_t system_disk_min_size(uint64_t image_size) {
        return EVS_LUKS_DATA_OFFSET + (image_size + 4095) / 4096 * 4096;
}

static int system_disk_plan(const char *server, const char *device, const char *backend, const char *key_id,
                            uint64_t image_size, disk_plan *ret) {
        _cleanup_(disk_plan_done) disk_plan p = { .min_size = system_disk_min_size(image_size) };
        int r;

        if (isempty(device))
                return -EINVAL;
        r = server_volume_id(server, 0, &p.volume_id);
        if (r < 0)
                return r;
        r = inherit_key_ref(backend, key_id, &p.key_ref);
        if (r < 0)
                return r;
        p.device = strdup(device);
        if (!p.device)
                return -ENOMEM;
        *ret = p;
        p = (disk_plan) {};
        return 0;
}

int inherit_system_disk_from_image(const char *server, const char *device, const evs_token *image_token,
                                   uint64_t image_size, disk_plan *ret) {
        return system_disk_plan(server, device, image_token->backend, image_token->key_id, image_size, ret);
}

int inherit_system_disk_from_as_config(const char *server, const char *device, const as_config_record *cfg,
                                       uint64_t image_size, disk_plan *ret) {
        return system_disk_plan(server, device, cfg->system.backend, cfg->system.key_id, image_size, ret);
}

/* Data disk @index of @server on @device: encrypted with @key_ref (NULL: the default) unless @plain. */
static int data_disk_plan(const char *server, unsigned index, char **device, bool plain, char **key_ref,
                          uint64_t min_size, disk_plan *ret) {
        _cleanup_(disk_plan_done) disk_plan p = { .min_size = min_size };
        int r;

        if (index == 0)
                return -EINVAL;
        if (!plain) {
                r = server_volume_id(server, index, &p.volume_id);
                if (r < 0)
                        return r;
                p.key_ref = TAKE_PTR(*key_ref);
        }
        p.device = TAKE_PTR(*device);
        *ret = p;
        p = (disk_plan) {};
        return 0;
}

int inherit_data_disk(const char *server, unsigned index, const char *spec, disk_plan *ret) {
        _cleanup_free_ char *device = NULL, *key = NULL;
        bool plain = false;
        int r;

        r = server_disk_spec_parse(spec, &device, &key, &plain);
        if (r < 0)
                return r;
        return data_disk_plan(server, index, &device, plain, &key, 0, ret);
}

int inherit_data_disk_from_as_config(const char *server, unsigned index, const char *spec,
                                     const disk_spec *cfg_disk, disk_plan *ret) {
        _cleanup_free_ char *device = NULL, *key = NULL;
        bool plain = false;
        int r;

        r = server_disk_spec_parse(spec, &device, &key, &plain);
        if (r < 0)
                return r;
        if (key || plain)
                return -EPERM;
        if (!cfg_disk->plain) {
                r = inherit_key_ref(cfg_disk->backend, cfg_disk->key_id, &key);
                if (r < 0)
                        return r;
        }
        return data_disk_plan(server, index, &device, cfg_disk->plain, &key, cfg_disk->size, ret);
}

/* What a configuration records of one disk: encrypted or plain, and with which CMK and cipher. */
static int disk_mode_of(const disk_spec *s, disk_spec *ret) {
        _cleanup_(disk_spec_done) disk_spec d = { .plain = s->plain };

        if (!s->plain && (free_and_strdup_nonempty(&d.key_id, s->key_id) < 0 ||
                          free_and_strdup_nonempty(&d.key_alias, s->key_alias) < 0 ||
                          free_and_strdup_nonempty(&d.backend, s->backend) < 0 ||
                          free_and_strdup_nonempty(&d.cipher, s->cipher) < 0))
                return -ENOMEM;
        *ret = d;
        d = (disk_spec) {};
        return 0;
}

int inherit_as_config_from_server(const char *name, const server_record *s, bool system_disk_encrypted,
                                  usec_t created, as_config_record *ret, size_t *ret_bad_disk) {
        _cleanup_(as_config_record_done) as_config_record v = { .created = created };
        int r;

        if (s->system.plain || !system_disk_encrypted)
                return -ENODATA;
        if (isempty(s->image))
                return -ENOMSG;
        if (free_and_strdup_nonempty(&v.name, name) < 0 || free_and_strdup_nonempty(&v.image, s->image) < 0 ||
            free_and_strdup_nonempty(&v.image_name, s->image_name) < 0 ||
            free_and_strdup_nonempty(&v.source_server, s->name) < 0)
                return -ENOMEM;
        r = disk_mode_of(&s->system, &v.system);
        if (r < 0)
                return r;
        v.data = calloc(MAX(s->n_data, (size_t) 1), sizeof(disk_spec));
        if (!v.data)
                return -ENOMEM;
        for (size_t i = 0; i < s->n_data; i++) {
                r = disk_mode_of(&s->data[i], &v.data[i]);
                if (r < 0)
                        return r;
                v.n_data++;
                if (!v.data[i].plain && !v.data[i].key_id) {
                        if (ret_bad_disk)
                                *ret_bad_disk = i;
                        return -ENOKEY;
                }
        }
        *ret = v;
        v = (as_config_record) {};
        return 0;
}

int inherit_image_key_from_volume(const evs_token *volume_token, char **ret_key_ref) {
        return inherit_key_ref(volume_token->backend, volume_token->key_id, ret_key_ref);
}
