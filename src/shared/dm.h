/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Inspecting device-mapper state (libdevmapper, libcryptsetup). On a kernel without device-mapper
 * every lookup reports "no mappings" rather than failing. */

#include <stdbool.h>
#include <sys/types.h>

#include "macro.h"
#include "strv.h"

/* True when /dev/mapper/control exists. */
bool dm_available(void);

/* Names of the dm devices starting with @prefix, NULL-terminated. -errno of libdevmapper. */
int dm_list_names(const char *prefix, char ***ret);

typedef struct dm_mapping_info {
        bool exists;
        bool suspended;
        bool live_table; /* false: created but never given its table (an activation killed half-way) */
        unsigned open_count;
        char *backing_device; /* "/dev/vdb", or NULL when unknown */
        char *dm_uuid;        /* "CRYPT-LUKS2-...", NULL when it has none */
        dev_t below;          /* the one device under it, 0 when not exactly one */
        bool below_crypt;     /* that device is one of libcryptsetup's own layers (its dm UUID is CRYPT-...) */
} dm_mapping_info;

/* Describes mapping @name; info->exists is false when there is none. A whole mapping whose
 * /dev/mapper node is missing (its creator was killed before making it) gets its node. -errno. */
int dm_mapping_get(const char *name, dm_mapping_info *ret);
void dm_mapping_info_done(dm_mapping_info *i);

/* A mapping that exists but has no live table, nobody holding it: what an activation interrupted between
 * creating the device and loading its table leaves behind. It serves no I/O and blocks the name. */
static inline bool dm_mapping_is_stale(const dm_mapping_info *i) {
        return i->exists && !i->live_table && i->open_count == 0;
}

/* Removes mapping @name (DM_DEVICE_REMOVE, udev-synchronised), for a stale one. -ENODEV when absent, -EBUSY
 * when held open, -errno of libdevmapper. */
int dm_mapping_remove(const char *name);
/* Closes the LUKS2 mapping @name with libdevmapper alone, as libcryptsetup would (udev-synchronised, retried
 * while udev holds it a moment, deferred until its last user closes it when @deferred), but reading nothing
 * from the device under it: libcryptsetup's own removal opens that device and reads a block of it, which
 * waits as long as the disk's I/O hangs. -EMEDIUMTYPE for a mapping that is not LUKS2 or stands on one of
 * libcryptsetup's own layers (integrity, reencryption), whose removal is libcryptsetup's; -EBUSY when held
 * open (and not @deferred), -ENODEV when absent, -errno. */
int dm_mapping_close(const char *name, bool deferred);
/* dm_mapping_close() of the mapping @seen describes (dm_mapping_get() of @name, made since nothing else could
 * change it: under the engine lock, held since), without inspecting it again. */
int dm_mapping_close_seen(const char *name, const dm_mapping_info *seen, bool deferred);
/* The name of the open mapping of the LUKS2 volume with UUID @luks_uuid, whatever its name (one made by
 * systemd-cryptsetup from crypttab, say): its dm UUID is "CRYPT-LUKS2-<uuid without dashes>-<name>".
 * With @device, the volume's disk, when it is present: only the mappings stacked on it (sysfs holders, at
 * any depth); else (NULL, or a disk gone) every mapping of the host. -ENOENT when none, -EINVAL, -errno of
 * libdevmapper. */
int dm_find_luks_mapping(const char *luks_uuid, const char *device, char **ret_name);

/* Whether paths @a and @b name the same block device (or are the same string). */
bool dm_same_device(const char *a, const char *b);
