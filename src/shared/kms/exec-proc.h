/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The exec backend's helper processes (evs-kms-exec(7)): one run per operation (exec_run_once()), or a pool
 * of persistent helpers that answer one request line after another (exec_pool_*(), Persistent=yes). Neither
 * interprets a reply beyond its framing: exec.c checks and parses it. */

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "secret.h"
#include "time-util.h"

#define EXEC_REPLY_MAX (64U * 1024U)
#define EXEC_STDERR_MAX (4U * 1024U)

typedef struct exec_result {
        secret *out; /* stdout, NUL-terminated, EXEC_REPLY_MAX + 1 bytes of room */
        size_t out_size;
        char err[EXEC_STDERR_MAX + 1];
        size_t err_size;
        int status;     /* as from waitpid(); 0 while a persistent helper lives on */
        bool timed_out;
        bool cancelled; /* the daemon is shutting down */
        bool oversize;
        bool extra;     /* a persistent helper wrote more than its reply line */
        bool exited;    /* a persistent helper exited during the request */
} exec_result;

void exec_result_done(exec_result *res);

/* What starting a helper needs: argv[0] is the executable, envp its whole environment. */
typedef struct exec_command {
        const char *path;
        char *const *argv;
        char *const *envp;
} exec_command;

/* Runs @cmd, writes @in (@in_size bytes) on its stdin and closes it, collects its output until it exits or
 * @timeout passes. Fills @res; returns -errno only when the helper could not be run (*ret_errno_exec set
 * when the exec itself failed). */
int exec_run_once(const exec_command *cmd, const uint8_t *in, size_t in_size, usec_t timeout, exec_result *res,
                  bool *ret_exec_failed);

/* A running persistent helper. */
typedef struct exec_proc exec_proc;

typedef struct exec_pool {
        pthread_mutex_t lock;
        exec_proc *idle;
        unsigned n_running; /* the helpers that live, idle or leased */
        uint64_t n_started;
} exec_pool;

/* How many of the pool's helpers run now, and how many were started. */
void exec_pool_stats(exec_pool *p, unsigned *ret_running, uint64_t *ret_started);

void exec_pool_init(exec_pool *p);
/* Kills every idle helper (after closing its stdin). No call may be in flight. */
void exec_pool_done(exec_pool *p);

/* An idle, live helper (*ret_fresh false), or a new one started with @cmd that answered the handshake @hello (one line)
 * with a line that @hello_ok() accepts, before @deadline. On a failed handshake -EPROTO, with @res
 * holding what the helper answered (for the error text); -errno when it could not be started
 * (*ret_exec_failed as exec_run_once()). */
int exec_pool_acquire(exec_pool *p, const exec_command *cmd, const uint8_t *hello, size_t hello_size,
                      bool (*hello_ok)(const char *line, size_t size), usec_t deadline, exec_proc **ret,
                      bool *ret_fresh, exec_result *res, bool *ret_exec_failed);

/* Writes the request line @in and reads one reply line into @res, until @deadline. The helper is fit to
 * be reused after it only if the function returns true. */
bool exec_proc_request(exec_proc *proc, const uint8_t *in, size_t in_size, usec_t deadline, exec_result *res);

/* Returns @proc to the pool when @reuse, else kills it. */
void exec_pool_release(exec_pool *p, exec_proc *proc, bool reuse);
