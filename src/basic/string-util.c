/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "macro.h"
#include "string-util.h"

int free_and_strdup(char **p, const char *s) {
        char *t = NULL;

        if (s && !(t = strdup(s)))
                return -ENOMEM;
        free(*p);
        *p = t;
        return 0;
}

int free_and_strdup_nonempty(char **p, const char *s) {
        return free_and_strdup(p, isempty(s) ? NULL : s);
}
