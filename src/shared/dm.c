/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <unistd.h>
#include <libcryptsetup.h>
#include <libdevmapper.h>

#include "dm.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct dm_task *, dm_task_destroy);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct crypt_device *, crypt_free);

bool dm_available(void) {
        static int cached = -1;
        int fd;

        /* The node may exist while the kernel has no device-mapper (open then fails with ENODEV). */
        if (cached < 0) {
                fd = open("/dev/mapper/control", O_RDWR | O_CLOEXEC);
                cached = fd >= 0;
                safe_close(fd);
        }
        return cached;
}

int dm_list_names(const char *prefix, char ***ret) {
        _cleanup_(dm_task_destroyp) struct dm_task *dmt = NULL;
        _cleanup_(strv_freep) char **l = NULL;
        struct dm_names *names;
        size_t n = 0, plen = strlen(prefix);
        unsigned next = 0;

        l = calloc(1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        if (!dm_available()) {
                *ret = TAKE_PTR(l);
                return 0;
        }

        dmt = dm_task_create(DM_DEVICE_LIST);
        if (!dmt)
                return -ENOMEM;
        if (!dm_task_run(dmt))
                return -EIO;
        names = dm_task_get_names(dmt);
        if (names && names->dev) {
                do {
                        names = (struct dm_names *) ((char *) names + next);
                        if (strncmp(names->name, prefix, plen) == 0) {
                                char **a = reallocarray(l, n + 2, sizeof(char *));

                                if (!a)
                                        return -ENOMEM;
                                l = a;
                                l[n] = strdup(names->name);
                                if (!l[n])
                                        return -ENOMEM;
                                l[++n] = NULL;
                        }
                        next = names->next;
                } while (next);
        }
        *ret = TAKE_PTR(l);
        return 0;
}

int dm_mapping_get(const char *name, dm_mapping_info *ret) {
        _cleanup_(dm_task_destroyp) struct dm_task *dmt = NULL;
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        struct dm_info info;
        dm_mapping_info i = {};
        const char *dev;

        if (!dm_available()) {
                *ret = i;
                return 0;
        }
        dmt = dm_task_create(DM_DEVICE_INFO);
        if (!dmt)
                return -ENOMEM;
        if (!dm_task_set_name(dmt, name))
                return -EINVAL;
        if (!dm_task_run(dmt) || !dm_task_get_info(dmt, &info))
                return -EIO;
        if (!info.exists) {
                *ret = i;
                return 0;
        }
        i.exists = true;
        i.suspended = info.suspended;
        i.live_table = info.live_table;
        i.open_count = (unsigned) info.open_count;

        if (i.live_table) {
                /* A process killed between a mapping's resume and its node's creation (without udev,
                 * libdevmapper makes the node itself) leaves a whole mapping without /dev/mapper/NAME:
                 * make the node, so that the mapping is usable and seen as the attached volume it is. */
                _cleanup_free_ char *node = NULL;

                if (asprintf(&node, "/dev/mapper/%s", name) < 0)
                        return -ENOMEM;
                if (access(node, F_OK) < 0 && errno == ENOENT)
                        (void) dm_mknodes(name);
        }

        if (crypt_init_by_name(&cd, name) >= 0 && (dev = crypt_get_device_name(cd))) {
                i.backing_device = strdup(dev);
                if (!i.backing_device)
                        return -ENOMEM;
        }
        *ret = i;
        return 0;
}

/* The dm UUID of a mapping, NULL when it has none. */
static int mapping_uuid(const char *name, char **ret) {
        _cleanup_(dm_task_destroyp) struct dm_task *dmt = NULL;
        struct dm_info info;
        const char *u;

        *ret = NULL;
        dmt = dm_task_create(DM_DEVICE_INFO);
        if (!dmt)
                return -ENOMEM;
        if (!dm_task_set_name(dmt, name))
                return -EINVAL;
        if (!dm_task_run(dmt) || !dm_task_get_info(dmt, &info))
                return -EIO;
        if (!info.exists)
                return 0;
        u = dm_task_get_uuid(dmt);
        if (u && *u && !(*ret = strdup(u)))
                return -ENOMEM;
        return 0;
}

int dm_find_luks_mapping(const char *luks_uuid, char **ret_name) {
        _cleanup_(strv_freep) char **names = NULL;
        char prefix[128];
        size_t k = 0;
        int r;

        if (!luks_uuid || strlen(luks_uuid) > 64)
                return -EINVAL;
        /* libcryptsetup names its mappings' dm UUID "CRYPT-LUKS2-<uuid without dashes>-<name>". */
        k = (size_t) snprintf(prefix, sizeof prefix, "CRYPT-LUKS2-");
        for (const char *p = luks_uuid; *p; p++)
                if (*p != '-')
                        prefix[k++] = *p;
        prefix[k++] = '-';
        prefix[k] = 0;

        r = dm_list_names("", &names);
        if (r < 0)
                return r;
        STRV_FOREACH(n, names) {
                _cleanup_free_ char *u = NULL;

                if (mapping_uuid(*n, &u) < 0 || !u)
                        continue;
                if (strncmp(u, prefix, k) == 0) {
                        *ret_name = strdup(*n);
                        return *ret_name ? 0 : -ENOMEM;
                }
        }
        return -ENOENT;
}

void dm_mapping_info_done(dm_mapping_info *i) {
        free(i->backing_device);
        *i = (dm_mapping_info) {};
}

int dm_mapping_remove(const char *name) {
        _cleanup_(dm_task_destroyp) struct dm_task *dmt = NULL;
        dm_mapping_info i = {};
        int r;

        bool exists, busy;

        r = dm_mapping_get(name, &i);
        if (r < 0)
                return r;
        exists = i.exists;
        busy = i.open_count > 0;
        dm_mapping_info_done(&i);
        if (!exists)
                return -ENODEV;
        if (busy)
                return -EBUSY;
        dmt = dm_task_create(DM_DEVICE_REMOVE);
        if (!dmt)
                return -ENOMEM;
        if (!dm_task_set_name(dmt, name) || !dm_task_retry_remove(dmt))
                return -EINVAL;
        if (!dm_task_run(dmt))
                return -EIO;
        return 0;
}
