/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "crypto.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_CIPHER_CTX *, EVP_CIPHER_CTX_free);

int crypto_random(void *buf, size_t size) {
        if (size > INT32_MAX)
                return -EINVAL;
        return RAND_bytes(buf, (int) size) == 1 ? 0 : -EIO;
}

int crypto_random_secret(size_t size, secret **ret) {
        _cleanup_(secret_freep) secret *s = NULL;
        int r;

        r = secret_new(size, &s);
        if (r < 0)
                return r;
        r = crypto_random(s->data, size);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(s);
        return 0;
}

int aes_gcm_seal(const secret *key, const void *aad, size_t aad_size, const void *plain, size_t plain_size,
                 uint8_t **ret, size_t *ret_size) {
        _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *ctx = NULL;
        _cleanup_free_ uint8_t *out = NULL;
        size_t size = AES_GCM_NONCE_SIZE + plain_size + AES_GCM_TAG_SIZE;
        int n, r;

        if (!key || key->size != AES_GCM_KEY_SIZE || plain_size > INT32_MAX || aad_size > INT32_MAX)
                return -EINVAL;

        out = malloc(size);
        if (!out)
                return -ENOMEM;
        r = crypto_random(out, AES_GCM_NONCE_SIZE);
        if (r < 0)
                return r;

        ctx = EVP_CIPHER_CTX_new();
        if (!ctx)
                return -ENOMEM;
        if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key->data, out) != 1 ||
            (aad_size > 0 && EVP_EncryptUpdate(ctx, NULL, &n, aad, (int) aad_size) != 1) ||
            EVP_EncryptUpdate(ctx, out + AES_GCM_NONCE_SIZE, &n, plain, (int) plain_size) != 1 ||
            EVP_EncryptFinal_ex(ctx, out + AES_GCM_NONCE_SIZE + n, &n) != 1 ||
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, AES_GCM_TAG_SIZE,
                                out + AES_GCM_NONCE_SIZE + plain_size) != 1)
                return -EIO;

        *ret = TAKE_PTR(out);
        *ret_size = size;
        return 0;
}

int aes_gcm_open(const secret *key, const void *aad, size_t aad_size, const uint8_t *sealed, size_t sealed_size,
                 secret **ret) {
        _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *ctx = NULL;
        _cleanup_(secret_freep) secret *out = NULL;
        size_t size;
        int n, r;

        if (!key || key->size != AES_GCM_KEY_SIZE || aad_size > INT32_MAX)
                return -EINVAL;
        if (sealed_size < AES_GCM_NONCE_SIZE + AES_GCM_TAG_SIZE || sealed_size > INT32_MAX)
                return -EBADMSG;
        size = sealed_size - AES_GCM_NONCE_SIZE - AES_GCM_TAG_SIZE;

        r = secret_new(size, &out);
        if (r < 0)
                return r;

        ctx = EVP_CIPHER_CTX_new();
        if (!ctx)
                return -ENOMEM;
        if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key->data, sealed) != 1 ||
            (aad_size > 0 && EVP_DecryptUpdate(ctx, NULL, &n, aad, (int) aad_size) != 1) ||
            EVP_DecryptUpdate(ctx, out->data, &n, sealed + AES_GCM_NONCE_SIZE, (int) size) != 1 ||
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, AES_GCM_TAG_SIZE,
                                (void *) (sealed + AES_GCM_NONCE_SIZE + size)) != 1)
                return -EIO;
        if (EVP_DecryptFinal_ex(ctx, out->data + n, &n) != 1)
                return -EBADMSG;

        *ret = TAKE_PTR(out);
        return 0;
}

int base64_encode(const void *data, size_t size, char **ret) {
        char *s;
        int n;

        if (size > (INT32_MAX / 4) * 3)
                return -EINVAL;
        s = malloc(4 * ((size + 2) / 3) + 1);
        if (!s)
                return -ENOMEM;
        n = EVP_EncodeBlock((unsigned char *) s, data, (int) size);
        s[n] = 0;
        *ret = s;
        return 0;
}

static int b64_value(char c) {
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '+')
                return 62;
        if (c == '/')
                return 63;
        return -1;
}

int base64_decode(const char *s, uint8_t **ret, size_t *ret_size) {
        _cleanup_free_ uint8_t *out = NULL;
        size_t len, n = 0;

        if (!s)
                return -EINVAL;
        len = strlen(s);
        if (len % 4 != 0)
                return -EINVAL;

        out = malloc(MAX(len / 4 * 3, (size_t) 1)); /* "" is the encoding of 0 bytes */
        if (!out)
                return -ENOMEM;

        for (size_t i = 0; i < len; i += 4) {
                int v[4];
                bool last = i + 4 == len;

                for (size_t j = 0; j < 4; j++) {
                        v[j] = b64_value(s[i + j]);
                        if (v[j] < 0 && !(last && j >= 2 && s[i + j] == '='))
                                return -EINVAL;
                }
                if (v[2] < 0 && v[3] >= 0)
                        return -EINVAL; /* "x=y" is not padding */

                out[n++] = (uint8_t) (v[0] << 2 | v[1] >> 4);
                if (v[2] >= 0)
                        out[n++] = (uint8_t) ((v[1] & 0xf) << 4 | v[2] >> 2);
                else if (v[1] & 0xf)
                        return -EINVAL; /* non-canonical trailing bits */
                if (v[3] >= 0)
                        out[n++] = (uint8_t) ((v[2] & 0x3) << 6 | v[3]);
                else if (v[2] >= 0 && (v[2] & 0x3))
                        return -EINVAL;
        }

        *ret = TAKE_PTR(out);
        *ret_size = n;
        return 0;
}

int uuid_random(char ret[static 37]) {
        uint8_t b[16];
        int r;

        r = crypto_random(b, sizeof b);
        if (r < 0)
                return r;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        snprintf(ret, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
        return 0;
}
