/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* For targets whose parser reads files: one scratch directory per process, removed at exit. */

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The directory (created on first use under $TMPDIR, /dev/shm when it exists, else /tmp). Aborts on failure. */
const char *fuzz_scratch_dir(void);
/* Writes @size bytes to @path (created with its parent directories under the scratch directory), or aborts. */
void fuzz_write_file(const char *path, const uint8_t *data, size_t size);

/* abort() that says which check failed. */
#define fuzz_fail()                                                                        \
        do {                                                                               \
                fprintf(stderr, "%s:%d: %s: check failed\n", __FILE__, __LINE__, __func__); \
                abort();                                                                   \
        } while (0)
