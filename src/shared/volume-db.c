/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <pthread.h>

#include "strv.h"
#include "docstore.h"
#include "json-util.h"
#include "token.h"
#include "volume-db.h"
#include "string-util.h"
#include "wait-hooks.h"

void volume_record_done(volume_record *v) {
        if (!v)
                return;
        free(v->id);
        free(v->device);
        free(v->key_id);
        free(v->key_alias);
        free(v->backend);
        free(v->last_error);
        free(v->recovery_keyslot);
        free(v->key_state_seen);
        free(v->corrupt);
        *v = (volume_record) {};
}

void volume_record_array_free(volume_record *v, size_t n) {
        for (size_t i = 0; i < n; i++)
                volume_record_done(&v[i]);
        free(v);
}

#define KIND "volumes"

static int volume_db_save(const char *state_dir, const volume_record *v) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        int r;

        if (!o)
                return -ENOMEM;
        if (!volume_id_valid(v->id))
                return -EINVAL;
        if ((r = json_add_string(o, "id", v->id, false)) < 0 ||
            (r = json_add_string(o, "device", v->device, true)) < 0 ||
            (r = json_add_string(o, "key_id", v->key_id, true)) < 0 ||
            (r = json_add_string(o, "key_alias", v->key_alias, true)) < 0 ||
            (r = json_add_string(o, "backend", v->backend, true)) < 0 ||
            (r = json_add_string(o, "last_error", v->last_error, true)) < 0 ||
            (r = json_add_string(o, "key_state_seen", v->key_state_seen, true)) < 0 ||
            (v->recovery_keyslot && (r = json_add_string(o, "recovery_keyslot", v->recovery_keyslot, false)) < 0) ||
            (v->created > 0 && (r = json_add_uint64(o, "created", v->created)) < 0))
                return r;
        return docstore_save(state_dir, KIND, v->id, o);
}

int volume_db_load(const char *state_dir, const char *id, volume_record *ret) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        _cleanup_(volume_record_done) volume_record v = {};
        int r;

        r = docstore_load(state_dir, KIND, id, &o);
        if (r < 0)
                return r;
        r = json_get_uint64(o, "created", true, &v.created); /* absent or null in older records: unknown */
        if (r < 0 && r != -ENODATA)
                return -EUCLEAN;
        if (json_get_string_dup(o, "id", &v.id) < 0 || !streq_ptr(v.id, id) ||
            json_get_string_dup(o, "device", &v.device) < 0 || json_get_string_dup(o, "key_id", &v.key_id) < 0 ||
            json_get_string_dup(o, "key_alias", &v.key_alias) < 0 ||
            json_get_string_dup(o, "backend", &v.backend) < 0 ||
            json_get_string_dup(o, "last_error", &v.last_error) < 0 ||
            json_get_string_dup(o, "key_state_seen", &v.key_state_seen) < 0 ||
            json_get_string_dup(o, "recovery_keyslot", &v.recovery_keyslot) < 0)
                return -EUCLEAN;
        *ret = v;
        v = (volume_record) {};
        return 0;
}

/* The locks of volume_db_update(): records whose ids hash alike share one, which only orders their writes. */
#define N_RECORD_LOCKS 128U
static pthread_mutex_t record_locks[N_RECORD_LOCKS] = { [0 ... N_RECORD_LOCKS - 1] = PTHREAD_MUTEX_INITIALIZER };

/* Takes the lock of record @id, the engine lock given up first (wait_hooks_begin()), so that a writer that waits
 * here or for the disk holds up no one else. */
static pthread_mutex_t *record_lock_take(const char *id) {
        uint32_t h = 2166136261U; /* FNV-1a */
        pthread_mutex_t *lock;

        for (const char *p = id; *p; p++)
                h = (h ^ (uint8_t) *p) * 16777619U;
        lock = &record_locks[h % N_RECORD_LOCKS];
        wait_hooks_begin();
        pthread_mutex_lock(lock);
        return lock;
}

static void record_lock_give(pthread_mutex_t *lock) {
        pthread_mutex_unlock(lock);
        wait_hooks_end();
}

int volume_db_update(const char *state_dir, const char *id,
                     int (*change)(volume_record *rec, int load_result, void *userdata), void *userdata) {
        _cleanup_(volume_record_done) volume_record rec = {};
        pthread_mutex_t *lock;
        int r;

        if (!volume_id_valid(id))
                return -EINVAL;
        lock = record_lock_take(id);
        r = volume_db_load(state_dir, id, &rec);
        if (r >= 0 || r == -ENOENT || r == -EUCLEAN) {
                if (r < 0)
                        rec.id = strdup(id);
                r = !rec.id ? -ENOMEM : change(&rec, r, userdata);
                if (r == 0)
                        r = volume_db_save(state_dir, &rec);
                else if (r > 0)
                        r = 0;
        }
        record_lock_give(lock);
        return r;
}

int volume_db_remove(const char *state_dir, const char *id) {
        pthread_mutex_t *lock;
        int r;

        if (!volume_id_valid(id))
                return -EINVAL;
        lock = record_lock_take(id);
        r = docstore_remove(state_dir, KIND, id);
        record_lock_give(lock);
        return r;
}

char *volume_db_error(const char *state_dir, const char *id, int r) {
        return docstore_error(state_dir, KIND, id, r);
}

static int load_one(void *userdata, const char *id, void *record) {
        volume_record *v = record;
        int r;

        r = volume_db_load(userdata, id, v);
        if (r >= 0 || r == -ENOENT || r == -ENOMEM) /* -ENOENT: removed since the listing */
                return r;
        v->id = strdup(id);
        v->corrupt = volume_db_error(userdata, id, r);
        if (!v->id || !v->corrupt) {
                volume_record_done(v);
                return -ENOMEM;
        }
        return 0;
}

int volume_db_list(const char *state_dir, volume_record **ret, size_t *ret_n) {
        return docstore_load_all(state_dir, KIND, sizeof(volume_record), load_one, (void *) state_dir, (void **) ret,
                                 ret_n);
}
