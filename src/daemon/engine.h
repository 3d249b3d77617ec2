/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The attach engine: requests run as jobs on worker threads, never on the sd-event loop.
 *
 * libcryptsetup, libdevmapper and libblkid are not thread-safe, and the state files are
 * read-modify-written: so a job runs holding the engine lock, and gives it up only while it waits,
 * for a KMS (kms.c calls the hooks set here around every backend call), for another job working
 * on the same volume (engine_volume_lock()), or for a disk: while it writes a volume record
 * (volume_db_update(), which orders the writes of one record with a lock of its own), while it
 * first reads a volume's header (luks.c), and while libdevmapper waits for udev (udev-cookie.c).
 * Device work is thus serialised in one place while KMS round trips, record fsyncs, header reads and
 * udev's processing overlap, the former bounded per backend by its gate (kms-gate.h).
 *
 * The loop thread owns the bus connections: a job hands sd-bus work to it with
 * engine_call_on_loop(). The loop never takes the engine lock, so it always answers. */

#include <stdbool.h>
#include <systemd/sd-event.h>

#include "macro.h"
#include "time-util.h"

typedef struct engine engine;

#define ENGINE_THREADS_MAX 512U

int engine_new(sd_event *event, engine **ret);
engine *engine_free(engine *e);

/* Runs @run(@userdata) on a worker thread under the engine lock, then @done(@userdata, result) on
 * the loop thread. Jobs start in submission order once the current loop iteration has ended (so a
 * bus message a job reads is no longer touched by the dispatcher). -ECANCELED once stopping. */
int engine_submit(engine *e, int (*run)(void *userdata), void (*done)(void *userdata, int r), void *userdata);

/* Runs @fn(@arg) on the loop thread and returns its result; called from a job (the engine lock is
 * given up meanwhile) or from the loop thread itself (then it runs at once). -ECANCELED when the
 * loop stopped serving. */
int engine_call_on_loop(int (*fn)(void *arg), void *arg);

/* How many times this thread has given the engine lock up for a wait: what a job saw of the kernel's
 * device-mapper state still holds while the count has not changed (nobody else's device work ran). */
unsigned engine_lock_releases(void);

/* Per-volume serialisation: a second operation on volume @id waits (without the engine lock) until
 * the first has finished. Returns a handle for engine_volume_unlock(). */
void *engine_volume_lock(const char *id);
void engine_volume_unlock(void *handle);
static inline void engine_volume_unlockp(void **h) {
        if (*h)
                engine_volume_unlock(*h);
}

typedef struct engine_stats {
        unsigned jobs;    /* submitted and not done */
        unsigned running; /* on a worker thread */
        unsigned threads;
} engine_stats;

void engine_get_stats(engine *e, engine_stats *ret);

/* Shutdown, on SIGTERM: refuses new jobs, cancels every KMS wait (kms_gate_cancel_all()), and
 * exits the event loop once every job has ended, or after @timeout. */
int engine_begin_stop(engine *e, usec_t timeout);
/* After the loop: the number of jobs still running (stuck in a KMS call that does not observe
 * cancellation, or in a wait for udev that does not end); when not 0, the device step in progress
 * has ended or waits for udev, the engine lock is held for good, and the caller must exit without
 * freeing what those jobs use (a mapping whose udev wait did not end is recorded at the next start,
 * volume_reconcile()). */
unsigned engine_finish_stop(engine *e);
bool engine_stopping(engine *e);
