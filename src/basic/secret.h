/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

/* The one type for key material. Its buffer is page-backed, mlock()ed and excluded from core
 * dumps (MADV_DONTDUMP); it is wiped with explicit_bzero() before it is released. */
typedef struct secret {
        uint8_t *data;
        size_t size;
        size_t mapped;
} secret;

/* Allocates a zeroed secret of @size bytes (at least 1). -ENOMEM, or -errno of mmap/mlock. */
int secret_new(size_t size, secret **ret);

/* Allocates a secret holding a copy of @size bytes at @data. Errors as secret_new(). */
int secret_new_copy(const void *data, size_t size, secret **ret);


/* Wipes and releases; accepts NULL; returns NULL. */
secret *secret_free(secret *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(secret *, secret_free);

/* Shrinks the visible size (the tail is wiped). -EINVAL if @size is larger than the current size. */
int secret_truncate(secret *s, size_t size);

/* Constant-time comparison of contents; sizes are compared first (not secret). */
bool secret_equal(const secret *a, const secret *b);

/* Constant-time memcmp: 0 when equal. */
int memcmp_const(const void *a, const void *b, size_t n);

/* Wipes @n bytes at @p and frees it; accepts NULL. For heap buffers that held secret bytes. */
void erase_and_free(void *p, size_t n);

/* Hands out the locked buffer of @s (its struct is freed) for APIs that take ownership of a plain
 * pointer, such as libcryptsetup's token buffers. Release it with secret_data_free(). */
void *secret_steal_data(secret *s, size_t *ret_size);
void secret_data_free(void *data, size_t size);
