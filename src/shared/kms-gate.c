/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>

#include "histogram.h"
#include "kms-gate.h"
#include "list.h"
#include "string-util.h"

#define BACKOFF_BASE_USEC (25U * 1000U)
#define BACKOFF_MAX_USEC (2U * USEC_PER_SEC)
#define KEY_STATES_MAX 4096U

static const double histogram_bounds[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 };

typedef struct op_stats {
        uint64_t ok, error, throttled;
        histogram duration; /* from admission to the final answer */
} op_stats;

typedef struct key_seen {
        char *id;
        kms_key_state state;
        usec_t when;
} key_seen;

/* A call waiting for its start under RequestsPerSecond=, on the caller's stack. */
typedef struct rate_waiter {
        pthread_cond_t cond;  /* signalled when it becomes the first, and on shutdown */
        usec_t arrived;       /* when it began to wait */
        usec_t not_before;    /* a retry's backoff */
        usec_t start;         /* the start it was given */
        bool retry;
        struct rate_waiter *prev, *next;
} rate_waiter;

struct kms_gate {
        pthread_mutex_t lock;
        pthread_cond_t cond; /* a slot freed up, or shutdown */
        unsigned max_concurrent, requests_per_second;
        usec_t timeout;
        unsigned in_flight, queued, max_in_flight;
        usec_t *starts;                /* rate limit: when the last requests_per_second calls started, a ring */
        unsigned next_start, n_starts; /* its oldest entry (the next to be replaced), how many it holds */
        usec_t last_start;             /* the last start as it was scheduled */
        rate_waiter *waiters;          /* waiting for a start: retries first, then the others in order */
        rate_waiter *waiters_tail;
        usec_t last_unavailable;
        kms_call *calls;               /* in flight, oldest first */
        kms_call *calls_tail;
        op_stats ops[_KMS_OP_MAX];
        key_seen *keys;
        size_t n_keys;
};

static const char *const op_names[_KMS_OP_MAX] = {
        [KMS_OP_GET] = "get",
        [KMS_OP_LIST] = "list",
        [KMS_OP_CREATE] = "create",
        [KMS_OP_SET_ENABLED] = "set-enabled",
        [KMS_OP_SCHEDULE_DELETION] = "schedule-deletion",
        [KMS_OP_CANCEL_DELETION] = "cancel-deletion",
        [KMS_OP_WRAP] = "wrap",
        [KMS_OP_UNWRAP] = "unwrap",
        [KMS_OP_SWEEP] = "sweep",
        [KMS_OP_ROTATE] = "rotate",
        [KMS_OP_SET_ROTATION] = "set_rotation",
};

const char *kms_op_to_string(kms_op op) {
        return op >= 0 && op < _KMS_OP_MAX ? op_names[op] : NULL;
}

static void cond_init_monotonic(pthread_cond_t *cond) {
        pthread_condattr_t attr;

        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(cond, &attr);
        pthread_condattr_destroy(&attr);
}

/* ---- shutdown ---- */

/* cancel_lock guards cancel_fd and all_gates; it is taken before a gate's lock, never after. */
static pthread_mutex_t cancel_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool cancelled = false;
static int cancel_fd = -EBADF;
static kms_gate **all_gates = NULL; /* to wake their waiters */
static size_t n_all_gates = 0;

int kms_gate_cancel_fd(void) {
        int fd;

        pthread_mutex_lock(&cancel_lock);
        if (cancel_fd < 0) {
                cancel_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                if (cancel_fd >= 0 && cancelled)
                        (void) eventfd_write(cancel_fd, 1);
        }
        fd = cancel_fd;
        pthread_mutex_unlock(&cancel_lock);
        return fd;
}

void kms_gate_cancel_all(void) {
        pthread_mutex_lock(&cancel_lock);
        atomic_store(&cancelled, true);
        if (cancel_fd >= 0)
                (void) eventfd_write(cancel_fd, 1);
        for (size_t i = 0; i < n_all_gates; i++) {
                kms_gate *g = all_gates[i];

                pthread_mutex_lock(&g->lock);
                pthread_cond_broadcast(&g->cond);
                for (rate_waiter *w = g->waiters; w; w = w->next)
                        pthread_cond_signal(&w->cond);
                pthread_mutex_unlock(&g->lock);
        }
        pthread_mutex_unlock(&cancel_lock);
}

bool kms_gate_cancelled(void) {
        return atomic_load(&cancelled); /* read under gate locks: must not take cancel_lock */
}

/* ---- gates ---- */

int kms_gate_new(unsigned max_concurrent, unsigned requests_per_second, usec_t timeout, kms_gate **ret) {
        kms_gate *g, **a;

        if (max_concurrent < 1 || max_concurrent > KMS_MAX_CONCURRENT_MAX ||
            requests_per_second > KMS_REQUESTS_PER_SECOND_MAX || timeout == 0)
                return -EINVAL;
        g = calloc(1, sizeof *g);
        if (!g)
                return -ENOMEM;
        for (int op = 0; op < _KMS_OP_MAX; op++)
                g->ops[op].duration = HISTOGRAM_INIT(histogram_bounds);
        g->max_concurrent = max_concurrent;
        g->requests_per_second = requests_per_second;
        g->timeout = timeout;
        if (requests_per_second > 0) {
                g->starts = calloc(requests_per_second, sizeof *g->starts);
                if (!g->starts) {
                        free(g);
                        return -ENOMEM;
                }
        }
        pthread_mutex_init(&g->lock, NULL);
        cond_init_monotonic(&g->cond);

        pthread_mutex_lock(&cancel_lock);
        a = reallocarray(all_gates, n_all_gates + 1, sizeof *a);
        if (a) {
                all_gates = a;
                all_gates[n_all_gates++] = g;
        }
        pthread_mutex_unlock(&cancel_lock);
        if (!a) {
                kms_gate_free(g);
                return -ENOMEM;
        }
        *ret = g;
        return 0;
}

kms_gate *kms_gate_free(kms_gate *g) {
        if (!g)
                return NULL;
        pthread_mutex_lock(&cancel_lock);
        for (size_t i = 0; i < n_all_gates; i++)
                if (all_gates[i] == g) {
                        all_gates[i] = all_gates[--n_all_gates];
                        break;
                }
        if (n_all_gates == 0)
                all_gates = mfree(all_gates);
        pthread_mutex_unlock(&cancel_lock);

        for (size_t i = 0; i < g->n_keys; i++)
                free(g->keys[i].id);
        free(g->keys);
        free(g->starts);
        pthread_cond_destroy(&g->cond);
        pthread_mutex_destroy(&g->lock);
        free(g);
        return NULL;
}

static struct timespec timespec_from_usec(usec_t u) {
        return (struct timespec) { .tv_sec = (time_t) (u / USEC_PER_SEC), .tv_nsec = (long) (u % USEC_PER_SEC) * 1000 };
}

/* Waits on @cond until @until (CLOCK_MONOTONIC) at the latest. Called locked. */
static void wait_until(kms_gate *g, pthread_cond_t *cond, usec_t until) {
        struct timespec ts = timespec_from_usec(until);

        (void) pthread_cond_timedwait(cond, &g->lock, &ts);
}

/* The window of RequestsPerSecond=: a second, and 5% more. The KMS counts arrivals, which the host's
 * scheduling and the network delay by a varying amount: starts exactly a second apart would reach it
 * closer than that half of the time (bench (h), 5/s: 54 of 254 unwraps throttled, every retry taking a
 * place in the window again, 1.7x the wall). */
#define RATE_WINDOW_USEC (USEC_PER_SEC + USEC_PER_SEC / 20)

/* When the next call may start under RequestsPerSecond=N, wanting to since @now: at most N starts within any
 * RATE_WINDOW_USEC (the KMS quota's own terms, "N requests per second", with a margin), bursts of up to N
 * at once. A token bucket of N with bursts of N would let 2N start within the first second after a pause,
 * which a KMS counting per second throttles. While the window's N are used up, the calls that wait are
 * spaced 1/N of it apart instead of released N at once when it passes: a burst reaches the KMS spread by
 * the host's scheduling, and its late arrivals would otherwise fall within a second of the next burst's
 * early ones. Starts are recorded in order (record_start()), so the one N calls back is the oldest of the
 * ring. The window counts from when that call did start, which a busy host makes later than scheduled; the
 * pace counts from the schedule, so that such delays do not add up. Called locked. */
static usec_t next_start(const kms_gate *g, usec_t now) {
        usec_t t;

        if (g->n_starts == 0)
                return now;
        t = MAX(now, g->last_start); /* never before the last one: a caller may have read the clock before another */
        if (g->n_starts == g->requests_per_second) {
                usec_t window = g->starts[g->next_start] + RATE_WINDOW_USEC;

                if (window > now) /* paced: this window's N are taken */
                        t = MAX(window, g->last_start + RATE_WINDOW_USEC / g->requests_per_second);
        }
        return t;
}

/* A call scheduled for @scheduled started at @actual (not before it). */
static void record_start(kms_gate *g, usec_t scheduled, usec_t actual) {
        g->starts[g->next_start] = actual;
        g->next_start = (g->next_start + 1) % g->requests_per_second;
        if (g->n_starts < g->requests_per_second)
                g->n_starts++;
        g->last_start = scheduled;
}

usec_t kms_gate_reserve_start(kms_gate *g, usec_t now, usec_t late) {
        usec_t t = now;

        pthread_mutex_lock(&g->lock);
        if (g->requests_per_second > 0) {
                t = next_start(g, now);
                record_start(g, t, t + late);
        }
        pthread_mutex_unlock(&g->lock);
        return t;
}

/* Sleeps on the gate's condition until @until, locked; -ECANCELED on shutdown. */
static int sleep_until(kms_gate *g, usec_t until) {
        for (;;) {
                if (kms_gate_cancelled())
                        return -ECANCELED;
                if (now_monotonic() >= until)
                        return 0;
                wait_until(g, &g->cond, until);
        }
}

/* Waits for this call's start under RequestsPerSecond= and records it. The calls wait in one queue and only
 * the first sleeps until its time, so a start wakes one thread, not the whole storm. A retry after a
 * throttled answer (@w->retry) goes before the calls that have not been sent yet, after the retries already
 * waiting: the KMS saw it, and sending it to the back would make its caller wait for the whole queue (N/R
 * seconds of a storm of N), beyond its Timeout=. While its backoff lasts, the calls behind it wait too: the
 * KMS said it is over its quota. -ETIME when the start would come at or after @deadline, -ECANCELED on
 * shutdown. Called locked. */
static int wait_for_start(kms_gate *g, rate_waiter *w, usec_t deadline) {
        rate_waiter *after = NULL;
        int r;

        w->arrived = now_monotonic();
        cond_init_monotonic(&w->cond);
        if (w->retry)
                for (rate_waiter *i = g->waiters; i && i->retry; i = i->next)
                        after = i;
        else
                after = g->waiters_tail;
        LIST_INSERT_AFTER(g->waiters, g->waiters_tail, after, w);

        for (;;) {
                usec_t now = now_monotonic(), t;

                if (kms_gate_cancelled()) {
                        r = -ECANCELED;
                        break;
                }
                if (g->waiters != w) {
                        if (now >= deadline) {
                                r = -ETIME;
                                break;
                        }
                        if (deadline == UINT64_MAX)
                                (void) pthread_cond_wait(&w->cond, &g->lock);
                        else
                                wait_until(g, &w->cond, deadline);
                        continue;
                }
                t = MAX(next_start(g, w->arrived), w->not_before);
                if (t >= deadline) {
                        r = -ETIME;
                        break;
                }
                if (now >= t) {
                        record_start(g, t, now);
                        w->start = t;
                        r = 0;
                        break;
                }
                wait_until(g, &w->cond, t);
        }

        LIST_REMOVE(g->waiters, g->waiters_tail, w);
        if (g->waiters) /* the next one's turn */
                pthread_cond_signal(&g->waiters->cond);
        pthread_cond_destroy(&w->cond);
        return r;
}

int kms_gate_enter(kms_gate *g, kms_op op, kms_call *c) {
        usec_t deadline;
        int r;

        *c = (kms_call) { .gate = g, .op = op };
        if (!g)
                return 0;

        pthread_mutex_lock(&g->lock);
        g->queued++;
        if (g->requests_per_second > 0) {
                rate_waiter w = {};

                r = wait_for_start(g, &w, UINT64_MAX);
                c->started = w.start;
        } else {
                r = 0;
                c->started = now_monotonic();
        }

        /* A slot; waiting for it counts against Timeout=. */
        deadline = now_monotonic() + g->timeout;
        while (r >= 0 && g->in_flight >= g->max_concurrent) {
                if (kms_gate_cancelled())
                        r = -ECANCELED;
                else if (now_monotonic() >= deadline)
                        r = -EHOSTDOWN;
                else
                        wait_until(g, &g->cond, deadline);
        }
        g->queued--;
        if (r < 0) {
                if (r == -EHOSTDOWN)
                        g->last_unavailable = now_monotonic();
                pthread_mutex_unlock(&g->lock);
                return r;
        }

        g->in_flight++;
        g->max_in_flight = MAX(g->max_in_flight, g->in_flight);
        c->admitted = now_monotonic();
        c->deadline = c->admitted + g->timeout;
        c->entered = true;
        LIST_APPEND(g->calls, g->calls_tail, c);
        pthread_mutex_unlock(&g->lock);
        return 0;
}

static uint64_t random_u64(void) {
        static __thread uint64_t state = 0;

        if (state == 0 && getrandom(&state, sizeof state, GRND_NONBLOCK) != sizeof state)
                state = now_monotonic() ^ (uint64_t) (uintptr_t) &state;
        state |= 1;
        /* xorshift64* */
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        return state * UINT64_C(2685821657736338717);
}

int kms_gate_backoff(kms_call *c) {
        kms_gate *g = c->gate;
        usec_t cap, delay, until;
        int r;

        if (!g || !c->entered)
                return -ETIME;
        cap = MIN((usec_t) BACKOFF_BASE_USEC << MIN(c->attempt, 16U), (usec_t) BACKOFF_MAX_USEC);
        delay = cap / 2 + random_u64() % (cap / 2 + 1); /* "equal jitter" */
        c->attempt++;

        pthread_mutex_lock(&g->lock);
        g->ops[c->op].throttled++;
        until = now_monotonic() + delay;
        if (g->requests_per_second > 0) {
                rate_waiter w = { .retry = true, .not_before = until };

                r = wait_for_start(g, &w, c->deadline);
                until = w.start;
        } else if (until >= c->deadline)
                r = -ETIME;
        else
                r = sleep_until(g, until);
        if (r >= 0)
                c->started = until;
        pthread_mutex_unlock(&g->lock);
        return r;
}

void kms_gate_leave(kms_call *c, int r) {
        kms_gate *g = c->gate;
        op_stats *s;
        usec_t duration;

        if (!g || !c->entered)
                return;
        duration = now_monotonic() - c->admitted;

        pthread_mutex_lock(&g->lock);
        s = &g->ops[c->op];
        if (r >= 0)
                s->ok++;
        else if (r == -EAGAIN)
                s->throttled++;
        else
                s->error++;
        histogram_observe(&s->duration, duration);
        if (r == -EHOSTDOWN)
                g->last_unavailable = now_monotonic();

        LIST_REMOVE(g->calls, g->calls_tail, c);
        g->in_flight--;
        pthread_cond_broadcast(&g->cond);
        pthread_mutex_unlock(&g->lock);
        c->entered = false;
}

void kms_gate_get_status(kms_gate *g, kms_gate_status *ret) {
        *ret = (kms_gate_status) {};
        if (!g)
                return;
        pthread_mutex_lock(&g->lock);
        *ret = (kms_gate_status) {
                .in_flight = g->in_flight,
                .queued = g->queued,
                .max_in_flight = g->max_in_flight,
                .max_concurrent = g->max_concurrent,
                .requests_per_second = g->requests_per_second,
                .oldest_in_flight = g->calls ? g->calls->admitted : 0,
                .last_unavailable = g->last_unavailable,
        };
        pthread_mutex_unlock(&g->lock);
}

bool kms_gate_healthy(kms_gate *g) {
        kms_gate_status s;
        usec_t now = now_monotonic();

        kms_gate_get_status(g, &s);
        if (s.oldest_in_flight > 0 && now - s.oldest_in_flight > USEC_PER_SEC)
                return false;
        if (s.last_unavailable > 0 && now - s.last_unavailable < 10 * USEC_PER_SEC)
                return false;
        return true;
}

int kms_gate_key_state_seen(kms_gate *g, const char *id, kms_key_state *ret_state, usec_t *ret_when) {
        int r = -ENOENT;

        if (!g || !id)
                return -ENOENT;
        pthread_mutex_lock(&g->lock);
        for (size_t i = 0; i < g->n_keys; i++)
                if (streq(g->keys[i].id, id)) {
                        *ret_state = g->keys[i].state;
                        if (ret_when)
                                *ret_when = g->keys[i].when;
                        r = 0;
                        break;
                }
        pthread_mutex_unlock(&g->lock);
        return r;
}

void kms_gate_key_state_record(kms_gate *g, const char *id, kms_key_state state) {
        key_seen *a;

        if (!g || !id || state < 0 || state >= _KMS_KEY_STATE_MAX)
                return;
        pthread_mutex_lock(&g->lock);
        for (size_t i = 0; i < g->n_keys; i++)
                if (streq(g->keys[i].id, id)) {
                        g->keys[i].state = state;
                        g->keys[i].when = now_monotonic();
                        goto out;
                }
        if (g->n_keys >= KEY_STATES_MAX) /* bounded: forget the oldest entry */
                free(g->keys[0].id), memmove(g->keys, g->keys + 1, --g->n_keys * sizeof *g->keys);
        a = reallocarray(g->keys, g->n_keys + 1, sizeof *a);
        if (!a)
                goto out;
        g->keys = a;
        a[g->n_keys].id = strdup(id);
        if (!a[g->n_keys].id)
                goto out;
        a[g->n_keys].state = state;
        a[g->n_keys].when = now_monotonic();
        g->n_keys++;
out:
        pthread_mutex_unlock(&g->lock);
}

/* ---- OpenMetrics ---- */

void kms_gate_metrics_write(FILE *f, kms_gate *const *gates, const char *const *names, size_t n) {
        static const struct {
                const char *name, *help, *type;
        } gauges[] = {
                { "evs_kms_in_flight", "KMS calls in flight.", "gauge" },
                { "evs_kms_queued", "KMS calls waiting for a slot or a rate-limit token.", "gauge" },
                { "evs_kms_max_in_flight", "Most KMS calls in flight at once since start.", "gauge" },
                { "evs_kms_max_concurrent_requests", "MaxConcurrentRequests= in force.", "gauge" },
                { "evs_kms_requests_per_second_limit", "RequestsPerSecond= in force (0: unlimited).", "gauge" },
        };

        for (size_t k = 0; k < ELEMENTSOF(gauges); k++) {
                fprintf(f, "# TYPE %s %s\n# HELP %s %s\n", gauges[k].name, gauges[k].type, gauges[k].name,
                        gauges[k].help);
                for (size_t i = 0; i < n; i++) {
                        kms_gate_status s;
                        unsigned v[] = { 0, 0, 0, 0, 0 };

                        kms_gate_get_status(gates[i], &s);
                        v[0] = s.in_flight, v[1] = s.queued, v[2] = s.max_in_flight, v[3] = s.max_concurrent;
                        v[4] = s.requests_per_second;
                        fprintf(f, "%s{backend=\"%s\"} %u\n", gauges[k].name, names[i], v[k]);
                }
        }

        fprintf(f, "# TYPE evs_kms_requests counter\n"
                   "# HELP evs_kms_requests KMS calls by backend, operation and result.\n");
        for (size_t i = 0; i < n; i++) {
                if (!gates[i])
                        continue;
                pthread_mutex_lock(&gates[i]->lock);
                for (int op = 0; op < _KMS_OP_MAX; op++) {
                        const op_stats *s = &gates[i]->ops[op];

                        fprintf(f,
                                "evs_kms_requests_total{backend=\"%s\",op=\"%s\",result=\"ok\"} %" PRIu64 "\n"
                                "evs_kms_requests_total{backend=\"%s\",op=\"%s\",result=\"error\"} %" PRIu64 "\n"
                                "evs_kms_requests_total{backend=\"%s\",op=\"%s\",result=\"throttled\"} %" PRIu64 "\n",
                                names[i], op_names[op], s->ok, names[i], op_names[op], s->error, names[i],
                                op_names[op], s->throttled);
                }
                pthread_mutex_unlock(&gates[i]->lock);
        }

        histogram_write_header(f, "evs_kms_request_duration_seconds", "Time from admission to the KMS's final answer.");
        for (size_t i = 0; i < n; i++) {
                if (!gates[i])
                        continue;
                pthread_mutex_lock(&gates[i]->lock);
                for (int op = 0; op < _KMS_OP_MAX; op++) {
                        char labels[128];

                        (void) snprintf(labels, sizeof labels, "backend=\"%s\",op=\"%s\"", names[i], op_names[op]);
                        histogram_write(f, "evs_kms_request_duration_seconds", labels, &gates[i]->ops[op].duration);
                }
                pthread_mutex_unlock(&gates[i]->lock);
        }
}
