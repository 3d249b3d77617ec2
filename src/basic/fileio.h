/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Writes @size bytes to @dir/@name atomically: a temp file in @dir, fsync, rename over the
 * target, fsync of @dir. A crash at any point leaves the old or the new file, never a torn one.
 * -errno of open/write/fsync/rename. */
int write_file_atomic(const char *dir, const char *name, const void *data, size_t size, mode_t mode);

/* Reads a whole regular file of at most @max bytes into a NUL-terminated heap buffer. The open never
 * blocks (a FIFO or a device is refused, not waited on). -ENOENT, -EFBIG when larger than @max, -EISDIR for
 * a directory, -EBADF for anything else that is not a regular file, -errno of open/read. */
int read_full_file(const char *path, size_t max, char **ret, size_t *ret_size);

/* As read_full_file() but the buffer is wiped when freed by the caller with erase_and_free(). */
int read_full_file_secure(const char *path, size_t max, char **ret, size_t *ret_size);

/* As read_full_file(), for the files of the state directory (key files, volume, image, server and AS
 * records): a symbolic link is not followed either (-ELOOP). One rule for every state file. */
int read_state_file(const char *path, size_t max, char **ret, size_t *ret_size);

/* The reason for a read_*_file() error as a phrase: "a directory", "a symbolic link (not followed)", "not a
 * regular file", "too large", else strerror(). */
const char *read_file_error(int r);

/* mkdir -p with @mode for every created component. -errno. */
int mkdir_p(const char *path, mode_t mode);

/* Removes @dir/@name and fsyncs @dir. -errno of unlinkat (-ENOENT when missing). */
int unlink_durable(const char *dir, const char *name);

/* Takes an exclusive flock() on @path (a regular file, created 0600 when missing; a symbolic link is not
 * followed), held until *ret_fd is closed or the process exits, and writes this process's PID into it.
 * -EBUSY when another process holds it: *ret_holder is then the PID that process wrote (0 when unreadable).
 * -errno of open(), flock(), write(). */
int lock_file_take(const char *path, int *ret_fd, pid_t *ret_holder);

/* The size in bytes of the file or block device @path (its end, by lseek()). -errno of open(), lseek(). */
int path_size(const char *path, uint64_t *ret);
