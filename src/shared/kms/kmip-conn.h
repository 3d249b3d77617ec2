/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* One TLS connection to a KMIP server (KMIP 1.4 profiles: TLS 1.2 or later, mutual authentication).
 * The server certificate is verified against CAFile and its name (DNS name, or IP address when the
 * name is one) against ServerName. The connection is opened on first use, kept open between calls
 * and reopened when it dropped. All I/O runs on a non-blocking socket with poll(), bounded by a
 * deadline the caller passes (CLOCK_MONOTONIC): no call outlives it. Host names are resolved on a
 * short-lived helper thread under the same deadline (getaddrinfo() has no timeout). */

#include <stdbool.h>
#include <stdint.h>

#include "macro.h"
#include "time-util.h"

typedef struct kmip_conn_config {
        const char *host;
        uint16_t port;
        const char *server_name; /* name checked against the server certificate */
        const char *ca_file;
        const char *cert_file;
        const char *key_file;
} kmip_conn_config;

typedef struct kmip_conn kmip_conn;

typedef enum kmip_conn_file {
        KMIP_CONN_FILE_CA,
        KMIP_CONN_FILE_CERTIFICATE,
        KMIP_CONN_FILE_KEY,
} kmip_conn_file;

/* Copies @cfg and checks that the CA, certificate and key files load and that the key matches the
 * certificate; contacts nobody. -EINVAL with *ret_error naming the file and the reason and
 * *ret_bad_file saying which one it is, -ENOMEM. The files are read again at each connection, so
 * renewed certificates are picked up. */
int kmip_conn_new(const kmip_conn_config *cfg, kmip_conn **ret, char **ret_error, kmip_conn_file *ret_bad_file);
kmip_conn *kmip_conn_free(kmip_conn *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(kmip_conn *, kmip_conn_free);

/* Sends the request message @req and returns the response message (a whole TTLV ResponseMessage,
 * size-checked, not yet decoded; wipe it with erase_and_free()). Connects when needed. When a
 * reused connection turns out to be dead, reconnects once and resends; after the request may have
 * reached the server, that happens only when @idempotent. Errors: -EHOSTDOWN (cannot resolve,
 * connect, handshake, verify, send or receive before @deadline), -EPROTO (the response does not
 * start like a ResponseMessage of at most KMIP_TTLV_MESSAGE_MAX bytes), -ENOMEM. The reason is
 * left in kmip_conn_error(). */
int kmip_conn_call(kmip_conn *c, const uint8_t *req, size_t req_size, usec_t deadline, bool idempotent,
                   uint8_t **ret, size_t *ret_size);

/* The reason of the last failure, or NULL. */
const char *kmip_conn_error(const kmip_conn *c);

/* Closes the connection (a later call reconnects). */
void kmip_conn_disconnect(kmip_conn *c);
