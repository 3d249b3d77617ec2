/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The backend instances of one host, opened from the configuration, looked up by name. */

#include "config.h"
#include "kms.h"

typedef struct kms_registry {
        kms_context ctx;
        char *state_dir;
        char *credentials_dir;
        char *default_backend;
        kms_backend **backends;
        size_t n_backends;
} kms_registry;

/* Opens every backend of @config. @now may be NULL (CLOCK_REALTIME). -EINVAL with *ret_error, -ENOMEM. */
int kms_registry_new(const evs_config *config, usec_t (*now)(void), kms_registry **ret, char **ret_error);
kms_registry *kms_registry_free(kms_registry *r);
DEFINE_TRIVIAL_CLEANUP_FUNC(kms_registry *, kms_registry_free);

/* The backend named @name, or the default one when @name is NULL. -ENOENT when unknown. */
int kms_registry_get(kms_registry *r, const char *name, kms_backend **ret);

/* Resolves "[BACKEND:]ID-OR-ALIAS" (NULL means the default key on the default backend) to a
 * backend and the CMK's current description. Errors of kms_key_get(), -ENOENT for an unknown backend,
 * -EINVAL for a malformed or empty ("") reference. */
int kms_registry_resolve(kms_registry *r, const char *ref, kms_backend **ret_backend, kms_key *ret_key);
