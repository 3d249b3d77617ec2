/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The inheritance rules of images, servers and AS configurations (DESIGN.md, "What it is"), one function
 * each; the daemon resolves the records and headers, calls the rule, formats, records and logs:
 *   inherit_system_disk_from_image()      a system disk made from image I gets I's CMK and cipher
 *   inherit_data_disk()                   a data disk gets the CMK the operator names, or the default, or
 *                                         stays plain only when asked
 *   inherit_as_config_from_server()       an AS configuration made from server S records S's image, CMKs
 *                                         and modes
 *   inherit_system_disk_from_as_config()  a server launched from configuration A follows A: its system disk
 *   inherit_data_disk_from_as_config()    ... and each of its data disks
 *   inherit_image_key_from_volume()       an image made from a volume (a server's system disk) keeps its CMK
 * The cipher needs no choice: every EVS volume and image is aes-xts-plain64 with a 512-bit key as
 * luks_format() makes it, and image_copy_payload() refuses a header of another cipher. */

#include <stdint.h>

#include "server.h"
#include "token.h"

/* What one disk of a new server becomes. */
typedef struct disk_plan {
        char *device;
        char *volume_id; /* NULL: the disk stays plain */
        char *key_ref;   /* the CMK ("BACKEND:KEY-ID", an alias...); NULL: the default CMK */
        uint64_t min_size; /* bytes the device must have */
} disk_plan;

void disk_plan_done(disk_plan *p);

/* "BACKEND:KEY-ID", the key reference of a CMK recorded by a header, an image or a configuration.
 * -EINVAL when either is missing, -ENOMEM. */
int inherit_key_ref(const char *backend, const char *key_id, char **ret);

/* A system disk made from image I gets I's CMK (the one @image_token names, @image_token being the evs-kms
 * token of I's header) and cipher; @device must hold at least a LUKS2 header and the image's @image_size
 * bytes, rounded up to 4 KiB. -EINVAL for an invalid @server name, an empty @device, a token without
 * backend or key id; -ENOMEM. */
int inherit_system_disk_from_image(const char *server, const char *device, const evs_token *image_token,
                                   uint64_t image_size, disk_plan *ret);

/* A data disk gets the CMK the operator names ("DEVICE:key=KEY"), or the default CMK ("DEVICE"), or stays
 * plain only when asked ("DEVICE:plain"); it is data disk @index (1-based) of @server. -EINVAL for an
 * invalid @spec, @server or @index; -ENOMEM. */
int inherit_data_disk(const char *server, unsigned index, const char *spec, disk_plan *ret);

/* An AS configuration @name made from server @s records S's image, the CMK and mode of its system disk and
 * of each data disk (encrypted with which CMK, or plain), @created. The sizes are the caller's to fill in
 * (the least each launched disk must have). @system_disk_encrypted: the system disk's header holds its
 * volume now. -ENODATA when the system disk is not encrypted, -ENOMSG when @s has no image recorded,
 * -ENOKEY when an encrypted data disk has no CMK known (its header could not be read; its index, 0-based,
 * in *ret_bad_disk); -ENOMEM. */
int inherit_as_config_from_server(const char *name, const server_record *s, bool system_disk_encrypted,
                                  usec_t created, as_config_record *ret, size_t *ret_bad_disk);

/* A server launched from configuration A follows A: its system disk gets the CMK A recorded (not the
 * image's: A's image may have been rewrapped since) and needs room for the image's @image_size bytes.
 * -EINVAL for an invalid @server or empty @device, -ENOMEM. */
int inherit_system_disk_from_as_config(const char *server, const char *device, const as_config_record *cfg,
                                       uint64_t image_size, disk_plan *ret);

/* ... and its data disk @index (1-based) gets the CMK and mode of A's data disk @index (@cfg_disk) and
 * needs A's size; @spec is a bare device. -EINVAL for an invalid @spec, -EPERM when @spec names a key or
 * ":plain" (the configuration decides), -ENOMEM. */
int inherit_data_disk_from_as_config(const char *server, unsigned index, const char *spec,
                                     const disk_spec *cfg_disk, disk_plan *ret);

/* An image made from a volume keeps the volume's CMK: the key reference of the CMK @volume_token (the
 * evs-kms token of the volume's header) names. -EINVAL, -ENOMEM. */
int inherit_image_key_from_volume(const evs_token *volume_token, char **ret_key_ref);
