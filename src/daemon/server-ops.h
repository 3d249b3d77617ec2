/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Servers: a system disk made from an encrypted image (same CMK and cipher, the image's data copied in
 * userspace), data disks each encrypted with a chosen CMK or left plain, all attached. Records are
 * STATE/servers/<name>.json (server_record, src/shared/server.h); the disk headers stay the truth for keys and
 * ciphers. What each disk inherits is decided by the rules of src/shared/inherit.h. */

#include <systemd/sd-bus.h>

#include "image-ops.h"
#include "manager.h"
#include "server.h"

/* Creates server @name from @image (an image id or name) or @as_config (exactly one of them), on
 * @system_disk and @data_disks ("DEVICE[:key=KEY|:plain]"; with @as_config bare devices, one per data disk
 * of the configuration). Every argument and disk is checked before any is formatted. Volumes that cannot
 * be attached (no device-mapper...) leave the server created, detached, with a warning. Sets @error: -EINVAL
 * (usage, a data-disk count mismatch, a disk too small), -EEXIST, -ENXIO (unknown image or configuration),
 * -ENOTEMPTY (a disk holds a signature, without @force), -EBUSY (a disk of another server), the key-state
 * errnos (an unusable CMK). */
int server_create(manager *m, const char *name, const char *image, const char *as_config, const char *system_disk,
                  char **data_disks, bool force, server_record *ret, sd_bus_error *error);
int server_get(manager *m, const char *name, server_record *ret, sd_bus_error *error);
int server_list(manager *m, server_record **ret, size_t *ret_n, sd_bus_error *error);
/* Detaches the server's volumes and forgets it; disks and data stay. Unless @force, every volume passes the
 * detach guard first (and none is in use, -EBUSY), or nothing is detached. */
int server_delete(manager *m, const char *name, bool force, server_record *ret, sd_bus_error *error);
/* An image from the server's system disk, with its CMK and cipher. -ENODATA when it is not encrypted. */
int server_create_image(manager *m, const char *server, const char *name, image_view *ret, sd_bus_error *error);

