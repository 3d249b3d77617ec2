/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The PKCS#11 backend: CMKs are AES-256 secret keys inside an HSM token, reached through any
 * PKCS#11 module loaded with dlopen(). Wrap and unwrap run inside the token (CKM_AES_GCM).
 *
 * Configuration ([Backend NAME], Type=pkcs11):
 *   Module=PATH      the PKCS#11 module (absolute path), required
 *   TokenLabel=L     the token, chosen by label (never by slot index), required
 *   PinFile=P        the user PIN: an absolute path of a file readable only by its owner, or a bare
 *                    credential name looked up in $CREDENTIALS_DIRECTORY; required
 *
 * Keys: CKO_SECRET_KEY/CKK_AES objects with a non-empty CKA_ID. A key's id is the hex of its CKA_ID
 * (created keys get 16 random bytes), its alias is CKA_LABEL. Created keys are token objects,
 * private, sensitive, non-extractable, CKA_ENCRYPT and CKA_DECRYPT true, CKA_WRAP/CKA_UNWRAP false.
 *
 * State mapping: CKA_ENCRYPT and CKA_DECRYPT both true -> enabled, otherwise disabled. Disable sets
 * both false, so the token itself refuses the key (CKR_KEY_FUNCTION_NOT_PERMITTED). PKCS#11 has no
 * scheduled deletion: those verbs are -EOPNOTSUPP (never emulated locally). A key removed from the
 * token is simply not found. No description and no creation time are kept.
 *
 * Wrapped format (all binary):
 *   "EVP1" | version 0x01 | id length (1 byte) | CKA_ID | IV (12) | ciphertext || tag (16)
 * AES-GCM with a 128-bit tag; the AAD is the header (magic up to the end of the id) followed by the
 * context (the volume id), so neither the key id nor the volume can be swapped.
 *
 * The module is initialised once per process (shared by instances using the same module, reference
 * counted). Each instance keeps one R/W session, opened and logged in lazily, reused, and re-opened
 * once when the module reports it closed (CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED,
 * CKR_USER_NOT_LOGGED_IN, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT). Operations on one instance
 * are serialised with a mutex. Note: PKCS#11 login state is per process and token, so a second
 * instance on a token that is already logged in cannot verify its own PIN.
 *
 * This file: open/free, the key verbs, wrap/unwrap. The module and the session are in pkcs11-session.c,
 * the key objects (attributes, the state mapping) in pkcs11-objects.c; pkcs11-internal.h joins them. */

#include "crypto.h"
#include "pkcs11-internal.h"

/* ---- open/free ---- */

static int pkcs11_open(const kms_backend_config *cfg, const kms_context *ctx, kms_backend **ret, char **ret_error) {
        static const char *const known[] = { "Module", "TokenLabel", "PinFile", NULL };
        const kms_setting *module, *label, *pin;
        pkcs11_backend *p;
        int r;

        r = kms_config_check_known(cfg, known, ret_error);
        if (r < 0)
                return r;

        module = kms_config_find(cfg, "Module");
        label = kms_config_find(cfg, "TokenLabel");
        pin = kms_config_find(cfg, "PinFile");
        if (!module || !label || !pin)
                return kms_config_error(ret_error, NULL,
                                        "[Backend %s]: Type=pkcs11 needs Module=, TokenLabel= and PinFile=", cfg->name);
        if (module->value[0] != '/')
                return kms_config_error(ret_error, module, "Module= must be an absolute path: %s", module->value);
        if (isempty(label->value) || strlen(label->value) > 32)
                return kms_config_error(ret_error, label, "TokenLabel= must be 1 to 32 bytes: '%s'", label->value);
        if (isempty(pin->value) || (pin->value[0] != '/' && strchr(pin->value, '/')) || streq(pin->value, ".") ||
            streq(pin->value, ".."))
                return kms_config_error(ret_error, pin,
                                        "PinFile= must be an absolute path or a credential name: '%s'", pin->value);
        if (pin->value[0] != '/' && !ctx->credentials_dir)
                return kms_config_error(ret_error, pin,
                                        "PinFile=%s names a credential, but $CREDENTIALS_DIRECTORY is not set",
                                        pin->value);

        p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        pthread_mutex_init(&p->lock, NULL);
        p->module_path = strdup(module->value);
        p->token_label = strdup(label->value);
        if (pin->value[0] == '/')
                p->pin_path = strdup(pin->value);
        else if (asprintf(&p->pin_path, "%s/%s", ctx->credentials_dir, pin->value) < 0)
                p->pin_path = NULL;
        if (!p->module_path || !p->token_label || !p->pin_path) {
                free(p->module_path);
                free(p->token_label);
                free(p->pin_path);
                pthread_mutex_destroy(&p->lock);
                free(p);
                return -ENOMEM;
        }
        *ret = &p->base;
        return 0;
}

static void pkcs11_free(kms_backend *b) {
        pkcs11_backend *p = P11(b);

        if (p->module) {
                p11_close_session(p);
                p11_module_unref(p->module);
        }
        free(p->module_path);
        free(p->token_label);
        free(p->pin_path);
        pthread_mutex_destroy(&p->lock);
        free(p);
}

/* ---- key verbs ---- */

struct create_args {
        const char *alias;
        kms_key *ret;
};

static int create_op(pkcs11_backend *p, void *userdata) {
        struct create_args *a = userdata;
        CK_FUNCTION_LIST_PTR f = p->module->f;
        CK_MECHANISM mech = { CKM_AES_KEY_GEN, NULL, 0 };
        CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
        CK_KEY_TYPE type = CKK_AES;
        CK_ULONG len = 32;
        CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
        uint8_t id[KEY_ID_SIZE];
        CK_ATTRIBUTE tmpl[] = {
                { CKA_CLASS, &cls, sizeof cls },
                { CKA_KEY_TYPE, &type, sizeof type },
                { CKA_VALUE_LEN, &len, sizeof len },
                { CKA_TOKEN, &yes, sizeof yes },
                { CKA_PRIVATE, &yes, sizeof yes },
                { CKA_SENSITIVE, &yes, sizeof yes },
                { CKA_EXTRACTABLE, &no, sizeof no },
                { CKA_MODIFIABLE, &yes, sizeof yes },
                { CKA_ENCRYPT, &yes, sizeof yes },
                { CKA_DECRYPT, &yes, sizeof yes },
                { CKA_WRAP, &no, sizeof no },
                { CKA_UNWRAP, &no, sizeof no },
                { CKA_ID, id, sizeof id },
                { CKA_LABEL, (void *) a->alias, a->alias ? strlen(a->alias) : 0 },
        };
        _cleanup_(p11_key_done) p11_key k = {};
        CK_OBJECT_HANDLE h;
        CK_RV rv;
        int r;

        if (a->alias) {
                _cleanup_free_ CK_OBJECT_HANDLE *objs = NULL;
                CK_ATTRIBUTE attr = { CKA_LABEL, (void *) a->alias, strlen(a->alias) };
                size_t n;

                r = p11_find_keys(p, &attr, &objs, &n);
                if (r < 0)
                        return r;
                if (n > 0)
                        return kms_backend_set_error(&p->base, -EEXIST, "alias %s is already taken on token '%s'",
                                                     a->alias, p->token_label);
        }

        r = crypto_random(id, sizeof id);
        if (r < 0)
                return r;
        rv = f->C_GenerateKey(p->session, &mech, tmpl, a->alias ? ELEMENTSOF(tmpl) : ELEMENTSOF(tmpl) - 1, &h);
        if (rv != CKR_OK)
                return p11_fail(p, rv, "C_GenerateKey");
        r = p11_read_key(p, h, &k);
        if (r < 0)
                return r == -ENODATA ? -EIO : r;
        return p11_copy_info(&k.info, a->ret);
}

static int pkcs11_key_create(kms_backend *b, const char *alias, const char *description, kms_key *ret) {
        struct create_args a = { .alias = alias, .ret = ret };

        /* PKCS#11 has no description attribute: @description is not kept. */
        return p11_run(P11(b), create_op, &a);
}

struct list_args {
        kms_key *keys;
        size_t n;
};

static int list_op(pkcs11_backend *p, void *userdata) {
        struct list_args *a = userdata;
        _cleanup_free_ CK_OBJECT_HANDLE *objs = NULL;
        size_t n;
        int r;

        r = p11_find_keys(p, NULL, &objs, &n);
        if (r < 0)
                return r;
        a->keys = calloc(MAX(n, (size_t) 1), sizeof(kms_key));
        if (!a->keys)
                return -ENOMEM;
        a->n = 0;
        for (size_t i = 0; i < n; i++) {
                p11_key k = {};

                r = p11_read_key(p, objs[i], &k);
                if (r == -ENODATA)
                        continue; /* not one of ours to name */
                if (r < 0) {
                        kms_key_array_free(a->keys, a->n);
                        a->keys = NULL;
                        return r;
                }
                a->keys[a->n++] = k.info;
        }
        return 0;
}

static int cmp_id(const void *x, const void *y) {
        return strcmp(((const kms_key *) x)->id, ((const kms_key *) y)->id);
}

static int pkcs11_key_list(kms_backend *b, kms_key **ret, size_t *ret_n) {
        struct list_args a = {};
        int r;

        r = p11_run(P11(b), list_op, &a);
        if (r < 0)
                return r;
        if (a.n > 1)
                qsort(a.keys, a.n, sizeof(kms_key), cmp_id);
        *ret = a.keys;
        *ret_n = a.n;
        return 0;
}

struct get_args {
        const char *ref;
        kms_key *ret;
};

static int get_op(pkcs11_backend *p, void *userdata) {
        struct get_args *a = userdata;
        _cleanup_(p11_key_done) p11_key k = {};
        int r;

        r = p11_lookup_key(p, a->ref, &k);
        if (r < 0)
                return r;
        return p11_copy_info(&k.info, a->ret);
}

static int pkcs11_key_get(kms_backend *b, const char *ref, kms_key *ret) {
        struct get_args a = { .ref = ref, .ret = ret };

        return p11_run(P11(b), get_op, &a);
}

struct enable_args {
        const char *id;
        bool enable;
};

static int enable_op(pkcs11_backend *p, void *userdata) {
        struct enable_args *a = userdata;
        _cleanup_(p11_key_done) p11_key k = {};
        CK_BBOOL v = a->enable ? CK_TRUE : CK_FALSE;
        CK_ATTRIBUTE attrs[] = {
                { CKA_ENCRYPT, &v, sizeof v },
                { CKA_DECRYPT, &v, sizeof v },
        };
        CK_RV rv;
        int r;

        r = p11_lookup_key(p, a->id, &k);
        if (r < 0)
                return r;
        rv = p->module->f->C_SetAttributeValue(p->session, k.handle, attrs, ELEMENTSOF(attrs));
        if (rv == CKR_ATTRIBUTE_READ_ONLY || rv == CKR_ACTION_PROHIBITED) {
                p->last_rv = rv;
                return kms_backend_set_error(&p->base, -EOPNOTSUPP,
                                             "token '%s' does not allow changing CKA_ENCRYPT/CKA_DECRYPT of key %s: %s",
                                             p->token_label, k.info.id, p11_ckr_name(rv));
        }
        if (rv != CKR_OK)
                return p11_fail(p, rv, "C_SetAttributeValue");
        return 0;
}

static int pkcs11_key_set_enabled(kms_backend *b, const char *id, bool enabled) {
        struct enable_args a = { .id = id, .enable = enabled };

        return p11_run(P11(b), enable_op, &a);
}

static int pkcs11_key_schedule_deletion(kms_backend *b, const char *id, unsigned days, kms_key *ret) {
        return kms_backend_set_error(b, -EOPNOTSUPP,
                                     "PKCS#11 has no scheduled key deletion (backend %s): disable the key, and delete "
                                     "it on the HSM when due",
                                     b->name);
}

static int pkcs11_key_cancel_deletion(kms_backend *b, const char *id) {
        return kms_backend_set_error(b, -EOPNOTSUPP, "PKCS#11 has no scheduled key deletion (backend %s)", b->name);
}

/* ---- wrap/unwrap ---- */

static size_t header_size(size_t id_size) {
        return 4 + 1 + 1 + id_size;
}

/* AAD = header || context. */
static uint8_t *build_aad(const uint8_t *header, size_t hsize, const char *context, size_t *ret_size) {
        size_t c = strlen(context);
        uint8_t *aad = malloc(hsize + c + 1);

        if (!aad)
                return NULL;
        memcpy(aad, header, hsize);
        memcpy(aad + hsize, context, c);
        *ret_size = hsize + c;
        return aad;
}

/* After the token refused the key: is it disabled? */
static int refused(pkcs11_backend *p, const p11_key *k, CK_RV rv, const char *what) {
        p->last_rv = rv;
        if (rv == CKR_KEY_FUNCTION_NOT_PERMITTED) {
                CK_BBOOL dec = CK_TRUE;
                CK_ATTRIBUTE a = { CKA_DECRYPT, &dec, sizeof dec };

                if (p->module->f->C_GetAttributeValue(p->session, k->handle, &a, 1) == CKR_OK && !dec)
                        return kms_backend_set_error(&p->base, -EKEYREVOKED, "key %s is disabled (%s refused: %s)",
                                                     k->info.id, what, p11_ckr_name(rv));
                return kms_backend_set_error(&p->base, -EKEYREVOKED, "key %s may not be used for this (%s: %s)",
                                             k->info.id, what, p11_ckr_name(rv));
        }
        return p11_fail(p, rv, what);
}

struct wrap_args {
        const char *id, *context;
        const secret *plain;
        uint8_t *out;
        size_t out_size;
};

static int wrap_op(pkcs11_backend *p, void *userdata) {
        struct wrap_args *a = userdata;
        CK_FUNCTION_LIST_PTR f = p->module->f;
        _cleanup_(p11_key_done) p11_key k = {};
        _cleanup_free_ uint8_t *out = NULL, *aad = NULL;
        CK_GCM_PARAMS gcm = {};
        CK_MECHANISM mech = { CKM_AES_GCM, &gcm, sizeof gcm };
        size_t hsize, aad_size;
        CK_ULONG ct_size;
        uint8_t *iv;
        CK_RV rv;
        int r;

        r = p11_lookup_key(p, a->id, &k);
        if (r < 0)
                return r;

        hsize = header_size(k.id_size);
        ct_size = a->plain->size + GCM_TAG_BITS / 8;
        if (hsize + GCM_IV_SIZE + ct_size > KMS_WRAPPED_MAX)
                return kms_backend_set_error(&p->base, -EINVAL, "data key of %zu bytes is too large", a->plain->size);
        out = malloc(hsize + GCM_IV_SIZE + ct_size);
        if (!out)
                return -ENOMEM;
        memcpy(out, WRAP_MAGIC, 4);
        out[4] = WRAP_VERSION;
        out[5] = (uint8_t) k.id_size;
        memcpy(out + 6, k.id, k.id_size);
        iv = out + hsize;
        r = crypto_random(iv, GCM_IV_SIZE);
        if (r < 0)
                return r;
        aad = build_aad(out, hsize, a->context, &aad_size);
        if (!aad)
                return -ENOMEM;

        gcm.pIv = iv;
        gcm.ulIvLen = GCM_IV_SIZE;
        gcm.ulIvBits = GCM_IV_SIZE * 8;
        gcm.pAAD = aad;
        gcm.ulAADLen = aad_size;
        gcm.ulTagBits = GCM_TAG_BITS;

        rv = f->C_EncryptInit(p->session, &mech, k.handle);
        if (rv != CKR_OK)
                return refused(p, &k, rv, "C_EncryptInit");
        rv = f->C_Encrypt(p->session, a->plain->data, a->plain->size, out + hsize + GCM_IV_SIZE, &ct_size);
        if (rv != CKR_OK)
                return p11_fail(p, rv, "C_Encrypt");
        if (ct_size != a->plain->size + GCM_TAG_BITS / 8)
                return kms_backend_set_error(&p->base, -EPROTO, "C_Encrypt returned %lu bytes for %zu",
                                             (unsigned long) ct_size, a->plain->size);
        a->out_size = hsize + GCM_IV_SIZE + ct_size;
        a->out = TAKE_PTR(out);
        return 0;
}

static int pkcs11_wrap(kms_backend *b, const char *id, const char *context, const secret *plain, uint8_t **ret,
                       size_t *ret_size) {
        struct wrap_args a = { .id = id, .context = context, .plain = plain };
        int r;

        r = p11_run(P11(b), wrap_op, &a);
        if (r < 0)
                return r;
        *ret = a.out;
        *ret_size = a.out_size;
        return 0;
}

struct unwrap_args {
        const char *id, *context;
        const uint8_t *wrapped;
        size_t size;
        secret *ret;
};

static int unwrap_op(pkcs11_backend *p, void *userdata) {
        struct unwrap_args *a = userdata;
        CK_FUNCTION_LIST_PTR f = p->module->f;
        _cleanup_(p11_key_done) p11_key k = {};
        _cleanup_(secret_freep) secret *plain = NULL;
        _cleanup_free_ uint8_t *aad = NULL, *iv = NULL;
        CK_GCM_PARAMS gcm = {};
        CK_MECHANISM mech = { CKM_AES_GCM, &gcm, sizeof gcm };
        size_t hsize, aad_size, ct_size;
        CK_ULONG out_size;
        CK_RV rv;
        int r;

        r = p11_lookup_key(p, a->id, &k);
        if (r < 0)
                return r;
        if (k.id_size != a->wrapped[5] || memcmp(k.id, a->wrapped + 6, k.id_size) != 0) {
                _cleanup_free_ char *other = p11_hex_encode(a->wrapped + 6, a->wrapped[5]);

                return kms_backend_set_error(&p->base, -EXDEV, "wrapped key belongs to key %s, not %s", strna(other),
                                             k.info.id);
        }
        hsize = header_size(a->wrapped[5]);
        ct_size = a->size - hsize - GCM_IV_SIZE;

        aad = build_aad(a->wrapped, hsize, a->context, &aad_size);
        iv = malloc(GCM_IV_SIZE);
        if (!aad || !iv)
                return -ENOMEM;
        memcpy(iv, a->wrapped + hsize, GCM_IV_SIZE);
        gcm.pIv = iv;
        gcm.ulIvLen = GCM_IV_SIZE;
        gcm.ulIvBits = GCM_IV_SIZE * 8;
        gcm.pAAD = aad;
        gcm.ulAADLen = aad_size;
        gcm.ulTagBits = GCM_TAG_BITS;

        r = secret_new(ct_size, &plain);
        if (r < 0)
                return r;
        rv = f->C_DecryptInit(p->session, &mech, k.handle);
        if (rv != CKR_OK)
                return refused(p, &k, rv, "C_DecryptInit");
        out_size = ct_size;
        rv = f->C_Decrypt(p->session, (CK_BYTE_PTR) a->wrapped + hsize + GCM_IV_SIZE, ct_size, plain->data, &out_size);
        if (rv == CKR_GENERAL_ERROR || rv == CKR_ENCRYPTED_DATA_INVALID || rv == CKR_ENCRYPTED_DATA_LEN_RANGE ||
            rv == CKR_FUNCTION_FAILED) {
                p->last_rv = rv;
                return kms_backend_set_error(
                        &p->base, -EBADMSG,
                        "wrapped key fails authentication (altered, or bound to another volume): %s", p11_ckr_name(rv));
        }
        if (rv != CKR_OK)
                return p11_fail(p, rv, "C_Decrypt");
        if (out_size != ct_size - GCM_TAG_BITS / 8)
                return kms_backend_set_error(&p->base, -EPROTO, "C_Decrypt returned %lu bytes for %zu",
                                             (unsigned long) out_size, ct_size);
        r = secret_truncate(plain, out_size);
        if (r < 0)
                return r;
        a->ret = TAKE_PTR(plain);
        return 0;
}

static int pkcs11_unwrap(kms_backend *b, const char *id, const char *context, const uint8_t *wrapped, size_t size,
                         secret **ret) {
        struct unwrap_args a = { .id = id, .context = context, .wrapped = wrapped, .size = size };
        size_t hsize;
        int r;

        if (size < header_size(0) || memcmp(wrapped, WRAP_MAGIC, 4) != 0 || wrapped[4] != WRAP_VERSION)
                return kms_backend_set_error(b, -EBADMSG, "wrapped key is not in the pkcs11 format");
        hsize = header_size(wrapped[5]);
        if (wrapped[5] == 0 || wrapped[5] > KEY_ID_MAX || size <= hsize + GCM_IV_SIZE + GCM_TAG_BITS / 8)
                return kms_backend_set_error(b, -EBADMSG, "wrapped key is truncated or malformed");
        r = p11_run(P11(b), unwrap_op, &a);
        if (r < 0)
                return r;
        *ret = a.ret;
        return 0;
}

const kms_backend_ops kms_pkcs11_ops = {
        .type = "pkcs11",
        .thread_safe = false, /* one logged-in session per instance */
        .unwrap_checks_state = true,
        .open = pkcs11_open,
        .free = pkcs11_free,
        .key_create = pkcs11_key_create,
        .key_list = pkcs11_key_list,
        .key_get = pkcs11_key_get,
        .key_set_enabled = pkcs11_key_set_enabled,
        .key_schedule_deletion = pkcs11_key_schedule_deletion,
        .key_cancel_deletion = pkcs11_key_cancel_deletion,
        .wrap = pkcs11_wrap,
        .unwrap = pkcs11_unwrap,
};
