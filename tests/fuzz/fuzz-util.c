/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "fuzz-util.h"
#include "macro.h"

static char *scratch;

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st, (void) flag, (void) ftw;
        return remove(path) < 0 ? 0 : 0;
}

static void remove_scratch(void) {
        if (scratch)
                (void) nftw(scratch, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fuzz_scratch_dir(void) {
        const char *base = getenv("TMPDIR");

        if (scratch)
                return scratch;
        if (!base)
                base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        if (asprintf(&scratch, "%s/evs-fuzz.XXXXXX", base) < 0 || !mkdtemp(scratch))
                abort();
        atexit(remove_scratch);
        return scratch;
}

void fuzz_write_file(const char *path, const uint8_t *data, size_t size) {
        _cleanup_free_ char *dir = strdup(path);
        char *slash = dir ? strrchr(dir, '/') : NULL;
        int fd;

        if (!slash)
                abort();
        *slash = 0;
        if (mkdir_p(dir, 0700) < 0)
                abort();
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || (size > 0 && write(fd, data, size) != (ssize_t) size) || close(fd) < 0)
                abort();
}
