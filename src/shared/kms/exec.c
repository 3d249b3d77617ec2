/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The exec backend: every operation runs an external helper that speaks one JSON request on stdin
 * and one JSON reply on stdout (evs-kms-exec(7), man/evs-kms-exec.7.scd, is the protocol's reference). Vault, AWS KMS
 * and others are reached through their own CLIs by small helpers (helpers/evs-kms-*).
 *
 * Configuration ([Backend NAME], Type=exec):
 *   Helper=PATH      absolute path of the helper executable, required
 *   Timeout=SEC      seconds one invocation may take, 1..3600, default 10
 *   Option.NAME=V    passed to the helper in every request's "options" object
 *   Persistent=BOOL  keep helpers running, one request line after another (default no)
 *
 * The helper runs (exec-proc.c) with argv = { HELPER, OP }, or { HELPER, "serve" } when persistent, an
 * environment of PATH, HOME, LANG=C (and CREDENTIALS_DIRECTORY when set), in a process group of its own,
 * which is killed when the helper exits or exceeds Timeout=. The reply is at most 64 KiB, stderr is kept
 * up to 4 KiB and quoted in the error text. Data keys cross only the pipes; every buffer that held one is
 * wiped.
 *
 * State mapping: the helper reports the normalised state itself ("enabled", "disabled",
 * "pending-deletion", "destroyed", "unavailable"); each helper documents its KMS's mapping. */

#include <sys/wait.h>

#include <json-c/printbuf.h>

#include "backends.h"
#include "config.h"
#include "crypto.h"
#include "exec-proc.h"
#include "json-util.h"
#include "kms-gate.h"
#include "string-util.h"

#define EXEC_PROTOCOL_VERSION 1
#define EXEC_TIMEOUT_DEFAULT_SEC 10U
#define EXEC_TIMEOUT_MAX_SEC 3600U
#define EXEC_FIELD_MAX 1024U
#define EXEC_PLAINTEXT_MAX 1024U
#define EXEC_SERVE_ATTEMPTS_MAX 3U /* idle helpers found gone after the request was sent, then a new one */
#define OPTION_PREFIX "Option."

typedef struct exec_backend {
        kms_backend base;
        char *helper;
        unsigned timeout_sec;
        json_object *options;
        bool persistent;
        exec_pool pool;   /* the idle persistent helpers */
        char **serve_env; /* their environment, made once */
        char *hello;      /* the handshake line */
        /* Set only by kms_exec_parse_reply(): taken as the helper's answer instead of running it. */
        const uint8_t *canned_reply;
        size_t canned_size;
        int canned_status;
} exec_backend;

static exec_backend *EXEC(kms_backend *b) {
        return (exec_backend *) b;
}

/* ---- open/free ---- */

static char **build_env(const kms_context *ctx) {
        const char *path = getenv("PATH"), *home = getenv("HOME");
        char **env = calloc(5, sizeof(char *));
        size_t n = 0;

        if (!env)
                return NULL;
        if (asprintf(&env[n++], "PATH=%s",
                     !isempty(path) ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin") < 0 ||
            asprintf(&env[n++], "HOME=%s", !isempty(home) ? home : "/") < 0 || !(env[n++] = strdup("LANG=C")) ||
            (ctx && ctx->credentials_dir &&
             asprintf(&env[n++], "CREDENTIALS_DIRECTORY=%s", ctx->credentials_dir) < 0)) {
                env[n - 1] = NULL;
                for (size_t i = 0; env[i]; i++)
                        free(env[i]);
                free(env);
                return NULL;
        }
        return env;
}

static void env_free(char **env) {
        if (!env)
                return;
        for (size_t i = 0; env[i]; i++)
                free(env[i]);
        free(env);
}

static bool option_name_valid(const char *s) {
        size_t n = strlen(s);

        if (n == 0 || n > 64)
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' ||
                      *s == '_' || *s == '.'))
                        return false;
        return true;
}

static void exec_free(kms_backend *b) {
        exec_backend *e = EXEC(b);

        exec_pool_done(&e->pool);
        env_free(e->serve_env);
        free(e->hello);
        free(e->helper);
        json_object_put(e->options);
        free(e);
}

static int exec_open(const kms_backend_config *cfg, const kms_context *ctx, kms_backend **ret, char **ret_error) {
        exec_backend *e;
        const kms_setting *helper = NULL, *timeout = NULL, *persistent = NULL;

        for (size_t i = 0; i < cfg->n_settings; i++) {
                const kms_setting *s = &cfg->settings[i];

                if (streq(s->key, "Helper"))
                        helper = s;
                else if (streq(s->key, "Timeout"))
                        timeout = s;
                else if (streq(s->key, "Persistent"))
                        persistent = s;
                else if (strncmp(s->key, OPTION_PREFIX, strlen(OPTION_PREFIX)) == 0) {
                        if (!option_name_valid(s->key + strlen(OPTION_PREFIX)))
                                return kms_config_error(ret_error, s,
                                                        "invalid option name %s=: NAME is 1-64 of [A-Za-z0-9._-]",
                                                        s->key);
                } else if (!kms_config_key_generic(s->key))
                        return kms_config_error(ret_error, s, "unknown key %s= in [Backend %s]", s->key, cfg->name);
        }
        if (!helper)
                return kms_config_error(ret_error, NULL, "[Backend %s]: Type=exec needs Helper=", cfg->name);
        if (helper->value[0] != '/')
                return kms_config_error(ret_error, helper, "Helper= must be an absolute path: %s", helper->value);

        if (persistent && parse_boolean(persistent->value) < 0)
                return kms_config_error(ret_error, persistent, "Persistent= must be a boolean (yes or no): %s",
                                        persistent->value);

        e = calloc(1, sizeof *e);
        if (!e)
                return -ENOMEM;
        exec_pool_init(&e->pool);
        e->persistent = persistent && parse_boolean(persistent->value) > 0;
        e->timeout_sec = EXEC_TIMEOUT_DEFAULT_SEC;
        if (timeout) {
                char *end;
                unsigned long v;

                errno = 0;
                v = strtoul(timeout->value, &end, 10);
                if (errno != 0 || end == timeout->value || *end != 0 || timeout->value[0] == '-' || v < 1 ||
                    v > EXEC_TIMEOUT_MAX_SEC) {
                        free(e);
                        return kms_config_error(ret_error, timeout, "Timeout= must be 1..%u seconds: %s",
                                                EXEC_TIMEOUT_MAX_SEC, timeout->value);
                }
                e->timeout_sec = (unsigned) v;
        }
        e->base.timeout = (usec_t) e->timeout_sec * USEC_PER_SEC;
        e->helper = strdup(helper->value);
        e->options = json_object_new_object();
        if (!e->helper || !e->options) {
                exec_free(&e->base);
                return -ENOMEM;
        }
        /* In file order, so a later line (drop-in) overrides an earlier one. */
        for (size_t i = 0; i < cfg->n_settings; i++) {
                const kms_setting *s = &cfg->settings[i];

                if (strncmp(s->key, OPTION_PREFIX, strlen(OPTION_PREFIX)) == 0 &&
                    json_add_string(e->options, s->key + strlen(OPTION_PREFIX), s->value, false) < 0) {
                        exec_free(&e->base);
                        return -ENOMEM;
                }
        }
        if (e->persistent) {
                _cleanup_(json_object_putp) json_object *hello = json_object_new_object();
                _cleanup_free_ char *text = NULL;

                if (!hello || json_object_object_add(hello, "version", json_object_new_int(EXEC_PROTOCOL_VERSION)) < 0 ||
                    json_add_string(hello, "op", "serve", false) < 0 ||
                    json_object_object_add(hello, "options", json_object_get(e->options)) < 0 ||
                    !(text = json_to_string_dup(hello, false)) || asprintf(&e->hello, "%s\n", text) < 0)
                        e->hello = NULL;
                e->serve_env = build_env(ctx);
                if (!e->hello || !e->serve_env) {
                        exec_free(&e->base);
                        return -ENOMEM;
                }
        }
        *ret = &e->base;
        return 0;
}

/* ---- running the helper ---- */

/* kms_exec_parse_reply()'s stand-in for running the helper: the canned answer, as the pipe would have given it. */
static int canned_result(exec_backend *e, exec_result *res) {
        int r;

        r = secret_new(EXEC_REPLY_MAX + 1, &res->out);
        if (r < 0)
                return r;
        res->oversize = e->canned_size > EXEC_REPLY_MAX;
        res->out_size = MIN(e->canned_size, (size_t) EXEC_REPLY_MAX);
        memcpy(res->out->data, e->canned_reply, res->out_size);
        res->out->data[res->out_size] = 0;
        res->status = (e->canned_status & 0xff) << 8; /* W_EXITCODE(status, 0) */
        return 0;
}

/* The helper's stderr, one line, for error texts ("" when empty). */
static char *stderr_note(const exec_result *res) {
        char *s, *p;
        size_t n = res->err_size;

        while (n > 0 && strchr(" \t\r\n", res->err[n - 1]))
                n--;
        if (n == 0)
                return strdup("");
        if (asprintf(&s, "; stderr: %.*s", (int) n, res->err) < 0)
                return NULL;
        for (p = s; *p; p++)
                if (*p == '\n')
                        *p = '|';
                else if ((unsigned char) *p < 0x20 || *p == 0x7f)
                        *p = ' ';
        return s;
}

static const struct {
        const char *code;
        int error;
} error_codes[] = {
        { "not-found", -ENOENT },
        { "disabled", -EKEYREVOKED },
        { "pending-deletion", -EKEYEXPIRED },
        { "destroyed", -ENOKEY },
        { "unavailable", -EHOSTDOWN },
        { "bad-ciphertext", -EBADMSG },
        { "wrong-key", -EXDEV },
        { "unsupported", -EOPNOTSUPP },
        { "invalid", -EINVAL },
        { "exists", -EEXIST },
        { "invalid-state", -EKEYREJECTED },
        { "throttled", -EAGAIN },
};

/* Parses the reply without leaving copies of it in freed heap memory: json-c's tokener buffer is
 * grown up front (so never reallocated) and wiped before it is freed. Strings in the returned
 * object that hold secrets must be wiped by the caller (wipe_string()). */
static int parse_reply(const char *text, size_t size, json_object **ret) {
        _cleanup_(json_tokener_freep) struct json_tokener *tok = NULL;
        json_object *o;
        int r = 0;

        if (strlen(text) != size)
                return -EINVAL; /* embedded NUL */
        tok = json_tokener_new();
        if (!tok)
                return -ENOMEM;
        if (printbuf_memset(tok->pb, 0, 0, (int) EXEC_REPLY_MAX + 1) < 0)
                return -ENOMEM;
        printbuf_reset(tok->pb);
        o = json_tokener_parse_ex(tok, text, (int) size);
        if (!o || json_tokener_get_error(tok) != json_tokener_success || !json_object_is_type(o, json_type_object))
                r = -EINVAL;
        else
                for (size_t i = json_tokener_get_parse_end(tok); i < size; i++)
                        if (!strchr(" \t\r\n", text[i]))
                                r = -EINVAL; /* trailing garbage */
        explicit_bzero(tok->pb->buf, (size_t) tok->pb->size);
        if (r < 0) {
                json_object_put(o);
                return r;
        }
        *ret = o;
        return 0;
}

static void wipe_string(json_object *v) {
        if (v && json_object_is_type(v, json_type_string))
                explicit_bzero((char *) json_object_get_string(v), (size_t) json_object_get_string_len(v));
}

/* ---- one run, or a persistent helper ---- */

/* A persistent helper taken from the pool for one request, given back when the call is done. */
typedef struct exec_lease {
        exec_pool *pool;
        exec_proc *proc;
        bool reuse;
} exec_lease;

static void exec_lease_done(exec_lease *l) {
        if (l->proc)
                exec_pool_release(l->pool, l->proc, l->reuse);
        l->proc = NULL;
}

static bool serve_hello_ok(const char *line, size_t size) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        json_object *v;

        if (parse_reply(line, size, &o) < 0)
                return false;
        return !json_object_object_get_ex(o, "error", NULL) && json_object_object_get_ex(o, "serve", &v) &&
               json_object_is_type(v, json_type_int) && json_object_get_int64(v) == 1;
}

/* Why the handshake of a new persistent helper failed, as the call's error. */
static int serve_refused(exec_backend *e, const exec_result *res) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        _cleanup_free_ char *note = stderr_note(res), *text = NULL, *line = NULL;
        const char *code = NULL, *message = NULL;
        char why[128];
        json_object *err;

        if (!note)
                return -ENOMEM;
        if (res->cancelled)
                return kms_backend_set_error(&e->base, -ECANCELED,
                                             "helper %s stopped: evs-cryptd is shutting down (serve)", e->helper);
        if (res->timed_out)
                snprintf(why, sizeof why, "no answer within %us", e->timeout_sec);
        else if (res->out_size > 0 && parse_reply((const char *) res->out->data, res->out_size, &o) == 0 &&
                 json_object_object_get_ex(o, "error", &err) && json_get_string(err, "code", false, &code) >= 0) {
                (void) json_get_string(err, "message", true, &message);
                line = cescape(message ?: code);
                if (!line)
                        return -ENOMEM;
                return kms_backend_set_error(&e->base, -EPROTO,
                                             "helper %s does not support Persistent=yes (op serve): %s%s", e->helper,
                                             line, note);
        } else if (res->out_size == 0 && WIFEXITED(res->status))
                snprintf(why, sizeof why, "exited with status %d without an answer", WEXITSTATUS(res->status));
        else if (res->out_size == 0 && WIFSIGNALED(res->status))
                snprintf(why, sizeof why, "killed by signal %s", sigabbrev_np(WTERMSIG(res->status)) ?: "?");
        else if (res->out_size == 0)
                snprintf(why, sizeof why, "no answer");
        else {
                size_t n = MIN(res->out_size, (size_t) 80);

                while (n > 0 && strchr("\r\n", res->out->data[n - 1]))
                        n--;
                text = strndup((const char *) res->out->data, n);
                line = text ? cescape(text) : NULL;
                if (!line)
                        return -ENOMEM;
                return kms_backend_set_error(&e->base, -EPROTO,
                                             "helper %s does not support Persistent=yes (op serve): it answered "
                                             "\"%s\", not {\"serve\":1}%s",
                                             e->helper, line, note);
        }
        return kms_backend_set_error(&e->base, -EPROTO, "helper %s does not support Persistent=yes (op serve): %s%s",
                                     e->helper, why, note);
}

/* Whether sending @op twice does what sending it once does (create makes a second key; schedule-deletion
 * would find the key pending deletion already). */
static bool op_repeatable(const char *op) {
        return !streq(op, "create") && !streq(op, "schedule-deletion");
}

/* Runs the request @in (one line) through the helper: a new process, or a persistent one that @lease
 * keeps until the reply is checked. Fills @res; returns -errno only when the helper could not be run. */
static int helper_run(exec_backend *e, const char *op, const uint8_t *in, size_t in_size, exec_result *res,
                      exec_lease *lease) {
        usec_t timeout = (usec_t) e->timeout_sec * USEC_PER_SEC;
        bool exec_failed = false;
        int r;

        if (access(e->helper, X_OK) < 0)
                return kms_backend_set_error(&e->base, -EINVAL, "helper %s is not executable: %s", e->helper,
                                             strerror(errno));
        if (!e->persistent) {
                char *argv[] = { e->helper, (char *) op, NULL };
                char **env = build_env(e->base.ctx);

                if (!env)
                        return -ENOMEM;
                r = exec_run_once(&(exec_command) { e->helper, argv, env }, in, in_size, timeout, res, &exec_failed);
                env_free(env);
        } else {
                char *argv[] = { e->helper, (char *) "serve", NULL };
                usec_t deadline = now_monotonic() + timeout;

                for (unsigned attempt = 0;; attempt++) {
                        bool fresh = false;

                        r = exec_pool_acquire(&e->pool, &(exec_command) { e->helper, argv, e->serve_env },
                                              (const uint8_t *) e->hello, strlen(e->hello), serve_hello_ok, deadline,
                                              &lease->proc, &fresh, res, &exec_failed);
                        if (r == -EPROTO)
                                return serve_refused(e, res);
                        if (r < 0)
                                break;
                        lease->reuse = exec_proc_request(lease->proc, in, in_size, deadline, res);
                        /* A helper that had served before and exited (status 0) without a word was on its
                         * way out between requests: an operation that can be repeated goes to another one. */
                        if (lease->reuse || fresh || !res->exited || res->out_size > 0 || res->status != 0 ||
                            !op_repeatable(op) || attempt >= EXEC_SERVE_ATTEMPTS_MAX)
                                break;
                        exec_lease_done(lease);
                        exec_result_done(res);
                }
        }
        if (r < 0 && exec_failed)
                return kms_backend_set_error(&e->base, -EINVAL, "cannot execute helper %s: %s", e->helper,
                                             strerror(-r));
        return r;
}

/* Runs one request and checks the envelope. On success *ret is the reply object (no "error"). */
static int exec_call(exec_backend *e, const char *op, json_object *req, const char *secret_b64, json_object **ret) {
        _cleanup_(exec_lease_done) exec_lease lease = { .pool = &e->pool };
        _cleanup_(exec_result_done) exec_result res = {};
        _cleanup_(json_object_putp) json_object *reply = NULL;
        _cleanup_free_ char *note = NULL, *text = NULL;
        _cleanup_(secret_freep) secret *input = NULL;
        json_object *err;
        size_t n;
        int r;

        if (json_object_object_add(req, "version", json_object_new_int(EXEC_PROTOCOL_VERSION)) < 0 ||
            json_add_string(req, "op", op, false) < 0 ||
            json_object_object_add(req, "options", json_object_get(e->options)) < 0)
                return -ENOMEM;
        text = json_to_string_dup(req, false);
        if (!text)
                return -ENOMEM;
        n = strlen(text);

        /* The data key is spliced in here, so only a wiped buffer ever holds the request with it. */
        r = secret_new(n + (secret_b64 ? strlen(secret_b64) + 32 : 0) + 2, &input);
        if (r < 0)
                return r;
        memcpy(input->data, text, n);
        if (secret_b64) {
                n--; /* drop the closing brace */
                n += (size_t) sprintf((char *) input->data + n, ",\"plaintext\":\"%s\"}", secret_b64);
        }
        input->data[n++] = '\n';

        r = e->canned_reply ? canned_result(e, &res) : helper_run(e, op, input->data, n, &res, &lease);
        if (r < 0)
                return r;
        note = stderr_note(&res);
        if (!note)
                return -ENOMEM;

        if (res.cancelled)
                return kms_backend_set_error(&e->base, -ECANCELED, "helper %s stopped: evs-cryptd is shutting down (%s)",
                                             e->helper, op);
        if (res.timed_out)
                return kms_backend_set_error(&e->base, -EHOSTDOWN, "helper %s timed out after %us (%s)%s", e->helper,
                                             e->timeout_sec, op, note);
        if (res.oversize)
                return kms_backend_set_error(&e->base, -EPROTO, "helper %s sent a reply larger than %u bytes (%s)",
                                             e->helper, EXEC_REPLY_MAX, op);
        if (WIFSIGNALED(res.status))
                return kms_backend_set_error(&e->base, -EPROTO, "helper %s was killed by signal %s (%s)%s", e->helper,
                                             sigabbrev_np(WTERMSIG(res.status)) ?: "?", op, note);
        if (!WIFEXITED(res.status))
                return kms_backend_set_error(&e->base, -EPROTO, "helper %s ended abnormally (%s)%s", e->helper, op,
                                             note);

        if (res.out_size == 0) {
                if (WEXITSTATUS(res.status) != 0)
                        return kms_backend_set_error(&e->base, -EPROTO,
                                                     "helper %s exited with status %d without a reply (%s)%s",
                                                     e->helper, WEXITSTATUS(res.status), op, note);
                return kms_backend_set_error(&e->base, -EPROTO, "helper %s sent an empty reply (%s)%s", e->helper, op,
                                             note);
        }
        r = parse_reply((const char *) res.out->data, res.out_size, &reply);
        if (r < 0)
                lease.reuse = false; /* a persistent helper that sent that is not asked again */
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return kms_backend_set_error(
                        &e->base, -EPROTO,
                        "helper %s sent a malformed reply, not one JSON object (%s, exit status %d)%s", e->helper, op,
                        WEXITSTATUS(res.status), note);

        if (json_object_object_get_ex(reply, "error", &err)) {
                const char *code = NULL, *message = NULL;

                if (!json_object_is_type(err, json_type_object) || json_get_string(err, "code", false, &code) < 0 ||
                    (json_get_string(err, "message", true, &message) < 0 &&
                     json_object_object_get_ex(err, "message", NULL)))
                        return kms_backend_set_error(&e->base, -EPROTO,
                                                     "helper %s sent a malformed error object (%s)%s", e->helper, op,
                                                     note);
                _cleanup_free_ char *line = cescape(message ?: code), *code_line = cescape(code);

                if (!line || !code_line)
                        return -ENOMEM;
                /* The helper's text goes into bus errors, logs and records: one line, no live escapes. */
                for (size_t i = 0; i < ELEMENTSOF(error_codes); i++)
                        if (streq(code, error_codes[i].code))
                                return kms_backend_set_error(&e->base, error_codes[i].error, "%s%s", line, note);
                return kms_backend_set_error(&e->base, -EPROTO, "helper %s sent unknown error code '%s': %s%s",
                                             e->helper, code_line, message ? line : "n/a", note);
        }
        if (WEXITSTATUS(res.status) != 0)
                return kms_backend_set_error(&e->base, -EPROTO,
                                             "helper %s exited with status %d without an error object (%s)%s",
                                             e->helper, WEXITSTATUS(res.status), op, note);
        *ret = TAKE_PTR(reply);
        return 0;
}

static int exec_helper_processes(kms_backend *b, unsigned *ret_running, uint64_t *ret_started) {
        exec_backend *e = EXEC(b);

        if (!e->persistent)
                return -EOPNOTSUPP;
        exec_pool_stats(&e->pool, ret_running, ret_started);
        return 0;
}

/* ---- replies ---- */

static int reply_error(exec_backend *e, const char *op, const char *what) {
        return kms_backend_set_error(&e->base, -EPROTO, "helper %s: malformed reply to '%s': %s", e->helper, op, what);
}

static bool text_ok(const char *s, size_t max) {
        size_t n = strlen(s);

        if (n == 0 || n > max)
                return false;
        for (; *s; s++)
                if ((unsigned char) *s < 0x20 || *s == 0x7f)
                        return false;
        return true;
}

static int get_opt_string(json_object *o, const char *key, char **ret) {
        const char *s = NULL;
        int r;

        r = json_get_string(o, key, true, &s);
        if (r == -ENODATA || (r >= 0 && isempty(s))) {
                *ret = NULL; /* absent, null and "" are all "none" */
                return 0;
        }
        if (r < 0 || !text_ok(s, EXEC_FIELD_MAX))
                return -EINVAL;
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

static int get_opt_time(json_object *o, const char *key, usec_t *ret) {
        const char *s = NULL;
        int r;

        r = json_get_string(o, key, true, &s);
        if (r == -ENODATA || (r >= 0 && !s)) {
                *ret = 0;
                return 0;
        }
        if (r < 0)
                return r;
        return parse_timestamp(s, ret);
}

static int parse_key(exec_backend *e, const char *op, json_object *o, kms_key *ret) {
        kms_key k = {};
        const char *state;
        int r;

        if (!json_object_is_type(o, json_type_object))
                return reply_error(e, op, "a key is not an object");
        r = get_opt_string(o, "id", &k.id);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || !k.id) {
                kms_key_done(&k);
                return reply_error(e, op, "'id' missing or not a non-empty string");
        }
        if (json_get_string(o, "state", false, &state) < 0 ||
            (k.state = kms_key_state_from_string(state)) == _KMS_KEY_STATE_INVALID) {
                kms_key_done(&k);
                return reply_error(
                        e, op, "'state' missing or not one of enabled|disabled|pending-deletion|destroyed|unavailable");
        }
        if ((r = get_opt_string(o, "alias", &k.alias)) < 0 ||
            (r = get_opt_string(o, "description", &k.description)) < 0) {
                kms_key_done(&k);
                return r == -ENOMEM ? r : reply_error(e, op, "'alias' or 'description' is not a string");
        }
        if (get_opt_time(o, "created", &k.created) < 0 || get_opt_time(o, "deletion_date", &k.deletion_date) < 0) {
                kms_key_done(&k);
                return reply_error(e, op, "'created' or 'deletion_date' is not an ISO 8601 time or null");
        }
        *ret = k;
        return 0;
}

static json_object *request_new(const char *key) {
        json_object *req = json_object_new_object();

        if (req && key && json_add_string(req, "key", key, false) < 0) {
                json_object_put(req);
                return NULL;
        }
        return req;
}

static int add_context(json_object *req, const char *context) {
        json_object *c = json_object_new_object();

        if (!c || json_add_string(c, "volume_id", context, false) < 0 ||
            json_object_object_add(req, "context", c) < 0) {
                json_object_put(c);
                return -ENOMEM;
        }
        return 0;
}

/* ---- verbs ---- */

static int exec_key_get(kms_backend *b, const char *ref, kms_key *ret) {
        exec_backend *e = EXEC(b);
        _cleanup_(json_object_putp) json_object *req = request_new(ref), *reply = NULL;
        int r;

        if (!req)
                return -ENOMEM;
        r = exec_call(e, "describe", req, NULL, &reply);
        if (r < 0)
                return r;
        return parse_key(e, "describe", reply, ret);
}

static int exec_key_create(kms_backend *b, const char *alias, const char *description, kms_key *ret) {
        exec_backend *e = EXEC(b);
        _cleanup_(json_object_putp) json_object *req = request_new(NULL), *reply = NULL;
        int r;

        if (!req || json_add_string(req, "alias", alias, true) < 0 ||
            json_add_string(req, "description", description, true) < 0)
                return -ENOMEM;
        r = exec_call(e, "create", req, NULL, &reply);
        if (r < 0)
                return r;
        return parse_key(e, "create", reply, ret);
}

static int exec_key_list(kms_backend *b, kms_key **ret, size_t *ret_n) {
        exec_backend *e = EXEC(b);
        _cleanup_(json_object_putp) json_object *req = request_new(NULL), *reply = NULL;
        json_object *arr;
        kms_key *keys;
        size_t n;
        int r;

        if (!req)
                return -ENOMEM;
        r = exec_call(e, "list", req, NULL, &reply);
        if (r < 0)
                return r;
        if (!json_object_object_get_ex(reply, "keys", &arr) || !json_object_is_type(arr, json_type_array))
                return reply_error(e, "list", "'keys' missing or not an array");
        n = json_object_array_length(arr);
        keys = calloc(MAX(n, (size_t) 1), sizeof(kms_key));
        if (!keys)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                r = parse_key(e, "list", json_object_array_get_idx(arr, i), &keys[i]);
                if (r < 0) {
                        kms_key_array_free(keys, i);
                        return r;
                }
        }
        *ret = keys;
        *ret_n = n;
        return 0;
}

static int simple_call(exec_backend *e, const char *op, json_object *req) {
        _cleanup_(json_object_putp) json_object *reply = NULL;

        if (!req)
                return -ENOMEM;
        return exec_call(e, op, req, NULL, &reply);
}

static int exec_key_set_enabled(kms_backend *b, const char *id, bool enabled) {
        _cleanup_(json_object_putp) json_object *req = request_new(id);

        return simple_call(EXEC(b), enabled ? "enable" : "disable", req);
}

static int exec_key_schedule_deletion(kms_backend *b, const char *id, unsigned days, kms_key *ret) {
        exec_backend *e = EXEC(b);
        _cleanup_(json_object_putp) json_object *req = request_new(id), *reply = NULL;
        int r;

        if (!req || json_object_object_add(req, "days", json_object_new_int((int) days)) < 0)
                return -ENOMEM;
        r = exec_call(e, "schedule-deletion", req, NULL, &reply);
        if (r < 0)
                return r;
        if (!ret)
                return 0;
        /* The reply may be the key; else ask for it. */
        if (json_object_object_get_ex(reply, "id", NULL))
                return parse_key(e, "schedule-deletion", reply, ret);
        return exec_key_get(b, id, ret);
}

static int exec_key_cancel_deletion(kms_backend *b, const char *id) {
        _cleanup_(json_object_putp) json_object *req = request_new(id);

        return simple_call(EXEC(b), "cancel-deletion", req);
}

static int exec_wrap_versioned(kms_backend *b, const char *id, const char *context, const secret *plain,
                               uint8_t **ret, size_t *ret_size, unsigned *ret_version) {
        exec_backend *e = EXEC(b);
        _cleanup_(json_object_putp) json_object *req = request_new(id), *reply = NULL;
        char *b64 = NULL;
        const char *ct;
        uint64_t version = 0;
        int r;

        if (!req || add_context(req, context) < 0)
                return -ENOMEM;
        r = base64_encode(plain->data, plain->size, &b64);
        if (r < 0)
                return r;
        r = exec_call(e, "wrap", req, b64, &reply);
        erase_and_free(b64, strlen(b64));
        if (r < 0)
                return r;
        if (json_get_string(reply, "ciphertext", false, &ct) < 0 || !text_ok(ct, KMS_WRAPPED_MAX))
                return reply_error(e, "wrap",
                                   "'ciphertext' missing, empty, longer than 4096 bytes or not printable ASCII");
        for (const char *p = ct; *p; p++)
                if ((unsigned char) *p > 0x7e)
                        return reply_error(e, "wrap", "'ciphertext' is not printable ASCII");
        /* Optional: the version of the key's material the helper wrapped with. */
        r = json_get_uint64(reply, "key_version", true, &version);
        if ((r < 0 && r != -ENODATA) || version > UINT32_MAX)
                return reply_error(e, "wrap", "'key_version' is not a number from 1 to 4294967295");
        *ret_size = strlen(ct);
        *ret = (uint8_t *) strdup(ct);
        if (!*ret)
                return -ENOMEM;
        *ret_version = (unsigned) version;
        return 0;
}

static int exec_wrap(kms_backend *b, const char *id, const char *context, const secret *plain, uint8_t **ret,
                     size_t *ret_size) {
        unsigned v;

        return exec_wrap_versioned(b, id, context, plain, ret, ret_size, &v);
}

static int exec_unwrap_versioned(kms_backend *b, const char *id, const char *context, const uint8_t *wrapped,
                                 size_t size, unsigned version, secret **ret) {
        exec_backend *e = EXEC(b);
        _cleanup_(json_object_putp) json_object *req = request_new(id), *reply = NULL;
        _cleanup_free_ char *ct = NULL;
        json_object *pt = NULL;
        uint8_t *raw = NULL;
        size_t raw_size = 0;
        int r;

        if (!req || add_context(req, context) < 0)
                return -ENOMEM;
        for (size_t i = 0; i < size; i++)
                if (wrapped[i] < 0x20 || wrapped[i] > 0x7e)
                        return kms_backend_set_error(b, -EBADMSG, "wrapped key is not an exec helper ciphertext");
        ct = strndup((const char *) wrapped, size);
        if (!ct || json_add_string(req, "ciphertext", ct, false) < 0)
                return -ENOMEM;
        /* Optional: the key version the token recorded at wrap time (when the helper reported one). */
        if (version > 0 && json_add_uint64(req, "key_version", version) < 0)
                return -ENOMEM;

        r = exec_call(e, "unwrap", req, NULL, &reply);
        if (r < 0)
                return r;
        if (!json_object_object_get_ex(reply, "plaintext", &pt) || !json_object_is_type(pt, json_type_string)) {
                r = reply_error(e, "unwrap", "'plaintext' missing or not a string");
                goto out;
        }
        r = base64_decode(json_object_get_string(pt), &raw, &raw_size);
        if (r == -ENOMEM)
                goto out;
        if (r < 0 || raw_size == 0 || raw_size > EXEC_PLAINTEXT_MAX) {
                r = reply_error(e, "unwrap", "'plaintext' is not base64 of 1..1024 bytes");
                goto out;
        }
        r = secret_new_copy(raw, raw_size, ret);
out:
        wipe_string(pt);
        erase_and_free(raw, raw_size);
        return r;
}

static int exec_unwrap(kms_backend *b, const char *id, const char *context, const uint8_t *wrapped, size_t size,
                       secret **ret) {
        return exec_unwrap_versioned(b, id, context, wrapped, size, 0, ret);
}

const kms_backend_ops kms_exec_ops = {
        .type = "exec",
        .thread_safe = true, /* a process per call */
        .unwrap_checks_state = true,
        .open = exec_open,
        .free = exec_free,
        .key_create = exec_key_create,
        .key_list = exec_key_list,
        .key_get = exec_key_get,
        .key_set_enabled = exec_key_set_enabled,
        .key_schedule_deletion = exec_key_schedule_deletion,
        .key_cancel_deletion = exec_key_cancel_deletion,
        .wrap = exec_wrap,
        .unwrap = exec_unwrap,
        .wrap_versioned = exec_wrap_versioned,
        .unwrap_versioned = exec_unwrap_versioned,
        .helper_processes = exec_helper_processes,
};

int kms_exec_parse_reply(const char *op, const uint8_t *reply, size_t size, int exit_status) {
        static const char *const ref = "123e4567-e89b-42d3-a456-426614174000";
        kms_setting helper = { .key = (char *) "Helper", .value = (char *) "/nonexistent/evs-kms-parse-reply" };
        kms_backend_config cfg = { .name = (char *) "parse", .type = (char *) "exec", .settings = &helper, .n_settings = 1 };
        _cleanup_free_ char *error = NULL;
        kms_backend *b = NULL;
        exec_backend *e;
        kms_key key = {}, *keys = NULL;
        size_t n = 0;
        int r;

        r = kms_backend_open(&cfg, &(kms_context) {}, &b, &error);
        if (r < 0)
                return r;
        e = EXEC(b);
        e->canned_reply = reply;
        e->canned_size = size;
        e->canned_status = exit_status;

        if (streq(op, "describe"))
                r = kms_key_get(b, ref, &key);
        else if (streq(op, "create"))
                r = kms_key_create(b, "alias", "description", &key);
        else if (streq(op, "list")) {
                r = kms_key_list(b, &keys, &n);
                if (r >= 0)
                        kms_key_array_free(keys, n);
        } else if (streq(op, "disable") || streq(op, "enable"))
                r = kms_key_set_enabled(b, ref, streq(op, "enable"), &key);
        else if (streq(op, "schedule-deletion"))
                r = kms_key_schedule_deletion(b, ref, 30, &key);
        else if (streq(op, "cancel-deletion"))
                r = kms_key_cancel_deletion(b, ref, &key);
        else if (streq(op, "wrap")) {
                _cleanup_(secret_freep) secret *plain = NULL;
                uint8_t *wrapped = NULL;
                size_t wrapped_size = 0;

                r = secret_new(32, &plain);
                if (r >= 0)
                        r = kms_wrap(b, ref, "vol-1", plain, &wrapped, &wrapped_size);
                free(wrapped);
        } else if (streq(op, "unwrap")) {
                _cleanup_(secret_freep) secret *plain = NULL;

                r = kms_unwrap(b, ref, "vol-1", (const uint8_t *) "evst1:abc", 9, &plain);
        } else
                r = -EINVAL;
        /* A failure always leaves a reason on one line. */
        if (r < 0 && r != -ENOMEM && r != -EINVAL && (!kms_backend_error(b) || strchr(kms_backend_error(b), '\n')))
                r = -ENOTRECOVERABLE;
        kms_key_done(&key);
        kms_backend_free(b);
        return r;
}
