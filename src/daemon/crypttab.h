/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* /etc/crypttab: disks that systemd-cryptsetup opens at boot, which the daemon's udev watch and coldplug
 * leave to it (attaching them too would race it for the disk). */
#define EVS_CRYPTTAB "/etc/crypttab"

/* Whether block device @node is the device of a line of @path (UUID=, PARTUUID=, LABEL=, PARTLABEL= or a
 * path); *ret_name (may be NULL) the line's mapping name. 1 when listed, 0 when not (or no such file),
 * -ENOMEM. */
int crypttab_lists(const char *path, const char *node, char **ret_name);
