/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <pthread.h>
#include <sys/eventfd.h>

#include "engine.h"
#include "kms-gate.h"
#include "kms.h"
#include "log.h"
#include "metrics.h"
#include "string-util.h"
#include "wait-hooks.h"

#define WORKER_STACK_SIZE (512U * 1024U)
#define WORKER_IDLE_USEC (30U * USEC_PER_SEC)

typedef struct job {
        int (*run)(void *userdata);
        void (*done)(void *userdata, int r);
        void *userdata;
        int result;
        struct job *next;
} job;

typedef struct loop_call {
        int (*fn)(void *arg);
        void *arg;
        int result;
        bool done;
        struct loop_call *next;
} loop_call;

struct engine {
        pthread_mutex_t lock; /* guards the fields below (not the engine lock) */
        pthread_cond_t work;  /* workers wait for jobs */
        pthread_cond_t calls; /* jobs wait for their loop calls */
        job *pending, **pending_tail; /* submitted during this loop iteration */
        job *queue, **queue_tail;     /* ready for a worker */
        job *finished, **finished_tail;
        loop_call *loop_calls, **loop_calls_tail;
        unsigned jobs, queued, running, threads, idle, starting;
        bool stopping, loop_gone;
        int efd;
        sd_event_source *efd_source, *defer_source;
        pthread_t loop_thread;
};

/* The engine lock: see engine.h. Its depth per thread lets waits give it up and take it back. A
 * thread sums how long its job held the lock (in time, and in the CPU time it used meanwhile) and waited
 * for it (metrics_engine_job_done()). */
static pthread_mutex_t engine_lock = PTHREAD_MUTEX_INITIALIZER;
static __thread unsigned engine_lock_depth = 0;
static __thread usec_t lock_taken_at = 0, lock_taken_cpu = 0, job_held = 0, job_held_cpu = 0, job_waited = 0;
static engine *the_engine = NULL;

static usec_t thread_cpu_now(void) {
        struct timespec ts;

        if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) < 0)
                return 0;
        return (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / 1000U;
}

static void engine_lock_take(void) {
        usec_t asked = now_monotonic();

        pthread_mutex_lock(&engine_lock);
        lock_taken_at = now_monotonic();
        lock_taken_cpu = thread_cpu_now();
        job_waited += lock_taken_at - asked;
        engine_lock_depth = 1;
}

static void engine_lock_give(void) {
        job_held_cpu += thread_cpu_now() - lock_taken_cpu;
        job_held += now_monotonic() - lock_taken_at;
        engine_lock_depth = 0;
        pthread_mutex_unlock(&engine_lock);
}

/* kms.c's hooks around every backend call, and our own waits. */
static __thread unsigned released_depth = 0, releases = 0;

static void wait_begin(void) {
        if (engine_lock_depth == 0)
                return;
        released_depth = engine_lock_depth;
        releases++;
        engine_lock_give();
}

unsigned engine_lock_releases(void) {
        return releases;
}

static void wait_end(void) {
        if (released_depth == 0)
                return;
        engine_lock_take();
        released_depth = 0;
}

static void wake_loop(engine *e) {
        (void) eventfd_write(e->efd, 1);
}

static void *worker_main(void *p) {
        engine *e = p;

        pthread_mutex_lock(&e->lock);
        e->starting--;
        for (;;) {
                job *j;

                while (!e->queue) {
                        struct timespec ts;
                        usec_t until = now_realtime() + WORKER_IDLE_USEC;

                        ts = (struct timespec) { .tv_sec = (time_t) (until / USEC_PER_SEC),
                                                 .tv_nsec = (long) (until % USEC_PER_SEC) * 1000 };
                        e->idle++;
                        if (pthread_cond_timedwait(&e->work, &e->lock, &ts) == ETIMEDOUT && !e->queue) {
                                e->idle--;
                                e->threads--;
                                pthread_mutex_unlock(&e->lock);
                                return NULL;
                        }
                        e->idle--;
                }
                j = e->queue;
                e->queue = j->next;
                if (!e->queue)
                        e->queue_tail = &e->queue;
                e->queued--;
                e->running++;
                pthread_mutex_unlock(&e->lock);

                job_held = job_held_cpu = job_waited = 0;
                engine_lock_take();
                j->result = j->run(j->userdata);
                engine_lock_give();
                metrics_engine_job_done(job_held, job_held_cpu, job_waited);

                pthread_mutex_lock(&e->lock);
                e->running--;
                j->next = NULL;
                *e->finished_tail = j;
                e->finished_tail = &j->next;
                wake_loop(e);
        }
}

/* Moves the jobs submitted during the last loop iteration to the workers, starting threads for
 * them up to ENGINE_THREADS_MAX. Called with e->lock. */
static int start_pending(engine *e) {
        int r = 0;

        if (!e->pending)
                return 0;
        for (job *j = e->pending; j; j = j->next)
                e->queued++;
        *e->queue_tail = e->pending;
        e->queue_tail = e->pending_tail;
        e->pending = NULL;
        e->pending_tail = &e->pending;

        while (e->idle + e->starting < e->queued && e->threads < ENGINE_THREADS_MAX) {
                pthread_attr_t attr;
                pthread_t t;

                pthread_attr_init(&attr);
                pthread_attr_setstacksize(&attr, WORKER_STACK_SIZE);
                pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
                r = -pthread_create(&t, &attr, worker_main, e);
                pthread_attr_destroy(&attr);
                if (r < 0)
                        break;
                e->threads++;
                e->starting++;
        }
        pthread_cond_broadcast(&e->work);
        return e->threads == 0 ? r : 0;
}

static int on_defer(sd_event_source *s, void *userdata) {
        engine *e = userdata;
        int r;

        pthread_mutex_lock(&e->lock);
        r = start_pending(e);
        pthread_mutex_unlock(&e->lock);
        if (r < 0)
                log_error_errno(r, "Cannot start a worker thread: %m");
        return 0;
}

static int on_wake(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        engine *e = userdata;
        eventfd_t v;

        (void) eventfd_read(e->efd, &v);
        for (;;) {
                loop_call *c;
                job *j;

                pthread_mutex_lock(&e->lock);
                c = e->loop_calls;
                if (c) {
                        e->loop_calls = c->next;
                        if (!e->loop_calls)
                                e->loop_calls_tail = &e->loop_calls;
                        pthread_mutex_unlock(&e->lock);
                        c->result = c->fn(c->arg);
                        pthread_mutex_lock(&e->lock);
                        c->done = true;
                        pthread_cond_broadcast(&e->calls);
                        pthread_mutex_unlock(&e->lock);
                        continue;
                }
                j = e->finished;
                if (j) {
                        e->finished = j->next;
                        if (!e->finished)
                                e->finished_tail = &e->finished;
                        e->jobs--;
                }
                pthread_mutex_unlock(&e->lock);
                if (!j)
                        break;
                if (j->done)
                        j->done(j->userdata, j->result);
                free(j);
        }
        if (engine_stopping(e) && ({
                    engine_stats st;
                    engine_get_stats(e, &st);
                    st.jobs;
            }) == 0)
                (void) sd_event_exit(sd_event_source_get_event(s), 0);
        return 0;
}

int engine_new(sd_event *event, engine **ret) {
        engine *e;
        int r;

        e = calloc(1, sizeof *e);
        if (!e)
                return -ENOMEM;
        pthread_mutex_init(&e->lock, NULL);
        pthread_cond_init(&e->work, NULL);
        pthread_cond_init(&e->calls, NULL);
        e->pending_tail = &e->pending;
        e->queue_tail = &e->queue;
        e->finished_tail = &e->finished;
        e->loop_calls_tail = &e->loop_calls;
        e->loop_thread = pthread_self();
        e->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (e->efd < 0) {
                free(e);
                return -errno;
        }
        r = sd_event_add_io(event, &e->efd_source, e->efd, EPOLLIN, on_wake, e);
        if (r >= 0)
                r = sd_event_add_defer(event, &e->defer_source, on_defer, e);
        if (r >= 0)
                r = sd_event_source_set_enabled(e->defer_source, SD_EVENT_OFF);
        if (r < 0) {
                engine_free(e);
                return r;
        }
        the_engine = e;
        wait_hooks_set(wait_begin, wait_end);
        /* The loop thread runs jobs' first and last steps only through us; anything it does with
         * the devices itself (start-up, reconcile) it does under the engine lock too. */
        *ret = e;
        return 0;
}

engine *engine_free(engine *e) {
        unsigned threads;

        if (!e)
                return NULL;
        wait_hooks_set(NULL, NULL);
        sd_event_source_disable_unref(e->efd_source);
        sd_event_source_disable_unref(e->defer_source);
        safe_close(e->efd);
        pthread_mutex_lock(&e->lock);
        threads = e->threads;
        pthread_mutex_unlock(&e->lock);
        /* Idle workers still wait on e->work until their idle timeout: the process is exiting, leave the
         * engine to them rather than destroy what they wait on. */
        if (threads == 0) {
                if (the_engine == e)
                        the_engine = NULL;
                free(e);
        }
        return NULL;
}

int engine_submit(engine *e, int (*run)(void *), void (*done)(void *, int), void *userdata) {
        job *j;

        pthread_mutex_lock(&e->lock);
        if (e->stopping) {
                pthread_mutex_unlock(&e->lock);
                return -ECANCELED;
        }
        j = calloc(1, sizeof *j);
        if (!j) {
                pthread_mutex_unlock(&e->lock);
                return -ENOMEM;
        }
        *j = (job) { .run = run, .done = done, .userdata = userdata };
        *e->pending_tail = j;
        e->pending_tail = &j->next;
        e->jobs++;
        pthread_mutex_unlock(&e->lock);
        return sd_event_source_set_enabled(e->defer_source, SD_EVENT_ONESHOT);
}

int engine_call_on_loop(int (*fn)(void *), void *arg) {
        engine *e = the_engine;
        loop_call c = { .fn = fn, .arg = arg };

        if (!e || pthread_equal(pthread_self(), e->loop_thread))
                return fn(arg);

        wait_begin();
        pthread_mutex_lock(&e->lock);
        if (e->loop_gone) {
                pthread_mutex_unlock(&e->lock);
                wait_end();
                return -ECANCELED;
        }
        *e->loop_calls_tail = &c;
        e->loop_calls_tail = &c.next;
        wake_loop(e);
        while (!c.done)
                pthread_cond_wait(&e->calls, &e->lock);
        pthread_mutex_unlock(&e->lock);
        wait_end();
        return c.result;
}

/* ---- per-volume locks ---- */

typedef struct volume_lock {
        char *id;
        unsigned users;
        pthread_mutex_t mutex;
        struct volume_lock *next;
} volume_lock;

static pthread_mutex_t volume_locks_lock = PTHREAD_MUTEX_INITIALIZER;
static volume_lock *volume_locks = NULL;

void *engine_volume_lock(const char *id) {
        volume_lock *l;

        pthread_mutex_lock(&volume_locks_lock);
        for (l = volume_locks; l; l = l->next)
                if (streq(l->id, id))
                        break;
        if (!l) {
                l = calloc(1, sizeof *l);
                if (!l || !(l->id = strdup(id))) {
                        free(l);
                        pthread_mutex_unlock(&volume_locks_lock);
                        return NULL; /* out of memory: run unserialised rather than fail */
                }
                pthread_mutex_init(&l->mutex, NULL);
                l->next = volume_locks;
                volume_locks = l;
        }
        l->users++;
        pthread_mutex_unlock(&volume_locks_lock);

        /* Lock order: the volume, then the engine lock. */
        if (pthread_mutex_trylock(&l->mutex) != 0) {
                wait_begin();
                pthread_mutex_lock(&l->mutex);
                wait_end();
        }
        return l;
}

void engine_volume_unlock(void *handle) {
        volume_lock *l = handle;

        if (!l)
                return;
        pthread_mutex_unlock(&l->mutex);
        pthread_mutex_lock(&volume_locks_lock);
        if (--l->users == 0) {
                for (volume_lock **p = &volume_locks; *p; p = &(*p)->next)
                        if (*p == l) {
                                *p = l->next;
                                break;
                        }
                pthread_mutex_destroy(&l->mutex);
                free(l->id);
                free(l);
        }
        pthread_mutex_unlock(&volume_locks_lock);
}

/* ---- stats and stop ---- */

void engine_get_stats(engine *e, engine_stats *ret) {
        pthread_mutex_lock(&e->lock);
        *ret = (engine_stats) { .jobs = e->jobs, .running = e->running, .threads = e->threads };
        pthread_mutex_unlock(&e->lock);
}

bool engine_stopping(engine *e) {
        bool b;

        pthread_mutex_lock(&e->lock);
        b = e->stopping;
        pthread_mutex_unlock(&e->lock);
        return b;
}

static int on_stop_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

int engine_begin_stop(engine *e, usec_t timeout) {
        sd_event *event = sd_event_source_get_event(e->efd_source);
        int r;

        pthread_mutex_lock(&e->lock);
        if (e->stopping) {
                pthread_mutex_unlock(&e->lock);
                return 0;
        }
        e->stopping = true;
        /* Jobs submitted but not started are answered with -ECANCELED. */
        while (e->pending) {
                job *j = e->pending;

                e->pending = j->next;
                j->result = -ECANCELED;
                j->next = NULL;
                *e->finished_tail = j;
                e->finished_tail = &j->next;
        }
        e->pending_tail = &e->pending;
        pthread_mutex_unlock(&e->lock);
        kms_gate_cancel_all();
        wake_loop(e);

        r = sd_event_add_time_relative(event, NULL, CLOCK_MONOTONIC, timeout, 10 * 1000, on_stop_timeout, NULL);
        return r < 0 ? sd_event_exit(event, 0) : 0;
}

unsigned engine_finish_stop(engine *e) {
        unsigned left;

        pthread_mutex_lock(&e->lock);
        e->loop_gone = true;
        pthread_cond_broadcast(&e->calls);
        left = e->jobs;
        pthread_mutex_unlock(&e->lock);
        if (left > 0)
                /* Wait for the device step in progress (an activation and its record), then keep
                 * the lock: no other starts before the process exits. */
                engine_lock_take();
        return left;
}
