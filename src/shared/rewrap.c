/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <libcryptsetup.h>

#include "envelope.h"
#include "luks.h"
#include "rewrap.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct crypt_device *, crypt_free);

#define TOKENS_MAX 32

static const char *const step_names[_REWRAP_STEP_MAX] = {
        [REWRAP_STEP_RESOLVE] = "resolve",
        [REWRAP_STEP_WRAP] = "wrap",
        [REWRAP_STEP_ADD] = "add",
        [REWRAP_STEP_VERIFY] = "verify",
        [REWRAP_STEP_REMOVE] = "remove",
};

const char *rewrap_step_to_string(rewrap_step s) {
        return s >= 0 && s < _REWRAP_STEP_MAX ? step_names[s] : NULL;
}

void rewrap_done(rewrap *w) {
        if (!w)
                return;
        free(w->volume_id);
        kms_key_done(&w->key);
        evs_token_done(&w->old_token);
        evs_token_done(&w->new_token);
        w->volume_id = NULL;
}

static int load(const char *device, struct crypt_device **ret) {
        int r = luks_load(device, ret);

        return r == -EINVAL || r == -ENXIO ? -ENODATA : r;
}

static bool is_evs_token(struct crypt_device *cd, int id) {
        const char *type = NULL;

        return crypt_token_status(cd, id, &type) != CRYPT_TOKEN_INACTIVE && type && streq(type, EVS_TOKEN_TYPE);
}

static int step_resolve(rewrap *w) {
        kms_backend *b = NULL;
        int r;

        kms_key_done(&w->key);
        r = kms_registry_resolve(w->registry, w->key_ref, &b, &w->key);
        if (r < 0) {
                w->failed = b;
                return r;
        }
        r = kms_key_state_to_errno(w->key.state);
        if (r < 0) {
                w->failed = b;
                return kms_backend_set_error(b, r, "key %s%s%s%s is %s", KMS_KEY_AS_TYPED(w->key_ref, w->key.id),
                                             kms_key_state_to_string(w->key.state));
        }
        w->to = b;
        return 0;
}

static int step_wrap(rewrap *w) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        kms_backend *first_failed = NULL;
        const char *first_reason = NULL;
        int r, first_error = 0;

        r = load(w->device, &cd);
        if (r == -ENODATA)
                w->reason = "not a LUKS2 volume";
        if (r < 0)
                return r;
        if (!volume_label_valid(crypt_get_label(cd))) {
                w->reason = "its LUKS2 label is not a valid volume id";
                return -EMEDIUMTYPE;
        }
        free(w->volume_id);
        w->volume_id = strdup(crypt_get_label(cd));
        if (!w->volume_id)
                return -ENOMEM;

        /* The first evs-kms token that unwraps is the current one; after an interrupted rewrap there
         * are two, and the old CMK may be disabled by now. */
        for (int id = 0; id < TOKENS_MAX; id++) {
                _cleanup_(evs_token_done) evs_token t = {}, n = {};
                const char *json, *reason = NULL;
                kms_backend *from = NULL;

                if (!is_evs_token(cd, id) || crypt_token_json_get(cd, id, &json) < 0)
                        continue;

                r = evs_token_from_json(json, &t, &reason);
                if (r == -ENOMEM)
                        return r;
                if (r >= 0 && !streq(t.volume_id, w->volume_id)) {
                        r = -EMEDIUMTYPE;
                        reason = "the key token belongs to another volume";
                }
                if (r >= 0 && kms_registry_get(w->registry, t.backend, &from) < 0) {
                        r = -ENOENT;
                        reason = "the token names a KMS backend that is not configured";
                }
                if (r >= 0)
                        r = envelope_rewrap(from, &t, w->to, &w->key, &n);
                if (r >= 0)
                        /* The data key stays, so the volume key sealed under it does too. */
                        r = evs_token_copy_sealed_vk(&n, &t);
                if (r >= 0) {
                        n.keyslot = t.keyslot;
                        evs_token_done(&w->old_token);
                        evs_token_done(&w->new_token);
                        w->old_token = t;
                        t = (evs_token) {};
                        w->new_token = n;
                        n = (evs_token) {};
                        w->old_token_id = id;
                        w->new_token_id = -1;
                        return 0;
                }
                if (r == -ENOMEM)
                        return r;
                if (first_error == 0) {
                        first_error = r;
                        first_reason = reason;
                        /* envelope_open()'s failures name the old backend, kms_wrap()'s the new one. */
                        first_failed = from && kms_backend_error(from) ? from : w->to;
                }
        }
        if (first_error == 0) {
                w->reason = "no evs-kms token";
                return -ENODATA;
        }
        w->reason = first_reason;
        w->failed = first_reason ? NULL : first_failed;
        return first_error;
}

static int step_add(rewrap *w) {
        int r, id;

        r = luks_token_add(w->device, &w->new_token, &id);
        if (r < 0)
                return r;
        w->new_token_id = id;
        return 0;
}

static bool token_equal(const evs_token *a, const evs_token *b) {
        return a->keyslot == b->keyslot && a->key_version == b->key_version && streq(a->backend, b->backend) &&
               streq(a->key_id, b->key_id) && streq_ptr(a->key_alias, b->key_alias) && streq(a->volume_id, b->volume_id) &&
               a->wrapped_size == b->wrapped_size && memcmp(a->wrapped, b->wrapped, a->wrapped_size) == 0 &&
               !a->sealed_vk == !b->sealed_vk &&
               (!a->sealed_vk || memcmp(a->sealed_vk, b->sealed_vk, EVS_SEALED_VK_SIZE) == 0);
}

static int verify(rewrap *w) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        _cleanup_(evs_token_done) evs_token t = {};
        _cleanup_(luks_unlock_done) luks_unlock u = { .registry = w->registry };
        const char *json, *reason = NULL;
        int r;

        r = luks_register_token_handler();
        if (r < 0)
                return r;
        r = load(w->device, &cd);
        if (r < 0)
                return r;
        if (!is_evs_token(cd, w->new_token_id) || crypt_token_json_get(cd, w->new_token_id, &json) < 0) {
                w->reason = "the new token is not in the header";
                return -EBADMSG;
        }
        r = evs_token_from_json(json, &t, &reason);
        if (r < 0) {
                w->reason = reason;
                return r;
        }
        if (!token_equal(&t, &w->new_token)) {
                w->reason = "the token read back differs from the one written";
                return -EBADMSG;
        }

        /* The handler unwraps through the KMS and libcryptsetup checks the key against the keyslot
         * the token is bound to; no name, no mapping. */
        u.volume_id = w->volume_id;
        r = crypt_activate_by_token(cd, NULL, w->new_token_id, &u, 0);
        if (r < 0 && u.error < 0) {
                w->reason = u.reason;
                w->failed = u.reason ? NULL : u.backend;
                return u.error;
        }
        if (r < 0)
                w->reason = r == -EPERM ? "the new token does not open its keyslot" : NULL;
        return r < 0 ? r : 0;
}

static int step_verify(rewrap *w) {
        int r;

        r = verify(w);
        if (r < 0 && w->new_token_id >= 0 && luks_token_remove(w->device, w->new_token_id) >= 0)
                w->new_token_id = -1; /* back to the header as it was */
        return r;
}

static int step_remove(rewrap *w) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        int r;

        r = load(w->device, &cd);
        if (r < 0)
                return r;
        for (int id = 0; id < TOKENS_MAX; id++) {
                if (id == w->new_token_id || !is_evs_token(cd, id))
                        continue;
                r = crypt_token_json_set(cd, id, NULL);
                if (r < 0)
                        return r;
                w->n_removed++;
        }
        return 0;
}

int rewrap_run_step(rewrap *w) {
        static int (*const steps[_REWRAP_STEP_MAX])(rewrap *w) = {
                [REWRAP_STEP_RESOLVE] = step_resolve,
                [REWRAP_STEP_WRAP] = step_wrap,
                [REWRAP_STEP_ADD] = step_add,
                [REWRAP_STEP_VERIFY] = step_verify,
                [REWRAP_STEP_REMOVE] = step_remove,
        };
        int r;

        if (w->next < 0 || w->next >= _REWRAP_STEP_MAX)
                return -ESTALE;
        if (w->next == REWRAP_STEP_RESOLVE)
                w->new_token_id = -1;
        w->failed = NULL;
        w->reason = NULL;
        r = steps[w->next](w);
        if (r < 0)
                return r;
        w->next++;
        return 0;
}

int rewrap_run(rewrap *w, rewrap_step last) {
        int r;

        while (w->next <= last && w->next < _REWRAP_STEP_MAX) {
                r = rewrap_run_step(w);
                if (r < 0)
                        return r;
        }
        return 0;
}
