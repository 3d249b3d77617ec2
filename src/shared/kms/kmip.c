/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The KMIP backend: CMKs are AES-256 symmetric keys on a KMIP server, spoken to in KMIP 1.4 over
 * TLS 1.2+ with a client certificate. The key material never leaves the server: wrap and unwrap
 * are the server's Encrypt and Decrypt operations.
 *
 * Configuration, in a `[Backend NAME]` section with `Type=kmip`:
 *   Host=             server name or address (default 127.0.0.1)
 *   Port=             TCP port, 1-65535 (default 5696)
 *   CAFile=           PEM file of the CA(s) the server certificate must chain to (required)
 *   CertificateFile=  PEM client certificate, optionally followed by its chain (required; the
 *                     server usually wants extendedKeyUsage=clientAuth)
 *   KeyFile=          PEM private key of the client certificate, unencrypted (required)
 *   ServerName=       name (or IP address) the server certificate must carry (default: Host)
 *   Timeout=          upper bound for one whole operation, reconnection included: seconds
 *                     ("10", "2.5", "10s") or milliseconds ("500ms"); 0.1s-3600s (default 10)
 * Paths must be absolute. open() checks every value and that the files load, naming FILE:LINE.
 *
 * Operations:
 *   create    Create (Symmetric Key, AES, 256 bits, usage mask Encrypt|Decrypt, Name = the alias,
 *             Application Specific Information {namespace "evs-cryptd-description", data = the
 *             description} when a description is given and the server accepts it; otherwise the
 *             description is dropped) then Activate. Aliases are unique per server: create refuses
 *             a taken one (-EEXIST) and, when two hosts created the same alias at the same time,
 *             the key with the earlier Initial Date (then the smaller id) wins and the other one is
 *             revoked and destroyed by its creator, which returns -EEXIST (see
 *             settle_alias_race(): never two keys, at worst none).
 *   get       by unique identifier, or by alias (Locate by Name); an alias that names several
 *             keys is an error (-EINVAL: the reference is ambiguous) that lists them.
 *   list      Locate (Object Type = Symmetric Key) then Get Attributes for each, batched.
 *   disable   Revoke, reason Cessation Of Operation. Idempotent.
 *   enable    Activate for a Pre-Active key; no-op for an Active one. A revoked key cannot become
 *             Active again in KMIP: -EOPNOTSUPP.
 *   schedule/cancel deletion: -EOPNOTSUPP (KMIP has no scheduled deletion; destroy keys with the
 *             KMIP server's own tools). No state is emulated locally.
 *   wrap      Encrypt with AES-GCM with the CMK's newest version: a fresh 12-byte nonce
 *             (IV/Counter/Nonce), 16-byte tag, the context (volume id) as Authenticated Encryption
 *             Additional Data. Returns the version number used.
 *   unwrap    Decrypt with the same parameters, with the version the wrapped key names; a tag or AAD
 *             mismatch is -EBADMSG.
 *   rotate    ReKey (see Rotation) where the server lists ReKey in Query Operations; otherwise
 *             -EOPNOTSUPP "rotation is not supported by backend NAME (KMIP server has no ReKey)".
 *             Automatic rotation (set-rotation) is not offered: -EOPNOTSUPP.
 *
 * Rotation. ReKey of key K makes a new key K' (fresh material, K's attributes; K's Name moves to K')
 * and links them: K gets a Link of type Replacement Object Link to K', K' one of type Replaced
 * Object Link to K (KMIP 1.4 section 4.4). A CMK is the chain its first key starts: the CMK's id is
 * the id of its first key (the one that replaced no other) and stays its id for good, version 1 is
 * that key, version N+1 the replacement of version N, the newest version is the end of the chain.
 * Any version's id or the alias (carried by the newest) resolves to the CMK. Rotation sends ReKey
 * for the newest version with Offset 0 (the replacement is Active at once; it is activated when a
 * server left it Pre-Active), then checks the links lead to the new key. Wraps use the newest
 * version and the wrapped key names that version's KMIP id (the format below, unchanged); unwrap
 * follows the links from the CMK's id and accepts only a version of that CMK (-EXDEV otherwise).
 * `list` shows CMKs only, not their later versions. State: the CMK's state is its newest
 * version's; disable revokes every version that is Active (newest first), so the server refuses
 * all of them, and unwrap refuses every version while the newest is not Active; enable activates
 * a Pre-Active newest version. A version the server no longer has breaks the chain: -ENOENT
 * naming it. At most KMIP_VERSIONS_MAX versions are followed.
 *
 * State mapping (KMIP State attribute of the newest version -> kms_key_state):
 *   Pre-Active                          -> disabled (created but not activated yet)
 *   Active                              -> enabled
 *   Deactivated, Compromised            -> disabled
 *   Destroyed, Destroyed Compromised    -> destroyed
 *   (pending-deletion never occurs; unavailable is the caller's view of -EHOSTDOWN)
 *
 * Errors: Item Not Found -> -ENOENT; Permission Denied is resolved with Get Attributes: a key that
 * is not Active gives its state's errno (-EKEYREVOKED, -ENOKEY), otherwise -EACCES (the server's
 * access policy refuses this client); General Failure or Cryptographic Failure on Decrypt ->
 * -EBADMSG; Authentication Not Successful, connection, TLS and timeout failures -> -EHOSTDOWN;
 * Operation/Feature Not Supported -> -EOPNOTSUPP; Illegal Operation -> -EKEYREJECTED; a reply
 * that does not decode or does not answer the request -> -EPROTO; other refusals -> -EIO. The
 * server's own message, sanitised, is part of the reason.
 *
 * The wrapped key is "EVK1", one byte N, the N-byte key id, the 12-byte nonce, the 16-byte tag,
 * then the ciphertext. The connection is kept open between calls and reopened once, within the
 * same Timeout, when the server dropped it. Like the other backends, an instance is used by one
 * thread at a time.
 *
 * This file: the key verbs, wrap/unwrap, rotation, the ops table. The configuration is in kmip-config.c,
 * requests, answers and payloads in kmip-call.c, attributes and the state mapping in kmip-attrs.c;
 * kmip-internal.h joins them. */

#include "kmip-internal.h"

static void start_operation(kmip_backend *k) {
        k->deadline = now_monotonic() + k->timeout;
}

static int kmip_key_get(kms_backend *b, const char *ref, kms_key *ret) {
        kmip_backend *k = KMIP(b);
        _cleanup_(kmip_chain_done) kmip_chain c = {};
        int r;

        start_operation(k);
        r = kmip_chain_resolve(k, ref, &c);
        if (r < 0)
                return r;
        return kmip_chain_key(&c, ret);
}

static const kmip_key_info *find_info(const kmip_key_info *infos, size_t n, const char *id) {
        for (size_t i = 0; i < n; i++)
                if (streq(infos[i].key.id, id))
                        return &infos[i];
        return NULL;
}

/* Every symmetric key is listed by Locate, every version of every CMK among them: the CMKs are the keys that
 * replaced no other listed key, each with as many versions as the listed keys its Replacement Object Links
 * lead to. */
static int kmip_key_list(kms_backend *b, kms_key **ret, size_t *ret_n) {
        kmip_backend *k = KMIP(b);
        kmip_key_info *infos;
        kms_key *keys;
        char **ids = NULL;
        size_t n = 0, m = 0;
        int r;

        start_operation(k);
        r = kmip_locate(k, NULL, &ids, &n);
        if (r < 0)
                return r;
        if (n == 0) {
                free(ids);
                *ret = NULL;
                *ret_n = 0;
                return 0;
        }
        infos = calloc(n, sizeof(kmip_key_info));
        if (!infos) {
                kmip_strv_free_n(ids, n);
                return -ENOMEM;
        }
        r = kmip_get_key_infos(k, ids, n, infos);
        kmip_strv_free_n(ids, n);
        if (r < 0) {
                free(infos);
                return r;
        }
        n = (size_t) r;
        if (n > 1)
                qsort(infos, n, sizeof(kmip_key_info), kmip_cmp_key);

        keys = calloc(MAX(n, (size_t) 1), sizeof(kms_key));
        if (!keys) {
                kmip_key_infos_free(infos, n);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                const kmip_key_info *newest = &infos[i], *next;
                size_t versions = 1;

                if (infos[i].replaced && find_info(infos, n, infos[i].replaced))
                        continue; /* a later version of a listed CMK */
                while (newest->replacement && versions < MIN(n, (size_t) KMIP_VERSIONS_MAX) &&
                       (next = find_info(infos, n, newest->replacement))) {
                        newest = next;
                        versions++;
                }
                r = kmip_cmk_key(&infos[i], newest, versions, &keys[m]);
                if (r < 0) {
                        kms_key_array_free(keys, m);
                        kmip_key_infos_free(infos, n);
                        return r;
                }
                m++;
        }
        kmip_key_infos_free(infos, n);
        *ret = keys;
        *ret_n = m;
        return 0;
}

/* Best effort: takes a key we just created out of service again. */
static void discard_key(kmip_backend *k, const char *id, bool active) {
        _cleanup_free_ char *saved = kms_backend_error_take(&k->base);

        if (active)
                (void) kmip_call_one(k, OP_REVOKE, true, kmip_build_revoke, id, NULL, NULL);
        (void) kmip_call_one(k, OP_DESTROY, true, kmip_build_unique_id, id, NULL, NULL);
        /* Keep the reason of the failure that got us here. */
        kms_backend_error_put(&k->base, TAKE_PTR(saved));
}

/* After creating @mine under @alias: another host may have done the same meanwhile. The oldest key
 * (Initial Date, then id) wins and the others yield. The oldest cannot know whether the others
 * saw it (a key created after it looked would not), so when others are still there it waits a
 * moment for them to yield and then yields itself if they did not: a race can end with no key
 * (the next use creates one), never with two. 0 to keep @mine, -EEXIST to give it up. */
static int settle_alias_race(kmip_backend *k, const char *alias, const kmip_key_info *mine) {
        for (unsigned round = 0;; round++) {
                kmip_key_info *infos = NULL;
                const char *other = NULL;
                bool oldest = true;
                size_t n = 0;
                usec_t now, wait;
                int r;

                r = kmip_find_by_alias(k, alias, &infos, &n);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < n; i++) {
                        if (streq(infos[i].key.id, mine->key.id) || infos[i].key.state == KMS_KEY_DESTROYED)
                                continue;
                        if (!other)
                                other = infos[i].key.id;
                        if (kmip_cmp_key(&infos[i], mine) < 0)
                                oldest = false;
                }
                r = 0;
                if (other && (!oldest || round > 0))
                        r = kms_backend_set_error(&k->base, -EEXIST, "alias %s was created concurrently as key %s",
                                                  alias, other);
                kmip_key_infos_free(infos, n);
                if (!other || r < 0)
                        return r;

                now = now_monotonic();
                wait = now < k->deadline ? MIN((k->deadline - now) / 3, USEC_PER_SEC / 2) : 0;
                (void) usleep((useconds_t) wait);
        }
}

static int kmip_key_create(kms_backend *b, const char *alias, const char *description, kms_key *ret) {
        kmip_backend *k = KMIP(b);
        _cleanup_(kmip_tree_freep) kmip_tree *tree = NULL;
        _cleanup_free_ char *id = NULL;
        struct create_args args = { .alias = alias, .description = description };
        const kmip_item *payload;
        kmip_result *res = NULL;
        kmip_key_info info = {};
        kmip_writer w = {};
        int r;

        start_operation(k);

        if (alias) {
                char **ids = NULL;
                size_t n = 0;

                r = kmip_locate(k, alias, &ids, &n);
                if (r < 0)
                        return r;
                if (n > 0)
                        r = kms_backend_set_error(b, -EEXIST, "alias %s is already taken (key %s)", alias, ids[0]);
                kmip_strv_free_n(ids, n);
                if (r < 0)
                        return r;
        }

        /* Create is not idempotent: never resent after it may have reached the server. */
        r = kmip_call_one(k, OP_CREATE, false, kmip_build_create, &args, &tree, &payload);
        if (r < 0 && description &&
            IN_SET3(k->last_reason, REASON_APPLICATION_NAMESPACE_NOT_SUPPORTED, REASON_INVALID_FIELD,
                    REASON_FEATURE_NOT_SUPPORTED)) {
                /* The server refused (so did not create anything), perhaps because of our
                 * Application Specific Information: try again without the description. */
                args.description = NULL;
                r = kmip_call_one(k, OP_CREATE, false, kmip_build_create, &args, &tree, &payload);
        }
        if (r < 0)
                return r;
        r = kmip_item_get_text(payload, KMIP_TAG_UNIQUE_IDENTIFIER, &id);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || isempty(id))
                return kmip_protocol_error(k, "Create without unique identifier");
        tree = kmip_tree_free(tree);

        /* Activate, then read back what the server recorded, in one round trip. */
        kmip_request_begin(&w, 2);
        kmip_item_begin(&w, OP_ACTIVATE, 0, 2);
        kmip_build_unique_id(&w, id);
        kmip_item_end(&w);
        kmip_item_begin(&w, OP_GET_ATTRIBUTES, 1, 2);
        kmip_build_get_attributes(&w, id);
        kmip_item_end(&w);
        kmip_writer_end(&w);
        r = kmip_call(k, &w, 2, false, &tree, &res);
        if (r >= 0) {
                r = kmip_result_check(k, OP_ACTIVATE, &res[0]);
                if (r >= 0)
                        r = kmip_result_check(k, OP_GET_ATTRIBUTES, &res[1]);
                if (r >= 0 && !res[1].payload)
                        r = kmip_protocol_error(k, "no response payload");
                if (r >= 0)
                        r = kmip_parse_key_info(k, res[1].payload, &info);
                kmip_results_free(res, 2);
        }
        if (r < 0) {
                if (r != -EHOSTDOWN)
                        discard_key(k, id, false);
                return r;
        }

        if (alias) {
                r = settle_alias_race(k, alias, &info);
                if (r == -EEXIST)
                        discard_key(k, info.key.id, true);
                if (r < 0) {
                        kmip_key_info_done(&info);
                        return r;
                }
        }

        *ret = info.key;
        info.key = (kms_key) {};
        kmip_key_info_done(&info);
        return 0;
}

/* The CMK's state is its newest version's. Disable revokes every version still Active, the newest first, so
 * that the server itself refuses all of them; enable activates a Pre-Active newest version. */
static int kmip_key_set_enabled(kms_backend *b, const char *id, bool enabled) {
        kmip_backend *k = KMIP(b);
        _cleanup_(kmip_chain_done) kmip_chain c = {};
        const kmip_key_info *newest;
        uint32_t state;
        int r;

        start_operation(k);
        r = kmip_chain_get(k, id, &c);
        if (r < 0)
                return r;
        newest = kmip_chain_newest(&c);
        state = newest->kmip_state;

        if (state == STATE_DESTROYED || state == STATE_DESTROYED_COMPROMISED)
                return kms_backend_set_error(b, -EKEYREJECTED, "cannot %s key %s: it is destroyed (KMIP state %s)",
                                             enabled ? "enable" : "disable", id, kmip_state_to_string(state));
        if (enabled) {
                if (state == STATE_ACTIVE)
                        return 0;
                if (state != STATE_PRE_ACTIVE)
                        return kms_backend_set_error(b, -EOPNOTSUPP,
                                                     "cannot enable key %s: it was revoked (KMIP state %s) and KMIP "
                                                     "has no way back to Active; create a new key",
                                                     id, kmip_state_to_string(state));
                return kmip_call_one(k, OP_ACTIVATE, false, kmip_build_unique_id, newest->key.id, NULL, NULL);
        }
        if (c.n == 1) {
                if (state != STATE_ACTIVE)
                        return 0; /* Pre-Active, Deactivated and Compromised keys are already unusable */
                return kmip_call_one(k, OP_REVOKE, true, kmip_build_revoke, id, NULL, NULL);
        }
        for (size_t i = c.n; i > 0; i--) {
                kmip_key_info info = {};

                if (i == c.n)
                        state = c.newest.kmip_state;
                else if (i == 1)
                        state = c.first.kmip_state;
                else {
                        r = kmip_get_key_info(k, c.ids[i - 1], &info);
                        if (r < 0)
                                return r;
                        state = info.kmip_state;
                        kmip_key_info_done(&info);
                }
                if (state != STATE_ACTIVE)
                        continue;
                r = kmip_call_one(k, OP_REVOKE, true, kmip_build_revoke, c.ids[i - 1], NULL, NULL);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int kmip_key_schedule_deletion(kms_backend *b, const char *id, unsigned days, kms_key *ret) {
        return kms_backend_set_error(b, -EOPNOTSUPP,
                                     "KMIP has no scheduled key deletion: disable the key, and destroy it with the "
                                     "KMIP server's tools once no volume needs it");
}

static int kmip_key_cancel_deletion(kms_backend *b, const char *id) {
        return kms_backend_set_error(b, -EOPNOTSUPP, "KMIP has no scheduled key deletion to cancel");
}

/* After Permission Denied on @id: the key's state explains it, or the server's policy does. */
static int explain_denied(kmip_backend *k, const char *id, const char *what) {
        _cleanup_free_ char *saved = kms_backend_error_take(&k->base);
        kmip_key_info info = {};
        int r;

        r = kmip_get_key_info(k, id, &info);
        if (r < 0) {
                if (r != -EACCES)
                        return r;
                kms_backend_error_put(&k->base, TAKE_PTR(saved));
                return -EACCES;
        }
        r = kms_key_state_to_errno(info.key.state);
        if (r < 0)
                r = kms_backend_set_error(&k->base, r, "cannot %s with key %s: it is %s (KMIP state %s)", what, id,
                                          kms_key_state_to_string(info.key.state),
                                          kmip_state_to_string(info.kmip_state));
        else {
                kms_backend_error_put(&k->base, TAKE_PTR(saved));
                r = -EACCES;
        }
        kmip_key_info_done(&info);
        return r;
}

static int check_id(kmip_backend *k, const char *id) {
        size_t n = strlen(id);

        if (n == 0 || n > KMIP_ID_MAX)
                return kms_backend_set_error(&k->base, -EINVAL, "not a KMIP key id: %s", id);
        return 0;
}

/* After the chain of CMK @id showed its newest version is not Active: refuse every version, like the server
 * refuses the newest (the KMIP server itself does not know the versions belong together). */
static int refuse_not_active(kmip_backend *k, const char *id, const kmip_chain *c, const char *what) {
        const kmip_key_info *newest = kmip_chain_newest(c);
        int r = kms_key_state_to_errno(newest->key.state);

        if (c->n == 1)
                return kms_backend_set_error(&k->base, r < 0 ? r : -EKEYREVOKED, "cannot %s with key %s: it is %s (KMIP state %s)",
                                             what, id, kms_key_state_to_string(newest->key.state),
                                             kmip_state_to_string(newest->kmip_state));
        return kms_backend_set_error(&k->base, r < 0 ? r : -EKEYREVOKED,
                                     "cannot %s with key %s: it is %s (its newest version, KMIP key %s, is in KMIP "
                                     "state %s)", what, id, kms_key_state_to_string(newest->key.state),
                                     newest->key.id, kmip_state_to_string(newest->kmip_state));
}

/* Wraps with the newest version of the CMK; the wrapped key names that version's KMIP id. */
static int kmip_wrap(kms_backend *b, const char *cmk, const char *context, const secret *plain, uint8_t **ret,
                     size_t *ret_size, unsigned *ret_version) {
        kmip_backend *k = KMIP(b);
        _cleanup_(kmip_chain_done) kmip_chain c = {};
        _cleanup_(kmip_tree_freep) kmip_tree *tree = NULL;
        const char *id;
        uint8_t nonce[GCM_NONCE_SIZE], *out;
        const uint8_t *ct, *tag, *iv;
        size_t ct_size, tag_size, iv_size, id_size, size;
        const kmip_item *payload;
        int r;

        r = check_id(k, cmk);
        if (r < 0)
                return r;
        if (!context || !plain || plain->size == 0)
                return kms_backend_set_error(b, -EINVAL, "nothing to wrap");

        start_operation(k);
        r = kmip_chain_get(k, cmk, &c);
        if (r < 0)
                return r;
        id = kmip_chain_newest(&c)->key.id;
        id_size = strlen(id);
        size = 4 + 1 + id_size + GCM_NONCE_SIZE + GCM_TAG_SIZE + plain->size;
        if (size > KMS_WRAPPED_MAX)
                return kms_backend_set_error(b, -EINVAL, "key of %zu bytes is too large to wrap", plain->size);

        r = crypto_random(nonce, sizeof nonce);
        if (r < 0)
                return r;

        r = kmip_call_one(k, OP_ENCRYPT, true, kmip_build_encrypt,
                          &(struct crypt_args) { .id = id, .context = context, .data = plain->data, .size = plain->size,
                                                 .nonce = nonce },
                          &tree, &payload);
        if (r == -EACCES)
                return explain_denied(k, id, "wrap");
        if (r == -ENOENT)
                return kms_backend_set_error(b, r, "no key %s on KMIP server %s:%u", id, k->host, k->port);
        if (r < 0)
                return r;

        if (kmip_item_get_bytes(payload, KMIP_TAG_DATA, &ct, &ct_size) < 0 || ct_size != plain->size)
                return kmip_protocol_error(k, "Encrypt returned no ciphertext of the right size");
        r = kmip_item_get_bytes(payload, KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG, &tag, &tag_size);
        if (r < 0 || tag_size != GCM_TAG_SIZE)
                return kmip_protocol_error(k, "Encrypt returned no 16-byte authentication tag");
        r = kmip_item_get_bytes(payload, KMIP_TAG_IV_COUNTER_NONCE, &iv, &iv_size);
        if (r == -EPROTO || (r >= 0 && (iv_size != GCM_NONCE_SIZE || memcmp(iv, nonce, GCM_NONCE_SIZE) != 0)))
                return kmip_protocol_error(k, "Encrypt used another nonce than ours");

        out = malloc(size);
        if (!out)
                return -ENOMEM;
        memcpy(out, WRAP_MAGIC, 4);
        out[4] = (uint8_t) id_size;
        memcpy(out + 5, id, id_size);
        memcpy(out + 5 + id_size, nonce, GCM_NONCE_SIZE);
        memcpy(out + 5 + id_size + GCM_NONCE_SIZE, tag, GCM_TAG_SIZE);
        memcpy(out + 5 + id_size + GCM_NONCE_SIZE + GCM_TAG_SIZE, ct, ct_size);
        *ret = out;
        *ret_size = size;
        if (ret_version)
                *ret_version = (unsigned) c.n;
        return 0;
}

/* Unwraps with the version the wrapped key names, which must be a version of the CMK: a key never rotated is its
 * only version. Any version is refused when the CMK's newest is not Active. */
static int kmip_unwrap(kms_backend *b, const char *cmk, const char *context, const uint8_t *wrapped, size_t size,
                       secret **ret) {
        kmip_backend *k = KMIP(b);
        _cleanup_(kmip_chain_done) kmip_chain c = {};
        _cleanup_(kmip_tree_freep) kmip_tree *tree = NULL;
        _cleanup_free_ char *id = NULL;
        const uint8_t *plain, *p;
        size_t plain_size, id_size, ct_size;
        const kmip_item *payload;
        struct crypt_args args;
        kmip_result *res = NULL;
        size_t version = 0;
        bool batched;
        int r;

        r = check_id(k, cmk);
        if (r < 0)
                return r;
        if (!context)
                return kms_backend_set_error(b, -EINVAL, "no context to unwrap with");
        if (size < 5 || memcmp(wrapped, WRAP_MAGIC, 4) != 0)
                return kms_backend_set_error(b, -EBADMSG, "wrapped key is not in the KMIP backend's format");
        id_size = wrapped[4];
        if (id_size == 0 || size <= 5 + id_size + GCM_NONCE_SIZE + GCM_TAG_SIZE)
                return kms_backend_set_error(b, -EBADMSG, "wrapped key is truncated");
        id = strndup((const char *) wrapped + 5, id_size);
        if (!id)
                return -ENOMEM;
        if (strlen(id) != id_size)
                return kms_backend_set_error(b, -EBADMSG, "wrapped key names no valid KMIP key id");
        p = wrapped + 5 + id_size;
        ct_size = size - 5 - id_size - GCM_NONCE_SIZE - GCM_TAG_SIZE;
        batched = streq(id, cmk);

        args = (struct crypt_args) { .id = id, .context = context, .data = p + GCM_NONCE_SIZE + GCM_TAG_SIZE,
                                     .size = ct_size, .nonce = p, .tag = p + GCM_NONCE_SIZE };

        start_operation(k);
        if (batched) {
                /* The wrapped key names the CMK's first key (a key never rotated, or version 1): its
                 * attributes and the Decrypt in one round trip. The plaintext counts only once the links
                 * said the CMK's newest version is Active. */
                kmip_key_info info = {};
                kmip_writer w = {};

                kmip_request_begin(&w, 2);
                kmip_item_begin(&w, OP_GET_ATTRIBUTES, 0, 2);
                kmip_build_get_attributes(&w, cmk);
                kmip_item_end(&w);
                kmip_item_begin(&w, OP_DECRYPT, 1, 2);
                kmip_build_decrypt(&w, &args);
                kmip_item_end(&w);
                kmip_writer_end(&w);
                r = kmip_call(k, &w, 2, true, &tree, &res);
                if (r < 0)
                        return r;
                r = kmip_result_check(k, OP_GET_ATTRIBUTES, &res[0]);
                if (r >= 0 && !res[0].payload)
                        r = kmip_protocol_error(k, "no response payload");
                if (r >= 0)
                        r = kmip_parse_key_info(k, res[0].payload, &info);
                if (r == -ENOENT)
                        r = kms_backend_set_error(b, r, "no key %s on KMIP server %s:%u", cmk, k->host, k->port);
                if (r >= 0)
                        r = kmip_chain_load(k, &info, &c);
                if (r < 0) {
                        kmip_results_free(res, 2);
                        return r;
                }
        } else {
                r = kmip_chain_get(k, cmk, &c);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < c.n && version == 0; i++)
                if (streq(c.ids[i], id))
                        version = i + 1;
        if (version == 0)
                r = kms_backend_set_error(b, -EXDEV, "wrapped key belongs to KMIP key %s, not %s%s", id, cmk,
                                          c.n > 1 ? " or one of its versions" : "");
        else if (kmip_chain_newest(&c)->kmip_state != STATE_ACTIVE)
                r = refuse_not_active(k, cmk, &c, "unwrap");
        if (r < 0) {
                if (res)
                        kmip_results_free(res, 2);
                return r;
        }

        if (batched) {
                r = kmip_result_check(k, OP_DECRYPT, &res[1]);
                if (r >= 0 && !res[1].payload)
                        r = kmip_protocol_error(k, "no response payload");
                payload = res[1].payload;
                kmip_results_free(res, 2);
        } else
                r = kmip_call_one(k, OP_DECRYPT, true, kmip_build_decrypt, &args, &tree, &payload);
        if (r == -EACCES)
                return explain_denied(k, id, "unwrap");
        if (r == -ENOENT)
                return kms_backend_set_error(b, r, "no key %s on KMIP server %s:%u", id, k->host, k->port);
        if (r < 0)
                return r;

        if (kmip_item_get_bytes(payload, KMIP_TAG_DATA, &plain, &plain_size) < 0 || plain_size != ct_size)
                return kmip_protocol_error(k, "Decrypt returned no plaintext of the right size");
        return secret_new_copy(plain, plain_size, ret);
}

/* ---- rotation ---- */

#define KMIP_TAG_QUERY_FUNCTION 0x420074U
#define QUERY_OPERATIONS 1U

static void build_query_operations(kmip_writer *w, const void *u) {
        kmip_writer_enum(w, KMIP_TAG_QUERY_FUNCTION, QUERY_OPERATIONS);
}

/* Whether the server lists ReKey among its operations (KMIP Query, Query Operations). */
static int server_offers_rekey(kmip_backend *k) {
        _cleanup_(kmip_tree_freep) kmip_tree *tree = NULL;
        const kmip_item *payload = NULL, *op = NULL;
        int r;

        r = kmip_call_one(k, OP_QUERY, true, build_query_operations, NULL, &tree, &payload);
        if (r < 0)
                return r;
        while ((op = kmip_item_next(payload, op, KMIP_TAG_OPERATION)))
                if (op->type == KMIP_TYPE_ENUMERATION && op->enumeration == OP_REKEY)
                        return 1;
        return 0;
}

/* A rotation is ReKey of the newest version (see "Rotation" at the top). Where the server does not offer ReKey
 * (plain PyKMIP), rotation is refused with that reason: it is never emulated with a second, unlinked key. */
static int kmip_key_rotate(kms_backend *b, const char *id, kms_key *ret) {
        kmip_backend *k = KMIP(b);
        _cleanup_(kmip_chain_done) kmip_chain c = {}, after = {};
        _cleanup_(kmip_tree_freep) kmip_tree *tree = NULL;
        _cleanup_free_ char *new_id = NULL, *old_id = NULL;
        const kmip_item *payload;
        kmip_key_info info = {};
        int r;

        start_operation(k);
        r = server_offers_rekey(k);
        if (r < 0)
                return r;
        if (r == 0)
                return kms_backend_set_error(b, -EOPNOTSUPP,
                                             "rotation is not supported by backend %s (KMIP server has no ReKey)",
                                             b->name);

        r = kmip_chain_get(k, id, &c);
        if (r < 0)
                return r;
        if (kmip_chain_newest(&c)->kmip_state != STATE_ACTIVE)
                return refuse_not_active(k, id, &c, "rotate");
        if (c.n >= KMIP_VERSIONS_MAX)
                return kms_backend_set_error(b, -EKEYREJECTED, "key %s has %zu versions, the most evs-cryptd follows", id,
                                             c.n);
        old_id = strdup(kmip_chain_newest(&c)->key.id);
        if (!old_id)
                return -ENOMEM;

        /* ReKey creates a key: never resent after it may have reached the server. */
        r = kmip_call_one(k, OP_REKEY, false, kmip_build_rekey, old_id, &tree, &payload);
        if (r == -EACCES)
                return explain_denied(k, old_id, "rotate");
        if (r < 0)
                return r;
        r = kmip_item_get_text(payload, KMIP_TAG_UNIQUE_IDENTIFIER, &new_id);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || isempty(new_id) || strlen(new_id) > KMIP_ID_MAX)
                return kmip_protocol_error(k, "ReKey without a valid unique identifier");
        tree = kmip_tree_free(tree);

        /* Offset 0 makes the replacement Active at once; a server that ignored it leaves it Pre-Active. */
        r = kmip_get_key_info(k, new_id, &info);
        if (r < 0)
                return r;
        if (info.kmip_state == STATE_PRE_ACTIVE)
                r = kmip_call_one(k, OP_ACTIVATE, false, kmip_build_unique_id, new_id, NULL, NULL);
        kmip_key_info_done(&info);
        if (r < 0)
                return r;

        /* The server links the keys both ways (KMIP 1.4 section 4.4): the chain now ends at the new key. */
        r = kmip_chain_get(k, id, &after);
        if (r < 0)
                return r;
        if (!streq(kmip_chain_newest(&after)->key.id, new_id))
                return kms_backend_set_error(b, -EPROTO,
                                             "KMIP server %s:%u made key %s by ReKey of key %s but did not link them "
                                             "(no Replacement Object Link): rotation of key %s cannot be followed",
                                             k->host, k->port, new_id, old_id, id);
        if (!ret)
                return 0;
        return kmip_chain_key(&after, ret);
}

const kms_backend_ops kms_kmip_ops = {
        .type = "kmip",
        .thread_safe = false, /* one TLS connection per instance */
        .unwrap_checks_state = true,
        .open = kmip_open,
        .free = kmip_free,
        .key_create = kmip_key_create,
        .key_list = kmip_key_list,
        .key_get = kmip_key_get,
        .key_set_enabled = kmip_key_set_enabled,
        .key_schedule_deletion = kmip_key_schedule_deletion,
        .key_cancel_deletion = kmip_key_cancel_deletion,
        .wrap_versioned = kmip_wrap,
        .unwrap = kmip_unwrap,
        .key_rotate = kmip_key_rotate,
};
