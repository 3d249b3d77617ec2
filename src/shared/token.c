/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "crypto.h"
#include "json-util.h"
#include "kms.h"
#include "token.h"

void evs_token_done(evs_token *t) {
        if (!t)
                return;
        free(t->backend);
        free(t->key_id);
        free(t->key_alias);
        free(t->volume_id);
        free(t->wrapped);
        free(t->sealed_vk);
        *t = (evs_token) {};
}

int evs_token_copy_sealed_vk(evs_token *to, const evs_token *from) {
        uint8_t *c = NULL;

        if (from->sealed_vk) {
                c = malloc(EVS_SEALED_VK_SIZE);
                if (!c)
                        return -ENOMEM;
                memcpy(c, from->sealed_vk, EVS_SEALED_VK_SIZE);
        }
        free(to->sealed_vk);
        to->sealed_vk = c;
        return 0;
}

int volume_mapping_name(const char *id, char **ret) {
        if (!volume_label_valid(id))
                return -EINVAL;
        return asprintf(ret, EVS_MAPPING_PREFIX "%s", id) < 0 ? -ENOMEM : 0;
}

static bool key_id_valid(const char *s) {
        size_t n = s ? strlen(s) : 0;

        if (n == 0 || n > 256)
                return false;
        for (const char *p = s; *p; p++)
                if ((unsigned char) *p < 0x21 || (unsigned char) *p > 0x7e)
                        return false;
        return true;
}

int evs_token_to_json(const evs_token *t, char **ret) {
        _cleanup_(json_object_putp) json_object *o = NULL, *slots = NULL, *ctx = NULL;
        _cleanup_free_ char *b64 = NULL;
        char slot[16];
        char *s;
        int r;

        if (t->keyslot < 0 || !backend_name_valid(t->backend) || !key_id_valid(t->key_id) ||
            !volume_label_valid(t->volume_id) || (t->key_alias && !kms_alias_valid(t->key_alias)) || !t->wrapped ||
            t->wrapped_size == 0 || t->wrapped_size > KMS_WRAPPED_MAX)
                return -EINVAL;

        r = base64_encode(t->wrapped, t->wrapped_size, &b64);
        if (r < 0)
                return r;

        o = json_object_new_object();
        slots = json_object_new_array();
        ctx = json_object_new_object();
        if (!o || !slots || !ctx)
                return -ENOMEM;
        snprintf(slot, sizeof slot, "%d", t->keyslot);
        if (json_object_array_add(slots, json_object_new_string(slot)) < 0)
                return -ENOMEM;
        if ((r = json_add_string(ctx, "volume_id", t->volume_id, false)) < 0)
                return r;

        if ((r = json_add_string(o, "type", EVS_TOKEN_TYPE, false)) < 0)
                return r;
        if (json_object_object_add(o, "keyslots", TAKE_PTR(slots)) < 0)
                return -ENOMEM;
        if ((r = json_add_uint64(o, "evs_version", EVS_TOKEN_VERSION)) < 0 ||
            (r = json_add_string(o, "evs_backend", t->backend, false)) < 0 ||
            (r = json_add_string(o, "evs_key_id", t->key_id, false)) < 0 ||
            (r = json_add_string(o, "evs_key_alias", t->key_alias, false)) < 0 ||
            (r = json_add_string(o, "evs_volume_id", t->volume_id, false)) < 0)
                return r;
        if (json_object_object_add(o, "evs_context", TAKE_PTR(ctx)) < 0)
                return -ENOMEM;
        if ((r = json_add_string(o, "evs_wrapped_key", b64, false)) < 0)
                return r;
        /* Only when known: a token without it reads as "version unknown" (1 for the local backend). */
        if (t->key_version > 0 && (r = json_add_uint64(o, "evs_key_version", t->key_version)) < 0)
                return r;
        if (t->sealed_vk) {
                _cleanup_free_ char *vk64 = NULL;

                r = base64_encode(t->sealed_vk, EVS_SEALED_VK_SIZE, &vk64);
                if (r < 0)
                        return r;
                if ((r = json_add_string(o, "evs_sealed_volume_key", vk64, false)) < 0)
                        return r;
        }

        s = json_to_string_dup(o, false);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

#define FAIL(reason)                       \
        do {                               \
                if (ret_reason)            \
                        *ret_reason = (reason); \
                return -EBADMSG;           \
        } while (0)

static int get_str(json_object *o, const char *key, bool optional, const char **ret, const char **ret_reason) {
        int r = json_get_string(o, key, false, ret);

        if (r == -ENODATA && optional) {
                *ret = NULL;
                return 0;
        }
        return r;
}

int evs_token_from_json(const char *json, evs_token *ret, const char **ret_reason) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        _cleanup_(evs_token_done) evs_token t = {};
        json_object *slots, *ctx, *slot;
        const char *type, *backend, *key_id, *alias, *volume_id, *ctx_volume, *wrapped, *slot_s, *sealed;
        uint64_t version, kv;
        char *end;
        long k;
        int r;

        if (!json)
                FAIL("no token JSON");
        r = json_parse(json, EVS_TOKEN_JSON_MAX, &o);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || !json_object_is_type(o, json_type_object))
                FAIL("token is not a JSON object");

        if (get_str(o, "type", false, &type, ret_reason) < 0)
                FAIL("missing or invalid type");
        if (!streq(type, EVS_TOKEN_TYPE))
                FAIL("token type is not evs-kms");

        r = json_get_uint64(o, "evs_version", false, &version);
        if (r == -ENODATA)
                FAIL("missing evs_version");
        if (r < 0)
                FAIL("evs_version is not a number");
        if (version != EVS_TOKEN_VERSION)
                FAIL("unsupported evs_version");

        if (!json_object_object_get_ex(o, "keyslots", &slots))
                FAIL("missing keyslots");
        if (!json_object_is_type(slots, json_type_array) || json_object_array_length(slots) != 1)
                FAIL("keyslots must list exactly one keyslot");
        slot = json_object_array_get_idx(slots, 0);
        if (!json_object_is_type(slot, json_type_string))
                FAIL("keyslots entry is not a string");
        slot_s = json_object_get_string(slot);
        errno = 0;
        k = strtol(slot_s, &end, 10);
        if (errno != 0 || end == slot_s || *end || k < 0 || k > 31)
                FAIL("keyslots entry is not a keyslot number");

        if (get_str(o, "evs_backend", false, &backend, ret_reason) < 0)
                FAIL("missing or invalid evs_backend");
        if (!backend_name_valid(backend))
                FAIL("evs_backend is not a valid backend name");
        if (get_str(o, "evs_key_id", false, &key_id, ret_reason) < 0)
                FAIL("missing or invalid evs_key_id");
        if (!key_id_valid(key_id))
                FAIL("evs_key_id is not a valid key id");
        if (get_str(o, "evs_key_alias", true, &alias, ret_reason) < 0)
                FAIL("evs_key_alias is not a string");
        if (alias && !kms_alias_valid(alias))
                FAIL("evs_key_alias is not a valid alias");
        if (get_str(o, "evs_volume_id", false, &volume_id, ret_reason) < 0)
                FAIL("missing or invalid evs_volume_id");
        if (!volume_label_valid(volume_id)) /* what older versions wrote still opens */
                FAIL("evs_volume_id is not a valid volume id");

        if (!json_object_object_get_ex(o, "evs_context", &ctx))
                FAIL("missing evs_context");
        if (!json_object_is_type(ctx, json_type_object) || json_object_object_length(ctx) != 1 ||
            json_get_string(ctx, "volume_id", false, &ctx_volume) < 0)
                FAIL("evs_context must be {\"volume_id\": ...}");
        if (!streq(ctx_volume, volume_id))
                FAIL("evs_context does not match evs_volume_id");

        if (get_str(o, "evs_wrapped_key", false, &wrapped, ret_reason) < 0)
                FAIL("missing or invalid evs_wrapped_key");
        r = base64_decode(wrapped, &t.wrapped, &t.wrapped_size);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                FAIL("evs_wrapped_key is not base64");
        if (t.wrapped_size == 0)
                FAIL("evs_wrapped_key is empty");
        if (t.wrapped_size > KMS_WRAPPED_MAX)
                FAIL("evs_wrapped_key is too long");
        r = json_get_uint64(o, "evs_key_version", false, &kv);
        if (r == -ENODATA)
                kv = 0;
        else if (r < 0 || kv == 0 || kv > EVS_TOKEN_KEY_VERSION_MAX)
                FAIL("evs_key_version is not a number from 1 to 4294967295");
        t.key_version = (unsigned) kv;
        if (get_str(o, "evs_sealed_volume_key", true, &sealed, ret_reason) < 0)
                FAIL("evs_sealed_volume_key is not a string");
        if (sealed) {
                size_t n;

                r = base64_decode(sealed, &t.sealed_vk, &n);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        FAIL("evs_sealed_volume_key is not base64");
                if (n != EVS_SEALED_VK_SIZE)
                        FAIL("evs_sealed_volume_key is not a sealed 512-bit key");
        }

        t.keyslot = (int) k;
        t.backend = strdup(backend);
        t.key_id = strdup(key_id);
        t.key_alias = alias ? strdup(alias) : NULL;
        t.volume_id = strdup(volume_id);
        if (!t.backend || !t.key_id || (alias && !t.key_alias) || !t.volume_id)
                return -ENOMEM;

        *ret = t;
        t = (evs_token) {};
        return 0;
}
