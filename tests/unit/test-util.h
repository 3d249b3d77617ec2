/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Helpers shared by the unit tests: temporary directories, a controllable clock, the local KMS
 * backend on a temp state directory, small file utilities. Every helper fails the running cmocka
 * test (or aborts outside one) instead of returning an error. */

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cmocka.h>

#include "kms-registry.h"
#include "kms.h"

/* A fresh directory under $TMPDIR (or /tmp); the caller frees the path after test_rm_rf(). */
char *test_mkdtemp(void);
/* Removes @path recursively (files, directories, whatever their modes). Accepts NULL. */
void test_rm_rf(const char *path);
/* "@dir/@name", heap allocated. */
char *test_path(const char *dir, const char *name);

/* The injectable CLOCK_REALTIME: tests set test_clock and pass test_clock_now as kms_context.now. */
extern usec_t test_clock;
usec_t test_clock_now(void);
#define TEST_CLOCK_START (UINT64_C(1767225600) * USEC_PER_SEC) /* 2026-01-01T00:00:00Z */

/* A local backend instance "local" on @ctx (which must outlive it). Asserts success. */
kms_backend *test_local_backend(const kms_context *ctx);

/* The built-in configuration (only the "local" backend) with StateDirectory=@state_dir, opened as a
 * registry on test_clock_now. $CREDENTIALS_DIRECTORY is unset first. Asserts success. */
kms_registry *test_local_registry(const char *state_dir);

/* Writes @size bytes to @path (created/truncated, mode @mode). Asserts success. */
void test_write_file(const char *path, const void *data, size_t size, mode_t mode);
/* Reads a whole file; *ret_size may be NULL. Returns a NUL-terminated heap buffer; asserts success. */
char *test_read_file(const char *path, size_t *ret_size);
/* The permission bits of @path, or -errno. */
int test_file_mode(const char *path);
/* Number of entries of @dir whose name starts with @prefix (-errno when @dir cannot be read). */
int test_count_prefix(const char *dir, const char *prefix);
/* Number of entries of @dir, "." and ".." excluded (-errno when @dir cannot be read). */
int test_count_entries(const char *dir);
/* SHA-256 of the whole file @path into @ret. Asserts success. */
void test_sha256_file(const char *path, uint8_t ret[32]);
/* Number of open file descriptors of this process. */
unsigned test_count_fds(void);
/* Whether @pid is a live process (a zombie is not). */
bool test_pid_alive(pid_t pid);
