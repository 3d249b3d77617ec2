/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The KMIP TTLV encoder and decoder: the examples of KMIP 1.4 section 9.1.2, round trips, and
 * malformed input, every piece of which must be rejected with -EPROTO (never a crash: this test
 * also runs under ASan/UBSan). */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kms/kmip-ttlv.h"
#include "secret.h"

#define T 0x420020 /* the tag of the specification's examples */


static void encode(void (*build)(kmip_writer *w), uint8_t **ret, size_t *ret_size) {
        kmip_writer w = {};

        build(&w);
        assert_int_equal(kmip_writer_finish(&w, ret, ret_size), 0);
        kmip_writer_done(&w);
}

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

static kmip_tree *decode_ok(const uint8_t *data, size_t size) {
        kmip_tree *t = NULL;

        assert_int_equal(kmip_ttlv_decode(data, size, &t), 0);
        assert_non_null(t);
        return t;
}

static void decode_bad(const uint8_t *data, size_t size) {
        kmip_tree *t = NULL;

        assert_int_equal(kmip_ttlv_decode(data, size, &t), -EPROTO);
        assert_null(t);
}

/* ---- KMIP 1.4, 9.1.2 "Examples" ---- */

static const uint8_t ex_integer[] = { 0x42, 0x00, 0x20, 0x02, 0x00, 0x00, 0x00, 0x04,
                                      0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00 };
static const uint8_t ex_long[] = { 0x42, 0x00, 0x20, 0x03, 0x00, 0x00, 0x00, 0x08,
                                   0x01, 0xB6, 0x9B, 0x4B, 0xA5, 0x74, 0x92, 0x00 };
static const uint8_t ex_big[] = { 0x42, 0x00, 0x20, 0x04, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00,
                                  0x03, 0xFD, 0x35, 0xEB, 0x6B, 0xC2, 0xDF, 0x46, 0x18, 0x08, 0x00, 0x00 };
static const uint8_t ex_enum[] = { 0x42, 0x00, 0x20, 0x05, 0x00, 0x00, 0x00, 0x04,
                                   0x00, 0x00, 0x00, 0xFF, 0x00, 0x00, 0x00, 0x00 };
static const uint8_t ex_bool[] = { 0x42, 0x00, 0x20, 0x06, 0x00, 0x00, 0x00, 0x08,
                                   0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01 };
static const uint8_t ex_text[] = { 0x42, 0x00, 0x20, 0x07, 0x00, 0x00, 0x00, 0x0B, 0x48, 0x65, 0x6C, 0x6C,
                                   0x6F, 0x20, 0x57, 0x6F, 0x72, 0x6C, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00 };
static const uint8_t ex_bytes[] = { 0x42, 0x00, 0x20, 0x08, 0x00, 0x00, 0x00, 0x03,
                                    0x01, 0x02, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00 };
static const uint8_t ex_datetime[] = { 0x42, 0x00, 0x20, 0x09, 0x00, 0x00, 0x00, 0x08,
                                       0x00, 0x00, 0x00, 0x00, 0x47, 0xDA, 0x67, 0xF8 };
static const uint8_t ex_interval[] = { 0x42, 0x00, 0x20, 0x0A, 0x00, 0x00, 0x00, 0x04,
                                       0x00, 0x0D, 0x2F, 0x00, 0x00, 0x00, 0x00, 0x00 };
static const uint8_t ex_struct[] = { 0x42, 0x00, 0x20, 0x01, 0x00, 0x00, 0x00, 0x20, 0x42, 0x00, 0x04, 0x05,
                                     0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0xFE, 0x00, 0x00, 0x00, 0x00,
                                     0x42, 0x00, 0x05, 0x02, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0xFF,
                                     0x00, 0x00, 0x00, 0x00 };

static void build_integer(kmip_writer *w) {
        kmip_writer_integer(w, T, 8);
}
static void build_long(kmip_writer *w) {
        kmip_writer_long(w, T, INT64_C(123456789000000000));
}
static void build_big(kmip_writer *w) {
        /* 1234567890000000000000000000 in 12 bytes: the encoder pads it to 16. */
        static const uint8_t v[] = { 0x03, 0xFD, 0x35, 0xEB, 0x6B, 0xC2, 0xDF, 0x46, 0x18, 0x08, 0x00, 0x00 };
        kmip_writer_big_integer(w, T, v, sizeof v);
}
static void build_enum(kmip_writer *w) {
        kmip_writer_enum(w, T, 255);
}
static void build_bool(kmip_writer *w) {
        kmip_writer_bool(w, T, true);
}
static void build_text(kmip_writer *w) {
        kmip_writer_text(w, T, "Hello World");
}
static void build_bytes(kmip_writer *w) {
        kmip_writer_bytes(w, T, (const uint8_t[]) { 1, 2, 3 }, 3);
}
static void build_datetime(kmip_writer *w) {
        kmip_writer_datetime(w, T, 0x47DA67F8); /* 2008-03-14T11:56:40Z */
}
static void build_interval(kmip_writer *w) {
        kmip_writer_interval(w, T, 10 * 86400);
}
static void build_struct(kmip_writer *w) {
        kmip_writer_begin(w, T);
        kmip_writer_enum(w, 0x420004, 254);
        kmip_writer_integer(w, 0x420005, 255);
        kmip_writer_end(w);
}

static const struct {
        const char *name;
        void (*build)(kmip_writer *w);
        const uint8_t *bytes;
        size_t size;
} examples[] = {
        { "integer", build_integer, ex_integer, sizeof ex_integer },
        { "long", build_long, ex_long, sizeof ex_long },
        { "big integer", build_big, ex_big, sizeof ex_big },
        { "enumeration", build_enum, ex_enum, sizeof ex_enum },
        { "boolean", build_bool, ex_bool, sizeof ex_bool },
        { "text", build_text, ex_text, sizeof ex_text },
        { "bytes", build_bytes, ex_bytes, sizeof ex_bytes },
        { "date-time", build_datetime, ex_datetime, sizeof ex_datetime },
        { "interval", build_interval, ex_interval, sizeof ex_interval },
        { "structure", build_struct, ex_struct, sizeof ex_struct },
};

static void test_spec_examples_encode(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(examples); i++) {
                _cleanup_free_ uint8_t *buf = NULL;
                size_t size = 0;

                fprintf(stderr, "example %s\n", examples[i].name);
                encode(examples[i].build, &buf, &size);
                assert_bytes(buf, size, examples[i].bytes, examples[i].size);
        }
}

static void test_spec_examples_decode(void **state) {
        _cleanup_(kmip_tree_freep) kmip_tree *t = NULL;
        const kmip_item *it;

        t = decode_ok(ex_integer, sizeof ex_integer);
        assert_int_equal(t->root.tag, T);
        assert_int_equal(t->root.type, KMIP_TYPE_INTEGER);
        assert_int_equal(t->root.integer, 8);
        t = kmip_tree_free(t);

        t = decode_ok(ex_long, sizeof ex_long);
        assert_int_equal(t->root.type, KMIP_TYPE_LONG_INTEGER);
        assert_true(t->root.long_integer == INT64_C(123456789000000000));
        t = kmip_tree_free(t);

        t = decode_ok(ex_big, sizeof ex_big);
        assert_int_equal(t->root.type, KMIP_TYPE_BIG_INTEGER);
        assert_int_equal(t->root.bytes.size, 16);
        assert_memory_equal(t->root.bytes.data, ex_big + 8, 16);
        t = kmip_tree_free(t);

        t = decode_ok(ex_enum, sizeof ex_enum);
        assert_int_equal(t->root.type, KMIP_TYPE_ENUMERATION);
        assert_int_equal(t->root.enumeration, 255);
        t = kmip_tree_free(t);

        t = decode_ok(ex_bool, sizeof ex_bool);
        assert_int_equal(t->root.type, KMIP_TYPE_BOOLEAN);
        assert_true(t->root.boolean);
        t = kmip_tree_free(t);

        t = decode_ok(ex_text, sizeof ex_text);
        assert_int_equal(t->root.type, KMIP_TYPE_TEXT_STRING);
        assert_int_equal(t->root.bytes.size, 11);
        assert_memory_equal(t->root.bytes.data, "Hello World", 11);
        t = kmip_tree_free(t);

        t = decode_ok(ex_bytes, sizeof ex_bytes);
        assert_int_equal(t->root.type, KMIP_TYPE_BYTE_STRING);
        assert_int_equal(t->root.bytes.size, 3);
        assert_memory_equal(t->root.bytes.data, ((const uint8_t[]) { 1, 2, 3 }), 3);
        t = kmip_tree_free(t);

        t = decode_ok(ex_datetime, sizeof ex_datetime);
        assert_int_equal(t->root.type, KMIP_TYPE_DATE_TIME);
        assert_true(t->root.long_integer == 0x47DA67F8);
        t = kmip_tree_free(t);

        t = decode_ok(ex_interval, sizeof ex_interval);
        assert_int_equal(t->root.type, KMIP_TYPE_INTERVAL);
        assert_int_equal(t->root.enumeration, 864000);
        t = kmip_tree_free(t);

        t = decode_ok(ex_struct, sizeof ex_struct);
        assert_int_equal(t->root.type, KMIP_TYPE_STRUCTURE);
        assert_int_equal(t->root.children.n, 2);
        it = kmip_item_child(&t->root, 0x420004);
        assert_non_null(it);
        assert_int_equal(it->type, KMIP_TYPE_ENUMERATION);
        assert_int_equal(it->enumeration, 254);
        it = kmip_item_child(&t->root, 0x420005);
        assert_non_null(it);
        assert_int_equal(it->integer, 255);
}

/* ---- round trips ---- */

static const uint8_t secret_bytes[] = { 0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02, 0x03, 0x04 };

static void build_message(kmip_writer *w) {
        kmip_writer_begin(w, KMIP_TAG_RESPONSE_MESSAGE);
        kmip_writer_begin(w, KMIP_TAG_RESPONSE_HEADER);
        kmip_writer_begin(w, KMIP_TAG_PROTOCOL_VERSION);
        kmip_writer_integer(w, KMIP_TAG_PROTOCOL_VERSION_MAJOR, 1);
        kmip_writer_integer(w, KMIP_TAG_PROTOCOL_VERSION_MINOR, 4);
        kmip_writer_end(w);
        kmip_writer_integer(w, KMIP_TAG_BATCH_COUNT, 2);
        kmip_writer_end(w);
        for (int i = 0; i < 2; i++) {
                kmip_writer_begin(w, KMIP_TAG_BATCH_ITEM);
                kmip_writer_enum(w, KMIP_TAG_OPERATION, 0x1F + (uint32_t) i);
                kmip_writer_enum(w, KMIP_TAG_RESULT_STATUS, 0);
                kmip_writer_begin(w, KMIP_TAG_RESPONSE_PAYLOAD);
                kmip_writer_text(w, KMIP_TAG_UNIQUE_IDENTIFIER, i == 0 ? "17" : "héllo wörld ✓ 𝄞");
                kmip_writer_bytes(w, KMIP_TAG_DATA, secret_bytes, sizeof secret_bytes - (size_t) i);
                kmip_writer_bytes(w, KMIP_TAG_IV_COUNTER_NONCE, NULL, 0);
                kmip_writer_integer(w, KMIP_TAG_TAG_LENGTH, -16);
                kmip_writer_long(w, 0x540001, INT64_MIN);
                kmip_writer_datetime(w, KMIP_TAG_INITIAL_DATE, INT64_C(1767225600));
                kmip_writer_bool(w, 0x540002, i == 1);
                kmip_writer_interval(w, 0x540003, UINT32_MAX);
                kmip_writer_big_integer(w, 0x540004, (const uint8_t[]) { 0x80, 0x01 }, 2);
                kmip_writer_text(w, KMIP_TAG_ATTRIBUTE_NAME, "");
                kmip_writer_end(w);
                kmip_writer_end(w);
        }
        kmip_writer_end(w);
}

static void test_round_trip(void **state) {
        _cleanup_free_ uint8_t *buf = NULL;
        _cleanup_(kmip_tree_freep) kmip_tree *t = NULL;
        const kmip_item *header, *version, *bi = NULL, *payload;
        size_t size = 0, n = 0;
        int32_t v;

        encode(build_message, &buf, &size);
        assert_int_equal(size % 8, 0);

        {
                size_t msg = 0;
                assert_int_equal(kmip_ttlv_message_size(buf, KMIP_TAG_RESPONSE_MESSAGE, &msg), 0);
                assert_int_equal(msg, size);
        }

        t = decode_ok(buf, size);
        assert_int_equal(t->root.tag, KMIP_TAG_RESPONSE_MESSAGE);
        assert_int_equal(kmip_item_get_structure(&t->root, KMIP_TAG_RESPONSE_HEADER, &header), 0);
        assert_int_equal(kmip_item_get_structure(header, KMIP_TAG_PROTOCOL_VERSION, &version), 0);
        assert_int_equal(kmip_item_get_integer(version, KMIP_TAG_PROTOCOL_VERSION_MAJOR, &v), 0);
        assert_int_equal(v, 1);
        assert_int_equal(kmip_item_get_integer(version, KMIP_TAG_PROTOCOL_VERSION_MINOR, &v), 0);
        assert_int_equal(v, 4);

        while ((bi = kmip_item_next(&t->root, bi, KMIP_TAG_BATCH_ITEM))) {
                _cleanup_free_ char *id = NULL, *empty = NULL;
                const uint8_t *data;
                size_t data_size;
                uint32_t e;
                int64_t l;
                bool b;
                const kmip_item *big;

                assert_int_equal(kmip_item_get_enum(bi, KMIP_TAG_OPERATION, &e), 0);
                assert_int_equal(e, 0x1F + n);
                assert_int_equal(kmip_item_get_structure(bi, KMIP_TAG_RESPONSE_PAYLOAD, &payload), 0);
                assert_int_equal(kmip_item_get_text(payload, KMIP_TAG_UNIQUE_IDENTIFIER, &id), 0);
                assert_string_equal(id, n == 0 ? "17" : "héllo wörld ✓ 𝄞");
                assert_int_equal(kmip_item_get_bytes(payload, KMIP_TAG_DATA, &data, &data_size), 0);
                assert_int_equal(data_size, sizeof secret_bytes - n);
                assert_memory_equal(data, secret_bytes, data_size);
                assert_int_equal(kmip_item_get_bytes(payload, KMIP_TAG_IV_COUNTER_NONCE, &data, &data_size), 0);
                assert_int_equal(data_size, 0);
                assert_int_equal(kmip_item_get_integer(payload, KMIP_TAG_TAG_LENGTH, &v), 0);
                assert_int_equal(v, -16);
                assert_int_equal(kmip_item_get_long(payload, 0x540001, &l), 0);
                assert_true(l == INT64_MIN);
                assert_int_equal(kmip_item_get_datetime(payload, KMIP_TAG_INITIAL_DATE, &l), 0);
                assert_true(l == INT64_C(1767225600));
                assert_int_equal(kmip_item_get_bool(payload, 0x540002, &b), 0);
                assert_true(b == (n == 1));
                big = kmip_item_child(payload, 0x540004);
                assert_non_null(big);
                assert_int_equal(big->type, KMIP_TYPE_BIG_INTEGER);
                assert_int_equal(big->bytes.size, 8);
                assert_memory_equal(big->bytes.data, ((const uint8_t[]) { 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x80, 0x01 }), 8);
                assert_non_null(kmip_item_child(payload, 0x540003));
                assert_int_equal(kmip_item_child(payload, 0x540003)->enumeration, UINT32_MAX);
                assert_int_equal(kmip_item_get_text(payload, KMIP_TAG_ATTRIBUTE_NAME, &empty), 0);
                assert_string_equal(empty, "");
                n++;
        }
        assert_int_equal(n, 2);
}

static void test_getters(void **state) {
        _cleanup_free_ uint8_t *buf = NULL;
        _cleanup_(kmip_tree_freep) kmip_tree *t = NULL;
        const kmip_item *header, *s;
        const uint8_t *data;
        size_t size = 0;
        char *text = NULL;
        uint32_t e;
        int32_t i;
        int64_t l;
        bool b;

        encode(build_message, &buf, &size);
        t = decode_ok(buf, size);
        assert_int_equal(kmip_item_get_structure(&t->root, KMIP_TAG_RESPONSE_HEADER, &header), 0);

        /* Missing. */
        assert_int_equal(kmip_item_get_integer(header, KMIP_TAG_STATE, &i), -ENODATA);
        assert_int_equal(kmip_item_get_text(header, KMIP_TAG_STATE, &text), -ENODATA);
        assert_null(kmip_item_child(header, KMIP_TAG_STATE));
        /* Wrong type. */
        assert_int_equal(kmip_item_get_enum(header, KMIP_TAG_BATCH_COUNT, &e), -EPROTO);
        assert_int_equal(kmip_item_get_long(header, KMIP_TAG_BATCH_COUNT, &l), -EPROTO);
        assert_int_equal(kmip_item_get_datetime(header, KMIP_TAG_BATCH_COUNT, &l), -EPROTO);
        assert_int_equal(kmip_item_get_bool(header, KMIP_TAG_BATCH_COUNT, &b), -EPROTO);
        assert_int_equal(kmip_item_get_bytes(header, KMIP_TAG_BATCH_COUNT, &data, &size), -EPROTO);
        assert_int_equal(kmip_item_get_text(header, KMIP_TAG_BATCH_COUNT, &text), -EPROTO);
        assert_int_equal(kmip_item_get_structure(header, KMIP_TAG_BATCH_COUNT, &s), -EPROTO);
        assert_int_equal(kmip_item_get_integer(header, KMIP_TAG_PROTOCOL_VERSION, &i), -EPROTO);
        /* Not a structure, or none at all. */
        s = kmip_item_child(header, KMIP_TAG_BATCH_COUNT);
        assert_non_null(s);
        assert_int_equal(kmip_item_get_integer(s, KMIP_TAG_BATCH_COUNT, &i), -EPROTO);
        assert_int_equal(kmip_item_get_integer(NULL, KMIP_TAG_BATCH_COUNT, &i), -EPROTO);
        assert_null(kmip_item_child(s, KMIP_TAG_BATCH_COUNT));
        assert_null(kmip_item_child(NULL, KMIP_TAG_BATCH_COUNT));
        /* A prev that is not a child. */
        assert_null(kmip_item_next(header, &t->root, KMIP_TAG_BATCH_COUNT));
        assert_null(text);
}

static void test_text_with_nul(void **state) {
        static const uint8_t m[] = { 0x42, 0x00, 0x20, 0x01, 0x00, 0x00, 0x00, 0x10, 0x42, 0x00, 0x21, 0x07,
                                     0x00, 0x00, 0x00, 0x03, 'a', 0x00, 'b', 0, 0, 0, 0, 0 };
        _cleanup_(kmip_tree_freep) kmip_tree *t = NULL;
        char *text = NULL;

        /* Valid TTLV (NUL is valid UTF-8), but no C string can carry it. */
        t = decode_ok(m, sizeof m);
        assert_int_equal(kmip_item_get_text(&t->root, 0x420021, &text), -EPROTO);
        assert_int_equal(kmip_item_text_dup(&t->root, &text), -EPROTO); /* not a text item */
        assert_null(text);
}

/* ---- malformed input ---- */

static void test_truncated_headers(void **state) {
        /* Every length shorter than a header, including 0 and a NULL buffer. */
        for (size_t n = 0; n < KMIP_TTLV_HEADER_SIZE; n++)
                decode_bad(ex_integer, n);
        decode_bad(NULL, 0);
        decode_bad(NULL, 16);

        /* A structure whose last child is cut inside its header. */
        static const uint8_t m[] = { 0x42, 0x00, 0x20, 0x01, 0x00, 0x00, 0x00, 0x10, 0x42, 0x00, 0x04, 0x05,
                                     0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
                                     0x42, 0x00, 0x05, 0x02 };
        decode_bad(m, sizeof m);
}

static void test_every_truncation(void **state) {
        _cleanup_free_ uint8_t *buf = NULL;
        size_t size = 0;

        encode(build_message, &buf, &size);
        for (size_t n = 0; n < size; n++)
                decode_bad(buf, n);
}

static void test_lengths_past_end(void **state) {
        /* Integer with its value cut off. */
        decode_bad(ex_integer, 12);
        /* Text whose length runs past the buffer. */
        {
                uint8_t m[sizeof ex_text];
                memcpy(m, ex_text, sizeof m);
                m[7] = 0x11; /* 17 bytes, 16 available */
                decode_bad(m, sizeof m);
        }
        /* A structure claiming more than there is. */
        {
                uint8_t m[sizeof ex_struct];
                memcpy(m, ex_struct, sizeof m);
                m[7] = 0x28;
                decode_bad(m, sizeof m);
        }
        /* A child running past its structure, though not past the enclosing one. */
        {
                static const uint8_t m[] = {
                        0x42, 0x00, 0x20, 0x01, 0x00, 0x00, 0x00, 0x20, /* outer: 32 bytes */
                        0x42, 0x00, 0x21, 0x01, 0x00, 0x00, 0x00, 0x10, /* inner: 16 bytes */
                        0x42, 0x00, 0x22, 0x08, 0x00, 0x00, 0x00, 0x0C, /* 12 bytes: 16 padded */
                        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0, 0, 0, 0,
                };
                decode_bad(m, sizeof m);
        }
        /* Text whose padding would run past the end (length fits, padded length does not). */
        {
                uint8_t m[8 + 12];
                memcpy(m, ex_text, sizeof m);
                decode_bad(m, sizeof m);
        }
}

static void test_oversized_lengths(void **state) {
        static const uint32_t lengths[] = { 0xFFFFFFFF, 0x80000000, 0x7FFFFFF8, KMIP_TTLV_MESSAGE_MAX + 8,
                                            KMIP_TTLV_MESSAGE_MAX };
        uint8_t m[sizeof ex_bytes];
        size_t msg;

        for (size_t i = 0; i < ELEMENTSOF(lengths); i++) {
                memcpy(m, ex_bytes, sizeof m);
                m[4] = (uint8_t) (lengths[i] >> 24);
                m[5] = (uint8_t) (lengths[i] >> 16);
                m[6] = (uint8_t) (lengths[i] >> 8);
                m[7] = (uint8_t) lengths[i];
                decode_bad(m, sizeof m);
        }

        /* A whole message above the limit, though well formed. */
        {
                size_t n = KMIP_TTLV_MESSAGE_MAX + 8;
                _cleanup_free_ uint8_t *big = calloc(1, n);

                assert_non_null(big);
                big[0] = 0x42;
                big[3] = KMIP_TYPE_BYTE_STRING;
                big[4] = (uint8_t) ((n - 8) >> 24);
                big[5] = (uint8_t) ((n - 8) >> 16);
                big[6] = (uint8_t) ((n - 8) >> 8);
                big[7] = (uint8_t) (n - 8);
                decode_bad(big, n);
        }

        /* The stream framing check. */
        {
                uint8_t h[8] = { 0x42, 0x00, 0x7B, 0x01, 0x00, 0x00, 0x00, 0x10 };

                assert_int_equal(kmip_ttlv_message_size(h, KMIP_TAG_RESPONSE_MESSAGE, &msg), 0);
                assert_int_equal(msg, 0x18);
                h[4] = 0xFF;
                assert_int_equal(kmip_ttlv_message_size(h, KMIP_TAG_RESPONSE_MESSAGE, &msg), -EPROTO);
                h[4] = 0x00;
                h[5] = 0x10; /* exactly 1 MiB of value: with the header, over the limit */
                h[7] = 0x00;
                assert_int_equal(kmip_ttlv_message_size(h, KMIP_TAG_RESPONSE_MESSAGE, &msg), -EPROTO);
                h[5] = 0x00;
                h[7] = 0x0C; /* not a multiple of 8 */
                assert_int_equal(kmip_ttlv_message_size(h, KMIP_TAG_RESPONSE_MESSAGE, &msg), -EPROTO);
                h[7] = 0x10;
                h[3] = KMIP_TYPE_BYTE_STRING;
                assert_int_equal(kmip_ttlv_message_size(h, KMIP_TAG_RESPONSE_MESSAGE, &msg), -EPROTO);
                h[3] = KMIP_TYPE_STRUCTURE;
                assert_int_equal(kmip_ttlv_message_size(h, KMIP_TAG_REQUEST_MESSAGE, &msg), -EPROTO);
        }
}

static void test_bad_padding(void **state) {
        const struct {
                const uint8_t *m;
                size_t size;
        } cases[] = {
                { ex_integer, sizeof ex_integer }, { ex_enum, sizeof ex_enum },   { ex_text, sizeof ex_text },
                { ex_bytes, sizeof ex_bytes },     { ex_interval, sizeof ex_interval },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                size_t len = (size_t) cases[i].m[7];

                /* Each padding byte in turn. */
                for (size_t k = 8 + len; k < cases[i].size; k++) {
                        uint8_t m[64];

                        memcpy(m, cases[i].m, cases[i].size);
                        m[k] = 0x01;
                        decode_bad(m, cases[i].size);
                }
        }

        /* Padding missing entirely: a 3-byte string in an 11-byte message. */
        decode_bad(ex_bytes, 11);
        /* A structure whose length is not a multiple of 8. */
        {
                uint8_t m[sizeof ex_struct];
                memcpy(m, ex_struct, sizeof m);
                m[7] = 0x1C;
                decode_bad(m, sizeof m);
        }
}

static void test_wrong_types(void **state) {
        static const uint8_t bad_types[] = { 0x00, 0x0B, 0x0C, 0x42, 0x80, 0xFF };
        uint8_t m[16];

        for (size_t i = 0; i < ELEMENTSOF(bad_types); i++) {
                memcpy(m, ex_long, sizeof m);
                m[3] = bad_types[i];
                decode_bad(m, sizeof m);
        }

        /* Fixed-size types with another length. */
        memcpy(m, ex_integer, sizeof m);
        m[7] = 8;
        decode_bad(m, sizeof m);
        memcpy(m, ex_enum, sizeof m);
        m[7] = 8;
        decode_bad(m, sizeof m);
        memcpy(m, ex_interval, sizeof m);
        m[7] = 2;
        m[10] = m[11] = 0;
        decode_bad(m, sizeof m);
        memcpy(m, ex_long, sizeof m);
        m[7] = 4;
        m[12] = m[13] = m[14] = m[15] = 0;
        decode_bad(m, sizeof m);
        memcpy(m, ex_bool, sizeof m);
        m[7] = 4;
        m[15] = 0;
        decode_bad(m, sizeof m);
        memcpy(m, ex_datetime, sizeof m);
        m[7] = 0;
        memset(m + 8, 0, 8);
        decode_bad(m, 8);
        /* Big Integers: empty, or not a multiple of 8. */
        memcpy(m, ex_long, sizeof m);
        m[3] = KMIP_TYPE_BIG_INTEGER;
        m[7] = 0;
        decode_bad(m, 8);
        m[7] = 4;
        memset(m + 12, 0, 4);
        decode_bad(m, sizeof m);

        /* Booleans other than 0 and 1. */
        memcpy(m, ex_bool, sizeof m);
        m[15] = 2;
        decode_bad(m, sizeof m);
        m[15] = 1;
        m[8] = 0x80;
        decode_bad(m, sizeof m);

        /* Tags outside 0x42xxxx and 0x54xxxx. */
        memcpy(m, ex_integer, sizeof m);
        m[0] = 0x43;
        decode_bad(m, sizeof m);
        m[0] = 0x00;
        decode_bad(m, sizeof m);
        m[0] = 0x54;
        kmip_tree_free(decode_ok(m, sizeof m));

        /* Text that is not UTF-8: overlong, lone continuation, surrogate, beyond U+10FFFF, truncated. */
        {
                static const uint8_t bad[][4] = {
                        { 0xC0, 0x80, 'a', 'a' }, { 0x80, 'a', 'a', 'a' }, { 0xED, 0xA0, 0x80, 'a' },
                        { 0xF4, 0x90, 0x80, 0x80 }, { 'a', 'a', 'a', 0xE2 }, { 0xE0, 0x80, 0xAF, 'a' },
                        { 0xFF, 'a', 'a', 'a' },
                };
                for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                        uint8_t t[16] = { 0x42, 0x00, 0x20, 0x07, 0x00, 0x00, 0x00, 0x04 };

                        memcpy(t + 8, bad[i], 4);
                        decode_bad(t, sizeof t);
                }
        }
}

static void test_trailing_bytes(void **state) {
        uint8_t m[sizeof ex_integer + 8] = {};

        memcpy(m, ex_integer, sizeof ex_integer);
        decode_bad(m, sizeof m);
        /* Two top-level items. */
        memcpy(m + sizeof ex_integer, ex_integer, 8);
        decode_bad(m, sizeof m);
}

/* @levels nested empty-ended structures. */
static uint8_t *nested(unsigned levels, size_t *ret_size) {
        size_t size = (size_t) levels * 8 + 16;
        uint8_t *m = calloc(1, size);

        assert_non_null(m);
        for (unsigned i = 0; i < levels; i++) {
                size_t len = size - (size_t) (i + 1) * 8;
                uint8_t *h = m + (size_t) i * 8;

                h[0] = 0x42;
                h[2] = 0x20;
                h[3] = KMIP_TYPE_STRUCTURE;
                h[4] = (uint8_t) (len >> 24);
                h[5] = (uint8_t) (len >> 16);
                h[6] = (uint8_t) (len >> 8);
                h[7] = (uint8_t) len;
        }
        /* The innermost content: one Integer. */
        memcpy(m + (size_t) levels * 8, ex_integer, 16);
        *ret_size = size;
        return m;
}

static void test_nesting_depth(void **state) {
        size_t size;
        _cleanup_free_ uint8_t *ok = NULL, *deep = NULL, *very = NULL;
        kmip_writer w = {};

        /* The integer is item number levels + 1. */
        ok = nested(KMIP_TTLV_DEPTH_MAX - 1, &size);
        kmip_tree_free(decode_ok(ok, size));
        deep = nested(KMIP_TTLV_DEPTH_MAX, &size);
        decode_bad(deep, size);
        very = nested(10000, &size);
        decode_bad(very, size);

        /* The encoder refuses to write what the decoder would refuse. */
        for (unsigned i = 0; i < KMIP_TTLV_DEPTH_MAX - 1; i++)
                assert_int_equal(kmip_writer_begin(&w, T), 0);
        assert_int_equal(kmip_writer_integer(&w, T, 1), 0);
        assert_int_equal(kmip_writer_begin(&w, T), 0);
        assert_int_equal(kmip_writer_integer(&w, T, 1), -EINVAL);
        assert_int_equal(kmip_writer_end(&w), -EINVAL); /* sticky */
        kmip_writer_done(&w);

        assert_int_equal(kmip_writer_begin(&w, T), 0);
        for (unsigned i = 1; i < KMIP_TTLV_DEPTH_MAX; i++)
                assert_int_equal(kmip_writer_begin(&w, T), 0);
        assert_int_equal(kmip_writer_begin(&w, T), -EINVAL);
        kmip_writer_done(&w);
}

static void test_bit_flips(void **state) {
        _cleanup_free_ uint8_t *buf = NULL;
        size_t size = 0;

        /* Every single-bit corruption decodes or is refused, and never crashes. */
        encode(build_message, &buf, &size);
        for (size_t i = 0; i < size; i++)
                for (unsigned bit = 0; bit < 8; bit++) {
                        kmip_tree *t = NULL;
                        int r;

                        buf[i] ^= (uint8_t) (1U << bit);
                        r = kmip_ttlv_decode(buf, size, &t);
                        assert_true(r == 0 || r == -EPROTO);
                        assert_true((r == 0) == (t != NULL));
                        kmip_tree_free(t);
                        buf[i] ^= (uint8_t) (1U << bit);
                }
}

/* ---- encoder errors ---- */

static void test_writer_errors(void **state) {
        kmip_writer w = {};
        uint8_t *buf = NULL;
        size_t size = 0;

        /* Nothing written. */
        assert_int_equal(kmip_writer_finish(&w, &buf, &size), -EINVAL);
        kmip_writer_done(&w);

        /* Unbalanced. */
        assert_int_equal(kmip_writer_end(&w), -EINVAL);
        assert_int_equal(kmip_writer_integer(&w, T, 1), -EINVAL);
        assert_int_equal(kmip_writer_finish(&w, &buf, &size), -EINVAL);
        kmip_writer_done(&w);
        assert_int_equal(kmip_writer_begin(&w, T), 0);
        assert_int_equal(kmip_writer_finish(&w, &buf, &size), -EINVAL);
        kmip_writer_done(&w);

        /* Bad tag. */
        assert_int_equal(kmip_writer_integer(&w, 0x430001, 1), -EINVAL);
        assert_int_equal(kmip_writer_finish(&w, &buf, &size), -EINVAL);
        kmip_writer_done(&w);
        assert_int_equal(kmip_writer_begin(&w, 0x1000000 | T), -EINVAL);
        kmip_writer_done(&w);

        /* Text must be UTF-8; strings must exist. */
        assert_int_equal(kmip_writer_text(&w, T, "\xC0\x80"), -EINVAL);
        kmip_writer_done(&w);
        assert_int_equal(kmip_writer_text(&w, T, NULL), -EINVAL);
        kmip_writer_done(&w);
        assert_int_equal(kmip_writer_bytes(&w, T, NULL, 3), -EINVAL);
        kmip_writer_done(&w);
        assert_int_equal(kmip_writer_big_integer(&w, T, NULL, 0), -EINVAL);
        kmip_writer_done(&w);

        /* Over the message limit. */
        {
                _cleanup_free_ uint8_t *big = calloc(1, KMIP_TTLV_MESSAGE_MAX / 2);

                assert_non_null(big);
                assert_int_equal(kmip_writer_bytes(&w, T, big, KMIP_TTLV_MESSAGE_MAX / 2), 0);
                assert_int_equal(kmip_writer_bytes(&w, T, big, KMIP_TTLV_MESSAGE_MAX / 2), -EMSGSIZE);
                assert_int_equal(kmip_writer_integer(&w, T, 1), -EMSGSIZE);
                assert_int_equal(kmip_writer_finish(&w, &buf, &size), -EMSGSIZE);
                kmip_writer_done(&w);
        }
        assert_null(buf);

        /* Reusable after done. */
        assert_int_equal(kmip_writer_integer(&w, T, 8), 0);
        assert_int_equal(kmip_writer_finish(&w, &buf, &size), 0);
        assert_bytes(buf, size, ex_integer, sizeof ex_integer);
        free(buf);
        kmip_writer_done(&w);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_spec_examples_encode),
                cmocka_unit_test(test_spec_examples_decode),
                cmocka_unit_test(test_round_trip),
                cmocka_unit_test(test_getters),
                cmocka_unit_test(test_text_with_nul),
                cmocka_unit_test(test_truncated_headers),
                cmocka_unit_test(test_every_truncation),
                cmocka_unit_test(test_lengths_past_end),
                cmocka_unit_test(test_oversized_lengths),
                cmocka_unit_test(test_bad_padding),
                cmocka_unit_test(test_wrong_types),
                cmocka_unit_test(test_trailing_bytes),
                cmocka_unit_test(test_nesting_depth),
                cmocka_unit_test(test_bit_flips),
                cmocka_unit_test(test_writer_errors),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
