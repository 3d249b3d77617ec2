/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <ctype.h>

#include "names.h"

static bool is_alnum(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* 1..@max characters, each alphanumeric or in @extra. */
static bool name_of(const char *s, size_t max, const char *extra) {
        size_t n;

        if (!s)
                return false;
        n = strlen(s);
        if (n == 0 || n > max)
                return false;
        for (const char *p = s; *p; p++)
                if (!is_alnum(*p) && !strchr(extra, *p))
                        return false;
        return true;
}

bool volume_id_valid(const char *id) {
        /* A leading dot would name a hidden file STATE/<kind>/.<id>.json that directory scans skip (and "."
         * and ".." are no names at all). */
        return name_of(id, 64, "._-") && id[0] != '.';
}

bool volume_label_valid(const char *id) {
        return name_of(id, 64, "._-") && !streq(id, ".") && !streq(id, "..");
}

bool backend_name_valid(const char *name) {
        return name_of(name, 64, "_-");
}

bool kms_alias_valid(const char *alias) {
        size_t n;

        if (!name_of(alias, 128, "/_.-"))
                return false;
        n = strlen(alias);
        return alias[0] != '/' && alias[n - 1] != '/' && !strstr(alias, "..") && !uuid_valid(alias);
}

bool uuid_valid(const char *s) {
        if (!s || strlen(s) != 36)
                return false;
        for (size_t i = 0; i < 36; i++) {
                if (i == 8 || i == 13 || i == 18 || i == 23) {
                        if (s[i] != '-')
                                return false;
                } else if (!isxdigit((unsigned char) s[i]))
                        return false;
        }
        return true;
}
