/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The KMIP backend: its configuration, open and free (see kmip-internal.h). */

#include "kmip-internal.h"

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

int kmip_open(const kms_backend_config *cfg, const kms_context *ctx, kms_backend **ret, char **ret_error) {
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
                r = kms_config_check_file(files[i], file_keys[i], ret_error);
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

void kmip_free(kms_backend *b) {
        kmip_backend *k = KMIP(b);

        kmip_conn_free(k->conn);
        free(k->host);
        free(k);
}
