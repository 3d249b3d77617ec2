/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* EVS volumes on disk: LUKS2, aes-xts-plain64, 512-bit volume key, 4096-byte sectors where the device
 * allows, label = volume id, subsystem "evs", one keyslot whose passphrase is the data key (PBKDF2
 * with the minimum iterations, no benchmark), one "evs-kms" token bound to it. */

#include <stdbool.h>
#include <stdint.h>

#include "dm.h"
#include "kms-registry.h"
#include "probe.h"

struct crypt_device;
#include "token.h"

#define EVS_LUKS_SUBSYSTEM "evs"
#define EVS_LUKS_CIPHER "aes"
#define EVS_LUKS_CIPHER_MODE "xts-plain64"
#define EVS_LUKS_VOLUME_KEY_SIZE 64U
#define EVS_LUKS_DATA_OFFSET (16U * 1024U * 1024U) /* metadata + keyslots, what luks_format() reserves */

/* Looks for any signature (filesystem, RAID, LUKS, partition table) on @device. 0 when none, 1 with
 * *ret_what naming it ("ext4", "crypto_LUKS", "partition table dos"...), -ENOTBLK when @device is neither a
 * block device nor a regular file, -errno when it cannot be read. */
int luks_probe_signature(const char *device, char **ret_what);

/* Formats @device (block device or image file). Refuses with -ENOTEMPTY (and *ret_what) when it holds
 * any signature unless @force. Sets token->keyslot. -EINVAL, -EFBIG when @device is too small (not -ENOSPC:
 * that is a write failing on a full file system), -errno of
 * libcryptsetup. */
int luks_format(const char *device, const char *volume_id, const secret *data_key, evs_token *token, bool force,
                char **ret_what);

typedef struct luks_info {
        char *label;
        char *subsystem;
        char *uuid;
        char *cipher; /* "aes-xts-plain64" */
        uint32_t sector_size;
        uint32_t volume_key_bits;
        uint64_t data_sectors; /* of 512 bytes */
        int token_id;
        evs_token token;
        unsigned n_unbound_keyslots; /* keyslots that open the volume but no evs-kms or evs-recovery token is bound to */
        int recovery_keyslot;        /* the keyslot of the evs-recovery token, -1 when none */
        struct crypt_device *cd; /* the loaded header, kept by luks_read_keep() only (NULL when damaged) */
        bool snapshot;           /* @cd is the header as read, in memfd @snapshot_fd, the disk its data device */
        int snapshot_fd;
        const char *damaged;     /* NULL, or which header copy is damaged (the intact one was read; luks_repair()) */
} luks_info;

void luks_info_done(luks_info *i);

/* The LUKS2 token type recording a deliberate recovery passphrase (evsctl volume recovery add): its keyslot
 * is not reported as bypassing the CMK. JSON: {"type":"evs-recovery","keyslots":["N"],"evs_volume_id":ID}. */
#define EVS_RECOVERY_TOKEN_TYPE "evs-recovery"

/* Lists the active keyslots of the loaded header @cd that no evs-kms or evs-recovery token is bound to:
 * each opens the volume without the CMK. *ret_slots (may be NULL) gets the slot numbers, ascending;
 * *ret_recovery_slot (may be NULL) the keyslot of the evs-recovery token or -1. -ENOMEM. */
int luks_unbound_keyslots(struct crypt_device *cd, int **ret_slots, size_t *ret_n, int *ret_recovery_slot);
/* luks_unbound_keyslots() for @device. -ENODATA when it is not LUKS2, -errno of libcryptsetup. */
int luks_device_unbound_keyslots(const char *device, int **ret_slots, size_t *ret_n, int *ret_recovery_slot);

/* Adds a keyslot opened by @passphrase (with the volume key, unlocked by @data_key through the evs-kms
 * keyslot) and an evs-recovery token bound to it; *ret_keyslot gets the slot. -EEXIST when the volume already
 * has an evs-recovery token, -EPERM when @data_key does not open the evs-kms keyslot, -errno of libcryptsetup. */
int luks_recovery_add(const char *device, const char *volume_id, int evs_keyslot, const secret *data_key,
                      const secret *passphrase, int *ret_keyslot);
/* Removes the evs-recovery token and its keyslot. -ENOENT when there is none. */
int luks_recovery_remove(const char *device, int *ret_keyslot);

/* Reads the header and the evs-kms token of @device, never writing to it: libcryptsetup's automatic repair of
 * a damaged header copy does not happen; the intact copy is read and ret->damaged says which one is damaged.
 * -ENODATA with *ret_reason "not a LUKS2 volume" or "no evs-kms token"; -EBADMSG with the token codec's
 * reason; -errno when unreadable. */
int luks_read(const char *device, luks_info *ret, const char **ret_reason);

/* luks_read() whose read of the disk (a thread's own, probe.h) is waited for at most @wait (> 0): for what
 * only shows a volume, so that a disk whose I/O hangs does not hold its caller. -ETIMEDOUT with *ret_reason
 * "the disk does not answer" (at once when an earlier read of @device is still waiting); -EAGAIN when too
 * many such reads wait. */
int luks_read_within(const char *device, usec_t wait, luks_info *ret, const char **ret_reason);
/* Starts the read of @device's header area now, on its own thread, for a luks_read_within() of @device soon
 * after: a caller about to show many volumes starts every read at once, so that disks that hang cost one
 * wait in all. Release with probe_release(); NULL when no thread could start. */
probe *luks_prefetch(const char *device);

/* luks_read(), keeping the loaded header in ret->cd for luks_info_next_token() and
 * luks_info_activate(): an attach loads the header once. */
int luks_read_keep(const char *device, luks_info *ret, const char **ret_reason);
/* The next evs-kms token after token @after (there are several only after an interrupted rewrap).
 * -ENODATA when none; -EBADMSG with *ret_reason for a malformed one. Needs ret->cd. */
int luks_info_next_token(luks_info *i, int after, int *ret_id, evs_token *ret_token, const char **ret_reason);
/* Opens the volume of @i (read with luks_read_keep()) as /dev/mapper/@name through token @token_id of
 * the in-process evs-kms handler, with @data_key already unwrapped (no KMS call inside
 * libcryptsetup). The volume key sealed in the token (token.h) is used when it opens with @data_key and
 * the token's keyslot exists, without decrypting the keyslot; otherwise the keyslot answers.
 * -EEXIST when the mapping exists, -EPERM when the key does not open the keyslot,
 * -errno of libcryptsetup. */
int luks_info_activate(luks_info *i, const char *name, int token_id, const secret *data_key);
/* Repairs a damaged (or outdated) LUKS2 header copy of @device from the other one (crypt_repair()), on purpose.
 * With both copies intact and in agreement, nothing is written and *ret_repaired is false. -ENODATA (not LUKS2:
 * no copy is intact), -EIO when the copies still disagree after the repair, -errno of libcryptsetup;
 * *ret_reason says what was (to be) repaired, or why it failed. */
int luks_repair(const char *device, bool *ret_repaired, const char **ret_reason);

/* Writes @token as a new evs-kms token bound to token->keyslot and returns its id. */
int luks_token_add(const char *device, const evs_token *token, int *ret_token_id);
/* Removes token @id. */
int luks_token_remove(const char *device, int id);

typedef struct luks_unlock {
        kms_registry *registry;
        const secret *data_key; /* when set: already unwrapped, the handler hands it over as it is */
        const char *volume_id; /* what the caller expects: the label, the disk serial */
        /* Out: */
        int error;            /* the real -errno when unlocking failed inside the handler */
        const char *reason;   /* token codec reason, when the token was malformed */
        kms_backend *backend; /* the backend used (its kms_backend_error() for the reason) */
        kms_key key;          /* the CMK, on success */
} luks_unlock;

void luks_unlock_done(luks_unlock *u);

/* Opens @device as /dev/mapper/@name through the in-process evs-kms token handler (the same code the
 * token plugin exports). @name NULL only checks that the key opens the keyslot. Errors of
 * envelope_open() (u->error), -EEXIST when the mapping exists, -errno of libcryptsetup. */
int luks_activate(const char *device, const char *name, luks_unlock *u);

/* Closes mapping @name, without reading its disk. @seen: what dm_mapping_get() said of it, when nothing
 * could have changed it since (dm_mapping_close_seen()), else NULL. -EBUSY when it is held open (unless
 * @deferred), -ENODEV when absent. */
int luks_deactivate(const char *name, const dm_mapping_info *seen, bool deferred);

/* crypt_init() for every use of a volume in this process: the in-process evs-kms token handler is
 * registered first, before libcryptsetup can load an external plugin of the same name for a token it
 * meets (the plugin reads the system configuration; this process has its own). -errno of crypt_init(). */
int luks_crypt_init(const char *device, struct crypt_device **ret);
/* luks_crypt_init() and crypt_load() of the LUKS2 header on @device; *ret only when both succeed. -errno of
 * either (crypt_load()'s -EINVAL or -ENXIO: no LUKS2 header). */
int luks_load(const char *device, struct crypt_device **ret);

/* The evs-kms token handler, for crypt_token_register() and the plugin. */
int luks_token_open(void *cd, int token, char **buffer, size_t *buffer_len, void *usrptr);
void luks_token_buffer_free(void *buffer, size_t buffer_len);
int luks_token_validate(void *cd, const char *json);
int luks_register_token_handler(void);
