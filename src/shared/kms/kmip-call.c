/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The KMIP backend: requests, one round trip, result reasons, payloads (see kmip-internal.h). */

#include "kmip-internal.h"

void kmip_results_free(kmip_result *res, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(res[i].message);
        free(res);
}

void kmip_strv_free_n(char **v, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

void kmip_key_info_done(kmip_key_info *i) {
        kms_key_done(&i->key);
        i->kmip_state = 0;
        i->replacement = mfree(i->replacement);
        i->replaced = mfree(i->replaced);
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

void kmip_request_begin(kmip_writer *w, size_t n_items) {
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
void kmip_item_begin(kmip_writer *w, uint32_t op, size_t index, size_t n_items) {
        kmip_writer_begin(w, KMIP_TAG_BATCH_ITEM);
        kmip_writer_enum(w, KMIP_TAG_OPERATION, op);
        if (n_items > 1) {
                uint8_t id[4] = { (uint8_t) (index >> 24), (uint8_t) (index >> 16), (uint8_t) (index >> 8),
                                  (uint8_t) index };
                kmip_writer_bytes(w, KMIP_TAG_UNIQUE_BATCH_ITEM_ID, id, sizeof id);
        }
        kmip_writer_begin(w, KMIP_TAG_REQUEST_PAYLOAD);
}

void kmip_item_end(kmip_writer *w) {
        kmip_writer_end(w); /* payload */
        kmip_writer_end(w); /* batch item */
}

static void write_attribute_name(kmip_writer *w, const char *name) {
        kmip_writer_begin(w, KMIP_TAG_ATTRIBUTE);
        kmip_writer_text(w, KMIP_TAG_ATTRIBUTE_NAME, name);
}

int kmip_protocol_error(kmip_backend *k, const char *what) {
        kmip_conn_disconnect(k->conn); /* whatever it was, do not build on it */
        return kms_backend_set_error(&k->base, -EPROTO, "KMIP server %s:%u sent a malformed reply: %s", k->host,
                                     k->port, what);
}

static int map_failure(kmip_backend *k, uint32_t op, const kmip_result *res);

/* Sends the request in @w (with @n_items batch items), decodes the response and matches its batch
 * items to ours. A failure that concerns the whole message (the server could not read it, or did
 * not accept the client) is returned as an error; per-item results are left to the caller, whose
 * items without an answer have status STATUS_MISSING. */
int kmip_call(kmip_backend *k, kmip_writer *w, size_t n_items, bool idempotent, kmip_tree **ret_tree,
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
                return kmip_protocol_error(k, strna(kmip_conn_error(k->conn)));
        if (r < 0)
                return r;

        r = kmip_ttlv_decode(resp, resp_size, &tree);
        erase_and_free(resp, resp_size);
        if (r == -EPROTO)
                return kmip_protocol_error(k, "bad TTLV encoding");
        if (r < 0)
                return r;

        if (kmip_item_get_structure(&tree->root, KMIP_TAG_RESPONSE_HEADER, &header) < 0 ||
            kmip_item_get_structure(header, KMIP_TAG_PROTOCOL_VERSION, &version) < 0 ||
            kmip_item_get_integer(version, KMIP_TAG_PROTOCOL_VERSION_MAJOR, &major) < 0 ||
            kmip_item_get_integer(header, KMIP_TAG_BATCH_COUNT, &count) < 0)
                return kmip_protocol_error(k, "no valid response header");
        if (major != 1)
                return kmip_protocol_error(k, "not KMIP 1.x");
        while ((bi = kmip_item_next(&tree->root, bi, KMIP_TAG_BATCH_ITEM)))
                n_answers++;
        if (count < 1 || (size_t) count != n_answers || n_answers > n_items)
                return kmip_protocol_error(k, "batch count does not match the request");

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
                        kmip_results_free(res, n_items);
                        return kmip_protocol_error(k, "batch item without result status");
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
                        kmip_results_free(res, n_items);
                        r = map_failure(k, 0, &whole);
                        free(whole.message);
                        return r;
                }
                if (r < 0) {
                        kmip_results_free(res, n_items);
                        return kmip_protocol_error(k, "batch item without operation");
                }
                if (n_items > 1) {
                        if (kmip_item_get_bytes(bi, KMIP_TAG_UNIQUE_BATCH_ITEM_ID, &id, &id_size) < 0 || id_size != 4) {
                                kmip_results_free(res, n_items);
                                return kmip_protocol_error(k, "batch item without our batch item id");
                        }
                        index = (size_t) id[0] << 24 | (size_t) id[1] << 16 | (size_t) id[2] << 8 | id[3];
                }
                if (index >= n_items || res[index].status != STATUS_MISSING) {
                        kmip_results_free(res, n_items);
                        return kmip_protocol_error(k, "batch item id out of range");
                }
                if (x.status != STATUS_SUCCESS) {
                        if (kmip_item_get_enum(bi, KMIP_TAG_RESULT_REASON, &x.reason) < 0)
                                x.reason = 0;
                        it = kmip_item_child(bi, KMIP_TAG_RESULT_MESSAGE);
                        if (it && it->type == KMIP_TYPE_TEXT_STRING) {
                                x.message = sanitize_message(it);
                                if (!x.message) {
                                        kmip_results_free(res, n_items);
                                        return -ENOMEM;
                                }
                        }
                }
                it = kmip_item_child(bi, KMIP_TAG_RESPONSE_PAYLOAD);
                if (it && it->type != KMIP_TYPE_STRUCTURE) {
                        free(x.message);
                        kmip_results_free(res, n_items);
                        return kmip_protocol_error(k, "response payload is not a structure");
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
                return kmip_protocol_error(k, "no answer to a batch item");
        if (res->status == STATUS_OPERATION_PENDING)
                return kmip_protocol_error(k, "asynchronous answer to a synchronous request");
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
int kmip_result_check(kmip_backend *k, uint32_t op, const kmip_result *res) {
        if (res->status != STATUS_SUCCESS)
                return map_failure(k, op, res);
        if (res->operation != op)
                return kmip_protocol_error(k, "answer for another operation");
        return 0;
}

/* Runs a request with a single batch item whose payload @build writes. */
int kmip_call_one(kmip_backend *k, uint32_t op, bool idempotent, void (*build)(kmip_writer *w, const void *u),
                         const void *userdata, kmip_tree **ret_tree, const kmip_item **ret_payload) {
        _cleanup_(kmip_tree_freep) kmip_tree *tree = NULL;
        kmip_writer w = {};
        kmip_result *res = NULL;
        int r;

        kmip_request_begin(&w, 1);
        kmip_item_begin(&w, op, 0, 1);
        build(&w, userdata);
        kmip_item_end(&w);
        kmip_writer_end(&w);

        r = kmip_call(k, &w, 1, idempotent, &tree, &res);
        if (r < 0)
                return r;
        r = kmip_result_check(k, op, &res[0]);
        if (r >= 0 && !res[0].payload && ret_payload)
                r = kmip_protocol_error(k, "no response payload");
        if (r >= 0 && ret_payload)
                *ret_payload = res[0].payload;
        kmip_results_free(res, 1);
        if (r < 0)
                return r;
        if (ret_tree)
                *ret_tree = TAKE_PTR(tree);
        return 0;
}

/* ---- payloads ---- */

void kmip_build_unique_id(kmip_writer *w, const void *u) {
        kmip_writer_text(w, KMIP_TAG_UNIQUE_IDENTIFIER, u);
}

static const char *const info_attributes[] = {
        "Object Type", "State", "Name", "Initial Date", "Application Specific Information", "Link",
};

void kmip_build_get_attributes(kmip_writer *w, const void *u) {
        kmip_writer_text(w, KMIP_TAG_UNIQUE_IDENTIFIER, u);
        for (size_t i = 0; i < ELEMENTSOF(info_attributes); i++)
                kmip_writer_text(w, KMIP_TAG_ATTRIBUTE_NAME, info_attributes[i]);
}

void kmip_build_revoke(kmip_writer *w, const void *u) {
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
void kmip_build_locate(kmip_writer *w, const void *u) {
        write_object_type_attribute(w);
        if (u)
                write_name_attribute(w, u);
}


void kmip_build_create(kmip_writer *w, const void *u) {
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


void kmip_build_encrypt(kmip_writer *w, const void *u) {
        const struct crypt_args *a = u;

        kmip_writer_text(w, KMIP_TAG_UNIQUE_IDENTIFIER, a->id);
        write_gcm_parameters(w);
        kmip_writer_bytes(w, KMIP_TAG_DATA, a->data, a->size);
        kmip_writer_bytes(w, KMIP_TAG_IV_COUNTER_NONCE, a->nonce, GCM_NONCE_SIZE);
        kmip_writer_bytes(w, KMIP_TAG_AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA, a->context, strlen(a->context));
}

void kmip_build_decrypt(kmip_writer *w, const void *u) {
        const struct crypt_args *a = u;

        kmip_build_encrypt(w, u);
        kmip_writer_bytes(w, KMIP_TAG_AUTHENTICATED_ENCRYPTION_TAG, a->tag, GCM_TAG_SIZE);
}

/* ReKey of the key @u, the replacement active at once (Offset 0: its Activation Date is its Initial Date). */
void kmip_build_rekey(kmip_writer *w, const void *u) {
        kmip_writer_text(w, KMIP_TAG_UNIQUE_IDENTIFIER, u);
        kmip_writer_interval(w, KMIP_TAG_OFFSET, 0);
}
