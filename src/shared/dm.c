/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <libcryptsetup.h>
#include <libdevmapper.h>

#include "dm.h"
#include "fileio.h"

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

bool dm_same_device(const char *a, const char *b) {
        struct stat sa, sb;

        if (!a || !b)
                return false;
        if (streq(a, b))
                return true;
        return stat(a, &sa) >= 0 && stat(b, &sb) >= 0 && S_ISBLK(sa.st_mode) && S_ISBLK(sb.st_mode) &&
               sa.st_rdev == sb.st_rdev;
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

/* Sysfs attribute @attr of the block device whose sysfs directory is @dir, its newline cut. */
static int sysfs_attr(const char *dir, const char *attr, char **ret) {
        _cleanup_free_ char *path = NULL;
        char *nl;
        int r;

        if (asprintf(&path, "%s/%s", dir, attr) < 0)
                return -ENOMEM;
        r = read_full_file(path, 4096, ret, NULL);
        if (r < 0)
                return r;
        nl = strchr(*ret, '\n');
        if (nl)
                *nl = 0;
        return 0;
}

/* The dev_t of the one device under mapping @name. -ENODATA when it has none or several. */
static int one_dependency(const char *name, dev_t *ret) {
        _cleanup_(dm_task_destroyp) struct dm_task *dmt = NULL;
        struct dm_deps *deps;

        dmt = dm_task_create(DM_DEVICE_DEPS);
        if (!dmt)
                return -ENOMEM;
        if (!dm_task_set_name(dmt, name) || !dm_task_run(dmt))
                return -ENODATA;
        deps = dm_task_get_deps(dmt);
        if (!deps || deps->count != 1)
                return -ENODATA;
        *ret = (dev_t) deps->device[0];
        return 0;
}

/* The one device under mapping @name as "/dev/NAME" ("/dev/mapper/NAME" for a device-mapper device), from
 * the table's dependencies and sysfs: the name libcryptsetup gives it, without loading the LUKS header
 * (crypt_init_by_name() reads and parses both header copies) and without the table (it may hold a key).
 * *ret_below gets that device's number (kept even when its name cannot be told; 0 when the mapping has not
 * exactly one), *ret_below_crypt whether it is one of libcryptsetup's own layers. -ENODATA when it cannot
 * say. */
static int backing_device(const char *name, dev_t *ret_below, bool *ret_below_crypt, char **ret) {
        _cleanup_free_ char *uevent = NULL, *dmname = NULL, *dmuuid = NULL, *path = NULL;
        char sys[64];
        const char *devname = NULL;
        struct stat st;
        dev_t d;
        int r;

        r = one_dependency(name, &d);
        if (r < 0)
                return r;
        *ret_below = d;

        snprintf(sys, sizeof sys, "/sys/dev/block/%u:%u/uevent", major(d), minor(d));
        r = read_full_file(sys, 4096, &uevent, NULL);
        if (r < 0)
                return r == -ENOMEM ? r : -ENODATA;
        for (char *line = uevent, *next; line && *line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = 0;
                if (strncmp(line, "DEVNAME=", strlen("DEVNAME=")) == 0)
                        devname = line + strlen("DEVNAME=");
        }
        if (isempty(devname) || strchr(devname, '/'))
                return -ENODATA;
        if (strncmp(devname, "dm-", 3) == 0) {
                snprintf(sys, sizeof sys, "/sys/dev/block/%u:%u", major(d), minor(d));
                /* An integrity device, a reencryption hotzone or overlay: their dm UUIDs start with CRYPT-. */
                r = sysfs_attr(sys, "dm/uuid", &dmuuid);
                if (r == -ENOMEM)
                        return r;
                *ret_below_crypt = r >= 0 && strncmp(dmuuid, "CRYPT-", strlen("CRYPT-")) == 0;
                r = sysfs_attr(sys, "dm/name", &dmname);
                if (r < 0)
                        return r == -ENOMEM ? r : -ENODATA;
                if (isempty(dmname) || strchr(dmname, '/'))
                        return -ENODATA;
                r = asprintf(&path, "/dev/mapper/%s", dmname);
        } else
                r = asprintf(&path, "/dev/%s", devname);
        if (r < 0)
                return -ENOMEM;
        /* The node must be that device (a /dev without it, or a stale node, leaves it to libcryptsetup). */
        if (stat(path, &st) < 0 || !S_ISBLK(st.st_mode) || st.st_rdev != d)
                return -ENODATA;
        *ret = TAKE_PTR(path);
        return 0;
}

int dm_mapping_get(const char *name, dm_mapping_info *ret) {
        _cleanup_(dm_task_destroyp) struct dm_task *dmt = NULL;
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        _cleanup_(dm_mapping_info_done) dm_mapping_info i = {};
        struct dm_info info;
        const char *dev, *uuid;
        int r;

        if (!dm_available()) {
                *ret = (dm_mapping_info) {};
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
                *ret = (dm_mapping_info) {};
                return 0;
        }
        i.exists = true;
        i.suspended = info.suspended;
        i.live_table = info.live_table;
        i.open_count = (unsigned) info.open_count;
        uuid = dm_task_get_uuid(dmt);
        if (!isempty(uuid) && !(i.dm_uuid = strdup(uuid)))
                return -ENOMEM;

        if (i.live_table) {
                /* A process killed between a mapping's resume and its node's creation (without udev,
                 * libdevmapper makes the node itself) leaves a whole mapping without /dev/mapper/NAME:
                 * make the node, so that the mapping is usable and seen as the attached volume it is. Not
                 * where udev runs: it makes the node of a mapping just opened (systemd-cryptsetup's, from
                 * crypttab) a moment later, and a sandboxed daemon's mknod would only fail, logged. */
                _cleanup_free_ char *node = NULL;

                if (asprintf(&node, "/dev/mapper/%s", name) < 0)
                        return -ENOMEM;
                if (!dm_udev_get_sync_support() && access(node, F_OK) < 0 && errno == ENOENT)
                        (void) dm_mknodes(name);
        }

        r = backing_device(name, &i.below, &i.below_crypt, &i.backing_device);
        if (r == -ENOMEM)
                return r;
        if (r < 0 && crypt_init_by_name(&cd, name) >= 0 && (dev = crypt_get_device_name(cd))) {
                i.backing_device = strdup(dev);
                if (!i.backing_device)
                        return -ENOMEM;
        }
        *ret = i;
        i = (dm_mapping_info) {};
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

/* DM_DEVICE_REMOVE as libcryptsetup makes it: retried while udev's probe holds the device a moment, udev
 * removing the node (libdevmapper itself where no udev runs). */
static int remove_device(const char *name, bool deferred) {
        _cleanup_(dm_task_destroyp) struct dm_task *dmt = NULL;
        uint32_t cookie = 0;
        bool udev;
        int ok, err;

        dmt = dm_task_create(DM_DEVICE_REMOVE);
        if (!dmt)
                return -ENOMEM;
        if (!dm_task_set_name(dmt, name) || !dm_task_retry_remove(dmt) ||
            (deferred && !dm_task_deferred_remove(dmt)))
                return -EINVAL;
        udev = dm_udev_get_sync_support();
        if (udev && !dm_task_set_cookie(dmt, &cookie, DM_UDEV_DISABLE_LIBRARY_FALLBACK))
                return -EINVAL;
        ok = dm_task_run(dmt);
        err = dm_task_get_errno(dmt);
        if (udev)
                (void) dm_udev_wait(cookie);
        dm_task_update_nodes();
        if (!ok)
                return err == ENXIO || err == ENODEV ? -ENODEV : err == EBUSY ? -EBUSY : -(err > 0 ? err : EIO);
        return 0;
}

int dm_mapping_close_seen(const char *name, const dm_mapping_info *seen, bool deferred) {
        if (!seen->exists)
                return -ENODEV;
        if (!seen->dm_uuid || strncmp(seen->dm_uuid, "CRYPT-LUKS2-", strlen("CRYPT-LUKS2-")) != 0)
                return -EMEDIUMTYPE;
        /* One device under it, not one of libcryptsetup's own layers. */
        if (seen->below == 0 || seen->below_crypt)
                return -EMEDIUMTYPE;
        /* Held open, it is refused at once: libdevmapper's retries (while udev's probe of it ends) would
         * take 5 s, with the engine lock held. */
        if (seen->open_count > 0 && !deferred)
                return -EBUSY;
        return remove_device(name, deferred);
}

int dm_mapping_close(const char *name, bool deferred) {
        _cleanup_(dm_mapping_info_done) dm_mapping_info i = {};
        int r;

        r = dm_mapping_get(name, &i);
        if (r < 0)
                return r;
        return dm_mapping_close_seen(name, &i, deferred);
}

#define HOLDERS_DEPTH_MAX 8U

/* The dm devices stacked on the block device of sysfs directory @dir, at any depth (a LUKS mapping on a
 * multipath or linear map of the disk): the name of the first whose dm UUID starts with @prefix. -ENOENT. */
static int holder_with_uuid(const char *dir, const char *prefix, unsigned depth, char **ret_name) {
        _cleanup_free_ char *holders = NULL;
        DIR *d;
        struct dirent *de;
        int r = -ENOENT;

        if (depth >= HOLDERS_DEPTH_MAX)
                return -ENOENT;
        if (asprintf(&holders, "%s/holders", dir) < 0)
                return -ENOMEM;
        d = opendir(holders);
        if (!d)
                return errno == ENOENT ? -ENOENT : negative_errno();
        while (r == -ENOENT && (de = readdir(d))) {
                _cleanup_free_ char *sub = NULL, *uuid = NULL;

                if (de->d_name[0] == '.' || strchr(de->d_name, '/'))
                        continue;
                if (asprintf(&sub, "/sys/class/block/%s", de->d_name) < 0) {
                        r = -ENOMEM;
                        break;
                }
                if (sysfs_attr(sub, "dm/uuid", &uuid) >= 0 && strncmp(uuid, prefix, strlen(prefix)) == 0) {
                        r = sysfs_attr(sub, "dm/name", ret_name);
                        if (r >= 0 && (isempty(*ret_name) || strchr(*ret_name, '/'))) {
                                *ret_name = mfree(*ret_name);
                                r = -ENOENT;
                        }
                        if (r < 0 && r != -ENOMEM)
                                r = -ENOENT; /* gone meanwhile */
                        continue;
                }
                r = holder_with_uuid(sub, prefix, depth + 1, ret_name);
        }
        closedir(d);
        return r;
}

int dm_find_luks_mapping(const char *luks_uuid, const char *device, char **ret_name) {
        _cleanup_(strv_freep) char **names = NULL;
        char prefix[128];
        struct stat st;
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

        /* A mapping of the volume holds its disk: when the disk is here, its holders are all there is to
         * look at (a few sysfs reads, where asking every mapping of the host for its UUID costs one ioctl
         * each, for every attach of a storm). */
        if (device && stat(device, &st) >= 0 && S_ISBLK(st.st_mode)) {
                char dir[64];

                snprintf(dir, sizeof dir, "/sys/dev/block/%u:%u", major(st.st_rdev), minor(st.st_rdev));
                if (access(dir, F_OK) >= 0)
                        return holder_with_uuid(dir, prefix, 0, ret_name);
        }

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
        free(i->dm_uuid);
        *i = (dm_mapping_info) {};
}

int dm_mapping_remove(const char *name) {
        dm_mapping_info i = {};
        bool exists, busy;
        int r;

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
        return remove_device(name, false);
}
