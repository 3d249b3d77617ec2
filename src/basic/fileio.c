/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "fileio.h"
#include "macro.h"
#include "secret.h"

static int loop_write(int fd, const void *data, size_t size) {
        const char *p = data;

        while (size > 0) {
                ssize_t n = write(fd, p, size);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                p += n;
                size -= (size_t) n;
        }
        return 0;
}

static int fsync_dir(const char *dir) {
        _cleanup_(closep) int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0)
                return negative_errno();
        return RET_NERRNO(fsync(fd));
}

int write_file_atomic(const char *dir, const char *name, const void *data, size_t size, mode_t mode) {
        char tmp[PATH_MAX], target[PATH_MAX];
        _cleanup_(closep) int fd = -EBADF;
        int r;

        if (snprintf(target, sizeof target, "%s/%s", dir, name) >= (int) sizeof target ||
            snprintf(tmp, sizeof tmp, "%s/.#%s.XXXXXX", dir, name) >= (int) sizeof tmp)
                return -ENAMETOOLONG;

        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return negative_errno();

        if (fchmod(fd, mode) < 0 ||
            (r = loop_write(fd, data, size)) < 0 ||
            fsync(fd) < 0) {
                r = negative_errno();
                (void) unlink(tmp);
                return r;
        }
        fd = safe_close(fd);

        if (rename(tmp, target) < 0) {
                r = negative_errno();
                (void) unlink(tmp);
                return r;
        }
        return fsync_dir(dir);
}

static int read_full_file_impl(const char *path, size_t max, bool wipe, bool nofollow, char **ret, size_t *ret_size) {
        _cleanup_(closep) int fd = -EBADF;
        struct stat st;
        char *buf;
        size_t size = 0;

        /* O_NONBLOCK: opening a FIFO (or a device) must not wait for a writer; it is refused below. */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (nofollow ? O_NOFOLLOW : 0));
        if (fd < 0)
                return negative_errno();
        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (S_ISDIR(st.st_mode))
                return -EISDIR;
        if (!S_ISREG(st.st_mode))
                return -EBADF;
        if ((uint64_t) st.st_size > max)
                return -EFBIG;

        buf = malloc((size_t) st.st_size + 1);
        if (!buf)
                return -ENOMEM;

        for (;;) {
                ssize_t n = read(fd, buf + size, (size_t) st.st_size + 1 - size);
                if (n < 0) {
                        int r = errno == EINTR ? 0 : negative_errno();
                        if (r == 0)
                                continue;
                        if (wipe)
                                explicit_bzero(buf, size);
                        free(buf);
                        return r;
                }
                if (n == 0)
                        break;
                size += (size_t) n;
                if (size > (size_t) st.st_size) {
                        /* The file grew while we read it. */
                        if (wipe)
                                explicit_bzero(buf, size);
                        free(buf);
                        return -EFBIG;
                }
        }
        buf[size] = 0;
        *ret = buf;
        if (ret_size)
                *ret_size = size;
        return 0;
}

int read_full_file(const char *path, size_t max, char **ret, size_t *ret_size) {
        return read_full_file_impl(path, max, false, false, ret, ret_size);
}

int read_full_file_secure(const char *path, size_t max, char **ret, size_t *ret_size) {
        return read_full_file_impl(path, max, true, false, ret, ret_size);
}

int read_state_file(const char *path, size_t max, char **ret, size_t *ret_size) {
        return read_full_file_impl(path, max, false, true, ret, ret_size);
}

const char *read_file_error(int r) {
        switch (r) {
        case -ELOOP:
                return "a symbolic link (not followed)";
        case -EISDIR:
                return "a directory";
        case -EBADF:
                return "not a regular file";
        case -EFBIG:
                return "too large";
        default:
                return strerror(r < 0 ? -r : r);
        }
}

int mkdir_p(const char *path, mode_t mode) {
        char buf[PATH_MAX];
        size_t n = strlen(path);

        if (n == 0 || n >= sizeof buf)
                return -EINVAL;
        /* The common case first, one syscall: the directory is there already (or only the last one is missing). */
        if (mkdir(path, mode) == 0 || errno == EEXIST)
                return 0;
        if (errno != ENOENT)
                return negative_errno();
        memcpy(buf, path, n + 1);

        for (char *p = buf + 1; ; p++) {
                if (*p == '/' || *p == 0) {
                        char c = *p;
                        *p = 0;
                        if (mkdir(buf, mode) < 0 && errno != EEXIST)
                                return negative_errno();
                        *p = c;
                        if (c == 0)
                                break;
                }
        }
        return 0;
}

int unlink_durable(const char *dir, const char *name) {
        _cleanup_(closep) int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0)
                return negative_errno();
        if (unlinkat(fd, name, 0) < 0)
                return negative_errno();
        return RET_NERRNO(fsync(fd));
}

int lock_file_take(const char *path, int *ret_fd, pid_t *ret_holder) {
        _cleanup_(closep) int fd = -EBADF;
        char buf[32];
        ssize_t n;
        int k;

        *ret_holder = 0;
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
        if (fd < 0)
                return negative_errno();
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                if (errno != EWOULDBLOCK)
                        return negative_errno();
                n = pread(fd, buf, sizeof buf - 1, 0);
                if (n > 0) {
                        buf[n] = '\0';
                        if (sscanf(buf, "%d", &k) == 1 && k > 0)
                                *ret_holder = (pid_t) k;
                }
                return -EBUSY;
        }
        k = snprintf(buf, sizeof buf, "%d\n", (int) getpid());
        errno = 0; /* a short write sets none */
        if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t) k, 0) != k)
                return negative_errno();
        *ret_fd = TAKE_FD(fd);
        return 0;
}

int path_size(const char *path, uint64_t *ret) {
        _cleanup_(closep) int fd = -EBADF;
        off_t end;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        end = lseek(fd, 0, SEEK_END);
        if (end < 0)
                return negative_errno();
        *ret = (uint64_t) end;
        return 0;
}
