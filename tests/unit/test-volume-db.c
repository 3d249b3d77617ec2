/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* src/shared/volume-db.c: the read-modify-write of volume records, volume_db_update(): what it starts from,
 * when it writes, that its work runs inside the wait hooks (the daemon's engine lock given up), and that
 * updates of one record from many threads at once are none lost. */

#include <pthread.h>
#include <string.h>

#include "string-util.h"
#include "test-util.h"
#include "volume-db.h"
#include "wait-hooks.h"

static __thread int hook_depth = 0;
static int hook_calls = 0; /* begin()s, under the test's single thread */

static void hook_begin(void) {
        hook_depth++;
        __atomic_add_fetch(&hook_calls, 1, __ATOMIC_SEQ_CST);
}

static void hook_end(void) {
        hook_depth--;
}

typedef struct seen {
        int load_result;
        int depth;
        const char *set_error;
        int ret;
} seen;

static int change(volume_record *rec, int load_result, void *userdata) {
        seen *s = userdata;

        s->load_result = load_result;
        s->depth = hook_depth;
        assert_non_null(rec->id);
        if (s->set_error)
                assert_int_equal(free_and_strdup(&rec->last_error, s->set_error), 0);
        return s->ret;
}

static void test_update(void **state) {
        char *dir = test_mkdtemp(), *volumes, *path;
        volume_record rec = {};
        seen s = { .set_error = "first" };

        wait_hooks_set(hook_begin, hook_end);
        hook_calls = 0;

        /* None yet: a fresh record with only the id, written. */
        assert_int_equal(volume_db_update(dir, "vol-1", change, &s), 0);
        assert_int_equal(s.load_result, -ENOENT);
        assert_int_equal(s.depth, 1); /* inside the hooks */
        assert_int_equal(hook_depth, 0);
        assert_int_equal(hook_calls, 1);
        assert_int_equal(volume_db_load(dir, "vol-1", &rec), 0);
        assert_string_equal(rec.id, "vol-1");
        assert_string_equal(rec.last_error, "first");
        volume_record_done(&rec);

        /* Loaded, and > 0: nothing written. */
        s = (seen) { .set_error = "not written", .ret = 1 };
        assert_int_equal(volume_db_update(dir, "vol-1", change, &s), 0);
        assert_int_equal(s.load_result, 0);
        assert_int_equal(volume_db_load(dir, "vol-1", &rec), 0);
        assert_string_equal(rec.last_error, "first");
        volume_record_done(&rec);

        /* An error: returned, nothing written. */
        s = (seen) { .set_error = "not written either", .ret = -EIO };
        assert_int_equal(volume_db_update(dir, "vol-1", change, &s), -EIO);
        assert_int_equal(volume_db_load(dir, "vol-1", &rec), 0);
        assert_string_equal(rec.last_error, "first");
        volume_record_done(&rec);
        assert_int_equal(hook_depth, 0);

        /* A corrupt record: the change starts afresh (-EUCLEAN) and the write replaces it. */
        volumes = test_path(dir, "volumes");
        path = test_path(volumes, "vol-1.json");
        test_write_file(path, "{ not json", 10, 0600);
        s = (seen) { .set_error = "rewritten" };
        assert_int_equal(volume_db_update(dir, "vol-1", change, &s), 0);
        assert_int_equal(s.load_result, -EUCLEAN);
        assert_int_equal(volume_db_load(dir, "vol-1", &rec), 0);
        assert_string_equal(rec.last_error, "rewritten");
        volume_record_done(&rec);

        /* A bad id: refused before anything. */
        s = (seen) {};
        hook_calls = 0;
        assert_int_equal(volume_db_update(dir, "../x", change, &s), -EINVAL);
        assert_int_equal(volume_db_update(dir, "", change, &s), -EINVAL);
        assert_int_equal(hook_calls, 0);

        /* Removal runs inside the hooks too. */
        assert_int_equal(volume_db_remove(dir, "vol-1"), 0);
        assert_int_equal(hook_calls, 1);
        assert_int_equal(volume_db_remove(dir, "vol-1"), -ENOENT);
        assert_int_equal(test_count_entries(volumes), 0);

        wait_hooks_set(NULL, NULL);
        free(path);
        free(volumes);
        test_rm_rf(dir);
        free(dir);
}

/* Each update appends one character to last_error: a lost update is a missing character. */
#define N_THREADS 8
#define N_UPDATES 25

static int append(volume_record *rec, int load_result, void *userdata) {
        const char *c = userdata;
        char *s;

        if (asprintf(&s, "%s%s", strempty(rec->last_error), c) < 0)
                return -ENOMEM;
        free(rec->last_error);
        rec->last_error = s;
        return 0;
}

typedef struct worker {
        const char *dir;
        char mark[2];
        int failures;
} worker;

static void *run_worker(void *p) {
        worker *w = p;

        for (int i = 0; i < N_UPDATES; i++)
                if (volume_db_update(w->dir, i % 2 ? "shared" : "shared-too", append, w->mark) < 0)
                        w->failures++;
        return NULL;
}

static void test_concurrent_updates(void **state) {
        char *dir = test_mkdtemp();
        pthread_t threads[N_THREADS];
        worker workers[N_THREADS];
        size_t total = 0;

        for (int i = 0; i < N_THREADS; i++) {
                workers[i] = (worker) { .dir = dir, .mark = { (char) ('a' + i), 0 } };
                assert_int_equal(pthread_create(&threads[i], NULL, run_worker, &workers[i]), 0);
        }
        for (int i = 0; i < N_THREADS; i++) {
                assert_int_equal(pthread_join(threads[i], NULL), 0);
                assert_int_equal(workers[i].failures, 0);
        }

        for (int k = 0; k < 2; k++) {
                volume_record rec = {};
                unsigned count[N_THREADS] = {};

                assert_int_equal(volume_db_load(dir, k ? "shared" : "shared-too", &rec), 0);
                for (const char *c = rec.last_error; *c; c++) {
                        assert_true(*c >= 'a' && *c < 'a' + N_THREADS);
                        count[*c - 'a']++;
                }
                for (int i = 0; i < N_THREADS; i++) /* odd and even updates of each thread */
                        assert_int_equal(count[i], k ? N_UPDATES / 2 : N_UPDATES - N_UPDATES / 2);
                total += strlen(rec.last_error);
                volume_record_done(&rec);
        }
        assert_int_equal(total, N_THREADS * N_UPDATES);

        test_rm_rf(dir);
        free(dir);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_update),
                cmocka_unit_test(test_concurrent_updates),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
