/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* src/shared/probe.c: a read that ends hands its result over; one that hangs ends the wait with -ETIMEDOUT
 * and is not started again while it hangs (a second wait answers at once, without a second read); once it
 * ends its result is freed and the next call reads afresh; a read started ahead (probe_start()) is taken by
 * the next call, or freed with its handle; 8 callers of one key never have two reads of it under way;
 * the read's own error comes back. The hanging "disk" is a read of a pipe that the test writes to. */

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "probe.h"
#include "test-util.h"

static int gate[2] = { -1, -1 };       /* "hang" reads a byte from gate[0] */
static atomic_uint calls, frees, busy, most_busy;

typedef struct result {
        char text[16];
} result;

static void result_free(void *p) {
        atomic_fetch_add(&frees, 1);
        free(p);
}

static int reader(const char *key, void **ret) {
        unsigned now = atomic_fetch_add(&busy, 1) + 1, seen = atomic_load(&most_busy);
        result *res;
        char c;

        while (now > seen && !atomic_compare_exchange_weak(&most_busy, &seen, now))
                ;
        atomic_fetch_add(&calls, 1);
        if (strcmp(key, "hang") == 0)
                assert_int_equal(read(gate[0], &c, 1), 1);
        atomic_fetch_sub(&busy, 1);
        if (strcmp(key, "broken") == 0)
                return -EIO;
        res = calloc(1, sizeof *res);
        if (!res)
                return -ENOMEM;
        snprintf(res->text, sizeof res->text, "read %s", key);
        *ret = res;
        return 0;
}

static void wait_idle(void) {
        while (probe_in_flight() > 0)
                usleep(1000);
}

static int setup(void **state) {
        (void) state;
        atomic_store(&calls, 0);
        atomic_store(&frees, 0);
        atomic_store(&most_busy, 0);
        return pipe(gate) < 0 ? -1 : 0;
}

static int teardown(void **state) {
        (void) state;
        wait_idle();
        close(gate[0]);
        close(gate[1]);
        return 0;
}

static void test_ends(void **state) {
        result *res = NULL;

        (void) state;
        assert_int_equal(probe_run(reader, result_free, "vda", 10 * USEC_PER_SEC, (void **) &res), 0);
        assert_string_equal(res->text, "read vda");
        free(res);
        wait_idle();
        assert_int_equal(atomic_load(&calls), 1);
        assert_int_equal(atomic_load(&frees), 0);
        assert_int_equal(probe_run(reader, result_free, "broken", 10 * USEC_PER_SEC, (void **) &res), -EIO);
        assert_int_equal(atomic_load(&calls), 2);
}

static void test_hangs(void **state) {
        result *res = NULL;

        (void) state;
        assert_int_equal(probe_run(reader, result_free, "hang", 20 * 1000, (void **) &res), -ETIMEDOUT);
        assert_null(res);
        assert_int_equal(probe_in_flight(), 1);
        /* Asked again while it hangs: no second read, however long this one would wait. */
        assert_int_equal(probe_run(reader, result_free, "hang", 20 * 1000, (void **) &res), -ETIMEDOUT);
        assert_int_equal(atomic_load(&calls), 1);
        assert_int_equal(probe_in_flight(), 1);
        /* Another key is read meanwhile. */
        assert_int_equal(probe_run(reader, result_free, "vdb", 10 * USEC_PER_SEC, (void **) &res), 0);
        free(res);
        res = NULL;

        /* The disk answers: nobody waits for that result any more, so it is freed. */
        assert_int_equal(write(gate[1], "x", 1), 1);
        wait_idle();
        assert_int_equal(atomic_load(&frees), 1);
        assert_int_equal(write(gate[1], "x", 1), 1);
        assert_int_equal(probe_run(reader, result_free, "hang", 10 * USEC_PER_SEC, (void **) &res), 0);
        assert_string_equal(res->text, "read hang");
        assert_int_equal(atomic_load(&calls), 3);
        free(res);
}

static void test_started_ahead(void **state) {
        result *res = NULL;
        probe *p;

        (void) state;
        p = probe_start(reader, result_free, "vdc");
        assert_non_null(p);
        assert_int_equal(probe_run(reader, result_free, "vdc", 10 * USEC_PER_SEC, (void **) &res), 0);
        assert_string_equal(res->text, "read vdc");
        free(res);
        assert_int_equal(atomic_load(&calls), 1);
        /* Taken: the next call reads again. */
        assert_int_equal(probe_run(reader, result_free, "vdc", 10 * USEC_PER_SEC, (void **) &res), 0);
        free(res);
        assert_int_equal(atomic_load(&calls), 2);
        probe_release(p);

        /* Started ahead and never asked for: freed with its handle. */
        p = probe_start(reader, result_free, "vdd");
        assert_non_null(p);
        wait_idle();
        assert_int_equal(atomic_load(&frees), 0);
        probe_release(p);
        assert_int_equal(atomic_load(&frees), 1);
        probe_release(NULL);
}

/* A hanging key waited for by 8 threads: one wait for all, then each its own read, one at a time. */
static void *run_hang(void *arg) {
        result *res = NULL;
        int r = probe_run(reader, result_free, "hang", 60 * USEC_PER_SEC, (void **) &res);

        free(res);
        *(int *) arg = r;
        return NULL;
}

static void test_one_read_per_key(void **state) {
        pthread_t t[8];
        int r[8];

        (void) state;
        for (size_t i = 0; i < 8; i++)
                assert_int_equal(pthread_create(&t[i], NULL, run_hang, &r[i]), 0);
        /* Every read the 8 make ends once it has its byte. */
        for (size_t i = 0; i < 8; i++)
                assert_int_equal(write(gate[1], "x", 1), 1);
        for (size_t i = 0; i < 8; i++) {
                assert_int_equal(pthread_join(t[i], NULL), 0);
                assert_int_equal(r[i], 0);
        }
        wait_idle();
        /* Each of the 8 took one result, each from a read of its own: never two under way at once. */
        assert_int_equal(atomic_load(&calls), 8);
        assert_int_equal(atomic_load(&most_busy), 1);
        assert_int_equal(atomic_load(&frees), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_ends, setup, teardown),
                cmocka_unit_test_setup_teardown(test_hangs, setup, teardown),
                cmocka_unit_test_setup_teardown(test_started_ahead, setup, teardown),
                cmocka_unit_test_setup_teardown(test_one_read_per_key, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
