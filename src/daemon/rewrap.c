/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* RewrapVolume: a volume's data key re-wrapped under another CMK, attached or not, the data area never
 * touched. The crash-safe steps are src/shared/rewrap.c's. */

#include "evs-messages.h"
#include "errors.h"
#include "log.h"
#include "rewrap.h"
#include "volume-db.h"
#include "volume-ops.h"
#include "string-util.h"

static const char *reason_of(const rewrap *w, int r) {
        const char *e = kms_backend_error(w->failed);

        return w->reason ?: e ?: strerror(-r);
}

static int rewrap_error(const rewrap *w, const char *id, int r, sd_bus_error *error) {
        switch (w->next) {
        case REWRAP_STEP_RESOLVE:
                if (r == -ENOENT && !w->failed)
                        return evs_bus_error_setf(error, ENOENT, "Unknown KMS backend in key reference '%s'.",
                                                  w->key_ref);
                if (r == -EINVAL && !kms_backend_error(w->failed))
                        return evs_bus_error_setf(error, EINVAL, "Invalid key reference '%s'.", w->key_ref);
                if (r == -ENOENT)
                        return evs_bus_error_setf(error, ENOENT, "No key %s.", w->key_ref);
                return evs_bus_error_setf(error, -r, "Refusing to rewrap volume %s: %s.", id, reason_of(w, r));
        case REWRAP_STEP_WRAP:
                return evs_bus_error_setf(error, -r, "Cannot rewrap volume %s: cannot unwrap its data key: %s.", id,
                                          reason_of(w, r));
        case REWRAP_STEP_ADD:
                return evs_bus_error_setf(error, -r, "Cannot rewrap volume %s: cannot write the new token: %s.", id,
                                          reason_of(w, r));
        case REWRAP_STEP_VERIFY:
                return evs_bus_error_setf(
                        error, r == -EPERM ? EBADMSG : -r, /* libcryptsetup's "no keyslot opens", not a permission */
                        "Cannot rewrap volume %s: the new token does not verify (%s); the old one was kept.",
                        id, reason_of(w, r));
        case REWRAP_STEP_REMOVE:
                return evs_bus_error_setf(error, -r,
                                          "Volume %s: the new token is written and verified but the old one could not "
                                          "be removed (%s); run the rewrap again.",
                                          id, reason_of(w, r));
        default:
                return evs_bus_error_setf(error, -r, "Cannot rewrap volume %s: %s.", id, strerror(-r));
        }
}

/* The record's key after a rewrap, when there is a record. */
static int record_new_token(volume_record *rec, int load_result, void *userdata) {
        const evs_token *t = userdata;
        int r;

        if (load_result < 0)
                return 1;
        if ((r = free_and_strdup(&rec->key_id, t->key_id)) < 0 ||
            (r = free_and_strdup(&rec->key_alias, t->key_alias)) < 0 ||
            (r = free_and_strdup(&rec->backend, t->backend)) < 0)
                return r;
        return free_and_strdup(&rec->last_error, NULL);
}

int volume_rewrap(manager *m, const char *ref, const char *key_ref, volume_view *ret, sd_bus_error *error) {
        _cleanup_(luks_info_done) luks_info info = {};
        _cleanup_(rewrap_done) rewrap w = {};
        _cleanup_free_ char *device = NULL;
        int r;

        r = volume_resolve(m, ref, &device, &info, error);
        if (r < 0)
                return r;
        if (!volume_label_valid(info.label))
                return evs_bus_error_setf(error, EMEDIUMTYPE, "%s: its LUKS2 label is not a valid volume id.", device);
        if (ref[0] != '/' && !streq(ref, info.label))
                return evs_bus_error_setf(error, EMEDIUMTYPE, "Volume id mismatch: %s holds volume %s, not %s.", device,
                                          info.label, ref);

        w = (rewrap) {
                .device = device,
                .key_ref = strempty(key_ref),
                .registry = m->registry,
        };
        r = rewrap_run(&w, _REWRAP_STEP_MAX - 1);
        if (r < 0) {
                log_id(LOG_WARNING, r, EVS_MESSAGE_REWRAP_STOPPED, "Rewrap of volume %s (%s) stopped at step %s: %s", info.label, device,
                                  rewrap_step_to_string(w.next), reason_of(&w, r));
                return rewrap_error(&w, info.label, r, error);
        }

        log_id(LOG_INFO, 0, EVS_MESSAGE_VOLUME_REWRAPPED, "Volume %s (%s): data key re-wrapped from key %s (%s) to key %s (%s); %u old token(s) removed.",
                 info.label, device, w.old_token.key_id, w.old_token.backend, w.new_token.key_id, w.new_token.backend,
                 w.n_removed);

        /* The header is the truth; keep the hint in step when there is one. */
        r = volume_db_update(m->config.state_dir, info.label, record_new_token, &w.new_token);
        if (r < 0)
                log_warning_errno(r, "Cannot record volume %s: %m", info.label);
        return volume_get(m, device, ret, error);
}
