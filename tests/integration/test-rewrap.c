/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The crash-safe rewrap of src/shared/rewrap.c on LUKS2 image files (libcryptsetup checks keys on a
 * regular file without device-mapper). A crash is simulated by running the steps up to one of them and
 * dropping the state: after each, the volume must still open, both the way evs-unwrap-test does it
 * (first token, unwrap, keyslot check) and the way attach does it; and a new rewrap must finish the job. */

#include <fcntl.h>
#include <libcryptsetup.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include "crypto.h"
#include "envelope.h"
#include "dm.h"
#include "luks.h"
#include "rewrap.h"
#include "test-util.h"

#define VOLUME "vol-rewrap-1"
#define IMAGE_SIZE (32U * 1024U * 1024U)
#define DATA_OFFSET (16U * 1024U * 1024U)

typedef struct fixture {
        char *dir;
        char *state;
        char *image;
        kms_registry *reg;
        kms_backend *b;
        kms_key a, b_key, c;
        uint8_t data_sum[32];
} fixture;

static void create_key(kms_backend *b, const char *alias, kms_key *ret) {
        int r = kms_key_create(b, alias, NULL, ret);

        if (r < 0)
                fail_msg("kms_key_create(%s): %s: %s", alias, strerror(-r), strna(kms_backend_error(b)));
}

static void data_sum(const char *image, uint8_t ret[32]) {
        _cleanup_free_ char *buf = NULL;
        unsigned n = 0;
        size_t size;

        buf = test_read_file(image, &size);
        assert_int_equal(size, IMAGE_SIZE);
        assert_int_equal(EVP_Digest(buf + DATA_OFFSET, size - DATA_OFFSET, ret, &n, EVP_sha256(), NULL), 1);
        assert_int_equal(n, 32);
}

/* A fresh volume under key A with random bytes in its data area. */
static void make_volume(fixture *f) {
        _cleanup_(secret_freep) secret *dk = NULL;
        _cleanup_(evs_token_done) evs_token t = {};
        _cleanup_free_ uint8_t *junk = malloc(1024 * 1024);
        _cleanup_(closep) int fd = -EBADF;
        char *what = NULL;
        int r;

        assert_non_null(junk);
        (void) unlink(f->image);
        fd = open(f->image, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, IMAGE_SIZE), 0);

        r = envelope_seal(f->b, &f->a, VOLUME, &dk, &t);
        if (r < 0)
                fail_msg("envelope_seal: %s", strerror(-r));
        r = luks_format(f->image, VOLUME, dk, &t, false, &what);
        if (r < 0)
                fail_msg("luks_format: %s (%s)", strerror(-r), strna(what));

        assert_int_equal(crypto_random(junk, 1024 * 1024), 0);
        assert_int_equal(pwrite(fd, junk, 1024 * 1024, DATA_OFFSET + 4096), 1024 * 1024);
        data_sum(f->image, f->data_sum);
}

static int setup(void **state) {
        fixture *f = calloc(1, sizeof *f);

        assert_non_null(f);
        test_clock = TEST_CLOCK_START;
        f->dir = test_mkdtemp();
        f->state = test_path(f->dir, "state");
        f->image = test_path(f->dir, "disk.img");
        f->reg = test_local_registry(f->state);
        assert_int_equal(kms_registry_get(f->reg, NULL, &f->b), 0);
        create_key(f->b, "app-a", &f->a);
        create_key(f->b, "app-b", &f->b_key);
        create_key(f->b, "app-c", &f->c);
        make_volume(f);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        fixture *f = *state;

        kms_key_done(&f->a);
        kms_key_done(&f->b_key);
        kms_key_done(&f->c);
        kms_registry_free(f->reg);
        test_rm_rf(f->dir);
        free(f->dir);
        free(f->state);
        free(f->image);
        free(f);
        return 0;
}

#define TEST(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

/* The evs-kms tokens of @image: their number, and the key id of each (in token id order) in @ret_keys. */
static unsigned tokens(const char *image, char ret_keys[][64]) {
        struct crypt_device *cd = NULL;
        unsigned n = 0;

        assert_int_equal(crypt_init(&cd, image), 0);
        assert_int_equal(crypt_load(cd, CRYPT_LUKS2, NULL), 0);
        for (int id = 0; id < 32; id++) {
                evs_token t = {};
                const char *type = NULL, *json, *reason;

                if (crypt_token_status(cd, id, &type) == CRYPT_TOKEN_INACTIVE || !type || !streq(type, EVS_TOKEN_TYPE))
                        continue;
                assert_int_equal(crypt_token_json_get(cd, id, &json), id);
                assert_int_equal(evs_token_from_json(json, &t, &reason), 0);
                assert_string_equal(t.volume_id, VOLUME);
                if (ret_keys)
                        snprintf(ret_keys[n], 64, "%s", t.key_id);
                n++;
                evs_token_done(&t);
        }
        crypt_free(cd);
        return n;
}

/* What tests/integration/evs-unwrap-test does, piped into `cryptsetup open --test-passphrase`. */
static void opens_like_unwrap_test(fixture *f) {
        _cleanup_(luks_info_done) luks_info info = {};
        _cleanup_(secret_freep) secret *dk = NULL;
        struct crypt_device *cd = NULL;
        const char *reason = NULL;
        kms_backend *b;
        int r;

        r = luks_read(f->image, &info, &reason);
        if (r < 0)
                fail_msg("luks_read: %s: %s", strerror(-r), strna(reason));
        assert_int_equal(kms_registry_get(f->reg, info.token.backend, &b), 0);
        r = envelope_open(b, &info.token, info.label, NULL, &dk);
        if (r < 0)
                fail_msg("envelope_open: %s: %s", strerror(-r), strna(kms_backend_error(b)));
        assert_int_equal(crypt_init(&cd, f->image), 0);
        assert_int_equal(crypt_load(cd, CRYPT_LUKS2, NULL), 0);
        r = crypt_activate_by_passphrase(cd, NULL, CRYPT_ANY_SLOT, (const char *) dk->data, dk->size, 0);
        crypt_free(cd);
        assert_true(r >= 0);
}

/* What attach does. On the host (no device-mapper) without the mapping; on a real kernel (the vm suite
 * runs this binary too) it opens the mapping for real, reads through it, and closes it. */
static void opens_like_attach(fixture *f, const char *want_key_id) {
        _cleanup_(luks_unlock_done) luks_unlock u = { .registry = f->reg, .volume_id = VOLUME };
        const char *name = dm_available() ? "evs-rewrap-test" : NULL;
        int r;

        r = luks_activate(f->image, name, &u);
        if (r < 0)
                fail_msg("luks_activate: %s: %s", strerror(-r), strna(u.reason ?: kms_backend_error(u.backend)));
        if (want_key_id)
                assert_string_equal(u.key.id, want_key_id);
        if (name) {
                char buf[4096];
                int fd = open("/dev/mapper/evs-rewrap-test", O_RDONLY | O_CLOEXEC);

                assert_true(fd >= 0);
                assert_int_equal(read(fd, buf, sizeof buf), (ssize_t) sizeof buf);
                safe_close(fd);
                assert_int_equal(luks_deactivate(name, NULL, false), 0);
        }
}

static void data_untouched(fixture *f) {
        uint8_t now[32];

        data_sum(f->image, now);
        assert_memory_equal(now, f->data_sum, 32);
}

static int run_to(fixture *f, const char *key_ref, rewrap_step last, rewrap *w) {
        *w = (rewrap) { .device = f->image, .key_ref = key_ref, .registry = f->reg };
        return rewrap_run(w, last);
}

static void rewrap_ok(fixture *f, const char *key_ref, rewrap_step last) {
        _cleanup_(rewrap_done) rewrap w = {};
        int r = run_to(f, key_ref, last, &w);

        if (r < 0)
                fail_msg("rewrap to %s stopped at %s: %s: %s", key_ref, rewrap_step_to_string(w.next), strerror(-r),
                         strna(w.reason ?: kms_backend_error(w.failed)));
        assert_int_equal(w.next, last + 1);
}

static void test_steps_named(void **state) {
        assert_string_equal(rewrap_step_to_string(REWRAP_STEP_RESOLVE), "resolve");
        assert_string_equal(rewrap_step_to_string(REWRAP_STEP_REMOVE), "remove");
        assert_null(rewrap_step_to_string(_REWRAP_STEP_MAX));
}

static void test_full(void **state) {
        fixture *f = *state;
        _cleanup_(rewrap_done) rewrap w = {};
        char keys[4][64];

        assert_int_equal(run_to(f, "app-b", _REWRAP_STEP_MAX - 1, &w), 0);
        assert_int_equal(w.next, _REWRAP_STEP_MAX);
        assert_string_equal(w.volume_id, VOLUME);
        assert_string_equal(w.old_token.key_id, f->a.id);
        assert_string_equal(w.new_token.key_id, f->b_key.id);
        assert_string_equal(w.new_token.key_alias, "app-b");
        assert_int_equal(w.new_token.keyslot, w.old_token.keyslot);
        assert_int_equal(w.n_removed, 1);
        assert_int_equal(rewrap_run_step(&w), -ESTALE);

        assert_int_equal(tokens(f->image, keys), 1);
        assert_string_equal(keys[0], f->b_key.id);
        data_untouched(f);

        /* The old CMK no longer matters. */
        assert_int_equal(kms_key_set_enabled(f->b, "app-a", false, NULL), 0);
        opens_like_unwrap_test(f);
        opens_like_attach(f, f->b_key.id);
}

/* A crash right after each step: the volume opens; a later rewrap finishes with exactly one token. */
static void test_interrupted_after_each_step(void **state) {
        fixture *f = *state;

        for (rewrap_step last = REWRAP_STEP_RESOLVE; last < _REWRAP_STEP_MAX; last++) {
                char keys[4][64];
                unsigned want = last == REWRAP_STEP_ADD || last == REWRAP_STEP_VERIFY ? 2 : 1;

                print_message("crash after step %s\n", rewrap_step_to_string(last));
                make_volume(f);
                rewrap_ok(f, "app-b", last);

                assert_int_equal(tokens(f->image, keys), want);
                if (last < REWRAP_STEP_ADD)
                        assert_string_equal(keys[0], f->a.id);
                if (want == 2) {
                        assert_string_equal(keys[0], f->a.id);
                        assert_string_equal(keys[1], f->b_key.id);
                }
                if (last == REWRAP_STEP_REMOVE)
                        assert_string_equal(keys[0], f->b_key.id);
                opens_like_unwrap_test(f);
                opens_like_attach(f, NULL);
                data_untouched(f);

                /* The next rewrap cleans up whatever was left. */
                rewrap_ok(f, "app-c", _REWRAP_STEP_MAX - 1);
                assert_int_equal(tokens(f->image, keys), 1);
                assert_string_equal(keys[0], f->c.id);
                opens_like_unwrap_test(f);
                opens_like_attach(f, f->c.id);
                data_untouched(f);
        }
}

/* Interrupted with two tokens, then the old CMK disabled: attach goes through the new token, and the
 * next rewrap uses it and removes the dead one. */
static void test_interrupted_then_old_key_disabled(void **state) {
        fixture *f = *state;
        _cleanup_(rewrap_done) rewrap w = {};
        char keys[4][64];

        rewrap_ok(f, "app-b", REWRAP_STEP_VERIFY);
        assert_int_equal(tokens(f->image, NULL), 2);
        assert_int_equal(kms_key_set_enabled(f->b, "app-a", false, NULL), 0);

        opens_like_attach(f, f->b_key.id);

        assert_int_equal(run_to(f, "app-c", _REWRAP_STEP_MAX - 1, &w), 0);
        assert_string_equal(w.old_token.key_id, f->b_key.id);
        assert_int_equal(w.n_removed, 2);
        assert_int_equal(tokens(f->image, keys), 1);
        assert_string_equal(keys[0], f->c.id);
        opens_like_attach(f, f->c.id);
        data_untouched(f);
}

/* A token that does not verify is removed again: the header is back to what it was. */
static void test_verify_failure_rolls_back(void **state) {
        fixture *f = *state;
        _cleanup_(rewrap_done) rewrap w = {};
        char keys[4][64];
        int r;

        assert_int_equal(run_to(f, "app-b", REWRAP_STEP_WRAP, &w), 0);
        w.new_token.wrapped[w.new_token.wrapped_size / 2] ^= 1; /* what a bad write would leave */
        assert_int_equal(rewrap_run_step(&w), 0);                /* ADD */
        assert_int_equal(tokens(f->image, NULL), 2);
        r = rewrap_run_step(&w); /* VERIFY */
        assert_int_equal(r, -EBADMSG);
        assert_int_equal(w.next, REWRAP_STEP_VERIFY);
        assert_int_equal(w.new_token_id, -1);
        assert_int_equal(tokens(f->image, keys), 1);
        assert_string_equal(keys[0], f->a.id);
        opens_like_attach(f, f->a.id);
}

static void test_refusals(void **state) {
        fixture *f = *state;
        _cleanup_free_ char *before = NULL, *after = NULL, *plain = NULL;
        _cleanup_(rewrap_done) rewrap w1 = {}, w2 = {}, w3 = {}, w4 = {};
        size_t n1, n2;

        before = test_read_file(f->image, &n1);

        assert_int_equal(kms_key_set_enabled(f->b, "app-b", false, NULL), 0);
        assert_int_equal(run_to(f, "app-b", _REWRAP_STEP_MAX - 1, &w1), -EKEYREVOKED);
        assert_int_equal(w1.next, REWRAP_STEP_RESOLVE);
        assert_non_null(strstr(kms_backend_error(w1.failed), "is disabled"));

        assert_int_equal(run_to(f, "no-such-key", _REWRAP_STEP_MAX - 1, &w2), -ENOENT);
        assert_int_equal(run_to(f, "nobackend:app-b", _REWRAP_STEP_MAX - 1, &w3), -ENOENT);
        assert_null(w3.failed);

        /* The current CMK disabled: nothing can unwrap the data key. */
        assert_int_equal(kms_key_set_enabled(f->b, "app-a", false, NULL), 0);
        assert_int_equal(run_to(f, "app-c", _REWRAP_STEP_MAX - 1, &w4), -EKEYREVOKED);
        assert_int_equal(w4.next, REWRAP_STEP_WRAP);

        after = test_read_file(f->image, &n2);
        assert_int_equal(n1, n2);
        assert_memory_equal(before, after, n1);

        /* Not a LUKS2 volume at all. */
        {
                _cleanup_(rewrap_done) rewrap w = {};

                _cleanup_free_ char *zeros = calloc(1, 1024 * 1024);

                assert_non_null(zeros);
                plain = test_path(f->dir, "plain.img");
                test_write_file(plain, zeros, 1024 * 1024, 0600);
                w = (rewrap) { .device = plain, .key_ref = "app-c", .registry = f->reg };
                assert_int_equal(rewrap_run(&w, _REWRAP_STEP_MAX - 1), -ENODATA);
                assert_string_equal(w.reason, "not a LUKS2 volume");
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_steps_named),
                TEST(test_full),
                TEST(test_interrupted_after_each_step),
                TEST(test_interrupted_then_old_key_disabled),
                TEST(test_verify_failure_rolls_back),
                TEST(test_refusals),
        };

        crypt_set_log_callback(NULL, NULL, NULL);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
