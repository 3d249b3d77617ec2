/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Reads that may never end (of a disk whose I/O hangs: a read there sleeps uninterruptibly until the
 * disk answers), each made on a thread of its own and waited for with a bound, so that the caller
 * answers anyway. At most one read per key is under way at once: a disk that hangs holds one thread,
 * however often it is asked for. Thread-safe.
 *
 * A probe_fn runs on the probe's thread with nothing of the caller's but @key: it must touch no state
 * shared with other threads (plain system calls on the device: open, ioctl, pread). */

#include <stdbool.h>

#include "time-util.h"

typedef int (*probe_fn)(const char *key, void **ret_result);
typedef void (*probe_free_fn)(void *result);

typedef struct probe probe;

#define PROBE_THREADS_MAX 1024U

/* @fn(@key) on a probe thread; waits until @wait has passed since that read began. A read of @key by
 * @fn already under way is waited for rather than started again: its result, when it ends in time and
 * nobody took it yet (probe_start()), else a read of our own once it has ended. On success the result
 * moves to *ret_result (freed by the caller with @free_fn). -ETIMEDOUT when the read has not ended in
 * time (it goes on; @free_fn frees its result when it ends); at once when a read of @key has already run
 * longer than @wait. -EAGAIN when PROBE_THREADS_MAX reads are under way, -ENOMEM, or @fn's own -errno. */
int probe_run(probe_fn fn, probe_free_fn free_fn, const char *key, usec_t wait, void **ret_result);

/* Starts @fn(@key) now, unless a read of @key by @fn is under way already, and keeps its result for the
 * next probe_run() of @key until probe_release(): a caller about to ask for many keys one after another
 * starts their reads at once, so that disks that hang cost one wait in all, not one each. Returns a
 * handle, or NULL when no thread could start (probe_run() reads then). */
probe *probe_start(probe_fn fn, probe_free_fn free_fn, const char *key);
/* Drops the handle of probe_start(); a result nobody took is freed. Accepts NULL. */
void probe_release(probe *p);

/* Reads under way (their threads), for tests and the daemon's status. */
unsigned probe_in_flight(void);
