/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* PKCS#11 key objects: attributes, the state mapping, lookup (see pkcs11-internal.h). */

#include <ctype.h>

#include "pkcs11-internal.h"

/* ---- objects ---- */

int p11_hex_decode(const char *s, uint8_t *buf, size_t max, size_t *ret_size) {
        size_t n = strlen(s);

        if (n == 0 || n % 2 != 0 || n / 2 > max)
                return -EINVAL;
        for (size_t i = 0; i < n / 2; i++) {
                unsigned v;

                if (!isxdigit((unsigned char) s[2 * i]) || !isxdigit((unsigned char) s[2 * i + 1]) ||
                    sscanf(s + 2 * i, "%2x", &v) != 1)
                        return -EINVAL;
                buf[i] = (uint8_t) v;
        }
        *ret_size = n / 2;
        return 0;
}

char *p11_hex_encode(const uint8_t *p, size_t n) {
        char *s = malloc(2 * n + 1);

        if (!s)
                return NULL;
        for (size_t i = 0; i < n; i++)
                sprintf(s + 2 * i, "%02x", p[i]);
        s[2 * n] = 0;
        return s;
}

/* Finds up to @max AES secret keys matching the extra attribute (if any). */
int p11_find_keys(pkcs11_backend *p, const CK_ATTRIBUTE *extra, CK_OBJECT_HANDLE **ret, size_t *ret_n) {
        CK_FUNCTION_LIST_PTR f = p->module->f;
        CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
        CK_KEY_TYPE type = CKK_AES;
        CK_ATTRIBUTE tmpl[3] = {
                { CKA_CLASS, &cls, sizeof cls },
                { CKA_KEY_TYPE, &type, sizeof type },
        };
        _cleanup_free_ CK_OBJECT_HANDLE *objs = NULL;
        size_t n = 0;
        CK_RV rv;

        if (extra)
                tmpl[2] = *extra;
        rv = f->C_FindObjectsInit(p->session, tmpl, extra ? 3 : 2);
        if (rv != CKR_OK)
                return p11_fail(p, rv, "C_FindObjectsInit");
        for (;;) {
                CK_OBJECT_HANDLE *a;
                CK_ULONG got = 0;

                a = reallocarray(objs, n + FIND_BATCH, sizeof(CK_OBJECT_HANDLE));
                if (!a) {
                        (void) f->C_FindObjectsFinal(p->session);
                        return -ENOMEM;
                }
                objs = a;
                rv = f->C_FindObjects(p->session, objs + n, FIND_BATCH, &got);
                if (rv != CKR_OK) {
                        (void) f->C_FindObjectsFinal(p->session);
                        return p11_fail(p, rv, "C_FindObjects");
                }
                n += got;
                if (got < FIND_BATCH)
                        break;
        }
        rv = f->C_FindObjectsFinal(p->session);
        if (rv != CKR_OK)
                return p11_fail(p, rv, "C_FindObjectsFinal");
        *ret = TAKE_PTR(objs);
        *ret_n = n;
        return 0;
}



void p11_key_done(p11_key *k) {
        kms_key_done(&k->info);
        *k = (p11_key) {};
}

/* Reads id, label and the usage flags of @h. -ENODATA for a key without a usable CKA_ID. */
int p11_read_key(pkcs11_backend *p, CK_OBJECT_HANDLE h, p11_key *ret) {
        CK_FUNCTION_LIST_PTR f = p->module->f;
        CK_BBOOL enc = CK_FALSE, dec = CK_FALSE;
        char label[257];
        p11_key k = { .handle = h };
        CK_ATTRIBUTE a[] = {
                { CKA_ID, k.id, sizeof k.id },
                { CKA_LABEL, label, sizeof label - 1 },
                { CKA_ENCRYPT, &enc, sizeof enc },
                { CKA_DECRYPT, &dec, sizeof dec },
        };
        CK_RV rv;

        rv = f->C_GetAttributeValue(p->session, h, a, ELEMENTSOF(a));
        if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID && rv != CKR_ATTRIBUTE_SENSITIVE &&
            rv != CKR_BUFFER_TOO_SMALL)
                return p11_fail(p, rv, "C_GetAttributeValue");
        if (a[0].ulValueLen == CK_UNAVAILABLE_INFORMATION || a[0].ulValueLen == 0 || a[0].ulValueLen > KEY_ID_MAX)
                return -ENODATA;
        k.id_size = a[0].ulValueLen;
        if (a[2].ulValueLen == CK_UNAVAILABLE_INFORMATION)
                enc = CK_FALSE;
        if (a[3].ulValueLen == CK_UNAVAILABLE_INFORMATION)
                dec = CK_FALSE;

        k.info.id = p11_hex_encode(k.id, k.id_size);
        if (!k.info.id)
                return -ENOMEM;
        if (a[1].ulValueLen != CK_UNAVAILABLE_INFORMATION && a[1].ulValueLen > 0 && a[1].ulValueLen < sizeof label) {
                k.info.alias = strndup(label, a[1].ulValueLen);
                if (!k.info.alias) {
                        p11_key_done(&k);
                        return -ENOMEM;
                }
        }
        k.info.state = enc && dec ? KMS_KEY_ENABLED : KMS_KEY_DISABLED;
        *ret = k;
        return 0;
}

/* Finds one key by hex id, else by label. -ENOENT, -EINVAL when a label is ambiguous. */
int p11_lookup_key(pkcs11_backend *p, const char *ref, p11_key *ret) {
        _cleanup_free_ CK_OBJECT_HANDLE *objs = NULL;
        uint8_t id[KEY_ID_MAX];
        size_t id_size, n = 0;
        CK_ATTRIBUTE attr;
        int r;

        if (p11_hex_decode(ref, id, sizeof id, &id_size) >= 0) {
                attr = (CK_ATTRIBUTE) { CKA_ID, id, id_size };
                r = p11_find_keys(p, &attr, &objs, &n);
                if (r < 0)
                        return r;
        }
        if (n == 0) {
                free(objs);
                objs = NULL;
                attr = (CK_ATTRIBUTE) { CKA_LABEL, (void *) ref, strlen(ref) };
                r = p11_find_keys(p, &attr, &objs, &n);
                if (r < 0)
                        return r;
        }
        if (n == 0)
                return kms_backend_set_error(&p->base, -ENOENT, "no key %s on token '%s'", ref, p->token_label);
        if (n > 1)
                return kms_backend_set_error(&p->base, -EINVAL, "%zu keys on token '%s' match %s; use the key id", n,
                                             p->token_label, ref);
        r = p11_read_key(p, objs[0], ret);
        if (r == -ENODATA)
                return kms_backend_set_error(&p->base, -ENOENT, "key %s on token '%s' has no CKA_ID", ref,
                                             p->token_label);
        return r;
}

int p11_copy_info(const kms_key *from, kms_key *ret) {
        kms_key k = { .state = from->state };

        k.id = strdup(from->id);
        if (!k.id || (from->alias && !(k.alias = strdup(from->alias)))) {
                kms_key_done(&k);
                return -ENOMEM;
        }
        *ret = k;
        return 0;
}
