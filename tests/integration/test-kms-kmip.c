/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The kmip backend against a real PyKMIP server (run through kmip-server.sh), plus servers that
 * misbehave on purpose: one that accepts TCP and never answers, and a TLS server that answers
 * with broken KMIP. */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "crypto.h"
#include "kms.h"

static const char *dir, *port, *script;
static kms_context test_ctx = { .state_dir = "/nonexistent" };

static int setup_all(void **state) {
        dir = getenv("EVS_TEST_KMIP_DIR");
        port = getenv("EVS_TEST_KMIP_PORT");
        script = getenv("EVS_TEST_KMIP_SCRIPT");
        if (!dir || !port || !script) {
                fprintf(stderr, "run me through tests/integration/kmip-server.sh\n");
                return -1;
        }
        return 0;
}

static char *path(const char *name) {
        char *p = NULL;

        assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
        return p;
}

/* Builds a config from NULL-terminated key, value pairs; setting i is on line i + 2 of test.conf
 * (line 1 is the section header). */
static void config_add(kms_backend_config *cfg, const char *k, const char *v) {
        cfg->settings = reallocarray(cfg->settings, cfg->n_settings + 1, sizeof(kms_setting));
        assert_non_null(cfg->settings);
        cfg->settings[cfg->n_settings] = (kms_setting) {
                .key = strdup(k), .value = strdup(v), .file = strdup("test.conf"), .line = (unsigned) cfg->n_settings + 2,
        };
        cfg->n_settings++;
}

/* The usual settings, then the overrides (NULL-terminated pairs; a NULL value drops the key). */
static void config_build(kms_backend_config *cfg, const char *name, va_list ap) {
        static const char *const keys[] = { "Type", "Host", "Port", "CAFile", "CertificateFile", "KeyFile", "Timeout" };
        _cleanup_free_ char *ca = path("ca.pem"), *cert = path("client.pem"), *key = path("client.key");
        const char *values[] = { "kmip", "127.0.0.1", port, ca, cert, key, "5" };
        const char *over[32][2];
        size_t n_over = 0;
        const char *k;

        while ((k = va_arg(ap, const char *))) {
                assert_true(n_over < ELEMENTSOF(over));
                over[n_over][0] = k;
                over[n_over][1] = va_arg(ap, const char *);
                n_over++;
        }

        *cfg = (kms_backend_config) { .name = strdup(name), .type = strdup("kmip") };
        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                const char *v = values[i];
                bool dropped = false;

                for (size_t j = 0; j < n_over; j++)
                        if (streq(over[j][0], keys[i])) {
                                v = over[j][1];
                                dropped = !v;
                                over[j][0] = "";
                        }
                if (!dropped)
                        config_add(cfg, keys[i], v);
        }
        for (size_t j = 0; j < n_over; j++)
                if (!streq(over[j][0], "") && over[j][1])
                        config_add(cfg, over[j][0], over[j][1]);
}

static int try_open(kms_backend **ret, char **ret_error, const char *name, ...) {
        kms_backend_config cfg;
        va_list ap;
        int r;

        va_start(ap, name);
        config_build(&cfg, name, ap);
        va_end(ap);
        *ret_error = NULL;
        r = kms_backend_open(&cfg, &test_ctx, ret, ret_error);
        kms_backend_config_done(&cfg);
        return r;
}

#define open_backend(name, ...)                                                              \
        ({                                                                                   \
                kms_backend *_b = NULL;                                                      \
                char *_e = NULL;                                                             \
                int _r = try_open(&_b, &_e, name, ##__VA_ARGS__, NULL);                      \
                if (_r < 0)                                                                  \
                        fail_msg("open %s: %s: %s", name, strerror(-_r), strna(_e));         \
                free(_e);                                                                    \
                _b;                                                                          \
        })

static secret *data_key(void) {
        secret *s = NULL;

        assert_int_equal(crypto_random_secret(KMS_DATA_KEY_SIZE, &s), 0);
        return s;
}

static void script_run(const char *verb, const char *arg, char *out, size_t out_size) {
        _cleanup_free_ char *cmd = NULL;
        FILE *f;
        size_t n = 0;
        int status;

        assert_true(asprintf(&cmd, "'%s' %s '%s' %s%s%s", script, verb, dir, arg ? "'" : "", strempty(arg), arg ? "'" : "") > 0);
        f = popen(cmd, "r");
        assert_non_null(f);
        if (out) {
                n = fread(out, 1, out_size - 1, f);
                out[n] = 0;
                while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
                        out[--n] = 0;
        }
        status = pclose(f);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                fail_msg("%s failed", cmd);
}

static usec_t elapsed_since(usec_t start) {
        return now_monotonic() - start;
}

/* Expects r < 0 == @want and prints the reason. */
#define assert_errno(b, expr, want)                                                                \
        do {                                                                                       \
                int _r = (expr);                                                                   \
                if (_r != (want))                                                                  \
                        fail_msg("%s = %d (%s), want %d (%s): %s", #expr, _r, strerror(-_r), want, \
                                 strerror(-(want)), strna(kms_backend_error(b)));                  \
                fprintf(stderr, "  %s -> %s: %s\n", #expr, strerror(-_r), strna(kms_backend_error(b))); \
        } while (0)

/* ---- configuration ---- */

static void expect_config_error(unsigned line, const char *needle, ...) {
        kms_backend_config cfg;
        kms_backend *b = NULL;
        char *error = NULL, prefix[32];
        va_list ap;
        int r;

        va_start(ap, needle);
        config_build(&cfg, "kmip", ap);
        va_end(ap);
        r = kms_backend_open(&cfg, &test_ctx, &b, &error);
        kms_backend_config_done(&cfg);
        fprintf(stderr, "  config error: %s\n", strna(error));
        assert_int_equal(r, -EINVAL);
        assert_null(b);
        assert_non_null(error);
        (void) snprintf(prefix, sizeof prefix, "test.conf:%u: ", line);
        if (strncmp(error, prefix, strlen(prefix)) != 0 || !strstr(error, needle))
                fail_msg("error '%s' does not start with '%s' or lacks '%s'", error, prefix, needle);
        free(error);
}

static void test_config(void **state) {
        _cleanup_free_ char *ca = path("ca.pem"), *key2 = path("client2.key"), *missing = path("nope.pem"),
                            *subdir = path("dir.pem"), *fifo = path("fifo.pem");
        kms_backend *b;

        /* Lines: 1 section, 2 Type, 3 Host, 4 Port, 5 CAFile, 6 CertificateFile, 7 KeyFile, 8 Timeout. */
        expect_config_error(9, "unknown key Colour=", "Colour", "blue", NULL);
        expect_config_error(3, "Host=", "Host", "bad host", NULL);
        expect_config_error(3, "Host=", "Host", "", NULL);
        expect_config_error(4, "Port=", "Port", "0", NULL);
        expect_config_error(4, "Port=", "Port", "65536", NULL);
        expect_config_error(4, "Port=", "Port", "56x", NULL);
        expect_config_error(4, "Port=", "Port", "-1", NULL);
        expect_config_error(8, "Timeout=", "Timeout", "0", NULL);
        expect_config_error(8, "Timeout=", "Timeout", "ten", NULL);
        expect_config_error(8, "Timeout=", "Timeout", "3601", NULL);
        expect_config_error(8, "Timeout=", "Timeout", "5m", NULL);
        expect_config_error(8, "Timeout=", "Timeout", "1.", NULL);
        expect_config_error(5, "absolute path", "CAFile", "ca.pem", NULL);
        expect_config_error(5, "No such file", "CAFile", missing, NULL);
        /* Not a file: a FIFO would hold the open (OpenSSL's read) for good. */
        assert_int_equal(mkdir(subdir, 0755), 0);
        expect_config_error(5, "a directory", "CAFile", subdir, NULL);
        assert_int_equal(mkfifo(fifo, 0644), 0);
        expect_config_error(6, "not a regular file", "CertificateFile", fifo, NULL);
        assert_int_equal(unlink(fifo), 0);
        assert_int_equal(rmdir(subdir), 0);
        expect_config_error(2, "CertificateFile= is required", "CertificateFile", NULL, NULL);
        /* Files that exist but do not load, or do not match. */
        expect_config_error(7, "private key", "KeyFile", ca, NULL);
        expect_config_error(6, "client certificate", "CertificateFile", key2, NULL);
        expect_config_error(7, "does not match", "KeyFile", key2, NULL);
        expect_config_error(5, "CA certificates", "CAFile", key2, NULL);
        expect_config_error(9, "ServerName=", "ServerName", "a b", NULL);

        /* Valid forms; open() contacts nobody, so a port where no one listens is fine. */
        b = open_backend("kmip", "Port", "1", "Timeout", "500ms", "ServerName", "localhost");
        kms_backend_free(b);
        b = open_backend("kmip", "Host", NULL, "Port", NULL, "Timeout", "2.5s");
        kms_backend_free(b);
        b = open_backend("kmip", "Timeout", NULL);
        kms_backend_free(b);
}

/* ---- operations ---- */

static void test_create_get_list(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_backend("kmip");
        _cleanup_(kms_key_done) kms_key k = {}, g = {}, a = {}, other = {}, dup = {};
        kms_key *keys = NULL;
        size_t n = 0;
        bool found = false;
        usec_t before = now_realtime();

        assert_int_equal(kms_key_create(b, "app/disk-key", "disks of app", &k), 0);
        assert_non_null(k.id);
        assert_string_equal(k.alias, "app/disk-key");
        assert_string_equal(k.description, "disks of app");
        assert_string_equal(k.backend, "kmip");
        assert_int_equal(k.state, KMS_KEY_ENABLED);
        /* Initial Date has a one-second resolution. */
        assert_true(k.created + USEC_PER_SEC >= before && k.created <= now_realtime());

        assert_int_equal(kms_key_get(b, k.id, &g), 0);
        assert_string_equal(g.id, k.id);
        assert_string_equal(g.alias, "app/disk-key");
        assert_string_equal(g.description, "disks of app");
        assert_int_equal(g.state, KMS_KEY_ENABLED);

        assert_int_equal(kms_key_get(b, "app/disk-key", &a), 0);
        assert_string_equal(a.id, k.id);

        assert_errno(b, kms_key_create(b, "app/disk-key", NULL, &dup), -EEXIST);

        assert_int_equal(kms_key_create(b, NULL, NULL, &other), 0);
        assert_null(other.alias);
        assert_null(other.description);
        assert_string_not_equal(other.id, k.id);

        assert_int_equal(kms_key_list(b, &keys, &n), 0);
        assert_true(n >= 2);
        for (size_t i = 0; i < n; i++) {
                assert_string_equal(keys[i].backend, "kmip");
                if (i > 0)
                        assert_true(keys[i - 1].created <= keys[i].created);
                if (streq(keys[i].id, k.id)) {
                        found = true;
                        assert_string_equal(keys[i].alias, "app/disk-key");
                        assert_string_equal(keys[i].description, "disks of app");
                        assert_int_equal(keys[i].state, KMS_KEY_ENABLED);
                }
        }
        assert_true(found);
        kms_key_array_free(keys, n);
}

static void test_not_found(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_backend("kmip");
        _cleanup_(secret_freep) secret *dk = data_key();
        kms_key k = {};
        uint8_t *w = NULL;
        size_t ws = 0;

        assert_errno(b, kms_key_get(b, "987654", &k), -ENOENT);
        assert_errno(b, kms_key_get(b, "no/such-alias", &k), -ENOENT);
        assert_errno(b, kms_wrap(b, "987654", "vol-1", dk, &w, &ws), -ENOENT);
        assert_null(w);
}

static void test_wrap_unwrap(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_backend("kmip");
        _cleanup_(kms_key_done) kms_key k = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL;
        _cleanup_free_ uint8_t *w = NULL, *w2 = NULL;
        size_t ws = 0, ws2 = 0;

        assert_int_equal(kms_key_create(b, "app/wrap", NULL, &k), 0);
        assert_int_equal(kms_wrap(b, k.id, "vol-0001", dk, &w, &ws), 0);
        assert_true(ws > KMS_DATA_KEY_SIZE && ws <= KMS_WRAPPED_MAX);
        assert_int_equal(kms_unwrap(b, k.id, "vol-0001", w, ws, &out), 0);
        assert_true(secret_equal(dk, out));
        out = secret_free(out);

        /* A fresh nonce each time. */
        assert_int_equal(kms_wrap(b, k.id, "vol-0001", dk, &w2, &ws2), 0);
        assert_int_equal(ws, ws2);
        assert_memory_not_equal(w, w2, ws);

        /* Bound to the volume. */
        assert_errno(b, kms_unwrap(b, k.id, "vol-0002", w, ws, &out), -EBADMSG);
        assert_errno(b, kms_unwrap(b, k.id, "", w, ws, &out), -EBADMSG);

        /* Any flipped bit: in the ciphertext (last byte), the tag, the nonce. */
        {
                const size_t at[] = { ws - 1, ws - KMS_DATA_KEY_SIZE - 1, ws - KMS_DATA_KEY_SIZE - 16 - 1,
                                      ws - KMS_DATA_KEY_SIZE - 16 - 12 };

                for (size_t i = 0; i < ELEMENTSOF(at); i++) {
                        w[at[i]] ^= 0x01;
                        assert_errno(b, kms_unwrap(b, k.id, "vol-0001", w, ws, &out), -EBADMSG);
                        w[at[i]] ^= 0x01;
                }
        }
        /* The format itself. */
        assert_errno(b, kms_unwrap(b, k.id, "vol-0001", w, 5 + strlen(k.id) + 28, &out), -EBADMSG);
        w[0] ^= 0x01;
        assert_errno(b, kms_unwrap(b, k.id, "vol-0001", w, ws, &out), -EBADMSG);
        w[0] ^= 0x01;
        w[5] ^= 0x01;
        assert_errno(b, kms_unwrap(b, k.id, "vol-0001", w, ws, &out), -EXDEV);
        w[5] ^= 0x01;
        assert_null(out);

        /* Still intact. */
        assert_int_equal(kms_unwrap(b, k.id, "vol-0001", w, ws, &out), 0);
        assert_true(secret_equal(dk, out));
}

static void test_second_host(void **state) {
        _cleanup_free_ char *cert2 = path("client2.pem"), *key2 = path("client2.key");
        _cleanup_(kms_backend_freep) kms_backend *h1 = open_backend("kmip"),
                                                 *h2 = open_backend("kmip", "CertificateFile", cert2, "KeyFile", key2);
        _cleanup_(kms_key_done) kms_key k = {}, seen = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL, *out2 = NULL;
        _cleanup_free_ uint8_t *w = NULL, *w2 = NULL;
        size_t ws = 0, ws2 = 0;

        assert_int_equal(kms_key_create(h1, "app/shared", NULL, &k), 0);
        assert_int_equal(kms_key_get(h2, "app/shared", &seen), 0);
        assert_string_equal(seen.id, k.id);

        assert_int_equal(kms_wrap(h1, k.id, "vol-shared", dk, &w, &ws), 0);
        assert_int_equal(kms_unwrap(h2, k.id, "vol-shared", w, ws, &out), 0);
        assert_true(secret_equal(dk, out));

        assert_int_equal(kms_wrap(h2, k.id, "vol-shared", dk, &w2, &ws2), 0);
        assert_int_equal(kms_unwrap(h1, k.id, "vol-shared", w2, ws2, &out2), 0);
        assert_true(secret_equal(dk, out2));
}

static void test_disable_enable(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_backend("kmip");
        _cleanup_(kms_key_done) kms_key k = {}, d = {}, g = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL;
        _cleanup_free_ uint8_t *w = NULL, *w2 = NULL;
        size_t ws = 0, ws2 = 0;
        kms_key *keys = NULL;
        size_t n = 0;
        bool found = false;

        assert_int_equal(kms_key_create(b, "app/to-disable", NULL, &k), 0);
        assert_int_equal(kms_wrap(b, k.id, "vol-d", dk, &w, &ws), 0);

        assert_int_equal(kms_key_set_enabled(b, "app/to-disable", false, &d), 0);
        assert_int_equal(d.state, KMS_KEY_DISABLED);
        assert_int_equal(kms_key_get(b, k.id, &g), 0);
        assert_int_equal(g.state, KMS_KEY_DISABLED);

        assert_errno(b, kms_wrap(b, k.id, "vol-d", dk, &w2, &ws2), -EKEYREVOKED);
        assert_errno(b, kms_unwrap(b, k.id, "vol-d", w, ws, &out), -EKEYREVOKED);
        assert_null(out);

        assert_errno(b, kms_key_set_enabled(b, k.id, true, NULL), -EOPNOTSUPP);
        assert_non_null(strstr(kms_backend_error(b), "revoked"));
        /* Disabling again is a no-op. */
        assert_int_equal(kms_key_set_enabled(b, k.id, false, NULL), 0);

        assert_errno(b, kms_key_schedule_deletion(b, k.id, 30, NULL), -EOPNOTSUPP);
        assert_non_null(strstr(kms_backend_error(b), "scheduled"));
        assert_errno(b, kms_key_cancel_deletion(b, k.id, NULL), -EOPNOTSUPP);

        assert_int_equal(kms_key_list(b, &keys, &n), 0);
        for (size_t i = 0; i < n; i++)
                if (streq(keys[i].id, k.id)) {
                        found = true;
                        assert_int_equal(keys[i].state, KMS_KEY_DISABLED);
                }
        assert_true(found);
        kms_key_array_free(keys, n);
}

/* PyKMIP has no ReKey: rotation is refused naming why (asked of the server with Query), nothing is emulated. */
static void test_no_rotation(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_backend("kmip");
        _cleanup_(kms_key_done) kms_key k = {}, g = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL;
        _cleanup_free_ uint8_t *w = NULL;
        size_t ws = 0;
        kms_key *keys = NULL;
        size_t n = 0, before;

        assert_int_equal(kms_key_create(b, "app/rotate", NULL, &k), 0);
        assert_int_equal(kms_wrap(b, k.id, "vol-r", dk, &w, &ws), 0);
        assert_int_equal(kms_key_list(b, &keys, &n), 0);
        kms_key_array_free(keys, n);
        before = n;

        assert_errno(b, kms_key_rotate(b, k.id, NULL), -EOPNOTSUPP);
        assert_string_equal(kms_backend_error(b), "rotation is not supported by backend kmip (KMIP server has no ReKey)");
        assert_errno(b, kms_key_set_rotation(b, k.id, 90, NULL), -EOPNOTSUPP);
        assert_non_null(strstr(kms_backend_error(b), "automatic rotation is not supported by backend kmip"));
        assert_errno(b, kms_key_set_rotation(b, k.id, 29, NULL), -EINVAL);

        /* The key is as it was: no second key was made, its wrapped keys open. */
        assert_int_equal(kms_key_list(b, &keys, &n), 0);
        kms_key_array_free(keys, n);
        assert_int_equal(n, before);
        assert_int_equal(kms_key_get(b, k.id, &g), 0);
        assert_int_equal(g.state, KMS_KEY_ENABLED);
        assert_int_equal(g.version, 1);
        assert_int_equal(g.rotated, 0);
        assert_int_equal(kms_unwrap(b, k.id, "vol-r", w, ws, &out), 0);
        assert_true(secret_equal(out, dk));
}

static void test_pre_active(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_backend("kmip");
        _cleanup_(kms_key_done) kms_key g = {}, e = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL;
        _cleanup_free_ uint8_t *w = NULL;
        size_t ws = 0;
        char id[64];

        /* A key made by another tool: created, never activated. */
        script_run("--create-key", "app/pre-active", id, sizeof id);
        assert_true(strlen(id) > 0);

        assert_int_equal(kms_key_get(b, "app/pre-active", &g), 0);
        assert_string_equal(g.id, id);
        assert_int_equal(g.state, KMS_KEY_DISABLED);
        assert_errno(b, kms_wrap(b, id, "vol-p", dk, &w, &ws), -EKEYREVOKED);
        assert_null(w);

        /* Enabling a Pre-Active key activates it. */
        assert_int_equal(kms_key_set_enabled(b, id, true, &e), 0);
        assert_int_equal(e.state, KMS_KEY_ENABLED);
        assert_int_equal(kms_wrap(b, id, "vol-p", dk, &w, &ws), 0);
        assert_int_equal(kms_unwrap(b, id, "vol-p", w, ws, &out), 0);
        assert_true(secret_equal(dk, out));
        /* Enabling an Active key is a no-op. */
        assert_int_equal(kms_key_set_enabled(b, id, true, NULL), 0);
}

static void test_duplicate_alias(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_backend("kmip");
        kms_key k = {};
        char id1[64], id2[64];

        script_run("--create-key", "app/dup", id1, sizeof id1);
        script_run("--create-key", "app/dup", id2, sizeof id2);

        assert_errno(b, kms_key_get(b, "app/dup", &k), -EINVAL);
        assert_non_null(strstr(kms_backend_error(b), id1));
        assert_non_null(strstr(kms_backend_error(b), id2));
        assert_errno(b, kms_key_create(b, "app/dup", NULL, &k), -EEXIST);
        /* The ids still work. */
        assert_int_equal(kms_key_get(b, id2, &k), 0);
        assert_string_equal(k.alias, "app/dup");
        kms_key_done(&k);
}

static void test_default_key(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_backend("kmip");
        _cleanup_(kms_key_done) kms_key k = {}, again = {};

        assert_int_equal(kms_key_get(b, KMS_DEFAULT_KEY_ALIAS, &k), 0);
        assert_string_equal(k.alias, KMS_DEFAULT_KEY_ALIAS);
        assert_int_equal(k.state, KMS_KEY_ENABLED);
        assert_int_equal(kms_key_get(b, KMS_DEFAULT_KEY_ALIAS, &again), 0);
        assert_string_equal(again.id, k.id);
        assert_errno(b, kms_key_set_enabled(b, KMS_DEFAULT_KEY_ALIAS, false, NULL), -KMS_EPROTECTED);
}

/* Two hosts create the same alias at the same moment: never two keys under one alias. */
struct racer {
        pthread_barrier_t *barrier;
        const char *alias;
        kms_backend *b;
        kms_key key;
        int r;
};

static void *race_create(void *userdata) {
        struct racer *x = userdata;

        (void) pthread_barrier_wait(x->barrier);
        x->r = kms_key_create(x->b, x->alias, NULL, &x->key);
        return NULL;
}

static void test_create_race(void **state) {
        _cleanup_free_ char *cert2 = path("client2.pem"), *key2 = path("client2.key");
        _cleanup_(kms_backend_freep) kms_backend *check = open_backend("kmip");

        for (int round = 0; round < 4; round++) {
                struct racer x[2] = {};
                pthread_barrier_t barrier;
                pthread_t t[2];
                char alias[32];
                kms_key *keys = NULL, g = {};
                size_t n = 0, live = 0;
                int winners = 0, r;

                (void) snprintf(alias, sizeof alias, "race/%d", round);
                assert_int_equal(pthread_barrier_init(&barrier, NULL, 2), 0);
                for (int i = 0; i < 2; i++) {
                        x[i] = (struct racer) { .barrier = &barrier, .alias = alias };
                        x[i].b = i == 0 ? open_backend("kmip") : open_backend("kmip", "CertificateFile", cert2, "KeyFile", key2);
                        assert_int_equal(pthread_create(&t[i], NULL, race_create, &x[i]), 0);
                }
                for (int i = 0; i < 2; i++) {
                        assert_int_equal(pthread_join(t[i], NULL), 0);
                        fprintf(stderr, "  round %d racer %d: %s%s%s\n", round, i, x[i].r < 0 ? strerror(-x[i].r) : x[i].key.id,
                                x[i].r < 0 ? ": " : "", x[i].r < 0 ? strna(kms_backend_error(x[i].b)) : "");
                        assert_true(x[i].r == 0 || x[i].r == -EEXIST);
                        winners += x[i].r == 0;
                }
                pthread_barrier_destroy(&barrier);

                assert_int_equal(kms_key_list(check, &keys, &n), 0);
                for (size_t i = 0; i < n; i++)
                        if (streq_ptr(keys[i].alias, alias) && keys[i].state != KMS_KEY_DESTROYED)
                                live++;
                kms_key_array_free(keys, n);
                assert_true(live <= 1);
                assert_true(winners <= 1);

                r = kms_key_get(check, alias, &g);
                if (winners == 1) {
                        assert_int_equal(r, 0);
                        assert_string_equal(g.id, x[0].r == 0 ? x[0].key.id : x[1].key.id);
                } else
                        assert_true(r == 0 || r == -ENOENT);
                kms_key_done(&g);
                for (int i = 0; i < 2; i++) {
                        kms_key_done(&x[i].key);
                        kms_backend_free(x[i].b);
                }
        }
}

/* Counts the sessions the server has seen (one per TLS connection). */
static int server_sessions(void) {
        _cleanup_free_ char *log = path("server.log");
        FILE *f = fopen(log, "re");
        char line[4096];
        int n = 0;

        assert_non_null(f);
        while (fgets(line, sizeof line, f))
                if (strstr(line, "Starting session"))
                        n++;
        fclose(f);
        return n;
}

static void test_connection_reuse(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_backend("kmip");
        _cleanup_(secret_freep) secret *dk = data_key();
        kms_key k = {};
        int before;

        before = server_sessions();
        assert_int_equal(kms_key_create(b, "app/reuse", NULL, &k), 0);
        for (int i = 0; i < 5; i++) {
                _cleanup_(kms_key_done) kms_key g = {};
                _cleanup_(secret_freep) secret *out = NULL;
                _cleanup_free_ uint8_t *w = NULL;
                size_t ws = 0;

                assert_int_equal(kms_key_get(b, k.id, &g), 0);
                assert_int_equal(kms_wrap(b, k.id, "vol-r", dk, &w, &ws), 0);
                assert_int_equal(kms_unwrap(b, k.id, "vol-r", w, ws, &out), 0);
        }
        kms_key_done(&k);
        /* The server logs asynchronously to us: give it a moment. */
        usleep(200 * 1000);
        assert_int_equal(server_sessions(), before + 1);
}

static void test_tls_failures(void **state) {
        _cleanup_free_ char *other_ca = path("other-ca.pem"), *noauth = path("noauth.pem"), *noauth_key = path("noauth.key");
        kms_key k = {};

        {
                _cleanup_(kms_backend_freep) kms_backend *b = open_backend("kmip", "CAFile", other_ca);
                assert_errno(b, kms_key_get(b, "app/disk-key", &k), -EHOSTDOWN);
                assert_non_null(strstr(kms_backend_error(b), "certificate"));
        }
        {
                _cleanup_(kms_backend_freep) kms_backend *b = open_backend("kmip", "ServerName", "kms.example.com");
                assert_errno(b, kms_key_get(b, "app/disk-key", &k), -EHOSTDOWN);
                assert_non_null(strstr(kms_backend_error(b), "kms.example.com"));
        }
        {
                /* The name the certificate does carry. */
                _cleanup_(kms_backend_freep) kms_backend *b = open_backend("kmip", "ServerName", "localhost");
                assert_int_equal(kms_key_get(b, "app/disk-key", &k), 0);
                kms_key_done(&k);
        }
        {
                /* A host name, resolved asynchronously (localhost may be ::1 first, where no one
                 * listens); the certificate carries DNS:localhost. */
                _cleanup_(kms_backend_freep) kms_backend *b = open_backend("kmip", "Host", "localhost");
                assert_int_equal(kms_key_get(b, "app/disk-key", &k), 0);
                kms_key_done(&k);
        }
        {
                _cleanup_(kms_backend_freep) kms_backend *b = open_backend("kmip", "Host", "no-such-host.invalid");
                assert_errno(b, kms_key_get(b, "app/disk-key", &k), -EHOSTDOWN);
                assert_non_null(strstr(kms_backend_error(b), "no-such-host.invalid"));
        }
        {
                /* TLS succeeds, but the server refuses a certificate without clientAuth. */
                _cleanup_(kms_backend_freep) kms_backend *b = open_backend("kmip", "CertificateFile", noauth, "KeyFile",
                                                                           noauth_key);
                assert_errno(b, kms_key_get(b, "app/disk-key", &k), -EHOSTDOWN);
                assert_non_null(strstr(kms_backend_error(b), "Authentication Not Successful"));
        }
}

static void test_server_restart(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_backend("kmip", "Timeout", "2");
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL;
        _cleanup_free_ uint8_t *w = NULL, *w2 = NULL;
        kms_key k = {};
        size_t ws = 0, ws2 = 0;
        usec_t start, t;

        assert_int_equal(kms_key_create(b, "app/restart", NULL, &k), 0);
        assert_int_equal(kms_wrap(b, k.id, "vol-x", dk, &w, &ws), 0);

        script_run("--stop", NULL, NULL, 0);

        start = now_monotonic();
        assert_errno(b, kms_unwrap(b, k.id, "vol-x", w, ws, &out), -EHOSTDOWN);
        t = elapsed_since(start);
        fprintf(stderr, "  stopped server: -EHOSTDOWN after %.3f s\n", (double) t / USEC_PER_SEC);
        assert_true(t < 3 * USEC_PER_SEC);
        start = now_monotonic();
        assert_errno(b, kms_wrap(b, k.id, "vol-x", dk, &w2, &ws2), -EHOSTDOWN);
        assert_true(elapsed_since(start) < 3 * USEC_PER_SEC);

        script_run("--start", NULL, NULL, 0);

        /* The same instance reconnects by itself. */
        assert_errno(b, kms_unwrap(b, k.id, "vol-x", w, ws, &out), 0);
        assert_true(secret_equal(dk, out));
        kms_key_done(&k);
}

/* Another restart, while the connection is idle: the server's close is noticed before sending,
 * so even Create (never resent) goes through on a new connection. */
static void test_reconnect_before_create(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_backend("kmip");
        _cleanup_(kms_key_done) kms_key k = {}, c = {};

        assert_errno(b, kms_key_get(b, "app/disk-key", &k), 0);
        script_run("--stop", NULL, NULL, 0);
        script_run("--start", NULL, NULL, 0);
        assert_errno(b, kms_key_create(b, "app/after-restart", NULL, &c), 0);
        assert_int_equal(c.state, KMS_KEY_ENABLED);
}

/* A listener that completes TCP handshakes (the kernel does) but never reads or writes. */
static int silent_listener(uint16_t *ret_port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof sa;
        int fd;

        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        assert_int_equal(bind(fd, (struct sockaddr *) &sa, sizeof sa), 0);
        assert_int_equal(listen(fd, 16), 0);
        assert_int_equal(getsockname(fd, (struct sockaddr *) &sa, &len), 0);
        *ret_port = ntohs(sa.sin_port);
        return fd;
}

static void test_silent_server(void **state) {
        _cleanup_(closep) int fd = -EBADF;
        _cleanup_(kms_backend_freep) kms_backend *b = NULL;
        _cleanup_(secret_freep) secret *dk = data_key();
        uint8_t *w = NULL;
        size_t ws = 0;
        char p[16];
        uint16_t lport;
        kms_key k = {};
        usec_t start, t;

        fd = silent_listener(&lport);
        (void) snprintf(p, sizeof p, "%u", lport);
        b = open_backend("kmip", "Port", p, "Timeout", "1.5");

        start = now_monotonic();
        assert_errno(b, kms_key_get(b, "app/disk-key", &k), -EHOSTDOWN);
        t = elapsed_since(start);
        fprintf(stderr, "  silent server: -EHOSTDOWN after %.3f s (Timeout=1.5)\n", (double) t / USEC_PER_SEC);
        assert_true(t >= USEC_PER_SEC * 14 / 10); /* it did wait for the server */
        assert_true(t < USEC_PER_SEC * 25 / 10);  /* and not past Timeout + 1 s */
        assert_non_null(strstr(kms_backend_error(b), "timed out"));

        start = now_monotonic();
        assert_errno(b, kms_wrap(b, "1", "vol", dk, &w, &ws), -EHOSTDOWN);
        assert_true(elapsed_since(start) < USEC_PER_SEC * 25 / 10);
}

/* ---- a TLS server that answers with broken KMIP ---- */

/* Serves one connection per canned answer: reads one request, writes the answer (and, for the
 * last one, nothing: it just keeps the connection open). Runs in a child process. */
static _noreturn_ void evil_server(SSL_CTX *ctx, int lfd, const uint8_t *const *answers, const size_t *sizes,
                                   size_t n) {
        /* A client that gave up must not kill the server. */
        (void) signal(SIGPIPE, SIG_IGN);
        for (size_t i = 0; i < n; i++) {
                int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
                uint8_t buf[65536];
                SSL *ssl;

                if (cfd < 0)
                        _exit(3);
                ssl = SSL_new(ctx);
                SSL_set_fd(ssl, cfd);
                if (SSL_accept(ssl) == 1 && SSL_read(ssl, buf, sizeof buf) > 0 && sizes[i] > 0)
                        (void) SSL_write(ssl, answers[i], (int) sizes[i]);
                /* Keep the connection until the client goes away. */
                while (SSL_read(ssl, buf, sizeof buf) > 0)
                        ;
                SSL_free(ssl);
                close(cfd);
        }
        SSL_CTX_free(ctx);
        _exit(0);
}

static void test_malformed_replies(void **state) {
        /* A valid-looking header, then garbage: not TTLV. */
        static const uint8_t garbage[] = { 0x42, 0x00, 0x7B, 0x01, 0x00, 0x00, 0x00, 0x08, 0xFF, 0xFF, 0xFF, 0xFF,
                                           0xFF, 0xFF, 0xFF, 0xFF };
        /* Announces a 16 MiB message. */
        static const uint8_t huge[] = { 0x42, 0x00, 0x7B, 0x01, 0x01, 0x00, 0x00, 0x00 };
        /* Not a response message at all. */
        static const uint8_t http[] = "HTTP/1.1 400 Bad Request\r\n\r\n";
        /* A well-formed ResponseMessage without a header. */
        static const uint8_t empty[] = { 0x42, 0x00, 0x7B, 0x01, 0x00, 0x00, 0x00, 0x00 };
        /* A header, Batch Count 1, but no batch item. */
        static const uint8_t no_items[] = {
                0x42, 0x00, 0x7B, 0x01, 0x00, 0x00, 0x00, 0x50, /* ResponseMessage */
                0x42, 0x00, 0x7A, 0x01, 0x00, 0x00, 0x00, 0x48, /* ResponseHeader */
                0x42, 0x00, 0x69, 0x01, 0x00, 0x00, 0x00, 0x20, /* ProtocolVersion */
                0x42, 0x00, 0x6A, 0x02, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
                0x42, 0x00, 0x6B, 0x02, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00,
                0x42, 0x00, 0x92, 0x09, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x60, 0x00, 0x00, 0x00,
                0x42, 0x00, 0x0D, 0x02, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
        };
        /* Truncated: the header promises 0x48 bytes, 16 arrive, then the answer stalls. */
        static const uint8_t truncated[] = { 0x42, 0x00, 0x7B, 0x01, 0x00, 0x00, 0x00, 0x48, 0x42, 0x00, 0x7A, 0x01,
                                             0x00, 0x00, 0x00, 0x40 };
        static const struct {
                const uint8_t *data;
                size_t size;
                int want;
        } cases[] = {
                { garbage, sizeof garbage, -EPROTO },  { huge, sizeof huge, -EPROTO },
                { http, sizeof http - 1, -EPROTO },    { empty, sizeof empty, -EPROTO },
                { no_items, sizeof no_items, -EPROTO }, { truncated, sizeof truncated, -EHOSTDOWN },
                { NULL, 0, -EHOSTDOWN }, /* no answer at all */
        };
        const uint8_t *answers[ELEMENTSOF(cases)];
        size_t sizes[ELEMENTSOF(cases)];
        _cleanup_(closep) int lfd = -EBADF;
        SSL_CTX *ctx;
        uint16_t lport;
        char p[16];
        pid_t pid;
        int status;

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                answers[i] = cases[i].data;
                sizes[i] = cases[i].size;
        }
        /* Set up before the fork, so that the child answers at once (even under valgrind), and
         * with nothing left to free in the child but the context. */
        ctx = SSL_CTX_new(TLS_server_method());
        assert_non_null(ctx);
        {
                _cleanup_free_ char *ca = path("ca.pem"), *cert = path("server.pem"), *key = path("server.key");

                assert_int_equal(SSL_CTX_use_certificate_chain_file(ctx, cert), 1);
                assert_int_equal(SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM), 1);
                assert_int_equal(SSL_CTX_load_verify_locations(ctx, ca, NULL), 1);
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);

        lfd = silent_listener(&lport);
        (void) snprintf(p, sizeof p, "%u", lport);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
                evil_server(ctx, lfd, answers, sizes, ELEMENTSOF(cases));
        SSL_CTX_free(ctx);

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                /* A new instance each time: a new connection, a new canned answer. */
                /* Generous for answers (the child may run under valgrind), short for silence. */
                bool silent = cases[i].want == -EHOSTDOWN;
                _cleanup_(kms_backend_freep) kms_backend *b = open_backend("kmip", "Port", p, "Timeout", silent ? "1.5" : "20");
                kms_key k = {};
                usec_t start = now_monotonic(), t;

                fprintf(stderr, "  case %zu\n", i);
                assert_errno(b, kms_key_get(b, "123", &k), cases[i].want);
                t = elapsed_since(start);
                assert_true(t < (silent ? USEC_PER_SEC * 25 / 10 : 21 * USEC_PER_SEC));
                if (silent)
                        assert_true(t >= USEC_PER_SEC * 14 / 10);
        }

        /* Its exit status is not checked: under valgrind it reports the parent's heap, inherited
         * by the fork. A broken server would have failed the cases above anyway. */
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
}


/* ---- on pykmip-rekey-server (kmip-server.sh --rekey): PyKMIP's server with ReKey ---- */

/* The KMIP id of the version a wrapped key names ("EVK1", length byte, id). */
static char *wrapped_id(const uint8_t *w, size_t ws) {
        char *id;

        assert_true(ws > 5 && ws > 5U + w[4]);
        id = strndup((const char *) w + 5, w[4]);
        assert_non_null(id);
        return id;
}

static void expect_server_state(const char *id, const char *state) {
        char out[64];

        script_run("--state", id, out, sizeof out);
        assert_string_equal(out, state);
}

/* Rotation is ReKey: the CMK keeps its id, wraps use the newest version, unwrap follows the links to the
 * version each wrapped key names. */
static void test_rotation(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_backend("kmip"), *b2 = open_backend("kmip");
        _cleanup_(kms_key_done) kms_key k = {}, r2 = {}, r3 = {}, g = {}, g2 = {}, other = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL;
        _cleanup_free_ uint8_t *w1 = NULL, *w2 = NULL, *w3 = NULL, *wo = NULL;
        _cleanup_free_ char *id1 = NULL, *id2 = NULL, *id3 = NULL;
        size_t ws1 = 0, ws2 = 0, ws3 = 0, wso = 0, n = 0, seen = 0;
        unsigned v = 0;
        kms_key *keys = NULL;

        assert_int_equal(kms_key_create(b, "app/rot", "rotated key", &k), 0);
        assert_int_equal(k.version, 1);
        assert_int_equal(kms_wrap_versioned(b, k.id, "vol-1", dk, &w1, &ws1, &v), 0);
        assert_int_equal(v, 1);
        id1 = wrapped_id(w1, ws1);
        assert_string_equal(id1, k.id);

        assert_int_equal(kms_key_rotate(b, "app/rot", &r2), 0);
        assert_string_equal(r2.id, k.id);
        assert_int_equal(r2.version, 2);
        assert_int_equal(r2.state, KMS_KEY_ENABLED);
        assert_string_equal(r2.alias, "app/rot");
        assert_string_equal(r2.description, "rotated key");
        assert_true(r2.rotated > 0);
        assert_int_equal(r2.created, k.created);

        assert_int_equal(kms_wrap_versioned(b, k.id, "vol-2", dk, &w2, &ws2, &v), 0);
        assert_int_equal(v, 2);
        id2 = wrapped_id(w2, ws2);
        assert_string_not_equal(id2, k.id);
        expect_server_state(id1, "ACTIVE");
        expect_server_state(id2, "ACTIVE");

        /* The alias (moved to the newest version by ReKey) and the new version's own id name the CMK. */
        assert_int_equal(kms_key_get(b, "app/rot", &g), 0);
        assert_string_equal(g.id, k.id);
        assert_int_equal(g.version, 2);
        assert_int_equal(kms_key_get(b2, id2, &g2), 0);
        assert_string_equal(g2.id, k.id);
        assert_int_equal(g2.version, 2);

        /* Both versions unwrap, on this connection and on another one. */
        assert_int_equal(kms_unwrap(b, k.id, "vol-1", w1, ws1, &out), 0);
        assert_true(secret_equal(out, dk));
        out = secret_free(out);
        assert_int_equal(kms_unwrap_versioned(b2, k.id, "vol-2", w2, ws2, 2, &out), 0);
        assert_true(secret_equal(out, dk));
        out = secret_free(out);
        /* Still bound to the volume. */
        assert_errno(b, kms_unwrap(b, k.id, "vol-1", w2, ws2, &out), -EBADMSG);

        /* The list shows the CMK once, at version 2, and not its second key. */
        assert_int_equal(kms_key_list(b, &keys, &n), 0);
        for (size_t i = 0; i < n; i++) {
                assert_string_not_equal(keys[i].id, id2);
                if (streq(keys[i].id, k.id)) {
                        seen++;
                        assert_int_equal(keys[i].version, 2);
                        assert_string_equal(keys[i].alias, "app/rot");
                }
        }
        kms_key_array_free(keys, n);
        assert_int_equal(seen, 1);

        /* A third version; the first two still unwrap. */
        assert_int_equal(kms_key_rotate(b, k.id, &r3), 0);
        assert_int_equal(r3.version, 3);
        assert_int_equal(kms_wrap_versioned(b, k.id, "vol-3", dk, &w3, &ws3, &v), 0);
        assert_int_equal(v, 3);
        id3 = wrapped_id(w3, ws3);
        assert_string_not_equal(id3, id2);
        assert_int_equal(kms_unwrap(b, k.id, "vol-1", w1, ws1, &out), 0);
        out = secret_free(out);
        assert_int_equal(kms_unwrap(b, k.id, "vol-2", w2, ws2, &out), 0);
        out = secret_free(out);
        assert_int_equal(kms_unwrap(b, k.id, "vol-3", w3, ws3, &out), 0);
        out = secret_free(out);

        /* A version of one CMK does not unwrap as another CMK's. */
        assert_int_equal(kms_key_create(b, "app/other", NULL, &other), 0);
        assert_errno(b, kms_unwrap(b, other.id, "vol-2", w2, ws2, &out), -EXDEV);
        assert_int_equal(kms_wrap(b, other.id, "vol-o", dk, &wo, &wso), 0);
        assert_errno(b, kms_unwrap(b, k.id, "vol-o", wo, wso, &out), -EXDEV);
        assert_null(out);
}

/* A disabled CMK refuses every version: disable revokes them all on the server, and unwrap refuses any version
 * while the newest is not Active. */
static void test_rotation_disabled(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_backend("kmip");
        _cleanup_(kms_key_done) kms_key k = {}, g = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL;
        _cleanup_free_ uint8_t *w1 = NULL, *w2 = NULL, *w3 = NULL, *wx = NULL;
        _cleanup_free_ char *id2 = NULL, *id3 = NULL;
        size_t ws1 = 0, ws2 = 0, ws3 = 0, wsx = 0;

        assert_int_equal(kms_key_create(b, "app/rot-off", NULL, &k), 0);
        assert_int_equal(kms_wrap(b, k.id, "vol-1", dk, &w1, &ws1), 0);
        assert_int_equal(kms_key_rotate(b, k.id, NULL), 0);
        assert_int_equal(kms_wrap(b, k.id, "vol-2", dk, &w2, &ws2), 0);
        assert_int_equal(kms_key_rotate(b, k.id, NULL), 0);
        assert_int_equal(kms_wrap(b, k.id, "vol-3", dk, &w3, &ws3), 0);
        id2 = wrapped_id(w2, ws2);
        id3 = wrapped_id(w3, ws3);

        assert_int_equal(kms_key_set_enabled(b, "app/rot-off", false, NULL), 0);
        assert_int_equal(kms_key_get(b, k.id, &g), 0);
        assert_int_equal(g.state, KMS_KEY_DISABLED);
        assert_int_equal(g.version, 3);
        /* The server holds every version revoked. */
        expect_server_state(k.id, "DEACTIVATED");
        expect_server_state(id2, "DEACTIVATED");
        expect_server_state(id3, "DEACTIVATED");

        assert_errno(b, kms_unwrap(b, k.id, "vol-1", w1, ws1, &out), -EKEYREVOKED);
        assert_non_null(strstr(kms_backend_error(b), "it is disabled"));
        assert_errno(b, kms_unwrap(b, k.id, "vol-2", w2, ws2, &out), -EKEYREVOKED);
        assert_errno(b, kms_unwrap(b, k.id, "vol-3", w3, ws3, &out), -EKEYREVOKED);
        assert_null(out);
        assert_errno(b, kms_wrap(b, k.id, "vol-4", dk, &wx, &wsx), -EKEYREVOKED);
        assert_errno(b, kms_key_rotate(b, k.id, NULL), -EKEYREJECTED);
        assert_non_null(strstr(kms_backend_error(b), "disabled"));
        /* Disabling again is a no-op; a revoked key stays revoked. */
        assert_int_equal(kms_key_set_enabled(b, k.id, false, NULL), 0);
        assert_errno(b, kms_key_set_enabled(b, k.id, true, NULL), -EOPNOTSUPP);
}

/* A Pre-Active CMK (created with the server's own tools) refuses rotation; once enabled it rotates. */
static void test_rotation_pre_active(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_backend("kmip");
        _cleanup_(kms_key_done) kms_key r = {};
        char id[64];

        script_run("--create-key", "app/rot-pre", id, sizeof id);
        assert_errno(b, kms_key_rotate(b, id, NULL), -EKEYREJECTED);
        assert_int_equal(kms_key_set_enabled(b, id, true, NULL), 0);
        assert_int_equal(kms_key_rotate(b, id, &r), 0);
        assert_string_equal(r.id, id);
        assert_int_equal(r.version, 2);
        assert_int_equal(r.state, KMS_KEY_ENABLED);
}

int main(void) {
        const struct CMUnitTest rekey_tests[] = {
                cmocka_unit_test(test_rotation),
                cmocka_unit_test(test_rotation_disabled),
                cmocka_unit_test(test_rotation_pre_active),
        };
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_config),
                cmocka_unit_test(test_create_get_list),
                cmocka_unit_test(test_not_found),
                cmocka_unit_test(test_wrap_unwrap),
                cmocka_unit_test(test_second_host),
                cmocka_unit_test(test_disable_enable),
                cmocka_unit_test(test_no_rotation),
                cmocka_unit_test(test_pre_active),
                cmocka_unit_test(test_duplicate_alias),
                cmocka_unit_test(test_default_key),
                cmocka_unit_test(test_create_race),
                cmocka_unit_test(test_connection_reuse),
                cmocka_unit_test(test_tls_failures),
                cmocka_unit_test(test_server_restart),
                cmocka_unit_test(test_reconnect_before_create),
                cmocka_unit_test(test_silent_server),
                cmocka_unit_test(test_malformed_replies),
        };

        /* kmip-server.sh --rekey: the server offers ReKey, the rotation tests run; otherwise the rest. */
        if (getenv("EVS_TEST_KMIP_REKEY"))
                return cmocka_run_group_tests(rekey_tests, setup_all, NULL);
        /* A dead peer must never kill the process: the backend guards its writes itself. */
        return cmocka_run_group_tests(tests, setup_all, NULL);
}
