/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The KMS backend interface. A backend instance is configured by a `[Backend NAME]` section of
 * evs-cryptd.conf (Type= picks the implementation); the implicit instance "local" always exists.
 * CMKs are named by a reference "[BACKEND:]ID-OR-ALIAS".
 *
 * Errors every backend returns, with the meaning the daemon and evsctl rely on (errors.h maps
 * them to bus errors and exit codes):
 *   -ENOENT       no such CMK
 *   -EKEYREVOKED  CMK disabled
 *   -EKEYEXPIRED  CMK pending deletion
 *   -ENOKEY       CMK destroyed (its material is gone)
 *   -EHOSTDOWN    KMS unreachable, timed out, TLS or authentication failure
 *   -EBADMSG      wrapped key failed authentication (tampered, or bound to another context)
 *   -EXDEV        wrapped key belongs to another CMK
 *   -EKEYREJECTED the lifecycle transition is not allowed from the CMK's current state
 *   -KMS_EPROTECTED the CMK is protected (evs/default); not -EPERM, which a failed file write gives
 *   -EOPNOTSUPP   the KMS has no such operation (the message says which)
 *   -EEXIST       the alias is taken
 *   -EINVAL       bad argument or bad configuration
 *   -EPROTO       the KMS sent a malformed reply
 *   -EAGAIN       the KMS throttled the request (quota): kms.c retries it with backoff within Timeout=;
 *                 callers see -EHOSTDOWN when it never got through
 *   -ECANCELED    the process is shutting down (kms_gate_cancel_all())
 * A backend may leave a one-line human reason with kms_backend_set_error(); callers append it. The
 * reason is kept per thread: read it with kms_backend_error() on the thread that made the call.
 *
 * Every call of the generic functions below passes the backend's gate (kms-gate.h): concurrency,
 * rate limit, retries of throttled answers, counters. Settings every [Backend] section takes:
 *   MaxConcurrentRequests=N  1..1024, default 16 (1 in effect for backends that are not thread-safe)
 *   RequestsPerSecond=N      0 (unlimited, default) .. 100000
 * and the gate's waits for a slot end after the backend's Timeout= (default 10 s). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"
#include "names.h"

/* "This CMK can never be changed so": an errno no system call returns, so it is never confused with one. */
#define KMS_EPROTECTED EBADRQC
#include "secret.h"
#include "time-util.h"

#define KMS_DEFAULT_KEY_ALIAS "evs/default"
/* A key the way the operator named it (@ref; "" is the default key), then its @id when that differs, for
 * "key %s%s%s%s": "key app1 (3f6c...)", "key 3f6c...". */
#define KMS_KEY_TYPED_(ref) (isempty(ref) ? KMS_DEFAULT_KEY_ALIAS : (ref))
#define KMS_KEY_AS_TYPED(ref, id)                                                                       \
        KMS_KEY_TYPED_(ref), streq(KMS_KEY_TYPED_(ref), (id)) ? "" : " (",                             \
                streq(KMS_KEY_TYPED_(ref), (id)) ? "" : (id), streq(KMS_KEY_TYPED_(ref), (id)) ? "" : ")"
#define KMS_LOCAL_BACKEND "local"
#define KMS_DELETION_DAYS_MIN 7U
#define KMS_DELETION_DAYS_MAX 1096U
#define KMS_ROTATION_DAYS_MIN 30U
#define KMS_ROTATION_DAYS_MAX 365U
#define KMS_DATA_KEY_SIZE 32U
#define KMS_WRAPPED_MAX 4096U

typedef enum kms_key_state {
        KMS_KEY_ENABLED,
        KMS_KEY_DISABLED,
        KMS_KEY_PENDING_DELETION,
        KMS_KEY_DESTROYED,
        KMS_KEY_UNAVAILABLE,
        _KMS_KEY_STATE_MAX,
        _KMS_KEY_STATE_INVALID = -EINVAL,
} kms_key_state;

const char *kms_key_state_to_string(kms_key_state s) _const_;
kms_key_state kms_key_state_from_string(const char *s) _pure_;
/* -EKEYREVOKED, -EKEYEXPIRED, -ENOKEY, -EHOSTDOWN for a state a CMK cannot be used in, else 0. */
int kms_key_state_to_errno(kms_key_state s) _const_;

typedef struct kms_key {
        char *id;          /* backend's own unique id (UUID for local) */
        char *alias;       /* NULL when none */
        char *description; /* NULL when none */
        char *backend;     /* backend instance name, filled by kms.c */
        kms_key_state state;
        usec_t created;       /* CLOCK_REALTIME, 0 when unknown */
        usec_t deletion_date; /* 0 unless pending deletion */
        /* Key versions (rotation). 0 where the backend does not know or does not rotate. */
        unsigned version;       /* the newest material version: the one wraps use */
        unsigned rotation_days; /* automatic rotation period, 0 = off */
        usec_t next_rotation;   /* when the next automatic rotation is due, 0 = none */
        usec_t rotated;         /* when the newest version was made by a rotation, 0 = never rotated */
} kms_key;

void kms_key_done(kms_key *k);
void kms_key_array_free(kms_key *keys, size_t n);

/* One `Key=Value` line of a backend's section, with where it came from for error messages. */
typedef struct kms_setting {
        char *key;
        char *value;
        char *file;
        unsigned line;
} kms_setting;

typedef struct kms_backend_config {
        char *name; /* instance name: "local", "kmip", "hsm1"... */
        char *type; /* implementation: local, kmip, pkcs11, exec */
        kms_setting *settings;
        size_t n_settings;
} kms_backend_config;

/* What the host gives every backend. */
typedef struct kms_context {
        const char *state_dir;       /* the daemon's state directory */
        const char *credentials_dir; /* $CREDENTIALS_DIRECTORY, or NULL */
        usec_t (*now)(void);         /* CLOCK_REALTIME source; tests inject their own */
} kms_context;

typedef struct kms_backend kms_backend;

typedef struct kms_backend_ops {
        const char *type;
        /* Calls on one instance may run concurrently from several threads. When false, the gate
         * lets one call in at a time. */
        bool thread_safe;
        /* unwrap() itself refuses a CMK that is not enabled with the state's errno and a reason (the
         * KMS enforces it), so an unwrap needs no describe before it. */
        bool unwrap_checks_state;
        /* Validates @cfg (unknown keys and bad values are -EINVAL with *ret_error set to
         * "FILE:LINE: reason") and creates the instance. Must not contact the KMS yet. */
        int (*open)(const kms_backend_config *cfg, const kms_context *ctx, kms_backend **ret, char **ret_error);
        void (*free)(kms_backend *b);

        int (*key_create)(kms_backend *b, const char *alias, const char *description, kms_key *ret);
        int (*key_list)(kms_backend *b, kms_key **ret, size_t *ret_n);
        /* @ref is an id or an alias. -ENOENT. */
        int (*key_get)(kms_backend *b, const char *ref, kms_key *ret);
        int (*key_set_enabled)(kms_backend *b, const char *id, bool enabled);
        int (*key_schedule_deletion)(kms_backend *b, const char *id, unsigned days, kms_key *ret);
        int (*key_cancel_deletion)(kms_backend *b, const char *id);
        /* Encrypts the data key under CMK @id, bound to @context (the volume id). Refuses a CMK
         * that is not enabled with the state's errno. Output at most KMS_WRAPPED_MAX bytes. */
        int (*wrap)(kms_backend *b, const char *id, const char *context, const secret *plain,
                    uint8_t **ret, size_t *ret_size);
        int (*unwrap)(kms_backend *b, const char *id, const char *context, const uint8_t *wrapped,
                      size_t size, secret **ret);
        /* Optional: wrap() that also says which version of the CMK's material it used (0 when the KMS
         * does not say). Used instead of wrap() when present. */
        int (*wrap_versioned)(kms_backend *b, const char *id, const char *context, const secret *plain,
                              uint8_t **ret, size_t *ret_size, unsigned *ret_version);
        /* Optional: unwrap() told the version recorded beside the wrapped key (0 when unknown). Used instead
         * of unwrap() when present. */
        int (*unwrap_versioned)(kms_backend *b, const char *id, const char *context, const uint8_t *wrapped,
                                size_t size, unsigned version, secret **ret);
        /* Optional: a new material version of CMK @id now (the key id stays). Without it rotation is
         * -EOPNOTSUPP. *ret (may be NULL) describes the key afterwards. */
        int (*key_rotate)(kms_backend *b, const char *id, kms_key *ret);
        /* Optional: automatic rotation every @days (KMS_ROTATION_DAYS_MIN..MAX), 0 = off. */
        int (*key_set_rotation)(kms_backend *b, const char *id, unsigned days, kms_key *ret);
        /* Optional: housekeeping (expire keys whose deletion window has passed). */
        int (*sweep)(kms_backend *b);
        /* Optional: the helper processes the backend keeps running (exec, Persistent=yes): how many run now
         * (idle or serving a call) and how many were started since it was opened. -EOPNOTSUPP without. */
        int (*helper_processes)(kms_backend *b, unsigned *ret_running, uint64_t *ret_started);
} kms_backend_ops;

/* Every backend's instance struct starts with this. */
struct kms_gate;

struct kms_backend {
        const kms_backend_ops *ops;
        char *name;
        const kms_context *ctx;
        struct kms_gate *gate; /* set by kms_backend_open() */
        usec_t timeout;        /* the backend's Timeout= (or the default), for the gate */
};

/* Records a one-line reason for the current failure; returns @r (negative errno). */
int kms_backend_set_error(kms_backend *b, int r, const char *fmt, ...) _printf_(3, 4);
const char *kms_backend_error(const kms_backend *b);
/* For a backend that makes a call of its own while explaining a failure: takes the current reason
 * (NULL when none) and puts one back. */
char *kms_backend_error_take(kms_backend *b);
void kms_backend_error_put(kms_backend *b, char *s);

/* Looks up a backend implementation by type. NULL when unknown. */
const kms_backend_ops *kms_backend_ops_find(const char *type);

/* Opens an instance: validates the type and calls ops->open. *ret_error as ops->open. */
int kms_backend_open(const kms_backend_config *cfg, const kms_context *ctx, kms_backend **ret, char **ret_error);
kms_backend *kms_backend_free(kms_backend *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(kms_backend *, kms_backend_free);

/* Helpers for backends parsing their settings. */
const kms_setting *kms_config_find(const kms_backend_config *cfg, const char *key);
int kms_config_error(char **ret_error, const kms_setting *s, const char *fmt, ...) _printf_(3, 4);
/* -EINVAL with *ret_error naming the first key not in the NULL-terminated @known list. */
/* Type=, MaxConcurrentRequests=, RequestsPerSecond=: the keys every backend type takes. */
bool kms_config_key_generic(const char *key) _pure_;
int kms_config_check_known(const kms_backend_config *cfg, const char *const *known, char **ret_error);
/* @s (KEY=) names a file a backend reads: an absolute path of a readable regular file (a directory or a FIFO
 * would fail later, or block the reader). -EINVAL with *ret_error "FILE:LINE: reason" else. */
int kms_config_check_file(const kms_setting *s, const char *key, char **ret_error);
void kms_backend_config_done(kms_backend_config *cfg);

/* The generic rules, one implementation for every backend: the default key is created on first
 * use and never disabled or deleted; deletion windows are 7..1096 days; backend names filled in. */
int kms_key_get(kms_backend *b, const char *ref, kms_key *ret);
int kms_key_create(kms_backend *b, const char *alias, const char *description, kms_key *ret);
int kms_key_list(kms_backend *b, kms_key **ret, size_t *ret_n);
int kms_key_set_enabled(kms_backend *b, const char *ref, bool enabled, kms_key *ret);
int kms_key_schedule_deletion(kms_backend *b, const char *ref, unsigned days, kms_key *ret);
int kms_key_cancel_deletion(kms_backend *b, const char *ref, kms_key *ret);
int kms_wrap(kms_backend *b, const char *id, const char *context, const secret *plain, uint8_t **ret, size_t *ret_size);
int kms_unwrap(kms_backend *b, const char *id, const char *context, const uint8_t *wrapped, size_t size, secret **ret);
int kms_sweep(kms_backend *b);
/* The helper processes @b keeps running (exec with Persistent=yes; no KMS call): -EOPNOTSUPP for others. */
int kms_helper_processes(kms_backend *b, unsigned *ret_running, uint64_t *ret_started);
/* kms_wrap() that also returns the version of the CMK's material used (0 when the backend does not say). */
int kms_wrap_versioned(kms_backend *b, const char *id, const char *context, const secret *plain, uint8_t **ret,
                       size_t *ret_size, unsigned *ret_version);
/* kms_unwrap() given the version recorded with the wrapped key (0 = unknown). */
int kms_unwrap_versioned(kms_backend *b, const char *id, const char *context, const uint8_t *wrapped, size_t size,
                         unsigned version, secret **ret);
/* Rotation: a new material version now; automatic rotation every @days (30..365) or off (@days 0).
 * Allowed for the default key (rotation is not a state change); refused with -EKEYREJECTED for a CMK that
 * is disabled or pending deletion (like AWS KMS); -EOPNOTSUPP (with the reason) for a backend without it;
 * -EINVAL for @days outside 30..365. *ret (may be NULL) describes the key afterwards. */
int kms_key_rotate(kms_backend *b, const char *ref, kms_key *ret);
int kms_key_set_rotation(kms_backend *b, const char *ref, unsigned days, kms_key *ret);

/* Every backend call, its waits included, runs between wait_hooks_begin() and wait_hooks_end()
 * (wait-hooks.h). */

/* The last state of CMK @id that an answer of @b showed, without asking the KMS. -ENOENT when none. */
int kms_key_state_seen(kms_backend *b, const char *id, kms_key_state *ret);
/* The newest version of CMK @id (its id, not an alias) that an answer of @b showed, without asking the KMS.
 * -ENOENT when none. */
#define KMS_VERSION_SEEN_ID_MAX 256U
int kms_key_version_seen(kms_backend *b, const char *id, unsigned *ret);
/* Whether a call to @b would likely be answered soon (see kms_gate_healthy()). */
bool kms_backend_healthy(kms_backend *b);


/* Splits "[BACKEND:]REF"; *ret_backend is NULL when no backend is named. */
int kms_ref_split(const char *ref, char **ret_backend, char **ret_key);
