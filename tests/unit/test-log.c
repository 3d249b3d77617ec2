/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Logging without a journal: every entry is one whole line, its structured fields on it, even when many
 * threads log at once (the daemon's workers do). */

#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "test-util.h"

#define THREADS 8
#define ENTRIES 200

static void *logger(void *p) {
        unsigned t = (unsigned) (uintptr_t) p;
        char field[64];

        for (unsigned i = 0; i < ENTRIES; i++) {
                const char *fields[] = { "EVS_VOLUME_ID=vol-with-a-rather-long-identifier", field, "EVS_RESULT=attached",
                                         NULL };

                snprintf(field, sizeof field, "EVS_SEQ=%u.%u", t, i);
                log_fields(LOG_INFO, 0, fields, "Attached volume %u.%u from thread %u of %u", t, i, t, THREADS);
        }
        return NULL;
}

static void test_concurrent_lines(void **state) {
        _cleanup_free_ char *dir = test_mkdtemp(), *path = test_path(dir, "log"), *text = NULL;
        pthread_t threads[THREADS];
        int fd, saved;
        size_t lines = 0;
        char *save = NULL;

        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        saved = dup(STDERR_FILENO);
        assert_true(saved >= 0);
        assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
        close(fd);
        unsetenv("JOURNAL_STREAM");
        log_setup("test-log", true); /* no journal socket here: stderr, not a terminal: "<N>" prefixes and fields */

        for (unsigned t = 0; t < THREADS; t++)
                assert_int_equal(pthread_create(&threads[t], NULL, logger, (void *) (uintptr_t) t), 0);
        for (unsigned t = 0; t < THREADS; t++)
                pthread_join(threads[t], NULL);
        assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
        close(saved);

        text = test_read_file(path, NULL);
        for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
                unsigned t, i, t2, i2, t3, n;

                if (sscanf(l, "<6>Attached volume %u.%u from thread %u of %u EVS_VOLUME_ID=vol-with-a-rather-long-identifier "
                              "EVS_SEQ=%u.%u EVS_RESULT=attached",
                           &t, &i, &t3, &n, &t2, &i2) != 6 || t != t2 || i != i2 || t != t3 || n != THREADS ||
                    !strstr(l, " EVS_RESULT=attached") || strstr(l, "<6>") != l || strstr(l + 1, "<6>"))
                        fail_msg("line %zu is not one whole entry: '%s'", lines + 1, l);
                lines++;
        }
        assert_int_equal(lines, THREADS * ENTRIES);
        test_rm_rf(dir);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_concurrent_lines),
        };

        if (access("/run/systemd/journal/socket", W_OK) == 0) {
                /* log_setup() would pick the journal: nothing of this test would reach stderr. */
                printf("1..0 # SKIP the journal socket exists: logging goes to the journal, not stderr\n");
                return 77;
        }
        return cmocka_run_group_tests(tests, NULL, NULL);
}
