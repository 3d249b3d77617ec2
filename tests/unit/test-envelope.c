/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "crypto.h"
#include "envelope.h"
#include "test-util.h"

typedef struct fixture {
        char *dir;
        kms_context ctx;
        kms_backend *b;
} fixture;

static int setup(void **state) {
        fixture *f = calloc(1, sizeof *f);

        assert_non_null(f);
        test_clock = TEST_CLOCK_START;
        f->dir = test_mkdtemp();
        f->ctx = (kms_context) { .state_dir = f->dir, .now = test_clock_now };
        f->b = test_local_backend(&f->ctx);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        fixture *f = *state;

        kms_backend_free(f->b);
        test_rm_rf(f->dir);
        free(f->dir);
        free(f);
        return 0;
}

#define TEST(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

static void create_key(kms_backend *b, const char *alias, kms_key *ret) {
        int r = kms_key_create(b, alias, NULL, ret);

        if (r < 0)
                fail_msg("kms_key_create: %s: %s", strerror(-r), strna(kms_backend_error(b)));
}

static void seal(kms_backend *b, const kms_key *key, const char *volume_id, secret **ret_dk, evs_token *ret) {
        int r = envelope_seal(b, key, volume_id, ret_dk, ret);

        if (r < 0)
                fail_msg("envelope_seal: %s: %s", strerror(-r), strna(kms_backend_error(b)));
}

static void expect_open(kms_backend *b, const evs_token *t, const char *volume_id, const secret *want) {
        _cleanup_(secret_freep) secret *dk = NULL;
        int r = envelope_open(b, t, volume_id, NULL, &dk);

        if (r < 0)
                fail_msg("envelope_open: %s: %s", strerror(-r), strna(kms_backend_error(b)));
        assert_true(secret_equal(dk, want));
}

static void expect_error_contains(kms_backend *b, const char *what) {
        const char *e = kms_backend_error(b);

        if (!e || !strstr(e, what))
                fail_msg("backend error \"%s\" does not mention \"%s\"", strna(e), what);
}

static void test_round_trip(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key def = {}, got = {};
        _cleanup_(secret_freep) secret *dk = NULL, *dk2 = NULL, *dk3 = NULL;
        _cleanup_(evs_token_done) evs_token t = {}, t2 = {}, parsed = {};
        _cleanup_free_ char *json = NULL;
        evs_token unused = {};
        secret *none = NULL;

        assert_int_equal(kms_key_get(f->b, KMS_DEFAULT_KEY_ALIAS, &def), 0);
        seal(f->b, &def, "vol-1", &dk, &t);
        assert_int_equal(dk->size, KMS_DATA_KEY_SIZE);
        assert_int_equal(t.keyslot, -1);
        assert_string_equal(t.backend, "local");
        assert_string_equal(t.key_id, def.id);
        assert_string_equal(t.key_alias, "evs/default");
        assert_string_equal(t.volume_id, "vol-1");
        assert_true(t.wrapped_size > 0 && t.wrapped_size <= KMS_WRAPPED_MAX);
        assert_null(memmem(t.wrapped, t.wrapped_size, dk->data, dk->size));

        assert_int_equal(envelope_open(f->b, &t, "vol-1", &got, &dk2), 0);
        assert_true(secret_equal(dk, dk2));
        assert_string_equal(got.id, def.id);
        assert_int_equal(got.state, KMS_KEY_ENABLED);
        assert_string_equal(got.backend, "local");

        /* Through the on-disk form. */
        t.keyslot = 0;
        assert_int_equal(evs_token_to_json(&t, &json), 0);
        assert_int_equal(evs_token_from_json(json, &parsed, NULL), 0);
        expect_open(f->b, &parsed, "vol-1", dk);

        /* Each volume gets its own data key. */
        seal(f->b, &def, "vol-2", &dk3, &t2);
        assert_false(secret_equal(dk, dk3));
        expect_open(f->b, &t2, "vol-2", dk3);

        /* Bad volume ids are refused before anything is wrapped. */
        assert_int_equal(envelope_seal(f->b, &def, "", &none, &unused), -EINVAL);
        assert_int_equal(envelope_seal(f->b, &def, "a/b", &none, &unused), -EINVAL);
        assert_int_equal(envelope_seal(f->b, &def, NULL, &none, &unused), -EINVAL);
        assert_null(none);
        assert_null(unused.wrapped);
}

static void test_other_volume(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key k = {};
        _cleanup_(secret_freep) secret *dk = NULL, *out = NULL;
        _cleanup_(evs_token_done) evs_token t = {};

        create_key(f->b, "env", &k);
        seal(f->b, &k, "vol-a", &dk, &t);

        /* The disk says it is vol-b (label, serial) but carries vol-a's token. */
        assert_int_equal(envelope_open(f->b, &t, "vol-b", NULL, &out), -EMEDIUMTYPE);
        expect_error_contains(f->b, "vol-a");
        expect_error_contains(f->b, "vol-b");
        assert_int_equal(envelope_open(f->b, &t, "VOL-A", NULL, &out), -EMEDIUMTYPE);
        assert_null(out);
        expect_open(f->b, &t, "vol-a", dk);
}

static void test_copied_token(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key k = {};
        _cleanup_(secret_freep) secret *dka = NULL, *dkb = NULL, *out = NULL;
        _cleanup_(evs_token_done) evs_token a = {}, b = {};

        create_key(f->b, "shared", &k);
        seal(f->b, &k, "vol-a", &dka, &a);
        seal(f->b, &k, "vol-b", &dkb, &b);

        /* vol-a's token written onto vol-b and edited to name vol-b: the wrap is bound to vol-a. */
        free(a.volume_id);
        a.volume_id = strdup("vol-b");
        assert_non_null(a.volume_id);
        assert_int_equal(envelope_open(f->b, &a, "vol-b", NULL, &out), -EBADMSG);
        assert_null(out);
        expect_open(f->b, &b, "vol-b", dkb);

        /* Swapping the wrapped keys between the tokens fails the same way. */
        {
                uint8_t *w = a.wrapped;
                size_t s = a.wrapped_size;

                free(a.volume_id);
                a.volume_id = strdup("vol-a");
                a.wrapped = b.wrapped;
                a.wrapped_size = b.wrapped_size;
                b.wrapped = w;
                b.wrapped_size = s;
                assert_int_equal(envelope_open(f->b, &a, "vol-a", NULL, &out), -EBADMSG);
                assert_int_equal(envelope_open(f->b, &b, "vol-b", NULL, &out), -EBADMSG);
        }
}

static void test_tampered(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key k = {}, other = {};
        _cleanup_(secret_freep) secret *dk = NULL, *out = NULL;
        _cleanup_(evs_token_done) evs_token t = {};

        create_key(f->b, "tamper", &k);
        create_key(f->b, "tamper/other", &other);
        seal(f->b, &k, "vol-t", &dk, &t);

        t.wrapped[t.wrapped_size - 1] ^= 0x80;
        assert_int_equal(envelope_open(f->b, &t, "vol-t", NULL, &out), -EBADMSG);
        t.wrapped[t.wrapped_size - 1] ^= 0x80;

        /* The token names another CMK than the one that wrapped it. */
        free(t.key_id);
        t.key_id = strdup(other.id);
        assert_int_equal(envelope_open(f->b, &t, "vol-t", NULL, &out), -EXDEV);

        /* A CMK that does not exist. */
        free(t.key_id);
        t.key_id = strdup("00000000-0000-4000-8000-000000000000");
        assert_int_equal(envelope_open(f->b, &t, "vol-t", NULL, &out), -ENOENT);
        assert_null(out);
}

static void test_key_states(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key k = {}, p = {};
        _cleanup_(secret_freep) secret *dk = NULL, *out = NULL;
        _cleanup_(evs_token_done) evs_token t = {};
        kms_key unused = {};
        char ts[FORMAT_TIMESTAMP_MAX];

        create_key(f->b, "lifecycle", &k);
        seal(f->b, &k, "vol-l", &dk, &t);

        assert_int_equal(kms_key_set_enabled(f->b, k.id, false, NULL), 0);
        assert_int_equal(envelope_open(f->b, &t, "vol-l", &unused, &out), -EKEYREVOKED);
        expect_error_contains(f->b, "disabled");
        expect_error_contains(f->b, k.id);

        assert_int_equal(kms_key_schedule_deletion(f->b, k.id, 7, &p), 0);
        assert_int_equal(envelope_open(f->b, &t, "vol-l", &unused, &out), -EKEYEXPIRED);
        expect_error_contains(f->b, "pending deletion");
        expect_error_contains(f->b, format_timestamp(ts, sizeof ts, p.deletion_date));
        assert_non_null(strstr(ts, "2026-01-08T00:00:00Z")); /* TEST_CLOCK_START + 7 days */

        /* Sealing under an unusable key is refused the same way. */
        {
                secret *none = NULL;
                evs_token nt = {};

                assert_int_equal(envelope_seal(f->b, &k, "vol-new", &none, &nt), -EKEYEXPIRED);
                assert_null(none);
        }

        test_clock = p.deletion_date;
        assert_int_equal(envelope_open(f->b, &t, "vol-l", &unused, &out), -ENOKEY);
        expect_error_contains(f->b, "destroyed");
        assert_null(out);
        assert_null(unused.id);
}

static void test_rewrap(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key a = {}, b = {}, got = {};
        _cleanup_(secret_freep) secret *dk = NULL, *out = NULL;
        _cleanup_(evs_token_done) evs_token ta = {}, tb = {}, tc = {};
        evs_token unused = {};

        create_key(f->b, "old", &a);
        create_key(f->b, "new", &b);
        seal(f->b, &a, "vol-r", &dk, &ta);

        assert_int_equal(envelope_rewrap(f->b, &ta, f->b, &b, &tb), 0);
        assert_string_equal(tb.key_id, b.id);
        assert_string_equal(tb.key_alias, "new");
        assert_string_equal(tb.volume_id, "vol-r");
        assert_string_equal(tb.backend, "local");
        assert_int_equal(envelope_open(f->b, &tb, "vol-r", &got, &out), 0);
        assert_true(secret_equal(out, dk)); /* the same data key: the LUKS keyslot stays valid */
        assert_string_equal(got.id, b.id);

        /* The old CMK can now go. */
        assert_int_equal(kms_key_set_enabled(f->b, a.id, false, NULL), 0);
        assert_int_equal(envelope_open(f->b, &ta, "vol-r", NULL, &out), -EKEYREVOKED);
        expect_open(f->b, &tb, "vol-r", dk);
        assert_int_equal(kms_key_schedule_deletion(f->b, a.id, 7, NULL), 0);
        expect_open(f->b, &tb, "vol-r", dk);

        /* Rewrapping from an unusable key fails with its state. */
        assert_int_equal(envelope_rewrap(f->b, &ta, f->b, &b, &unused), -EKEYEXPIRED);

        /* ... and to a disabled one too. */
        assert_int_equal(kms_key_set_enabled(f->b, b.id, false, NULL), 0);
        {
                _cleanup_(kms_key_done) kms_key c = {};

                create_key(f->b, "third", &c);
                assert_int_equal(envelope_rewrap(f->b, &tb, f->b, &c, &unused), -EKEYREVOKED);
                assert_int_equal(kms_key_set_enabled(f->b, b.id, true, NULL), 0);
                assert_int_equal(kms_key_set_enabled(f->b, c.id, false, NULL), 0);
                assert_int_equal(envelope_rewrap(f->b, &tb, f->b, &c, &unused), -EKEYREVOKED);
                assert_int_equal(kms_key_set_enabled(f->b, c.id, true, NULL), 0);
                assert_int_equal(envelope_rewrap(f->b, &tb, f->b, &c, &tc), 0);
                expect_open(f->b, &tc, "vol-r", dk);
        }
        assert_null(unused.wrapped);
}

static void test_rewrap_other_backend(void **state) {
        fixture *f = *state;
        _cleanup_free_ char *dir2 = test_mkdtemp();
        kms_context ctx2 = { .state_dir = dir2, .now = test_clock_now };
        _cleanup_(kms_backend_freep) kms_backend *b2 = test_local_backend(&ctx2);
        _cleanup_(kms_key_done) kms_key a = {}, d2 = {};
        _cleanup_(secret_freep) secret *dk = NULL, *out = NULL;
        _cleanup_(evs_token_done) evs_token ta = {}, tb = {};

        create_key(f->b, "src", &a);
        assert_int_equal(kms_key_get(b2, KMS_DEFAULT_KEY_ALIAS, &d2), 0);
        seal(f->b, &a, "vol-x", &dk, &ta);

        assert_int_equal(envelope_rewrap(f->b, &ta, b2, &d2, &tb), 0);
        expect_open(b2, &tb, "vol-x", dk);
        /* The first store knows nothing of the second's key. */
        assert_int_equal(envelope_open(f->b, &tb, "vol-x", NULL, &out), -ENOENT);
        assert_null(out);

        kms_backend_free(TAKE_PTR(b2));
        test_rm_rf(dir2);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                TEST(test_round_trip),
                TEST(test_other_volume),
                TEST(test_copied_token),
                TEST(test_tampered),
                TEST(test_key_states),
                TEST(test_rewrap),
                TEST(test_rewrap_other_backend),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
