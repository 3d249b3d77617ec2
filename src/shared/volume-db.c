/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>

#include "fileio.h"
#include "json-util.h"
#include "token.h"
#include "volume-db.h"

#define RECORD_MAX (16U * 1024U)

void volume_record_done(volume_record *v) {
        if (!v)
                return;
        free(v->id);
        free(v->device);
        free(v->key_id);
        free(v->key_alias);
        free(v->backend);
        free(v->last_error);
        free(v->key_state_seen);
        *v = (volume_record) {};
}

void volume_record_array_free(volume_record *v, size_t n) {
        for (size_t i = 0; i < n; i++)
                volume_record_done(&v[i]);
        free(v);
}

int volume_record_set(char **field, const char *value) {
        char *s = NULL;

        if (value && !(s = strdup(value)))
                return -ENOMEM;
        free(*field);
        *field = s;
        return 0;
}

static int dir_of(const char *state_dir, char **ret) {
        return asprintf(ret, "%s/volumes", state_dir) < 0 ? -ENOMEM : 0;
}

int volume_db_save(const char *state_dir, const volume_record *v) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        _cleanup_free_ char *dir = NULL, *name = NULL, *text = NULL;
        int r;

        if (!o)
                return -ENOMEM;
        if (!volume_id_valid(v->id))
                return -EINVAL;
        if ((r = json_add_string(o, "id", v->id, false)) < 0 ||
            (r = json_add_string(o, "device", v->device, true)) < 0 ||
            (r = json_add_string(o, "key_id", v->key_id, true)) < 0 ||
            (r = json_add_string(o, "key_alias", v->key_alias, true)) < 0 ||
            (r = json_add_string(o, "backend", v->backend, true)) < 0 ||
            (r = json_add_string(o, "last_error", v->last_error, true)) < 0 ||
            (r = json_add_string(o, "key_state_seen", v->key_state_seen, true)) < 0)
                return r;
        text = json_to_string_dup(o, true);
        if (!text)
                return -ENOMEM;
        if ((r = dir_of(state_dir, &dir)) < 0)
                return r;
        r = mkdir_p(dir, 0700);
        if (r < 0)
                return r;
        if (asprintf(&name, "%s.json", v->id) < 0)
                return -ENOMEM;
        return write_file_atomic(dir, name, text, strlen(text), 0600);
}

static int get_opt(json_object *o, const char *key, char **ret) {
        const char *s;
        int r = json_get_string(o, key, true, &s);

        if (r == -ENODATA)
                s = NULL;
        else if (r < 0)
                return r;
        return volume_record_set(ret, s);
}

int volume_db_load(const char *state_dir, const char *id, volume_record *ret) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        _cleanup_free_ char *path = NULL, *text = NULL;
        _cleanup_(volume_record_done) volume_record v = {};
        int r;

        if (!volume_id_valid(id))
                return -EINVAL;
        if (asprintf(&path, "%s/volumes/%s.json", state_dir, id) < 0)
                return -ENOMEM;
        r = read_full_file(path, RECORD_MAX, &text, NULL);
        if (r < 0)
                return r;
        if (json_parse(text, RECORD_MAX, &o) < 0 || !json_object_is_type(o, json_type_object))
                return -EUCLEAN;
        if (get_opt(o, "id", &v.id) < 0 || !streq_ptr(v.id, id) || get_opt(o, "device", &v.device) < 0 ||
            get_opt(o, "key_id", &v.key_id) < 0 || get_opt(o, "key_alias", &v.key_alias) < 0 ||
            get_opt(o, "backend", &v.backend) < 0 || get_opt(o, "last_error", &v.last_error) < 0 ||
            get_opt(o, "key_state_seen", &v.key_state_seen) < 0)
                return -EUCLEAN;
        *ret = v;
        v = (volume_record) {};
        return 0;
}

int volume_db_remove(const char *state_dir, const char *id) {
        _cleanup_free_ char *dir = NULL, *name = NULL;
        int r;

        if (!volume_id_valid(id))
                return -EINVAL;
        if ((r = dir_of(state_dir, &dir)) < 0)
                return r;
        if (asprintf(&name, "%s.json", id) < 0)
                return -ENOMEM;
        return unlink_durable(dir, name);
}

static int cmp_id(const void *a, const void *b) {
        return strcmp(((const volume_record *) a)->id, ((const volume_record *) b)->id);
}

int volume_db_list(const char *state_dir, volume_record **ret, size_t *ret_n) {
        _cleanup_free_ char *dir = NULL;
        volume_record *l = NULL;
        size_t n = 0;
        struct dirent *de;
        DIR *d;
        int r = 0;

        if ((r = dir_of(state_dir, &dir)) < 0)
                return r;
        d = opendir(dir);
        if (!d) {
                if (errno != ENOENT)
                        return negative_errno();
                *ret = NULL;
                *ret_n = 0;
                return 0;
        }
        while ((de = readdir(d))) {
                _cleanup_free_ char *id = NULL;
                size_t len = strlen(de->d_name);
                volume_record v = {}, *a;

                if (de->d_name[0] == '.' || len <= 5 || !streq(de->d_name + len - 5, ".json"))
                        continue;
                id = strndup(de->d_name, len - 5);
                if (!id) {
                        r = -ENOMEM;
                        break;
                }
                if (volume_db_load(state_dir, id, &v) < 0)
                        continue;
                a = reallocarray(l, n + 1, sizeof(volume_record));
                if (!a) {
                        volume_record_done(&v);
                        r = -ENOMEM;
                        break;
                }
                l = a;
                l[n++] = v;
        }
        closedir(d);
        if (r < 0) {
                volume_record_array_free(l, n);
                return r;
        }
        if (n > 0)
                qsort(l, n, sizeof(volume_record), cmp_id);
        *ret = l;
        *ret_n = n;
        return 0;
}
