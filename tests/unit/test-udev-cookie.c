/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* src/daemon/udev-cookie.c: the daemon's semop() gives the engine lock up (runs inside the wait hooks)
 * for libdevmapper's wait for udev, a blocking wait for zero on one semaphore, and for nothing else;
 * whatever it does, it is the kernel's semop() (results and errno). */

#include <errno.h>
#include <sys/ipc.h>
#include <sys/sem.h>

#include "test-util.h"
#include "wait-hooks.h"

static int begins, ends;
static __thread int depth;

static void hook_begin(void) {
        begins++;
        depth++;
}

static void hook_end(void) {
        ends++;
        depth--;
}

typedef struct fixture {
        int semid;
} fixture;

static int setup(void **state) {
        static fixture f;
        union {
                int val;
        } arg = { .val = 0 };

        f.semid = semget(IPC_PRIVATE, 1, 0600 | IPC_CREAT);
        assert_true(f.semid >= 0);
        assert_int_equal(semctl(f.semid, 0, SETVAL, arg), 0);
        begins = ends = 0;
        wait_hooks_set(hook_begin, hook_end);
        *state = &f;
        return 0;
}

static int teardown(void **state) {
        fixture *f = *state;

        wait_hooks_set(NULL, NULL);
        assert_int_equal(semctl(f->semid, 0, IPC_RMID), 0);
        return 0;
}

static void test_wait_for_zero_gives_the_lock_up(void **state) {
        fixture *f = *state;
        struct sembuf wait = { 0, 0, 0 };

        assert_int_equal(semop(f->semid, &wait, 1), 0); /* the value is 0: returns at once */
        assert_int_equal(begins, 1);
        assert_int_equal(ends, 1);
        assert_int_equal(depth, 0);
}

static void test_other_operations_keep_it(void **state) {
        fixture *f = *state;
        struct sembuf inc = { 0, 1, 0 }, dec = { 0, -1, IPC_NOWAIT }, nowait = { 0, 0, IPC_NOWAIT };
        struct sembuf two[2] = { { 0, 1, 0 }, { 0, -1, 0 } };

        assert_int_equal(semop(f->semid, &inc, 1), 0);
        assert_int_equal(semctl(f->semid, 0, GETVAL), 1);
        /* not zero, not waiting: the kernel's answer and errno come through */
        assert_int_equal(semop(f->semid, &nowait, 1), -1);
        assert_int_equal(errno, EAGAIN);
        assert_int_equal(semop(f->semid, &dec, 1), 0);
        assert_int_equal(semctl(f->semid, 0, GETVAL), 0);
        assert_int_equal(semop(f->semid, two, 2), 0);
        assert_int_equal(begins, 0);
        assert_int_equal(ends, 0);
}

static void test_errors_come_through(void **state) {
        struct sembuf wait = { 0, 0, 0 };

        (void) state;
        errno = 0;
        assert_int_equal(semop(-1, &wait, 1), -1); /* a blocking wait: inside the hooks, errno kept */
        assert_int_equal(errno, EINVAL);
        assert_int_equal(begins, 1);
        assert_int_equal(ends, 1);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_wait_for_zero_gives_the_lock_up, setup, teardown),
                cmocka_unit_test_setup_teardown(test_other_operations_keep_it, setup, teardown),
                cmocka_unit_test_setup_teardown(test_errors_come_through, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
