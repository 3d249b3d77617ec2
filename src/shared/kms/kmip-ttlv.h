/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* KMIP TTLV (Tag, Type, Length, Value) encoding, KMIP 1.4 section 9.1.
 *
 * Every item is a 3-byte tag (first byte 0x42, or 0x54 for extensions), a 1-byte type, a 4-byte
 * big-endian length of the value, then the value padded with zero bytes to a multiple of 8. A
 * Structure's value is the concatenation of its items. The decoder parses what a network peer sent:
 * it checks every length against what is left, the fixed lengths of the fixed-size types, zero
 * padding, Boolean values, UTF-8 text, the message size (KMIP_TTLV_MESSAGE_MAX) and the nesting
 * depth (KMIP_TTLV_DEPTH_MAX), and rejects anything else with -EPROTO. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"

#define KMIP_TTLV_HEADER_SIZE 8U
#define KMIP_TTLV_MESSAGE_MAX (1024U * 1024U)
#define KMIP_TTLV_DEPTH_MAX 16U

typedef enum kmip_type {
        KMIP_TYPE_STRUCTURE = 0x01,
        KMIP_TYPE_INTEGER = 0x02,
        KMIP_TYPE_LONG_INTEGER = 0x03,
        KMIP_TYPE_BIG_INTEGER = 0x04,
        KMIP_TYPE_ENUMERATION = 0x05,
        KMIP_TYPE_BOOLEAN = 0x06,
        KMIP_TYPE_TEXT_STRING = 0x07,
        KMIP_TYPE_BYTE_STRING = 0x08,
        KMIP_TYPE_DATE_TIME = 0x09,
        KMIP_TYPE_INTERVAL = 0x0A,
} kmip_type;

/* Tags used by the kmip backend (KMIP 1.4 section 9.1.3.1). */
enum {
        KMIP_TAG_APPLICATION_DATA = 0x420002,
        KMIP_TAG_APPLICATION_NAMESPACE = 0x420003,
        KMIP_TAG_APPLICATION_SPECIFIC_INFORMATION = 0x420004,
        KMIP_TAG_ATTRIBUTE = 0x420008,
        KMIP_TAG_ATTRIBUTE_INDEX = 0x420009,
        KMIP_TAG_ATTRIBUTE_NAME = 0x42000A,
        KMIP_TAG_ATTRIBUTE_VALUE = 0x42000B,
        KMIP_TAG_BATCH_COUNT = 0x42000D,
        KMIP_TAG_BATCH_ERROR_CONTINUATION_OPTION = 0x42000E,
        KMIP_TAG_BATCH_ITEM = 0x42000F,
        KMIP_TAG_BLOCK_CIPHER_MODE = 0x420011,
        KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM = 0x420028,
        KMIP_TAG_CRYPTOGRAPHIC_LENGTH = 0x42002A,
        KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS = 0x42002B,
        KMIP_TAG_CRYPTOGRAPHIC_USAGE_MASK = 0x42002C,
        KMIP_TAG_INITIAL_DATE = 0x420039,
        KMIP_TAG_IV_COUNTER_NONCE = 0x42003D,
        KMIP_TAG_LINK_TYPE = 0x42004B,
        KMIP_TAG_LINKED_OBJECT_IDENTIFIER = 0x42004C,
        KMIP_TAG_MAXIMUM_ITEMS = 0x42004F,
        KMIP_TAG_MAXIMUM_RESPONSE_SIZE = 0x420050,
        KMIP_TAG_NAME = 0x420053,
        KMIP_TAG_NAME_TYPE = 0x420054,
        KMIP_TAG_NAME_VALUE = 0x420055,
        KMIP_TAG_OBJECT_TYPE = 0x420057,
        KMIP_TAG_OFFSET = 0x420058,
        KMIP_TAG_OPERATION = 0x42005C,
        KMIP_TAG_PROTOCOL_VERSION = 0x420069,
        KMIP_TAG_PROTOCOL_VERSION_MAJOR = 0x42006A,
        KMIP_TAG_PROTOCOL_VERSION_MINOR = 0x42006B,
        KMIP_TAG_REQUEST_HEADER = 0x420077,
        KMIP_TAG_REQUEST_MESSAGE = 0x420078,
        KMIP_TAG_REQUEST_PAYLOAD = 0x420079,
        KMIP_TAG_RESPONSE_HEADER = 0x42007A,
        KMIP_TAG_RESPONSE_MESSAGE = 0x42007B,
        KMIP_TAG_RESPONSE_PAYLOAD = 0x42007C,
        KMIP_TAG_RESULT_MESSAGE = 0x42007D,
        KMIP_TAG_RESULT_REASON = 0x42007E,
        KMIP_TAG_RESULT_STATUS = 0x42007F,
        KMIP_TAG_REVOCATION_REASON = 0x420081,
        KMIP_TAG_REVOCATION_REASON_CODE = 0x420082,
        KMIP_TAG_STATE = 0x42008D,
        KMIP_TAG_TEMPLATE_ATTRIBUTE = 0x420091,
        KMIP_TAG_UNIQUE_BATCH_ITEM_ID = 0x420093,
        KMIP_TAG_UNIQUE_IDENTIFIER = 0x420094,
        KMIP_TAG_DATA = 0x4200C2,
        KMIP_TAG_TAG_LENGTH = 0x4200CE,
        KMIP_TAG_AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA = 0x4200FE,
        KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG = 0x4200FF,
};

/* A decoded item. Text and byte strings and big integers point into the tree's own copy of the
 * message (not NUL-terminated); structures own their children. */
typedef struct kmip_item {
        uint32_t tag;
        kmip_type type;
        union {
                int32_t integer;      /* Integer */
                uint32_t enumeration; /* Enumeration, Interval */
                int64_t long_integer; /* Long Integer, Date-Time (seconds since the epoch) */
                bool boolean;
                struct {
                        const uint8_t *data;
                        size_t size;
                } bytes; /* Text String, Byte String, Big Integer */
                struct {
                        struct kmip_item *items;
                        size_t n;
                } children; /* Structure */
        };
} kmip_item;

/* A decoded message: the root item and the bytes its strings point into. */
typedef struct kmip_tree {
        kmip_item root;
        uint8_t *buffer;
        size_t size;
} kmip_tree;

/* Decodes exactly one item filling @size bytes at @data (the buffer is copied). -EPROTO when the
 * input is malformed in any way (see the top of this file), -ENOMEM. */
int kmip_ttlv_decode(const uint8_t *data, size_t size, kmip_tree **ret);
/* Wipes (messages may carry key material) and frees; accepts NULL; returns NULL. */
kmip_tree *kmip_tree_free(kmip_tree *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(kmip_tree *, kmip_tree_free);

/* Checks the first KMIP_TTLV_HEADER_SIZE bytes of a message that should carry @tag as a Structure
 * and returns the size of the whole message, header included. -EPROTO when the tag or type differ
 * or the length is not a multiple of 8 or exceeds KMIP_TTLV_MESSAGE_MAX. */
int kmip_ttlv_message_size(const uint8_t header[static KMIP_TTLV_HEADER_SIZE], uint32_t tag, size_t *ret);

/* Looks up children of the Structure @s. kmip_item_child() returns the first with @tag (NULL when
 * none, or when @s is NULL or not a Structure); kmip_item_next() the next after @prev. */
const kmip_item *kmip_item_child(const kmip_item *s, uint32_t tag);
const kmip_item *kmip_item_next(const kmip_item *s, const kmip_item *prev, uint32_t tag);

/* Typed getters for the first child of @s with @tag. -ENODATA when there is none, -EPROTO when it
 * has another type (or @s is not a Structure). kmip_item_get_text() returns a new NUL-terminated
 * copy and -EPROTO when the text holds a NUL byte. Date-Times are seconds since the epoch. */
int kmip_item_get_structure(const kmip_item *s, uint32_t tag, const kmip_item **ret);
int kmip_item_get_integer(const kmip_item *s, uint32_t tag, int32_t *ret);
int kmip_item_get_enum(const kmip_item *s, uint32_t tag, uint32_t *ret);
int kmip_item_get_long(const kmip_item *s, uint32_t tag, int64_t *ret);
int kmip_item_get_datetime(const kmip_item *s, uint32_t tag, int64_t *ret);
int kmip_item_get_bool(const kmip_item *s, uint32_t tag, bool *ret);
int kmip_item_get_bytes(const kmip_item *s, uint32_t tag, const uint8_t **ret, size_t *ret_size);
int kmip_item_get_text(const kmip_item *s, uint32_t tag, char **ret);
/* A new NUL-terminated copy of the Text String item @i itself. -EPROTO as above. */
int kmip_item_text_dup(const kmip_item *i, char **ret);

/* The encoder. Calls append to one buffer; Structures are opened with kmip_writer_begin() and
 * closed with kmip_writer_end(), which fills in their length. The first failure sticks: every
 * later call does nothing and returns it, and kmip_writer_finish() returns it, so a request can
 * be written without checking each call. Errors: -EINVAL (a tag outside 0x42xxxx/0x54xxxx, nesting
 * deeper than KMIP_TTLV_DEPTH_MAX, end without begin, a value larger than the message limit),
 * -EMSGSIZE (message over KMIP_TTLV_MESSAGE_MAX), -ENOMEM. The buffer is wiped when it is freed or
 * grown: requests may carry key material. */
typedef struct kmip_writer {
        uint8_t *data;
        size_t size;
        size_t allocated;
        size_t open[KMIP_TTLV_DEPTH_MAX]; /* offsets of the open Structures' headers */
        unsigned depth;
        int error;
} kmip_writer;

int kmip_writer_begin(kmip_writer *w, uint32_t tag);
int kmip_writer_end(kmip_writer *w);
int kmip_writer_integer(kmip_writer *w, uint32_t tag, int32_t v);
int kmip_writer_long(kmip_writer *w, uint32_t tag, int64_t v);
int kmip_writer_enum(kmip_writer *w, uint32_t tag, uint32_t v);
int kmip_writer_bool(kmip_writer *w, uint32_t tag, bool v);
int kmip_writer_text(kmip_writer *w, uint32_t tag, const char *s);
int kmip_writer_bytes(kmip_writer *w, uint32_t tag, const void *data, size_t size);
int kmip_writer_datetime(kmip_writer *w, uint32_t tag, int64_t seconds);
int kmip_writer_interval(kmip_writer *w, uint32_t tag, uint32_t seconds);
/* A Big Integer from @size big-endian two's complement bytes, sign-extended to a multiple of 8. */
int kmip_writer_big_integer(kmip_writer *w, uint32_t tag, const void *data, size_t size);
/* Hands the encoded bytes over (the writer is left empty). The sticky error, or -EINVAL when a
 * Structure is still open or nothing was written. */
int kmip_writer_finish(kmip_writer *w, uint8_t **ret, size_t *ret_size);
/* Wipes and frees the buffer; the writer can be reused. */
void kmip_writer_done(kmip_writer *w);
