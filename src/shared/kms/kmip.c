/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The KMIP backend: CMKs are AES-256 symmetric keys on a KMIP server, spoken to in KMIP 1.4 over
 * TLS 1.2+ with a client certificate. The key material never leaves the server: wrap and unwrap
 * are the server's Encrypt and Decrypt operations.
 *
 * Configuration, in a `[Backend NAME]` section with `Type=kmip`:
 *   Host=             server name or address (default 127.0.0.1)
 *   Port=             TCP port, 1-65535 (default 5696)
 *   CAFile=           PEM file of the CA(s) the server certificate must chain to (required)
 *   CertificateFile=  PEM client certificate, optionally followed by its chain (required; the
 *                     server usually wants extendedKeyUsage=clientAuth)
 *   KeyFile=          PEM private key of the client certificate, unencrypted (required)
 *   ServerName=       name (or IP address) the server certificate must carry (default: Host)
 *   Timeout=          upper bound for one whole operation, reconnection included: seconds
 *                     ("10", "2.5", "10s") or milliseconds ("500ms"); 0.1s-3600s (default 10)
 * Paths must be absolute. open() checks every value and that the files load, naming FILE:LINE.
 *
 * Operations:
 *   create    Create (Symmetric Key, AES, 256 bits, usage mask Encrypt|Decrypt, Name = the alias,
 *             Application Specific Information {namespace "evs-cryptd-description", data = the
 *             description} when a description is given and the server accepts it; otherwise the
 *             description is dropped) then Activate. Aliases are unique per server: create refuses
 *             a taken one (-EEXIST) and, when two hosts created the same alias at the same time,
 *             the key with the earlier Initial Date (then the smaller id) wins and the other one is
 *             revoked and destroyed by its creator, which returns -EEXIST (see
 *             settle_alias_race(): never two keys, at worst none).
 *   get       by unique identifier, or by alias (Locate by Name); an alias that names several
 *             keys is an error (-EINVAL: the reference is ambiguous) that lists them.
 *   list      Locate (Object Type = Symmetric Key) then Get Attributes for each, batched.
 *   disable   Revoke, reason Cessation Of Operation. Idempotent.
 *   enable    Activate for a Pre-Active key; no-op for an Active one. A revoked key cannot become
 *             Active again in KMIP: -EOPNOTSUPP.
 *   schedule/cancel deletion: -EOPNOTSUPP (KMIP has no scheduled deletion; destroy keys with the
 *             KMIP server's own tools). No state is emulated locally.
 *   wrap      Encrypt with AES-GCM: a fresh 12-byte nonce (IV/Counter/Nonce), 16-byte tag, the
 *             context (volume id) as Authenticated Encryption Additional Data.
 *   unwrap    Decrypt with the same parameters; a tag or AAD mismatch is -EBADMSG.
 *
 * State mapping (KMIP State attribute -> kms_key_state):
 *   Pre-Active                          -> disabled (created but not activated yet)
 *   Active                              -> enabled
 *   Deactivated, Compromised            -> disabled
 *   Destroyed, Destroyed Compromised    -> destroyed
 *   (pending-deletion never occurs; unavailable is the caller's view of -EHOSTDOWN)
 *
 * Errors: Item Not Found -> -ENOENT; Permission Denied is resolved with Get Attributes: a key that
 * is not Active gives its state's errno (-EKEYREVOKED, -ENOKEY), otherwise -EACCES (the server's
 * access policy refuses this client); General Failure or Cryptographic Failure on Decrypt ->
 * -EBADMSG; Authentication Not Successful, connection, TLS and timeout failures -> -EHOSTDOWN;
 * Operation/Feature Not Supported -> -EOPNOTSUPP; Illegal Operation -> -EKEYREJECTED; a reply
 * that does not decode or does not answer the request -> -EPROTO; other refusals -> -EIO. The
 * server's own message, sanitised, is part of the reason.
 *
 * The wrapped key is "EVK1", one byte N, the N-byte key id, the 12-byte nonce, the 16-byte tag,
 * then the ciphertext. The connection is kept open between calls and reopened once, within the
 * same Timeout, when the server dropped it. Like the other backends, an instance is used by one
 * thread at a time. */

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
};

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
} kmip_key_info;

#define IN_SET3(x, a, b, c) ((x) == (a) || (x) == (b) || (x) == (c))

static kmip_backend *KMIP(kms_backend *b) {
        return (kmip_backend *) b;
}

static void results_free(kmip_result *res, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(res[i].message);
        free(res);
}

static void strv_free_n(char **v, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

static void key_info_done(kmip_key_info *i) {
        kms_key_done(&i->key);
        i->kmip_state = 0;
}

/* ---- configuration ---- */

static int parse_port(const char *s, unsigned *ret) {
        unsigned long v;
        char *end;

        if (!s || !isdigit((unsigned char) s[0]))
                return -EINVAL;
        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno != 0 || *end != 0 || v == 0 || v > 65535)
                return -EINVAL;
        *ret = (unsigned) v;
        return 0;
}

/* "10", "2.5", "10s", "2.5s", "500ms". */
static int parse_timeout(const char *s, usec_t *ret) {
        uint64_t whole = 0, frac = 0, scale = USEC_PER_SEC;
        unsigned frac_digits = 0;
        const char *p = s;
        usec_t v;

        if (!s || !isdigit((unsigned char) *p))
                return -EINVAL;
        for (; isdigit((unsigned char) *p); p++) {
                whole = whole * 10 + (uint64_t) (*p - '0');
                if (whole > 3600 * 1000)
                        return -ERANGE;
        }
        if (*p == '.') {
                p++;
                if (!isdigit((unsigned char) *p))
                        return -EINVAL;
                for (; isdigit((unsigned char) *p); p++)
                        if (frac_digits < 6) {
                                frac = frac * 10 + (uint64_t) (*p - '0');
                                frac_digits++;
                        }
        }
        if (streq(p, "ms"))
                scale = 1000;
        else if (!streq(p, "") && !streq(p, "s"))
                return -EINVAL;
        for (unsigned k = frac_digits; k < 6; k++)
                frac *= 10;
        v = whole * scale + frac * scale / USEC_PER_SEC;
        if (v < KMIP_TIMEOUT_MIN || v > KMIP_TIMEOUT_MAX)
                return -ERANGE;
        *ret = v;
        return 0;
}

static bool host_valid(const char *s) {
        size_t n = strlen(s);

        if (n == 0 || n > 253)
                return false;
        for (const char *p = s; *p; p++)
                if (!isalnum((unsigned char) *p) && !strchr(".-:_%", *p))
                        return false;
        return true;
}

static int check_path(const kms_setting *s, const char *key, char **ret_error) {
        if (s->value[0] != '/')
                return kms_config_error(ret_error, s, "%s= must be an absolute path: %s", key, s->value);
        if (access(s->value, R_OK) < 0)
                return kms_config_error(ret_error, s, "%s=%s: %s", key, s->value, strerror(errno));
        return 0;
}

static int kmip_open(const kms_backend_config *cfg, const kms_context *ctx, kms_backend **ret, char **ret_error) {
        static const char *const known[] = { "Host", "Port", "CAFile", "CertificateFile", "KeyFile", "ServerName",
                                             "Timeout", NULL };
        static const char *const file_keys[] = { "CAFile", "CertificateFile", "KeyFile" };
        const kms_setting *files[ELEMENTSOF(file_keys)], *s;
        _cleanup_free_ char *conn_error = NULL;
        kmip_conn_config cc = {};
        kmip_conn_file bad = KMIP_CONN_FILE_CA;
        kmip_backend *k;
        unsigned port = KMIP_DEFAULT_PORT;
        usec_t timeout = KMIP_DEFAULT_TIMEOUT;
        const char *host = KMIP_DEFAULT_HOST, *server_name;
        int r;

        r = kms_config_check_known(cfg, known, ret_error);
        if (r < 0)
                return r;

        s = kms_config_find(cfg, "Host");
        if (s) {
                if (!host_valid(s->value))
                        return kms_config_error(ret_error, s, "Host= is not a host name or address: %s", s->value);
                host = s->value;
        }
        server_name = host;
        s = kms_config_find(cfg, "ServerName");
        if (s) {
                if (!host_valid(s->value))
                        return kms_config_error(ret_error, s, "ServerName= is not a host name or address: %s",
                                                s->value);
                server_name = s->value;
        }
        s = kms_config_find(cfg, "Port");
        if (s && parse_port(s->value, &port) < 0)
                return kms_config_error(ret_error, s, "Port= must be a number 1-65535: %s", s->value);
        s = kms_config_find(cfg, "Timeout");
        if (s && parse_timeout(s->value, &timeout) < 0)
                return kms_config_error(ret_error, s,
                                        "Timeout= must be 0.1 to 3600 seconds (\"10\", \"2.5s\", \"500ms\"): %s",
                                        s->value);

        for (size_t i = 0; i < ELEMENTSOF(file_keys); i++) {
                files[i] = kms_config_find(cfg, file_keys[i]);
                if (!files[i])
                        return kms_config_error(ret_error, kms_config_find(cfg, "Type"),
                                                "[Backend %s]: %s= is required", cfg->name, file_keys[i]);
                r = check_path(files[i], file_keys[i], ret_error);
                if (r < 0)
                        return r;
        }

        k = calloc(1, sizeof(kmip_backend));
        if (!k)
                return -ENOMEM;
        k->port = port;
        k->timeout = timeout;
        k->base.timeout = timeout;
        k->host = strdup(host);
        if (!k->host) {
                free(k);
                return -ENOMEM;
        }

        cc = (kmip_conn_config) {
                .host = host,
                .port = (uint16_t) port,
                .server_name = server_name,
                .ca_file = files[0]->value,
                .cert_file = files[1]->value,
                .key_file = files[2]->value,
        };
        r = kmip_conn_new(&cc, &k->conn, &conn_error, &bad);
        if (r < 0) {
                free(k->host);
                free(k);
                if (r == -EINVAL)
                        return kms_config_error(ret_error, files[bad], "%s", strna(conn_error));
                return r;
        }

        *ret = &k->base;
        return 0;
}

static void kmip_free(kms_backend *b) {
        kmip_backend *k = KMIP(b);

        kmip_conn_free(k->conn);
        free(k->host);
        free(k);
}

/* ---- messages ---- */

static const char *reason_to_string(uint32_t reason) {
        switch (reason) {
        case REASON_ITEM_NOT_FOUND:
                return "Item Not Found";
        case REASON_RESPONSE_TOO_LARGE:
                return "Response Too Large";
        case REASON_AUTHENTICATION_NOT_SUCCESSFUL:
                return "Authentication Not Successful";
        case REASON_INVALID_MESSAGE:
                return "Invalid Message";
        case REASON_OPERATION_NOT_SUPPORTED:
                return "Operation Not Supported";
        case REASON_MISSING_DATA:
                return "Missing Data";
        case REASON_INVALID_FIELD:
                return "Invalid Field";
        case REASON_FEATURE_NOT_SUPPORTED:
                return "Feature Not Supported";
        case REASON_CRYPTOGRAPHIC_FAILURE:
                return "Cryptographic Failure";
        case REASON_ILLEGAL_OPERATION:
                return "Illegal Operation";
        case REASON_PERMISSION_DENIED:
                return "Permission Denied";
        case REASON_OBJECT_ARCHIVED:
                return "Object Archived";
        case REASON_APPLICATION_NAMESPACE_NOT_SUPPORTED:
                return "Application Namespace Not Supported";
        case REASON_GENERAL_FAILURE:
                return "General Failure";
        default:
                return NULL;
        }
}

static const char *operation_to_string(uint32_t op) {
        switch (op) {
        case OP_CREATE:
                return "Create";
        case OP_LOCATE:
                return "Locate";
        case OP_GET_ATTRIBUTES:
                return "Get Attributes";
        case OP_ACTIVATE:
                return "Activate";
        case OP_REVOKE:
                return "Revoke";
        case OP_DESTROY:
                return "Destroy";
        case OP_ENCRYPT:
                return "Encrypt";
        case OP_DECRYPT:
                return "Decrypt";
        case OP_QUERY:
                return "Query";
        default:
                return "request";
        }
}

/* The server's Result Message is untrusted text: keep printable ASCII, at most 200 bytes. */
static char *sanitize_message(const kmip_item *i) {
        size_t n = MIN(i->bytes.size, (size_t) 200);
        char *s = malloc(n + 1);

        if (!s)
                return NULL;
        for (size_t k = 0; k < n; k++) {
                uint8_t c = i->bytes.data[k];
                s[k] = c >= 0x20 && c < 0x7F ? (char) c : '?';
        }
        s[n] = 0;
        return s;
}

static void request_begin(kmip_writer *w, size_t n_items) {
        kmip_writer_begin(w, KMIP_TAG_REQUEST_MESSAGE);
        kmip_writer_begin(w, KMIP_TAG_REQUEST_HEADER);
        kmip_writer_begin(w, KMIP_TAG_PROTOCOL_VERSION);
        kmip_writer_integer(w, KMIP_TAG_PROTOCOL_VERSION_MAJOR, 1);
        kmip_writer_integer(w, KMIP_TAG_PROTOCOL_VERSION_MINOR, 4);
        kmip_writer_end(w);
        kmip_writer_integer(w, KMIP_TAG_MAXIMUM_RESPONSE_SIZE, (int32_t) KMIP_TTLV_MESSAGE_MAX);
        if (n_items > 1)
                kmip_writer_enum(w, KMIP_TAG_BATCH_ERROR_CONTINUATION_OPTION, BATCH_ERROR_CONTINUE);
        kmip_writer_integer(w, KMIP_TAG_BATCH_COUNT, (int32_t) n_items);
        kmip_writer_end(w);
}

/* Opens a batch item and its payload; @index numbers the item in a multi-item batch. */
static void item_begin(kmip_writer *w, uint32_t op, size_t index, size_t n_items) {
        kmip_writer_begin(w, KMIP_TAG_BATCH_ITEM);
        kmip_writer_enum(w, KMIP_TAG_OPERATION, op);
        if (n_items > 1) {
                uint8_t id[4] = { (uint8_t) (index >> 24), (uint8_t) (index >> 16), (uint8_t) (index >> 8),
                                  (uint8_t) index };
                kmip_writer_bytes(w, KMIP_TAG_UNIQUE_BATCH_ITEM_ID, id, sizeof id);
        }
        kmip_writer_begin(w, KMIP_TAG_REQUEST_PAYLOAD);
}

static void item_end(kmip_writer *w) {
        kmip_writer_end(w); /* payload */
        kmip_writer_end(w); /* batch item */
}

static void write_attribute_name(kmip_writer *w, const char *name) {
        kmip_writer_begin(w, KMIP_TAG_ATTRIBUTE);
        kmip_writer_text(w, KMIP_TAG_ATTRIBUTE_NAME, name);
}

static int protocol_error(kmip_backend *k, const char *what) {
        kmip_conn_disconnect(k->conn); /* whatever it was, do not build on it */
        return kms_backend_set_error(&k->base, -EPROTO, "KMIP server %s:%u sent a malformed reply: %s", k->host,
                                     k->port, what);
}

static int map_failure(kmip_backend *k, uint32_t op, const kmip_result *res);

/* Sends the request in @w (with @n_items batch items), decodes the response and matches its batch
 * items to ours. A failure that concerns the whole message (the server could not read it, or did
 * not accept the client) is returned as an error; per-item results are left to the caller, whose
 * items without an answer have status STATUS_MISSING. */
static int kmip_call(kmip_backend *k, kmip_writer *w, size_t n_items, bool idempotent, kmip_tree **ret_tree,
                     kmip_result **ret_results) {
        _cleanup_(kmip_tree_freep) kmip_tree *tree = NULL;
        _cleanup_free_ uint8_t *req = NULL;
        uint8_t *resp = NULL;
        size_t req_size = 0, resp_size = 0, n_answers = 0;
        const kmip_item *header, *version, *bi = NULL;
        kmip_result *res;
        int32_t major, count;
        int r;

        k->last_reason = 0;
        r = kmip_writer_finish(w, &req, &req_size);
        if (r < 0) {
                kmip_writer_done(w);
                return kms_backend_set_error(&k->base, r == -ENOMEM ? r : -EINVAL, "cannot encode the KMIP request: %s",
                                             strerror(-r));
        }
        r = kmip_conn_call(k->conn, req, req_size, k->deadline, idempotent, &resp, &resp_size);
        erase_and_free(TAKE_PTR(req), req_size);
        if (r == -EHOSTDOWN)
                return kms_backend_set_error(&k->base, r, "KMIP server %s:%u unavailable: %s", k->host, k->port,
                                             strna(kmip_conn_error(k->conn)));
        if (r == -EPROTO)
                return protocol_error(k, strna(kmip_conn_error(k->conn)));
        if (r < 0)
                return r;

        r = kmip_ttlv_decode(resp, resp_size, &tree);
        erase_and_free(resp, resp_size);
        if (r == -EPROTO)
                return protocol_error(k, "bad TTLV encoding");
        if (r < 0)
                return r;

        if (kmip_item_get_structure(&tree->root, KMIP_TAG_RESPONSE_HEADER, &header) < 0 ||
            kmip_item_get_structure(header, KMIP_TAG_PROTOCOL_VERSION, &version) < 0 ||
            kmip_item_get_integer(version, KMIP_TAG_PROTOCOL_VERSION_MAJOR, &major) < 0 ||
            kmip_item_get_integer(header, KMIP_TAG_BATCH_COUNT, &count) < 0)
                return protocol_error(k, "no valid response header");
        if (major != 1)
                return protocol_error(k, "not KMIP 1.x");
        while ((bi = kmip_item_next(&tree->root, bi, KMIP_TAG_BATCH_ITEM)))
                n_answers++;
        if (count < 1 || (size_t) count != n_answers || n_answers > n_items)
                return protocol_error(k, "batch count does not match the request");

        res = calloc(n_items, sizeof(kmip_result));
        if (!res)
                return -ENOMEM;
        for (size_t i = 0; i < n_items; i++)
                res[i].status = STATUS_MISSING;

        bi = NULL;
        for (size_t pos = 0; (bi = kmip_item_next(&tree->root, bi, KMIP_TAG_BATCH_ITEM)); pos++) {
                kmip_result x = { .status = STATUS_MISSING };
                const kmip_item *it;
                const uint8_t *id;
                size_t id_size, index = pos;

                if (bi->type != KMIP_TYPE_STRUCTURE ||
                    kmip_item_get_enum(bi, KMIP_TAG_RESULT_STATUS, &x.status) < 0) {
                        results_free(res, n_items);
                        return protocol_error(k, "batch item without result status");
                }
                r = kmip_item_get_enum(bi, KMIP_TAG_OPERATION, &x.operation);
                if (r == -ENODATA && x.status != STATUS_SUCCESS && n_items == 1)
                        r = 0; /* whether about the message or the item, it answers our only item */
                else if (r == -ENODATA && x.status != STATUS_SUCCESS) {
                        /* A failure of the whole message (unreadable request, client refused). */
                        kmip_result whole = { .status = x.status };

                        (void) kmip_item_get_enum(bi, KMIP_TAG_RESULT_REASON, &whole.reason);
                        it = kmip_item_child(bi, KMIP_TAG_RESULT_MESSAGE);
                        if (it && it->type == KMIP_TYPE_TEXT_STRING)
                                whole.message = sanitize_message(it);
                        results_free(res, n_items);
                        r = map_failure(k, 0, &whole);
                        free(whole.message);
                        return r;
                }
                if (r < 0) {
                        results_free(res, n_items);
                        return protocol_error(k, "batch item without operation");
                }
                if (n_items > 1) {
                        if (kmip_item_get_bytes(bi, KMIP_TAG_UNIQUE_BATCH_ITEM_ID, &id, &id_size) < 0 || id_size != 4) {
                                results_free(res, n_items);
                                return protocol_error(k, "batch item without our batch item id");
                        }
                        index = (size_t) id[0] << 24 | (size_t) id[1] << 16 | (size_t) id[2] << 8 | id[3];
                }
                if (index >= n_items || res[index].status != STATUS_MISSING) {
                        results_free(res, n_items);
                        return protocol_error(k, "batch item id out of range");
                }
                if (x.status != STATUS_SUCCESS) {
                        if (kmip_item_get_enum(bi, KMIP_TAG_RESULT_REASON, &x.reason) < 0)
                                x.reason = 0;
                        it = kmip_item_child(bi, KMIP_TAG_RESULT_MESSAGE);
                        if (it && it->type == KMIP_TYPE_TEXT_STRING) {
                                x.message = sanitize_message(it);
                                if (!x.message) {
                                        results_free(res, n_items);
                                        return -ENOMEM;
                                }
                        }
                }
                it = kmip_item_child(bi, KMIP_TAG_RESPONSE_PAYLOAD);
                if (it && it->type != KMIP_TYPE_STRUCTURE) {
                        free(x.message);
                        results_free(res, n_items);
                        return protocol_error(k, "response payload is not a structure");
                }
                x.payload = it;
                res[index] = x;
        }

        *ret_tree = TAKE_PTR(tree);
        *ret_results = res;
        return 0;
}

/* The errno and reason for a failed batch item of operation @op. */
static int map_failure(kmip_backend *k, uint32_t op, const kmip_result *res) {
        const char *name = reason_to_string(res->reason), *what = operation_to_string(op);
        char buf[32];
        int r;

        if (res->status == STATUS_MISSING)
                return protocol_error(k, "no answer to a batch item");
        if (res->status == STATUS_OPERATION_PENDING)
                return protocol_error(k, "asynchronous answer to a synchronous request");
        if (!name) {
                (void) snprintf(buf, sizeof buf, "reason 0x%X", res->reason);
                name = buf;
        }
        k->last_reason = res->reason;

        switch (res->reason) {
        case REASON_ITEM_NOT_FOUND:
                r = -ENOENT;
                break;
        case REASON_AUTHENTICATION_NOT_SUCCESSFUL:
                /* Usually a client certificate without extendedKeyUsage=clientAuth, or unknown. */
                kmip_conn_disconnect(k->conn);
                return kms_backend_set_error(
                        &k->base, -EHOSTDOWN,
                        "KMIP server %s:%u did not accept this client (%s%s%s): check CertificateFile=", k->host,
                        k->port, name, res->message ? ": " : "", strempty(res->message));
        case REASON_PERMISSION_DENIED:
                r = -EACCES;
                break;
        case REASON_OPERATION_NOT_SUPPORTED:
        case REASON_FEATURE_NOT_SUPPORTED:
                r = -EOPNOTSUPP;
                break;
        case REASON_ILLEGAL_OPERATION:
                r = -EKEYREJECTED;
                break;
        case REASON_GENERAL_FAILURE:
        case REASON_CRYPTOGRAPHIC_FAILURE:
                r = op == OP_DECRYPT ? -EBADMSG : -EIO;
                break;
        case REASON_INVALID_MESSAGE:
        case REASON_INVALID_FIELD:
        case REASON_MISSING_DATA:
                r = -EPROTO;
                break;
        default:
                r = -EIO;
        }
        if (r == -EBADMSG)
                return kms_backend_set_error(
                        &k->base, r,
                        "wrapped key fails authentication (altered, or bound to another volume): KMIP %s: %s%s%s", what,
                        name, res->message ? ": " : "", strempty(res->message));
        return kms_backend_set_error(&k->base, r, "KMIP server %s:%u refused %s: %s%s%s", k->host, k->port, what, name,
                                     res->message ? ": " : "", strempty(res->message));
}

/* Checks that a batch item answers @op successfully. */
static int result_check(kmip_backend *k, uint32_t op, const kmip_result *res) {
        if (res->status != STATUS_SUCCESS)
                return map_failure(k, op, res);
        if (res->operation != op)
                return protocol_error(k, "answer for another operation");
        return 0;
}

/* Runs a request with a single batch item whose payload @build writes. */
static int kmip_call_one(kmip_backend *k, uint32_t op, bool idempotent, void (*build)(kmip_writer *w, const void *u),
                         const void *userdata, kmip_tree **ret_tree, const kmip_item **ret_payload) {
        _cleanup_(kmip_tree_freep) kmip_tree *tree = NULL;
        kmip_writer w = {};
        kmip_result *res = NULL;
        int r;

        request_begin(&w, 1);
        item_begin(&w, op, 0, 1);
        build(&w, userdata);
        item_end(&w);
        kmip_writer_end(&w);

        r = kmip_call(k, &w, 1, idempotent, &tree, &res);
        if (r < 0)
                return r;
        r = result_check(k, op, &res[0]);
        if (r >= 0 && !res[0].payload && ret_payload)
                r = protocol_error(k, "no response payload");
        if (r >= 0 && ret_payload)
                *ret_payload = res[0].payload;
        results_free(res, 1);
        if (r < 0)
                return r;
        if (ret_tree)
                *ret_tree = TAKE_PTR(tree);
        return 0;
}

/* ---- payloads ---- */

static void build_unique_id(kmip_writer *w, const void *u) {
        kmip_writer_text(w, KMIP_TAG_UNIQUE_IDENTIFIER, u);
}

static const char *const info_attributes[] = {
        "Object Type", "State", "Name", "Initial Date", "Application Specific Information",
};

static void build_get_attributes(kmip_writer *w, const void *u) {
        kmip_writer_text(w, KMIP_TAG_UNIQUE_IDENTIFIER, u);
        for (size_t i = 0; i < ELEMENTSOF(info_attributes); i++)
                kmip_writer_text(w, KMIP_TAG_ATTRIBUTE_NAME, info_attributes[i]);
}

static void build_revoke(kmip_writer *w, const void *u) {
        kmip_writer_text(w, KMIP_TAG_UNIQUE_IDENTIFIER, u);
        kmip_writer_begin(w, KMIP_TAG_REVOCATION_REASON);
        kmip_writer_enum(w, KMIP_TAG_REVOCATION_REASON_CODE, REVOCATION_CESSATION_OF_OPERATION);
        kmip_writer_end(w);
}

static void write_object_type_attribute(kmip_writer *w) {
        write_attribute_name(w, "Object Type");
        kmip_writer_enum(w, KMIP_TAG_ATTRIBUTE_VALUE, OBJECT_TYPE_SYMMETRIC_KEY);
        kmip_writer_end(w);
}

static void write_name_attribute(kmip_writer *w, const char *name) {
        write_attribute_name(w, "Name");
        kmip_writer_begin(w, KMIP_TAG_ATTRIBUTE_VALUE);
        kmip_writer_text(w, KMIP_TAG_NAME_VALUE, name);
        kmip_writer_enum(w, KMIP_TAG_NAME_TYPE, NAME_TYPE_UNINTERPRETED_TEXT_STRING);
        kmip_writer_end(w);
        kmip_writer_end(w);
}

/* Locate: symmetric keys, with the name @u when not NULL. */
static void build_locate(kmip_writer *w, const void *u) {
        write_object_type_attribute(w);
        if (u)
                write_name_attribute(w, u);
}

struct create_args {
        const char *alias;
        const char *description;
};

static void build_create(kmip_writer *w, const void *u) {
        const struct create_args *a = u;

        kmip_writer_enum(w, KMIP_TAG_OBJECT_TYPE, OBJECT_TYPE_SYMMETRIC_KEY);
        kmip_writer_begin(w, KMIP_TAG_TEMPLATE_ATTRIBUTE);
        write_attribute_name(w, "Cryptographic Algorithm");
        kmip_writer_enum(w, KMIP_TAG_ATTRIBUTE_VALUE, ALGORITHM_AES);
        kmip_writer_end(w);
        write_attribute_name(w, "Cryptographic Length");
        kmip_writer_integer(w, KMIP_TAG_ATTRIBUTE_VALUE, 256);
        kmip_writer_end(w);
        write_attribute_name(w, "Cryptographic Usage Mask");
        kmip_writer_integer(w, KMIP_TAG_ATTRIBUTE_VALUE, USAGE_MASK_ENCRYPT | USAGE_MASK_DECRYPT);
        kmip_writer_end(w);
        if (a->alias)
                write_name_attribute(w, a->alias);
        if (a->description) {
                write_attribute_name(w, "Application Specific Information");
                kmip_writer_begin(w, KMIP_TAG_ATTRIBUTE_VALUE);
                kmip_writer_text(w, KMIP_TAG_APPLICATION_NAMESPACE, KMIP_DESCRIPTION_NAMESPACE);
                kmip_writer_text(w, KMIP_TAG_APPLICATION_DATA, a->description);
                kmip_writer_end(w);
                kmip_writer_end(w);
        }
        kmip_writer_end(w);
}

static void write_gcm_parameters(kmip_writer *w) {
        kmip_writer_begin(w, KMIP_TAG_CRYPTOGRAPHIC_PARAMETERS);
        kmip_writer_enum(w, KMIP_TAG_BLOCK_CIPHER_MODE, BLOCK_CIPHER_MODE_GCM);
        kmip_writer_enum(w, KMIP_TAG_CRYPTOGRAPHIC_ALGORITHM, ALGORITHM_AES);
        kmip_writer_integer(w, KMIP_TAG_TAG_LENGTH, GCM_TAG_SIZE);
        kmip_writer_end(w);
}

struct crypt_args {
        const char *id;
        const char *context;
        const uint8_t *data;
        size_t size;
        const uint8_t *nonce;
        const uint8_t *tag; /* Decrypt only */
};

static void build_encrypt(kmip_writer *w, const void *u) {
        const struct crypt_args *a = u;

        kmip_writer_text(w, KMIP_TAG_UNIQUE_IDENTIFIER, a->id);
        write_gcm_parameters(w);
        kmip_writer_bytes(w, KMIP_TAG_DATA, a->data, a->size);
        kmip_writer_bytes(w, KMIP_TAG_IV_COUNTER_NONCE, a->nonce, GCM_NONCE_SIZE);
        kmip_writer_bytes(w, KMIP_TAG_AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA, a->context, strlen(a->context));
}

static void build_decrypt(kmip_writer *w, const void *u) {
        const struct crypt_args *a = u;

        build_encrypt(w, u);
        kmip_writer_bytes(w, KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG, a->tag, GCM_TAG_SIZE);
}

/* ---- attributes ---- */

static bool text_eq(const kmip_item *i, const char *s) {
        size_t n = strlen(s);

        return i && i->type == KMIP_TYPE_TEXT_STRING && i->bytes.size == n && memcmp(i->bytes.data, s, n) == 0;
}

static kms_key_state state_from_kmip(uint32_t s) {
        switch (s) {
        case STATE_ACTIVE:
                return KMS_KEY_ENABLED;
        case STATE_PRE_ACTIVE:
        case STATE_DEACTIVATED:
        case STATE_COMPROMISED:
                return KMS_KEY_DISABLED;
        case STATE_DESTROYED:
        case STATE_DESTROYED_COMPROMISED:
                return KMS_KEY_DESTROYED;
        default:
                return _KMS_KEY_STATE_INVALID;
        }
}

static const char *kmip_state_to_string(uint32_t s) {
        static const char *const names[] = {
                [STATE_PRE_ACTIVE] = "Pre-Active",   [STATE_ACTIVE] = "Active",
                [STATE_DEACTIVATED] = "Deactivated", [STATE_COMPROMISED] = "Compromised",
                [STATE_DESTROYED] = "Destroyed",     [STATE_DESTROYED_COMPROMISED] = "Destroyed Compromised",
        };

        return s < ELEMENTSOF(names) && names[s] ? names[s] : "unknown";
}

/* Fills @ret from a Get Attributes response payload. -EPROTO, -ENOENT (not a symmetric key). */
static int parse_key_info(kmip_backend *k, const kmip_item *payload, kmip_key_info *ret) {
        _cleanup_free_ char *id = NULL, *alias = NULL, *description = NULL;
        const kmip_item *a = NULL;
        bool have_state = false;
        uint32_t state = 0, type = OBJECT_TYPE_SYMMETRIC_KEY;
        int64_t created = 0;
        int r;

        r = kmip_item_get_text(payload, KMIP_TAG_UNIQUE_IDENTIFIER, &id);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || isempty(id))
                return protocol_error(k, "Get Attributes without unique identifier");

        while ((a = kmip_item_next(payload, a, KMIP_TAG_ATTRIBUTE))) {
                const kmip_item *name = kmip_item_child(a, KMIP_TAG_ATTRIBUTE_NAME),
                                *value = kmip_item_child(a, KMIP_TAG_ATTRIBUTE_VALUE);

                if (!name || name->type != KMIP_TYPE_TEXT_STRING || !value)
                        return protocol_error(k, "attribute without name or value");
                if (text_eq(name, "State")) {
                        if (value->type != KMIP_TYPE_ENUMERATION)
                                return protocol_error(k, "State is not an enumeration");
                        state = value->enumeration;
                        have_state = true;
                } else if (text_eq(name, "Object Type")) {
                        if (value->type != KMIP_TYPE_ENUMERATION)
                                return protocol_error(k, "Object Type is not an enumeration");
                        type = value->enumeration;
                } else if (text_eq(name, "Initial Date")) {
                        if (value->type != KMIP_TYPE_DATE_TIME)
                                return protocol_error(k, "Initial Date is not a Date-Time");
                        created = value->long_integer;
                } else if (text_eq(name, "Name")) {
                        if (alias)
                                continue; /* the first name is the alias */
                        r = kmip_item_get_text(value, KMIP_TAG_NAME_VALUE, &alias);
                        if (r == -ENOMEM)
                                return r;
                        if (r < 0)
                                return protocol_error(k, "Name without a text value");
                } else if (text_eq(name, "Application Specific Information")) {
                        const kmip_item *ns = kmip_item_child(value, KMIP_TAG_APPLICATION_NAMESPACE);

                        if (description || !text_eq(ns, KMIP_DESCRIPTION_NAMESPACE))
                                continue;
                        r = kmip_item_get_text(value, KMIP_TAG_APPLICATION_DATA, &description);
                        if (r == -ENOMEM)
                                return r;
                        if (r < 0)
                                return protocol_error(k, "Application Specific Information without data");
                }
        }

        if (type != OBJECT_TYPE_SYMMETRIC_KEY)
                return kms_backend_set_error(&k->base, -ENOENT, "KMIP object %s is not a symmetric key", id);
        if (!have_state || state_from_kmip(state) < 0)
                return protocol_error(k, "key without a valid State");

        *ret = (kmip_key_info) {
                .key = {
                        .id = TAKE_PTR(id),
                        .alias = TAKE_PTR(alias),
                        .description = TAKE_PTR(description),
                        .state = state_from_kmip(state),
                        .created = created > 0 ? (usec_t) created * USEC_PER_SEC : 0,
                },
                .kmip_state = state,
        };
        return 0;
}

static int get_key_info(kmip_backend *k, const char *id, kmip_key_info *ret) {
        _cleanup_(kmip_tree_freep) kmip_tree *tree = NULL;
        const kmip_item *payload;
        int r;

        r = kmip_call_one(k, OP_GET_ATTRIBUTES, true, build_get_attributes, id, &tree, &payload);
        if (r == -ENOENT)
                return kms_backend_set_error(&k->base, r, "no key %s on KMIP server %s:%u", id, k->host, k->port);
        if (r < 0)
                return r;
        return parse_key_info(k, payload, ret);
}

/* Get Attributes for @n ids, batched. Keys that vanished or that this client may not see are
 * skipped. Returns how many were filled in @ret (sized @n). */
static int get_key_infos(kmip_backend *k, char *const *ids, size_t n, kmip_key_info *ret) {
        size_t filled = 0;
        int r;

        for (size_t start = 0; start < n; start += KMIP_GET_ATTRIBUTES_BATCH) {
                _cleanup_(kmip_tree_freep) kmip_tree *tree = NULL;
                size_t m = MIN(n - start, (size_t) KMIP_GET_ATTRIBUTES_BATCH);
                kmip_result *res = NULL;
                kmip_writer w = {};

                request_begin(&w, m);
                for (size_t i = 0; i < m; i++) {
                        item_begin(&w, OP_GET_ATTRIBUTES, i, m);
                        build_get_attributes(&w, ids[start + i]);
                        item_end(&w);
                }
                kmip_writer_end(&w);
                r = kmip_call(k, &w, m, true, &tree, &res);
                if (r < 0)
                        goto fail;

                for (size_t i = 0; i < m; i++) {
                        if (res[i].status != STATUS_SUCCESS &&
                            (res[i].reason == REASON_ITEM_NOT_FOUND || res[i].reason == REASON_PERMISSION_DENIED))
                                continue;
                        r = result_check(k, OP_GET_ATTRIBUTES, &res[i]);
                        if (r >= 0 && !res[i].payload)
                                r = protocol_error(k, "no response payload");
                        if (r >= 0)
                                r = parse_key_info(k, res[i].payload, &ret[filled]);
                        if (r == -ENOENT) /* not a symmetric key after all */
                                continue;
                        if (r < 0) {
                                results_free(res, m);
                                goto fail;
                        }
                        filled++;
                }
                results_free(res, m);
        }
        return (int) filled;

fail:
        for (size_t i = 0; i < filled; i++)
                key_info_done(&ret[i]);
        return r;
}

/* Locate symmetric keys, named @name when not NULL. */
static int locate(kmip_backend *k, const char *name, char ***ret, size_t *ret_n) {
        _cleanup_(kmip_tree_freep) kmip_tree *tree = NULL;
        const kmip_item *payload, *it = NULL;
        char **ids = NULL;
        size_t n = 0;
        int r;

        r = kmip_call_one(k, OP_LOCATE, true, build_locate, name, &tree, &payload);
        if (r < 0)
                return r;

        while ((it = kmip_item_next(payload, it, KMIP_TAG_UNIQUE_IDENTIFIER))) {
                char **a;

                a = reallocarray(ids, n + 1, sizeof(char *));
                if (!a) {
                        strv_free_n(ids, n);
                        return -ENOMEM;
                }
                ids = a;
                r = kmip_item_text_dup(it, &ids[n]);
                if (r >= 0 && isempty(ids[n])) {
                        free(ids[n]);
                        r = -EPROTO;
                }
                if (r < 0) {
                        strv_free_n(ids, n);
                        return r == -ENOMEM ? r : protocol_error(k, "bad unique identifier in Locate");
                }
                n++;
        }
        *ret = ids;
        *ret_n = n;
        return 0;
}

/* Orders keys by Initial Date, then id (numerically when both are numbers). */
static int cmp_key(const void *a, const void *b) {
        const kms_key *x = &((const kmip_key_info *) a)->key, *y = &((const kmip_key_info *) b)->key;
        size_t lx = strlen(x->id), ly = strlen(y->id);

        if (x->created != y->created)
                return x->created < y->created ? -1 : 1;
        if (lx != ly && strspn(x->id, "0123456789") == lx && strspn(y->id, "0123456789") == ly)
                return lx < ly ? -1 : 1;
        return strcmp(x->id, y->id);
}

/* All keys carrying @alias, oldest first. */
static int find_by_alias(kmip_backend *k, const char *alias, kmip_key_info **ret, size_t *ret_n) {
        kmip_key_info *infos;
        char **ids = NULL;
        size_t n = 0;
        int r;

        r = locate(k, alias, &ids, &n);
        if (r < 0)
                return r;
        if (n == 0) {
                free(ids);
                *ret = NULL;
                *ret_n = 0;
                return 0;
        }
        infos = calloc(n, sizeof(kmip_key_info));
        if (!infos) {
                strv_free_n(ids, n);
                return -ENOMEM;
        }
        r = get_key_infos(k, ids, n, infos);
        strv_free_n(ids, n);
        if (r < 0) {
                free(infos);
                return r;
        }
        n = (size_t) r;
        if (n > 1)
                qsort(infos, n, sizeof(kmip_key_info), cmp_key);
        *ret = infos;
        *ret_n = n;
        return 0;
}

static void key_infos_free(kmip_key_info *infos, size_t n) {
        for (size_t i = 0; i < n; i++)
                key_info_done(&infos[i]);
        free(infos);
}

static int get_by_alias(kmip_backend *k, const char *alias, kmip_key_info *ret) {
        kmip_key_info *infos = NULL;
        size_t n = 0, live = 0, pick = 0;
        int r;

        r = find_by_alias(k, alias, &infos, &n);
        if (r < 0)
                return r;
        if (n == 0)
                return kms_backend_set_error(&k->base, -ENOENT, "no key %s on KMIP server %s:%u", alias, k->host,
                                             k->port);
        /* Destroyed keys a server keeps around do not make a live alias ambiguous. */
        for (size_t i = 0; i < n; i++)
                if (infos[i].key.state != KMS_KEY_DESTROYED) {
                        live++;
                        pick = i;
                }
        if (n == 1 || live == 1) {
                *ret = infos[pick];
                infos[pick] = (kmip_key_info) {};
                key_infos_free(infos, n);
                return 0;
        }
        {
                char list[256] = "";
                size_t used = 0;

                for (size_t i = 0; i < n && used < sizeof list - 1; i++) {
                        int m = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", infos[i].key.id);
                        if (m < 0)
                                break;
                        used = MIN(used + (size_t) m, sizeof list - 1);
                }
                r = kms_backend_set_error(&k->base, -EINVAL,
                                          "alias %s names %zu keys on KMIP server %s:%u (ids %s): use a key id", alias,
                                          n, k->host, k->port, list);
        }
        key_infos_free(infos, n);
        return r;
}

static bool all_digits(const char *s) {
        return *s && strspn(s, "0123456789") == strlen(s);
}

/* By unique identifier or alias. Server ids are often numbers ("17") or UUIDs, which valid aliases
 * rarely look like: such refs are tried as ids first, others as aliases first. */
static int resolve(kmip_backend *k, const char *ref, kmip_key_info *ret) {
        bool alias_ok, alias_first;
        int r;

        if (isempty(ref) || strlen(ref) > 1024)
                return kms_backend_set_error(&k->base, -EINVAL, "invalid key reference");
        alias_ok = kms_alias_valid(ref);
        alias_first = alias_ok && !all_digits(ref);
        if (alias_first) {
                r = get_by_alias(k, ref, ret);
                if (r != -ENOENT)
                        return r;
        }
        r = get_key_info(k, ref, ret);
        if (r == -ENOENT && alias_ok && !alias_first)
                r = get_by_alias(k, ref, ret);
        if (r == -ENOENT)
                return kms_backend_set_error(&k->base, r, "no key %s on KMIP server %s:%u", ref, k->host, k->port);
        if (r == -EACCES)
                return kms_backend_set_error(&k->base, r, "KMIP server %s:%u denies this client access to key %s",
                                             k->host, k->port, ref);
        return r;
}

static void start_operation(kmip_backend *k) {
        k->deadline = now_monotonic() + k->timeout;
}

static int kmip_key_get(kms_backend *b, const char *ref, kms_key *ret) {
        kmip_backend *k = KMIP(b);
        kmip_key_info info = {};
        int r;

        start_operation(k);
        r = resolve(k, ref, &info);
        if (r < 0)
                return r;
        *ret = info.key;
        return 0;
}

static int kmip_key_list(kms_backend *b, kms_key **ret, size_t *ret_n) {
        kmip_backend *k = KMIP(b);
        kmip_key_info *infos;
        kms_key *keys;
        char **ids = NULL;
        size_t n = 0;
        int r;

        start_operation(k);
        r = locate(k, NULL, &ids, &n);
        if (r < 0)
                return r;
        if (n == 0) {
                free(ids);
                *ret = NULL;
                *ret_n = 0;
                return 0;
        }
        infos = calloc(n, sizeof(kmip_key_info));
        if (!infos) {
                strv_free_n(ids, n);
                return -ENOMEM;
        }
        r = get_key_infos(k, ids, n, infos);
        strv_free_n(ids, n);
        if (r < 0) {
                free(infos);
                return r;
        }
        n = (size_t) r;
        if (n > 1)
                qsort(infos, n, sizeof(kmip_key_info), cmp_key);

        keys = calloc(MAX(n, (size_t) 1), sizeof(kms_key));
        if (!keys) {
                key_infos_free(infos, n);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++)
                keys[i] = infos[i].key;
        free(infos);
        *ret = keys;
        *ret_n = n;
        return 0;
}

/* Best effort: takes a key we just created out of service again. */
static void discard_key(kmip_backend *k, const char *id, bool active) {
        _cleanup_free_ char *saved = kms_backend_error_take(&k->base);

        if (active)
                (void) kmip_call_one(k, OP_REVOKE, true, build_revoke, id, NULL, NULL);
        (void) kmip_call_one(k, OP_DESTROY, true, build_unique_id, id, NULL, NULL);
        /* Keep the reason of the failure that got us here. */
        kms_backend_error_put(&k->base, TAKE_PTR(saved));
}

/* After creating @mine under @alias: another host may have done the same meanwhile. The oldest key
 * (Initial Date, then id) wins and the others yield. The oldest cannot know whether the others
 * saw it (a key created after it looked would not), so when others are still there it waits a
 * moment for them to yield and then yields itself if they did not: a race can end with no key
 * (the next use creates one), never with two. 0 to keep @mine, -EEXIST to give it up. */
static int settle_alias_race(kmip_backend *k, const char *alias, const kmip_key_info *mine) {
        for (unsigned round = 0;; round++) {
                kmip_key_info *infos = NULL;
                const char *other = NULL;
                bool oldest = true;
                size_t n = 0;
                usec_t now, wait;
                int r;

                r = find_by_alias(k, alias, &infos, &n);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < n; i++) {
                        if (streq(infos[i].key.id, mine->key.id) || infos[i].key.state == KMS_KEY_DESTROYED)
                                continue;
                        if (!other)
                                other = infos[i].key.id;
                        if (cmp_key(&infos[i], mine) < 0)
                                oldest = false;
                }
                r = 0;
                if (other && (!oldest || round > 0))
                        r = kms_backend_set_error(&k->base, -EEXIST, "alias %s was created concurrently as key %s",
                                                  alias, other);
                key_infos_free(infos, n);
                if (!other || r < 0)
                        return r;

                now = now_monotonic();
                wait = now < k->deadline ? MIN((k->deadline - now) / 3, USEC_PER_SEC / 2) : 0;
                (void) usleep((useconds_t) wait);
        }
}

static int kmip_key_create(kms_backend *b, const char *alias, const char *description, kms_key *ret) {
        kmip_backend *k = KMIP(b);
        _cleanup_(kmip_tree_freep) kmip_tree *tree = NULL;
        _cleanup_free_ char *id = NULL;
        struct create_args args = { .alias = alias, .description = description };
        const kmip_item *payload;
        kmip_result *res = NULL;
        kmip_key_info info = {};
        kmip_writer w = {};
        int r;

        start_operation(k);

        if (alias) {
                char **ids = NULL;
                size_t n = 0;

                r = locate(k, alias, &ids, &n);
                if (r < 0)
                        return r;
                if (n > 0)
                        r = kms_backend_set_error(b, -EEXIST, "alias %s is already taken (key %s)", alias, ids[0]);
                strv_free_n(ids, n);
                if (r < 0)
                        return r;
        }

        /* Create is not idempotent: never resent after it may have reached the server. */
        r = kmip_call_one(k, OP_CREATE, false, build_create, &args, &tree, &payload);
        if (r < 0 && description &&
            IN_SET3(k->last_reason, REASON_APPLICATION_NAMESPACE_NOT_SUPPORTED, REASON_INVALID_FIELD,
                    REASON_FEATURE_NOT_SUPPORTED)) {
                /* The server refused (so did not create anything), perhaps because of our
                 * Application Specific Information: try again without the description. */
                args.description = NULL;
                r = kmip_call_one(k, OP_CREATE, false, build_create, &args, &tree, &payload);
        }
        if (r < 0)
                return r;
        r = kmip_item_get_text(payload, KMIP_TAG_UNIQUE_IDENTIFIER, &id);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || isempty(id))
                return protocol_error(k, "Create without unique identifier");
        tree = kmip_tree_free(tree);

        /* Activate, then read back what the server recorded, in one round trip. */
        request_begin(&w, 2);
        item_begin(&w, OP_ACTIVATE, 0, 2);
        build_unique_id(&w, id);
        item_end(&w);
        item_begin(&w, OP_GET_ATTRIBUTES, 1, 2);
        build_get_attributes(&w, id);
        item_end(&w);
        kmip_writer_end(&w);
        r = kmip_call(k, &w, 2, false, &tree, &res);
        if (r >= 0) {
                r = result_check(k, OP_ACTIVATE, &res[0]);
                if (r >= 0)
                        r = result_check(k, OP_GET_ATTRIBUTES, &res[1]);
                if (r >= 0 && !res[1].payload)
                        r = protocol_error(k, "no response payload");
                if (r >= 0)
                        r = parse_key_info(k, res[1].payload, &info);
                results_free(res, 2);
        }
        if (r < 0) {
                if (r != -EHOSTDOWN)
                        discard_key(k, id, false);
                return r;
        }

        if (alias) {
                r = settle_alias_race(k, alias, &info);
                if (r == -EEXIST)
                        discard_key(k, info.key.id, true);
                if (r < 0) {
                        key_info_done(&info);
                        return r;
                }
        }

        *ret = info.key;
        return 0;
}

static int kmip_key_set_enabled(kms_backend *b, const char *id, bool enabled) {
        kmip_backend *k = KMIP(b);
        kmip_key_info info = {};
        uint32_t state;
        int r;

        start_operation(k);
        r = get_key_info(k, id, &info);
        if (r < 0)
                return r;
        state = info.kmip_state;
        key_info_done(&info);

        if (state == STATE_DESTROYED || state == STATE_DESTROYED_COMPROMISED)
                return kms_backend_set_error(b, -EKEYREJECTED, "cannot %s key %s: it is destroyed (KMIP state %s)",
                                             enabled ? "enable" : "disable", id, kmip_state_to_string(state));
        if (enabled) {
                if (state == STATE_ACTIVE)
                        return 0;
                if (state != STATE_PRE_ACTIVE)
                        return kms_backend_set_error(b, -EOPNOTSUPP,
                                                     "cannot enable key %s: it was revoked (KMIP state %s) and KMIP "
                                                     "has no way back to Active; create a new key",
                                                     id, kmip_state_to_string(state));
                return kmip_call_one(k, OP_ACTIVATE, false, build_unique_id, id, NULL, NULL);
        }
        if (state != STATE_ACTIVE)
                return 0; /* Pre-Active, Deactivated and Compromised keys are already unusable */
        return kmip_call_one(k, OP_REVOKE, true, build_revoke, id, NULL, NULL);
}

static int kmip_key_schedule_deletion(kms_backend *b, const char *id, unsigned days, kms_key *ret) {
        return kms_backend_set_error(b, -EOPNOTSUPP,
                                     "KMIP has no scheduled key deletion: disable the key, and destroy it with the "
                                     "KMIP server's tools once no volume needs it");
}

static int kmip_key_cancel_deletion(kms_backend *b, const char *id) {
        return kms_backend_set_error(b, -EOPNOTSUPP, "KMIP has no scheduled key deletion to cancel");
}

/* After Permission Denied on @id: the key's state explains it, or the server's policy does. */
static int explain_denied(kmip_backend *k, const char *id, const char *what) {
        _cleanup_free_ char *saved = kms_backend_error_take(&k->base);
        kmip_key_info info = {};
        int r;

        r = get_key_info(k, id, &info);
        if (r < 0) {
                if (r != -EACCES)
                        return r;
                kms_backend_error_put(&k->base, TAKE_PTR(saved));
                return -EACCES;
        }
        r = kms_key_state_to_errno(info.key.state);
        if (r < 0)
                r = kms_backend_set_error(&k->base, r, "cannot %s with key %s: it is %s (KMIP state %s)", what, id,
                                          kms_key_state_to_string(info.key.state),
                                          kmip_state_to_string(info.kmip_state));
        else {
                kms_backend_error_put(&k->base, TAKE_PTR(saved));
                r = -EACCES;
        }
        key_info_done(&info);
        return r;
}

static int check_id(kmip_backend *k, const char *id) {
        size_t n = strlen(id);

        if (n == 0 || n > KMIP_ID_MAX)
                return kms_backend_set_error(&k->base, -EINVAL, "not a KMIP key id: %s", id);
        return 0;
}

static int kmip_wrap(kms_backend *b, const char *id, const char *context, const secret *plain, uint8_t **ret,
                     size_t *ret_size) {
        kmip_backend *k = KMIP(b);
        _cleanup_(kmip_tree_freep) kmip_tree *tree = NULL;
        uint8_t nonce[GCM_NONCE_SIZE], *out;
        const uint8_t *ct, *tag, *iv;
        size_t ct_size, tag_size, iv_size, id_size, size;
        const kmip_item *payload;
        int r;

        r = check_id(k, id);
        if (r < 0)
                return r;
        if (!context || !plain || plain->size == 0)
                return kms_backend_set_error(b, -EINVAL, "nothing to wrap");
        id_size = strlen(id);
        size = 4 + 1 + id_size + GCM_NONCE_SIZE + GCM_TAG_SIZE + plain->size;
        if (size > KMS_WRAPPED_MAX)
                return kms_backend_set_error(b, -EINVAL, "key of %zu bytes is too large to wrap", plain->size);

        r = crypto_random(nonce, sizeof nonce);
        if (r < 0)
                return r;

        start_operation(k);
        r = kmip_call_one(k, OP_ENCRYPT, true, build_encrypt,
                          &(struct crypt_args) { .id = id, .context = context, .data = plain->data, .size = plain->size,
                                                 .nonce = nonce },
                          &tree, &payload);
        if (r == -EACCES)
                return explain_denied(k, id, "wrap");
        if (r == -ENOENT)
                return kms_backend_set_error(b, r, "no key %s on KMIP server %s:%u", id, k->host, k->port);
        if (r < 0)
                return r;

        if (kmip_item_get_bytes(payload, KMIP_TAG_DATA, &ct, &ct_size) < 0 || ct_size != plain->size)
                return protocol_error(k, "Encrypt returned no ciphertext of the right size");
        r = kmip_item_get_bytes(payload, KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG, &tag, &tag_size);
        if (r < 0 || tag_size != GCM_TAG_SIZE)
                return protocol_error(k, "Encrypt returned no 16-byte authentication tag");
        r = kmip_item_get_bytes(payload, KMIP_TAG_IV_COUNTER_NONCE, &iv, &iv_size);
        if (r == -EPROTO || (r >= 0 && (iv_size != GCM_NONCE_SIZE || memcmp(iv, nonce, GCM_NONCE_SIZE) != 0)))
                return protocol_error(k, "Encrypt used another nonce than ours");

        out = malloc(size);
        if (!out)
                return -ENOMEM;
        memcpy(out, WRAP_MAGIC, 4);
        out[4] = (uint8_t) id_size;
        memcpy(out + 5, id, id_size);
        memcpy(out + 5 + id_size, nonce, GCM_NONCE_SIZE);
        memcpy(out + 5 + id_size + GCM_NONCE_SIZE, tag, GCM_TAG_SIZE);
        memcpy(out + 5 + id_size + GCM_NONCE_SIZE + GCM_TAG_SIZE, ct, ct_size);
        *ret = out;
        *ret_size = size;
        return 0;
}

static int kmip_unwrap(kms_backend *b, const char *id, const char *context, const uint8_t *wrapped, size_t size,
                       secret **ret) {
        kmip_backend *k = KMIP(b);
        _cleanup_(kmip_tree_freep) kmip_tree *tree = NULL;
        const uint8_t *plain, *p;
        size_t plain_size, id_size, ct_size;
        const kmip_item *payload;
        int r;

        r = check_id(k, id);
        if (r < 0)
                return r;
        if (!context)
                return kms_backend_set_error(b, -EINVAL, "no context to unwrap with");
        if (size < 5 || memcmp(wrapped, WRAP_MAGIC, 4) != 0)
                return kms_backend_set_error(b, -EBADMSG, "wrapped key is not in the KMIP backend's format");
        id_size = wrapped[4];
        if (id_size == 0 || size <= 5 + id_size + GCM_NONCE_SIZE + GCM_TAG_SIZE)
                return kms_backend_set_error(b, -EBADMSG, "wrapped key is truncated");
        if (id_size != strlen(id) || memcmp(wrapped + 5, id, id_size) != 0)
                return kms_backend_set_error(b, -EXDEV, "wrapped key belongs to KMIP key %.*s, not %s", (int) id_size,
                                             (const char *) wrapped + 5, id);
        p = wrapped + 5 + id_size;
        ct_size = size - 5 - id_size - GCM_NONCE_SIZE - GCM_TAG_SIZE;

        start_operation(k);
        r = kmip_call_one(k, OP_DECRYPT, true, build_decrypt,
                          &(struct crypt_args){.id = id,
                                               .context = context,
                                               .data = p + GCM_NONCE_SIZE + GCM_TAG_SIZE,
                                               .size = ct_size,
                                               .nonce = p,
                                               .tag = p + GCM_NONCE_SIZE},
                          &tree, &payload);
        if (r == -EACCES)
                return explain_denied(k, id, "unwrap");
        if (r == -ENOENT)
                return kms_backend_set_error(b, r, "no key %s on KMIP server %s:%u", id, k->host, k->port);
        if (r < 0)
                return r;

        if (kmip_item_get_bytes(payload, KMIP_TAG_DATA, &plain, &plain_size) < 0 || plain_size != ct_size)
                return protocol_error(k, "Decrypt returned no plaintext of the right size");
        return secret_new_copy(plain, plain_size, ret);
}

/* ---- rotation ---- */

#define KMIP_TAG_QUERY_FUNCTION 0x420074U
#define QUERY_OPERATIONS 1U

static void build_query_operations(kmip_writer *w, const void *u) {
        kmip_writer_enum(w, KMIP_TAG_QUERY_FUNCTION, QUERY_OPERATIONS);
}

/* Whether the server lists ReKey among its operations (KMIP Query, Query Operations). */
static int server_offers_rekey(kmip_backend *k) {
        _cleanup_(kmip_tree_freep) kmip_tree *tree = NULL;
        const kmip_item *payload = NULL, *op = NULL;
        int r;

        r = kmip_call_one(k, OP_QUERY, true, build_query_operations, NULL, &tree, &payload);
        if (r < 0)
                return r;
        while ((op = kmip_item_next(payload, op, KMIP_TAG_OPERATION)))
                if (op->type == KMIP_TYPE_ENUMERATION && op->enumeration == OP_REKEY)
                        return 1;
        return 0;
}

/* A rotation would be ReKey (a replacement key linked to the old one, unwrap following the links). Where the
 * server does not offer ReKey (PyKMIP), rotation is refused with that reason; where it does, this backend does
 * not map it yet and says so: it never emulates a rotation with a second, unlinked key. */
static int kmip_key_rotate(kms_backend *b, const char *id, kms_key *ret) {
        kmip_backend *k = KMIP(b);
        int r;

        start_operation(k);
        r = server_offers_rekey(k);
        if (r < 0)
                return r;
        if (r == 0)
                return kms_backend_set_error(b, -EOPNOTSUPP,
                                             "rotation is not supported by backend %s (KMIP server has no ReKey)",
                                             b->name);
        return kms_backend_set_error(b, -EOPNOTSUPP,
                                     "rotation is not supported by backend %s (the KMIP server offers ReKey, which "
                                     "evs-cryptd does not use yet)",
                                     b->name);
}

const kms_backend_ops kms_kmip_ops = {
        .type = "kmip",
        .thread_safe = false, /* one TLS connection per instance */
        .unwrap_checks_state = true,
        .open = kmip_open,
        .free = kmip_free,
        .key_create = kmip_key_create,
        .key_list = kmip_key_list,
        .key_get = kmip_key_get,
        .key_set_enabled = kmip_key_set_enabled,
        .key_schedule_deletion = kmip_key_schedule_deletion,
        .key_cancel_deletion = kmip_key_cancel_deletion,
        .wrap = kmip_wrap,
        .unwrap = kmip_unwrap,
        .key_rotate = kmip_key_rotate,
};
