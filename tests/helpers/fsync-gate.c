/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* A test-only LD_PRELOAD library: holds fsync(2) of the files whose path contains $EVS_FSYNC_GATE_MATCH while
 * the file $EVS_FSYNC_GATE exists, so that a test can keep one state-file write of the daemon's in progress
 * for as long as it likes and see what else goes on meanwhile. A held call first creates
 * $EVS_FSYNC_GATE.held, so the test knows the write has reached its fsync. Any other fsync() is passed on. */

#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void hold(int fd) {
        const char *match = getenv("EVS_FSYNC_GATE_MATCH"), *gate = getenv("EVS_FSYNC_GATE");
        char link[64], path[PATH_MAX], held[PATH_MAX];
        ssize_t n;
        int h;

        if (!match || !*match || !gate || !*gate)
                return;
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        n = readlink(link, path, sizeof path - 1);
        if (n <= 0)
                return;
        path[n] = '\0';
        if (!strstr(path, match) || access(gate, F_OK) < 0)
                return;
        if (snprintf(held, sizeof held, "%s.held", gate) >= (int) sizeof held)
                return;
        h = open(held, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (h >= 0)
                close(h);
        while (access(gate, F_OK) == 0)
                nanosleep(&(struct timespec) { .tv_nsec = 10 * 1000 * 1000 }, NULL);
}

/* Exported: the project builds with -fvisibility=hidden. */
__attribute__((visibility("default"))) int fsync(int fd) {
        static int (*real_fsync)(int) = NULL;

        if (!real_fsync)
                real_fsync = (int (*)(int)) dlsym(RTLD_NEXT, "fsync");
        hold(fd);
        return real_fsync(fd);
}
