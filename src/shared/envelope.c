/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "crypto.h"
#include "envelope.h"

static int fill_token(kms_backend *b, const kms_key *key, const char *volume_id, uint8_t *wrapped, size_t size,
                      unsigned version, evs_token *ret) {
        evs_token t = {
                .keyslot = -1,
                .backend = strdup(b->name),
                .key_id = strdup(key->id),
                .key_alias = key->alias ? strdup(key->alias) : NULL,
                .volume_id = strdup(volume_id),
                .wrapped = wrapped,
                .wrapped_size = size,
                .key_version = version,
        };

        if (!t.backend || !t.key_id || (key->alias && !t.key_alias) || !t.volume_id) {
                evs_token_done(&t);
                return -ENOMEM;
        }
        *ret = t;
        return 0;
}

int envelope_seal(kms_backend *b, const kms_key *key, const char *volume_id, secret **ret_data_key,
                  evs_token *ret_token) {
        _cleanup_(secret_freep) secret *data_key = NULL;
        uint8_t *wrapped = NULL;
        unsigned version = 0;
        size_t size;
        int r;

        if (!volume_label_valid(volume_id)) /* a rewrap keeps an older volume's id */
                return -EINVAL;
        r = crypto_random_secret(KMS_DATA_KEY_SIZE, &data_key);
        if (r < 0)
                return r;
        r = kms_wrap_versioned(b, key->id, volume_id, data_key, &wrapped, &size, &version);
        if (r < 0)
                return r;
        r = fill_token(b, key, volume_id, wrapped, size, version, ret_token);
        if (r < 0)
                return r;
        *ret_data_key = TAKE_PTR(data_key);
        return 0;
}

int envelope_open(kms_backend *b, const evs_token *token, const char *volume_id, kms_key *ret_key,
                  secret **ret_data_key) {
        _cleanup_(kms_key_done) kms_key key = {};
        _cleanup_(secret_freep) secret *data_key = NULL;
        char ts[FORMAT_TIMESTAMP_MAX];
        int r;

        if (!streq(token->volume_id, volume_id))
                return kms_backend_set_error(b, -EMEDIUMTYPE, "the key token belongs to volume %s, not %s",
                                             token->volume_id, volume_id);

        if (b->ops->unwrap_checks_state) {
                /* One KMS call: the unwrap itself refuses a CMK that is not enabled, with the reason. */
                r = kms_unwrap_versioned(b, token->key_id, volume_id, token->wrapped, token->wrapped_size, token->key_version,
                                         &data_key);
                if (r == -EXDEV) {
                        /* The wrap names another CMK: say so only if the token's CMK exists at all. */
                        _cleanup_free_ char *reason = kms_backend_error_take(b);

                        r = kms_key_get(b, token->key_id, &key);
                        if (r < 0)
                                return r;
                        return kms_backend_set_error(b, -EXDEV, "%s", strempty(reason));
                }
                if (r < 0)
                        return r;
                key = (kms_key) {
                        .id = strdup(token->key_id),
                        .alias = token->key_alias ? strdup(token->key_alias) : NULL,
                        .backend = strdup(b->name),
                        .state = KMS_KEY_ENABLED,
                };
                if (!key.id || !key.backend || (token->key_alias && !key.alias))
                        return -ENOMEM;
                goto check;
        }

        r = kms_key_get(b, token->key_id, &key);
        if (r < 0)
                return r;
        r = kms_key_state_to_errno(key.state);
        if (r == -EKEYEXPIRED)
                return kms_backend_set_error(b, r, "key %s%s%s%s is pending deletion on %s", key.id,
                                             key.alias ? " (" : "", strempty(key.alias), key.alias ? ")" : "",
                                             format_timestamp(ts, sizeof ts, key.deletion_date));
        if (r < 0)
                return kms_backend_set_error(b, r, "key %s%s%s%s is %s", key.id, key.alias ? " (" : "",
                                             strempty(key.alias), key.alias ? ")" : "",
                                             kms_key_state_to_string(key.state));

        r = kms_unwrap_versioned(b, token->key_id, volume_id, token->wrapped, token->wrapped_size, token->key_version,
                                         &data_key);
        if (r < 0)
                return r;
check:
        if (data_key->size != KMS_DATA_KEY_SIZE)
                return kms_backend_set_error(b, -EBADMSG, "unwrapped data key has %zu bytes, not %u", data_key->size,
                                             KMS_DATA_KEY_SIZE);

        if (ret_key) {
                *ret_key = key;
                key = (kms_key) {};
        }
        *ret_data_key = TAKE_PTR(data_key);
        return 0;
}

int envelope_rewrap(kms_backend *from, const evs_token *token, kms_backend *to, const kms_key *key,
                    evs_token *ret_token) {
        _cleanup_(secret_freep) secret *data_key = NULL;
        uint8_t *wrapped = NULL;
        unsigned version = 0;
        size_t size;
        int r;

        r = envelope_open(from, token, token->volume_id, NULL, &data_key);
        if (r < 0)
                return r;
        r = kms_wrap_versioned(to, key->id, token->volume_id, data_key, &wrapped, &size, &version);
        if (r < 0)
                return r;
        return fill_token(to, key, token->volume_id, wrapped, size, version, ret_token);
}
