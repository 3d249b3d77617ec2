/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The exec backend's persistent helpers (Persistent=yes, evs-kms-exec(7) PERSISTENT HELPERS): requests served
 * one after another by the same process, concurrent calls in several, a helper that died or hung replaced,
 * helpers without the mode refused with their reason, nothing left behind when the backend goes. The helper is
 * tests/helpers/evs-kms-test-helper (serve mode, its call log has the serving pid), plus small sh scripts. One
 * shot mode's spawning (posix_spawn) is checked here for an exec failure. */

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "kms-gate.h"
#include "kms.h"
#include "test-util.h"
#include "time-util.h"

#define THREADS 8

static const char *helper;
static char work[] = "/tmp/evs-exec-serve.XXXXXX";
static char store[sizeof work + 8], logfile[sizeof work + 8];
static kms_context ctx = { .state_dir = "/nonexistent" };

static int setup_all(void **state) {
        helper = getenv("EVS_TEST_KMS_HELPER");
        if (!helper) {
                fprintf(stderr, "EVS_TEST_KMS_HELPER must be set (meson test does)\n");
                return -1;
        }
        if (!mkdtemp(work))
                return -1;
        snprintf(store, sizeof store, "%s/store", work);
        snprintf(logfile, sizeof logfile, "%s/log", work);
        (void) kms_gate_cancel_fd(); /* made on first use and kept: not one of the fds counted below */
        return 0;
}

static int teardown_all(void **state) {
        char *cmd = NULL;

        if (asprintf(&cmd, "rm -rf '%s'", work) > 0)
                (void) !system(cmd);
        free(cmd);
        return 0;
}

/* A backend from NULL-terminated key, value pairs, Persistent=yes and the store/log options first. */
static kms_backend *open_serve(const char *path, ...) {
        kms_backend_config cfg = { .name = strdup("serve"), .type = strdup("exec") };
        const char *base[] = { "Helper", path, "Persistent", "yes", "Option.dir", store, "Option.log", logfile };
        kms_backend *b = NULL;
        char *error = NULL;
        va_list ap;
        const char *k;

        for (size_t i = 0; i < ELEMENTSOF(base); i += 2) {
                cfg.settings = reallocarray(cfg.settings, cfg.n_settings + 1, sizeof(kms_setting));
                assert_non_null(cfg.settings);
                cfg.settings[cfg.n_settings++] = (kms_setting) { .key = strdup(base[i]), .value = strdup(base[i + 1]),
                                                                 .file = strdup("evs.conf"), .line = 1 };
        }
        va_start(ap, path);
        while ((k = va_arg(ap, const char *))) {
                const char *v = va_arg(ap, const char *);

                cfg.settings = reallocarray(cfg.settings, cfg.n_settings + 1, sizeof(kms_setting));
                assert_non_null(cfg.settings);
                cfg.settings[cfg.n_settings++] = (kms_setting) { .key = strdup(k), .value = strdup(v),
                                                                 .file = strdup("evs.conf"), .line = 2 };
        }
        va_end(ap);
        if (kms_backend_open(&cfg, &ctx, &b, &error) < 0)
                fail_msg("cannot open the backend: %s", strna(error));
        kms_backend_config_done(&cfg);
        return b;
}

static void assert_error_contains(kms_backend *b, const char *needle) {
        const char *e = kms_backend_error(b);

        if (!e || !strstr(e, needle))
                fail_msg("error '%s' does not contain '%s'", strna(e), needle);
        assert_null(strchr(e, '\n'));
}

static void assert_no_children(void) {
        assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
        assert_int_equal(errno, ECHILD);
}

/* The helper's call log: the number of calls, and the distinct pids that served them (up to @max). */
static size_t log_pids(pid_t *pids, size_t max, size_t *ret_calls) {
        char line[4096];
        size_t n = 0, calls = 0;
        FILE *f = fopen(logfile, "re");

        if (!f) {
                *ret_calls = 0;
                return 0;
        }
        while (fgets(line, sizeof line, f)) {
                char start[64], end[64];
                int pid;
                bool seen = false;

                assert_int_equal(sscanf(line, "%63s %63s %d", start, end, &pid), 3);
                calls++;
                for (size_t i = 0; i < n; i++)
                        seen = seen || pids[i] == pid;
                if (!seen && n < max)
                        pids[n++] = pid;
        }
        fclose(f);
        *ret_calls = calls;
        return n;
}

static void log_reset(void) {
        (void) unlink(logfile);
}

static secret *data_key(void) {
        secret *s = NULL;

        assert_int_equal(secret_new(KMS_DATA_KEY_SIZE, &s), 0);
        for (size_t i = 0; i < s->size; i++)
                s->data[i] = (uint8_t) (i * 7 + 1);
        return s;
}

/* ---- one process serves one request after another ---- */

static void test_reuse(void **state) {
        _cleanup_(kms_key_done) kms_key k = {}, d = {}, missing = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL;
        _cleanup_free_ uint8_t *w = NULL;
        kms_backend *b;
        kms_key *keys = NULL;
        unsigned fds = test_count_fds();
        size_t n, nkeys = 0, calls;
        pid_t pids[4];

        log_reset();
        b = open_serve(helper, NULL);
        assert_int_equal(kms_key_create(b, "app/serve", "served", &k), 0);
        assert_int_equal(kms_wrap(b, k.id, "vol-1", dk, &w, &n), 0);
        assert_int_equal(kms_unwrap(b, k.id, "vol-1", w, n, &out), 0);
        assert_int_equal(out->size, dk->size);
        assert_memory_equal(out->data, dk->data, dk->size);
        if (kms_key_get(b, "app/serve", &d) < 0) fail_msg("%s", kms_backend_error(b));
        assert_string_equal(d.id, k.id);
        /* An error reply leaves the helper fit to serve on. */
        assert_int_equal(kms_key_get(b, "app/nonexistent", &missing), -ENOENT);
        assert_int_equal(kms_key_list(b, &keys, &nkeys), 0);
        assert_true(nkeys >= 1);
        kms_key_array_free(keys, nkeys);

        assert_int_equal(log_pids(pids, ELEMENTSOF(pids), &calls), 1);
        assert_int_equal(calls, 6);
        assert_true(test_pid_alive(pids[0]));

        /* Freeing the backend ends its helpers: no process, no fd, no zombie left. */
        kms_backend_free(b);
        assert_false(test_pid_alive(pids[0]));
        assert_int_equal(test_count_fds(), fds);
        assert_no_children();
}

/* ---- concurrent calls run in several processes, which are then reused ---- */

typedef struct worker {
        kms_backend *b;
        pthread_barrier_t *barrier;
        const char *key;
        int r;
} worker;

static void *worker_main(void *p) {
        worker *w = p;
        kms_key k = {};

        pthread_barrier_wait(w->barrier);
        w->r = kms_key_get(w->b, w->key, &k);
        kms_key_done(&k);
        return NULL;
}

/* THREADS describes at once, of THREADS different keys (describes of one key would share a call). */
static size_t round_of(kms_backend *b, kms_key *keys) {
        pthread_barrier_t barrier;
        pthread_t t[THREADS];
        worker w[THREADS];

        pthread_barrier_init(&barrier, NULL, THREADS);
        for (size_t i = 0; i < THREADS; i++) {
                w[i] = (worker) { .b = b, .barrier = &barrier, .key = keys[i].id, .r = 1 };
                assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
        }
        for (size_t i = 0; i < THREADS; i++) {
                pthread_join(t[i], NULL);
                assert_int_equal(w[i].r, 0);
        }
        pthread_barrier_destroy(&barrier);
        return THREADS;
}

static void test_concurrent(void **state) {
        kms_key k[THREADS] = {};
        kms_backend *b;
        pid_t pids[THREADS * 2 + 1];
        size_t first, calls;

        b = open_serve(helper, "Option.delay", "300", "Option.ops", "describe", NULL);
        for (size_t i = 0; i < THREADS; i++) {
                char alias[64];

                snprintf(alias, sizeof alias, "app/concurrent-%zu", i);
                assert_int_equal(kms_key_create(b, alias, NULL, &k[i]), 0);
        }
        log_reset();
        round_of(b, k);
        first = log_pids(pids, ELEMENTSOF(pids), &calls);
        assert_int_equal(calls, THREADS);
        assert_true(first > 1);       /* the calls overlapped, each in a process of its own */
        assert_true(first <= THREADS); /* and none was started for nothing */

        /* A second round finds them idle: no new process. */
        round_of(b, k);
        assert_int_equal(log_pids(pids, ELEMENTSOF(pids), &calls), first);
        assert_int_equal(calls, 2 * THREADS);
        kms_backend_free(b);
        for (size_t i = 0; i < THREADS; i++)
                kms_key_done(&k[i]);
        assert_no_children();
}

/* ---- describes of one key at once share a call; one asked while a call is in flight waits for the next ---- */

typedef struct describer {
        kms_backend *b;
        const char *key;
        pthread_barrier_t *barrier;
        kms_key k;
        int r;
} describer;

static void *describe_main(void *p) {
        describer *d = p;

        if (d->barrier)
                pthread_barrier_wait(d->barrier);
        d->r = kms_key_get(d->b, d->key, &d->k);
        return NULL;
}

static unsigned in_flight(kms_backend *b) {
        kms_gate_status st;

        kms_gate_get_status(b->gate, &st);
        return st.in_flight;
}

static void test_describes_shared(void **state) {
        _cleanup_(kms_key_done) kms_key k = {}, late = {};
        pthread_barrier_t barrier;
        describer d[THREADS], a;
        pthread_t t[THREADS], ta;
        pid_t pids[THREADS + 1];
        kms_backend *b;
        size_t calls;

        b = open_serve(helper, "Option.delay", "300", "Option.ops", "describe", NULL);
        assert_int_equal(kms_key_create(b, "app/shared", NULL, &k), 0);

        /* THREADS at once: all answered, by fewer calls than callers. */
        log_reset();
        pthread_barrier_init(&barrier, NULL, THREADS);
        for (size_t i = 0; i < THREADS; i++) {
                d[i] = (describer) { .b = b, .key = k.id, .barrier = &barrier, .r = 1 };
                assert_int_equal(pthread_create(&t[i], NULL, describe_main, &d[i]), 0);
        }
        for (size_t i = 0; i < THREADS; i++) {
                pthread_join(t[i], NULL);
                assert_int_equal(d[i].r, 0);
                assert_string_equal(d[i].k.id, k.id);
                assert_int_equal(d[i].k.state, KMS_KEY_ENABLED);
                kms_key_done(&d[i].k);
        }
        pthread_barrier_destroy(&barrier);
        (void) log_pids(pids, ELEMENTSOF(pids), &calls);
        if (calls < 1 || calls > THREADS / 2)
                fail_msg("%zu describes reached the KMS for %d callers", calls, THREADS);

        /* Asked while a call is in flight, it does not take that call's answer (the KMS may have read the key
         * before it was asked): it waits for that call to end, then makes its own. */
        log_reset();
        a = (describer) { .b = b, .key = k.id, .r = 1 };
        assert_int_equal(pthread_create(&ta, NULL, describe_main, &a), 0);
        while (in_flight(b) == 0)
                usleep(1000);
        assert_int_equal(kms_key_get(b, k.id, &late), 0);
        assert_string_equal(late.id, k.id);
        pthread_join(ta, NULL);
        assert_int_equal(a.r, 0);
        kms_key_done(&a.k);
        (void) log_pids(pids, ELEMENTSOF(pids), &calls);
        assert_int_equal(calls, 2);

        /* An error is shared with its reason. */
        assert_int_equal(kms_key_get(b, "app/nonexistent", &late), -ENOENT);
        assert_non_null(kms_backend_error(b));
        kms_backend_free(b);
        assert_no_children();
}

/* ---- a helper that died between requests is replaced, the request is not lost ---- */

static void test_died_between(void **state) {
        _cleanup_(kms_key_done) kms_key k = {}, d = {};
        kms_backend *b;
        pid_t pids[4];
        size_t calls;

        log_reset();
        b = open_serve(helper, NULL);
        assert_int_equal(kms_key_create(b, "app/died", NULL, &k), 0);
        assert_int_equal(log_pids(pids, ELEMENTSOF(pids), &calls), 1);
        assert_int_equal(kill(pids[0], SIGKILL), 0);
        for (int i = 0; i < 500 && test_pid_alive(pids[0]); i++)
                usleep(10000);
        assert_false(test_pid_alive(pids[0]));

        assert_int_equal(kms_key_get(b, k.id, &d), 0);
        assert_int_equal(log_pids(pids, ELEMENTSOF(pids), &calls), 2);
        assert_int_equal(calls, 2);
        kms_backend_free(b);
        assert_no_children();
}

/* ---- a hung request times out; its helper (and its process group) goes, the next call works ---- */

static void test_hang(void **state) {
        _cleanup_(kms_key_done) kms_key k = {}, d = {};
        _cleanup_(secret_freep) secret *dk = data_key();
        _cleanup_free_ uint8_t *w = NULL;
        describer a;
        pthread_t ta;
        kms_backend *b;
        pid_t pids[4];
        size_t calls, n;

        b = open_serve(helper, "Option.hang", "1", "Option.ops", "describe", "Timeout", "1", NULL);
        assert_int_equal(kms_key_create(b, "app/hang", NULL, &k), 0);
        log_reset();
        assert_int_equal(kms_key_get(b, k.id, &d), -EHOSTDOWN);
        assert_error_contains(b, "timed out after 1s (describe)");
        assert_int_equal(log_pids(pids, ELEMENTSOF(pids), &calls), 1);
        assert_false(test_pid_alive(pids[0]));

        /* A describe asked while one hangs takes its timeout, with its reason, rather than hang as long again. */
        log_reset();
        a = (describer) { .b = b, .key = k.id, .r = 1 };
        assert_int_equal(pthread_create(&ta, NULL, describe_main, &a), 0);
        while (in_flight(b) == 0)
                usleep(1000);
        assert_int_equal(kms_key_get(b, k.id, &d), -EHOSTDOWN);
        assert_error_contains(b, "timed out after 1s (describe)");
        pthread_join(ta, NULL);
        assert_int_equal(a.r, -EHOSTDOWN);
        assert_int_equal(log_pids(pids, ELEMENTSOF(pids), &calls), 1);

        assert_int_equal(kms_wrap(b, k.id, "vol-h", dk, &w, &n), 0);
        assert_int_equal(log_pids(pids, ELEMENTSOF(pids), &calls), 2);
        kms_backend_free(b);
        assert_no_children();
}

/* ---- helpers without the mode, and misbehaving ones ---- */

static char *write_script(const char *name, const char *body) {
        char *path = test_path(work, name);

        test_write_file(path, body, strlen(body), 0755);
        return path;
}

static void expect_refused(kms_backend *b, const char *needle) {
        kms_key k = {};
        unsigned fds = test_count_fds();

        assert_int_equal(kms_key_get(b, "app/any", &k), -EPROTO);
        assert_error_contains(b, "does not support Persistent=yes (op serve)");
        assert_error_contains(b, needle);
        assert_int_equal(test_count_fds(), fds);
        assert_no_children();
        kms_backend_free(b);
}

static void test_refused(void **state) {
        _cleanup_free_ char *oneshot = write_script("oneshot", "#!/bin/sh\ncat >/dev/null\necho '{\"keys\": []}'\n"),
                            *wrong = write_script("wrong", "#!/bin/sh\nread -r hello\necho '{\"ready\": true}'\nsleep 60\n"),
                            *quits = write_script("quits", "#!/bin/sh\necho 'no serving here' >&2\nexit 4\n");

        /* The test helper with serve=no answers the handshake as a helper without the mode would. */
        expect_refused(open_serve(helper, "Option.serve", "no", NULL), "operation serve is not implemented");
        /* A one-shot helper reads its stdin to the end: the handshake has no answer. */
        expect_refused(open_serve(oneshot, "Timeout", "1", NULL), "no answer within 1s");
        expect_refused(open_serve(wrong, NULL), "it answered \"{\"ready\": true}\", not {\"serve\":1}");
        expect_refused(open_serve(quits, NULL), "exited with status 4 without an answer; stderr: no serving here");
}

static size_t count_lines(const char *path) {
        char buf[256];
        size_t lines = 0;
        FILE *f = fopen(path, "re");

        assert_non_null(f);
        while (fgets(buf, sizeof buf, f))
                lines++;
        fclose(f);
        return lines;
}

static void test_misbehaving(void **state) {
        /* Each script logs its pid at start; the reply is well formed, what comes with it is not. */
        _cleanup_free_ char *extra = NULL, *dies = NULL, *once = NULL, *garbage = NULL, *starts = NULL;
        char *body = NULL;
        kms_backend *b;
        kms_key *keys = NULL;
        size_t n = 0;

        assert_true(asprintf(&starts, "%s/starts", work) > 0);
        assert_true(asprintf(&body,
                             "#!/bin/sh\necho $$ >>%s\nread -r hello\necho '{\"serve\":1}'\n"
                             "while read -r req; do printf '{\"keys\": []}\\n{\"keys\": []}\\n'; done\n",
                             starts) > 0);
        extra = write_script("extra", body);
        free(body);
        assert_true(asprintf(&body,
                             "#!/bin/sh\nread -r hello\necho '{\"serve\":1}'\nread -r req\necho 'dying' >&2\nexit 3\n") > 0);
        dies = write_script("dies", body);
        free(body);
        once = write_script("once", "#!/bin/sh\nread -r hello\necho '{\"serve\":1}'\nread -r req\necho '{\"keys\": []}'\n"
                                   "read -r req\nexit 0\n");

        /* Two lines for one request: the first is the reply, the helper is not used again. */
        b = open_serve(extra, NULL);
        for (int i = 0; i < 3; i++) {
                assert_int_equal(kms_key_list(b, &keys, &n), 0);
                assert_int_equal(n, 0);
                kms_key_array_free(keys, n);
        }
        assert_int_equal(count_lines(starts), 3);
        kms_backend_free(b);

        /* Serves one request, reads the next and exits without a word (as a helper on its way out between
         * requests would look): a list, which can be repeated, is answered by a new helper every time. */
        b = open_serve(once, NULL);
        for (int i = 0; i < 20; i++) {
                if (kms_key_list(b, &keys, &n) < 0)
                        fail_msg("list %d: %s", i, kms_backend_error(b));
                assert_int_equal(n, 0);
                kms_key_array_free(keys, n);
        }
        kms_backend_free(b);

        /* A malformed reply fails its request, and the helper that sent it is not asked again. */
        assert_int_equal(unlink(starts), 0);
        assert_true(asprintf(&body,
                             "#!/bin/sh\necho $$ >>%s\nread -r hello\necho '{\"serve\":1}'\n"
                             "while read -r req; do echo 'not json'; done\n",
                             starts) > 0);
        garbage = write_script("garbage", body);
        free(body);
        b = open_serve(garbage, NULL);
        for (int i = 0; i < 2; i++) {
                assert_int_equal(kms_key_list(b, &keys, &n), -EPROTO);
                assert_error_contains(b, "malformed reply, not one JSON object (list");
        }
        kms_backend_free(b);
        assert_int_equal(count_lines(starts), 2);

        /* Exiting with a request outstanding fails that request, with its stderr. */
        b = open_serve(dies, NULL);
        assert_int_equal(kms_key_list(b, &keys, &n), -EPROTO);
        assert_error_contains(b, "exited with status 3 without a reply (list); stderr: dying");
        kms_backend_free(b);
        assert_no_children();
}

/* ---- configuration, and one-shot spawning ---- */

static void test_config_and_spawn(void **state) {
        kms_backend_config cfg = { .name = strdup("serve"), .type = strdup("exec") };
        _cleanup_free_ char *garbage = write_script("garbage-binary", "\x7f" "ELF this is not an executable\n");
        kms_backend *b = NULL;
        kms_key *keys = NULL;
        char *error = NULL;
        size_t n = 0;

        cfg.settings = calloc(2, sizeof(kms_setting));
        assert_non_null(cfg.settings);
        cfg.settings[0] = (kms_setting) { .key = strdup("Helper"), .value = strdup(helper), .file = strdup("evs.conf"), .line = 4 };
        cfg.settings[1] = (kms_setting) { .key = strdup("Persistent"), .value = strdup("sometimes"), .file = strdup("evs.conf"), .line = 5 };
        cfg.n_settings = 2;
        assert_int_equal(kms_backend_open(&cfg, &ctx, &b, &error), -EINVAL);
        assert_non_null(error);
        assert_non_null(strstr(error, "evs.conf:5: Persistent= must be a boolean (yes or no): sometimes"));
        free(error);
        kms_backend_config_done(&cfg);

        /* A file that is executable but no program: the exec's own error, in one shot mode and persistent. */
        cfg = (kms_backend_config) { .name = strdup("once"), .type = strdup("exec") };
        cfg.settings = calloc(1, sizeof(kms_setting));
        assert_non_null(cfg.settings);
        cfg.settings[0] = (kms_setting) { .key = strdup("Helper"), .value = strdup(garbage), .file = strdup("evs.conf"), .line = 4 };
        cfg.n_settings = 1;
        assert_int_equal(kms_backend_open(&cfg, &ctx, &b, &error), 0);
        kms_backend_config_done(&cfg);
        if (getenv("EVS_VALGRIND")) {
                /* valgrind runs posix_spawn()'s vfork as a fork: the exec's error cannot reach the parent,
                 * whose child then ends with status 127. */
                assert_int_equal(kms_key_list(b, &keys, &n), -EPROTO);
                assert_error_contains(b, "exited with status 127");
                kms_backend_free(b);
                assert_no_children();
                return;
        }
        assert_int_equal(kms_key_list(b, &keys, &n), -EINVAL);
        assert_error_contains(b, "cannot execute helper");
        assert_error_contains(b, "Exec format error");
        kms_backend_free(b);

        b = open_serve(garbage, NULL);
        assert_int_equal(kms_key_list(b, &keys, &n), -EINVAL);
        assert_error_contains(b, "Exec format error");
        kms_backend_free(b);
        assert_no_children();
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_reuse),
                cmocka_unit_test(test_concurrent),
                cmocka_unit_test(test_describes_shared),
                cmocka_unit_test(test_died_between),
                cmocka_unit_test(test_hang),
                cmocka_unit_test(test_refused),
                cmocka_unit_test(test_misbehaving),
                cmocka_unit_test(test_config_and_spawn),
        };

        return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
