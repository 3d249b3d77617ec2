/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/socket.h>

#include "kmip-conn.h"
#include "kmip-ttlv.h"
#include "secret.h"

struct kmip_conn {
        char *host;
        char *server_name;
        char *ca_file;
        char *cert_file;
        char *key_file;
        uint16_t port;

        int fd;
        SSL_CTX *ctx;
        SSL *ssl;
        char *error;
};

DEFINE_TRIVIAL_CLEANUP_FUNC(SSL_CTX *, SSL_CTX_free);

/* Internal failures carry their own errno (-ETIMEDOUT, -ECONNRESET, ...) so that the retry logic
 * can tell them apart; kmip_conn_call() reports them all as -EHOSTDOWN. */
_printf_(3, 4) static int conn_fail(kmip_conn *c, int r, const char *fmt, ...) {
        va_list ap;
        char *s = NULL;

        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                s = NULL;
        va_end(ap);
        free(c->error);
        c->error = s;
        return r;
}

/* The most specific OpenSSL reason for the failure just seen, "" when the queue is empty. Returns
 * that error code (0 when none). */
static unsigned long ssl_reason(char *buf, size_t size) {
        unsigned long e, last = 0;

        while ((e = ERR_get_error()) != 0)
                last = e;
        if (last == 0)
                buf[0] = 0;
        else
                ERR_error_string_n(last, buf, size);
        return last;
}

static int no_passphrase_cb(char *buf, int size, int rwflag, void *userdata) {
        /* An encrypted KeyFile= fails instead of prompting on a terminal. */
        return -1;
}

/* Builds a client context from the configured files. */
static int make_ctx(kmip_conn *c, SSL_CTX **ret, char **ret_error, kmip_conn_file *ret_bad_file) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *ctx = NULL;
        char reason[256];

        ERR_clear_error();
        ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx)
                return -ENOMEM;
        /* KMIP 1.4 profiles require TLS 1.2 or later. */
        if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
                return -EIO;
        SSL_CTX_set_default_passwd_cb(ctx, no_passphrase_cb);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);

        if (SSL_CTX_load_verify_locations(ctx, c->ca_file, NULL) != 1) {
                *ret_bad_file = KMIP_CONN_FILE_CA;
                ssl_reason(reason, sizeof reason);
                if (asprintf(ret_error, "cannot load CA certificates from %s: %s", c->ca_file, reason) < 0)
                        return -ENOMEM;
                return -EINVAL;
        }
        if (SSL_CTX_use_certificate_chain_file(ctx, c->cert_file) != 1) {
                *ret_bad_file = KMIP_CONN_FILE_CERTIFICATE;
                ssl_reason(reason, sizeof reason);
                if (asprintf(ret_error, "cannot load client certificate %s: %s", c->cert_file, reason) < 0)
                        return -ENOMEM;
                return -EINVAL;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, c->key_file, SSL_FILETYPE_PEM) != 1) {
                unsigned long e;

                *ret_bad_file = KMIP_CONN_FILE_KEY;
                e = ssl_reason(reason, sizeof reason);
                if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH) {
                        if (asprintf(ret_error, "private key %s does not match certificate %s", c->key_file,
                                     c->cert_file) < 0)
                                return -ENOMEM;
                        return -EINVAL;
                }
                if (asprintf(ret_error, "cannot load private key %s (an encrypted key is not supported): %s",
                             c->key_file, reason) < 0)
                        return -ENOMEM;
                return -EINVAL;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
                *ret_bad_file = KMIP_CONN_FILE_KEY;
                ssl_reason(reason, sizeof reason);
                if (asprintf(ret_error, "private key %s does not match certificate %s", c->key_file,
                             c->cert_file) < 0)
                        return -ENOMEM;
                return -EINVAL;
        }
        *ret = TAKE_PTR(ctx);
        return 0;
}

int kmip_conn_new(const kmip_conn_config *cfg, kmip_conn **ret, char **ret_error, kmip_conn_file *ret_bad_file) {
        kmip_conn *c;
        int r;

        if (!cfg->host || !cfg->server_name || !cfg->ca_file || !cfg->cert_file || !cfg->key_file || cfg->port == 0)
                return -EINVAL;

        c = calloc(1, sizeof(kmip_conn));
        if (!c)
                return -ENOMEM;
        c->fd = -EBADF;
        c->port = cfg->port;
        c->host = strdup(cfg->host);
        c->server_name = strdup(cfg->server_name);
        c->ca_file = strdup(cfg->ca_file);
        c->cert_file = strdup(cfg->cert_file);
        c->key_file = strdup(cfg->key_file);
        if (!c->host || !c->server_name || !c->ca_file || !c->cert_file || !c->key_file) {
                kmip_conn_free(c);
                return -ENOMEM;
        }

        /* Checked now so that a bad file is a configuration error, not a runtime one. */
        r = make_ctx(c, &c->ctx, ret_error, ret_bad_file);
        if (r < 0) {
                kmip_conn_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

void kmip_conn_disconnect(kmip_conn *c) {
        if (!c)
                return;
        if (c->ssl) {
                /* No SSL_shutdown(): it could block or raise SIGPIPE on a dead peer, and KMIP
                 * messages are self-delimiting, so truncation cannot go unnoticed. */
                SSL_free(c->ssl);
                c->ssl = NULL;
        }
        c->fd = safe_close(c->fd);
}

kmip_conn *kmip_conn_free(kmip_conn *c) {
        if (!c)
                return NULL;
        kmip_conn_disconnect(c);
        SSL_CTX_free(c->ctx);
        free(c->host);
        free(c->server_name);
        free(c->ca_file);
        free(c->cert_file);
        free(c->key_file);
        free(c->error);
        free(c);
        return NULL;
}

const char *kmip_conn_error(const kmip_conn *c) {
        return c ? c->error : NULL;
}

/* Waits for @events on the socket until @deadline. -ETIMEDOUT, -errno of poll. */
static int wait_fd(int fd, short events, usec_t deadline) {
        for (;;) {
                struct pollfd p = { .fd = fd, .events = events };
                usec_t n = now_monotonic();
                int r;

                if (n >= deadline)
                        return -ETIMEDOUT;
                /* Round up: never wake before the deadline and spin. */
                r = poll(&p, 1, (int) MIN((deadline - n + 999) / 1000, (usec_t) INT32_MAX));
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (r > 0)
                        return 0; /* readable, writable, or an error the next call reports */
        }
}

/* SIGPIPE: OpenSSL writes with write(2), which raises SIGPIPE on a connection the peer closed.
 * A library must not kill its host process nor touch its signal dispositions, so the signal is
 * blocked in this thread around TLS I/O and a SIGPIPE raised meanwhile is consumed. */
typedef struct sigpipe_guard {
        sigset_t old;
        bool was_pending;
} sigpipe_guard;

static void sigpipe_block(sigpipe_guard *g) {
        sigset_t set, pending;

        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        (void) pthread_sigmask(SIG_BLOCK, &set, &g->old);
        g->was_pending = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1;
}

static void sigpipe_restore(sigpipe_guard *g) {
        if (!g->was_pending) {
                const struct timespec zero = {};
                sigset_t set;

                sigemptyset(&set);
                sigaddset(&set, SIGPIPE);
                while (sigtimedwait(&set, NULL, &zero) > 0)
                        ;
        }
        (void) pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* After an SSL_* call returned @ret <= 0: waits when it wants I/O (returns 0 to retry), else
 * returns the failure with a reason mentioning @what. */
static int ssl_wait(kmip_conn *c, int ret, usec_t deadline, const char *what) {
        int e = SSL_get_error(c->ssl, ret), saved_errno = errno, r;
        char reason[256];

        switch (e) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE:
                r = wait_fd(c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline);
                if (r == -ETIMEDOUT)
                        return conn_fail(c, r, "%s timed out (server %s:%u)", what, c->host, c->port);
                if (r < 0)
                        return conn_fail(c, r, "poll() failed during %s: %s", what, strerror(-r));
                return 0;
        case SSL_ERROR_ZERO_RETURN:
                return conn_fail(c, -ECONNRESET, "%s: the server closed the connection", what);
        case SSL_ERROR_SYSCALL:
                ssl_reason(reason, sizeof reason);
                if (saved_errno == 0 || saved_errno == EAGAIN)
                        return conn_fail(c, -ECONNRESET, "%s: the server closed the connection%s%s", what,
                                         reason[0] ? ": " : "", reason);
                return conn_fail(c, -saved_errno, "%s: %s", what, strerror(saved_errno));
        default: {
                long v = SSL_get_verify_result(c->ssl);
                unsigned long last = ssl_reason(reason, sizeof reason);

                /* OpenSSL 3 reports a TCP close without close_notify this way. */
                if (ERR_GET_LIB(last) == ERR_LIB_SSL && ERR_GET_REASON(last) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
                        return conn_fail(c, -ECONNRESET, "%s: the server closed the connection", what);
                if (v != X509_V_OK)
                        return conn_fail(
                                c, -EPROTO, "%s: server certificate of %s:%u not accepted (%s, expected name %s): %s",
                                what, c->host, c->port, X509_verify_cert_error_string(v), c->server_name, reason);
                return conn_fail(c, -EPROTO, "%s with %s:%u failed: %s", what, c->host, c->port,
                                 reason[0] ? reason : "TLS error");
        }
        }
}

static bool is_ip_address(const char *s) {
        union {
                struct in_addr a4;
                struct in6_addr a6;
        } buf;

        return inet_pton(AF_INET, s, &buf) == 1 || inet_pton(AF_INET6, s, &buf) == 1;
}

/* A name lookup on a thread of its own, so that it can be abandoned at the deadline: getaddrinfo()
 * has no timeout of its own. Whoever finishes last (the thread, or the caller) frees it. */
typedef struct lookup {
        pthread_mutex_t lock;
        pthread_cond_t done_cond;
        bool done, abandoned;
        char port[8];
        struct addrinfo hints;
        struct addrinfo *result;
        int error;
        char host[];
} lookup;

static void lookup_free(lookup *l) {
        if (l->result)
                freeaddrinfo(l->result);
        pthread_cond_destroy(&l->done_cond);
        pthread_mutex_destroy(&l->lock);
        free(l);
}

static void *lookup_thread(void *userdata) {
        lookup *l = userdata;
        struct addrinfo *result = NULL;
        bool abandoned;
        int r;

        r = getaddrinfo(l->host, l->port, &l->hints, &result);

        pthread_mutex_lock(&l->lock);
        l->result = result;
        l->error = r;
        l->done = true;
        abandoned = l->abandoned;
        pthread_cond_signal(&l->done_cond);
        pthread_mutex_unlock(&l->lock);
        if (abandoned)
                lookup_free(l);
        return NULL;
}

/* Resolves the host, bounded by @deadline. Numeric addresses never touch the resolver. */
static int resolve(kmip_conn *c, usec_t deadline, struct addrinfo **ret) {
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
        pthread_condattr_t ca;
        sigset_t all, old;
        pthread_t thread;
        lookup *l;
        int r;

        if (is_ip_address(c->host)) {
                char port[8];

                (void) snprintf(port, sizeof port, "%u", c->port);
                hints.ai_flags = AI_NUMERICSERV | AI_NUMERICHOST;
                r = getaddrinfo(c->host, port, &hints, ret);
                if (r != 0)
                        return conn_fail(c, -EADDRNOTAVAIL, "cannot use address %s: %s", c->host, gai_strerror(r));
                return 0;
        }

        l = calloc(1, sizeof(lookup) + strlen(c->host) + 1);
        if (!l)
                return -ENOMEM;
        strcpy(l->host, c->host);
        (void) snprintf(l->port, sizeof l->port, "%u", c->port);
        l->hints = hints;
        if (pthread_mutex_init(&l->lock, NULL) != 0) {
                free(l);
                return -ENOMEM;
        }
        if (pthread_condattr_init(&ca) != 0 || pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
            pthread_cond_init(&l->done_cond, &ca) != 0) {
                pthread_mutex_destroy(&l->lock);
                free(l);
                return -ENOMEM;
        }
        pthread_condattr_destroy(&ca);

        /* The thread must not take the host's signals. */
        sigfillset(&all);
        (void) pthread_sigmask(SIG_SETMASK, &all, &old);
        r = pthread_create(&thread, NULL, lookup_thread, l);
        (void) pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (r != 0) {
                lookup_free(l);
                return conn_fail(c, -r, "cannot start the lookup of %s: %s", c->host, strerror(r));
        }

        pthread_mutex_lock(&l->lock);
        while (!l->done) {
                struct timespec ts = {
                        .tv_sec = (time_t) (deadline / USEC_PER_SEC),
                        .tv_nsec = (long) (deadline % USEC_PER_SEC) * 1000,
                };

                if (pthread_cond_timedwait(&l->done_cond, &l->lock, &ts) == ETIMEDOUT && !l->done) {
                        /* The thread frees the lookup when getaddrinfo() returns at last. */
                        l->abandoned = true;
                        pthread_mutex_unlock(&l->lock);
                        (void) pthread_detach(thread);
                        return conn_fail(c, -ETIMEDOUT, "timed out resolving %s", c->host);
                }
        }
        pthread_mutex_unlock(&l->lock);
        (void) pthread_join(thread, NULL);

        r = l->error;
        if (r != 0) {
                lookup_free(l);
                return conn_fail(c, -EADDRNOTAVAIL, "cannot resolve %s: %s", c->host, gai_strerror(r));
        }
        *ret = TAKE_PTR(l->result);
        lookup_free(l);
        return 0;
}

static const char *format_addr(const struct addrinfo *ai, char *buf, size_t size) {
        const void *a = ai->ai_family == AF_INET6
                                ? (const void *) &((const struct sockaddr_in6 *) ai->ai_addr)->sin6_addr
                                : (const void *) &((const struct sockaddr_in *) ai->ai_addr)->sin_addr;

        if (!inet_ntop(ai->ai_family, a, buf, (socklen_t) size))
                return "?";
        return buf;
}

/* A connected non-blocking TCP socket to one of the host's addresses. */
static int tcp_connect(kmip_conn *c, usec_t deadline) {
        struct addrinfo *ais = NULL;
        int r, fd = -EBADF;

        r = resolve(c, deadline, &ais);
        if (r < 0)
                return r;

        r = conn_fail(c, -EADDRNOTAVAIL, "no address for %s", c->host);
        for (struct addrinfo *ai = ais; ai; ai = ai->ai_next) {
                char addr[INET6_ADDRSTRLEN];
                socklen_t len = sizeof(int);
                int err = 0, one = 1;

                if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
                        continue;
                fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
                if (fd < 0) {
                        r = conn_fail(c, negative_errno(), "socket(): %s", strerror(errno));
                        continue;
                }
                (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
                        if (errno != EINPROGRESS) {
                                err = errno;
                                goto next;
                        }
                        r = wait_fd(fd, POLLOUT, deadline);
                        if (r == -ETIMEDOUT) {
                                r = conn_fail(c, r, "timed out connecting to %s port %u",
                                              format_addr(ai, addr, sizeof addr), c->port);
                                fd = safe_close(fd);
                                break; /* no time left for other addresses */
                        }
                        if (r < 0) {
                                err = -r;
                                goto next;
                        }
                        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                                err = errno;
                        if (err != 0)
                                goto next;
                }
                freeaddrinfo(ais);
                return fd;
        next:
                r = conn_fail(c, -err, "cannot connect to %s port %u: %s", format_addr(ai, addr, sizeof addr), c->port,
                              strerror(err));
                fd = safe_close(fd);
        }
        freeaddrinfo(ais);
        return r;
}

static int conn_connect(kmip_conn *c, usec_t deadline) {
        _cleanup_(SSL_CTX_freep) SSL_CTX *ctx = NULL;
        _cleanup_free_ char *error = NULL;
        kmip_conn_file bad;
        sigpipe_guard g;
        int r;

        kmip_conn_disconnect(c);

        /* Reload the files: a renewed certificate is picked up at the next connection. */
        r = make_ctx(c, &ctx, &error, &bad);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return conn_fail(c, -EKEYREJECTED, "%s", error ?: "cannot load the TLS credentials");
        SSL_CTX_free(c->ctx);
        c->ctx = TAKE_PTR(ctx);

        r = tcp_connect(c, deadline);
        if (r < 0)
                return r;
        c->fd = r;

        ERR_clear_error();
        c->ssl = SSL_new(c->ctx);
        if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
                kmip_conn_disconnect(c);
                return -ENOMEM;
        }
        if (is_ip_address(c->server_name)) {
                if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), c->server_name) != 1) {
                        kmip_conn_disconnect(c);
                        return conn_fail(c, -EINVAL, "cannot check the server certificate for %s", c->server_name);
                }
        } else {
                X509_VERIFY_PARAM_set_hostflags(SSL_get0_param(c->ssl), X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
                if (SSL_set1_host(c->ssl, c->server_name) != 1 ||
                    SSL_set_tlsext_host_name(c->ssl, c->server_name) != 1) {
                        kmip_conn_disconnect(c);
                        return conn_fail(c, -EINVAL, "cannot check the server certificate for %s", c->server_name);
                }
        }
        SSL_set_connect_state(c->ssl);

        sigpipe_block(&g);
        for (;;) {
                int k;

                ERR_clear_error();
                k = SSL_connect(c->ssl);
                if (k == 1) {
                        r = 0;
                        break;
                }
                r = ssl_wait(c, k, deadline, "TLS handshake");
                if (r < 0)
                        break;
        }
        sigpipe_restore(&g);
        if (r < 0) {
                kmip_conn_disconnect(c);
                return r;
        }
        return 0;
}

/* Whether an idle connection is still usable: nothing may arrive between two exchanges except
 * TLS records without application data (TLS 1.3 session tickets). */
static bool conn_alive(kmip_conn *c) {
        struct pollfd p = { .fd = c->fd, .events = POLLIN | POLLRDHUP };
        sigpipe_guard g;
        uint8_t b;
        int k, e;

        if (poll(&p, 1, 0) <= 0)
                return true; /* nothing pending (or poll failed: the exchange will tell) */
        if (p.revents & (POLLERR | POLLHUP | POLLRDHUP | POLLNVAL))
                return false;

        sigpipe_block(&g);
        ERR_clear_error();
        k = SSL_read(c->ssl, &b, 1);
        e = SSL_get_error(c->ssl, k);
        sigpipe_restore(&g);
        ERR_clear_error();
        /* Data outside an exchange means we are out of step: drop the connection too. */
        return k <= 0 && e == SSL_ERROR_WANT_READ;
}

static int send_all(kmip_conn *c, const uint8_t *data, size_t size, usec_t deadline) {
        size_t done = 0;

        while (done < size) {
                int k, r;

                ERR_clear_error();
                k = SSL_write(c->ssl, data + done, (int) MIN(size - done, (size_t) INT32_MAX));
                if (k > 0) {
                        done += (size_t) k;
                        continue;
                }
                r = ssl_wait(c, k, deadline, "sending the request");
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Reads exactly @size bytes; *got_any tells whether any byte arrived. */
static int recv_all(kmip_conn *c, uint8_t *buf, size_t size, usec_t deadline, bool *got_any) {
        size_t done = 0;

        while (done < size) {
                int k, r;

                ERR_clear_error();
                k = SSL_read(c->ssl, buf + done, (int) MIN(size - done, (size_t) INT32_MAX));
                if (k > 0) {
                        done += (size_t) k;
                        *got_any = true;
                        continue;
                }
                r = ssl_wait(c, k, deadline, "receiving the response");
                if (r < 0)
                        return r;
        }
        return 0;
}

/* One exchange on the open connection. *sent tells whether the request may have reached the
 * server, *got_any whether the response started. */
static int exchange(kmip_conn *c, const uint8_t *req, size_t req_size, usec_t deadline, uint8_t **ret,
                    size_t *ret_size, bool *sent, bool *got_any) {
        uint8_t header[KMIP_TTLV_HEADER_SIZE];
        uint8_t *buf;
        size_t size;
        sigpipe_guard g;
        int r;

        sigpipe_block(&g);
        r = send_all(c, req, req_size, deadline);
        /* A write refused because the server had closed the connection delivered nothing; any
         * other failure may have delivered part of the request. */
        *sent = r >= 0 || (r != -EPIPE && r != -ECONNRESET);
        if (r >= 0)
                r = recv_all(c, header, sizeof header, deadline, got_any);
        sigpipe_restore(&g);
        if (r < 0)
                return r;

        r = kmip_ttlv_message_size(header, KMIP_TAG_RESPONSE_MESSAGE, &size);
        if (r < 0)
                return conn_fail(c, -EBADMSG, "%s:%u sent something that is not a KMIP response", c->host, c->port);

        buf = malloc(size);
        if (!buf)
                return -ENOMEM;
        memcpy(buf, header, sizeof header);
        sigpipe_block(&g);
        r = recv_all(c, buf + sizeof header, size - sizeof header, deadline, got_any);
        sigpipe_restore(&g);
        if (r < 0) {
                erase_and_free(buf, size);
                return r;
        }
        *ret = buf;
        *ret_size = size;
        return 0;
}

int kmip_conn_call(kmip_conn *c, const uint8_t *req, size_t req_size, usec_t deadline, bool idempotent,
                   uint8_t **ret, size_t *ret_size) {
        int r;

        free(c->error);
        c->error = NULL;

        for (unsigned attempt = 0;; attempt++) {
                bool reused = false, sent = false, got_any = false;

                if (c->ssl) {
                        reused = conn_alive(c);
                        if (!reused)
                                kmip_conn_disconnect(c);
                }
                if (!c->ssl) {
                        r = conn_connect(c, deadline);
                        if (r < 0)
                                break;
                }

                r = exchange(c, req, req_size, deadline, ret, ret_size, &sent, &got_any);
                if (r >= 0)
                        return 0;
                kmip_conn_disconnect(c);

                /* A connection that looked alive but was dropped by the server (idle timeout,
                 * restart): try once more on a new one, unless that could repeat an operation
                 * the server may already have carried out. */
                if (attempt == 0 && reused && !got_any && (r == -ECONNRESET || r == -EPIPE) &&
                    (idempotent || !sent))
                        continue;
                break;
        }

        if (r == -ENOMEM)
                return r;
        if (r == -EBADMSG)
                return -EPROTO;
        if (!c->error)
                (void) conn_fail(c, r, "connection to %s:%u failed: %s", c->host, c->port, strerror(-r));
        return -EHOSTDOWN;
}
