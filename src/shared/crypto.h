/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "names.h"
#include "secret.h"

#define AES_GCM_KEY_SIZE 32U
#define AES_GCM_NONCE_SIZE 12U
#define AES_GCM_TAG_SIZE 16U

/* Fills @size bytes from the OpenSSL CSPRNG. -EIO when it fails. */
int crypto_random(void *buf, size_t size);
/* A new secret of @size random bytes. -ENOMEM, -EIO. */
int crypto_random_secret(size_t size, secret **ret);

/* AES-256-GCM with a random 96-bit nonce. Output: nonce || ciphertext || tag.
 * -EINVAL for a key that is not 32 bytes, -EIO on a library failure. */
int aes_gcm_seal(const secret *key, const void *aad, size_t aad_size, const void *plain, size_t plain_size,
                 uint8_t **ret, size_t *ret_size);
/* Opens nonce || ciphertext || tag into a new secret. -EBADMSG when authentication fails or the
 * input is too short, -EIO on a library failure. */
int aes_gcm_open(const secret *key, const void *aad, size_t aad_size, const uint8_t *sealed, size_t sealed_size,
                 secret **ret);

/* Standard base64 with padding. -ENOMEM. */
int base64_encode(const void *data, size_t size, char **ret);
/* Decodes strict standard base64 (padding required, no whitespace; "" is 0 bytes). -EINVAL on bad input. */
int base64_decode(const char *s, uint8_t **ret, size_t *ret_size);

/* A random RFC 4122 version 4 UUID, lower case. */
int uuid_random(char ret[static 37]);
