/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"
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
