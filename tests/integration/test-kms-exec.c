/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The exec backend: the whole protocol against a real helper (exec-helper-test), misbehaving
 * helpers, the shipped Vault helper against a fake Vault HTTP server on 127.0.0.1 (fake-vault-server, started
 * here) and the AWS helper against a stand-in `aws` CLI (fake-cli/). */

#include <dirent.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "crypto.h"
#include "kms.h"
#include "test-util.h"
#include "time-util.h"

static const char *test_helper, *vault_helper, *aws_helper, *vault_server;
static char vault_addr[64];
static pid_t vault_pid = -1;
static char work[] = "/tmp/evs-exec-test.XXXXXX";
static char *store_dir, *cred_dir;
static kms_context ctx = { .state_dir = "/nonexistent" };

/* The fake Vault server (tests/integration/fake-vault-server) in work/vault: it listens on a free port of
 * 127.0.0.1 and writes it to work/vault/port, its pid to work/vault/pid. Not our child (forked twice): the
 * tests check that the backend leaves no child of theirs behind. */
static int start_vault_server(void) {
        char dir[sizeof work + 16], port_file[sizeof dir + 8], pid_file[sizeof dir + 8];
        unsigned port = 0;
        int pid = 0;
        pid_t p;

        snprintf(dir, sizeof dir, "%s/vault", work);
        snprintf(port_file, sizeof port_file, "%s/port", dir);
        snprintf(pid_file, sizeof pid_file, "%s/pid", dir);
        if (mkdir(dir, 0700) < 0)
                return -1;
        p = fork();
        if (p < 0)
                return -1;
        if (p == 0) {
                (void) setsid();
                if (fork() == 0) {
                        execl("/usr/bin/python3", "python3", vault_server, dir, (char *) NULL);
                        _exit(127);
                }
                _exit(0);
        }
        (void) waitpid(p, NULL, 0);
        for (unsigned i = 0; i < 200 && (port == 0 || pid == 0); i++) {
                FILE *f;

                if ((f = fopen(port_file, "re"))) {
                        if (fscanf(f, "%u", &port) != 1)
                                port = 0;
                        fclose(f);
                }
                if ((f = fopen(pid_file, "re"))) {
                        if (fscanf(f, "%d", &pid) != 1)
                                pid = 0;
                        fclose(f);
                }
                if (port == 0 || pid == 0)
                        usleep(50 * 1000);
        }
        if (port == 0 || pid <= 0) {
                fprintf(stderr, "fake-vault-server did not start within 10 s\n");
                return -1;
        }
        vault_pid = pid;
        snprintf(vault_addr, sizeof vault_addr, "http://127.0.0.1:%u", port);
        return 0;
}

static int setup_all(void **state) {
        const char *fake = getenv("EVS_TEST_FAKE_CLI");
        char *path = NULL;

        test_helper = getenv("EVS_TEST_EXEC_HELPER");
        vault_helper = getenv("EVS_TEST_VAULT_HELPER");
        aws_helper = getenv("EVS_TEST_AWS_HELPER");
        vault_server = getenv("EVS_TEST_VAULT_SERVER");
        if (!test_helper || !vault_helper || !aws_helper || !fake || !vault_server) {
                fprintf(stderr, "EVS_TEST_EXEC_HELPER, EVS_TEST_VAULT_HELPER, EVS_TEST_AWS_HELPER, EVS_TEST_VAULT_SERVER and EVS_TEST_FAKE_CLI must be set (meson test does)\n");
                return -1;
        }
        if (!mkdtemp(work))
                return -1;
        if (start_vault_server() < 0)
                return -1;
        /* The helpers inherit PATH and HOME: the stand-in CLIs come first and keep state in HOME. */
        if (asprintf(&path, "%s:%s", fake, getenv("PATH") ?: "/usr/bin:/bin") < 0)
                return -1;
        setenv("PATH", path, 1);
        setenv("HOME", work, 1);
        free(path);
        if (asprintf(&store_dir, "%s/store", work) < 0 || asprintf(&cred_dir, "%s/creds", work) < 0)
                return -1;
        mkdir(cred_dir, 0700);
        ctx.credentials_dir = cred_dir;
        return 0;
}

static int teardown_all(void **state) {
        char *cmd = NULL;

        if (vault_pid > 0)
                (void) kill(vault_pid, SIGTERM);
        if (asprintf(&cmd, "rm -rf '%s'", work) > 0)
                (void) !system(cmd);
        free(cmd);
        free(store_dir);
        free(cred_dir);
        return 0;
}

/* A backend from NULL-terminated key, value pairs. */
static int open_exec(kms_backend **ret, char **ret_error, ...) {
        kms_backend_config cfg = { .name = strdup("ext"), .type = strdup("exec") };
        va_list ap;
        const char *k;
        int r;

        va_start(ap, ret_error);
        while ((k = va_arg(ap, const char *))) {
                const char *v = va_arg(ap, const char *);

                cfg.settings = reallocarray(cfg.settings, cfg.n_settings + 1, sizeof(kms_setting));
                assert_non_null(cfg.settings);
                cfg.settings[cfg.n_settings++] = (kms_setting) {
                        .key = strdup(k), .value = strdup(v), .file = strdup("evs.conf"), .line = 10 + (unsigned) cfg.n_settings,
                };
        }
        va_end(ap);
        r = kms_backend_open(&cfg, &ctx, ret, ret_error);
        kms_backend_config_done(&cfg);
        return r;
}

static kms_backend *open_helper(const char *misbehave, const char *timeout) {
        kms_backend *b = NULL;
        char *error = NULL;

        assert_int_equal(open_exec(&b, &error, "Helper", test_helper, "Timeout", timeout ?: "10", "Option.dir", store_dir,
                                   "Option.misbehave", misbehave ?: "", NULL),
                         0);
        return b;
}

static secret *data_key(void) {
        secret *s = NULL;

        assert_int_equal(crypto_random_secret(KMS_DATA_KEY_SIZE, &s), 0);
        return s;
}

static void assert_error_contains(kms_backend *b, const char *needle) {
        const char *e = kms_backend_error(b);

        if (!e || !strstr(e, needle))
                fail_msg("error '%s' does not contain '%s'", strna(e), needle);
}

/* ---- configuration ---- */

static void expect_config_error(const char *needle, ...) {
        kms_backend_config cfg = { .name = strdup("ext"), .type = strdup("exec") };
        kms_backend *b = NULL;
        char *error = NULL;
        va_list ap;
        const char *k;

        va_start(ap, needle);
        while ((k = va_arg(ap, const char *))) {
                const char *v = va_arg(ap, const char *);

                cfg.settings = reallocarray(cfg.settings, cfg.n_settings + 1, sizeof(kms_setting));
                cfg.settings[cfg.n_settings++] = (kms_setting) {
                        .key = strdup(k), .value = strdup(v), .file = strdup("evs.conf"), .line = 3,
                };
        }
        va_end(ap);
        assert_int_equal(kms_backend_open(&cfg, &ctx, &b, &error), -EINVAL);
        assert_null(b);
        if (!error || !strstr(error, needle))
                fail_msg("'%s' does not contain '%s'", strna(error), needle);
        free(error);
        kms_backend_config_done(&cfg);
}

static void test_config(void **state) {
        expect_config_error("needs Helper=", "Timeout", "5", NULL);
        expect_config_error("evs.conf:3: Helper= must be an absolute path", "Helper", "helper", NULL);
        expect_config_error("Timeout= must be 1..3600", "Helper", "/bin/true", "Timeout", "0", NULL);
        expect_config_error("Timeout= must be 1..3600", "Helper", "/bin/true", "Timeout", "10s", NULL);
        expect_config_error("Timeout= must be 1..3600", "Helper", "/bin/true", "Timeout", "-1", NULL);
        expect_config_error("Timeout= must be 1..3600", "Helper", "/bin/true", "Timeout", "3601", NULL);
        expect_config_error("invalid option name Option.=", "Helper", "/bin/true", "Option.", "x", NULL);
        expect_config_error("invalid option name Option.a b=", "Helper", "/bin/true", "Option.a b", "x", NULL);
        expect_config_error("unknown key Region= in [Backend ext]", "Helper", "/bin/true", "Region", "x", NULL);
}

/* ---- the protocol ---- */

static void test_parse_timestamp(void **state) {
        usec_t t = 1;

        assert_int_equal(parse_timestamp("2026-11-28T01:02:03Z", &t), 0);
        assert_int_equal(t, UINT64_C(1795827723) * USEC_PER_SEC);
        assert_int_equal(parse_timestamp("2026-11-28 03:02:03.250+02:00", &t), 0);
        assert_int_equal(t, UINT64_C(1795827723) * USEC_PER_SEC + 250000);
        assert_int_equal(parse_timestamp("2026-11-27T23:32:03-01:30", &t), 0);
        assert_int_equal(t, UINT64_C(1795827723) * USEC_PER_SEC);
        assert_int_equal(parse_timestamp("2026-11-28T01:02:03", &t), -EINVAL);
        assert_int_equal(parse_timestamp("2026-11-28T01:02:03Zjunk", &t), -EINVAL);
        assert_int_equal(parse_timestamp("2026-11-28", &t), -EINVAL);
        assert_int_equal(parse_timestamp("1969-12-31T23:59:59Z", &t), -EINVAL);
        assert_int_equal(parse_timestamp("2026-11-28T01:02:03.Z", &t), -EINVAL);
        assert_int_equal(parse_timestamp("2026-11-28T01:02:03+2:00", &t), -EINVAL);
        assert_int_equal(parse_timestamp("", &t), -EINVAL);
}

static void test_protocol(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_helper(NULL, NULL);
        _cleanup_(kms_key_done) kms_key k = {}, k2 = {}, g = {}, g2 = {}, none = {}, d = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL;
        _cleanup_free_ uint8_t *w = NULL, *w2 = NULL;
        kms_key *keys = NULL;
        secret *bad = NULL;
        size_t n, n2, nk = 0;
        usec_t t0 = now_realtime();

        assert_int_equal(kms_key_create(b, "app/one", "first key", &k), 0);
        assert_true(uuid_valid(k.id));
        assert_string_equal(k.alias, "app/one");
        assert_string_equal(k.description, "first key");
        assert_string_equal(k.backend, "ext");
        assert_int_equal(k.state, KMS_KEY_ENABLED);
        assert_true(k.created >= t0 - 2 * USEC_PER_SEC && k.created <= now_realtime() + USEC_PER_SEC);
        assert_int_equal(k.deletion_date, 0);
        assert_int_equal(kms_key_create(b, NULL, NULL, &k2), 0);
        assert_null(k2.alias);
        assert_null(k2.description);
        assert_int_equal(kms_key_create(b, "app/one", NULL, &none), -EEXIST);
        assert_error_contains(b, "alias app/one is taken");

        assert_int_equal(kms_key_get(b, k.id, &g), 0);
        assert_string_equal(g.alias, "app/one");
        assert_int_equal(kms_key_get(b, "app/one", &g2), 0);
        assert_string_equal(g2.id, k.id);
        assert_int_equal(kms_key_get(b, "app/none", &none), -ENOENT);
        assert_error_contains(b, "no key app/none");

        assert_int_equal(kms_key_list(b, &keys, &nk), 0);
        assert_true(nk >= 2);
        kms_key_array_free(keys, nk);

        assert_int_equal(kms_key_get(b, KMS_DEFAULT_KEY_ALIAS, &d), 0);
        assert_string_equal(d.alias, KMS_DEFAULT_KEY_ALIAS);

        /* Wrap/unwrap. */
        assert_int_equal(kms_wrap(b, k.id, "vol-1", dk, &w, &n), 0);
        assert_true(n <= KMS_WRAPPED_MAX);
        assert_memory_equal(w, "evst1:", 6);
        assert_int_equal(kms_unwrap(b, k.id, "vol-1", w, n, &out), 0);
        assert_true(secret_equal(out, dk));
        assert_int_equal(kms_unwrap(b, k.id, "vol-2", w, n, &bad), -EBADMSG);
        assert_error_contains(b, "fails authentication");
        w[n - 5] = w[n - 5] == 'A' ? 'B' : 'A';
        assert_int_equal(kms_unwrap(b, k.id, "vol-1", w, n, &bad), -EBADMSG);
        assert_int_equal(kms_unwrap(b, k2.id, "vol-1", w, n, &bad), -EXDEV);
        w[3] = 0x01; /* not printable: refused before the helper is asked */
        assert_int_equal(kms_unwrap(b, k.id, "vol-1", w, n, &bad), -EBADMSG);
        assert_null(bad);

        /* Lifecycle. */
        kms_key_done(&g);
        assert_int_equal(kms_key_set_enabled(b, k.id, false, &g), 0);
        kms_key_done(&g);
        assert_int_equal(kms_key_get(b, k.id, &g), 0);
        assert_int_equal(g.state, KMS_KEY_DISABLED);
        kms_key_done(&g);
        assert_int_equal(kms_wrap(b, k.id, "vol-1", dk, &w2, &n2), -EKEYREVOKED);
        assert_error_contains(b, "is disabled");
        assert_int_equal(kms_key_set_enabled(b, "app/one", true, &g), 0);
        assert_int_equal(g.state, KMS_KEY_ENABLED);
        kms_key_done(&g);

        assert_int_equal(kms_key_schedule_deletion(b, k.id, 7, &g), 0);
        assert_int_equal(g.state, KMS_KEY_PENDING_DELETION);
        assert_true(g.deletion_date >= t0 + 7 * USEC_PER_DAY - 2 * USEC_PER_SEC);
        assert_true(g.deletion_date <= now_realtime() + 7 * USEC_PER_DAY + USEC_PER_SEC);
        kms_key_done(&g);
        assert_int_equal(kms_wrap(b, k.id, "vol-1", dk, &w2, &n2), -EKEYEXPIRED);
        assert_int_equal(kms_key_set_enabled(b, k.id, true, NULL), -EKEYREJECTED);
        assert_int_equal(kms_key_schedule_deletion(b, k.id, 7, NULL), -EKEYREJECTED);
        assert_int_equal(kms_key_cancel_deletion(b, k.id, &g), 0);
        assert_int_equal(g.state, KMS_KEY_DISABLED);
        assert_int_equal(g.deletion_date, 0);
        kms_key_done(&g);
        assert_int_equal(kms_key_cancel_deletion(b, k.id, NULL), -EKEYREJECTED);
        assert_int_equal(kms_key_set_enabled(b, k.id, true, NULL), 0);

        /* Protected by the generic layer, the helper is not even asked. */
        assert_int_equal(kms_key_set_enabled(b, KMS_DEFAULT_KEY_ALIAS, false, NULL), -KMS_EPROTECTED);
}

static void test_destroyed(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_helper(NULL, NULL), *later = NULL;
        _cleanup_(kms_key_done) kms_key k = {}, g = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL;
        _cleanup_free_ uint8_t *w = NULL, *w2 = NULL;
        char when[FORMAT_TIMESTAMP_MAX], *error = NULL;
        size_t n, n2;

        assert_int_equal(kms_key_create(b, "app/doomed", NULL, &k), 0);
        assert_int_equal(kms_wrap(b, k.id, "vol-d", dk, &w, &n), 0);
        assert_int_equal(kms_key_schedule_deletion(b, k.id, 7, NULL), 0);

        format_timestamp(when, sizeof when, now_realtime() + 8 * USEC_PER_DAY);
        assert_int_equal(open_exec(&later, &error, "Helper", test_helper, "Option.dir", store_dir, "Option.now", when, NULL), 0);
        assert_int_equal(kms_key_get(later, k.id, &g), 0);
        assert_int_equal(g.state, KMS_KEY_DESTROYED);
        assert_int_equal(kms_wrap(later, k.id, "vol-d", dk, &w2, &n2), -ENOKEY);
        assert_int_equal(kms_unwrap(later, k.id, "vol-d", w, n, &out), -ENOKEY);
        assert_int_equal(kms_key_cancel_deletion(later, k.id, NULL), -ENOKEY);
}

static void test_no_lifecycle(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = NULL;
        _cleanup_(kms_key_done) kms_key k = {};
        char *error = NULL;

        assert_int_equal(open_exec(&b, &error, "Helper", test_helper, "Option.dir", store_dir, "Option.no-lifecycle", "1",
                                   NULL),
                         0);
        assert_int_equal(kms_key_create(b, "app/static", NULL, &k), 0);
        assert_int_equal(kms_key_set_enabled(b, k.id, false, NULL), -EOPNOTSUPP);
        assert_error_contains(b, "this KMS has no disable");
        assert_int_equal(kms_key_schedule_deletion(b, k.id, 30, NULL), -EOPNOTSUPP);
        assert_int_equal(kms_key_cancel_deletion(b, k.id, NULL), -EOPNOTSUPP);
}

/* What the helper sees: argv, environment, request. */
static void test_invocation(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = NULL;
        _cleanup_(kms_key_done) kms_key k = {};
        _cleanup_(secret_freep) secret *dk = data_key();
        _cleanup_free_ uint8_t *w = NULL;
        _cleanup_free_ char *record = NULL, *text = NULL, *b64 = NULL;
        char *error = NULL, *line, *save = NULL;
        size_t n, lines = 0;
        FILE *f;
        long size;

        assert_true(asprintf(&record, "%s/record.jsonl", work) > 0);
        assert_int_equal(open_exec(&b, &error, "Helper", test_helper, "Option.dir", store_dir, "Option.record", record,
                                   "Option.region", "eu-west-0", "Option.region", "eu-north-1", NULL),
                         0);
        setenv("EVS_SHOULD_NOT_LEAK", "1", 1);
        assert_int_equal(kms_key_create(b, "app/seen", NULL, &k), 0);
        assert_int_equal(kms_wrap(b, k.id, "vol-seen", dk, &w, &n), 0);
        unsetenv("EVS_SHOULD_NOT_LEAK");

        f = fopen(record, "re");
        assert_non_null(f);
        fseek(f, 0, SEEK_END);
        size = ftell(f);
        rewind(f);
        text = calloc(1, (size_t) size + 1);
        assert_int_equal(fread(text, 1, (size_t) size, f), (size_t) size);
        fclose(f);

        assert_int_equal(base64_encode(dk->data, dk->size, &b64), 0);
        assert_null(strstr(text, b64)); /* the helper records "<32 bytes>", and argv/env never had it */

        for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                json_object *o = json_tokener_parse(line), *argv, *env, *req, *v, *opts;

                assert_non_null(o);
                lines++;
                assert_true(json_object_object_get_ex(o, "argv", &argv));
                assert_int_equal(json_object_array_length(argv), 2);
                assert_string_equal(json_object_get_string(json_object_array_get_idx(argv, 0)), test_helper);
                assert_true(json_object_object_get_ex(o, "request", &req));
                assert_true(json_object_object_get_ex(req, "op", &v));
                assert_string_equal(json_object_get_string(json_object_array_get_idx(argv, 1)), json_object_get_string(v));
                assert_true(json_object_object_get_ex(req, "version", &v));
                assert_int_equal(json_object_get_int(v), 1);
                assert_true(json_object_object_get_ex(req, "options", &opts));
                assert_true(json_object_object_get_ex(opts, "region", &v));
                assert_string_equal(json_object_get_string(v), "eu-north-1"); /* the later line wins */

                assert_true(json_object_object_get_ex(o, "env", &env));
                json_object_object_foreach(env, key, val) {
                        if (!streq(key, "PATH") && !streq(key, "HOME") && !streq(key, "LANG") &&
                            !streq(key, "CREDENTIALS_DIRECTORY") && !streq(key, "LC_CTYPE") /* python sets it */)
                                fail_msg("unexpected environment variable %s", key);
                        if (streq(key, "LANG"))
                                assert_string_equal(json_object_get_string(val), "C");
                        if (streq(key, "CREDENTIALS_DIRECTORY"))
                                assert_string_equal(json_object_get_string(val), cred_dir);
                }
                assert_true(json_object_object_get_ex(env, "CREDENTIALS_DIRECTORY", NULL));
                if (streq(json_object_get_string(json_object_array_get_idx(argv, 1)), "wrap")) {
                        assert_true(json_object_object_get_ex(req, "context", &v));
                        assert_true(json_object_object_get_ex(v, "volume_id", &v));
                        assert_string_equal(json_object_get_string(v), "vol-seen");
                        assert_true(json_object_object_get_ex(req, "plaintext", &v));
                        assert_string_equal(json_object_get_string(v), "<32 bytes>");
                }
                json_object_put(o);
        }
        assert_int_equal(lines, 2);
}

/* ---- misbehaving helpers ---- */

static void test_timeout(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_helper("sleep", "1");
        _cleanup_(kms_key_done) kms_key k = {};
        _cleanup_free_ char *pidfile = NULL;
        unsigned fds = test_count_fds();
        usec_t t0 = now_monotonic(), dt;
        FILE *f;
        int pid = 0;

        assert_int_equal(kms_key_get(b, "app/any", &k), -EHOSTDOWN);
        dt = now_monotonic() - t0;
        assert_true(dt >= USEC_PER_SEC);
        assert_true(dt < 2 * USEC_PER_SEC);
        assert_error_contains(b, "timed out after 1s");
        assert_int_equal(test_count_fds(), fds);

        /* The helper's whole process group is gone, not only the helper. */
        assert_true(asprintf(&pidfile, "%s/grandchild.pid", work) > 0);
        f = fopen(pidfile, "re");
        assert_non_null(f);
        assert_int_equal(fscanf(f, "%d", &pid), 1);
        fclose(f);
        for (int i = 0; i < 100 && test_pid_alive(pid); i++)
                usleep(10000);
        assert_false(test_pid_alive(pid));
}

static void expect_misbehave(const char *mode, int expect, const char *needle) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_helper(mode, "5");
        _cleanup_(kms_key_done) kms_key k = {};
        unsigned fds = test_count_fds();

        assert_int_equal(kms_key_get(b, "app/any", &k), expect);
        assert_error_contains(b, needle);
        assert_null(strchr(kms_backend_error(b), '\n'));
        assert_int_equal(test_count_fds(), fds);
        assert_int_equal(waitpid(-1, NULL, WNOHANG), -1); /* nothing left to reap */
        assert_int_equal(errno, ECHILD);
}

static void test_garbage(void **state) {
        expect_misbehave("garbage", -EPROTO, "malformed reply, not one JSON object");
}

static void test_oversize(void **state) {
        expect_misbehave("oversize", -EPROTO, "reply larger than 65536 bytes");
}

static void test_exit1(void **state) {
        expect_misbehave("exit1", -EPROTO, "exited with status 1 without a reply");
        expect_misbehave("exit1", -EPROTO, "stderr: boom: something broke");
}

static void test_signal(void **state) {
        expect_misbehave("signal", -EPROTO, "killed by signal SEGV");
}

static void test_stderr(void **state) {
        expect_misbehave("stderr", -EHOSTDOWN, "cannot reach the KMS; stderr: diagnostic line 1|diagnostic line 2");
}

static void test_bad_replies(void **state) {
        expect_misbehave("badtypes", -EPROTO, "'state' missing or not one of");
        expect_misbehave("nonzero-json", -EPROTO, "exited with status 3 without an error object");
        expect_misbehave("unknown-code", -EPROTO, "unknown error code 'weird'");
}

static void test_big_stderr(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_helper("big-stderr", "5");
        kms_key *keys = NULL;
        size_t n = 0;

        /* 200 KB on stderr must not block the helper; the reply still counts. */
        assert_int_equal(kms_key_list(b, &keys, &n), 0);
        assert_true(n > 0);
        kms_key_array_free(keys, n);
}

static void test_bad_unwrap_wrap_replies(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *good = open_helper(NULL, NULL), *bp = open_helper("bad-plaintext", NULL),
                                     *bc = open_helper("bad-ciphertext-type", NULL);
        _cleanup_(kms_key_done) kms_key k = {};
        _cleanup_(secret_freep) secret *dk = data_key();
        _cleanup_free_ uint8_t *w = NULL, *w2 = NULL;
        secret *out = NULL;
        size_t n, n2;

        assert_int_equal(kms_key_create(good, "app/replies", NULL, &k), 0);
        assert_int_equal(kms_wrap(good, k.id, "v", dk, &w, &n), 0);
        assert_int_equal(kms_unwrap(bp, k.id, "v", w, n, &out), -EPROTO);
        assert_error_contains(bp, "'plaintext' is not base64");
        assert_int_equal(kms_wrap(bc, k.id, "v", dk, &w2, &n2), -EPROTO);
        assert_error_contains(bc, "'ciphertext' missing");
        assert_null(out);
}

static char *write_script(const char *name, const char *body, mode_t mode) {
        char *path = NULL;
        FILE *f;

        assert_true(asprintf(&path, "%s/%s", work, name) > 0);
        f = fopen(path, "we");
        assert_non_null(f);
        fputs(body, f);
        fclose(f);
        assert_int_equal(chmod(path, mode), 0);
        return path;
}

static void test_odd_helpers(void **state) {
        _cleanup_free_ char *noread = write_script("noread", "#!/bin/sh\necho '{\"keys\": []}'\n", 0755),
                            *noexec = write_script("noexec", "#!/bin/sh\nexit 0\n", 0644),
                            *empty = write_script("empty", "#!/bin/sh\ncat >/dev/null\n", 0755),
                            *trailing = write_script("trailing", "#!/bin/sh\necho '{\"keys\": []} {}'\n", 0755),
                            *daemonize = write_script("daemonize", "#!/bin/sh\nsleep 1000 &\necho '{\"keys\": []}'\n", 0755);
        kms_backend *b = NULL;
        kms_key *keys = NULL;
        size_t n = 99;
        char *error = NULL;
        usec_t t0;

        /* Does not read its stdin: fine. */
        assert_int_equal(open_exec(&b, &error, "Helper", noread, NULL), 0);
        assert_int_equal(kms_key_list(b, &keys, &n), 0);
        assert_int_equal(n, 0);
        kms_key_array_free(keys, n);
        b = kms_backend_free(b);

        assert_int_equal(open_exec(&b, &error, "Helper", noexec, NULL), 0);
        assert_int_equal(kms_key_list(b, &keys, &n), -EINVAL);
        assert_error_contains(b, "is not executable");
        b = kms_backend_free(b);

        assert_int_equal(open_exec(&b, &error, "Helper", "/nonexistent/helper", NULL), 0);
        assert_int_equal(kms_key_list(b, &keys, &n), -EINVAL);
        b = kms_backend_free(b);

        assert_int_equal(open_exec(&b, &error, "Helper", empty, NULL), 0);
        assert_int_equal(kms_key_list(b, &keys, &n), -EPROTO);
        assert_error_contains(b, "empty reply");
        b = kms_backend_free(b);

        assert_int_equal(open_exec(&b, &error, "Helper", trailing, NULL), 0);
        assert_int_equal(kms_key_list(b, &keys, &n), -EPROTO);
        b = kms_backend_free(b);

        /* A background child holding stdout open does not delay the reply. */
        assert_int_equal(open_exec(&b, &error, "Helper", daemonize, "Timeout", "5", NULL), 0);
        t0 = now_monotonic();
        assert_int_equal(kms_key_list(b, &keys, &n), 0);
        assert_true(now_monotonic() - t0 < 2 * USEC_PER_SEC);
        kms_key_array_free(keys, n);
        b = kms_backend_free(b);
}

/* ---- the shipped helpers, against stand-in CLIs ---- */

static void write_file(const char *path, const char *text, mode_t mode) {
        FILE *f = fopen(path, "we");

        assert_non_null(f);
        fputs(text, f);
        fclose(f);
        assert_int_equal(chmod(path, mode), 0);
}

static void test_vault(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = NULL, *wrongtoken = NULL, *down = NULL;
        _cleanup_(kms_key_done) kms_key k = {}, g = {}, none = {}, d = {}, nd = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL;
        _cleanup_free_ uint8_t *w = NULL, *w2 = NULL;
        _cleanup_free_ char *tok = NULL, *badtok = NULL;
        kms_key *keys = NULL;
        secret *bad = NULL;
        char *error = NULL;
        size_t n, n2, nk = 0;
        bool seen = false;

        assert_true(asprintf(&tok, "%s/vault-token", cred_dir) > 0);
        write_file(tok, "s.test-root-token\n", 0400);
        assert_true(asprintf(&badtok, "%s/vault-bad", cred_dir) > 0);
        write_file(badtok, "s.wrong\n", 0400);

        assert_int_equal(open_exec(&b, &error, "Helper", vault_helper, "Option.address", vault_addr,
                                   "Option.token-file", "vault-token", NULL),
                         0);
        assert_int_equal(kms_key_create(b, "app/vault-one", NULL, &k), 0);
        assert_string_equal(k.id, "app.vault-one");
        assert_string_equal(k.alias, "app/vault-one");
        assert_int_equal(k.state, KMS_KEY_ENABLED);
        assert_true(k.created > 0);
        assert_int_equal(kms_key_get(b, "app/vault-one", &g), 0);
        assert_string_equal(g.id, "app.vault-one");
        assert_int_equal(kms_key_create(b, "app/vault-one", NULL, &none), -EEXIST);
        assert_int_equal(kms_key_get(b, "app/vault-none", &none), -ENOENT);
        assert_int_equal(kms_key_get(b, KMS_DEFAULT_KEY_ALIAS, &d), 0);
        assert_string_equal(d.id, "evs.default");

        assert_int_equal(kms_key_list(b, &keys, &nk), 0);
        for (size_t i = 0; i < nk; i++)
                seen = seen || streq(keys[i].id, "app.vault-one");
        assert_true(seen);
        kms_key_array_free(keys, nk);

        {
                unsigned version = 0;

                /* The helper reports transit's key version (the vN of the ciphertext). */
                assert_int_equal(kms_wrap_versioned(b, k.id, "vol-v", dk, &w, &n, &version), 0);
                assert_int_equal(version, 1);
        }
        assert_memory_equal(w, "vault:v1:", 9);
        assert_int_equal(kms_unwrap_versioned(b, k.id, "vol-v", w, n, 1, &out), 0);
        assert_true(secret_equal(out, dk));
        out = secret_free(out);
        assert_int_equal(kms_unwrap(b, k.id, "vol-v", w, n, &out), 0);
        assert_true(secret_equal(out, dk));
        assert_int_equal(kms_unwrap(b, k.id, "vol-other", w, n, &bad), -EBADMSG);
        assert_error_contains(b, "message authentication failed");
        w[n - 4] = w[n - 4] == 'A' ? 'B' : 'A';
        assert_int_equal(kms_unwrap(b, k.id, "vol-v", w, n, &bad), -EBADMSG);
        assert_int_equal(kms_unwrap(b, "app.vault-none", "vol-v", w, n, &bad), -ENOENT);

        /* Transit has no disabled or pending-deletion states. */
        assert_int_equal(kms_key_set_enabled(b, k.id, false, NULL), -EOPNOTSUPP);
        assert_int_equal(kms_key_schedule_deletion(b, k.id, 7, NULL), -EOPNOTSUPP);

        /* A key made outside without derivation cannot bind the volume: refused. */
        {
                _cleanup_free_ char *cmd = NULL;

                assert_true(asprintf(&cmd, "/usr/bin/python3 '%s' --request %s POST transit/keys/plain '{\"type\": \"aes256-gcm96\"}'",
                                     vault_server, vault_addr) > 0);
                assert_int_equal(system(cmd), 0);
        }
        assert_int_equal(kms_key_get(b, "plain", &nd), 0);
        assert_int_equal(kms_wrap(b, "plain", "vol-v", dk, &w2, &n2), -EINVAL);
        assert_error_contains(b, "derived");

        /* Authentication failure and an unreachable server. */
        assert_int_equal(open_exec(&wrongtoken, &error, "Helper", vault_helper, "Option.address", vault_addr,
                                   "Option.token-file", "vault-bad", NULL),
                         0);
        assert_int_equal(kms_wrap(wrongtoken, k.id, "vol-v", dk, &w2, &n2), -EHOSTDOWN);
        assert_error_contains(wrongtoken, "permission denied");
        assert_int_equal(open_exec(&down, &error, "Helper", vault_helper, "Option.address", "http://127.0.0.1:1",
                                   "Option.token-file", "vault-token", NULL),
                         0);
        assert_int_equal(kms_key_get(down, k.id, &none), -EHOSTDOWN);
        assert_error_contains(down, "connection refused");
        assert_null(bad);
}

/* The Vault helper as a persistent helper (Persistent=yes) through the backend: the same answers as one shot,
 * ciphertexts usable across the two modes, errors that leave it serving, nothing left when the backend goes. */
static void test_vault_persistent(void **state) {
        _cleanup_(kms_key_done) kms_key k = {}, none = {}, again = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL, *out2 = NULL;
        _cleanup_free_ uint8_t *w = NULL, *w1 = NULL;
        kms_backend *b = NULL, *once = NULL, *down = NULL;
        char *error = NULL;
        size_t n, n1;

        assert_int_equal(open_exec(&b, &error, "Helper", vault_helper, "Persistent", "yes", "Option.address", vault_addr,
                                   "Option.token-file", "vault-token", NULL),
                         0);
        assert_int_equal(open_exec(&once, &error, "Helper", vault_helper, "Option.address", vault_addr,
                                   "Option.token-file", "vault-token", NULL),
                         0);
        assert_int_equal(kms_key_create(b, "app/vault-served", NULL, &k), 0);
        assert_string_equal(k.id, "app.vault-served");
        assert_int_equal(kms_key_get(b, "app/vault-served-none", &none), -ENOENT);
        assert_int_equal(kms_key_create(b, "app/vault-served", NULL, &again), -EEXIST);
        assert_int_equal(kms_wrap(b, k.id, "vol-p", dk, &w, &n), 0);
        assert_int_equal(kms_unwrap(once, k.id, "vol-p", w, n, &out), 0); /* persistent wrap, one-shot unwrap */
        assert_true(secret_equal(out, dk));
        assert_int_equal(kms_wrap(once, k.id, "vol-p", dk, &w1, &n1), 0);
        assert_int_equal(kms_unwrap(b, k.id, "vol-p", w1, n1, &out2), 0); /* and the other way round */
        assert_true(secret_equal(out2, dk));
        kms_backend_free(b);
        kms_backend_free(once);

        assert_int_equal(open_exec(&down, &error, "Helper", vault_helper, "Persistent", "yes", "Option.address",
                                   "http://127.0.0.1:1", "Option.token-file", "vault-token", NULL),
                         0);
        assert_int_equal(kms_key_get(down, k.id, &none), -EHOSTDOWN);
        assert_error_contains(down, "connection refused");
        kms_backend_free(down);
        assert_int_equal(waitpid(-1, NULL, WNOHANG), -1); /* no helper left behind */
        assert_int_equal(errno, ECHILD);
}

static void test_aws(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = NULL, *down = NULL;
        _cleanup_(kms_key_done) kms_key k = {}, k2 = {}, g = {}, none = {}, d = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL;
        _cleanup_free_ uint8_t *w = NULL, *w2 = NULL;
        kms_key *keys = NULL;
        secret *bad = NULL;
        char *error = NULL;
        size_t n, n2, nk = 0;
        bool seen = false;
        usec_t t0 = now_realtime();

        assert_int_equal(open_exec(&b, &error, "Helper", aws_helper, "Option.region", "eu-west-1", NULL), 0);
        assert_int_equal(kms_key_create(b, "app/aws-one", "an AWS key", &k), 0);
        assert_true(uuid_valid(k.id));
        assert_string_equal(k.alias, "app/aws-one");
        assert_string_equal(k.description, "an AWS key");
        assert_int_equal(k.state, KMS_KEY_ENABLED);
        assert_true(k.created >= t0 - 2 * USEC_PER_SEC);
        assert_int_equal(kms_key_create(b, NULL, NULL, &k2), 0);
        assert_null(k2.alias);
        assert_int_equal(kms_key_create(b, "app/aws-one", NULL, &none), -EEXIST);
        assert_int_equal(kms_key_get(b, "app/aws-one", &g), 0);
        assert_string_equal(g.id, k.id);
        kms_key_done(&g);
        assert_int_equal(kms_key_get(b, k.id, &g), 0);
        assert_string_equal(g.alias, "app/aws-one");
        kms_key_done(&g);
        assert_int_equal(kms_key_get(b, "app/aws-none", &none), -ENOENT);
        assert_error_contains(b, "NotFoundException");
        assert_int_equal(kms_key_get(b, KMS_DEFAULT_KEY_ALIAS, &d), 0);
        assert_string_equal(d.alias, KMS_DEFAULT_KEY_ALIAS);

        assert_int_equal(kms_key_list(b, &keys, &nk), 0);
        for (size_t i = 0; i < nk; i++)
                seen = seen || (streq(keys[i].id, k.id) && streq_ptr(keys[i].alias, "app/aws-one"));
        assert_true(seen);
        kms_key_array_free(keys, nk);

        assert_int_equal(kms_wrap(b, k.id, "vol-a", dk, &w, &n), 0);
        assert_int_equal(kms_unwrap(b, k.id, "vol-a", w, n, &out), 0);
        assert_true(secret_equal(out, dk));
        assert_int_equal(kms_unwrap(b, k.id, "vol-b", w, n, &bad), -EBADMSG);
        assert_error_contains(b, "InvalidCiphertextException");
        assert_int_equal(kms_unwrap(b, k2.id, "vol-a", w, n, &bad), -EXDEV);
        assert_error_contains(b, "IncorrectKeyException");

        assert_int_equal(kms_key_set_enabled(b, k.id, false, &g), 0);
        assert_int_equal(g.state, KMS_KEY_DISABLED);
        kms_key_done(&g);
        assert_int_equal(kms_wrap(b, k.id, "vol-a", dk, &w2, &n2), -EKEYREVOKED);
        assert_error_contains(b, "DisabledException");
        assert_int_equal(kms_unwrap(b, k.id, "vol-a", w, n, &bad), -EKEYREVOKED);
        assert_int_equal(kms_key_set_enabled(b, k.id, true, NULL), 0);

        assert_int_equal(kms_key_schedule_deletion(b, k.id, 7, &g), 0);
        assert_int_equal(g.state, KMS_KEY_PENDING_DELETION);
        assert_true(g.deletion_date >= t0 + 7 * USEC_PER_DAY - 2 * USEC_PER_SEC);
        kms_key_done(&g);
        assert_int_equal(kms_wrap(b, k.id, "vol-a", dk, &w2, &n2), -EKEYEXPIRED);
        assert_error_contains(b, "pending deletion");
        assert_int_equal(kms_unwrap(b, k.id, "vol-a", w, n, &bad), -EKEYEXPIRED);
        assert_int_equal(kms_key_set_enabled(b, k.id, true, NULL), -EKEYREJECTED);
        assert_int_equal(kms_key_cancel_deletion(b, k.id, &g), 0);
        assert_int_equal(g.state, KMS_KEY_DISABLED); /* as AWS leaves it */
        kms_key_done(&g);
        assert_int_equal(kms_key_set_enabled(b, k.id, true, NULL), 0);
        assert_int_equal(kms_wrap(b, k.id, "vol-a", dk, &w2, &n2), 0);

        /* Unreachable endpoint. */
        assert_int_equal(open_exec(&down, &error, "Helper", aws_helper, "Option.region", "eu-west-1", "Option.endpoint-url",
                                   "http://127.0.0.1:1", NULL),
                         0);
        assert_int_equal(kms_key_get(down, k.id, &none), -EHOSTDOWN);
        assert_error_contains(down, "Could not connect to the endpoint URL");
        assert_null(bad);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_config),
                cmocka_unit_test(test_parse_timestamp),
                cmocka_unit_test(test_protocol),
                cmocka_unit_test(test_destroyed),
                cmocka_unit_test(test_no_lifecycle),
                cmocka_unit_test(test_invocation),
                cmocka_unit_test(test_timeout),
                cmocka_unit_test(test_garbage),
                cmocka_unit_test(test_oversize),
                cmocka_unit_test(test_exit1),
                cmocka_unit_test(test_signal),
                cmocka_unit_test(test_stderr),
                cmocka_unit_test(test_bad_replies),
                cmocka_unit_test(test_big_stderr),
                cmocka_unit_test(test_bad_unwrap_wrap_replies),
                cmocka_unit_test(test_odd_helpers),
                cmocka_unit_test(test_vault),
                cmocka_unit_test(test_vault_persistent),
                cmocka_unit_test(test_aws),
        };

        if (system("/usr/bin/python3 -c 'import cryptography' 2>/dev/null") != 0) {
                printf("SKIP: the test helpers need /usr/bin/python3 with python3-cryptography\n");
                return 77;
        }
        signal(SIGPIPE, SIG_DFL); /* the backend must cope without the caller ignoring SIGPIPE */
        return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
