/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Admission of KMS calls, one gate per backend instance, thread-safe. Every call of kms.c's generic
 * entry points passes through it:
 *   - at most MaxConcurrentRequests= calls in flight (1 for backends that are not thread-safe), the
 *     others wait in FIFO order; waiting for a slot counts against the backend's Timeout=;
 *   - RequestsPerSecond= starts (0 = unlimited), in FIFO order; waiting for one does not count
 *     against Timeout=: a storm larger than the quota queues, nothing is refused early;
 *   - a throttled answer (-EAGAIN from the backend) is retried with jittered exponential backoff
 *     until Timeout= has passed since the call was admitted; under RequestsPerSecond= the retry
 *     takes the next start, before the calls still waiting for theirs;
 *   - counters, a latency histogram per operation, and the last state seen of each CMK.
 * kms_gate_cancel_all() makes every waiting and every later call fail with -ECANCELED (shutdown). */

#include <stdbool.h>
#include <stdio.h>

#include "kms.h"

typedef enum kms_op {
        KMS_OP_GET,
        KMS_OP_LIST,
        KMS_OP_CREATE,
        KMS_OP_SET_ENABLED,
        KMS_OP_SCHEDULE_DELETION,
        KMS_OP_CANCEL_DELETION,
        KMS_OP_WRAP,
        KMS_OP_UNWRAP,
        KMS_OP_SWEEP,
        KMS_OP_ROTATE,
        KMS_OP_SET_ROTATION,
        _KMS_OP_MAX,
} kms_op;

const char *kms_op_to_string(kms_op op) _const_;

#define KMS_MAX_CONCURRENT_DEFAULT 16U
#define KMS_MAX_CONCURRENT_MAX 1024U
#define KMS_REQUESTS_PER_SECOND_MAX 100000U
#define KMS_GATE_TIMEOUT_DEFAULT_SEC 10U

typedef struct kms_gate kms_gate;

/* @max_concurrent 1..KMS_MAX_CONCURRENT_MAX, @requests_per_second 0 (unlimited) or more, @timeout > 0. */
int kms_gate_new(unsigned max_concurrent, unsigned requests_per_second, usec_t timeout, kms_gate **ret);
kms_gate *kms_gate_free(kms_gate *g);
/* The RequestsPerSecond= limiter on its own, for tests: reserves the start of one more call wanting to start
 * at @now (CLOCK_MONOTONIC) and returns when it may; the call then starts @late after that (a busy host).
 * kms_gate_enter() schedules through the same functions. */
usec_t kms_gate_reserve_start(kms_gate *g, usec_t now, usec_t late);

/* One call through the gate, on the caller's stack. */
typedef struct kms_call {
        kms_gate *gate;
        kms_op op;
        usec_t started;  /* CLOCK_MONOTONIC, the start it was given under RequestsPerSecond= (or when it
                          * began), and its retry's after kms_gate_backoff() */
        usec_t admitted; /* CLOCK_MONOTONIC, when the slot was taken */
        usec_t deadline; /* for retries of throttled answers */
        unsigned attempt;
        bool entered;
        struct kms_call *prev, *next; /* the gate's list of calls in flight */
} kms_call;

/* Waits for its start and a slot. -EHOSTDOWN when no slot freed up within Timeout=, -ECANCELED after
 * kms_gate_cancel_all(). */
int kms_gate_enter(kms_gate *g, kms_op op, kms_call *c);
/* After a throttled answer: sleeps a jittered, exponentially growing time and takes a new start
 * (the next one: the calls waiting for theirs wait for it). -ETIME when the retry would start at or
 * after the deadline, -ECANCELED on shutdown. */
int kms_gate_backoff(kms_call *c);
/* Ends the call with result @r (counted; -EAGAIN counts as throttled). No-op when not entered. */
void kms_gate_leave(kms_call *c, int r);

/* Makes every waiting and later call fail with -ECANCELED. Irreversible (process shutdown). */
void kms_gate_cancel_all(void);
bool kms_gate_cancelled(void);
/* A descriptor that becomes readable once kms_gate_cancel_all() was called (for a backend's
 * poll()), or -EBADF when it could not be made. */
int kms_gate_cancel_fd(void);

typedef struct kms_gate_status {
        unsigned in_flight;
        unsigned queued;
        unsigned max_in_flight; /* high-water mark since start */
        unsigned max_concurrent;
        unsigned requests_per_second;
        usec_t oldest_in_flight; /* CLOCK_MONOTONIC start of the oldest call in flight, 0 when none */
        usec_t last_unavailable; /* CLOCK_MONOTONIC end of the last call that failed with -EHOSTDOWN */
} kms_gate_status;

void kms_gate_get_status(kms_gate *g, kms_gate_status *ret);

/* True when a call now would likely be answered soon: no call in flight for more than a second and
 * none failed as unavailable in the last ten. Views use it to decide whether to ask or show what
 * was seen last. */
bool kms_gate_healthy(kms_gate *g);

/* The last state of CMK @id that a KMS answer showed (a describe, a list, a wrap or unwrap).
 * -ENOENT when none was seen. */
int kms_gate_key_state_seen(kms_gate *g, const char *id, kms_key_state *ret_state, usec_t *ret_when);
void kms_gate_key_state_record(kms_gate *g, const char *id, kms_key_state state);

/* Appends this gate's OpenMetrics families' samples for backend @name to @f. Families are written
 * by kms_gate_metrics_write() for all gates at once. */
void kms_gate_metrics_write(FILE *f, kms_gate *const *gates, const char *const *names, size_t n);
