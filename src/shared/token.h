/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The LUKS2 token of type "evs-kms": where a volume's data key is, wrapped.
 *   { "type": "evs-kms", "keyslots": ["0"], "evs_version": 1, "evs_backend": "local",
 *     "evs_key_id": "...", "evs_key_alias": "evs/default", "evs_volume_id": "vol-1",
 *     "evs_context": { "volume_id": "vol-1" }, "evs_wrapped_key": "BASE64" }
 * evs_key_alias is informational and may be absent; the wrap is bound to evs_context.
 * "evs_key_version": N (optional, since key rotation) is the version of the CMK's material the key was
 * wrapped with, when the backend says; absent means unknown (version 1 for the local backend, whose
 * wrapped key records its version itself). Older readers ignore it; evs_version stays 1.
 * "evs_sealed_volume_key": "BASE64" (optional, since 0.2) is the volume key sealed under the data key
 * (AES-256-GCM, EVS_SEALED_VK_SIZE bytes, bound to the LUKS UUID and volume id: luks.c), so that an
 * attach opens the mapping with the volume key directly instead of decrypting the keyslot (whose
 * anti-forensic split costs more than the rest of an attach). The keyslot stays the way stock
 * cryptsetup and the token plugin open the volume; older readers ignore the member. */

#include <stddef.h>
#include <stdint.h>

#include "macro.h"
#include "names.h"

#define EVS_TOKEN_TYPE "evs-kms"
#define EVS_TOKEN_VERSION 1U
#define EVS_TOKEN_JSON_MAX (32U * 1024U)
#define EVS_TOKEN_KEY_VERSION_MAX 4294967295U
/* nonce (12) || 64-byte volume key || tag (16) */
#define EVS_SEALED_VK_SIZE (12U + 64U + 16U)

typedef struct evs_token {
        int keyslot;
        char *backend;
        char *key_id;
        char *key_alias; /* NULL when none */
        char *volume_id;
        uint8_t *wrapped;
        size_t wrapped_size;
        unsigned key_version; /* 0 = not recorded */
        uint8_t *sealed_vk;   /* NULL when absent, else EVS_SEALED_VK_SIZE bytes */
} evs_token;

/* Copies @from's sealed volume key (if any) into @to, replacing @to's. -ENOMEM. */
int evs_token_copy_sealed_vk(evs_token *to, const evs_token *from);

void evs_token_done(evs_token *t);

/* Serialises. -EINVAL when a field is missing or invalid, -ENOMEM. */
int evs_token_to_json(const evs_token *t, char **ret);

/* Parses and validates untrusted JSON (it comes from a disk header). On -EBADMSG, *ret_reason (a
 * static string) names what was wrong: "missing evs_key_id", "evs_wrapped_key is not base64"...
 * -ENOMEM. */
int evs_token_from_json(const char *json, evs_token *ret, const char **ret_reason);

/* "evs-<id>": the dm name of a volume's mapping. -EINVAL for an invalid id, -ENOMEM. */
int volume_mapping_name(const char *id, char **ret);
#define EVS_MAPPING_PREFIX "evs-"
