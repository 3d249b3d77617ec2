/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The pkcs11 backend against a real SoftHSM2 token (run through softhsm-env.sh). */

#include <dlfcn.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <p11-kit/pkcs11.h>

#include "crypto.h"
#include "kms.h"

static const char *module_path, *token_label, *pin_file, *work_dir;

static int setup_all(void **state) {
        module_path = getenv("EVS_TEST_P11_MODULE");
        token_label = getenv("EVS_TEST_P11_TOKEN");
        pin_file = getenv("EVS_TEST_P11_PINFILE");
        work_dir = getenv("EVS_TEST_P11_DIR");
        if (!module_path || !token_label || !pin_file || !work_dir) {
                fprintf(stderr, "run me through tests/integration/softhsm-env.sh\n");
                return -1;
        }
        return 0;
}

static kms_context test_ctx = { .state_dir = "/nonexistent" };

/* Builds a config from NULL-terminated key, value pairs. */
static void config_build(kms_backend_config *cfg, const char *name, ...) {
        va_list ap;
        const char *k;

        *cfg = (kms_backend_config) { .name = strdup(name), .type = strdup("pkcs11") };
        va_start(ap, name);
        while ((k = va_arg(ap, const char *))) {
                const char *v = va_arg(ap, const char *);

                cfg->settings = reallocarray(cfg->settings, cfg->n_settings + 1, sizeof(kms_setting));
                assert_non_null(cfg->settings);
                cfg->settings[cfg->n_settings++] = (kms_setting) {
                        .key = strdup(k), .value = strdup(v), .file = strdup("test.conf"), .line = (unsigned) cfg->n_settings + 1,
                };
        }
        va_end(ap);
}

static kms_backend *open_backend(const char *name, const char *label, const char *pin) {
        kms_backend_config cfg;
        kms_backend *b = NULL;
        char *error = NULL;
        int r;

        config_build(&cfg, name, "Module", module_path, "TokenLabel", label, "PinFile", pin, NULL);
        r = kms_backend_open(&cfg, &test_ctx, &b, &error);
        if (r < 0)
                fprintf(stderr, "open: %s\n", strna(error));
        assert_int_equal(r, 0);
        free(error);
        kms_backend_config_done(&cfg);
        return b;
}

static kms_backend *open_default(void) {
        return open_backend("hsm", token_label, pin_file);
}

static secret *data_key(void) {
        secret *s = NULL;

        assert_int_equal(crypto_random_secret(KMS_DATA_KEY_SIZE, &s), 0);
        return s;
}

static void test_create_get_list(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_default();
        _cleanup_(kms_key_done) kms_key k = {}, k2 = {}, g = {}, g2 = {}, none = {};
        kms_key *keys = NULL;
        size_t n = 0;
        bool seen1 = false, seen2 = false;

        assert_int_equal(kms_key_create(b, "app/cmk-one", "ignored description", &k), 0);
        assert_int_equal(strlen(k.id), 32);
        assert_string_equal(k.alias, "app/cmk-one");
        assert_string_equal(k.backend, "hsm");
        assert_int_equal(k.state, KMS_KEY_ENABLED);

        assert_int_equal(kms_key_create(b, NULL, NULL, &k2), 0);
        assert_null(k2.alias);
        assert_string_not_equal(k.id, k2.id);

        assert_int_equal(kms_key_get(b, k.id, &g), 0);
        assert_string_equal(g.id, k.id);
        assert_string_equal(g.alias, "app/cmk-one");
        assert_int_equal(kms_key_get(b, "app/cmk-one", &g2), 0);
        assert_string_equal(g2.id, k.id);

        assert_int_equal(kms_key_create(b, "app/cmk-one", NULL, &none), -EEXIST);
        assert_int_equal(kms_key_get(b, "app/no-such-key", &none), -ENOENT);
        assert_non_null(strstr(kms_backend_error(b), "no key app/no-such-key"));
        assert_int_equal(kms_key_get(b, "00112233445566778899aabbccddeeff", &none), -ENOENT);

        assert_int_equal(kms_key_list(b, &keys, &n), 0);
        assert_true(n >= 2);
        for (size_t i = 0; i < n; i++) {
                assert_string_equal(keys[i].backend, "hsm");
                seen1 = seen1 || streq(keys[i].id, k.id);
                seen2 = seen2 || streq(keys[i].id, k2.id);
        }
        assert_true(seen1);
        assert_true(seen2);
        kms_key_array_free(keys, n);
}

static void test_default_key(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_default();
        _cleanup_(kms_key_done) kms_key k = {}, k2 = {};

        assert_int_equal(kms_key_get(b, KMS_DEFAULT_KEY_ALIAS, &k), 0);
        assert_string_equal(k.alias, KMS_DEFAULT_KEY_ALIAS);
        assert_int_equal(kms_key_get(b, KMS_DEFAULT_KEY_ALIAS, &k2), 0);
        assert_string_equal(k.id, k2.id);
        assert_int_equal(kms_key_set_enabled(b, KMS_DEFAULT_KEY_ALIAS, false, NULL), -KMS_EPROTECTED);
}

static void test_wrap_unwrap(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_default();
        _cleanup_(kms_key_done) kms_key k = {}, other = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL;
        _cleanup_free_ uint8_t *w = NULL, *w2 = NULL;
        size_t n, n2;
        secret *bad = NULL;

        assert_int_equal(kms_key_create(b, "app/wrap", NULL, &k), 0);
        assert_int_equal(kms_key_create(b, NULL, NULL, &other), 0);

        assert_int_equal(kms_wrap(b, k.id, "vol-1", dk, &w, &n), 0);
        assert_true(n <= KMS_WRAPPED_MAX);
        assert_memory_equal(w, "EVP1", 4);
        assert_int_equal(kms_unwrap(b, k.id, "vol-1", w, n, &out), 0);
        assert_true(secret_equal(out, dk));

        /* Two wraps of the same key differ (fresh IV). */
        assert_int_equal(kms_wrap(b, k.id, "vol-1", dk, &w2, &n2), 0);
        assert_int_equal(n, n2);
        assert_memory_not_equal(w, w2, n);

        /* Bound to the volume. */
        assert_int_equal(kms_unwrap(b, k.id, "vol-2", w, n, &bad), -EBADMSG);
        assert_non_null(strstr(kms_backend_error(b), "CKR_"));
        /* Any flipped bit: IV, ciphertext, tag. */
        for (size_t pos = n - 60; pos < n; pos += 7) {
                w[pos] ^= 0x01;
                assert_int_equal(kms_unwrap(b, k.id, "vol-1", w, n, &bad), -EBADMSG);
                w[pos] ^= 0x01;
        }
        /* The header is authenticated too, and names its key. */
        assert_int_equal(kms_unwrap(b, other.id, "vol-1", w, n, &bad), -EXDEV);
        w[0] = 'X';
        assert_int_equal(kms_unwrap(b, k.id, "vol-1", w, n, &bad), -EBADMSG);
        w[0] = 'E';
        assert_int_equal(kms_unwrap(b, k.id, "vol-1", w, 20, &bad), -EBADMSG);
        /* By alias works too. */
        secret_free(out);
        out = NULL;
        assert_int_equal(kms_unwrap(b, "app/wrap", "vol-1", w, n, &out), 0);
        assert_true(secret_equal(out, dk));
        assert_null(bad);

        assert_int_equal(kms_wrap(b, "app/missing", "vol-1", dk, &w2, &n2), -ENOENT);
}

static void test_disable_enable(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_default();
        _cleanup_(kms_key_done) kms_key k = {}, s = {}, s2 = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL;
        _cleanup_free_ uint8_t *w = NULL, *w2 = NULL;
        size_t n, n2;

        assert_int_equal(kms_key_create(b, "app/toggle", NULL, &k), 0);
        assert_int_equal(kms_wrap(b, k.id, "vol-9", dk, &w, &n), 0);

        assert_int_equal(kms_key_set_enabled(b, k.id, false, &s), 0);
        assert_int_equal(s.state, KMS_KEY_DISABLED);
        /* Refused by the HSM itself: we never check the state before asking the token. */
        assert_int_equal(kms_wrap(b, k.id, "vol-9", dk, &w2, &n2), -EKEYREVOKED);
        assert_non_null(strstr(kms_backend_error(b), "CKR_KEY_FUNCTION_NOT_PERMITTED"));
        assert_int_equal(kms_unwrap(b, k.id, "vol-9", w, n, &out), -EKEYREVOKED);
        assert_non_null(strstr(kms_backend_error(b), "CKR_KEY_FUNCTION_NOT_PERMITTED"));
        assert_non_null(strstr(kms_backend_error(b), "disabled"));

        assert_int_equal(kms_key_set_enabled(b, "app/toggle", true, &s2), 0);
        assert_int_equal(s2.state, KMS_KEY_ENABLED);
        assert_int_equal(kms_unwrap(b, k.id, "vol-9", w, n, &out), 0);
        assert_true(secret_equal(out, dk));
}

static void test_no_scheduled_deletion(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_default();
        _cleanup_(kms_key_done) kms_key k = {}, s = {}, g = {};

        assert_int_equal(kms_key_create(b, "app/keep", NULL, &k), 0);
        assert_int_equal(kms_key_schedule_deletion(b, k.id, 7, &s), -EOPNOTSUPP);
        assert_non_null(strstr(kms_backend_error(b), "no scheduled key deletion"));
        assert_int_equal(kms_key_cancel_deletion(b, k.id, NULL), -EOPNOTSUPP);
        /* Nothing was emulated: the key is untouched. */
        assert_int_equal(kms_key_get(b, k.id, &g), 0);
        assert_int_equal(g.state, KMS_KEY_ENABLED);
}

static void test_no_rotation(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_default();
        _cleanup_(kms_key_done) kms_key k = {}, g = {};

        assert_int_equal(kms_key_create(b, "app/norotate", NULL, &k), 0);
        assert_int_equal(kms_key_rotate(b, k.id, NULL), -EOPNOTSUPP);
        assert_non_null(strstr(kms_backend_error(b), "rotation is not supported by backend"));
        assert_non_null(strstr(kms_backend_error(b), "type pkcs11"));
        assert_int_equal(kms_key_set_rotation(b, k.id, 30, NULL), -EOPNOTSUPP);
        assert_non_null(strstr(kms_backend_error(b), "automatic rotation is not supported"));
        assert_int_equal(kms_key_get(b, k.id, &g), 0);
        assert_int_equal(g.state, KMS_KEY_ENABLED);
        assert_int_equal(g.version, 0);
}

static char *write_pin(const char *name, const char *pin, mode_t mode) {
        char *path = NULL;
        int fd;

        assert_true(asprintf(&path, "%s/%s", work_dir, name) > 0);
        (void) unlink(path);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, pin, strlen(pin)), (ssize_t) strlen(pin));
        close(fd);
        assert_int_equal(chmod(path, mode), 0);
        return path;
}

static void test_wrong_pin(void **state) {
        _cleanup_free_ char *path = write_pin("wrong-pin", "not-the-pin\n", 0400);
        _cleanup_(kms_backend_freep) kms_backend *b = open_backend("bad", token_label, path);
        _cleanup_(kms_key_done) kms_key k = {};

        assert_int_equal(kms_key_get(b, "app/anything", &k), -EHOSTDOWN);
        assert_non_null(strstr(kms_backend_error(b), "refused the PIN"));
        assert_non_null(strstr(kms_backend_error(b), "CKR_PIN_INCORRECT"));
}

static void test_pin_file_mode(void **state) {
        _cleanup_free_ char *path = write_pin("loose-pin", "1234", 0644);
        _cleanup_(kms_backend_freep) kms_backend *b = open_backend("loose", token_label, path);
        _cleanup_(kms_key_done) kms_key k = {};

        _cleanup_free_ char *empty = write_pin("empty-pin", "\n", 0400);
        _cleanup_(kms_backend_freep) kms_backend *e = open_backend("empty", token_label, empty);

        assert_int_equal(kms_key_get(b, "app/anything", &k), -EINVAL);
        assert_non_null(strstr(kms_backend_error(b), "accessible by group or others"));
        assert_int_equal(kms_key_get(e, "app/anything", &k), -EINVAL);
        assert_non_null(strstr(kms_backend_error(e), "is empty"));
}

static void test_wrong_token(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_backend("lost", "no-such-token", pin_file);
        _cleanup_(kms_key_done) kms_key k = {};

        assert_int_equal(kms_key_get(b, "app/anything", &k), -EHOSTDOWN);
        assert_non_null(strstr(kms_backend_error(b), "no token labelled 'no-such-token'"));
        assert_non_null(strstr(kms_backend_error(b), "'evs-test'"));
}

static void test_other_token_is_separate(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *a = open_default(), *o = NULL;
        _cleanup_(kms_key_done) kms_key k = {}, g = {};

        o = open_backend("other", "evs-other", pin_file);
        assert_int_equal(kms_key_create(a, "app/only-on-test", NULL, &k), 0);
        assert_int_equal(kms_key_get(o, k.id, &g), -ENOENT);
}

static void test_two_hosts(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *a = open_default(), *b = NULL;
        _cleanup_(kms_key_done) kms_key k = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *o1 = NULL, *o2 = NULL;
        _cleanup_free_ uint8_t *wa = NULL, *wb = NULL;
        _cleanup_free_ char *cred_dir = NULL, *cred = NULL;
        kms_context ctx2 = { .state_dir = "/nonexistent" };
        size_t na, nb;
        char *pin = NULL;
        size_t pin_size = 0;
        FILE *f;

        /* The second host gets its PIN as a systemd credential. */
        assert_true(asprintf(&cred_dir, "%s/creds", work_dir) > 0);
        (void) mkdir(cred_dir, 0700);
        f = fopen(pin_file, "re");
        assert_non_null(f);
        assert_true(getline(&pin, &pin_size, f) > 0);
        fclose(f);
        assert_true(asprintf(&cred, "%s/hsm-pin", cred_dir) > 0);
        (void) unlink(cred);
        f = fopen(cred, "we");
        assert_non_null(f);
        fputs(pin, f);
        fclose(f);
        free(pin);
        ctx2.credentials_dir = cred_dir;
        {
                kms_backend_config cfg;
                char *error = NULL;

                config_build(&cfg, "hsm", "Module", module_path, "TokenLabel", token_label, "PinFile", "hsm-pin", NULL);
                assert_int_equal(kms_backend_open(&cfg, &ctx2, &b, &error), 0);
                kms_backend_config_done(&cfg);
        }

        assert_int_equal(kms_key_create(a, "app/shared", NULL, &k), 0);
        assert_int_equal(kms_wrap(a, k.id, "vol-shared", dk, &wa, &na), 0);
        assert_int_equal(kms_wrap(b, k.id, "vol-shared", dk, &wb, &nb), 0);
        assert_int_equal(kms_unwrap(b, k.id, "vol-shared", wa, na, &o1), 0);
        assert_int_equal(kms_unwrap(a, k.id, "vol-shared", wb, nb, &o2), 0);
        assert_true(secret_equal(o1, dk));
        assert_true(secret_equal(o2, dk));
}

/* Closes every session of the process behind the backend's back: it must re-open and log in. */
static void test_session_reopened(void **state) {
        _cleanup_(kms_backend_freep) kms_backend *b = open_default();
        _cleanup_(kms_key_done) kms_key k = {}, g = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL;
        _cleanup_free_ uint8_t *w = NULL;
        CK_FUNCTION_LIST_PTR f = NULL;
        CK_C_GetFunctionList get;
        CK_SLOT_ID slots[16];
        CK_ULONG n = ELEMENTSOF(slots);
        size_t wn;
        void *dl;

        assert_int_equal(kms_key_create(b, "app/reopen", NULL, &k), 0);
        assert_int_equal(kms_wrap(b, k.id, "vol-r", dk, &w, &wn), 0);

        dl = dlopen(module_path, RTLD_NOW | RTLD_NOLOAD);
        assert_non_null(dl); /* the backend has it loaded */
        get = (CK_C_GetFunctionList) dlsym(dl, "C_GetFunctionList");
        assert_non_null(get);
        assert_int_equal(get(&f), CKR_OK);
        assert_int_equal(f->C_GetSlotList(CK_TRUE, slots, &n), CKR_OK);
        for (CK_ULONG i = 0; i < n; i++)
                assert_int_equal(f->C_CloseAllSessions(slots[i]), CKR_OK);
        dlclose(dl);

        assert_int_equal(kms_key_get(b, k.id, &g), 0);
        assert_int_equal(kms_unwrap(b, k.id, "vol-r", w, wn, &out), 0);
        assert_true(secret_equal(out, dk));
}

static void expect_config_error(const char *needle, ...) {
        kms_backend_config cfg;
        kms_backend *b = NULL;
        char *error = NULL;
        va_list ap;
        const char *k;

        cfg = (kms_backend_config) { .name = strdup("hsm"), .type = strdup("pkcs11") };
        va_start(ap, needle);
        while ((k = va_arg(ap, const char *))) {
                const char *v = va_arg(ap, const char *);

                cfg.settings = reallocarray(cfg.settings, cfg.n_settings + 1, sizeof(kms_setting));
                cfg.settings[cfg.n_settings++] = (kms_setting) {
                        .key = strdup(k), .value = strdup(v), .file = strdup("evs.conf"), .line = 7,
                };
        }
        va_end(ap);
        assert_int_equal(kms_backend_open(&cfg, &test_ctx, &b, &error), -EINVAL);
        assert_null(b);
        assert_non_null(error);
        if (!strstr(error, needle))
                fail_msg("'%s' does not contain '%s'", error, needle);
        free(error);
        kms_backend_config_done(&cfg);
}

static void test_config(void **state) {
        expect_config_error("needs Module=", "Module", "/x.so", NULL);
        expect_config_error("evs.conf:7: Module= must be an absolute path", "Module", "x.so", "TokenLabel", "t",
                            "PinFile", "/p", NULL);
        expect_config_error("unknown key Slot=", "Module", "/x.so", "TokenLabel", "t", "PinFile", "/p", "Slot", "0",
                            NULL);
        expect_config_error("TokenLabel= must be 1 to 32 bytes", "Module", "/x.so", "TokenLabel",
                            "0123456789012345678901234567890123", "PinFile", "/p", NULL);
        expect_config_error("$CREDENTIALS_DIRECTORY is not set", "Module", "/x.so", "TokenLabel", "t", "PinFile",
                            "hsm-pin", NULL);
        expect_config_error("absolute path or a credential name", "Module", "/x.so", "TokenLabel", "t", "PinFile",
                            "a/b", NULL);
}

static void test_bad_module(void **state) {
        kms_backend_config cfg;
        _cleanup_(kms_backend_freep) kms_backend *b = NULL;
        _cleanup_(kms_key_done) kms_key k = {};
        _cleanup_free_ char *fifo = NULL;
        char dir[] = "/tmp/evs-p11-fifo.XXXXXX", *error = NULL;

        /* open() must not touch the module; the first use reports it. */
        config_build(&cfg, "hsm", "Module", "/nonexistent/libnothing.so", "TokenLabel", token_label, "PinFile",
                     pin_file, NULL);
        assert_int_equal(kms_backend_open(&cfg, &test_ctx, &b, &error), 0);
        kms_backend_config_done(&cfg);
        assert_int_equal(kms_key_get(b, "app/x", &k), -EHOSTDOWN);
        assert_non_null(strstr(kms_backend_error(b), "cannot load PKCS#11 module"));
        b = kms_backend_free(b);

        /* A FIFO is refused, not waited on (dlopen() would read it). */
        assert_non_null(mkdtemp(dir));
        assert_true(asprintf(&fifo, "%s/module.so", dir) > 0);
        assert_int_equal(mkfifo(fifo, 0600), 0);
        config_build(&cfg, "hsm", "Module", fifo, "TokenLabel", token_label, "PinFile", pin_file, NULL);
        assert_int_equal(kms_backend_open(&cfg, &test_ctx, &b, &error), 0);
        kms_backend_config_done(&cfg);
        assert_int_equal(kms_key_get(b, "app/x", &k), -EHOSTDOWN);
        assert_non_null(strstr(kms_backend_error(b), "not a regular file"));
        assert_int_equal(unlink(fifo), 0);
        assert_int_equal(rmdir(dir), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_config),
                cmocka_unit_test(test_bad_module),
                /* First, while no instance is logged in (login state is per process). */
                cmocka_unit_test(test_wrong_pin),
                cmocka_unit_test(test_pin_file_mode),
                cmocka_unit_test(test_wrong_token),
                cmocka_unit_test(test_create_get_list),
                cmocka_unit_test(test_default_key),
                cmocka_unit_test(test_wrap_unwrap),
                cmocka_unit_test(test_disable_enable),
                cmocka_unit_test(test_no_scheduled_deletion),
                cmocka_unit_test(test_no_rotation),
                cmocka_unit_test(test_other_token_is_separate),
                cmocka_unit_test(test_two_hosts),
                cmocka_unit_test(test_session_reopened),
        };

        return cmocka_run_group_tests(tests, setup_all, NULL);
}
