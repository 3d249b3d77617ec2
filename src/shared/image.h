/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Encrypted images: STATE/images/<id>.img is an EVS volume in a file (LUKS2 exactly as luks_format()
 * makes it, label = image id, the data key wrapped for the image id) whose data area holds an imported
 * raw image; STATE/images/<id>.json describes it. The header carries its CMK, so a copy of the file
 * opens on any host that reaches the same KMS (attach it as a volume: `evsctl volume attach FILE`).
 *
 * The payload is written without device-mapper: the volume key is taken from the keyslot with the
 * data key, and each sector is encrypted with AES-XTS exactly as dm-crypt does for LUKS2
 * (aes-xts-plain64: the IV is the 512-byte sector number, counted from the start of the data area,
 * little-endian, whatever the encryption sector size). */

#include <stdint.h>

#include "macro.h"
#include "secret.h"
#include "time-util.h"

#define IMAGE_ID_PREFIX "img-"

/* Fills @ret with a fresh image id, "img-" and 12 hex digits. -errno of the RNG. */
int image_id_new(char ret[static 17]);

/* Image names: 1 to 64 characters of [A-Za-z0-9._-] (as volume ids). */
bool image_name_valid(const char *name) _pure_;

/* Encrypts @size bytes read from @source_fd (from its offset 0) into the data area of the LUKS2 image
 * @image, which must already be formatted for @data_key (aes-xts-plain64) and is grown to hold them;
 * the last sector is padded with zeros. -EINVAL for a header this does not support (another cipher, a
 * volume key that is not 512 bits), -EPERM when @data_key does not open a keyslot, -EIO for a source
 * that ends before @size bytes, -errno of libcryptsetup, read, write, OpenSSL (-EIO). */
typedef void (*image_progress_fn)(uint64_t done, uint64_t total, void *userdata);
/* @progress (may be NULL) is called after each MiB written, e.g. to keep a service watchdog fed. */
int image_encrypt_payload(const char *image, const secret *data_key, int source_fd, uint64_t size,
                          image_progress_fn progress, void *userdata);

/* Copies the first @size bytes of plaintext of the data area of EVS volume @source (an image file or a
 * block device, opened with @source_key) into the data area of EVS volume @target (opened with
 * @target_key), sector by sector in userspace: decrypted with the source's volume key, encrypted with the
 * target's, whatever their sector sizes. A regular-file target is grown; the target's last sector is
 * padded with zeros. Neither needs device-mapper, and @source may be attached meanwhile (its ciphertext is
 * read from the raw device). -EINVAL for a header this does not support or @size 0, -EPERM when a data key
 * opens no keyslot, -EIO when @source holds less than @size bytes, -ENOSPC when a block-device @target is
 * too small, -errno of libcryptsetup, read, write. */
int image_copy_payload(const char *source, const secret *source_key, const char *target, const secret *target_key,
                       uint64_t size, image_progress_fn progress, void *userdata);

/* The size in bytes of the data area of the LUKS2 volume @path as it is now (device or file size minus
 * the data offset). -errno of libcryptsetup (-EINVAL when it is not LUKS2), of open. */
int image_data_size(const char *path, uint64_t *ret);

typedef struct image_record {
        char *id;
        char *name;
        char *key_id;
        char *key_alias; /* NULL when none */
        char *backend;
        char *cipher;
        uint64_t size; /* bytes of the source, as imported */
        char *source;  /* where it was imported from */
        usec_t created;
        char *corrupt; /* set by image_db_list_all() alone: the record file is unreadable, and why (only id is set) */
} image_record;

void image_record_done(image_record *i);
void image_record_array_free(image_record *i, size_t n);

/* STATE/images/<id>.img and STATE/images. -ENOMEM. */
int image_path(const char *state_dir, const char *id, char **ret);
int image_dir(const char *state_dir, char **ret);

/* Records: STATE/images/<id>.json, written atomically. load: -ENOENT, -EUCLEAN for a corrupt record,
 * -EINVAL for an invalid id. save: -EINVAL for a record without id, name or key, -errno. remove: -ENOENT. */
int image_db_save(const char *state_dir, const image_record *i);
int image_db_load(const char *state_dir, const char *id, image_record *ret);
int image_db_remove(const char *state_dir, const char *id);
/* All records, sorted by name. Corrupt ones are skipped. */
int image_db_list(const char *state_dir, image_record **ret, size_t *ret_n);
/* image_db_list() with the records that do not load as well, only ->id and ->corrupt set (sorted by id among
 * the names): for listings, where a broken file never makes an image vanish. */
int image_db_list_all(const char *state_dir, image_record **ret, size_t *ret_n);
