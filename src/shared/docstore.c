/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>

#include "strv.h"
#include "docstore.h"
#include "fileio.h"
#include "json-util.h"
#include "token.h"

#define DOC_MAX (64U * 1024U)

static bool kind_valid(const char *kind) {
        return kind && volume_id_valid(kind) && kind[0] != '.';
}

static int doc_dir(const char *state_dir, const char *kind, char **ret) {
        if (!kind_valid(kind))
                return -EINVAL;
        return asprintf(ret, "%s/%s", state_dir, kind) < 0 ? -ENOMEM : 0;
}

int docstore_save(const char *state_dir, const char *kind, const char *id, json_object *doc) {
        _cleanup_free_ char *dir = NULL, *name = NULL, *text = NULL;
        int r;

        if (!volume_id_valid(id) || !json_object_is_type(doc, json_type_object))
                return -EINVAL;
        r = doc_dir(state_dir, kind, &dir);
        if (r < 0)
                return r;
        text = json_to_string_dup(doc, true);
        if (!text)
                return -ENOMEM;
        r = mkdir_p(dir, 0700);
        if (r < 0)
                return r;
        if (asprintf(&name, "%s.json", id) < 0)
                return -ENOMEM;
        return write_file_atomic(dir, name, text, strlen(text), 0600);
}

int docstore_load(const char *state_dir, const char *kind, const char *id, json_object **ret) {
        _cleanup_free_ char *dir = NULL, *path = NULL, *text = NULL;
        json_object *o;
        int r;

        if (!volume_id_valid(id))
                return -EINVAL;
        r = doc_dir(state_dir, kind, &dir);
        if (r < 0)
                return r;
        if (asprintf(&path, "%s/%s.json", dir, id) < 0)
                return -ENOMEM;
        r = read_state_file(path, DOC_MAX, &text, NULL);
        if (r < 0)
                return r;
        if (json_parse(text, DOC_MAX, &o) < 0)
                return -EUCLEAN;
        if (!json_object_is_type(o, json_type_object)) {
                json_object_put(o);
                return -EUCLEAN;
        }
        *ret = o;
        return 0;
}

const char *docstore_strerror(int r) {
        return r == -EUCLEAN ? "not a valid record" : read_file_error(r);
}

int docstore_path(const char *state_dir, const char *kind, const char *id, char **ret) {
        return asprintf(ret, "%s/%s/%s.json", state_dir, kind, id) < 0 ? -ENOMEM : 0;
}

char *docstore_error(const char *state_dir, const char *kind, const char *id, int r) {
        _cleanup_free_ char *path = NULL;
        char *s;

        if (docstore_path(state_dir, kind, id, &path) < 0)
                return NULL;
        return asprintf(&s, "record %s is unreadable: %s", path, docstore_strerror(r)) < 0 ? NULL : s;
}

int docstore_remove(const char *state_dir, const char *kind, const char *id) {
        _cleanup_free_ char *dir = NULL, *name = NULL;
        int r;

        if (!volume_id_valid(id))
                return -EINVAL;
        r = doc_dir(state_dir, kind, &dir);
        if (r < 0)
                return r;
        if (asprintf(&name, "%s.json", id) < 0)
                return -ENOMEM;
        return unlink_durable(dir, name);
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

int docstore_list(const char *state_dir, const char *kind, char ***ret) {
        _cleanup_free_ char *dir = NULL;
        _cleanup_(strv_freep) char **l = NULL;
        struct dirent *de;
        size_t n = 0;
        DIR *d;
        int r;

        r = doc_dir(state_dir, kind, &dir);
        if (r < 0)
                return r;
        l = calloc(1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        d = opendir(dir);
        if (!d) {
                if (errno != ENOENT)
                        return negative_errno();
                *ret = TAKE_PTR(l);
                return 0;
        }
        r = 0;
        while ((de = readdir(d))) {
                size_t len = strlen(de->d_name);
                char **a, *id;

                /* Skips ".", "..", and leftover ".#name.XXXXXX" temp files of an interrupted write. */
                if (de->d_name[0] == '.' || len <= 5 || !streq(de->d_name + len - 5, ".json"))
                        continue;
                id = strndup(de->d_name, len - 5);
                if (!id) {
                        r = -ENOMEM;
                        break;
                }
                if (!volume_id_valid(id)) {
                        free(id);
                        continue;
                }
                a = reallocarray(l, n + 2, sizeof(char *));
                if (!a) {
                        free(id);
                        r = -ENOMEM;
                        break;
                }
                l = a;
                l[n++] = id;
                l[n] = NULL;
        }
        closedir(d);
        if (r < 0)
                return r;
        qsort(l, n, sizeof(char *), cmp_str);
        *ret = TAKE_PTR(l);
        return 0;
}

int docstore_load_all(const char *state_dir, const char *kind, size_t size,
                      int (*load)(void *userdata, const char *id, void *record), void *userdata, void **ret,
                      size_t *ret_n) {
        _cleanup_(strv_freep) char **ids = NULL;
        uint8_t *l;
        size_t n = 0;
        int r;

        r = docstore_list(state_dir, kind, &ids);
        if (r < 0)
                return r;
        l = calloc(strv_length(ids) + 1, size);
        if (!l)
                return -ENOMEM;
        STRV_FOREACH(id, ids)
                if (load(userdata, *id, l + n * size) >= 0)
                        n++;
        if (n == 0)
                l = mfree(l);
        *ret = l;
        *ret_n = n;
        return 0;
}
