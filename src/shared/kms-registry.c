/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "kms-registry.h"

int kms_registry_new(const evs_config *config, usec_t (*now)(void), kms_registry **ret, char **ret_error) {
        _cleanup_(kms_registry_freep) kms_registry *r = NULL;
        const char *creds;
        int k;

        r = calloc(1, sizeof *r);
        if (!r)
                return -ENOMEM;
        r->state_dir = strdup(config->state_dir);
        r->default_backend = strdup(config->default_backend);
        creds = getenv("CREDENTIALS_DIRECTORY");
        r->credentials_dir = creds ? strdup(creds) : NULL;
        r->backends = calloc(config->n_backends, sizeof(kms_backend *));
        if (!r->state_dir || !r->default_backend || (creds && !r->credentials_dir) || !r->backends)
                return -ENOMEM;
        r->ctx = (kms_context) {
                .state_dir = r->state_dir,
                .credentials_dir = r->credentials_dir,
                .now = now ?: now_realtime,
        };

        for (size_t i = 0; i < config->n_backends; i++) {
                k = kms_backend_open(&config->backends[i], &r->ctx, &r->backends[i], ret_error);
                if (k < 0)
                        return k;
                r->n_backends++;
        }
        *ret = TAKE_PTR(r);
        return 0;
}

kms_registry *kms_registry_free(kms_registry *r) {
        if (!r)
                return NULL;
        for (size_t i = 0; i < r->n_backends; i++)
                kms_backend_free(r->backends[i]);
        free(r->backends);
        free(r->state_dir);
        free(r->credentials_dir);
        free(r->default_backend);
        free(r);
        return NULL;
}

int kms_registry_get(kms_registry *r, const char *name, kms_backend **ret) {
        name = name ?: r->default_backend;
        for (size_t i = 0; i < r->n_backends; i++)
                if (streq(r->backends[i]->name, name)) {
                        *ret = r->backends[i];
                        return 0;
                }
        return -ENOENT;
}

int kms_registry_resolve(kms_registry *r, const char *ref, kms_backend **ret_backend, kms_key *ret_key) {
        _cleanup_free_ char *backend = NULL, *key = NULL;
        kms_backend *b;
        int k;

        if (!ref)
                ref = KMS_DEFAULT_KEY_ALIAS;
        else if (!*ref)
                return -EINVAL; /* an empty reference never silently means the default key */
        k = kms_ref_split(ref, &backend, &key);
        if (k < 0)
                return k;
        k = kms_registry_get(r, backend, &b);
        if (k < 0)
                return k;
        k = kms_key_get(b, key, ret_key);
        if (k < 0) {
                *ret_backend = b; /* so the caller can read kms_backend_error() */
                return k;
        }
        *ret_backend = b;
        return 0;
}
