/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "kmip-ttlv.h"
#include "secret.h"

static uint32_t be32_read(const uint8_t *p) {
        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | (uint32_t) p[3];
}

static uint64_t be64_read(const uint8_t *p) {
        return (uint64_t) be32_read(p) << 32 | be32_read(p + 4);
}

static void be32_write(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t) (v >> 24);
        p[1] = (uint8_t) (v >> 16);
        p[2] = (uint8_t) (v >> 8);
        p[3] = (uint8_t) v;
}

static void be64_write(uint8_t *p, uint64_t v) {
        be32_write(p, (uint32_t) (v >> 32));
        be32_write(p + 4, (uint32_t) v);
}

static size_t pad8(size_t n) {
        return (n + 7) & ~(size_t) 7;
}

static bool tag_valid(uint32_t tag) {
        return (tag >> 16) == 0x42 || (tag >> 16) == 0x54;
}

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF. */
static bool utf8_valid(const uint8_t *s, size_t n) {
        size_t i = 0;

        while (i < n) {
                uint8_t c = s[i];
                uint32_t cp;
                size_t len;

                if (c < 0x80) {
                        i++;
                        continue;
                }
                if (c >= 0xC2 && c <= 0xDF) {
                        len = 2;
                        cp = c & 0x1F;
                } else if (c >= 0xE0 && c <= 0xEF) {
                        len = 3;
                        cp = c & 0x0F;
                } else if (c >= 0xF0 && c <= 0xF4) {
                        len = 4;
                        cp = c & 0x07;
                } else
                        return false;
                if (n - i < len)
                        return false;
                for (size_t k = 1; k < len; k++) {
                        if ((s[i + k] & 0xC0) != 0x80)
                                return false;
                        cp = cp << 6 | (s[i + k] & 0x3F);
                }
                if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
                    (cp >= 0xD800 && cp <= 0xDFFF))
                        return false;
                i += len;
        }
        return true;
}

static void item_done(kmip_item *i) {
        if (i->type != KMIP_TYPE_STRUCTURE)
                return;
        for (size_t k = 0; k < i->children.n; k++)
                item_done(&i->children.items[k]);
        free(i->children.items);
        i->children.items = NULL;
        i->children.n = 0;
}

static int parse_item(const uint8_t *p, size_t avail, unsigned depth, kmip_item *ret, size_t *ret_consumed);

/* Parses the items filling @size bytes at @p into a new array. */
static int parse_children(const uint8_t *p, size_t size, unsigned depth, kmip_item *s) {
        kmip_item *items = NULL;
        size_t n = 0, allocated = 0, off = 0;
        int r;

        while (off < size) {
                size_t consumed;

                if (n == allocated) {
                        size_t m = allocated ? allocated * 2 : 4;
                        kmip_item *a = reallocarray(items, m, sizeof(kmip_item));

                        if (!a) {
                                r = -ENOMEM;
                                goto fail;
                        }
                        items = a;
                        allocated = m;
                }
                r = parse_item(p + off, size - off, depth, &items[n], &consumed);
                if (r < 0)
                        goto fail;
                n++;
                off += consumed;
        }

        s->children.items = items;
        s->children.n = n;
        return 0;

fail:
        for (size_t k = 0; k < n; k++)
                item_done(&items[k]);
        free(items);
        return r;
}

static int parse_item(const uint8_t *p, size_t avail, unsigned depth, kmip_item *ret, size_t *ret_consumed) {
        kmip_item i = {};
        size_t len, padded;
        int r;

        if (depth > KMIP_TTLV_DEPTH_MAX)
                return -EPROTO;
        if (avail < KMIP_TTLV_HEADER_SIZE)
                return -EPROTO;

        i.tag = (uint32_t) p[0] << 16 | (uint32_t) p[1] << 8 | p[2];
        if (!tag_valid(i.tag))
                return -EPROTO;
        i.type = (kmip_type) p[3];
        len = be32_read(p + 4);
        if (len > KMIP_TTLV_MESSAGE_MAX || len > avail - KMIP_TTLV_HEADER_SIZE)
                return -EPROTO;
        padded = pad8(len);
        if (padded > avail - KMIP_TTLV_HEADER_SIZE)
                return -EPROTO;
        for (size_t k = len; k < padded; k++)
                if (p[KMIP_TTLV_HEADER_SIZE + k] != 0)
                        return -EPROTO;
        p += KMIP_TTLV_HEADER_SIZE;

        switch (i.type) {
        case KMIP_TYPE_STRUCTURE:
                if (len != padded)
                        return -EPROTO;
                r = parse_children(p, len, depth + 1, &i);
                if (r < 0)
                        return r;
                break;
        case KMIP_TYPE_INTEGER:
                if (len != 4)
                        return -EPROTO;
                i.integer = (int32_t) be32_read(p);
                break;
        case KMIP_TYPE_ENUMERATION:
        case KMIP_TYPE_INTERVAL:
                if (len != 4)
                        return -EPROTO;
                i.enumeration = be32_read(p);
                break;
        case KMIP_TYPE_LONG_INTEGER:
        case KMIP_TYPE_DATE_TIME:
                if (len != 8)
                        return -EPROTO;
                i.long_integer = (int64_t) be64_read(p);
                break;
        case KMIP_TYPE_BOOLEAN: {
                uint64_t v;

                if (len != 8)
                        return -EPROTO;
                v = be64_read(p);
                if (v > 1)
                        return -EPROTO;
                i.boolean = v == 1;
                break;
        }
        case KMIP_TYPE_BIG_INTEGER:
                if (len == 0 || len % 8 != 0)
                        return -EPROTO;
                i.bytes.data = p;
                i.bytes.size = len;
                break;
        case KMIP_TYPE_TEXT_STRING:
                if (!utf8_valid(p, len))
                        return -EPROTO;
                i.bytes.data = p;
                i.bytes.size = len;
                break;
        case KMIP_TYPE_BYTE_STRING:
                i.bytes.data = p;
                i.bytes.size = len;
                break;
        default:
                return -EPROTO;
        }

        *ret = i;
        *ret_consumed = KMIP_TTLV_HEADER_SIZE + padded;
        return 0;
}

int kmip_ttlv_decode(const uint8_t *data, size_t size, kmip_tree **ret) {
        kmip_tree *t;
        size_t consumed;
        int r;

        if (!data || size < KMIP_TTLV_HEADER_SIZE || size > KMIP_TTLV_MESSAGE_MAX)
                return -EPROTO;

        t = calloc(1, sizeof(kmip_tree));
        if (!t)
                return -ENOMEM;
        t->buffer = malloc(size);
        if (!t->buffer) {
                free(t);
                return -ENOMEM;
        }
        memcpy(t->buffer, data, size);
        t->size = size;

        r = parse_item(t->buffer, size, 1, &t->root, &consumed);
        if (r >= 0 && consumed != size) {
                item_done(&t->root);
                r = -EPROTO;
        }
        if (r < 0) {
                t->root = (kmip_item) {};
                kmip_tree_free(t);
                return r;
        }
        *ret = t;
        return 0;
}

kmip_tree *kmip_tree_free(kmip_tree *t) {
        if (!t)
                return NULL;
        item_done(&t->root);
        erase_and_free(t->buffer, t->size);
        free(t);
        return NULL;
}

int kmip_ttlv_message_size(const uint8_t header[static KMIP_TTLV_HEADER_SIZE], uint32_t tag, size_t *ret) {
        uint32_t t = (uint32_t) header[0] << 16 | (uint32_t) header[1] << 8 | header[2];
        uint32_t len = be32_read(header + 4);

        if (t != tag || header[3] != KMIP_TYPE_STRUCTURE || len % 8 != 0 ||
            len > KMIP_TTLV_MESSAGE_MAX - KMIP_TTLV_HEADER_SIZE)
                return -EPROTO;
        *ret = (size_t) len + KMIP_TTLV_HEADER_SIZE;
        return 0;
}

const kmip_item *kmip_item_next(const kmip_item *s, const kmip_item *prev, uint32_t tag) {
        size_t start = 0;

        if (!s || s->type != KMIP_TYPE_STRUCTURE)
                return NULL;
        if (prev) {
                if (prev < s->children.items || prev >= s->children.items + s->children.n)
                        return NULL;
                start = (size_t) (prev - s->children.items) + 1;
        }
        for (size_t k = start; k < s->children.n; k++)
                if (s->children.items[k].tag == tag)
                        return &s->children.items[k];
        return NULL;
}

const kmip_item *kmip_item_child(const kmip_item *s, uint32_t tag) {
        return kmip_item_next(s, NULL, tag);
}

static int get_typed(const kmip_item *s, uint32_t tag, kmip_type type, const kmip_item **ret) {
        const kmip_item *i;

        if (!s || s->type != KMIP_TYPE_STRUCTURE)
                return -EPROTO;
        i = kmip_item_child(s, tag);
        if (!i)
                return -ENODATA;
        if (i->type != type)
                return -EPROTO;
        *ret = i;
        return 0;
}

int kmip_item_get_structure(const kmip_item *s, uint32_t tag, const kmip_item **ret) {
        return get_typed(s, tag, KMIP_TYPE_STRUCTURE, ret);
}

int kmip_item_get_integer(const kmip_item *s, uint32_t tag, int32_t *ret) {
        const kmip_item *i;
        int r = get_typed(s, tag, KMIP_TYPE_INTEGER, &i);

        if (r < 0)
                return r;
        *ret = i->integer;
        return 0;
}

int kmip_item_get_enum(const kmip_item *s, uint32_t tag, uint32_t *ret) {
        const kmip_item *i;
        int r = get_typed(s, tag, KMIP_TYPE_ENUMERATION, &i);

        if (r < 0)
                return r;
        *ret = i->enumeration;
        return 0;
}

int kmip_item_get_long(const kmip_item *s, uint32_t tag, int64_t *ret) {
        const kmip_item *i;
        int r = get_typed(s, tag, KMIP_TYPE_LONG_INTEGER, &i);

        if (r < 0)
                return r;
        *ret = i->long_integer;
        return 0;
}

int kmip_item_get_datetime(const kmip_item *s, uint32_t tag, int64_t *ret) {
        const kmip_item *i;
        int r = get_typed(s, tag, KMIP_TYPE_DATE_TIME, &i);

        if (r < 0)
                return r;
        *ret = i->long_integer;
        return 0;
}

int kmip_item_get_bool(const kmip_item *s, uint32_t tag, bool *ret) {
        const kmip_item *i;
        int r = get_typed(s, tag, KMIP_TYPE_BOOLEAN, &i);

        if (r < 0)
                return r;
        *ret = i->boolean;
        return 0;
}

int kmip_item_get_bytes(const kmip_item *s, uint32_t tag, const uint8_t **ret, size_t *ret_size) {
        const kmip_item *i;
        int r = get_typed(s, tag, KMIP_TYPE_BYTE_STRING, &i);

        if (r < 0)
                return r;
        *ret = i->bytes.data;
        *ret_size = i->bytes.size;
        return 0;
}

int kmip_item_text_dup(const kmip_item *i, char **ret) {
        char *s;

        if (!i || i->type != KMIP_TYPE_TEXT_STRING)
                return -EPROTO;
        if (i->bytes.size > 0 && memchr(i->bytes.data, 0, i->bytes.size))
                return -EPROTO;
        s = malloc(i->bytes.size + 1);
        if (!s)
                return -ENOMEM;
        if (i->bytes.size > 0)
                memcpy(s, i->bytes.data, i->bytes.size);
        s[i->bytes.size] = 0;
        *ret = s;
        return 0;
}

int kmip_item_get_text(const kmip_item *s, uint32_t tag, char **ret) {
        const kmip_item *i;
        int r = get_typed(s, tag, KMIP_TYPE_TEXT_STRING, &i);

        if (r < 0)
                return r;
        return kmip_item_text_dup(i, ret);
}

/* The encoder. */

static int writer_fail(kmip_writer *w, int r) {
        if (w->error == 0)
                w->error = r;
        return w->error;
}

static int writer_reserve(kmip_writer *w, size_t extra) {
        uint8_t *p;
        size_t need, m;

        if (extra > KMIP_TTLV_MESSAGE_MAX || w->size > KMIP_TTLV_MESSAGE_MAX - extra)
                return writer_fail(w, -EMSGSIZE);
        need = w->size + extra;
        if (need <= w->allocated)
                return 0;
        m = MAX(MAX(w->allocated * 2, need), (size_t) 256);
        m = MIN(m, (size_t) KMIP_TTLV_MESSAGE_MAX);
        /* Not realloc(): the old buffer may hold key material and must be wiped. */
        p = malloc(m);
        if (!p)
                return writer_fail(w, -ENOMEM);
        if (w->size > 0)
                memcpy(p, w->data, w->size);
        erase_and_free(w->data, w->allocated);
        w->data = p;
        w->allocated = m;
        return 0;
}

/* Appends one item whose value is @size bytes at @value (may be NULL: then zeros). */
static int writer_item(kmip_writer *w, uint32_t tag, kmip_type type, const void *value, size_t size) {
        size_t padded;
        uint8_t *p;
        int r;

        if (w->error < 0)
                return w->error;
        if (!tag_valid(tag) || size > KMIP_TTLV_MESSAGE_MAX)
                return writer_fail(w, -EINVAL);
        if (w->depth >= KMIP_TTLV_DEPTH_MAX && type != KMIP_TYPE_STRUCTURE)
                return writer_fail(w, -EINVAL);
        padded = pad8(size);
        r = writer_reserve(w, KMIP_TTLV_HEADER_SIZE + padded);
        if (r < 0)
                return r;

        p = w->data + w->size;
        p[0] = (uint8_t) (tag >> 16);
        p[1] = (uint8_t) (tag >> 8);
        p[2] = (uint8_t) tag;
        p[3] = (uint8_t) type;
        be32_write(p + 4, (uint32_t) size);
        if (value && size > 0)
                memcpy(p + KMIP_TTLV_HEADER_SIZE, value, size);
        else
                memset(p + KMIP_TTLV_HEADER_SIZE, 0, size);
        memset(p + KMIP_TTLV_HEADER_SIZE + size, 0, padded - size);
        w->size += KMIP_TTLV_HEADER_SIZE + padded;
        return 0;
}

int kmip_writer_begin(kmip_writer *w, uint32_t tag) {
        size_t off = w->size;
        int r;

        if (w->error < 0)
                return w->error;
        if (w->depth >= KMIP_TTLV_DEPTH_MAX)
                return writer_fail(w, -EINVAL);
        r = writer_item(w, tag, KMIP_TYPE_STRUCTURE, NULL, 0);
        if (r < 0)
                return r;
        w->open[w->depth++] = off;
        return 0;
}

int kmip_writer_end(kmip_writer *w) {
        size_t off;

        if (w->error < 0)
                return w->error;
        if (w->depth == 0)
                return writer_fail(w, -EINVAL);
        off = w->open[--w->depth];
        /* writer_reserve() keeps the whole message below the limit, so this fits. */
        be32_write(w->data + off + 4, (uint32_t) (w->size - off - KMIP_TTLV_HEADER_SIZE));
        return 0;
}

int kmip_writer_integer(kmip_writer *w, uint32_t tag, int32_t v) {
        uint8_t b[4];

        be32_write(b, (uint32_t) v);
        return writer_item(w, tag, KMIP_TYPE_INTEGER, b, sizeof b);
}

int kmip_writer_long(kmip_writer *w, uint32_t tag, int64_t v) {
        uint8_t b[8];

        be64_write(b, (uint64_t) v);
        return writer_item(w, tag, KMIP_TYPE_LONG_INTEGER, b, sizeof b);
}

int kmip_writer_enum(kmip_writer *w, uint32_t tag, uint32_t v) {
        uint8_t b[4];

        be32_write(b, v);
        return writer_item(w, tag, KMIP_TYPE_ENUMERATION, b, sizeof b);
}

int kmip_writer_bool(kmip_writer *w, uint32_t tag, bool v) {
        uint8_t b[8];

        be64_write(b, v ? 1 : 0);
        return writer_item(w, tag, KMIP_TYPE_BOOLEAN, b, sizeof b);
}

int kmip_writer_text(kmip_writer *w, uint32_t tag, const char *s) {
        size_t n;

        if (w->error < 0)
                return w->error;
        if (!s)
                return writer_fail(w, -EINVAL);
        n = strlen(s);
        if (!utf8_valid((const uint8_t *) s, n))
                return writer_fail(w, -EINVAL);
        return writer_item(w, tag, KMIP_TYPE_TEXT_STRING, s, n);
}

int kmip_writer_bytes(kmip_writer *w, uint32_t tag, const void *data, size_t size) {
        if (w->error < 0)
                return w->error;
        if (!data && size > 0)
                return writer_fail(w, -EINVAL);
        return writer_item(w, tag, KMIP_TYPE_BYTE_STRING, data, size);
}

int kmip_writer_datetime(kmip_writer *w, uint32_t tag, int64_t seconds) {
        uint8_t b[8];

        be64_write(b, (uint64_t) seconds);
        return writer_item(w, tag, KMIP_TYPE_DATE_TIME, b, sizeof b);
}

int kmip_writer_interval(kmip_writer *w, uint32_t tag, uint32_t seconds) {
        uint8_t b[4];

        be32_write(b, seconds);
        return writer_item(w, tag, KMIP_TYPE_INTERVAL, b, sizeof b);
}

int kmip_writer_big_integer(kmip_writer *w, uint32_t tag, const void *data, size_t size) {
        const uint8_t *in = data;
        _cleanup_free_ uint8_t *b = NULL;
        size_t padded;

        if (w->error < 0)
                return w->error;
        if (!data || size == 0 || size > KMIP_TTLV_MESSAGE_MAX)
                return writer_fail(w, -EINVAL);
        padded = pad8(size);
        b = malloc(padded);
        if (!b)
                return writer_fail(w, -ENOMEM);
        /* Sign extension on the left keeps the two's complement value. */
        memset(b, (in[0] & 0x80) ? 0xFF : 0x00, padded - size);
        memcpy(b + padded - size, in, size);
        return writer_item(w, tag, KMIP_TYPE_BIG_INTEGER, b, padded);
}

int kmip_writer_finish(kmip_writer *w, uint8_t **ret, size_t *ret_size) {
        if (w->error < 0)
                return w->error;
        if (w->depth != 0 || w->size == 0)
                return writer_fail(w, -EINVAL);
        *ret = TAKE_PTR(w->data);
        *ret_size = w->size;
        *w = (kmip_writer) {};
        return 0;
}

void kmip_writer_done(kmip_writer *w) {
        if (!w)
                return;
        erase_and_free(w->data, w->allocated);
        *w = (kmip_writer) {};
}
