/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "crypto.h"
#include "json-util.h"
#include "kms.h"
#include "test-util.h"
#include "token.h"

#define KEY_ID "123e4567-e89b-42d3-a456-426614174000"

static uint8_t wrapped[100];

static evs_token valid_token(void) {
        for (size_t i = 0; i < sizeof wrapped; i++)
                wrapped[i] = (uint8_t) (i * 31 + 7);
        return (evs_token) {
                .keyslot = 3,
                .backend = (char *) "local",
                .key_id = (char *) KEY_ID,
                .key_alias = (char *) "evs/default",
                .volume_id = (char *) "vol-1",
                .wrapped = wrapped,
                .wrapped_size = sizeof wrapped,
        };
}

static char *valid_json(void) {
        evs_token t = valid_token();
        char *json = NULL;

        assert_int_equal(evs_token_to_json(&t, &json), 0);
        return json;
}

static json_object *valid_object(void) {
        _cleanup_free_ char *json = valid_json();
        json_object *o = NULL;

        assert_int_equal(json_parse(json, EVS_TOKEN_JSON_MAX, &o), 0);
        return o;
}

static void expect_bad_text(const char *json, const char *reason, const char *what) {
        evs_token t = {};
        const char *got = NULL;
        int r;

        r = evs_token_from_json(json, &t, &got);
        if (r != -EBADMSG)
                fail_msg("%s: evs_token_from_json returned %d, not -EBADMSG", what, r);
        if (!got || !streq(got, reason))
                fail_msg("%s: reason \"%s\", expected \"%s\"", what, strna(got), reason);
        /* Nothing handed out on failure. */
        assert_null(t.backend);
        assert_null(t.wrapped);
}

static void expect_bad(json_object *o, const char *reason, const char *what) {
        _cleanup_free_ char *json = json_to_string_dup(o, false);

        assert_non_null(json);
        expect_bad_text(json, reason, what);
}

static json_object *json_from_text(const char *text) {
        json_object *v = NULL;

        if (streq(text, "null"))
                return NULL;
        assert_int_equal(json_parse(text, 1U << 20, &v), 0);
        return v;
}

static void test_round_trip(void **state) {
        evs_token in = valid_token();
        _cleanup_(evs_token_done) evs_token out = {}, noalias = {};
        _cleanup_free_ char *json = NULL, *json2 = NULL;
        _cleanup_(json_object_putp) json_object *o = NULL;
        json_object *v = NULL;
        const char *reason = NULL;

        assert_int_equal(evs_token_to_json(&in, &json), 0);
        assert_int_equal(evs_token_from_json(json, &out, &reason), 0);
        assert_null(reason);
        assert_int_equal(out.keyslot, 3);
        assert_string_equal(out.backend, "local");
        assert_string_equal(out.key_id, KEY_ID);
        assert_string_equal(out.key_alias, "evs/default");
        assert_string_equal(out.volume_id, "vol-1");
        assert_int_equal(out.wrapped_size, sizeof wrapped);
        assert_memory_equal(out.wrapped, wrapped, sizeof wrapped);

        /* The document itself: what other tools (cryptsetup token export) see. */
        assert_int_equal(json_parse(json, EVS_TOKEN_JSON_MAX, &o), 0);
        assert_int_equal(json_object_object_length(o), 9);
        assert_true(json_object_object_get_ex(o, "type", &v));
        assert_string_equal(json_object_get_string(v), "evs-kms");
        assert_true(json_object_object_get_ex(o, "keyslots", &v));
        assert_true(json_object_is_type(v, json_type_array));
        assert_int_equal(json_object_array_length(v), 1);
        assert_string_equal(json_object_get_string(json_object_array_get_idx(v, 0)), "3");
        assert_true(json_object_object_get_ex(o, "evs_version", &v));
        assert_true(json_object_is_type(v, json_type_int));
        assert_int_equal(json_object_get_int(v), 1);
        assert_true(json_object_object_get_ex(o, "evs_context", &v));
        assert_int_equal(json_object_object_length(v), 1);
        assert_true(json_object_object_get_ex(v, "volume_id", &v));
        assert_string_equal(json_object_get_string(v), "vol-1");

        /* Without an alias: the member is absent, and absent parses as NULL. */
        in.key_alias = NULL;
        in.keyslot = 31;
        in.wrapped_size = KMS_WRAPPED_MAX;
        {
                static uint8_t big[KMS_WRAPPED_MAX];

                memset(big, 0xa5, sizeof big);
                in.wrapped = big;
                assert_int_equal(evs_token_to_json(&in, &json2), 0);
                assert_null(strstr(json2, "evs_key_alias"));
                assert_int_equal(evs_token_from_json(json2, &noalias, NULL), 0);
                assert_null(noalias.key_alias);
                assert_int_equal(noalias.keyslot, 31);
                assert_int_equal(noalias.wrapped_size, KMS_WRAPPED_MAX);
                assert_memory_equal(noalias.wrapped, big, KMS_WRAPPED_MAX);
        }
}

static void test_to_json_rejects(void **state) {
        char long_vol[66];
        char *json = NULL;

        memset(long_vol, 'v', 65);
        long_vol[65] = 0;

        for (int i = 0; i < 12; i++) {
                evs_token t = valid_token();

                switch (i) {
                case 0: t.keyslot = -1; break;
                case 1: t.backend = NULL; break;
                case 2: t.backend = (char *) "bad name"; break;
                case 3: t.key_id = NULL; break;
                case 4: t.key_id = (char *) "has space"; break;
                case 5: t.volume_id = NULL; break;
                case 6: t.volume_id = long_vol; break;
                case 7: t.volume_id = (char *) "vol/1"; break;
                case 8: t.key_alias = (char *) "/bad"; break;
                case 9: t.wrapped = NULL; break;
                case 10: t.wrapped_size = 0; break;
                case 11: t.wrapped_size = KMS_WRAPPED_MAX + 1; break;
                }
                if (evs_token_to_json(&t, &json) != -EINVAL)
                        fail_msg("case %d was serialised", i);
                assert_null(json);
        }
}

/* One member replaced by @value (JSON text; NULL deletes it). */
static void expect_field(const char *key, const char *value, const char *reason) {
        _cleanup_(json_object_putp) json_object *o = valid_object();
        char what[256];

        if (value)
                assert_int_equal(json_object_object_add(o, key, json_from_text(value)), 0);
        else {
                assert_true(json_object_object_get_ex(o, key, NULL));
                json_object_object_del(o, key);
        }
        snprintf(what, sizeof what, "%s=%.200s", key, value ?: "(missing)");
        expect_bad(o, reason, what);
}

static void test_fields(void **state) {
        static const char *const cases[][3] = {
                { "type", NULL, "missing or invalid type" },
                { "type", "1", "missing or invalid type" },
                { "type", "null", "missing or invalid type" },
                { "type", "[\"evs-kms\"]", "missing or invalid type" },
                { "type", "\"luks2-keyring\"", "token type is not evs-kms" },
                { "type", "\"EVS-KMS\"", "token type is not evs-kms" },
                { "type", "\"\"", "token type is not evs-kms" },

                { "keyslots", NULL, "missing keyslots" },
                { "keyslots", "\"0\"", "keyslots must list exactly one keyslot" },
                { "keyslots", "{\"0\":1}", "keyslots must list exactly one keyslot" },
                { "keyslots", "null", "keyslots must list exactly one keyslot" },
                { "keyslots", "[]", "keyslots must list exactly one keyslot" },
                { "keyslots", "[\"0\",\"1\"]", "keyslots must list exactly one keyslot" },
                { "keyslots", "[\"3\",\"3\"]", "keyslots must list exactly one keyslot" },
                { "keyslots", "[3]", "keyslots entry is not a string" },
                { "keyslots", "[null]", "keyslots entry is not a string" },
                { "keyslots", "[\"abc\"]", "keyslots entry is not a keyslot number" },
                { "keyslots", "[\"\"]", "keyslots entry is not a keyslot number" },
                { "keyslots", "[\"1x\"]", "keyslots entry is not a keyslot number" },
                { "keyslots", "[\"1.5\"]", "keyslots entry is not a keyslot number" },
                { "keyslots", "[\"-1\"]", "keyslots entry is not a keyslot number" },
                { "keyslots", "[\"32\"]", "keyslots entry is not a keyslot number" },
                { "keyslots", "[\"99999999999999999999\"]", "keyslots entry is not a keyslot number" },

                { "evs_version", NULL, "missing evs_version" },
                { "evs_version", "\"1\"", "evs_version is not a number" },
                { "evs_version", "1.0", "evs_version is not a number" },
                { "evs_version", "-1", "evs_version is not a number" },
                { "evs_version", "true", "evs_version is not a number" },
                { "evs_version", "null", "evs_version is not a number" },
                { "evs_version", "2", "unsupported evs_version" },
                { "evs_version", "0", "unsupported evs_version" },
                { "evs_version", "18446744073709551615", "unsupported evs_version" },

                { "evs_backend", NULL, "missing or invalid evs_backend" },
                { "evs_backend", "7", "missing or invalid evs_backend" },
                { "evs_backend", "null", "missing or invalid evs_backend" },
                { "evs_backend", "\"\"", "evs_backend is not a valid backend name" },
                { "evs_backend", "\"bad name\"", "evs_backend is not a valid backend name" },
                { "evs_backend", "\"a/b\"", "evs_backend is not a valid backend name" },
                { "evs_backend", "\"a:b\"", "evs_backend is not a valid backend name" },
                { "evs_backend", "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"", /* 65 */
                  "evs_backend is not a valid backend name" },

                { "evs_key_id", NULL, "missing or invalid evs_key_id" },
                { "evs_key_id", "{}", "missing or invalid evs_key_id" },
                { "evs_key_id", "null", "missing or invalid evs_key_id" },
                { "evs_key_id", "\"\"", "evs_key_id is not a valid key id" },
                { "evs_key_id", "\"has space\"", "evs_key_id is not a valid key id" },
                { "evs_key_id", "\"tab\\there\"", "evs_key_id is not a valid key id" },
                { "evs_key_id", "\"caf\\u00e9\"", "evs_key_id is not a valid key id" },

                { "evs_key_alias", "1", "evs_key_alias is not a string" },
                { "evs_key_alias", "null", "evs_key_alias is not a string" },
                { "evs_key_alias", "[\"evs/default\"]", "evs_key_alias is not a string" },
                { "evs_key_alias", "\"\"", "evs_key_alias is not a valid alias" },
                { "evs_key_alias", "\"/lead\"", "evs_key_alias is not a valid alias" },
                { "evs_key_alias", "\"a..b\"", "evs_key_alias is not a valid alias" },
                { "evs_key_alias", "\"with space\"", "evs_key_alias is not a valid alias" },
                { "evs_key_alias", "\"" KEY_ID "\"", "evs_key_alias is not a valid alias" },

                { "evs_volume_id", NULL, "missing or invalid evs_volume_id" },
                { "evs_volume_id", "1", "missing or invalid evs_volume_id" },
                { "evs_volume_id", "null", "missing or invalid evs_volume_id" },
                { "evs_volume_id", "\"\"", "evs_volume_id is not a valid volume id" },
                { "evs_volume_id", "\"vol/1\"", "evs_volume_id is not a valid volume id" },
                { "evs_volume_id", "\"vol 1\"", "evs_volume_id is not a valid volume id" },
                { "evs_volume_id", "\"vol:1\"", "evs_volume_id is not a valid volume id" },
                { "evs_volume_id", "\"../x\"", "evs_volume_id is not a valid volume id" },
                { "evs_volume_id", "\"vol-1\\n\"", "evs_volume_id is not a valid volume id" },
                { "evs_volume_id", "\"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv\"", /* 65 */
                  "evs_volume_id is not a valid volume id" },

                { "evs_context", NULL, "missing evs_context" },
                { "evs_context", "\"vol-1\"", "evs_context must be {\"volume_id\": ...}" },
                { "evs_context", "[\"vol-1\"]", "evs_context must be {\"volume_id\": ...}" },
                { "evs_context", "null", "evs_context must be {\"volume_id\": ...}" },
                { "evs_context", "{}", "evs_context must be {\"volume_id\": ...}" },
                { "evs_context", "{\"volume_id\":\"vol-1\",\"x\":\"y\"}", "evs_context must be {\"volume_id\": ...}" },
                { "evs_context", "{\"volume\":\"vol-1\"}", "evs_context must be {\"volume_id\": ...}" },
                { "evs_context", "{\"volume_id\":1}", "evs_context must be {\"volume_id\": ...}" },
                { "evs_context", "{\"volume_id\":null}", "evs_context must be {\"volume_id\": ...}" },
                { "evs_context", "{\"volume_id\":\"vol-2\"}", "evs_context does not match evs_volume_id" },
                { "evs_context", "{\"volume_id\":\"VOL-1\"}", "evs_context does not match evs_volume_id" },
                { "evs_context", "{\"volume_id\":\"vol-1 \"}", "evs_context does not match evs_volume_id" },

                { "evs_wrapped_key", NULL, "missing or invalid evs_wrapped_key" },
                { "evs_wrapped_key", "12", "missing or invalid evs_wrapped_key" },
                { "evs_wrapped_key", "null", "missing or invalid evs_wrapped_key" },
                { "evs_wrapped_key", "\"!!!!\"", "evs_wrapped_key is not base64" },
                { "evs_wrapped_key", "\"QUJD\\n\"", "evs_wrapped_key is not base64" },
                { "evs_wrapped_key", "\"QUJ\"", "evs_wrapped_key is not base64" },
                { "evs_wrapped_key", "\"QUJD-_==\"", "evs_wrapped_key is not base64" },
                { "evs_wrapped_key", "\"\"", "evs_wrapped_key is empty" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                expect_field(cases[i][0], cases[i][1], cases[i][2]);
}

static void test_wrapped_size(void **state) {
        static uint8_t big[KMS_WRAPPED_MAX + 1];
        _cleanup_free_ char *b64 = NULL, *b64ok = NULL;
        _cleanup_(json_object_putp) json_object *o = valid_object();
        _cleanup_(evs_token_done) evs_token t = {};
        _cleanup_free_ char *json = NULL;

        memset(big, 0x5a, sizeof big);
        assert_int_equal(base64_encode(big, sizeof big, &b64), 0);
        assert_int_equal(json_add_string(o, "evs_wrapped_key", b64, false), 0);
        expect_bad(o, "evs_wrapped_key is too long", "4097-byte wrapped key");

        /* The limit itself is fine. */
        assert_int_equal(base64_encode(big, KMS_WRAPPED_MAX, &b64ok), 0);
        assert_int_equal(json_add_string(o, "evs_wrapped_key", b64ok, false), 0);
        json = json_to_string_dup(o, false);
        assert_int_equal(evs_token_from_json(json, &t, NULL), 0);
        assert_int_equal(t.wrapped_size, KMS_WRAPPED_MAX);
}

static void test_not_an_object(void **state) {
        _cleanup_free_ char *json = valid_json(), *garbage = NULL, *huge = NULL;
        static const char *const bad[] = {
                "", "not json", "{", "}", "\"evs-kms\"", "42", "null", "true", "[]", "[{}]", "{}",
        };
        const char *reason = NULL;
        evs_token t = {};

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                const char *want = streq(bad[i], "{}") ? "missing or invalid type" : "token is not a JSON object";

                expect_bad_text(bad[i], want, bad[i]);
        }

        /* The valid document wrapped in an array, or followed by anything but whitespace. */
        {
                _cleanup_free_ char *arr = NULL;

                assert_true(asprintf(&arr, "[%s]", json) > 0);
                expect_bad_text(arr, "token is not a JSON object", "array of a valid token");
        }
        static const char *const tails[] = { "x", "{}", " 1", "\n}", "]", ",", "\"\"" };
        for (size_t i = 0; i < ELEMENTSOF(tails); i++) {
                assert_true(asprintf(&garbage, "%s%s", json, tails[i]) > 0);
                expect_bad_text(garbage, "token is not a JSON object", tails[i]);
                garbage = mfree(garbage);
        }
        /* Truncated anywhere. */
        for (size_t n = 0; n < strlen(json); n++) {
                _cleanup_free_ char *cut = strndup(json, n);

                assert_int_equal(evs_token_from_json(cut, &t, &reason), -EBADMSG);
        }
        /* Larger than a token may be. */
        huge = malloc(EVS_TOKEN_JSON_MAX + 2);
        assert_non_null(huge);
        memset(huge, ' ', EVS_TOKEN_JSON_MAX + 1);
        memcpy(huge, json, strlen(json));
        huge[EVS_TOKEN_JSON_MAX + 1] = 0;
        expect_bad_text(huge, "token is not a JSON object", "oversized");

        assert_int_equal(evs_token_from_json(NULL, &t, &reason), -EBADMSG);
        assert_string_equal(reason, "no token JSON");
        assert_null(t.backend);
}

static void test_volume_id_valid(void **state) {
        char id[67];

        assert_false(volume_id_valid(NULL));
        assert_false(volume_id_valid(""));
        assert_true(volume_id_valid("a"));
        assert_true(volume_id_valid("vol-1"));
        assert_true(volume_id_valid("A.b_c-D.9"));
        assert_true(volume_id_valid("a."));
        /* A leading dot names a hidden record file that directory scans skip: refused. */
        assert_false(volume_id_valid("."));
        assert_false(volume_id_valid(".."));
        assert_false(volume_id_valid(".hidden"));
        /* ...but a header an earlier version wrote with one still reads (its volume still opens). */
        assert_true(volume_label_valid(".hidden"));
        assert_true(volume_label_valid("vol-1"));
        assert_false(volume_label_valid("."));
        assert_false(volume_label_valid(".."));
        assert_false(volume_label_valid(""));
        assert_false(volume_label_valid("a/b"));
        {
                evs_token in = valid_token();
                _cleanup_(evs_token_done) evs_token out = {};
                _cleanup_free_ char *json = NULL, *mapping = NULL;
                const char *reason = NULL;

                in.volume_id = (char *) ".old";
                assert_int_equal(evs_token_to_json(&in, &json), 0);
                assert_int_equal(evs_token_from_json(json, &out, &reason), 0);
                assert_string_equal(out.volume_id, ".old");
                assert_int_equal(volume_mapping_name(".old", &mapping), 0);
                assert_string_equal(mapping, "evs-.old");
        }

        memset(id, 'x', sizeof id);
        id[64] = 0;
        assert_true(volume_id_valid(id));
        id[64] = 'x';
        id[65] = 0;
        assert_false(volume_id_valid(id));

        for (int c = 1; c < 256; c++) {
                bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                               c == '.' || c == '_' || c == '-';
                char s[4] = { 'a', (char) c, 'b', 0 };
                char one[2] = { (char) c, 0 };

                if (volume_id_valid(s) != allowed)
                        fail_msg("volume_id_valid(\"a\\x%02x b\") is %d", c, !allowed);
                if (volume_id_valid(one) != (allowed && c != '.'))
                        fail_msg("volume_id_valid(\"\\x%02x\") is %d", c, !allowed);
        }
}

static void test_volume_mapping_name(void **state) {
        _cleanup_free_ char *n = NULL, *m = NULL;
        char id[66];
        char *bad = NULL;

        assert_int_equal(volume_mapping_name("vol-1", &n), 0);
        assert_string_equal(n, "evs-vol-1");

        memset(id, 'z', sizeof id);
        id[64] = 0;
        assert_int_equal(volume_mapping_name(id, &m), 0);
        assert_int_equal(strlen(m), 4 + 64);
        assert_memory_equal(m, "evs-", 4);
        assert_string_equal(m + 4, id);

        id[64] = 'z';
        id[65] = 0;
        assert_int_equal(volume_mapping_name(id, &bad), -EINVAL);
        assert_int_equal(volume_mapping_name("", &bad), -EINVAL);
        assert_int_equal(volume_mapping_name("../../etc", &bad), -EINVAL);
        assert_int_equal(volume_mapping_name("a/b", &bad), -EINVAL);
        assert_int_equal(volume_mapping_name(NULL, &bad), -EINVAL);
        assert_null(bad);
}

/* evs_key_version: optional and additive in both directions. */
static void test_key_version(void **state) {
        evs_token t = valid_token(), got = {};
        _cleanup_free_ char *json = NULL, *json2 = NULL;
        const char *reason = NULL;
        json_object *o;

        /* Not recorded: not written, reads back as 0 (what older releases wrote). */
        assert_int_equal(evs_token_to_json(&t, &json), 0);
        assert_null(strstr(json, "evs_key_version"));
        assert_int_equal(evs_token_from_json(json, &got, &reason), 0);
        assert_int_equal(got.key_version, 0);
        evs_token_done(&got);

        /* Recorded: written and read back; evs_version stays 1 so older readers accept the token. */
        t.key_version = 7;
        assert_int_equal(evs_token_to_json(&t, &json2), 0);
        assert_non_null(strstr(json2, "\"evs_key_version\":7"));
        assert_non_null(strstr(json2, "\"evs_version\":1"));
        assert_int_equal(evs_token_from_json(json2, &got, &reason), 0);
        assert_int_equal(got.key_version, 7);
        evs_token_done(&got);

        o = valid_object();
        json_object_object_add(o, "evs_key_version", json_object_new_int(0));
        expect_bad(o, "evs_key_version is not a number from 1 to 4294967295", "version 0");
        json_object_object_add(o, "evs_key_version", json_object_new_int64(INT64_C(4294967296)));
        expect_bad(o, "evs_key_version is not a number from 1 to 4294967295", "version 2^32");
        json_object_object_add(o, "evs_key_version", json_object_new_string("2"));
        expect_bad(o, "evs_key_version is not a number from 1 to 4294967295", "a string");
        json_object_object_add(o, "evs_key_version", json_object_new_int(-1));
        expect_bad(o, "evs_key_version is not a number from 1 to 4294967295", "negative");
        json_object_object_add(o, "evs_key_version", json_object_new_int64(INT64_C(4294967295)));
        {
                _cleanup_free_ char *j = json_to_string_dup(o, false);

                assert_int_equal(evs_token_from_json(j, &got, &reason), 0);
                assert_int_equal(got.key_version, 4294967295U);
                evs_token_done(&got);
        }
        json_object_put(o);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_round_trip),
                cmocka_unit_test(test_to_json_rejects),
                cmocka_unit_test(test_fields),
                cmocka_unit_test(test_wrapped_size),
                cmocka_unit_test(test_not_an_object),
                cmocka_unit_test(test_volume_id_valid),
                cmocka_unit_test(test_volume_mapping_name),
                cmocka_unit_test(test_key_version),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
