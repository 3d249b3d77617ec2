/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Small JSON documents under the state directory: STATE/<kind>/<id>.json, 0600, written atomically
 * (temp file, fsync, rename, fsync of the directory). One implementation for volume records, images,
 * servers and AS configurations. Ids are volume-id shaped: 1-64 of [A-Za-z0-9._-]. */

#include <json-c/json.h>

/* -EINVAL for a bad kind or id, -errno of the write. */
int docstore_save(const char *state_dir, const char *kind, const char *id, json_object *doc);
/* Read with read_state_file(): never blocks, follows no symlink, at most 64 KiB. -ENOENT when absent, -EUCLEAN
 * when it is not a JSON object, -EISDIR, -ELOOP (a symlink), -EBADF (not a regular file), -EFBIG, -errno of
 * the read. */
int docstore_load(const char *state_dir, const char *kind, const char *id, json_object **ret);
/* Why a document did not load, as a phrase ("not a valid record", "a directory"...): for the errors of
 * docstore_load() and of a kind's own checks (-EUCLEAN). */
const char *docstore_strerror(int r);
/* STATE/<kind>/<id>.json, for messages. */
int docstore_path(const char *state_dir, const char *kind, const char *id, char **ret);
/* "record STATE/<kind>/<id>.json is unreadable: REASON" (docstore_strerror(@r)), for an error of a load. NULL on
 * OOM. */
char *docstore_error(const char *state_dir, const char *kind, const char *id, int r);
/* -ENOENT when absent. */
int docstore_remove(const char *state_dir, const char *kind, const char *id);
/* The ids of @kind, sorted, NULL-terminated (an empty list when the directory does not exist). */
int docstore_list(const char *state_dir, const char *kind, char ***ret);

/* Loads every document of @kind into a new array of records of @size bytes each: @load(@userdata, id, record)
 * fills one (zero-initialised) record; documents it fails on (corrupt ones) are skipped. *ret is NULL when
 * none loaded. -errno of the listing, -ENOMEM. */
int docstore_load_all(const char *state_dir, const char *kind, size_t size,
                      int (*load)(void *userdata, const char *id, void *record), void *userdata, void **ret,
                      size_t *ret_n);
