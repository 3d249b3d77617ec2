/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The per-backend gate: concurrency bound with overlap, slot timeouts, rate-limit tokens that do not
 * count against Timeout=, backoff bounds, counters, the key-state memory, and shutdown. */

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "kms-gate.h"
#include "test-util.h"

typedef struct shared {
        kms_gate *gate;
        atomic_uint inside, max_inside, entered, failed;
} shared;

static void *worker(void *p) {
        shared *s = p;
        kms_call c;
        unsigned now, seen;

        if (kms_gate_enter(s->gate, KMS_OP_UNWRAP, &c) < 0) {
                atomic_fetch_add(&s->failed, 1);
                return NULL;
        }
        atomic_fetch_add(&s->entered, 1);
        now = atomic_fetch_add(&s->inside, 1) + 1;
        seen = atomic_load(&s->max_inside);
        while (now > seen && !atomic_compare_exchange_weak(&s->max_inside, &seen, now))
                ;
        usleep(3000); /* stay inside a moment, so that the others pile up at the gate */
        atomic_fetch_sub(&s->inside, 1);
        kms_gate_leave(&c, 0);
        return NULL;
}

static void test_concurrency_bound(void **state) {
        shared s = {};
        pthread_t t[24];
        kms_gate_status st;

        assert_int_equal(kms_gate_new(4, 0, 30 * USEC_PER_SEC, &s.gate), 0);
        for (size_t i = 0; i < ELEMENTSOF(t); i++)
                assert_int_equal(pthread_create(&t[i], NULL, worker, &s), 0);
        for (size_t i = 0; i < ELEMENTSOF(t); i++)
                assert_int_equal(pthread_join(t[i], NULL), 0);

        /* None lost, never more than 4 inside, and the calls did overlap. */
        assert_int_equal(atomic_load(&s.entered), ELEMENTSOF(t));
        assert_int_equal(atomic_load(&s.failed), 0);
        assert_true(atomic_load(&s.max_inside) <= 4);
        assert_true(atomic_load(&s.max_inside) >= 2);
        kms_gate_get_status(s.gate, &st);
        assert_int_equal(st.in_flight, 0);
        assert_int_equal(st.queued, 0);
        assert_int_equal(st.max_in_flight, atomic_load(&s.max_inside));
        assert_int_equal(st.max_concurrent, 4);
        kms_gate_free(s.gate);
}

static void test_slot_timeout(void **state) {
        kms_gate *g = NULL;
        kms_call held, c;

        assert_int_equal(kms_gate_new(1, 0, 50 * 1000, &g), 0);
        assert_int_equal(kms_gate_enter(g, KMS_OP_GET, &held), 0);
        /* The only slot is taken by a call the KMS does not answer: the next one gives up. */
        assert_int_equal(kms_gate_enter(g, KMS_OP_GET, &c), -EHOSTDOWN);
        assert_false(c.entered);
        kms_gate_leave(&c, -EHOSTDOWN); /* not entered: no effect */
        assert_false(kms_gate_healthy(g));
        kms_gate_leave(&held, 0);
        assert_int_equal(kms_gate_enter(g, KMS_OP_GET, &c), 0);
        kms_gate_leave(&c, 0);
        kms_gate_free(g);
}

static void test_rate_tokens_do_not_time_out(void **state) {
        kms_gate *g = NULL;

        /* 20 per second, bursts of 20: the last 10 of 30 calls wait for tokens far longer than the
         * 10 ms Timeout=, and must all get through (a storm beyond the quota queues). */
        assert_int_equal(kms_gate_new(2, 20, 10 * 1000, &g), 0);
        for (int i = 0; i < 30; i++) {
                kms_call c;

                assert_int_equal(kms_gate_enter(g, KMS_OP_UNWRAP, &c), 0);
                kms_gate_leave(&c, 0);
        }
        kms_gate_free(g);
}

/* RequestsPerSecond=20 as a KMS quota counts it: at most 20 starts within any second (the gate keeps a 5%
 * margin: within any 1.05 s), a burst of 20 after a pause, and no start delayed more than that needs. The
 * clock is the test's. */
static void test_rate_window(void **state) {
        const usec_t t0 = 1000 * USEC_PER_SEC, step = 10 * 1000; /* 100 calls wanting to start every 10 ms */
        const usec_t window = USEC_PER_SEC + USEC_PER_SEC / 20;
        usec_t at[130];
        kms_gate *g = NULL;
        size_t n = 0;

        assert_int_equal(kms_gate_new(2, 20, USEC_PER_SEC, &g), 0);
        for (size_t i = 0; i < 100; i++)
                at[n++] = kms_gate_reserve_start(g, t0 + i * step, 0);
        /* A pause of more than a second, then a burst of 30 at once. */
        for (size_t i = 0; i < 30; i++)
                at[n++] = kms_gate_reserve_start(g, t0 + 10 * USEC_PER_SEC, 0);

        for (size_t i = 0; i < 20; i++) /* the first 20 as they came */
                assert_int_equal(at[i], t0 + i * step);
        for (size_t i = 0; i < n; i++) {
                size_t in_window = 0;

                if (i > 0)
                        assert_true(at[i] >= at[i - 1]);
                for (size_t j = i; j < n && at[j] < at[i] + window; j++)
                        in_window++;
                if (in_window > 20)
                        fail_msg("%zu starts within 1.05 s from start %zu", in_window, i);
        }
        /* Paced, not starved: call 20 waits for call 0's window to pass, no longer; the next ones follow 1/20 of
         * it apart (not released 20 at once a window later). */
        assert_int_equal(at[20], t0 + window);
        for (size_t i = 21; i < 100; i++)
                assert_int_equal(at[i], at[i - 1] + window / 20);
        assert_int_equal(at[100], t0 + 10 * USEC_PER_SEC); /* after the pause, a burst again */
        assert_int_equal(at[119], t0 + 10 * USEC_PER_SEC);
        assert_int_equal(at[120], t0 + 10 * USEC_PER_SEC + window);
        kms_gate_free(g);

        /* The window counts from when a call did start: at 2 per second, a call that started 0.7 s late (a busy
         * host) holds its place in the window until 1.05 s after that, later than the pace (0.525 s after the
         * one before) would allow. The pace itself counts from the schedule. */
        assert_int_equal(kms_gate_new(2, 2, USEC_PER_SEC, &g), 0);
        assert_int_equal(kms_gate_reserve_start(g, t0, 0), t0);
        assert_int_equal(kms_gate_reserve_start(g, t0, 700 * 1000), t0);
        assert_int_equal(kms_gate_reserve_start(g, t0, 0), t0 + window);
        assert_int_equal(kms_gate_reserve_start(g, t0, 0), t0 + 700 * 1000 + window);
        assert_int_equal(kms_gate_reserve_start(g, t0, 0), t0 + 700 * 1000 + window + window / 2);
        kms_gate_free(g);
}

typedef struct queued_call {
        kms_gate *gate;
        atomic_uint *starts;
        unsigned place; /* among the calls' starts, from 0 */
        usec_t started; /* the gate's schedule */
        int r;
} queued_call;

static void *enter_in_turn(void *p) {
        queued_call *q = p;
        kms_call c;

        q->r = kms_gate_enter(q->gate, KMS_OP_UNWRAP, &c);
        q->place = atomic_fetch_add(q->starts, 1);
        q->started = c.started;
        kms_gate_leave(&c, 0);
        return NULL;
}

static unsigned gate_queued(kms_gate *g) {
        kms_gate_status st;

        kms_gate_get_status(g, &st);
        return st.queued;
}

/* A throttled call's retry takes the next start before the calls waiting for one. At 4 per second with 8
 * calls queued behind the window's 4 (2 s of starts), a retry sent to the back of the queue would start
 * after its 2 s Timeout= and fail: one throttled answer in a storm larger than the quota would reach its
 * caller as an error. The calls behind it keep their pace (their starts as the gate scheduled them, not
 * as this host ran them): 1.05/4 s apart, not released together once the burst's window has passed. */
static void test_throttled_retry_first(void **state) {
        const usec_t window = USEC_PER_SEC + USEC_PER_SEC / 20;
        atomic_uint starts = 0;
        queued_call q[8];
        pthread_t t[ELEMENTSOF(q)];
        kms_call c[4];
        kms_gate *g = NULL;
        usec_t first;

        assert_int_equal(kms_gate_new(16, 4, 2 * USEC_PER_SEC, &g), 0);
        for (size_t i = 0; i < ELEMENTSOF(c); i++) /* the window's 4 starts, at once */
                assert_int_equal(kms_gate_enter(g, KMS_OP_UNWRAP, &c[i]), 0);
        for (size_t i = 0; i < ELEMENTSOF(q); i++) {
                q[i] = (queued_call) { .gate = g, .starts = &starts, .r = 1 };
                assert_int_equal(pthread_create(&t[i], NULL, enter_in_turn, &q[i]), 0);
        }
        while (gate_queued(g) < ELEMENTSOF(q))
                usleep(1000);

        /* c[0] was answered "throttled": its retry starts first, within its Timeout=, once the burst's
         * window has passed. */
        first = c[0].started;
        assert_int_equal(kms_gate_backoff(&c[0]), 0);
        assert_int_equal(atomic_fetch_add(&starts, 1), 0);
        assert_true(c[0].started >= first + window);
        for (size_t i = 0; i < ELEMENTSOF(c); i++)
                kms_gate_leave(&c[i], 0);
        for (size_t i = 0; i < ELEMENTSOF(q); i++)
                assert_int_equal(pthread_join(t[i], NULL), 0);
        for (size_t i = 0; i < ELEMENTSOF(q); i++) {
                usec_t before = c[0].started; /* the start before this one */

                assert_int_equal(q[i].r, 0);
                assert_true(q[i].place >= 1 && q[i].place <= ELEMENTSOF(q));
                for (size_t j = 0; j < ELEMENTSOF(q); j++)
                        if (q[j].place == q[i].place - 1)
                                before = q[j].started;
                if (q[i].started < before + window / 4)
                        fail_msg("start %u came %" PRId64 " us after the one before it", q[i].place,
                                 (int64_t) (q[i].started - before));
        }
        assert_int_equal(atomic_load(&starts), ELEMENTSOF(q) + 1);
        assert_int_equal(gate_queued(g), 0);
        kms_gate_free(g);
}

static void test_backoff_bounded(void **state) {
        _cleanup_free_ char *text = NULL;
        size_t size = 0;
        kms_gate *g = NULL;
        const char *name = "b1";
        kms_call c;
        unsigned tries = 0;
        FILE *f;

        assert_int_equal(kms_gate_new(1, 0, 2 * USEC_PER_SEC, &g), 0);
        assert_int_equal(kms_gate_enter(g, KMS_OP_WRAP, &c), 0);
        /* A KMS that throttles forever: the retries end (-ETIME) instead of outliving Timeout=, after more
         * than one (25 ms doubling up to 2 s fits several into 2 s, however slow the host). */
        while (kms_gate_backoff(&c) == 0)
                tries++;
        assert_true(tries >= 2);
        kms_gate_leave(&c, -EAGAIN);

        f = open_memstream(&text, &size);
        assert_non_null(f);
        kms_gate_metrics_write(f, &g, &name, 1);
        fclose(f);
        assert_non_null(strstr(text, "evs_kms_requests_total{backend=\"b1\",op=\"wrap\",result=\"ok\"} 0\n"));
        assert_non_null(strstr(text, "evs_kms_in_flight{backend=\"b1\"} 0\n"));
        assert_non_null(strstr(text, "evs_kms_request_duration_seconds_count{backend=\"b1\",op=\"wrap\"} 1\n"));
        /* Each retry and the final throttled answer are counted. */
        assert_null(strstr(text, "op=\"wrap\",result=\"throttled\"} 0\n"));
        kms_gate_free(g);
}

static void test_key_states(void **state) {
        kms_gate *g = NULL;
        kms_key_state st;

        assert_int_equal(kms_gate_new(1, 0, USEC_PER_SEC, &g), 0);
        assert_int_equal(kms_gate_key_state_seen(g, "k1", &st, NULL), -ENOENT);
        kms_gate_key_state_record(g, "k1", KMS_KEY_ENABLED);
        kms_gate_key_state_record(g, "k2", KMS_KEY_PENDING_DELETION);
        kms_gate_key_state_record(g, "k1", KMS_KEY_DISABLED);
        assert_int_equal(kms_gate_key_state_seen(g, "k1", &st, NULL), 0);
        assert_int_equal(st, KMS_KEY_DISABLED);
        assert_int_equal(kms_gate_key_state_seen(g, "k2", &st, NULL), 0);
        assert_int_equal(st, KMS_KEY_PENDING_DELETION);
        kms_gate_free(g);
}

static void *hold_then_wait(void *p) {
        shared *s = p;
        kms_call c;
        int r;

        r = kms_gate_enter(s->gate, KMS_OP_GET, &c);
        atomic_store(&s->failed, r == -ECANCELED ? 1U : 2U);
        return NULL;
}

/* Last: shutdown is irreversible for the process. */
static void test_cancel(void **state) {
        shared s = {}, rated = {};
        queued_call rq[2];
        pthread_t t, rt[ELEMENTSOF(rq)];
        kms_call held, c;
        int fd;

        assert_int_equal(kms_gate_new(1, 0, 60 * USEC_PER_SEC, &s.gate), 0);
        assert_int_equal(kms_gate_enter(s.gate, KMS_OP_GET, &held), 0);
        assert_int_equal(pthread_create(&t, NULL, hold_then_wait, &s), 0);
        while (({
                kms_gate_status st;
                kms_gate_get_status(s.gate, &st);
                st.queued;
        }) == 0)
                usleep(1000);
        /* Two calls waiting for their starts under RequestsPerSecond=1, a minute away: the first sleeps
         * until its start, the second until the first has gone. */
        assert_int_equal(kms_gate_new(1, 1, USEC_PER_SEC, &rated.gate), 0);
        for (unsigned i = 0; i < 60; i++)
                (void) kms_gate_reserve_start(rated.gate, now_monotonic(), 0);
        for (size_t i = 0; i < ELEMENTSOF(rq); i++) {
                rq[i] = (queued_call) { .gate = rated.gate, .starts = &rated.entered, .r = 1 };
                assert_int_equal(pthread_create(&rt[i], NULL, enter_in_turn, &rq[i]), 0);
        }
        while (gate_queued(rated.gate) < ELEMENTSOF(rq))
                usleep(1000);
        fd = kms_gate_cancel_fd();
        assert_true(fd >= 0);
        kms_gate_cancel_all();
        /* The waiters leave at once (not after their 60 s), with -ECANCELED; so does any later call. */
        assert_int_equal(pthread_join(t, NULL), 0);
        assert_int_equal(atomic_load(&s.failed), 1);
        for (size_t i = 0; i < ELEMENTSOF(rq); i++) {
                assert_int_equal(pthread_join(rt[i], NULL), 0);
                assert_int_equal(rq[i].r, -ECANCELED);
        }
        kms_gate_free(rated.gate);
        assert_int_equal(kms_gate_enter(s.gate, KMS_OP_GET, &c), -ECANCELED);
        assert_true(kms_gate_cancelled());
        kms_gate_leave(&held, 0);
        kms_gate_free(s.gate);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_concurrency_bound),
                cmocka_unit_test(test_slot_timeout),
                cmocka_unit_test(test_rate_tokens_do_not_time_out),
                cmocka_unit_test(test_rate_window),
                cmocka_unit_test(test_throttled_retry_first),
                cmocka_unit_test(test_backoff_bounded),
                cmocka_unit_test(test_key_states),
                cmocka_unit_test(test_cancel),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
