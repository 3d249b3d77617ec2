/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What the host remembers about volumes it created or attached: STATE/volumes/<id>.json, written
 * atomically. The disk header stays the source of truth; this is a hint of where the disk was last seen
 * and why it was last refused. */

#include <stddef.h>
#include <stdint.h>

#include "macro.h"

typedef struct volume_record {
        char *id;
        char *device;
        char *key_id;
        char *key_alias;
        char *backend;
        char *last_error; /* NULL when the last attach worked */
        char *key_state_seen; /* the CMK state when last checked, for change warnings */
        char *recovery_keyslot; /* the keyslot of the recovery passphrase (evsctl volume recovery add), NULL when none */
        uint64_t created;       /* usec (realtime): when volume create formatted it, or the record was first made (a
                                 * volume made elsewhere, first attached or found open here); 0 = unknown (a record of
                                 * a version before this member, which older versions ignore) */
        char *corrupt;        /* set by volume_db_list() alone: the record file is unreadable, and why */
} volume_record;

void volume_record_done(volume_record *v);
void volume_record_array_free(volume_record *v, size_t n);

/* -ENOENT, -EUCLEAN for a corrupt record. */
int volume_db_load(const char *state_dir, const char *id, volume_record *ret);
int volume_db_remove(const char *state_dir, const char *id);

/* Read-modify-write of record @id, the one way records are written: loads it (@load_result 0), or starts one
 * with only ->id set when there is none (-ENOENT) or it is corrupt (-EUCLEAN), lets @change edit it, and saves
 * it when @change returns 0 (> 0: nothing to write; < 0: an error, nothing written). Updates of one record are
 * serialised by a lock of this process's (one of a fixed set, by the id's hash), so that none is lost; the load,
 * the change and the write (two fsyncs) run inside wait_hooks_begin()/end(): the daemon gives up its engine lock
 * meanwhile, and a storm's record writes overlap instead of queueing behind one another and the device work.
 * @change must not take the engine lock or a volume lock (engine_volume_lock()). Returns @change's error, the
 * load's (other than -ENOENT and -EUCLEAN), the save's, or 0. */
int volume_db_update(const char *state_dir, const char *id,
                     int (*change)(volume_record *rec, int load_result, void *userdata), void *userdata);

/* All records, sorted by id. A record file that does not load is listed too, with only ->id and ->corrupt
 * set: a broken file never makes a volume vanish. */
int volume_db_list(const char *state_dir, volume_record **ret, size_t *ret_n);
/* "record STATE/volumes/ID.json is unreadable: REASON" for an error @r of volume_db_load(). NULL on OOM. */
char *volume_db_error(const char *state_dir, const char *id, int r);
