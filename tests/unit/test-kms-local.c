/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The local key store, driven through the generic kms.h API with an injected clock. */

#include <limits.h>
#include <sys/stat.h>

#include "crypto.h"
#include "json-util.h"
#include "kms.h"
#include "test-util.h"

typedef struct fixture {
        char *dir;     /* the state directory */
        char *key_dir; /* dir/keys */
        char *root_key;
        kms_context ctx;
        kms_backend *b;
} fixture;

static int setup(void **state) {
        fixture *f = calloc(1, sizeof *f);

        assert_non_null(f);
        test_clock = TEST_CLOCK_START;
        f->dir = test_mkdtemp();
        f->key_dir = test_path(f->dir, "keys");
        f->root_key = test_path(f->dir, "root.key");
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
        free(f->key_dir);
        free(f->root_key);
        free(f);
        return 0;
}

#define TEST(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

static void create_key(fixture *f, const char *alias, kms_key *ret) {
        int r = kms_key_create(f->b, alias, NULL, ret);

        if (r < 0)
                fail_msg("kms_key_create(%s): %s: %s", strna(alias), strerror(-r), strna(kms_backend_error(f->b)));
}

static kms_key_state get_state(fixture *f, const char *ref) {
        _cleanup_(kms_key_done) kms_key k = {};
        int r = kms_key_get(f->b, ref, &k);

        if (r < 0)
                fail_msg("kms_key_get(%s): %s: %s", ref, strerror(-r), strna(kms_backend_error(f->b)));
        return k.state;
}

static void expect_state(fixture *f, const char *ref, kms_key_state want) {
        kms_key_state s = get_state(f, ref);

        if (s != want)
                fail_msg("key %s is %s, expected %s", ref, kms_key_state_to_string(s), kms_key_state_to_string(want));
}

static char *key_file(fixture *f, const char *id) {
        char *p = NULL;

        assert_true(asprintf(&p, "%s/%s.json", f->key_dir, id) > 0);
        return p;
}

/* The parsed key file of @id. */
static json_object *read_key_json(fixture *f, const char *id) {
        _cleanup_free_ char *path = key_file(f, id), *text = test_read_file(path, NULL);
        json_object *o = NULL;

        assert_int_equal(json_parse(text, 1U << 20, &o), 0);
        return o;
}

static void assert_no_temp_files(fixture *f) {
        int n;

        n = test_count_prefix(f->key_dir, ".#");
        if (n != 0 && n != -ENOENT)
                fail_msg("%d temp files left in %s", n, f->key_dir);
        n = test_count_prefix(f->dir, ".#");
        if (n != 0)
                fail_msg("%d temp files left in %s", n, f->dir);
}

static secret *data_key(void) {
        secret *s = NULL;

        assert_int_equal(crypto_random_secret(KMS_DATA_KEY_SIZE, &s), 0);
        return s;
}

static void wrap(fixture *f, const char *id, const char *context, const secret *plain, uint8_t **ret, size_t *ret_size) {
        int r = kms_wrap(f->b, id, context, plain, ret, ret_size);

        if (r < 0)
                fail_msg("kms_wrap: %s: %s", strerror(-r), strna(kms_backend_error(f->b)));
}

static void expect_unwrap(fixture *f, const char *id, const char *context, const uint8_t *blob, size_t size,
                          const secret *want) {
        _cleanup_(secret_freep) secret *out = NULL;
        int r = kms_unwrap(f->b, id, context, blob, size, &out);

        if (r < 0)
                fail_msg("kms_unwrap: %s: %s", strerror(-r), strna(kms_backend_error(f->b)));
        assert_true(secret_equal(out, want));
}

static void expect_error_contains(fixture *f, const char *what) {
        const char *e = kms_backend_error(f->b);

        if (!e || !strstr(e, what))
                fail_msg("backend error \"%s\" does not mention \"%s\"", strna(e), what);
}

/* ---- creation, files, the root key ---- */

static void test_create(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key k = {};
        _cleanup_free_ char *path = NULL, *root = NULL;
        size_t root_size = 0;

        /* Opening touches nothing: the root key and the key directory appear on first use. */
        assert_int_equal(access(f->root_key, F_OK), -1);
        assert_int_equal(access(f->key_dir, F_OK), -1);
        assert_int_equal(test_count_entries(f->dir), 0);

        test_clock += 42;
        assert_int_equal(kms_key_create(f->b, "app/db-1", "the database", &k), 0);
        assert_true(uuid_valid(k.id));
        assert_string_equal(k.alias, "app/db-1");
        assert_string_equal(k.description, "the database");
        assert_string_equal(k.backend, "local");
        assert_int_equal(k.state, KMS_KEY_ENABLED);
        assert_int_equal(k.created, TEST_CLOCK_START + 42);
        assert_int_equal(k.deletion_date, 0);

        path = key_file(f, k.id);
        assert_int_equal(test_file_mode(path), 0600);
        assert_int_equal(test_file_mode(f->key_dir), 0700);
        assert_int_equal(test_file_mode(f->root_key), 0400);
        root = test_read_file(f->root_key, &root_size);
        assert_int_equal(root_size, 32);
        assert_no_temp_files(f);

        /* No alias, no description. */
        {
                _cleanup_(kms_key_done) kms_key n = {};

                assert_int_equal(kms_key_create(f->b, NULL, NULL, &n), 0);
                assert_null(n.alias);
                assert_null(n.description);
                assert_string_not_equal(n.id, k.id);
                expect_state(f, n.id, KMS_KEY_ENABLED);
        }

        /* The material never appears in clear in the file: it opens only with the root key. */
        {
                _cleanup_(json_object_putp) json_object *o = read_key_json(f, k.id);
                const char *material = NULL;
                _cleanup_free_ uint8_t *sealed = NULL;
                size_t sealed_size = 0;

                assert_int_equal(json_get_string(o, "material", false, &material), 0);
                assert_int_equal(base64_decode(material, &sealed, &sealed_size), 0);
                assert_int_equal(sealed_size, AES_GCM_NONCE_SIZE + 32 + AES_GCM_TAG_SIZE);
        }
}

static void test_root_key_reused(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key a = {}, b = {};
        _cleanup_free_ char *after = NULL;
        uint8_t sb[32], sa[32];

        create_key(f, "one", &a);
        test_sha256_file(f->root_key, sb);
        create_key(f, "two", &b);
        test_sha256_file(f->root_key, sa);
        assert_memory_equal(sb, sa, 32);

        /* A wrong-size root key file is an error, not a silent regeneration. */
        kms_backend_free(f->b);
        assert_int_equal(chmod(f->root_key, 0600), 0);
        test_write_file(f->root_key, "short", 5, 0400);
        f->b = test_local_backend(&f->ctx);
        assert_int_equal(kms_key_get(f->b, a.id, &(kms_key) {}), -EBADMSG);
        expect_error_contains(f, "root key");
        after = test_read_file(f->root_key, NULL);
        assert_string_equal(after, "short");
}

/* ---- lifecycle ---- */

static void test_transitions_legal(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key k = {};
        static const unsigned windows[] = { KMS_DELETION_DAYS_MIN, KMS_DELETION_DAYS_MAX };

        create_key(f, "legal", &k);
        expect_state(f, k.id, KMS_KEY_ENABLED);

        /* Each window, scheduled from enabled (even rounds) and from disabled (odd rounds). */
        for (size_t round = 0; round < 2 * ELEMENTSOF(windows); round++) {
                _cleanup_(kms_key_done) kms_key d = {}, e = {}, p = {}, c = {}, g = {};
                unsigned days = windows[round / 2];
                bool from_disabled = round % 2 == 1;

                /* enabled -> disabled -> enabled, by id and by alias */
                assert_int_equal(kms_key_set_enabled(f->b, k.id, false, &d), 0);
                assert_int_equal(d.state, KMS_KEY_DISABLED);
                assert_string_equal(d.backend, "local");
                expect_state(f, "legal", KMS_KEY_DISABLED);
                assert_no_temp_files(f);
                assert_int_equal(kms_key_set_enabled(f->b, "legal", true, &e), 0);
                assert_int_equal(e.state, KMS_KEY_ENABLED);
                expect_state(f, k.id, KMS_KEY_ENABLED);
                /* Idempotent. */
                assert_int_equal(kms_key_set_enabled(f->b, k.id, true, NULL), 0);
                expect_state(f, k.id, KMS_KEY_ENABLED);

                if (from_disabled) {
                        assert_int_equal(kms_key_set_enabled(f->b, k.id, false, NULL), 0);
                        expect_state(f, k.id, KMS_KEY_DISABLED);
                }
                test_clock += USEC_PER_SEC;
                assert_int_equal(kms_key_schedule_deletion(f->b, k.id, days, &p), 0);
                assert_int_equal(p.state, KMS_KEY_PENDING_DELETION);
                assert_int_equal(p.deletion_date, test_clock + days * USEC_PER_DAY);
                assert_string_equal(p.backend, "local");
                assert_int_equal(kms_key_get(f->b, k.id, &g), 0);
                assert_int_equal(g.state, KMS_KEY_PENDING_DELETION);
                assert_int_equal(g.deletion_date, p.deletion_date);
                assert_no_temp_files(f);

                /* Cancelling leaves the key disabled, with no date. */
                assert_int_equal(kms_key_cancel_deletion(f->b, k.id, &c), 0);
                assert_int_equal(c.state, KMS_KEY_DISABLED);
                assert_int_equal(c.deletion_date, 0);
                expect_state(f, k.id, KMS_KEY_DISABLED);

                assert_int_equal(kms_key_set_enabled(f->b, k.id, true, NULL), 0);
                expect_state(f, k.id, KMS_KEY_ENABLED);
        }
}

static void expect_pending_unchanged(fixture *f, const char *id, usec_t date) {
        _cleanup_(kms_key_done) kms_key k = {};

        assert_int_equal(kms_key_get(f->b, id, &k), 0);
        assert_int_equal(k.state, KMS_KEY_PENDING_DELETION);
        assert_int_equal(k.deletion_date, date);
}

static void test_transitions_illegal(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key k = {}, p = {}, x = {};
        kms_key unused = {};
        static const unsigned bad_windows[] = { 0, 1, KMS_DELETION_DAYS_MIN - 1, KMS_DELETION_DAYS_MAX + 1, UINT_MAX };

        create_key(f, "illegal", &k);

        /* Cancel when nothing is scheduled: from enabled and from disabled. */
        assert_int_equal(kms_key_cancel_deletion(f->b, k.id, &unused), -EKEYREJECTED);
        expect_error_contains(f, "enabled");
        expect_state(f, k.id, KMS_KEY_ENABLED);
        assert_int_equal(kms_key_set_enabled(f->b, k.id, false, NULL), 0);
        assert_int_equal(kms_key_cancel_deletion(f->b, k.id, NULL), -EKEYREJECTED);
        expect_error_contains(f, "disabled");
        expect_state(f, k.id, KMS_KEY_DISABLED);
        assert_int_equal(kms_key_set_enabled(f->b, k.id, true, NULL), 0);

        /* Windows outside 7..1096 days, from enabled and disabled. */
        for (size_t i = 0; i < ELEMENTSOF(bad_windows); i++) {
                assert_int_equal(kms_key_schedule_deletion(f->b, k.id, bad_windows[i], &unused), -EINVAL);
                expect_state(f, k.id, KMS_KEY_ENABLED);
        }
        assert_int_equal(kms_key_set_enabled(f->b, k.id, false, NULL), 0);
        assert_int_equal(kms_key_schedule_deletion(f->b, k.id, 6, &unused), -EINVAL);
        assert_int_equal(kms_key_schedule_deletion(f->b, k.id, 1097, &unused), -EINVAL);
        expect_state(f, k.id, KMS_KEY_DISABLED);
        assert_int_equal(kms_key_set_enabled(f->b, k.id, true, NULL), 0);

        /* Pending deletion: enable, disable, schedule again are refused; the date stays. */
        assert_int_equal(kms_key_schedule_deletion(f->b, k.id, 30, &p), 0);
        test_clock += USEC_PER_DAY;
        assert_int_equal(kms_key_set_enabled(f->b, k.id, true, &unused), -EKEYREJECTED);
        expect_error_contains(f, "pending deletion");
        expect_pending_unchanged(f, k.id, p.deletion_date);
        assert_int_equal(kms_key_set_enabled(f->b, k.id, false, &unused), -EKEYREJECTED);
        expect_pending_unchanged(f, k.id, p.deletion_date);
        assert_int_equal(kms_key_schedule_deletion(f->b, k.id, 7, &unused), -EKEYREJECTED);
        expect_pending_unchanged(f, k.id, p.deletion_date);
        assert_int_equal(kms_key_schedule_deletion(f->b, k.id, 1096, &unused), -EKEYREJECTED);
        expect_pending_unchanged(f, k.id, p.deletion_date);
        assert_no_temp_files(f);

        /* Destroyed: every transition is refused. */
        create_key(f, "doomed", &x);
        assert_int_equal(kms_key_schedule_deletion(f->b, x.id, 7, NULL), 0);
        test_clock += 7 * USEC_PER_DAY;
        expect_state(f, x.id, KMS_KEY_DESTROYED);
        assert_int_equal(kms_key_set_enabled(f->b, x.id, true, &unused), -EKEYREJECTED);
        expect_error_contains(f, "destroyed");
        assert_int_equal(kms_key_set_enabled(f->b, x.id, false, &unused), -EKEYREJECTED);
        assert_int_equal(kms_key_schedule_deletion(f->b, x.id, 7, &unused), -EKEYREJECTED);
        assert_int_equal(kms_key_schedule_deletion(f->b, "doomed", 1096, &unused), -EKEYREJECTED);
        assert_int_equal(kms_key_cancel_deletion(f->b, x.id, &unused), -EKEYREJECTED);
        assert_int_equal(kms_key_cancel_deletion(f->b, "doomed", NULL), -EKEYREJECTED);
        expect_state(f, x.id, KMS_KEY_DESTROYED);

        /* Unknown keys. */
        assert_int_equal(kms_key_set_enabled(f->b, "no-such-key", false, NULL), -ENOENT);
        assert_int_equal(kms_key_schedule_deletion(f->b, "00000000-0000-4000-8000-000000000000", 7, NULL), -ENOENT);
        assert_int_equal(kms_key_cancel_deletion(f->b, "nope", NULL), -ENOENT);
        assert_null(unused.id);
}

/* ---- the default key ---- */

static void test_default_key(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key d = {}, again = {};
        kms_key *list = NULL, unused = {};
        size_t n = SIZE_MAX;

        assert_int_equal(kms_key_list(f->b, &list, &n), 0);
        assert_int_equal(n, 0);
        kms_key_array_free(list, n);

        /* Created on first use, once. */
        assert_int_equal(kms_key_get(f->b, KMS_DEFAULT_KEY_ALIAS, &d), 0);
        assert_string_equal(d.alias, "evs/default");
        assert_string_equal(d.backend, "local");
        assert_int_equal(d.state, KMS_KEY_ENABLED);
        assert_true(uuid_valid(d.id));
        assert_int_equal(kms_key_get(f->b, KMS_DEFAULT_KEY_ALIAS, &again), 0);
        assert_string_equal(again.id, d.id);
        assert_int_equal(kms_key_list(f->b, &list, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(list[0].id, d.id);
        kms_key_array_free(list, n);
        assert_int_equal(kms_key_create(f->b, KMS_DEFAULT_KEY_ALIAS, NULL, &unused), -EEXIST);

        /* Never disabled, never scheduled for deletion: by alias or by id. */
        assert_int_equal(kms_key_set_enabled(f->b, KMS_DEFAULT_KEY_ALIAS, false, &unused), -KMS_EPROTECTED);
        expect_error_contains(f, "evs/default");
        assert_int_equal(kms_key_set_enabled(f->b, d.id, false, &unused), -KMS_EPROTECTED);
        for (unsigned days = KMS_DELETION_DAYS_MIN; days <= KMS_DELETION_DAYS_MAX; days += KMS_DELETION_DAYS_MAX - 7) {
                assert_int_equal(kms_key_schedule_deletion(f->b, KMS_DEFAULT_KEY_ALIAS, days, &unused), -KMS_EPROTECTED);
                expect_error_contains(f, "evs/default");
                assert_int_equal(kms_key_schedule_deletion(f->b, d.id, days, &unused), -KMS_EPROTECTED);
        }
        expect_state(f, d.id, KMS_KEY_ENABLED);
        {
                _cleanup_(json_object_putp) json_object *o = read_key_json(f, d.id);
                const char *s = NULL;

                assert_int_equal(json_get_string(o, "state", false, &s), 0);
                assert_string_equal(s, "enabled");
        }
        /* Enabling it is harmless; cancelling a deletion that is not scheduled is refused as usual. */
        assert_int_equal(kms_key_set_enabled(f->b, KMS_DEFAULT_KEY_ALIAS, true, NULL), 0);
        assert_int_equal(kms_key_cancel_deletion(f->b, KMS_DEFAULT_KEY_ALIAS, NULL), -EKEYREJECTED);
        expect_state(f, d.id, KMS_KEY_ENABLED);
        assert_null(unused.id);
}

/* ---- aliases, lookup, listing ---- */

static void test_aliases(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key a = {}, longest = {};
        kms_key unused = {}, *list = NULL;
        char long_alias[130];
        size_t n = 0;
        static const char *const bad[] = {
                "",
                "/lead",
                "trail/",
                "a..b",
                "..",
                "with space",
                "colon:x",
                "tab\t",
                "new\nline",
                "caf\xc3\xa9",
                "star*",
                "123e4567-e89b-42d3-a456-426614174000",
        };

        create_key(f, "team/app_1.key-A", &a);
        assert_int_equal(kms_key_create(f->b, "team/app_1.key-A", NULL, &unused), -EEXIST);
        expect_error_contains(f, "team/app_1.key-A");

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                int r = kms_key_create(f->b, bad[i], NULL, &unused);

                if (r != -EINVAL)
                        fail_msg("alias \"%s\" gave %d, not -EINVAL", bad[i], r);
                assert_false(kms_alias_valid(bad[i]));
        }
        memset(long_alias, 'x', 129);
        long_alias[129] = 0;
        assert_int_equal(kms_key_create(f->b, long_alias, NULL, &unused), -EINVAL);
        long_alias[128] = 0;
        assert_int_equal(kms_key_create(f->b, long_alias, NULL, &longest), 0);
        assert_string_equal(longest.alias, long_alias);

        /* Too long a description. */
        {
                char desc[1026];

                memset(desc, 'd', sizeof desc - 1);
                desc[sizeof desc - 1] = 0;
                assert_int_equal(kms_key_create(f->b, "desc", desc, &unused), -EINVAL);
        }

        /* Nothing was stored by the refusals. */
        assert_int_equal(kms_key_list(f->b, &list, &n), 0);
        assert_int_equal(n, 2);
        kms_key_array_free(list, n);
        assert_int_equal(test_count_prefix(f->key_dir, ".#"), 0);
        assert_null(unused.id);
}

static void test_get(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key a = {}, b = {}, by_id = {}, by_alias = {};
        kms_key unused = {};

        create_key(f, "get/a", &a);
        create_key(f, "get/b", &b);

        assert_int_equal(kms_key_get(f->b, a.id, &by_id), 0);
        assert_string_equal(by_id.id, a.id);
        assert_string_equal(by_id.alias, "get/a");
        assert_string_equal(by_id.backend, "local");
        assert_int_equal(by_id.created, a.created);
        assert_int_equal(kms_key_get(f->b, "get/b", &by_alias), 0);
        assert_string_equal(by_alias.id, b.id);

        assert_int_equal(kms_key_get(f->b, "get/c", &unused), -ENOENT);
        expect_error_contains(f, "get/c");
        assert_int_equal(kms_key_get(f->b, "00000000-0000-4000-8000-000000000000", &unused), -ENOENT);
        assert_int_equal(kms_key_get(f->b, "get", &unused), -ENOENT);
        assert_null(unused.id);
}

static void test_list_sorted(void **state) {
        fixture *f = *state;
        static const usec_t offsets[] = { 300, 100, 500, 200, 400 };
        char *ids[ELEMENTSOF(offsets)] = {};
        kms_key *list = NULL;
        size_t n = 0;

        /* A clock that jumps around: the order is by creation time, not by creation order or by
         * directory order. */
        for (size_t i = 0; i < ELEMENTSOF(offsets); i++) {
                _cleanup_(kms_key_done) kms_key k = {};
                char alias[16];

                snprintf(alias, sizeof alias, "k%zu", i);
                test_clock = TEST_CLOCK_START + offsets[i] * USEC_PER_SEC;
                create_key(f, alias, &k);
                ids[i] = strdup(k.id);
        }
        test_clock = TEST_CLOCK_START + 1000 * USEC_PER_SEC;

        assert_int_equal(kms_key_list(f->b, &list, &n), 0);
        assert_int_equal(n, 5);
        for (size_t i = 0; i < n; i++) {
                static const size_t order[] = { 1, 3, 0, 4, 2 };

                assert_string_equal(list[i].id, ids[order[i]]);
                assert_int_equal(list[i].created, TEST_CLOCK_START + offsets[order[i]] * USEC_PER_SEC);
                assert_string_equal(list[i].backend, "local");
                assert_int_equal(list[i].state, KMS_KEY_ENABLED);
        }
        kms_key_array_free(list, n);
        for (size_t i = 0; i < ELEMENTSOF(ids); i++)
                free(ids[i]);
}

/* ---- expiry ---- */

static void test_expiry(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key k = {}, p = {}, g = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL;
        _cleanup_free_ uint8_t *blob = NULL, *blob2 = NULL;
        _cleanup_free_ char *path = NULL, *before = NULL, *after = NULL;
        const char *material = NULL;
        size_t size = 0, size2 = 0;

        create_key(f, "expiring", &k);
        wrap(f, k.id, "vol-1", dk, &blob, &size);
        assert_int_equal(kms_key_schedule_deletion(f->b, k.id, 7, &p), 0);
        path = key_file(f, k.id);
        before = test_read_file(path, NULL);
        {
                _cleanup_(json_object_putp) json_object *o = read_key_json(f, k.id);

                assert_int_equal(json_get_string(o, "material", false, &material), 0);
                material = strdupa(material);
        }

        /* One microsecond before the date: still pending, material still there. */
        test_clock = p.deletion_date - 1;
        expect_state(f, k.id, KMS_KEY_PENDING_DELETION);
        assert_int_equal(kms_unwrap(f->b, k.id, "vol-1", blob, size, &out), -EKEYEXPIRED);
        {
                _cleanup_free_ char *text = test_read_file(path, NULL);

                assert_non_null(strstr(text, material));
        }

        /* At the date: destroyed on the next access, the material gone from the file. */
        test_clock = p.deletion_date;
        assert_int_equal(kms_key_get(f->b, k.id, &g), 0);
        assert_int_equal(g.state, KMS_KEY_DESTROYED);
        assert_int_equal(g.deletion_date, 0); /* kms.h: 0 unless pending deletion */
        after = test_read_file(path, NULL);
        assert_null(strstr(after, material));
        {
                _cleanup_(json_object_putp) json_object *o = read_key_json(f, k.id);
                const char *s = NULL;
                json_object *m = NULL;

                assert_true(json_object_object_get_ex(o, "material", &m));
                assert_null(m);
                assert_int_equal(json_get_string(o, "state", false, &s), 0);
                assert_string_equal(s, "destroyed");
        }
        assert_int_equal(test_file_mode(path), 0600);
        assert_no_temp_files(f);

        assert_int_equal(kms_wrap(f->b, k.id, "vol-1", dk, &blob2, &size2), -ENOKEY);
        expect_error_contains(f, "destroyed");
        assert_int_equal(kms_unwrap(f->b, k.id, "vol-1", blob, size, &out), -ENOKEY);
        assert_null(out);
        assert_null(blob2);

        /* Even with the clock turned back, a destroyed key stays destroyed. */
        test_clock = TEST_CLOCK_START;
        expect_state(f, k.id, KMS_KEY_DESTROYED);
        assert_int_equal(kms_unwrap(f->b, k.id, "vol-1", blob, size, &out), -ENOKEY);
}

static char *file_state(fixture *f, const char *id) {
        _cleanup_(json_object_putp) json_object *o = read_key_json(f, id);
        const char *s = NULL;

        assert_int_equal(json_get_string(o, "state", false, &s), 0);
        return strdup(s);
}

static void test_sweep(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key a = {}, b = {}, c = {}, keep = {};
        _cleanup_free_ char *sa = NULL, *sb = NULL, *sc = NULL, *sk = NULL, *pre = NULL;

        assert_int_equal(kms_sweep(f->b), 0); /* nothing there yet */

        create_key(f, "sweep/a", &a);
        create_key(f, "sweep/b", &b);
        create_key(f, "sweep/c", &c);
        create_key(f, "sweep/keep", &keep);
        assert_int_equal(kms_key_schedule_deletion(f->b, a.id, 7, NULL), 0);
        assert_int_equal(kms_key_set_enabled(f->b, b.id, false, NULL), 0);
        assert_int_equal(kms_key_schedule_deletion(f->b, b.id, 8, NULL), 0);
        assert_int_equal(kms_key_schedule_deletion(f->b, c.id, 30, NULL), 0);

        test_clock += 8 * USEC_PER_DAY;
        /* Nothing has looked at the keys yet: the files still say pending. */
        pre = file_state(f, a.id);
        assert_string_equal(pre, "pending-deletion");

        assert_int_equal(kms_sweep(f->b), 0);
        assert_no_temp_files(f);
        sa = file_state(f, a.id);
        sb = file_state(f, b.id);
        sc = file_state(f, c.id);
        sk = file_state(f, keep.id);
        assert_string_equal(sa, "destroyed");
        assert_string_equal(sb, "destroyed");
        assert_string_equal(sc, "pending-deletion");
        assert_string_equal(sk, "enabled");
}

/* ---- wrap and unwrap ---- */

static void test_wrap_round_trip(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key k = {}, other = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL;
        _cleanup_free_ uint8_t *blob = NULL, *blob2 = NULL, *oblob = NULL;
        size_t size = 0, size2 = 0, osize = 0;

        create_key(f, "wrap", &k);
        create_key(f, "wrap/other", &other);

        wrap(f, k.id, "vol-1", dk, &blob, &size);
        assert_true(size > KMS_DATA_KEY_SIZE && size <= KMS_WRAPPED_MAX);
        assert_null(memmem(blob, size, dk->data, dk->size));
        expect_unwrap(f, k.id, "vol-1", blob, size, dk);

        /* A second wrap of the same key differs (fresh nonce) and opens too. */
        wrap(f, k.id, "vol-1", dk, &blob2, &size2);
        assert_int_equal(size, size2);
        assert_memory_not_equal(blob, blob2, size);
        expect_unwrap(f, k.id, "vol-1", blob2, size2, dk);

        /* Bound to the context: another volume id fails authentication. */
        assert_int_equal(kms_unwrap(f->b, k.id, "vol-2", blob, size, &out), -EBADMSG);
        assert_int_equal(kms_unwrap(f->b, k.id, "vol-1 ", blob, size, &out), -EBADMSG);
        assert_int_equal(kms_unwrap(f->b, k.id, "vol-", blob, size, &out), -EBADMSG);
        assert_int_equal(kms_unwrap(f->b, k.id, "", blob, size, &out), -EBADMSG);

        /* Bound to the CMK: another key id is refused before any decryption. */
        assert_int_equal(kms_unwrap(f->b, other.id, "vol-1", blob, size, &out), -EXDEV);
        expect_error_contains(f, k.id);
        /* A blob of the other key with its header rewritten to name this key fails authentication. */
        wrap(f, other.id, "vol-1", dk, &oblob, &osize);
        memcpy(oblob + 4, k.id, 36);
        assert_int_equal(kms_unwrap(f->b, k.id, "vol-1", oblob, osize, &out), -EBADMSG);

        /* Not a key id: the local backend wraps by id only. */
        assert_int_equal(kms_wrap(f->b, "wrap", "vol-1", dk, &blob2, &size2), -EINVAL);
        assert_int_equal(kms_unwrap(f->b, "wrap", "vol-1", blob, size, &out), -EINVAL);
        assert_int_equal(kms_unwrap(f->b, "00000000-0000-4000-8000-000000000000", "vol-1", blob, size, &out), -EXDEV);

        /* Sizes: empty, truncated, oversized. */
        assert_int_equal(kms_unwrap(f->b, k.id, "vol-1", blob, 0, &out), -EBADMSG);
        for (size_t i = 1; i < size; i++) {
                int r = kms_unwrap(f->b, k.id, "vol-1", blob, i, &out);

                if (r != -EBADMSG)
                        fail_msg("wrapped key cut to %zu bytes gave %d", i, r);
        }
        {
                _cleanup_free_ uint8_t *big = calloc(1, KMS_WRAPPED_MAX + 1);

                assert_non_null(big);
                memcpy(big, blob, size);
                assert_int_equal(kms_unwrap(f->b, k.id, "vol-1", big, KMS_WRAPPED_MAX + 1, &out), -EBADMSG);
                assert_int_equal(kms_unwrap(f->b, k.id, "vol-1", big, size + 1, &out), -EBADMSG);
        }
        assert_null(out);
}

static void test_wrap_bit_flips(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key k = {};
        _cleanup_(secret_freep) secret *dk = data_key();
        _cleanup_free_ uint8_t *blob = NULL;
        size_t size = 0;

        create_key(f, "flip", &k);
        wrap(f, k.id, "vol-flip", dk, &blob, &size);

        for (size_t bit = 0; bit < size * 8; bit++) {
                secret *out = NULL;
                size_t byte = bit / 8;
                int r;

                blob[byte] ^= (uint8_t) (1U << (bit % 8));
                r = kms_unwrap(f->b, k.id, "vol-flip", blob, size, &out);
                blob[byte] ^= (uint8_t) (1U << (bit % 8));

                if (r >= 0)
                        fail_msg("unwrap succeeded with bit %zu of %zu flipped", bit, size * 8);
                assert_null(out);
                /* The 40-byte header is the format magic and the key id; the rest is authenticated. */
                if (byte < 4 + 36 ? r != -EBADMSG && r != -EXDEV : r != -EBADMSG)
                        fail_msg("bit %zu (byte %zu) flipped gave %d (%s)", bit, byte, r, strerror(-r));
        }
        expect_unwrap(f, k.id, "vol-flip", blob, size, dk);
}

static void test_wrap_key_states(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key k = {}, p = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL;
        _cleanup_free_ uint8_t *blob = NULL, *blob2 = NULL;
        char ts[FORMAT_TIMESTAMP_MAX];
        size_t size = 0, size2 = 0;

        create_key(f, "states", &k);
        wrap(f, k.id, "vol-s", dk, &blob, &size);

        assert_int_equal(kms_key_set_enabled(f->b, k.id, false, NULL), 0);
        assert_int_equal(kms_wrap(f->b, k.id, "vol-s", dk, &blob2, &size2), -EKEYREVOKED);
        expect_error_contains(f, "disabled");
        assert_int_equal(kms_unwrap(f->b, k.id, "vol-s", blob, size, &out), -EKEYREVOKED);
        expect_error_contains(f, "disabled");

        assert_int_equal(kms_key_set_enabled(f->b, k.id, true, NULL), 0);
        expect_unwrap(f, k.id, "vol-s", blob, size, dk);

        assert_int_equal(kms_key_schedule_deletion(f->b, k.id, 10, &p), 0);
        assert_int_equal(kms_wrap(f->b, k.id, "vol-s", dk, &blob2, &size2), -EKEYEXPIRED);
        expect_error_contains(f, format_timestamp(ts, sizeof ts, p.deletion_date));
        assert_int_equal(kms_unwrap(f->b, k.id, "vol-s", blob, size, &out), -EKEYEXPIRED);
        expect_error_contains(f, "pending deletion");

        /* Cancelled: disabled, still refused; enabled again: the old blob opens. */
        assert_int_equal(kms_key_cancel_deletion(f->b, k.id, NULL), 0);
        assert_int_equal(kms_unwrap(f->b, k.id, "vol-s", blob, size, &out), -EKEYREVOKED);
        assert_int_equal(kms_key_set_enabled(f->b, k.id, true, NULL), 0);
        expect_unwrap(f, k.id, "vol-s", blob, size, dk);
        assert_null(out);
        assert_null(blob2);
}

/* ---- the root key from a credential ---- */

static void test_credentials(void **state) {
        fixture *f = *state;
        _cleanup_free_ char *creds = test_path(f->dir, "creds"), *cred = test_path(creds, "evs-root-key");
        _cleanup_(kms_key_done) kms_key k = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL, *file_key = NULL, *cred_key = NULL;
        _cleanup_free_ uint8_t *blob = NULL;
        kms_context cctx = f->ctx;
        kms_backend *cb;
        size_t size = 0;

        assert_int_equal(mkdir(creds, 0700), 0);
        assert_int_equal(crypto_random_secret(32, &file_key), 0);
        assert_int_equal(crypto_random_secret(32, &cred_key), 0);
        test_write_file(cred, cred_key->data, 32, 0400);
        cctx.credentials_dir = creds;

        /* With the credential, the root key file is neither read nor created. */
        cb = test_local_backend(&cctx);
        assert_int_equal(kms_key_create(cb, "cred", NULL, &k), 0);
        assert_int_equal(kms_wrap(cb, k.id, "vol-c", dk, &blob, &size), 0);
        assert_int_equal(access(f->root_key, F_OK), -1);
        assert_int_equal(errno, ENOENT);
        kms_backend_free(cb);

        /* A root key file that differs from the credential: the credential still wins. */
        test_write_file(f->root_key, file_key->data, 32, 0400);
        cb = test_local_backend(&cctx);
        assert_int_equal(kms_unwrap(cb, k.id, "vol-c", blob, size, &out), 0);
        assert_true(secret_equal(out, dk));
        out = secret_free(out);
        kms_backend_free(cb);

        /* Without the credential, the file's key cannot open the material. */
        assert_int_equal(kms_unwrap(f->b, k.id, "vol-c", blob, size, &out), -EUCLEAN);
        assert_null(out);

        /* A credentials directory without evs-root-key falls back to the file. */
        {
                _cleanup_free_ char *empty = test_path(f->dir, "empty-creds");
                kms_context ectx = f->ctx;
                _cleanup_(kms_key_done) kms_key e = {};
                _cleanup_free_ uint8_t *eblob = NULL;
                size_t esize = 0;

                assert_int_equal(mkdir(empty, 0700), 0);
                ectx.credentials_dir = empty;
                cb = test_local_backend(&ectx);
                assert_int_equal(kms_key_create(cb, "file", NULL, &e), 0);
                assert_int_equal(kms_wrap(cb, e.id, "vol-e", dk, &eblob, &esize), 0);
                kms_backend_free(cb);
                /* ... so the plain backend on the file opens it. */
                expect_unwrap(f, e.id, "vol-e", eblob, esize, dk);
        }

        /* A credential of the wrong size is an error, never a fallback. */
        for (size_t bad = 0; bad <= 64; bad += 1) {
                uint8_t buf[64] = {};
                kms_key unused = {};
                int r;

                if (bad == 32)
                        continue;
                assert_int_equal(chmod(cred, 0600), 0);
                test_write_file(cred, buf, bad, 0400);
                cb = test_local_backend(&cctx);
                r = kms_key_get(cb, k.id, &unused);
                if (r >= 0)
                        fail_msg("a credential of %zu bytes was accepted", bad);
                assert_int_equal(r, -EBADMSG);
                if (!kms_backend_error(cb) || !strstr(kms_backend_error(cb), "evs-root-key"))
                        fail_msg("error \"%s\" does not name the credential", strna(kms_backend_error(cb)));
                assert_int_equal(kms_unwrap(cb, k.id, "vol-c", blob, size, &out), -EBADMSG);
                kms_backend_free(cb);
        }
}

/* ---- crash safety ---- */

static void test_no_temp_files(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key k = {}, d = {}, g = {}, p = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL;
        _cleanup_free_ uint8_t *blob = NULL;
        kms_key *list = NULL;
        size_t size = 0, n = 0;

        /* Every operation, each followed by the check: writes go through temp file + rename. */
        create_key(f, "tmp", &k);
        assert_no_temp_files(f);
        assert_int_equal(kms_key_get(f->b, KMS_DEFAULT_KEY_ALIAS, &d), 0);
        assert_no_temp_files(f);
        assert_int_equal(kms_key_list(f->b, &list, &n), 0);
        kms_key_array_free(list, n);
        assert_no_temp_files(f);
        wrap(f, k.id, "vol-tmp", dk, &blob, &size);
        assert_no_temp_files(f);
        assert_int_equal(kms_unwrap(f->b, k.id, "vol-tmp", blob, size, &out), 0);
        assert_no_temp_files(f);
        assert_int_equal(kms_key_set_enabled(f->b, k.id, false, NULL), 0);
        assert_no_temp_files(f);
        assert_int_equal(kms_key_set_enabled(f->b, k.id, true, NULL), 0);
        assert_no_temp_files(f);
        assert_int_equal(kms_key_schedule_deletion(f->b, k.id, 7, &p), 0);
        assert_no_temp_files(f);
        assert_int_equal(kms_key_cancel_deletion(f->b, k.id, NULL), 0);
        assert_no_temp_files(f);
        kms_key_done(&p);
        assert_int_equal(kms_key_schedule_deletion(f->b, k.id, 7, &p), 0);
        test_clock = p.deletion_date;
        assert_int_equal(kms_key_get(f->b, k.id, &g), 0); /* rewrites the file as destroyed */
        assert_int_equal(g.state, KMS_KEY_DESTROYED);
        assert_no_temp_files(f);
        assert_int_equal(kms_sweep(f->b), 0);
        assert_no_temp_files(f);
        /* Refusals write nothing either. */
        assert_int_equal(kms_key_create(f->b, "tmp", NULL, &(kms_key) {}), -EEXIST);
        assert_int_equal(kms_key_set_enabled(f->b, KMS_DEFAULT_KEY_ALIAS, false, NULL), -KMS_EPROTECTED);
        assert_no_temp_files(f);
        /* Only key files, the lock and the root key are there. */
        assert_int_equal(test_count_entries(f->key_dir), 3);
        assert_int_equal(test_count_entries(f->dir), 2);
}

static void test_crash_leftovers(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key a = {}, b = {};
        _cleanup_free_ char *a_path = NULL, *a_text = NULL, *tmp1 = NULL, *tmp2 = NULL, *tmp3 = NULL;
        kms_key *list = NULL, unused = {};
        size_t n = 0;
        static const char ghost_id[] = "11111111-2222-4333-8444-555555555555";

        create_key(f, "crash/a", &a);
        assert_no_temp_files(f);
        a_path = key_file(f, a.id);
        a_text = test_read_file(a_path, NULL);

        /* A "crash" between writing the temp file and the rename: a complete but unrenamed copy of
         * a key (under another id), a half-written one, and a half-written root key. */
        tmp1 = test_path(f->key_dir, ".#11111111-2222-4333-8444-555555555555.json.Ab12Cd");
        {
                _cleanup_free_ char *ghost = strdup(a_text);
                char *p = strstr(ghost, a.id);

                assert_non_null(p);
                memcpy(p, ghost_id, 36);
                p = strstr(ghost, "crash/a");
                assert_non_null(p);
                p[6] = 'z'; /* alias crash/z */
                test_write_file(tmp1, ghost, strlen(ghost), 0600);
        }
        tmp2 = test_path(f->key_dir, ".#99999999-2222-4333-8444-555555555555.json.XyZ123");
        test_write_file(tmp2, a_text, strlen(a_text) / 2, 0600);
        tmp3 = test_path(f->dir, ".#root.key.Qw3rTy");
        test_write_file(tmp3, "half", 4, 0600);

        assert_int_equal(kms_key_list(f->b, &list, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(list[0].id, a.id);
        kms_key_array_free(list, n);
        assert_int_equal(kms_key_get(f->b, ghost_id, &unused), -ENOENT);
        assert_int_equal(kms_key_get(f->b, "crash/z", &unused), -ENOENT);
        expect_state(f, "crash/a", KMS_KEY_ENABLED);
        assert_int_equal(kms_sweep(f->b), 0);

        /* The store keeps working around them; its own writes leave no more temp files. */
        create_key(f, "crash/b", &b);
        assert_int_equal(kms_key_set_enabled(f->b, b.id, false, NULL), 0);
        assert_int_equal(kms_key_schedule_deletion(f->b, b.id, 7, NULL), 0);
        assert_int_equal(kms_key_cancel_deletion(f->b, b.id, NULL), 0);
        assert_int_equal(test_count_prefix(f->key_dir, ".#"), 2);
        assert_int_equal(test_count_prefix(f->dir, ".#"), 1);
        assert_null(unused.id);
}

/* The key file of @id is bad: that key is refused by id, naming its file, and listed as unavailable; the store
 * itself keeps working. */
static void expect_bad_key(fixture *f, const char *id, const char *alias, const char *what) {
        _cleanup_free_ char *path = key_file(f, id);
        _cleanup_(secret_freep) secret *dk = data_key();
        kms_key unused = {};
        kms_key *list = NULL;
        size_t n = 0;
        uint8_t *blob = NULL;
        size_t bsize = 0;
        bool listed = false;
        int r;

        r = kms_key_get(f->b, id, &unused);
        if (r != -EUCLEAN)
                fail_msg("key_get of a key file %s gave %d, not -EUCLEAN", what, r);
        expect_error_contains(f, path);
        assert_int_equal(kms_key_get(f->b, alias, &unused), -ENOENT);
        expect_error_contains(f, path);
        assert_int_equal(kms_wrap(f->b, id, "vol", dk, &blob, &bsize), -EUCLEAN);
        assert_int_equal(kms_key_set_enabled(f->b, id, false, NULL), -EUCLEAN);
        assert_int_equal(kms_key_schedule_deletion(f->b, id, 7, NULL), -EUCLEAN);
        assert_int_equal(kms_sweep(f->b), 0);

        r = kms_key_list(f->b, &list, &n);
        if (r < 0)
                fail_msg("key_list with a key file %s: %s", what, strna(kms_backend_error(f->b)));
        for (size_t i = 0; i < n; i++)
                if (streq(list[i].id, id)) {
                        assert_int_equal(list[i].state, KMS_KEY_UNAVAILABLE);
                        assert_non_null(list[i].description);
                        if (!strstr(list[i].description, path))
                                fail_msg("listed reason '%s' does not name %s", list[i].description, path);
                        listed = true;
                }
        if (!listed)
                fail_msg("a key file %s is not listed", what);
        kms_key_array_free(list, n);
        assert_null(unused.id);
        assert_null(blob);
}

/* Writes @content as the key file of @id and checks expect_bad_key(). */
static void corrupt_and_expect_euclean(fixture *f, const char *id, const char *alias, const char *content, size_t size,
                                       const char *what) {
        _cleanup_free_ char *path = key_file(f, id);

        test_write_file(path, content, size, 0600);
        expect_bad_key(f, id, alias, what);
}

static void test_corrupt_files(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key k = {};
        _cleanup_free_ char *path = NULL, *good = NULL;
        size_t size = 0;

        create_key(f, "corrupt", &k);
        path = key_file(f, k.id);
        good = test_read_file(path, &size);

        /* Truncated at every length. */
        for (size_t cut = 0; cut < size; cut += (cut < 64 ? 1 : 17)) {
                char what[64];

                snprintf(what, sizeof what, "truncated to %zu bytes", cut);
                corrupt_and_expect_euclean(f, k.id, "corrupt", good, cut, what);
        }

        /* Field-level damage. */
        {
                static const char *const edits[][3] = {
                        { "\"enabled\"", "\"enabledX\"", "with an unknown state" },
                        { "\"enabled\"", "\"unavailable\"", "with state unavailable" },
                        { "\"enabled\"", "\"pending-deletion\"", "pending without a date" },
                        { "\"enabled\"", "\"destroyed\"", "destroyed with material" },
                        { "\"version\":1", "\"version\":2", "of version 2" },
                        { "\"version\": 1", "\"version\": 2", "of version 2" },
                        { "\"material\":\"", "\"material\":\"!", "with bad base64" },
                        { "\"material\": \"", "\"material\": \"!", "with bad base64" },
                        { "\"material\":\"", "\"material\":\"AAAA", "with material of the wrong size" },
                        { "\"material\": \"", "\"material\": \"AAAA", "with material of the wrong size" },
                        { "\"created\"", "\"kreated\"", "without created" },
                };
                size_t applied = 0;

                for (size_t i = 0; i < ELEMENTSOF(edits); i++) {
                        const char *p = strstr(good, edits[i][0]);
                        _cleanup_free_ char *bad = NULL;

                        if (!p)
                                continue; /* the other spelling of the same edit */
                        assert_true(asprintf(&bad, "%.*s%s%s", (int) (p - good), good, edits[i][1],
                                             p + strlen(edits[i][0])) > 0);
                        corrupt_and_expect_euclean(f, k.id, "corrupt", bad, strlen(bad), edits[i][2]);
                        applied++;
                }
                assert_true(applied >= 8);
        }
        corrupt_and_expect_euclean(f, k.id, "corrupt", "[]", 2, "holding an array");
        corrupt_and_expect_euclean(f, k.id, "corrupt", "\0\0\0\0", 4, "of NULs");

        /* Restored, it works again. */
        test_write_file(path, good, size, 0600);
        expect_state(f, "corrupt", KMS_KEY_ENABLED);
}

/* One bad file among the key files: every other key keeps working, the default key too, and new keys are made;
 * the bad one is refused with its file named and listed as unavailable. */
static void test_bad_files(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key good = {}, victim = {}, def = {};
        _cleanup_free_ char *vpath = NULL, *vtext = NULL, *gpath = NULL, *gtext = NULL, *big = NULL;
        _cleanup_(secret_freep) secret *dk = data_key();
        _cleanup_free_ uint8_t *blob = NULL;
        size_t vsize = 0, bsize = 0;
        static const char other_id[] = "11111111-2222-4333-8444-555555555555";
        int kinds = 0;

        create_key(f, "good", &good);
        create_key(f, "victim", &victim);
        assert_int_equal(kms_key_get(f->b, KMS_DEFAULT_KEY_ALIAS, &def), 0);
        wrap(f, good.id, "vol-g", dk, &blob, &bsize);
        vpath = key_file(f, victim.id);
        vtext = test_read_file(vpath, &vsize);
        gpath = key_file(f, good.id);
        gtext = test_read_file(gpath, NULL);

        for (int kind = 0;; kind++) {
                _cleanup_(kms_key_done) kms_key k = {}, created = {};
                char alias[32];

                if (unlink(vpath) < 0)
                        assert_int_equal(rmdir(vpath), 0); /* the directory of the case before */
                switch (kind) {
                case 0: /* garbage */
                        test_write_file(vpath, "\x01\x02garbage", 9, 0600);
                        break;
                case 1: /* truncated */
                        test_write_file(vpath, vtext, vsize / 2, 0600);
                        break;
                case 2: /* oversized: valid JSON, a description of 70 KiB */
                        big = malloc(70 * 1024 + 64);
                        assert_non_null(big);
                        memset(big, ' ', 70 * 1024 + 63);
                        memcpy(big, vtext, vsize - 1); /* without the closing brace */
                        strcpy(big + 70 * 1024 + 60, "}");
                        test_write_file(vpath, big, strlen(big), 0600);
                        break;
                case 3: /* a directory */
                        assert_int_equal(mkdir(vpath, 0700), 0);
                        break;
                case 4: /* a symlink to a valid key file */
                        assert_int_equal(symlink(gpath, vpath), 0);
                        break;
                case 5: /* a FIFO: must not block */
                        assert_int_equal(mkfifo(vpath, 0600), 0);
                        break;
                case 6: /* a copy of another key under this name: the id inside is not the name */
                        test_write_file(vpath, gtext, strlen(gtext), 0600);
                        break;
                default:
                        goto done;
                }
                expect_bad_key(f, victim.id, "victim", "bad");
                /* The rest of the store serves. */
                assert_int_equal(kms_key_get(f->b, "good", &k), 0);
                assert_string_equal(k.id, good.id);
                expect_state(f, KMS_DEFAULT_KEY_ALIAS, KMS_KEY_ENABLED);
                expect_unwrap(f, good.id, "vol-g", blob, bsize, dk);
                snprintf(alias, sizeof alias, "new%d", kind);
                create_key(f, alias, &created);
                kinds++;
        }
done:
        assert_int_equal(kinds, 7);
        assert_int_equal(access(vpath, F_OK), -1); /* removed at the top of the last round */
        test_write_file(vpath, vtext, vsize, 0600);
        expect_state(f, "victim", KMS_KEY_ENABLED);

        /* A copy under another (valid) name, id edited to match: the alias is held twice, which is refused by
         * alias (never answered with one of them at random); by id each still answers. */
        {
                _cleanup_free_ char *copy = strdup(vtext), *cpath = key_file(f, other_id);
                char *p = strstr(copy, victim.id);
                kms_key unused = {};

                assert_non_null(p);
                memcpy(p, other_id, 36);
                test_write_file(cpath, copy, strlen(copy), 0600);
                assert_int_equal(kms_key_get(f->b, "victim", &unused), -EUCLEAN);
                expect_error_contains(f, "held by two key files");
                expect_state(f, victim.id, KMS_KEY_ENABLED);
                expect_state(f, "good", KMS_KEY_ENABLED);
                assert_int_equal(unlink(cpath), 0);
                expect_state(f, "victim", KMS_KEY_ENABLED);
                assert_null(unused.id);
        }
}

/* The default key is made on first use, but not while a key file that may be it does not load. */
static void test_bad_file_no_default(void **state) {
        fixture *f = *state;
        _cleanup_free_ char *path = key_file(f, "11111111-2222-4333-8444-555555555555");
        _cleanup_(kms_key_done) kms_key k = {};
        kms_key unused = {};

        create_key(f, "first", &k); /* makes the root key and the directory */
        test_write_file(path, "{", 1, 0600);
        assert_int_equal(kms_key_get(f->b, KMS_DEFAULT_KEY_ALIAS, &unused), -EUCLEAN);
        expect_error_contains(f, "cannot create the default key");
        expect_error_contains(f, path);
        assert_null(unused.id);
        assert_int_equal(unlink(path), 0);
        expect_state(f, KMS_DEFAULT_KEY_ALIAS, KMS_KEY_ENABLED);
}

/* A missing root key is made again only for an empty store. */
static void test_root_key_missing(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key a = {};
        _cleanup_(secret_freep) secret *dk = data_key();
        _cleanup_free_ uint8_t *blob = NULL;
        _cleanup_free_ char *saved = NULL;
        size_t size = 0, saved_size = 0;
        kms_key unused = {};
        kms_key *list = NULL;
        size_t n = 0;

        create_key(f, "sealed", &a);
        wrap(f, a.id, "vol-r", dk, &blob, &size);
        saved = test_read_file(f->root_key, &saved_size);
        assert_int_equal(unlink(f->root_key), 0);

        kms_backend_free(f->b);
        f->b = test_local_backend(&f->ctx);
        assert_int_equal(kms_key_get(f->b, a.id, &unused), -EHOSTDOWN);
        expect_error_contains(f, f->root_key);
        expect_error_contains(f, "is missing");
        assert_int_equal(kms_key_list(f->b, &list, &n), -EHOSTDOWN);
        assert_int_equal(kms_key_create(f->b, "after", NULL, &unused), -EHOSTDOWN);
        assert_int_equal(kms_key_get(f->b, KMS_DEFAULT_KEY_ALIAS, &unused), -EHOSTDOWN);
        assert_int_equal(access(f->root_key, F_OK), -1);     /* not made again */
        assert_int_equal(test_count_entries(f->key_dir), 2); /* the key file and the lock: nothing new */

        /* Restored, everything sealed under it opens again. */
        test_write_file(f->root_key, saved, saved_size, 0400);
        expect_unwrap(f, a.id, "vol-r", blob, size, dk);
        assert_null(unused.id);
        assert_null(list);
}

/* ...and with a credentials directory the message names both places. */
static void test_root_key_missing_credential(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key a = {};
        _cleanup_free_ char *creds = test_path(f->dir, "creds");
        kms_key unused = {};

        create_key(f, "sealed", &a);
        assert_int_equal(unlink(f->root_key), 0);
        assert_int_equal(mkdir(creds, 0700), 0);
        kms_backend_free(f->b);
        f->ctx.credentials_dir = creds;
        f->b = test_local_backend(&f->ctx);
        assert_int_equal(kms_key_get(f->b, "sealed", &unused), -EHOSTDOWN);
        expect_error_contains(f, "evs-root-key");
        expect_error_contains(f, creds);
        expect_error_contains(f, f->root_key);
        f->ctx.credentials_dir = NULL;
        assert_null(unused.id);
}

/* An empty key reference is refused; only NULL (no reference at all) means the default key. */
static void test_empty_ref(void **state) {
        fixture *f = *state;
        kms_registry *reg = test_local_registry(f->dir);
        _cleanup_(kms_key_done) kms_key k = {};
        kms_key unused = {};
        kms_backend *b = NULL;

        assert_int_equal(kms_registry_resolve(reg, "", &b, &unused), -EINVAL);
        assert_null(unused.id);
        assert_int_equal(kms_registry_resolve(reg, NULL, &b, &k), 0);
        assert_string_equal(k.alias, KMS_DEFAULT_KEY_ALIAS);
        kms_registry_free(reg);
}

/* ---- persistence and the root key ---- */

static void test_persistence(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key a = {}, b = {}, ga = {}, gb = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL;
        _cleanup_free_ uint8_t *blob = NULL, *blob2 = NULL;
        size_t size = 0, size2 = 0;
        kms_backend *second;

        create_key(f, "persist/a", &a);
        create_key(f, "persist/b", &b);
        assert_int_equal(kms_key_set_enabled(f->b, b.id, false, NULL), 0);
        wrap(f, a.id, "vol-p", dk, &blob, &size);

        /* A second instance, while the first is open, then after it is gone. */
        second = test_local_backend(&f->ctx);
        assert_int_equal(kms_key_get(second, "persist/a", &ga), 0);
        assert_string_equal(ga.id, a.id);
        assert_int_equal(ga.created, a.created);
        assert_int_equal(kms_key_get(second, b.id, &gb), 0);
        assert_int_equal(gb.state, KMS_KEY_DISABLED);
        assert_int_equal(kms_unwrap(second, a.id, "vol-p", blob, size, &out), 0);
        assert_true(secret_equal(out, dk));
        out = secret_free(out);
        /* ...and the first sees what the second does. */
        assert_int_equal(kms_key_set_enabled(second, b.id, true, NULL), 0);
        expect_state(f, b.id, KMS_KEY_ENABLED);
        assert_int_equal(kms_wrap(second, b.id, "vol-q", dk, &blob2, &size2), 0);
        expect_unwrap(f, b.id, "vol-q", blob2, size2, dk);

        kms_backend_free(f->b);
        f->b = NULL;
        assert_int_equal(kms_unwrap(second, a.id, "vol-p", blob, size, &out), 0);
        out = secret_free(out);
        kms_backend_free(second);

        f->b = test_local_backend(&f->ctx);
        expect_unwrap(f, a.id, "vol-p", blob, size, dk);

        /* Another root key: the metadata reads, the material does not open. */
        kms_backend_free(f->b);
        {
                _cleanup_(secret_freep) secret *other = NULL;

                assert_int_equal(crypto_random_secret(32, &other), 0);
                assert_int_equal(chmod(f->root_key, 0600), 0);
                test_write_file(f->root_key, other->data, 32, 0400);
        }
        f->b = test_local_backend(&f->ctx);
        expect_state(f, a.id, KMS_KEY_ENABLED);
        assert_int_equal(kms_unwrap(f->b, a.id, "vol-p", blob, size, &out), -EUCLEAN);
        expect_error_contains(f, "root key");
        assert_int_equal(kms_wrap(f->b, a.id, "vol-p", dk, &blob2, &size2), -EUCLEAN);
        assert_null(out);
}

/* ---- versions and rotation ---- */

static void wrap_v(fixture *f, const char *id, const char *context, const secret *plain, uint8_t **ret, size_t *ret_size,
                   unsigned want_version) {
        unsigned v = 0;
        int r = kms_wrap_versioned(f->b, id, context, plain, ret, ret_size, &v);

        if (r < 0)
                fail_msg("kms_wrap_versioned: %s: %s", strerror(-r), strna(kms_backend_error(f->b)));
        if (v != want_version)
                fail_msg("wrapped with version %u, expected %u", v, want_version);
}

static void rotate(fixture *f, const char *ref, unsigned want_version) {
        _cleanup_(kms_key_done) kms_key k = {};
        int r = kms_key_rotate(f->b, ref, &k);

        if (r < 0)
                fail_msg("kms_key_rotate(%s): %s: %s", ref, strerror(-r), strna(kms_backend_error(f->b)));
        assert_int_equal(k.version, want_version);
        assert_string_equal(k.backend, "local");
}

static unsigned get_version(fixture *f, const char *ref) {
        _cleanup_(kms_key_done) kms_key k = {};

        assert_int_equal(kms_key_get(f->b, ref, &k), 0);
        return k.version;
}

static void test_versions(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key k = {}, other = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL;
        _cleanup_free_ uint8_t *b1 = NULL, *b2 = NULL, *b3 = NULL, *forged = NULL;
        size_t s1 = 0, s2 = 0, s3 = 0;
        json_object *o;

        create_key(f, "rot", &k);
        create_key(f, "rot/other", &other);
        assert_int_equal(k.version, 1);
        assert_int_equal(k.rotation_days, 0);
        assert_int_equal(k.next_rotation, 0);

        /* Before any rotation: the format of before versions existed (EVL1 blobs, key file version 1). */
        wrap_v(f, k.id, "vol-1", dk, &b1, &s1, 1);
        assert_memory_equal(b1, "EVL1", 4);
        o = read_key_json(f, k.id);
        assert_int_equal(json_object_get_int(json_object_object_get(o, "version")), 1);
        json_object_put(o);

        test_clock += USEC_PER_DAY;
        rotate(f, "rot", 2);
        assert_int_equal(get_version(f, k.id), 2);
        assert_no_temp_files(f);
        o = read_key_json(f, k.id);
        assert_int_equal(json_object_get_int(json_object_object_get(o, "version")), 2);
        assert_int_equal(json_object_array_length(json_object_object_get(o, "versions")), 1);
        json_object_put(o);

        /* New wraps use the newest version; the old blob keeps opening with version 1. */
        wrap_v(f, k.id, "vol-1", dk, &b2, &s2, 2);
        assert_memory_equal(b2, "EVL2", 4);
        assert_int_equal(b2[43], 2);
        expect_unwrap(f, k.id, "vol-1", b1, s1, dk);
        expect_unwrap(f, k.id, "vol-1", b2, s2, dk);
        /* The version is authenticated: a v2 blob relabelled version 1 or 3, or another key's, fails. */
        forged = malloc(s2);
        assert_non_null(forged);
        memcpy(forged, b2, s2);
        forged[43] = 1;
        assert_int_equal(kms_unwrap(f->b, k.id, "vol-1", forged, s2, &out), -EBADMSG);
        forged[43] = 3;
        assert_int_equal(kms_unwrap(f->b, k.id, "vol-1", forged, s2, &out), -EBADMSG);
        expect_error_contains(f, "version 3");
        assert_int_equal(kms_unwrap(f->b, k.id, "vol-2", b2, s2, &out), -EBADMSG);
        assert_int_equal(kms_unwrap(f->b, other.id, "vol-1", b2, s2, &out), -EXDEV);
        for (size_t i = 1; i < s2; i++)
                assert_int_equal(kms_unwrap(f->b, k.id, "vol-1", b2, i, &out), -EBADMSG);

        /* Another rotation: all three versions open; the other key is untouched. */
        rotate(f, k.id, 3);
        wrap_v(f, k.id, "vol-1", dk, &b3, &s3, 3);
        expect_unwrap(f, k.id, "vol-1", b1, s1, dk);
        expect_unwrap(f, k.id, "vol-1", b2, s2, dk);
        expect_unwrap(f, k.id, "vol-1", b3, s3, dk);
        assert_int_equal(get_version(f, other.id), 1);

        /* Persisted: a fresh instance reads the versions back. */
        kms_backend_free(f->b);
        f->b = test_local_backend(&f->ctx);
        assert_int_equal(get_version(f, k.id), 3);
        expect_unwrap(f, k.id, "vol-1", b1, s1, dk);
        expect_unwrap(f, k.id, "vol-1", b3, s3, dk);

        /* The versions' materials are bound to their numbers: swapping two is detected. */
        {
                _cleanup_free_ char *path = key_file(f, k.id), *text = test_read_file(path, NULL);
                _cleanup_(json_object_putp) json_object *j = NULL;
                json_object *a, *v2m, *v3m;
                const char *t;

                assert_int_equal(json_parse(text, 1U << 20, &j), 0);
                a = json_object_object_get(j, "versions");
                v2m = json_object_get(json_object_object_get(json_object_array_get_idx(a, 0), "material"));
                v3m = json_object_get(json_object_object_get(json_object_array_get_idx(a, 1), "material"));
                json_object_object_add(json_object_array_get_idx(a, 0), "material", v3m);
                json_object_object_add(json_object_array_get_idx(a, 1), "material", v2m);
                t = json_object_to_json_string(j);
                test_write_file(path, t, strlen(t), 0600);
                assert_int_equal(kms_unwrap(f->b, k.id, "vol-1", b2, s2, &out), -EUCLEAN);
                expect_error_contains(f, "version 2");
                test_write_file(path, text, strlen(text), 0600);
                expect_unwrap(f, k.id, "vol-1", b2, s2, dk);
        }
        assert_null(out);
}

static void test_versions_key_states(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key k = {}, d = {};
        _cleanup_(secret_freep) secret *dk = data_key(), *out = NULL;
        _cleanup_free_ uint8_t *b1 = NULL, *b2 = NULL, *bx = NULL;
        size_t s1 = 0, s2 = 0, sx = 0;

        create_key(f, "states", &k);
        wrap_v(f, k.id, "vol-s", dk, &b1, &s1, 1);
        rotate(f, k.id, 2);
        wrap_v(f, k.id, "vol-s", dk, &b2, &s2, 2);

        /* Disabled: every version refused, no wrap, no rotation (like AWS KMS). */
        assert_int_equal(kms_key_set_enabled(f->b, k.id, false, NULL), 0);
        assert_int_equal(kms_unwrap(f->b, k.id, "vol-s", b1, s1, &out), -EKEYREVOKED);
        assert_int_equal(kms_unwrap(f->b, k.id, "vol-s", b2, s2, &out), -EKEYREVOKED);
        assert_int_equal(kms_wrap(f->b, k.id, "vol-s", dk, &bx, &sx), -EKEYREVOKED);
        assert_int_equal(kms_key_rotate(f->b, k.id, NULL), -EKEYREJECTED);
        expect_error_contains(f, "disabled");
        assert_int_equal(kms_key_set_rotation(f->b, k.id, 90, NULL), -EKEYREJECTED);
        assert_int_equal(get_version(f, k.id), 2);

        /* Pending deletion: the same. */
        assert_int_equal(kms_key_schedule_deletion(f->b, k.id, 7, NULL), 0);
        assert_int_equal(kms_unwrap(f->b, k.id, "vol-s", b1, s1, &out), -EKEYEXPIRED);
        assert_int_equal(kms_unwrap(f->b, k.id, "vol-s", b2, s2, &out), -EKEYEXPIRED);
        assert_int_equal(kms_key_rotate(f->b, k.id, NULL), -EKEYREJECTED);
        expect_error_contains(f, "pending deletion");

        /* Back to enabled: both versions open again. */
        assert_int_equal(kms_key_cancel_deletion(f->b, k.id, NULL), 0);
        assert_int_equal(kms_key_set_enabled(f->b, k.id, true, NULL), 0);
        expect_unwrap(f, k.id, "vol-s", b1, s1, dk);
        expect_unwrap(f, k.id, "vol-s", b2, s2, dk);

        /* Destroyed: all versions go at once. */
        assert_int_equal(kms_key_schedule_deletion(f->b, k.id, 7, NULL), 0);
        test_clock += 8 * USEC_PER_DAY;
        assert_int_equal(kms_sweep(f->b), 0);
        expect_state(f, k.id, KMS_KEY_DESTROYED);
        {
                _cleanup_free_ char *path = key_file(f, k.id), *text = test_read_file(path, NULL);
                json_object *o = read_key_json(f, k.id);

                assert_null(json_object_object_get(o, "material"));
                assert_int_equal(json_object_array_length(json_object_object_get(o, "versions")), 0);
                json_object_put(o);
                assert_null(strstr(text, "\"material\":\""));
        }
        assert_int_equal(kms_unwrap(f->b, k.id, "vol-s", b1, s1, &out), -ENOKEY);
        assert_int_equal(kms_unwrap(f->b, k.id, "vol-s", b2, s2, &out), -ENOKEY);
        assert_int_equal(kms_key_rotate(f->b, k.id, NULL), -EKEYREJECTED);

        /* The default key rotates: rotation is not a state change. */
        assert_int_equal(kms_key_get(f->b, KMS_DEFAULT_KEY_ALIAS, &d), 0);
        rotate(f, KMS_DEFAULT_KEY_ALIAS, 2);
        assert_int_equal(kms_key_set_rotation(f->b, KMS_DEFAULT_KEY_ALIAS, 365, NULL), 0);
        assert_null(out);
}

static void test_rotation_schedule(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key k = {}, got = {};
        _cleanup_(secret_freep) secret *dk = data_key();
        _cleanup_free_ uint8_t *b1 = NULL, *b2 = NULL;
        size_t s1 = 0, s2 = 0;
        usec_t t0;

        create_key(f, "sched", &k);
        wrap_v(f, k.id, "vol-r", dk, &b1, &s1, 1);

        /* Bounds: 30..365 (Huawei KMS's); 29 and 366 refused naming the range; 0 is off. */
        assert_int_equal(kms_key_set_rotation(f->b, k.id, 29, NULL), -EINVAL);
        expect_error_contains(f, "30..365");
        assert_int_equal(kms_key_set_rotation(f->b, k.id, 366, NULL), -EINVAL);
        expect_error_contains(f, "30..365");
        assert_int_equal(kms_key_set_rotation(f->b, k.id, 1, NULL), -EINVAL);
        assert_int_equal(kms_key_set_rotation(f->b, "sched/none", 30, NULL), -ENOENT);
        assert_int_equal(get_version(f, k.id), 1);

        t0 = test_clock;
        assert_int_equal(kms_key_set_rotation(f->b, k.id, 30, &got), 0);
        assert_int_equal(got.rotation_days, 30);
        assert_int_equal(got.next_rotation, t0 + 30 * USEC_PER_DAY);
        assert_int_equal(got.version, 1);
        kms_key_done(&got);
        assert_int_equal(kms_key_set_rotation(f->b, k.id, 365, &got), 0);
        assert_int_equal(got.next_rotation, t0 + 365 * USEC_PER_DAY);
        kms_key_done(&got);
        assert_int_equal(kms_key_set_rotation(f->b, k.id, 30, &got), 0);
        kms_key_done(&got);

        /* Not yet due: nothing happens. */
        test_clock = t0 + 30 * USEC_PER_DAY - 1;
        assert_int_equal(kms_sweep(f->b), 0);
        assert_int_equal(get_version(f, k.id), 1);

        /* Due: the sweep rotates, the next date moves on by the period. */
        test_clock = t0 + 30 * USEC_PER_DAY;
        assert_int_equal(kms_sweep(f->b), 0);
        assert_int_equal(kms_key_get(f->b, k.id, &got), 0);
        assert_int_equal(got.version, 2);
        assert_int_equal(got.rotated, test_clock);
        assert_int_equal(got.next_rotation, test_clock + 30 * USEC_PER_DAY);
        kms_key_done(&got);

        /* Lazily too: a wrap after the due date (no sweep in between) uses the new version. */
        test_clock += 31 * USEC_PER_DAY;
        wrap_v(f, k.id, "vol-r", dk, &b2, &s2, 3);
        expect_unwrap(f, k.id, "vol-r", b1, s1, dk);

        /* A disabled key is not rotated while disabled; overdue, it rotates on the first use once enabled. */
        assert_int_equal(kms_key_set_enabled(f->b, k.id, false, NULL), 0);
        test_clock += 100 * USEC_PER_DAY;
        assert_int_equal(kms_sweep(f->b), 0);
        assert_int_equal(get_version(f, k.id), 3);
        assert_int_equal(kms_key_set_enabled(f->b, k.id, true, NULL), 0);
        assert_int_equal(get_version(f, k.id), 4);

        /* Off: no more rotation. */
        assert_int_equal(kms_key_set_rotation(f->b, k.id, 0, &got), 0);
        assert_int_equal(got.rotation_days, 0);
        assert_int_equal(got.next_rotation, 0);
        kms_key_done(&got);
        test_clock += 400 * USEC_PER_DAY;
        assert_int_equal(kms_sweep(f->b), 0);
        assert_int_equal(get_version(f, k.id), 4);
        expect_unwrap(f, k.id, "vol-r", b2, s2, dk);
}

/* A rotation is one atomic rewrite of the key file. SIGKILL between its steps (temp file written and fsynced,
 * rename, directory fsync) leaves either the old file with a stray temp file, or the new file: simulated here
 * by putting the store in each of those states by hand. Both are usable keys that open every wrapped key made
 * before, and the store goes on rotating. */
static void test_rotation_crash(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key k = {};
        _cleanup_(secret_freep) secret *dk = data_key();
        _cleanup_free_ char *path = NULL, *old_text = NULL, *new_text = NULL, *tmp = NULL;
        _cleanup_free_ uint8_t *b1 = NULL, *b2 = NULL, *b3 = NULL, *b4 = NULL;
        size_t s1 = 0, s2 = 0, s3 = 0, s4 = 0;

        create_key(f, "crash", &k);
        path = key_file(f, k.id);
        wrap_v(f, k.id, "vol-c", dk, &b1, &s1, 1);
        old_text = test_read_file(path, NULL);
        rotate(f, k.id, 2);
        new_text = test_read_file(path, NULL);
        wrap_v(f, k.id, "vol-c", dk, &b2, &s2, 2);

        /* Killed after the temp file was written, before the rename: the old key file plus a complete temp
         * copy of the new one (and, variant, a half-written one). */
        tmp = test_path(f->key_dir, ".#crash-temp.json.Zz9Yy8");
        free(tmp);
        assert_true(asprintf(&tmp, "%s/.#%s.json.Zz9Yy8", f->key_dir, k.id) > 0);
        test_write_file(path, old_text, strlen(old_text), 0600);
        test_write_file(tmp, new_text, strlen(new_text), 0600);
        kms_backend_free(f->b);
        f->b = test_local_backend(&f->ctx);
        expect_state(f, k.id, KMS_KEY_ENABLED);
        assert_int_equal(get_version(f, k.id), 1);
        expect_unwrap(f, k.id, "vol-c", b1, s1, dk);
        /* The rotation is retried: a version 2 again (other material than the lost one). */
        rotate(f, k.id, 2);
        wrap_v(f, k.id, "vol-c", dk, &b3, &s3, 2);
        expect_unwrap(f, k.id, "vol-c", b1, s1, dk);
        expect_unwrap(f, k.id, "vol-c", b3, s3, dk);
        test_write_file(tmp, new_text, strlen(new_text) / 2, 0600);
        assert_int_equal(get_version(f, k.id), 2);
        (void) unlink(tmp);

        /* Killed after the rename (before or after the directory fsync): the new file. */
        test_write_file(path, new_text, strlen(new_text), 0600);
        kms_backend_free(f->b);
        f->b = test_local_backend(&f->ctx);
        assert_int_equal(get_version(f, k.id), 2);
        expect_unwrap(f, k.id, "vol-c", b1, s1, dk);
        expect_unwrap(f, k.id, "vol-c", b2, s2, dk);
        rotate(f, k.id, 3);
        wrap_v(f, k.id, "vol-c", dk, &b4, &s4, 3);
        expect_unwrap(f, k.id, "vol-c", b2, s2, dk);
        expect_unwrap(f, k.id, "vol-c", b4, s4, dk);

        /* A rotation that cannot write changes nothing: a read-only key directory. */
        if (geteuid() != 0) {
                assert_int_equal(chmod(f->key_dir, 0500), 0);
                assert_true(kms_key_rotate(f->b, k.id, NULL) < 0);
                assert_int_equal(chmod(f->key_dir, 0700), 0);
                assert_int_equal(get_version(f, k.id), 3);
        }
}

/* Key files of before versions existed (format version 1, as committed by older releases) load as version 1. */
static void test_versions_old_file(void **state) {
        fixture *f = *state;
        _cleanup_(kms_key_done) kms_key k = {};
        _cleanup_(secret_freep) secret *dk = data_key();
        _cleanup_free_ uint8_t *b1 = NULL, *b2 = NULL;
        size_t s1 = 0, s2 = 0;
        json_object *o;

        create_key(f, "old", &k);
        wrap(f, k.id, "vol-o", dk, &b1, &s1);
        o = read_key_json(f, k.id);
        assert_int_equal(json_object_get_int(json_object_object_get(o, "version")), 1);
        assert_null(json_object_object_get(o, "versions"));
        json_object_put(o);
        assert_int_equal(get_version(f, k.id), 1);

        /* Format version 2 with inconsistent versions is corrupt, not silently reduced. */
        rotate(f, k.id, 2);
        wrap_v(f, k.id, "vol-o", dk, &b2, &s2, 2);
        {
                _cleanup_free_ char *path = key_file(f, k.id), *text = test_read_file(path, NULL);
                _cleanup_free_ char *bad = strdup(text);
                char *p = strstr(bad, "\"current_version\":2");

                assert_non_null(p);
                p[strlen("\"current_version\":")] = '3';
                test_write_file(path, bad, strlen(bad), 0600);
                expect_bad_key(f, k.id, "old", "with a missing version");
                test_write_file(path, text, strlen(text), 0600);
        }
        expect_unwrap(f, k.id, "vol-o", b1, s1, dk);
        expect_unwrap(f, k.id, "vol-o", b2, s2, dk);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                TEST(test_create),
                TEST(test_root_key_reused),
                TEST(test_empty_ref),
                TEST(test_bad_files),
                TEST(test_bad_file_no_default),
                TEST(test_root_key_missing),
                TEST(test_root_key_missing_credential),
                TEST(test_transitions_legal),
                TEST(test_transitions_illegal),
                TEST(test_default_key),
                TEST(test_aliases),
                TEST(test_get),
                TEST(test_list_sorted),
                TEST(test_expiry),
                TEST(test_sweep),
                TEST(test_wrap_round_trip),
                TEST(test_wrap_bit_flips),
                TEST(test_wrap_key_states),
                TEST(test_credentials),
                TEST(test_no_temp_files),
                TEST(test_crash_leftovers),
                TEST(test_corrupt_files),
                TEST(test_persistence),
                TEST(test_versions),
                TEST(test_versions_key_states),
                TEST(test_rotation_schedule),
                TEST(test_rotation_crash),
                TEST(test_versions_old_file),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
