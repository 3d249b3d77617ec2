/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <systemd/sd-bus.h>

#include "manager.h"
#include "time-util.h"

/* An encrypted image as the API shows it (see src/shared/image.h). Empty strings are NULL here. */
typedef struct image_view {
        char *id;
        char *name;
        char *path; /* STATE/images/<id>.img */
        char *key_id;
        char *key_alias;
        const char *key_state;
        char *backend;
        char *cipher;
        uint64_t size;
        char *source;
        usec_t created;
} image_view;

void image_view_done(image_view *v);
void image_view_array_free(image_view *v, size_t n);

/* Each sets @error (a one-line reason) and returns -errno. @ref is an image id or name. */
int image_import(manager *m, const char *file, const char *name, const char *key_ref, image_view *ret,
                 sd_bus_error *error);
/* Makes image @name from the data area of EVS volume @volume_id on @device (its whole data area, decrypted
 * and re-encrypted in userspace, attached or not), under the same CMK; @source is recorded ("server:web1").
 * -ENODATA when @device holds no EVS volume @volume_id, the key-state errnos when its CMK is unusable. */
int image_create_from_volume(manager *m, const char *device, const char *volume_id, const char *name,
                             const char *source, image_view *ret, sd_bus_error *error);
/* A progress callback for long copies (they run as jobs): the copy's progress on the STATUS= line. */
void image_copy_progress(uint64_t done, uint64_t total, void *userdata);
int image_get(manager *m, const char *ref, image_view *ret, sd_bus_error *error);
int image_list(manager *m, image_view **ret, size_t *ret_n, sd_bus_error *error);
/* Re-wraps the image's data key under @key_ref (crash-safe, as RewrapVolume) and records the new CMK. */
int image_rewrap(manager *m, const char *ref, const char *key_ref, image_view *ret, sd_bus_error *error);
/* Removes the image file and its record; the CMK is left alone. -EBUSY while it is attached. */
int image_delete(manager *m, const char *ref, image_view *ret, sd_bus_error *error);
