/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Open mappings keep working when their CMK changes state (the key is in the kernel); the trouble
 * shows only at the next attach. So the daemon watches the CMKs of open volumes, after every key
 * change it makes and periodically for changes made elsewhere (another host, the KMS console), and
 * warns once per change. It never closes a mapping by itself. The same timer expires local keys whose
 * deletion window has passed. */

#include "dm.h"
#include "evs-messages.h"
#include "log.h"
#include "luks.h"
#include "manager.h"
#include "volume-db.h"
#include "string-util.h"

/* One answer per CMK per check: open volumes mostly share a few CMKs. */
typedef struct key_answer {
        kms_backend *backend;
        char *key_id;
        const char *state; /* static */
} key_answer;

static const char *key_state_once(key_answer **answers, size_t *n, kms_backend *b, const char *key_id) {
        _cleanup_(kms_key_done) kms_key key = {};
        key_answer *a;
        const char *state;
        int r;

        for (size_t i = 0; i < *n; i++)
                if ((*answers)[i].backend == b && streq((*answers)[i].key_id, key_id))
                        return (*answers)[i].state;
        r = kms_key_get(b, key_id, &key);
        state = r >= 0 ? kms_key_state_to_string(key.state) : r == -ENOENT ? "destroyed" : "unavailable";
        a = reallocarray(*answers, *n + 1, sizeof(key_answer));
        if (!a)
                return state; /* not remembered: asked again for the next volume */
        *answers = a;
        a[*n] = (key_answer) { .backend = b, .key_id = strdup(key_id), .state = state };
        if (a[*n].key_id)
                (*n)++;
        return state;
}

static int check_open_volumes(manager *m, char **names, key_answer **answers, size_t *n_answers);

int manager_check_open_volumes(manager *m) {
        _cleanup_(strv_freep) char **names = NULL;
        key_answer *answers = NULL;
        size_t n_answers = 0;
        int r;

        r = dm_list_names(EVS_MAPPING_PREFIX, &names);
        if (r < 0)
                return r;
        r = check_open_volumes(m, names, &answers, &n_answers);
        for (size_t i = 0; i < n_answers; i++)
                free(answers[i].key_id);
        free(answers);
        return r;
}

typedef struct key_state_change {
        const char *device;
        const char *state;
        bool changed, was_known;
} key_state_change;

static int key_state_apply(volume_record *rec, int load_result, void *userdata) {
        key_state_change *c = userdata;

        if (load_result < 0 && free_and_strdup(&rec->device, c->device) < 0)
                return -ENOMEM;
        if (streq_ptr(rec->key_state_seen, c->state))
                return 1;
        c->changed = true;
        c->was_known = rec->key_state_seen != NULL;
        return free_and_strdup(&rec->key_state_seen, c->state);
}

static int check_open_volumes(manager *m, char **names, key_answer **answers, size_t *n_answers) {
        int r;

        STRV_FOREACH(name, names) {
                _cleanup_(dm_mapping_info_done) dm_mapping_info dmi = {};
                _cleanup_(luks_info_done) luks_info info = {};
                const char *id = *name + strlen(EVS_MAPPING_PREFIX), *reason;
                key_state_change c = {};
                kms_backend *b;

                if (!volume_id_valid(id) || dm_mapping_get(*name, &dmi) < 0 || !dmi.backing_device ||
                    luks_read(dmi.backing_device, &info, &reason) < 0)
                        continue;
                if (kms_registry_get(m->registry, info.token.backend, &b) < 0)
                        continue;
                c.device = dmi.backing_device;
                c.state = key_state_once(answers, n_answers, b, info.token.key_id);

                r = volume_db_update(m->config.state_dir, id, key_state_apply, &c);
                if (r < 0)
                        log_warning_errno(r, "Cannot record volume %s: %m", id);
                if (!c.changed)
                        continue;

                if (!streq(c.state, "enabled")) {
                        char f_id[64], f_vol[96], f_key[300], f_state[64];
                        const char *fields[] = { f_id, f_vol, f_key, f_state, NULL };

                        snprintf(f_id, sizeof f_id, "MESSAGE_ID=%s", EVS_MESSAGE_KEY_STATE_OPEN_VOLUME);
                        snprintf(f_vol, sizeof f_vol, "EVS_VOLUME_ID=%s", id);
                        snprintf(f_key, sizeof f_key, "EVS_KEY_ID=%s", info.token.key_id);
                        snprintf(f_state, sizeof f_state, "EVS_KEY_STATE=%s", c.state);
                        log_fields(LOG_WARNING, 0, fields,
                                   "Key %s of open volume %s is now %s: the volume keeps working, but will not "
                                   "re-attach after a detach.",
                                   info.token.key_id, id, c.state);
                } else if (c.was_known)
                        log_id(LOG_INFO, 0, EVS_MESSAGE_KEY_STATE_OPEN_VOLUME, "Key %s of open volume %s is enabled again.", info.token.key_id, id);
        }
        return 0;
}

/* The sweep may have rotated keys whose automatic rotation was due: log each rotation made since the last
 * check, and refresh the versions that volume listings compare against. */
static int key_check_rotations(kms_backend *b, usec_t since) {
        kms_key *keys = NULL;
        size_t n = 0;
        int r;

        r = kms_key_list(b, &keys, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                if (keys[i].rotation_days > 0 && keys[i].rotated >= since)
                        log_id(LOG_NOTICE, 0, EVS_MESSAGE_KEY_CHANGED,
                               "Key %s%s%s%s (%s): now at version %u (automatic rotation every %u days).", keys[i].id,
                               keys[i].alias ? " (" : "", strempty(keys[i].alias), keys[i].alias ? ")" : "", b->name,
                               keys[i].version, keys[i].rotation_days);
        kms_key_array_free(keys, n);
        return 0;
}

static int key_check_run(void *userdata) {
        static usec_t last_check = 0;
        manager *m = userdata;
        usec_t started = now_realtime();
        int r;

        for (size_t i = 0; i < m->registry->n_backends; i++) {
                kms_backend *b = m->registry->backends[i];

                r = kms_sweep(b);
                if (r < 0 && r != -ECANCELED)
                        log_warning_errno(r, "Key sweep of backend %s failed: %s", b->name,
                                          kms_backend_error(b) ?: strerror(-r));
                if (r >= 0 && b->ops->key_rotate)
                        (void) key_check_rotations(b, last_check ? last_check : started);
        }
        last_check = started;
        (void) manager_check_open_volumes(m);
        manager_count_attached(m);
        return 0;
}

static void key_check_done(void *userdata, int r) {
        manager *m = userdata;

        atomic_store(&m->sweep_running, false);
}

int manager_submit_key_check(manager *m) {
        int r;

        if (atomic_exchange(&m->sweep_running, true))
                return 0; /* the last one has not finished: its KMS is slow, do not pile up */
        r = engine_submit(m->engine, key_check_run, key_check_done, m);
        if (r < 0)
                atomic_store(&m->sweep_running, false);
        return r;
}

static int on_sweep(sd_event_source *s, uint64_t usec, void *userdata) {
        manager *m = userdata;
        int r;

        (void) manager_submit_key_check(m);

        r = sd_event_source_set_time_relative(s, (uint64_t) m->config.sweep_interval_sec * USEC_PER_SEC);
        if (r >= 0)
                r = sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        return r < 0 ? log_error_errno(r, "Failed to re-arm the key sweep: %m") : 0;
}

int manager_start_sweep(manager *m) {
        int r;

        r = sd_event_add_time_relative(m->event, &m->sweep_source, CLOCK_MONOTONIC,
                                       (uint64_t) m->config.sweep_interval_sec * USEC_PER_SEC, USEC_PER_SEC, on_sweep,
                                       m);
        return r < 0 ? log_error_errno(r, "Failed to start the key sweep timer: %m") : 0;
}
