/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdio.h>
#include <string.h>

#include "crypttab.h"
#include "dm.h"
#include "fileio.h"

/* The /dev path of crypttab's device field @spec, NULL for a form we do not know. */
static char *spec_path(const char *spec) {
        static const struct {
                const char *prefix, *dir;
        } forms[] = {
                { "UUID=", "/dev/disk/by-uuid/" },
                { "PARTUUID=", "/dev/disk/by-partuuid/" },
                { "LABEL=", "/dev/disk/by-label/" },
                { "PARTLABEL=", "/dev/disk/by-partlabel/" },
        };
        char *p;

        if (spec[0] == '/')
                return strdup(spec);
        for (size_t i = 0; i < ELEMENTSOF(forms); i++) {
                size_t n = strlen(forms[i].prefix);

                if (strncmp(spec, forms[i].prefix, n) == 0 && spec[n] && !strchr(spec + n, '/'))
                        return asprintf(&p, "%s%s", forms[i].dir, spec + n) < 0 ? NULL : p;
        }
        return NULL;
}

int crypttab_lists(const char *path, const char *node, char **ret_name) {
        _cleanup_free_ char *data = NULL;
        char *save = NULL;
        int r;

        r = read_full_file(path, 1024U * 1024U, &data, NULL);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return 0; /* none (or unreadable: then systemd-cryptsetup cannot use it either) */
        for (char *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                _cleanup_free_ char *dev = NULL;
                char *name, *spec, *fsave = NULL;

                name = strtok_r(line, " \t", &fsave);
                if (!name || name[0] == '#')
                        continue;
                spec = strtok_r(NULL, " \t", &fsave);
                if (!spec)
                        continue;
                dev = spec_path(spec);
                if (!dev || !dm_same_device(dev, node))
                        continue;
                if (ret_name) {
                        *ret_name = strdup(name);
                        if (!*ret_name)
                                return -ENOMEM;
                }
                return 1;
        }
        return 0;
}
