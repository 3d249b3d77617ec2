/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The KMIP backend's parts (the backend, its configuration, operations, state mapping and wrapped format are
 * described in kmip.c):
 *   kmip-config.c  the [Backend] keys, open and free
 *   kmip-call.c    requests and answers: message building, one round trip (kmip_call), result reasons and
 *                  their errnos, the request payloads
 *   kmip-attrs.c   key attributes: the state mapping, Get Attributes, Locate, resolving a reference
 *   kmip.c         the key verbs, wrap/unwrap, the ops table
 * The connection is kmip-conn.c, the TTLV codec kmip-ttlv.c. Functions return -errno and record the
 * reason with kms_backend_set_error(). */

#include <ctype.h>

#include "backends.h"
#include "crypto.h"
#include "kmip-conn.h"
#include "kmip-ttlv.h"

#define KMIP_DEFAULT_HOST "127.0.0.1"
#define KMIP_DEFAULT_PORT 5696U
#define KMIP_DEFAULT_TIMEOUT (10 * USEC_PER_SEC)
#define KMIP_TIMEOUT_MIN (USEC_PER_SEC / 10)
#define KMIP_TIMEOUT_MAX (3600 * USEC_PER_SEC)
#define KMIP_DESCRIPTION_NAMESPACE "evs-cryptd-description"
#define KMIP_GET_ATTRIBUTES_BATCH 64U
#define KMIP_ID_MAX 255U

#define WRAP_MAGIC "EVK1"
#define GCM_NONCE_SIZE 12U
#define GCM_TAG_SIZE 16U

/* KMIP 1.4 enumerations (section 9.1.3.2). */
enum {
        OP_CREATE = 0x01,
        OP_REKEY = 0x04,
        OP_LOCATE = 0x08,
        OP_GET_ATTRIBUTES = 0x0B,
        OP_ACTIVATE = 0x12,
        OP_REVOKE = 0x13,
        OP_DESTROY = 0x14,
        OP_ENCRYPT = 0x1F,
        OP_DECRYPT = 0x20,
        OP_QUERY = 0x18,
};

enum {
        STATUS_SUCCESS = 0,
        STATUS_OPERATION_FAILED = 1,
        STATUS_OPERATION_PENDING = 2,
        STATUS_OPERATION_UNDONE = 3,
        STATUS_MISSING = 0xFFFFFFFF, /* ours: no answer for that batch item */
};

enum {
        REASON_ITEM_NOT_FOUND = 0x01,
        REASON_RESPONSE_TOO_LARGE = 0x02,
        REASON_AUTHENTICATION_NOT_SUCCESSFUL = 0x03,
        REASON_INVALID_MESSAGE = 0x04,
        REASON_OPERATION_NOT_SUPPORTED = 0x05,
        REASON_MISSING_DATA = 0x06,
        REASON_INVALID_FIELD = 0x07,
        REASON_FEATURE_NOT_SUPPORTED = 0x08,
        REASON_CRYPTOGRAPHIC_FAILURE = 0x0A,
        REASON_ILLEGAL_OPERATION = 0x0B,
        REASON_PERMISSION_DENIED = 0x0C,
        REASON_OBJECT_ARCHIVED = 0x0D,
        REASON_APPLICATION_NAMESPACE_NOT_SUPPORTED = 0x0F,
        REASON_GENERAL_FAILURE = 0x100,
};

enum {
        STATE_PRE_ACTIVE = 1,
        STATE_ACTIVE = 2,
        STATE_DEACTIVATED = 3,
        STATE_COMPROMISED = 4,
        STATE_DESTROYED = 5,
        STATE_DESTROYED_COMPROMISED = 6,
};

enum {
        OBJECT_TYPE_SYMMETRIC_KEY = 2,
        ALGORITHM_AES = 3,
        BLOCK_CIPHER_MODE_GCM = 9,
        USAGE_MASK_ENCRYPT = 0x04,
        USAGE_MASK_DECRYPT = 0x08,
        NAME_TYPE_UNINTERPRETED_TEXT_STRING = 1,
        REVOCATION_CESSATION_OF_OPERATION = 6,
        BATCH_ERROR_CONTINUE = 1,
        LINK_REPLACEMENT_OBJECT = 0x106, /* on a key: the key that replaced it (ReKey) */
        LINK_REPLACED_OBJECT = 0x107,    /* on a key: the key it replaced */
};

/* Versions of one CMK followed at most (Replacement Object Links). */
#define KMIP_VERSIONS_MAX 256U

typedef struct kmip_backend {
        kms_backend base;
        kmip_conn *conn;
        char *host;
        unsigned port;
        usec_t timeout;
        usec_t deadline;      /* of the operation in progress */
        uint32_t last_reason; /* Result Reason of the last refusal, 0 when the last call was not refused */
} kmip_backend;

/* The answer to one batch item. */
typedef struct kmip_result {
        uint32_t operation;
        uint32_t status;
        uint32_t reason;
        char *message; /* sanitised, NULL when none */
        const kmip_item *payload;
} kmip_result;

/* What Get Attributes told about one key. */
typedef struct kmip_key_info {
        kms_key key;
        uint32_t kmip_state;
        char *replacement; /* Link of type Replacement Object Link: the key that replaced this one, or NULL */
        char *replaced;    /* Link of type Replaced Object Link: the key this one replaced, or NULL */
} kmip_key_info;

/* A CMK and its versions (see "Rotation" in kmip.c): ids[0] is the CMK's own id (its first key, which replaced
 * no other), ids[i] version i + 1, ids[n - 1] the newest, the one wraps use. */
typedef struct kmip_chain {
        char **ids;
        size_t n;
        kmip_key_info first;  /* attributes of ids[0] */
        kmip_key_info newest; /* attributes of ids[n - 1] when n > 1 (else empty: use first) */
} kmip_chain;

static inline const kmip_key_info *kmip_chain_newest(const kmip_chain *c) {
        return c->n > 1 ? &c->newest : &c->first;
}

#define IN_SET3(x, a, b, c) ((x) == (a) || (x) == (b) || (x) == (c))

static inline kmip_backend *KMIP(kms_backend *b) {
        return (kmip_backend *) b;
}

struct create_args {
        const char *alias;
        const char *description;
};

struct crypt_args {
        const char *id;
        const char *context;
        const uint8_t *data;
        size_t size;
        const uint8_t *nonce;
        const uint8_t *tag; /* Decrypt only */
};

/* kmip-call.c */
void kmip_results_free(kmip_result *res, size_t n);
void kmip_strv_free_n(char **v, size_t n);
void kmip_key_info_done(kmip_key_info *i);
void kmip_request_begin(kmip_writer *w, size_t n_items);
void kmip_item_begin(kmip_writer *w, uint32_t op, size_t index, size_t n_items);
void kmip_item_end(kmip_writer *w);
int kmip_protocol_error(kmip_backend *k, const char *what);
int kmip_call(kmip_backend *k, kmip_writer *w, size_t n_items, bool idempotent, kmip_tree **ret_tree, kmip_result **ret_results);
int kmip_result_check(kmip_backend *k, uint32_t op, const kmip_result *res);
int kmip_call_one(kmip_backend *k, uint32_t op, bool idempotent, void (*build)(kmip_writer *w, const void *u), const void *userdata, kmip_tree **ret_tree, const kmip_item **ret_payload);
void kmip_build_unique_id(kmip_writer *w, const void *u);
void kmip_build_get_attributes(kmip_writer *w, const void *u);
void kmip_build_revoke(kmip_writer *w, const void *u);
void kmip_build_locate(kmip_writer *w, const void *u);
void kmip_build_create(kmip_writer *w, const void *u);
void kmip_build_encrypt(kmip_writer *w, const void *u);
void kmip_build_decrypt(kmip_writer *w, const void *u);
void kmip_build_rekey(kmip_writer *w, const void *u);

/* kmip-config.c */
int kmip_open(const kms_backend_config *cfg, const kms_context *ctx, kms_backend **ret, char **ret_error);
void kmip_free(kms_backend *b);

/* kmip-attrs.c */
const char *kmip_state_to_string(uint32_t s);
int kmip_parse_key_info(kmip_backend *k, const kmip_item *payload, kmip_key_info *ret);
int kmip_get_key_info(kmip_backend *k, const char *id, kmip_key_info *ret);
int kmip_get_key_infos(kmip_backend *k, char *const *ids, size_t n, kmip_key_info *ret);
int kmip_locate(kmip_backend *k, const char *name, char ***ret, size_t *ret_n);
int kmip_cmp_key(const void *a, const void *b);
int kmip_find_by_alias(kmip_backend *k, const char *alias, kmip_key_info **ret, size_t *ret_n);
void kmip_key_infos_free(kmip_key_info *infos, size_t n);
int kmip_resolve(kmip_backend *k, const char *ref, kmip_key_info *ret);
int kmip_parse_link(const kmip_item *value, uint32_t *ret_type, char **ret_id);
void kmip_chain_done(kmip_chain *c);
int kmip_chain_load(kmip_backend *k, kmip_key_info *start, kmip_chain *ret);
int kmip_chain_get(kmip_backend *k, const char *id, kmip_chain *ret);
int kmip_chain_resolve(kmip_backend *k, const char *ref, kmip_chain *ret);
int kmip_chain_key(const kmip_chain *c, kms_key *ret);
int kmip_cmk_key(const kmip_key_info *first, const kmip_key_info *newest, size_t n, kms_key *ret);

/* kmip.c */

