/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target for the KMIP TTLV decoder, which parses what a network peer sends.
 *
 * Properties checked on every input: decoding either succeeds or fails with -EPROTO (or -ENOMEM);
 * every getter on every item of a decoded tree stays in bounds; and a decoded message encodes
 * back to exactly the same bytes (the decoder accepts only the canonical encoding).
 *
 * Built with -DEVS_FUZZ_STANDALONE (any compiler) it gets a main(): with file arguments it runs
 * those inputs; without, it runs built-in seeds and a fixed number of deterministic mutations of
 * them, as a regression test. */

#include <stdint.h>
#include <stdlib.h>

#include "kmip-ttlv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void encode_item(kmip_writer *w, const kmip_item *i) {
        switch (i->type) {
        case KMIP_TYPE_STRUCTURE:
                kmip_writer_begin(w, i->tag);
                for (size_t k = 0; k < i->children.n; k++)
                        encode_item(w, &i->children.items[k]);
                kmip_writer_end(w);
                break;
        case KMIP_TYPE_INTEGER:
                kmip_writer_integer(w, i->tag, i->integer);
                break;
        case KMIP_TYPE_LONG_INTEGER:
                kmip_writer_long(w, i->tag, i->long_integer);
                break;
        case KMIP_TYPE_BIG_INTEGER:
                kmip_writer_big_integer(w, i->tag, i->bytes.data, i->bytes.size);
                break;
        case KMIP_TYPE_ENUMERATION:
                kmip_writer_enum(w, i->tag, i->enumeration);
                break;
        case KMIP_TYPE_BOOLEAN:
                kmip_writer_bool(w, i->tag, i->boolean);
                break;
        case KMIP_TYPE_TEXT_STRING: {
                char *s = NULL;

                /* The writer takes C strings: texts with a NUL cannot be re-encoded. */
                if (kmip_item_text_dup(i, &s) < 0) {
                        w->error = w->error ?: -EILSEQ;
                        break;
                }
                kmip_writer_text(w, i->tag, s);
                free(s);
                break;
        }
        case KMIP_TYPE_BYTE_STRING:
                kmip_writer_bytes(w, i->tag, i->bytes.data, i->bytes.size);
                break;
        case KMIP_TYPE_DATE_TIME:
                kmip_writer_datetime(w, i->tag, i->long_integer);
                break;
        case KMIP_TYPE_INTERVAL:
                kmip_writer_interval(w, i->tag, i->enumeration);
                break;
        default:
                abort(); /* the decoder let an unknown type through */
        }
}

static volatile uint8_t sink;

/* Every getter, by each child's own tag (for the first children: the lookups are linear). */
static void walk(const kmip_item *s, unsigned depth) {
        if (depth > KMIP_TTLV_DEPTH_MAX)
                abort(); /* the decoder let too deep a message through */
        if (s->type != KMIP_TYPE_STRUCTURE)
                return;
        for (size_t k = 0; k < s->children.n; k++) {
                const kmip_item *c = &s->children.items[k], *x;
                const uint8_t *b;
                char *t = NULL;
                size_t n;
                int32_t i32;
                uint32_t u32;
                int64_t i64;
                bool v;

                if (k < 64) {
                        (void) kmip_item_get_integer(s, c->tag, &i32);
                        (void) kmip_item_get_enum(s, c->tag, &u32);
                        (void) kmip_item_get_long(s, c->tag, &i64);
                        (void) kmip_item_get_datetime(s, c->tag, &i64);
                        (void) kmip_item_get_bool(s, c->tag, &v);
                        (void) kmip_item_get_structure(s, c->tag, &x);
                        if (kmip_item_get_bytes(s, c->tag, &b, &n) == 0 && n > 0)
                                sink = b[0] ^ b[n - 1]; /* both ends are readable */
                        if (kmip_item_get_text(s, c->tag, &t) == 0)
                                free(t);
                        (void) kmip_item_next(s, c, c->tag);
                }
                if (c->type == KMIP_TYPE_TEXT_STRING || c->type == KMIP_TYPE_BYTE_STRING ||
                    c->type == KMIP_TYPE_BIG_INTEGER) {
                        if (c->bytes.size > 0)
                                sink = c->bytes.data[0] ^ c->bytes.data[c->bytes.size - 1];
                }
                walk(c, depth + 1);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        kmip_tree *t = NULL;
        kmip_writer w = {};
        uint8_t *out = NULL;
        size_t out_size = 0, msg;
        int r;

        if (size >= KMIP_TTLV_HEADER_SIZE)
                (void) kmip_ttlv_message_size(data, KMIP_TAG_RESPONSE_MESSAGE, &msg);

        r = kmip_ttlv_decode(data, size, &t);
        if (r < 0) {
                if (r != -EPROTO && r != -ENOMEM)
                        abort();
                if (t)
                        abort();
                return 0;
        }

        walk(&t->root, 1);

        encode_item(&w, &t->root);
        r = kmip_writer_finish(&w, &out, &out_size);
        if (r == 0) {
                if (out_size != size || memcmp(out, data, size) != 0)
                        abort(); /* accepted a non-canonical encoding */
                free(out);
        } else if (r != -EILSEQ && r != -ENOMEM)
                abort();
        kmip_writer_done(&w);
        kmip_tree_free(t);
        return 0;
}

#ifdef EVS_FUZZ_STANDALONE
#include <stdio.h>

static const uint8_t seed_response[] = {
        /* ResponseMessage { ResponseHeader { ProtocolVersion { 1, 4 }, TimeStamp, BatchCount 1 },
         *                   BatchItem { Operation Decrypt, ResultStatus Success,
         *                               ResponsePayload { UniqueIdentifier "17", Data 3 bytes } } } */
        0x42, 0x00, 0x7B, 0x01, 0x00, 0x00, 0x00, 0xA0, 0x42, 0x00, 0x7A, 0x01, 0x00, 0x00, 0x00, 0x48,
        0x42, 0x00, 0x69, 0x01, 0x00, 0x00, 0x00, 0x20, 0x42, 0x00, 0x6A, 0x02, 0x00, 0x00, 0x00, 0x04,
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x42, 0x00, 0x6B, 0x02, 0x00, 0x00, 0x00, 0x04,
        0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x42, 0x00, 0x92, 0x09, 0x00, 0x00, 0x00, 0x08,
        0x00, 0x00, 0x00, 0x00, 0x69, 0x29, 0x00, 0x00, 0x42, 0x00, 0x0D, 0x02, 0x00, 0x00, 0x00, 0x04,
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x42, 0x00, 0x0F, 0x01, 0x00, 0x00, 0x00, 0x48,
        0x42, 0x00, 0x5C, 0x05, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00,
        0x42, 0x00, 0x7F, 0x05, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x42, 0x00, 0x7C, 0x01, 0x00, 0x00, 0x00, 0x20, 0x42, 0x00, 0x94, 0x07, 0x00, 0x00, 0x00, 0x02,
        0x31, 0x37, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x42, 0x00, 0xC2, 0x08, 0x00, 0x00, 0x00, 0x03,
        0x01, 0x02, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00,
};

static const uint8_t seed_types[] = {
        /* A Structure holding one item of each other type. */
        0x42, 0x00, 0x20, 0x01, 0x00, 0x00, 0x00, 0x90, 0x42, 0x00, 0x21, 0x02, 0x00, 0x00, 0x00, 0x04,
        0xFF, 0xFF, 0xFF, 0xFE, 0x00, 0x00, 0x00, 0x00, 0x42, 0x00, 0x22, 0x03, 0x00, 0x00, 0x00, 0x08,
        0x01, 0xB6, 0x9B, 0x4B, 0xA5, 0x74, 0x92, 0x00, 0x42, 0x00, 0x23, 0x04, 0x00, 0x00, 0x00, 0x08,
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x80, 0x01, 0x54, 0x00, 0x24, 0x05, 0x00, 0x00, 0x00, 0x04,
        0x00, 0x00, 0x00, 0xFF, 0x00, 0x00, 0x00, 0x00, 0x42, 0x00, 0x25, 0x06, 0x00, 0x00, 0x00, 0x08,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x42, 0x00, 0x26, 0x07, 0x00, 0x00, 0x00, 0x03,
        0xC3, 0xA9, 0x41, 0x00, 0x00, 0x00, 0x00, 0x00, 0x42, 0x00, 0x27, 0x08, 0x00, 0x00, 0x00, 0x00,
        0x42, 0x00, 0x28, 0x09, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x47, 0xDA, 0x67, 0xF8,
        0x42, 0x00, 0x29, 0x0A, 0x00, 0x00, 0x00, 0x04, 0x00, 0x0D, 0x2F, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x42, 0x00, 0x2A, 0x01, 0x00, 0x00, 0x00, 0x00,
};

static uint64_t rng = 0x9E3779B97F4A7C15ULL;

static uint64_t next_random(void) {
        /* xorshift64*: deterministic, so a failure is reproducible. */
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        return rng * 0x2545F4914F6CDD1DULL;
}

static int run_file(const char *path) {
        uint8_t *buf = NULL;
        size_t n = 0, cap = 0;
        FILE *f = fopen(path, "re");

        if (!f) {
                perror(path);
                return 1;
        }
        for (;;) {
                if (n == cap) {
                        uint8_t *b = realloc(buf, cap = cap ? cap * 2 : 4096);
                        if (!b)
                                abort();
                        buf = b;
                }
                size_t k = fread(buf + n, 1, cap - n, f);
                if (k == 0)
                        break;
                n += k;
        }
        fclose(f);
        LLVMFuzzerTestOneInput(buf, n);
        free(buf);
        return 0;
}

int main(int argc, char *argv[]) {
        static const struct {
                const uint8_t *data;
                size_t size;
        } seeds[] = { { seed_response, sizeof seed_response }, { seed_types, sizeof seed_types } };
        unsigned long iterations = 1000000;
        int rc = 0;

        if (argc > 1) {
                for (int i = 1; i < argc; i++)
                        rc |= run_file(argv[i]);
                return rc;
        }

        for (size_t s = 0; s < ELEMENTSOF(seeds); s++) {
                kmip_tree *t = NULL;

                /* The seeds themselves must decode. */
                if (kmip_ttlv_decode(seeds[s].data, seeds[s].size, &t) < 0) {
                        fprintf(stderr, "seed %zu does not decode\n", s);
                        return 1;
                }
                kmip_tree_free(t);
        }

        for (unsigned long it = 0; it < iterations; it++) {
                size_t s = (size_t) (next_random() % ELEMENTSOF(seeds)), size = seeds[s].size;
                uint8_t buf[512];
                unsigned edits = 1 + (unsigned) (next_random() % 4);

                memcpy(buf, seeds[s].data, size);
                for (unsigned e = 0; e < edits && size > 0; e++) {
                        size_t at = (size_t) (next_random() % size);

                        switch (next_random() % 4) {
                        case 0: /* flip a bit */
                                buf[at] ^= (uint8_t) (1U << (next_random() % 8));
                                break;
                        case 1: /* a random byte */
                                buf[at] = (uint8_t) next_random();
                                break;
                        case 2: /* a length byte: the low byte of some header's length */
                                buf[(at & ~(size_t) 7) | 7] = (uint8_t) next_random();
                                break;
                        default: /* truncate */
                                size = at;
                        }
                }
                LLVMFuzzerTestOneInput(buf, size);
        }
        fprintf(stderr, "%lu mutated inputs, no failure\n", iterations);
        return 0;
}
#endif
