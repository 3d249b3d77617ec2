/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The KMIP backend's rotation encoding: the ReKey request payload it sends (byte for byte, KMIP 1.4 sections
 * 4.4 and 9.1), the Link attributes it reads from Get Attributes (Replacement/Replaced Object Link, section
 * 3.35), malformed links rejected, and how a CMK is described from its first and newest versions. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kms/kmip-internal.h"

static void assert_bytes(const uint8_t *got, size_t got_size, const uint8_t *want, size_t want_size) {
        if (got_size != want_size || memcmp(got, want, want_size) != 0) {
                fprintf(stderr, "got:  ");
                for (size_t i = 0; i < got_size; i++)
                        fprintf(stderr, "%02x", got[i]);
                fprintf(stderr, "\nwant: ");
                for (size_t i = 0; i < want_size; i++)
                        fprintf(stderr, "%02x", want[i]);
                fprintf(stderr, "\n");
                fail();
        }
}

static kmip_tree *finish_and_decode(kmip_writer *w) {
        _cleanup_free_ uint8_t *data = NULL;
        kmip_tree *t = NULL;
        size_t size = 0;

        assert_int_equal(kmip_writer_finish(w, &data, &size), 0);
        kmip_writer_done(w);
        assert_int_equal(kmip_ttlv_decode(data, size, &t), 0);
        return t;
}

/* Request Payload { Unique Identifier "17", Offset 0 }. */
static void test_rekey_payload(void **state) {
        static const uint8_t want[] = {
                0x42, 0x00, 0x79, 0x01, 0x00, 0x00, 0x00, 0x20,                      /* Request Payload, 32 */
                0x42, 0x00, 0x94, 0x07, 0x00, 0x00, 0x00, 0x02, '1', '7', 0, 0, 0, 0, 0, 0, /* Unique Id "17" */
                0x42, 0x00, 0x58, 0x0A, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0,   /* Offset: Interval 0 */
        };
        _cleanup_free_ uint8_t *data = NULL;
        kmip_writer w = {};
        size_t size = 0;

        kmip_writer_begin(&w, KMIP_TAG_REQUEST_PAYLOAD);
        kmip_build_rekey(&w, "17");
        kmip_writer_end(&w);
        assert_int_equal(kmip_writer_finish(&w, &data, &size), 0);
        kmip_writer_done(&w);
        assert_bytes(data, size, want, sizeof want);
        assert_int_equal(OP_REKEY, 0x04);
}

static void write_link(kmip_writer *w, uint32_t type, const char *id) {
        kmip_writer_begin(w, KMIP_TAG_ATTRIBUTE);
        kmip_writer_text(w, KMIP_TAG_ATTRIBUTE_NAME, "Link");
        kmip_writer_begin(w, KMIP_TAG_ATTRIBUTE_VALUE);
        kmip_writer_enum(w, KMIP_TAG_LINK_TYPE, type);
        kmip_writer_text(w, KMIP_TAG_LINKED_OBJECT_IDENTIFIER, id);
        kmip_writer_end(w);
        kmip_writer_end(w);
}

static void test_parse_link(void **state) {
        _cleanup_(kmip_tree_freep) kmip_tree *t = NULL;
        _cleanup_free_ char *id = NULL;
        kmip_writer w = {};
        uint32_t type = 0;

        kmip_writer_begin(&w, KMIP_TAG_ATTRIBUTE_VALUE);
        kmip_writer_enum(&w, KMIP_TAG_LINK_TYPE, LINK_REPLACEMENT_OBJECT);
        kmip_writer_text(&w, KMIP_TAG_LINKED_OBJECT_IDENTIFIER, "42");
        kmip_writer_end(&w);
        t = finish_and_decode(&w);
        assert_int_equal(kmip_parse_link(&t->root, &type, &id), 0);
        assert_int_equal(type, 0x106);
        assert_string_equal(id, "42");
}

static void expect_bad_link(void (*build)(kmip_writer *w)) {
        _cleanup_(kmip_tree_freep) kmip_tree *t = NULL;
        char *id = NULL;
        kmip_writer w = {};
        uint32_t type = 0;

        build(&w);
        t = finish_and_decode(&w);
        assert_int_equal(kmip_parse_link(&t->root, &type, &id), -EPROTO);
        assert_null(id);
}

static void link_without_id(kmip_writer *w) {
        kmip_writer_begin(w, KMIP_TAG_ATTRIBUTE_VALUE);
        kmip_writer_enum(w, KMIP_TAG_LINK_TYPE, LINK_REPLACED_OBJECT);
        kmip_writer_end(w);
}
static void link_without_type(kmip_writer *w) {
        kmip_writer_begin(w, KMIP_TAG_ATTRIBUTE_VALUE);
        kmip_writer_text(w, KMIP_TAG_LINKED_OBJECT_IDENTIFIER, "5");
        kmip_writer_end(w);
}
static void link_type_as_text(kmip_writer *w) {
        kmip_writer_begin(w, KMIP_TAG_ATTRIBUTE_VALUE);
        kmip_writer_text(w, KMIP_TAG_LINK_TYPE, "Replacement Object Link");
        kmip_writer_text(w, KMIP_TAG_LINKED_OBJECT_IDENTIFIER, "5");
        kmip_writer_end(w);
}
static void link_with_empty_id(kmip_writer *w) {
        kmip_writer_begin(w, KMIP_TAG_ATTRIBUTE_VALUE);
        kmip_writer_enum(w, KMIP_TAG_LINK_TYPE, LINK_REPLACED_OBJECT);
        kmip_writer_text(w, KMIP_TAG_LINKED_OBJECT_IDENTIFIER, "");
        kmip_writer_end(w);
}
static void link_not_a_structure(kmip_writer *w) {
        kmip_writer_text(w, KMIP_TAG_ATTRIBUTE_VALUE, "5");
}
static void link_with_id_as_bytes(kmip_writer *w) {
        kmip_writer_begin(w, KMIP_TAG_ATTRIBUTE_VALUE);
        kmip_writer_enum(w, KMIP_TAG_LINK_TYPE, LINK_REPLACED_OBJECT);
        kmip_writer_bytes(w, KMIP_TAG_LINKED_OBJECT_IDENTIFIER, "5", 1);
        kmip_writer_end(w);
}

static void test_bad_links(void **state) {
        expect_bad_link(link_without_id);
        expect_bad_link(link_without_type);
        expect_bad_link(link_type_as_text);
        expect_bad_link(link_with_empty_id);
        expect_bad_link(link_not_a_structure);
        expect_bad_link(link_with_id_as_bytes);
}

/* A Get Attributes response payload of key "7" in @state with the links given (type, id pairs, 0-terminated). */
static kmip_tree *attributes_payload(uint32_t state, const uint32_t *types, const char *const *ids) {
        kmip_writer w = {};

        kmip_writer_begin(&w, KMIP_TAG_RESPONSE_PAYLOAD);
        kmip_writer_text(&w, KMIP_TAG_UNIQUE_IDENTIFIER, "7");
        kmip_writer_begin(&w, KMIP_TAG_ATTRIBUTE);
        kmip_writer_text(&w, KMIP_TAG_ATTRIBUTE_NAME, "State");
        kmip_writer_enum(&w, KMIP_TAG_ATTRIBUTE_VALUE, state);
        kmip_writer_end(&w);
        for (size_t i = 0; types[i]; i++)
                write_link(&w, types[i], ids[i]);
        kmip_writer_end(&w);
        return finish_and_decode(&w);
}

static void test_key_info_links(void **state) {
        kmip_backend k = { .base = { .name = (char *) "kmip" }, .host = (char *) "127.0.0.1", .port = 5696 };
        kmip_key_info info = {};

        {
                /* Both directions, and a link of another type, which is not ours to follow. */
                static const uint32_t types[] = { LINK_REPLACEMENT_OBJECT, 0x103, LINK_REPLACED_OBJECT, 0 };
                static const char *const ids[] = { "8", "99", "6" };
                _cleanup_(kmip_tree_freep) kmip_tree *t = attributes_payload(STATE_ACTIVE, types, ids);

                assert_int_equal(kmip_parse_key_info(&k, &t->root, &info), 0);
                assert_string_equal(info.key.id, "7");
                assert_string_equal(info.replacement, "8");
                assert_string_equal(info.replaced, "6");
                assert_int_equal(info.key.version, 1);
                assert_int_equal(info.key.state, KMS_KEY_ENABLED);
                kmip_key_info_done(&info);
                assert_null(info.replacement);
                assert_null(info.replaced);
        }
        {
                /* No links: a key never rotated (and what plain PyKMIP always answers). */
                static const uint32_t types[] = { 0 };
                _cleanup_(kmip_tree_freep) kmip_tree *t = attributes_payload(STATE_DEACTIVATED, types, NULL);

                assert_int_equal(kmip_parse_key_info(&k, &t->root, &info), 0);
                assert_null(info.replacement);
                assert_null(info.replaced);
                assert_int_equal(info.key.state, KMS_KEY_DISABLED);
                kmip_key_info_done(&info);
        }
        {
                /* The same link twice is fine; two different replacements are not. */
                static const uint32_t types[] = { LINK_REPLACEMENT_OBJECT, LINK_REPLACEMENT_OBJECT, 0 };
                static const char *const same[] = { "8", "8" }, *const differ[] = { "8", "9" };
                _cleanup_(kmip_tree_freep) kmip_tree *t1 = attributes_payload(STATE_ACTIVE, types, same),
                                                     *t2 = attributes_payload(STATE_ACTIVE, types, differ);

                assert_int_equal(kmip_parse_key_info(&k, &t1->root, &info), 0);
                assert_string_equal(info.replacement, "8");
                kmip_key_info_done(&info);
                assert_int_equal(kmip_parse_key_info(&k, &t2->root, &info), -EPROTO);
                assert_non_null(strstr(kms_backend_error(&k.base), "two Replacement Object Links"));
        }
        {
                static const uint32_t types[] = { LINK_REPLACED_OBJECT, LINK_REPLACED_OBJECT, 0 };
                static const char *const differ[] = { "5", "6" };
                _cleanup_(kmip_tree_freep) kmip_tree *t = attributes_payload(STATE_ACTIVE, types, differ);

                assert_int_equal(kmip_parse_key_info(&k, &t->root, &info), -EPROTO);
        }
        {
                /* A malformed link is a malformed reply. */
                kmip_writer w = {};
                _cleanup_(kmip_tree_freep) kmip_tree *t = NULL;

                kmip_writer_begin(&w, KMIP_TAG_RESPONSE_PAYLOAD);
                kmip_writer_text(&w, KMIP_TAG_UNIQUE_IDENTIFIER, "7");
                kmip_writer_begin(&w, KMIP_TAG_ATTRIBUTE);
                kmip_writer_text(&w, KMIP_TAG_ATTRIBUTE_NAME, "State");
                kmip_writer_enum(&w, KMIP_TAG_ATTRIBUTE_VALUE, STATE_ACTIVE);
                kmip_writer_end(&w);
                kmip_writer_begin(&w, KMIP_TAG_ATTRIBUTE);
                kmip_writer_text(&w, KMIP_TAG_ATTRIBUTE_NAME, "Link");
                kmip_writer_text(&w, KMIP_TAG_ATTRIBUTE_VALUE, "8");
                kmip_writer_end(&w);
                kmip_writer_end(&w);
                t = finish_and_decode(&w);
                assert_int_equal(kmip_parse_key_info(&k, &t->root, &info), -EPROTO);
                assert_non_null(strstr(kms_backend_error(&k.base), "Link without a type"));
        }
}

/* The CMK: the first key's id and creation, the newest version's state and alias, the count of versions. */
static void test_cmk_key(void **state) {
        kmip_key_info first = { .key = { .id = (char *) "6", .alias = NULL, .description = (char *) "d",
                                         .state = KMS_KEY_ENABLED, .created = 100 * USEC_PER_SEC } },
                      newest = { .key = { .id = (char *) "8", .alias = (char *) "app/a", .state = KMS_KEY_DISABLED,
                                          .created = 200 * USEC_PER_SEC } };
        kms_key key = {};

        assert_int_equal(kmip_cmk_key(&first, &newest, 3, &key), 0);
        assert_string_equal(key.id, "6");
        assert_string_equal(key.alias, "app/a");
        assert_string_equal(key.description, "d");
        assert_int_equal(key.state, KMS_KEY_DISABLED);
        assert_int_equal(key.version, 3);
        assert_int_equal(key.created, 100 * USEC_PER_SEC);
        assert_int_equal(key.rotated, 200 * USEC_PER_SEC);
        kms_key_done(&key);

        /* Never rotated: version 1, no rotation date. */
        assert_int_equal(kmip_cmk_key(&first, &first, 1, &key), 0);
        assert_string_equal(key.id, "6");
        assert_null(key.alias);
        assert_int_equal(key.version, 1);
        assert_int_equal(key.rotated, 0);
        assert_int_equal(key.state, KMS_KEY_ENABLED);
        kms_key_done(&key);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_rekey_payload),
                cmocka_unit_test(test_parse_link),
                cmocka_unit_test(test_bad_links),
                cmocka_unit_test(test_key_info_links),
                cmocka_unit_test(test_cmk_key),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
