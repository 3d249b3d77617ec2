/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <pthread.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

#include "build-config.h"

#include "crypto.h"
#include "kms-gate.h"
#include "string-util.h"
#include "kms.h"
#include "kms/backends.h"
#include "wait-hooks.h"

static const char *const state_table[_KMS_KEY_STATE_MAX] = {
        [KMS_KEY_ENABLED] = "enabled",
        [KMS_KEY_DISABLED] = "disabled",
        [KMS_KEY_PENDING_DELETION] = "pending-deletion",
        [KMS_KEY_DESTROYED] = "destroyed",
        [KMS_KEY_UNAVAILABLE] = "unavailable",
};

const char *kms_key_state_to_string(kms_key_state s) {
        if (s < 0 || s >= _KMS_KEY_STATE_MAX)
                return NULL;
        return state_table[s];
}

kms_key_state kms_key_state_from_string(const char *s) {
        if (!s)
                return _KMS_KEY_STATE_INVALID;
        for (size_t i = 0; i < _KMS_KEY_STATE_MAX; i++)
                if (streq(state_table[i], s))
                        return (kms_key_state) i;
        return _KMS_KEY_STATE_INVALID;
}

int kms_key_state_to_errno(kms_key_state s) {
        switch (s) {
        case KMS_KEY_ENABLED:
                return 0;
        case KMS_KEY_DISABLED:
                return -EKEYREVOKED;
        case KMS_KEY_PENDING_DELETION:
                return -EKEYEXPIRED;
        case KMS_KEY_DESTROYED:
                return -ENOKEY;
        case KMS_KEY_UNAVAILABLE:
                return -EHOSTDOWN;
        default:
                return -EINVAL;
        }
}

void kms_key_done(kms_key *k) {
        if (!k)
                return;
        free(k->id);
        free(k->alias);
        free(k->description);
        free(k->backend);
        *k = (kms_key) {};
}

void kms_key_array_free(kms_key *keys, size_t n) {
        for (size_t i = 0; i < n; i++)
                kms_key_done(&keys[i]);
        free(keys);
}

/* The reason of the current thread's last failed call: calls of one backend run on several threads. */
typedef struct call_error {
        const kms_backend *backend;
        char *text;
} call_error;

static pthread_key_t error_key;
static pthread_once_t error_once = PTHREAD_ONCE_INIT;

static void call_error_free(void *p) {
        call_error *e = p;

        if (e)
                free(e->text);
        free(e);
}

static void error_key_init(void) {
        (void) pthread_key_create(&error_key, call_error_free);
}

static call_error *call_error_get(void) {
        call_error *e;

        (void) pthread_once(&error_once, error_key_init);
        e = pthread_getspecific(error_key);
        if (!e) {
                e = calloc(1, sizeof *e);
                if (e && pthread_setspecific(error_key, e) != 0)
                        e = mfree(e);
        }
        return e;
}

static void call_error_set(const kms_backend *b, char *s) {
        call_error *e = call_error_get();

        if (!e) {
                free(s);
                return;
        }
        free(e->text);
        e->text = s;
        e->backend = s ? b : NULL;
}

int kms_backend_set_error(kms_backend *b, int r, const char *fmt, ...) {
        va_list ap;
        char *s = NULL;

        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                s = NULL;
        va_end(ap);
        call_error_set(b, s);
        return r;
}

const char *kms_backend_error(const kms_backend *b) {
        call_error *e = b ? call_error_get() : NULL;

        return e && e->backend == b ? e->text : NULL;
}

char *kms_backend_error_take(kms_backend *b) {
        call_error *e = call_error_get();
        char *s;

        if (!e || e->backend != b)
                return NULL;
        s = TAKE_PTR(e->text);
        e->backend = NULL;
        return s;
}

void kms_backend_error_put(kms_backend *b, char *s) {
        call_error_set(b, s);
}

static void kms_backend_clear_error(kms_backend *b) {
        call_error_set(b, NULL);
}

static void version_forget(const kms_backend *b);

static const kms_backend_ops *const backend_table[] = {
        &kms_local_ops,
#if HAVE_KMS_KMIP
        &kms_kmip_ops,
#endif
#if HAVE_KMS_PKCS11
        &kms_pkcs11_ops,
#endif
#if HAVE_KMS_EXEC
        &kms_exec_ops,
#endif
};

const kms_backend_ops *kms_backend_ops_find(const char *type) {
        for (size_t i = 0; i < ELEMENTSOF(backend_table); i++)
                if (streq(backend_table[i]->type, type))
                        return backend_table[i];
        return NULL;
}

/* MaxConcurrentRequests= and RequestsPerSecond=, which every backend type takes. */
static int parse_gate_settings(const kms_backend_config *cfg, unsigned *ret_max, unsigned *ret_rps, char **ret_error) {
        static const struct {
                const char *key;
                unsigned min, max, def;
        } table[] = {
                { "MaxConcurrentRequests", 1, KMS_MAX_CONCURRENT_MAX, KMS_MAX_CONCURRENT_DEFAULT },
                { "RequestsPerSecond", 0, KMS_REQUESTS_PER_SECOND_MAX, 0 },
        };
        unsigned v[ELEMENTSOF(table)];

        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                const kms_setting *s = kms_config_find(cfg, table[i].key);

                v[i] = table[i].def;
                if (s && parse_unsigned(s->value, table[i].min, table[i].max, &v[i]) < 0)
                        return kms_config_error(ret_error, s, "%s= must be a whole number from %u to %u: %s",
                                                table[i].key, table[i].min, table[i].max, s->value);
        }
        *ret_max = v[0];
        *ret_rps = v[1];
        return 0;
}

int kms_backend_open(const kms_backend_config *cfg, const kms_context *ctx, kms_backend **ret, char **ret_error) {
        const kms_backend_ops *ops;
        kms_backend *b = NULL;
        unsigned max_concurrent = KMS_MAX_CONCURRENT_DEFAULT, rps = 0;
        int r;

        ops = kms_backend_ops_find(cfg->type);
        if (!ops) {
                if (asprintf(ret_error, "[Backend %s]: unknown Type=%s", cfg->name, cfg->type) < 0)
                        *ret_error = NULL;
                return -EINVAL;
        }
        r = parse_gate_settings(cfg, &max_concurrent, &rps, ret_error);
        if (r < 0)
                return r;

        r = ops->open(cfg, ctx, &b, ret_error);
        if (r < 0)
                return r;
        b->ops = ops;
        b->ctx = ctx;
        if (b->timeout == 0)
                b->timeout = KMS_GATE_TIMEOUT_DEFAULT_SEC * USEC_PER_SEC;
        b->name = strdup(cfg->name);
        if (!b->name) {
                kms_backend_free(b);
                return -ENOMEM;
        }
        r = kms_gate_new(ops->thread_safe ? max_concurrent : 1, rps, b->timeout, &b->gate);
        if (r < 0) {
                kms_backend_free(b);
                return r;
        }
        *ret = b;
        return 0;
}

kms_backend *kms_backend_free(kms_backend *b) {
        char *name;
        kms_gate *gate;

        if (!b)
                return NULL;
        name = b->name;
        gate = b->gate;
        version_forget(b);
        b->ops->free(b);
        free(name);
        kms_gate_free(gate);
        return NULL;
}

const kms_setting *kms_config_find(const kms_backend_config *cfg, const char *key) {
        const kms_setting *found = NULL;

        /* Later lines (drop-ins) override earlier ones. */
        for (size_t i = 0; i < cfg->n_settings; i++)
                if (streq(cfg->settings[i].key, key))
                        found = &cfg->settings[i];
        return found;
}

int kms_config_error(char **ret_error, const kms_setting *s, const char *fmt, ...) {
        _cleanup_free_ char *msg = NULL;
        va_list ap;
        int k;

        va_start(ap, fmt);
        k = vasprintf(&msg, fmt, ap);
        va_end(ap);
        if (k < 0)
                return -ENOMEM;
        if (s) {
                if (asprintf(ret_error, "%s:%u: %s", s->file, s->line, msg) < 0)
                        return -ENOMEM;
        } else
                *ret_error = TAKE_PTR(msg);
        return -EINVAL;
}

bool kms_config_key_generic(const char *key) {
        return streq(key, "Type") || streq(key, "MaxConcurrentRequests") || streq(key, "RequestsPerSecond");
}

int kms_config_check_known(const kms_backend_config *cfg, const char *const *known, char **ret_error) {
        for (size_t i = 0; i < cfg->n_settings; i++) {
                bool ok = kms_config_key_generic(cfg->settings[i].key);

                for (const char *const *k = known; !ok && *k; k++)
                        ok = streq(*k, cfg->settings[i].key);
                if (!ok)
                        return kms_config_error(ret_error, &cfg->settings[i], "unknown key %s= in [Backend %s]",
                                                cfg->settings[i].key, cfg->name);
        }
        return 0;
}

int kms_config_check_file(const kms_setting *s, const char *key, char **ret_error) {
        struct stat st;

        if (s->value[0] != '/')
                return kms_config_error(ret_error, s, "%s= must be an absolute path: %s", key, s->value);
        if (stat(s->value, &st) < 0 || (S_ISREG(st.st_mode) && access(s->value, R_OK) < 0))
                return kms_config_error(ret_error, s, "%s=%s: %s", key, s->value, strerror(errno));
        if (!S_ISREG(st.st_mode))
                return kms_config_error(ret_error, s, "%s=%s: %s", key, s->value,
                                        S_ISDIR(st.st_mode) ? "a directory" : "not a regular file");
        return 0;
}

void kms_backend_config_done(kms_backend_config *cfg) {
        if (!cfg)
                return;
        for (size_t i = 0; i < cfg->n_settings; i++) {
                free(cfg->settings[i].key);
                free(cfg->settings[i].value);
                free(cfg->settings[i].file);
        }
        free(cfg->settings);
        free(cfg->name);
        free(cfg->type);
        *cfg = (kms_backend_config) {};
}

static int fill_backend(kms_backend *b, kms_key *k) {
        free(k->backend);
        k->backend = strdup(b->name);
        return k->backend ? 0 : -ENOMEM;
}

static bool key_is_default(const kms_key *k) {
        return streq_ptr(k->alias, KMS_DEFAULT_KEY_ALIAS);
}

/* What a failed call's errno says about the state of the CMK it used. */
static void record_state_from_errno(kms_backend *b, const char *id, int r) {
        static const struct {
                int error;
                kms_key_state state;
        } map[] = {
                { -EKEYREVOKED, KMS_KEY_DISABLED },
                { -EKEYEXPIRED, KMS_KEY_PENDING_DELETION },
                { -ENOKEY, KMS_KEY_DESTROYED },
                { -ENOENT, KMS_KEY_DESTROYED },
        };

        for (size_t i = 0; i < ELEMENTSOF(map); i++)
                if (map[i].error == r)
                        kms_gate_key_state_record(b->gate, id, map[i].state);
}

/* Runs @call through the backend's gate: waits for a slot and a token, clears the reason, retries
 * throttled answers (-EAGAIN) with backoff, and counts the result. Evaluates to the call's result;
 * a throttled answer that outlasts Timeout= becomes -EHOSTDOWN. */
#define GATED(b, op, call)                                                                          \
        ({                                                                                          \
                kms_call _c;                                                                        \
                int _r;                                                                             \
                wait_hooks_begin();                                                                 \
                _r = gate_enter((b), (op), &_c);                                                    \
                while (_r >= 0) {                                                                   \
                        kms_backend_clear_error(b);                                                 \
                        _r = (call);                                                                \
                        if (_r != -EAGAIN)                                                          \
                                break;                                                              \
                        if (gate_backoff((b), &_c) < 0)                                             \
                                break;                                                              \
                        _r = 0; /* backed off: try again */                                         \
                }                                                                                   \
                _r = gate_leave((b), &_c, _r);                                                      \
                wait_hooks_end();                                                                   \
                _r;                                                                                 \
        })

static int gate_enter(kms_backend *b, kms_op op, kms_call *c) {
        int r = kms_gate_enter(b->gate, op, c);
        kms_gate_status s;

        if (r == -EHOSTDOWN) {
                kms_gate_get_status(b->gate, &s);
                return kms_backend_set_error(b, r,
                                             "backend %s: no request slot came free within Timeout=%.1fs (all %u "
                                             "in use by calls the KMS has not answered)",
                                             b->name, (double) b->timeout / (double) USEC_PER_SEC, s.max_concurrent);
        }
        if (r == -ECANCELED)
                return kms_backend_set_error(b, r, "evs-cryptd is shutting down");
        return r;
}

static int gate_backoff(kms_backend *b, kms_call *c) {
        int r = kms_gate_backoff(c);

        if (r == -ECANCELED)
                (void) kms_backend_set_error(b, r, "evs-cryptd is shutting down");
        return r;
}

static int gate_leave(kms_backend *b, kms_call *c, int r) {
        kms_gate_leave(c, r);
        if (r == -EAGAIN)
                return kms_backend_set_error(b, -EHOSTDOWN, "the KMS of backend %s kept throttling the request "
                                             "for Timeout=%.1fs%s%s", b->name, (double) b->timeout / (double) USEC_PER_SEC,
                                             kms_backend_error(b) ? ": " : "", strempty(kms_backend_error(b)));
        return r;
}

/* The newest version of each CMK that an answer showed, for volume listings that must not wait on a KMS. */
typedef struct version_seen {
        const kms_backend *backend;
        char id[KMS_VERSION_SEEN_ID_MAX];
        unsigned version;
} version_seen;

static pthread_mutex_t versions_lock = PTHREAD_MUTEX_INITIALIZER;
static version_seen versions_seen[256];
static size_t n_versions_seen = 0, next_version_slot = 0;

static void version_record(const kms_backend *b, const kms_key *k) {
        size_t i;

        if (!k->id || k->version == 0 || strlen(k->id) >= KMS_VERSION_SEEN_ID_MAX)
                return;
        pthread_mutex_lock(&versions_lock);
        for (i = 0; i < n_versions_seen; i++)
                if (versions_seen[i].backend == b && streq(versions_seen[i].id, k->id))
                        break;
        if (i == n_versions_seen) {
                if (n_versions_seen < ELEMENTSOF(versions_seen))
                        i = n_versions_seen++;
                else { /* full: replace round-robin */
                        i = next_version_slot;
                        next_version_slot = (next_version_slot + 1) % ELEMENTSOF(versions_seen);
                }
                versions_seen[i].backend = b;
                strcpy(versions_seen[i].id, k->id);
        }
        versions_seen[i].version = k->version;
        pthread_mutex_unlock(&versions_lock);
}

int kms_key_version_seen(kms_backend *b, const char *id, unsigned *ret) {
        int r = -ENOENT;

        pthread_mutex_lock(&versions_lock);
        for (size_t i = 0; i < n_versions_seen; i++)
                if (versions_seen[i].backend == b && streq(versions_seen[i].id, id)) {
                        *ret = versions_seen[i].version;
                        r = 0;
                        break;
                }
        pthread_mutex_unlock(&versions_lock);
        return r;
}

static void version_forget(const kms_backend *b) {
        pthread_mutex_lock(&versions_lock);
        for (size_t i = 0; i < n_versions_seen; i++)
                if (versions_seen[i].backend == b)
                        versions_seen[i].backend = NULL;
        pthread_mutex_unlock(&versions_lock);
}

static int key_get_or_create_default(kms_backend *b, const char *ref, kms_key *k) {
        int r;

        r = b->ops->key_get(b, ref, k);
        if (r == -ENOENT && streq(ref, KMS_DEFAULT_KEY_ALIAS)) {
                /* The default CMK is created on first use. */
                kms_backend_clear_error(b);
                r = b->ops->key_create(b, KMS_DEFAULT_KEY_ALIAS, "Default EVS encryption key", k);
                if (r == -EEXIST) /* lost a race with another creator */
                        r = b->ops->key_get(b, ref, k);
        }
        return r;
}

static int finish_key(kms_backend *b, kms_key *k, kms_key *ret) {
        int r;

        r = fill_backend(b, k);
        if (r < 0) {
                kms_key_done(k);
                return r;
        }
        kms_gate_key_state_record(b->gate, k->id, k->state);
        version_record(b, k);
        *ret = *k;
        *k = (kms_key) {};
        return 0;
}

/* Describes of one CMK that overlap share a KMS call: a storm of detaches (the detach guard), of volume creates
 * or of checks under one CMK asks the KMS the same question many times at once. A caller takes only the answer
 * of a call that started after it asked: while one is in flight, those who ask wait for it to end, and the next
 * call answers all of them. The answer is thus as fresh as a call of the caller's own: a CMK disabled before
 * the caller asked never shows as enabled. Only a KMS that did not answer (-EHOSTDOWN: unreachable, timed out)
 * or shutdown (-ECANCELED) is taken from the call in flight too: it says nothing of the CMK, and asking again
 * would make those callers wait twice the backend's Timeout= for a KMS that is not there. */
typedef struct key_flight {
        const kms_backend *backend;
        char *ref;
        unsigned started, answered; /* calls started; the last one answered, whose result is below; a call
                                     * is in flight while they differ */
        unsigned users;             /* callers holding it */
        int result;
        kms_key key;                /* when result >= 0 */
        char *error;                /* the backend's reason, when result < 0 */
        pthread_cond_t cond;
        struct key_flight *next;
} key_flight;

static pthread_mutex_t flights_lock = PTHREAD_MUTEX_INITIALIZER;
static key_flight *flights = NULL;

static int key_copy(const kms_key *from, kms_key *to) {
        *to = *from;
        to->id = to->alias = to->description = to->backend = NULL;
        if (free_and_strdup(&to->id, from->id) < 0 || free_and_strdup(&to->alias, from->alias) < 0 ||
            free_and_strdup(&to->description, from->description) < 0 || free_and_strdup(&to->backend, from->backend) < 0) {
                kms_key_done(to);
                return -ENOMEM;
        }
        return 0;
}

/* Finds or makes the flight of @ref on @b, with one more user. NULL when out of memory. Called locked. */
static key_flight *flight_join(const kms_backend *b, const char *ref) {
        key_flight *f;

        for (f = flights; f; f = f->next)
                if (f->backend == b && streq(f->ref, ref))
                        break;
        if (!f) {
                f = calloc(1, sizeof *f);
                if (!f)
                        return NULL;
                f->ref = strdup(ref);
                if (!f->ref) {
                        free(f);
                        return NULL;
                }
                f->backend = b;
                pthread_cond_init(&f->cond, NULL);
                f->next = flights;
                flights = f;
        }
        f->users++;
        return f;
}

static void flight_leave(key_flight *f) {
        if (--f->users > 0)
                return;
        for (key_flight **p = &flights; *p; p = &(*p)->next)
                if (*p == f) {
                        *p = f->next;
                        break;
                }
        kms_key_done(&f->key);
        free(f->error);
        free(f->ref);
        pthread_cond_destroy(&f->cond);
        free(f);
}

/* The answer of @f's last call, for one caller: its result, the key, the backend's reason. Called locked. */
static int flight_answer(kms_backend *b, const key_flight *f, kms_key *ret) {
        if (f->result < 0)
                return f->error ? kms_backend_set_error(b, f->result, "%s", f->error) : f->result;
        kms_backend_clear_error(b);
        return key_copy(&f->key, ret);
}

static int key_get_shared(kms_backend *b, const char *ref, kms_key *ret) {
        key_flight *f;
        unsigned want;
        bool in_flight;
        int r;

        /* A caller that keeps its lock through KMS waits (inside libcryptsetup's token callback) asks on its
         * own: waiting for another caller's call would deadlock when that one needs the lock back. */
        if (wait_hooks_suppressed())
                return GATED(b, KMS_OP_GET, key_get_or_create_default(b, ref, ret));

        wait_hooks_begin(); /* waiting for another caller's answer is a KMS wait too */
        pthread_mutex_lock(&flights_lock);
        f = flight_join(b, ref);
        if (!f) {
                pthread_mutex_unlock(&flights_lock);
                r = GATED(b, KMS_OP_GET, key_get_or_create_default(b, ref, ret));
                wait_hooks_end();
                return r;
        }
        want = f->started + 1; /* a call that starts after now */
        in_flight = f->started != f->answered; /* and the one in flight now, if the KMS does not answer it */
        for (;;) {
                if (f->answered >= want ||
                    (in_flight && f->answered == want - 1 && (f->result == -EHOSTDOWN || f->result == -ECANCELED))) {
                        r = flight_answer(b, f, ret);
                        break;
                }
                if (f->started != f->answered) {
                        pthread_cond_wait(&f->cond, &flights_lock);
                        continue;
                }
                /* This caller makes the call, for itself and for those who ask meanwhile. */
                f->started++;
                pthread_mutex_unlock(&flights_lock);
                r = GATED(b, KMS_OP_GET, key_get_or_create_default(b, ref, ret));
                pthread_mutex_lock(&flights_lock);
                kms_key_done(&f->key);
                f->error = mfree(f->error);
                f->result = r >= 0 ? key_copy(ret, &f->key) : r;
                if (r < 0 && kms_backend_error(b))
                        f->error = strdup(kms_backend_error(b));
                f->answered = f->started;
                pthread_cond_broadcast(&f->cond);
                break;
        }
        flight_leave(f);
        pthread_mutex_unlock(&flights_lock);
        wait_hooks_end();
        return r;
}

int kms_key_get(kms_backend *b, const char *ref, kms_key *ret) {
        kms_key k = {};
        int r;

        r = key_get_shared(b, ref, &k);
        if (r < 0) {
                kms_key_done(&k);
                return r;
        }
        return finish_key(b, &k, ret);
}

int kms_key_create(kms_backend *b, const char *alias, const char *description, kms_key *ret) {
        kms_key k = {};
        int r;

        if (alias && !kms_alias_valid(alias))
                return kms_backend_set_error(b, -EINVAL, "invalid alias '%s': 1-128 of [A-Za-z0-9/_.-]", alias);
        if (description && strlen(description) > 1024)
                return kms_backend_set_error(b, -EINVAL, "description longer than 1024 bytes");

        r = GATED(b, KMS_OP_CREATE, b->ops->key_create(b, alias, description, &k));
        if (r < 0) {
                kms_key_done(&k);
                return r;
        }
        return finish_key(b, &k, ret);
}

int kms_key_list(kms_backend *b, kms_key **ret, size_t *ret_n) {
        kms_key *keys = NULL;
        size_t n = 0;
        int r;

        r = GATED(b, KMS_OP_LIST, b->ops->key_list(b, &keys, &n));
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                r = fill_backend(b, &keys[i]);
                if (r < 0) {
                        kms_key_array_free(keys, n);
                        return r;
                }
                kms_gate_key_state_record(b->gate, keys[i].id, keys[i].state);
                version_record(b, &keys[i]);
        }
        *ret = keys;
        *ret_n = n;
        return 0;
}

/* Resolves @ref and refuses changes to the default key. */
static int get_mutable(kms_backend *b, const char *ref, const char *what, kms_key *ret) {
        int r;

        r = kms_key_get(b, ref, ret);
        if (r < 0)
                return r;
        if (key_is_default(ret)) {
                kms_key_done(ret);
                return kms_backend_set_error(b, -KMS_EPROTECTED, "the default key %s can never be %s",
                                             KMS_DEFAULT_KEY_ALIAS, what);
        }
        return 0;
}

static int refresh(kms_backend *b, const char *id, kms_key *ret) {
        if (!ret)
                return 0;
        return kms_key_get(b, id, ret);
}

int kms_key_set_enabled(kms_backend *b, const char *ref, bool enabled, kms_key *ret) {
        _cleanup_(kms_key_done) kms_key k = {};
        int r;

        if (enabled)
                r = kms_key_get(b, ref, &k);
        else
                r = get_mutable(b, ref, "disabled", &k);
        if (r < 0)
                return r;
        r = GATED(b, KMS_OP_SET_ENABLED, b->ops->key_set_enabled(b, k.id, enabled));
        if (r < 0)
                return r;
        return refresh(b, k.id, ret);
}

int kms_key_schedule_deletion(kms_backend *b, const char *ref, unsigned days, kms_key *ret) {
        _cleanup_(kms_key_done) kms_key k = {};
        int r;

        if (days < KMS_DELETION_DAYS_MIN || days > KMS_DELETION_DAYS_MAX)
                return kms_backend_set_error(b, -EINVAL, "deletion window of %u days is outside %u..%u", days,
                                             KMS_DELETION_DAYS_MIN, KMS_DELETION_DAYS_MAX);
        r = get_mutable(b, ref, "scheduled for deletion", &k);
        if (r < 0)
                return r;
        if (!b->ops->key_schedule_deletion)
                return kms_backend_set_error(b, -EOPNOTSUPP, "backend %s has no scheduled key deletion", b->name);
        r = GATED(b, KMS_OP_SCHEDULE_DELETION, b->ops->key_schedule_deletion(b, k.id, days, ret));
        if (r < 0 || !ret)
                return r;
        kms_gate_key_state_record(b->gate, ret->id, ret->state);
        return fill_backend(b, ret);
}

int kms_key_cancel_deletion(kms_backend *b, const char *ref, kms_key *ret) {
        _cleanup_(kms_key_done) kms_key k = {};
        int r;

        r = kms_key_get(b, ref, &k);
        if (r < 0)
                return r;
        if (!b->ops->key_cancel_deletion)
                return kms_backend_set_error(b, -EOPNOTSUPP, "backend %s has no scheduled key deletion", b->name);
        r = GATED(b, KMS_OP_CANCEL_DELETION, b->ops->key_cancel_deletion(b, k.id));
        if (r < 0)
                return r;
        return refresh(b, k.id, ret);
}

int kms_wrap_versioned(kms_backend *b, const char *id, const char *context, const secret *plain, uint8_t **ret,
                       size_t *ret_size, unsigned *ret_version) {
        unsigned version = 0;
        int r;

        if (b->ops->wrap_versioned)
                r = GATED(b, KMS_OP_WRAP, b->ops->wrap_versioned(b, id, context, plain, ret, ret_size, &version));
        else
                r = GATED(b, KMS_OP_WRAP, b->ops->wrap(b, id, context, plain, ret, ret_size));
        if (r >= 0) {
                kms_gate_key_state_record(b->gate, id, KMS_KEY_ENABLED);
                if (ret_version)
                        *ret_version = version;
        } else
                record_state_from_errno(b, id, r);
        return r;
}

int kms_wrap(kms_backend *b, const char *id, const char *context, const secret *plain, uint8_t **ret,
             size_t *ret_size) {
        return kms_wrap_versioned(b, id, context, plain, ret, ret_size, NULL);
}

int kms_unwrap_versioned(kms_backend *b, const char *id, const char *context, const uint8_t *wrapped, size_t size,
                         unsigned version, secret **ret) {
        int r;

        kms_backend_clear_error(b);
        if (size == 0 || size > KMS_WRAPPED_MAX)
                return kms_backend_set_error(b, -EBADMSG, "wrapped key of %zu bytes", size);
        if (b->ops->unwrap_versioned)
                r = GATED(b, KMS_OP_UNWRAP, b->ops->unwrap_versioned(b, id, context, wrapped, size, version, ret));
        else
                r = GATED(b, KMS_OP_UNWRAP, b->ops->unwrap(b, id, context, wrapped, size, ret));
        if (r >= 0 && b->ops->unwrap_checks_state)
                kms_gate_key_state_record(b->gate, id, KMS_KEY_ENABLED);
        else if (r < 0)
                record_state_from_errno(b, id, r);
        return r;
}

int kms_unwrap(kms_backend *b, const char *id, const char *context, const uint8_t *wrapped, size_t size, secret **ret) {
        return kms_unwrap_versioned(b, id, context, wrapped, size, 0, ret);
}

/* Rotation is not a state change: the default key rotates too. A key that is not enabled does not (AWS KMS
 * refuses on-demand rotation of a disabled or pending-deletion key the same way). */
static int get_rotatable(kms_backend *b, const char *ref, const char *what, kms_key *ret) {
        char ts[FORMAT_TIMESTAMP_MAX];
        int r;

        r = kms_key_get(b, ref, ret);
        if (r < 0)
                return r;
        if (ret->state == KMS_KEY_ENABLED)
                return 0;
        if (ret->state == KMS_KEY_PENDING_DELETION)
                r = kms_backend_set_error(b, -EKEYREJECTED,
                                          "cannot %s key %s: it is pending deletion on %s (cancel the deletion and "
                                          "enable it first)",
                                          what, ret->id, format_timestamp(ts, sizeof ts, ret->deletion_date));
        else
                r = kms_backend_set_error(b, -EKEYREJECTED, "cannot %s key %s: it is %s%s", what, ret->id,
                                          kms_key_state_to_string(ret->state),
                                          ret->state == KMS_KEY_DISABLED ? " (enable it first)" : "");
        kms_key_done(ret);
        return r;
}

static int finish_rotation(kms_backend *b, int r, kms_key *ret) {
        if (r < 0 || !ret)
                return r;
        kms_gate_key_state_record(b->gate, ret->id, ret->state);
        version_record(b, ret);
        return fill_backend(b, ret);
}

int kms_key_rotate(kms_backend *b, const char *ref, kms_key *ret) {
        _cleanup_(kms_key_done) kms_key k = {};
        int r;

        if (!b->ops->key_rotate)
                return kms_backend_set_error(b, -EOPNOTSUPP, "rotation is not supported by backend %s (type %s)",
                                             b->name, b->ops->type);
        r = get_rotatable(b, ref, "rotate", &k);
        if (r < 0)
                return r;
        r = GATED(b, KMS_OP_ROTATE, b->ops->key_rotate(b, k.id, ret));
        return finish_rotation(b, r, ret);
}

int kms_key_set_rotation(kms_backend *b, const char *ref, unsigned days, kms_key *ret) {
        _cleanup_(kms_key_done) kms_key k = {};
        int r;

        if (days != 0 && (days < KMS_ROTATION_DAYS_MIN || days > KMS_ROTATION_DAYS_MAX))
                return kms_backend_set_error(b, -EINVAL, "rotation period of %u days is outside %u..%u", days,
                                             KMS_ROTATION_DAYS_MIN, KMS_ROTATION_DAYS_MAX);
        if (!b->ops->key_set_rotation)
                return kms_backend_set_error(b, -EOPNOTSUPP,
                                             "automatic rotation is not supported by backend %s (type %s)", b->name,
                                             b->ops->type);
        r = get_rotatable(b, ref, days ? "set the rotation of" : "turn off the rotation of", &k);
        if (r < 0)
                return r;
        r = GATED(b, KMS_OP_SET_ROTATION, b->ops->key_set_rotation(b, k.id, days, ret));
        return finish_rotation(b, r, ret);
}

int kms_sweep(kms_backend *b) {
        if (!b->ops->sweep)
                return 0;
        return GATED(b, KMS_OP_SWEEP, b->ops->sweep(b));
}

int kms_helper_processes(kms_backend *b, unsigned *ret_running, uint64_t *ret_started) {
        if (!b->ops->helper_processes)
                return -EOPNOTSUPP;
        return b->ops->helper_processes(b, ret_running, ret_started);
}

int kms_key_state_seen(kms_backend *b, const char *id, kms_key_state *ret) {
        return kms_gate_key_state_seen(b->gate, id, ret, NULL);
}

bool kms_backend_healthy(kms_backend *b) {
        return kms_gate_healthy(b->gate);
}

int kms_ref_split(const char *ref, char **ret_backend, char **ret_key) {
        _cleanup_free_ char *backend = NULL, *key = NULL;
        const char *colon;

        if (isempty(ref))
                return -EINVAL;
        colon = strchr(ref, ':');
        if (colon) {
                if (colon == ref || colon[1] == 0)
                        return -EINVAL;
                backend = strndup(ref, (size_t) (colon - ref));
                key = strdup(colon + 1);
                if (!backend || !key)
                        return -ENOMEM;
        } else {
                key = strdup(ref);
                if (!key)
                        return -ENOMEM;
        }
        *ret_backend = TAKE_PTR(backend);
        *ret_key = TAKE_PTR(key);
        return 0;
}
