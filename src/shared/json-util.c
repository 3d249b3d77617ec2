/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "json-util.h"
#include "string-util.h"

int json_get_string(json_object *o, const char *key, bool nullable, const char **ret) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v))
                return -ENODATA;
        if (!v) {
                if (!nullable)
                        return -EINVAL;
                *ret = NULL;
                return 0;
        }
        if (!json_object_is_type(v, json_type_string))
                return -EINVAL;
        *ret = json_object_get_string(v);
        return 0;
}

int json_get_uint64(json_object *o, const char *key, bool nullable, uint64_t *ret) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v))
                return -ENODATA;
        if (!v) {
                if (!nullable)
                        return -EINVAL;
                *ret = 0;
                return 0;
        }
        if (!json_object_is_type(v, json_type_int))
                return -EINVAL;
        errno = 0;
        if (json_object_get_int64(v) < 0)
                return -EINVAL;
        *ret = json_object_get_uint64(v);
        if (errno != 0)
                return -EINVAL;
        return 0;
}

int json_add_string(json_object *o, const char *key, const char *v, bool null_if_missing) {
        json_object *s = NULL;

        if (!v && !null_if_missing)
                return 0;
        if (v) {
                s = json_object_new_string(v);
                if (!s)
                        return -ENOMEM;
        }
        if (json_object_object_add(o, key, s) < 0) {
                json_object_put(s);
                return -ENOMEM;
        }
        return 0;
}

int json_add_uint64(json_object *o, const char *key, uint64_t v) {
        json_object *n = json_object_new_uint64(v);

        if (!n)
                return -ENOMEM;
        if (json_object_object_add(o, key, n) < 0) {
                json_object_put(n);
                return -ENOMEM;
        }
        return 0;
}

char *json_to_string_dup(json_object *o, bool pretty) {
        const char *s = json_object_to_json_string_ext(o, (pretty ? JSON_C_TO_STRING_PRETTY : JSON_C_TO_STRING_PLAIN) |
                                                                  JSON_C_TO_STRING_NOSLASHESCAPE);
        return s ? strdup(s) : NULL;
}

int json_parse(const char *text, size_t max, json_object **ret) {
        _cleanup_(json_tokener_freep) struct json_tokener *tok = NULL;
        json_object *o;
        size_t n;

        n = strnlen(text, max + 1);
        if (n > max)
                return -EINVAL;
        tok = json_tokener_new();
        if (!tok)
                return -ENOMEM;
        /* Include the NUL: without it a bare top-level number or literal ("42", "true") never ends. */
        o = json_tokener_parse_ex(tok, text, (int) n + 1);
        if (!o || json_tokener_get_error(tok) != json_tokener_success) {
                json_object_put(o);
                return -EINVAL;
        }
        for (size_t i = json_tokener_get_parse_end(tok); i < n; i++)
                if (!strchr(" \t\r\n", text[i])) {
                        json_object_put(o); /* trailing garbage */
                        return -EINVAL;
                }
        *ret = o;
        return 0;
}

int json_get_string_dup(json_object *o, const char *key, char **ret) {
        const char *s = NULL;
        int r;

        r = json_get_string(o, key, true, &s);
        if (r < 0 && r != -ENODATA)
                return r;
        return free_and_strdup_nonempty(ret, r == -ENODATA ? NULL : s);
}
