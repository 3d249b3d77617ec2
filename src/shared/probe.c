/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "macro.h"
#include "probe.h"
#include "string-util.h"

/* A probe's reads are system calls on a device; the rest of the stack is for sanitizer builds. */
#define PROBE_STACK_SIZE (256U * 1024U)

struct probe {
        probe_fn fn;
        probe_free_fn free_fn;
        char *key;
        usec_t started; /* CLOCK_MONOTONIC */
        bool done;      /* the read ended: r and result are set */
        bool taken;     /* its result went to a caller */
        bool linked;    /* in the list: under way, or ended with a result kept for a handle */
        int r;
        void *result;
        unsigned refs; /* its thread's, waiters', handles' */
        pthread_cond_t cond;
        probe *next;
};

static pthread_mutex_t probes_lock = PTHREAD_MUTEX_INITIALIZER;
static probe *probes = NULL;
static unsigned n_threads = 0;

static void unlink_probe(probe *p) {
        if (!p->linked)
                return;
        for (probe **q = &probes; *q; q = &(*q)->next)
                if (*q == p) {
                        *q = p->next;
                        break;
                }
        p->linked = false;
}

/* Called with probes_lock. */
static void unref(probe *p) {
        if (--p->refs > 0)
                return;
        unlink_probe(p);
        if (p->result)
                p->free_fn(p->result);
        pthread_cond_destroy(&p->cond);
        free(p->key);
        free(p);
}

static probe *find(probe_fn fn, const char *key) {
        for (probe *p = probes; p; p = p->next)
                if (p->fn == fn && streq(p->key, key))
                        return p;
        return NULL;
}

static void *probe_main(void *arg) {
        probe *p = arg;
        void *result = NULL;
        int r;

        r = p->fn(p->key, &result);

        pthread_mutex_lock(&probes_lock);
        p->r = r;
        p->result = r >= 0 ? result : NULL;
        p->done = true;
        n_threads--;
        pthread_cond_broadcast(&p->cond);
        unref(p); /* nobody waiting and no handle: gone, and a later call reads afresh */
        pthread_mutex_unlock(&probes_lock);
        return NULL;
}

/* A new probe under way, with a reference for its thread and one for the caller. Called with probes_lock. */
static int start(probe_fn fn, probe_free_fn free_fn, const char *key, probe **ret) {
        pthread_condattr_t ca;
        pthread_attr_t attr;
        pthread_t t;
        probe *p;
        int r;

        if (n_threads >= PROBE_THREADS_MAX)
                return -EAGAIN;
        p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        p->key = strdup(key);
        if (!p->key) {
                free(p);
                return -ENOMEM;
        }
        p->fn = fn;
        p->free_fn = free_fn;
        p->refs = 2;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&p->cond, &ca);
        pthread_condattr_destroy(&ca);
        p->started = now_monotonic();

        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, PROBE_STACK_SIZE);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        r = -pthread_create(&t, &attr, probe_main, p);
        pthread_attr_destroy(&attr);
        if (r < 0) {
                pthread_cond_destroy(&p->cond);
                free(p->key);
                free(p);
                return r;
        }
        n_threads++;
        p->linked = true;
        p->next = probes;
        probes = p;
        *ret = p;
        return 0;
}

int probe_run(probe_fn fn, probe_free_fn free_fn, const char *key, usec_t wait, void **ret_result) {
        int r;

        pthread_mutex_lock(&probes_lock);
        for (;;) {
                probe *p = find(fn, key);
                usec_t deadline;
                struct timespec ts;

                if (!p) {
                        r = start(fn, free_fn, key, &p);
                        if (r < 0)
                                break;
                } else {
                        if (!p->done && now_monotonic() >= p->started + wait) {
                                r = -ETIMEDOUT; /* stuck: no second wait of it */
                                break;
                        }
                        p->refs++;
                }

                deadline = p->started + wait;
                ts = (struct timespec) { .tv_sec = (time_t) (deadline / USEC_PER_SEC),
                                         .tv_nsec = (long) (deadline % USEC_PER_SEC) * 1000 };
                while (!p->done)
                        if (pthread_cond_timedwait(&p->cond, &probes_lock, &ts) == ETIMEDOUT)
                                break;
                if (!p->done) {
                        unref(p);
                        r = -ETIMEDOUT;
                        break;
                }
                if (!p->taken) {
                        p->taken = true;
                        unlink_probe(p);
                        r = p->r;
                        if (r >= 0)
                                *ret_result = TAKE_PTR(p->result);
                        unref(p);
                        break;
                }
                /* Another caller took that result: the disk answered, so read it again. */
                unref(p);
        }
        pthread_mutex_unlock(&probes_lock);
        return r;
}

probe *probe_start(probe_fn fn, probe_free_fn free_fn, const char *key) {
        probe *p;

        pthread_mutex_lock(&probes_lock);
        p = find(fn, key);
        if (p)
                p->refs++;
        else if (start(fn, free_fn, key, &p) < 0)
                p = NULL;
        pthread_mutex_unlock(&probes_lock);
        return p;
}

void probe_release(probe *p) {
        if (!p)
                return;
        pthread_mutex_lock(&probes_lock);
        unref(p);
        pthread_mutex_unlock(&probes_lock);
}

unsigned probe_in_flight(void) {
        unsigned n;

        pthread_mutex_lock(&probes_lock);
        n = n_threads;
        pthread_mutex_unlock(&probes_lock);
        return n;
}
