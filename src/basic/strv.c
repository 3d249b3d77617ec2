/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "strv.h"

void strv_free(char **l) {
        for (char **s = l; s && *s; s++)
                free(*s);
        free(l);
}

size_t strv_length(char *const *l) {
        size_t n = 0;

        for (; l && l[n]; n++)
                ;
        return n;
}
