/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Helper processes of the exec backend: started with posix_spawn() (a vfork-style clone: the daemon's
 * threads and memory are not copied page table by page table as fork() would), in a process group of
 * their own, with default signal dispositions, an empty signal mask and only fds 0, 1 and 2. A one-shot
 * helper gets its request and EOF, and is killed with its group once it exited; a persistent helper reads
 * one request line after another and answers each with one line. */

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "exec-proc.h"
#include "kms-gate.h"
#include "macro.h"

struct exec_proc {
        pid_t pid;
        int pidfd, in, out, err;
        bool reaped; /* waited for (or reaped behind our back): the pid is no longer ours to signal */
        int status;
        exec_proc *next;
};

void exec_result_done(exec_result *res) {
        res->out = secret_free(res->out);
        explicit_bzero(res->err, sizeof res->err);
}

static int result_init(exec_result *res) {
        int r;

        *res = (exec_result) {};
        r = secret_new(EXEC_REPLY_MAX + 1, &res->out);
        if (r < 0)
                return r;
        res->out->size = 0;
        return 0;
}

static void result_terminate(exec_result *res) {
        res->out->data[res->out_size] = 0;
        res->err[res->err_size] = 0;
}

static int set_nonblock(int fd) {
        int flags = fcntl(fd, F_GETFL);

        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                return negative_errno();
        return 0;
}

/* Writing to a helper that exited must not kill us with SIGPIPE: blocked in this thread while we talk
 * to it, and a SIGPIPE that we caused is consumed before the mask is restored. */
typedef struct sigpipe_guard {
        sigset_t set, old;
        bool was_pending;
} sigpipe_guard;

static void sigpipe_block(sigpipe_guard *g) {
        sigset_t pending;

        sigemptyset(&g->set);
        sigaddset(&g->set, SIGPIPE);
        sigpending(&pending);
        g->was_pending = sigismember(&pending, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &g->set, &g->old);
}

static void sigpipe_restore(sigpipe_guard *g) {
        sigset_t pending;

        sigpending(&pending);
        if (!g->was_pending && sigismember(&pending, SIGPIPE)) {
                struct timespec zero = {};

                (void) sigtimedwait(&g->set, NULL, &zero);
        }
        pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

static exec_proc *proc_free(exec_proc *p) {
        if (!p)
                return NULL;
        safe_close(p->pidfd);
        safe_close(p->in);
        safe_close(p->out);
        safe_close(p->err);
        free(p);
        return NULL;
}

/* Kills the helper's process group (stragglers it left behind too) and reaps it; p->status is its wait
 * status, -1 when someone else reaped it. */
static void proc_kill(exec_proc *p) {
        if (p->reaped)
                return;
        (void) kill(-p->pid, SIGKILL);
        (void) kill(p->pid, SIGKILL);
        while (waitpid(p->pid, &p->status, 0) < 0)
                if (errno != EINTR) {
                        p->status = -1;
                        break;
                }
        p->reaped = true;
}

/* Whether the helper has exited, without reaping it (its process group id stays ours to kill). */
static bool proc_exited(exec_proc *p) {
        siginfo_t si = {};

        if (p->reaped)
                return true;
        if (waitid(P_PID, (id_t) p->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0)
                return si.si_pid == p->pid;
        if (errno == ECHILD) { /* reaped behind our back */
                p->reaped = true;
                p->status = -1;
                return true;
        }
        return false;
}

static int proc_spawn(const exec_command *cmd, exec_proc **ret, bool *ret_exec_failed) {
        int pin[2] = { -EBADF, -EBADF }, pout[2] = { -EBADF, -EBADF }, perr[2] = { -EBADF, -EBADF };
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        sigset_t all, none;
        exec_proc *p;
        pid_t pid;
        int r;

        p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        *p = (exec_proc) { .pidfd = -EBADF, .in = -EBADF, .out = -EBADF, .err = -EBADF };
        if (pipe2(pin, O_CLOEXEC) < 0 || pipe2(pout, O_CLOEXEC) < 0 || pipe2(perr, O_CLOEXEC) < 0) {
                r = negative_errno();
                goto fail;
        }

        sigfillset(&all);
        sigemptyset(&none);
        if ((r = posix_spawn_file_actions_init(&fa)) != 0) {
                r = -r;
                goto fail;
        }
        if ((r = posix_spawnattr_init(&attr)) != 0) {
                posix_spawn_file_actions_destroy(&fa);
                r = -r;
                goto fail;
        }
        r = posix_spawn_file_actions_adddup2(&fa, pin[0], STDIN_FILENO);
        if (r == 0)
                r = posix_spawn_file_actions_adddup2(&fa, pout[1], STDOUT_FILENO);
        if (r == 0)
                r = posix_spawn_file_actions_adddup2(&fa, perr[1], STDERR_FILENO);
        if (r == 0)
                r = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
        if (r == 0)
                r = posix_spawnattr_setflags(&attr,
                                             POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
        if (r == 0)
                r = posix_spawnattr_setpgroup(&attr, 0);
        if (r == 0)
                r = posix_spawnattr_setsigdefault(&attr, &all);
        if (r == 0)
                r = posix_spawnattr_setsigmask(&attr, &none);
        if (r == 0) {
                r = posix_spawn(&pid, cmd->path, &fa, &attr, cmd->argv, cmd->envp);
                if (r != 0 && ret_exec_failed)
                        *ret_exec_failed = true;
        }
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
        if (r != 0) {
                r = -r;
                goto fail;
        }

        p->pid = pid;
        p->in = TAKE_FD(pin[1]);
        p->out = TAKE_FD(pout[0]);
        p->err = TAKE_FD(perr[0]);
        (void) set_nonblock(p->in);
        (void) set_nonblock(p->out);
        (void) set_nonblock(p->err);
        p->pidfd = (int) syscall(SYS_pidfd_open, pid, 0);
        r = 0;
        *ret = p;
        p = NULL;
fail:
        for (size_t i = 0; i < 2; i++) {
                safe_close(pin[i]);
                safe_close(pout[i]);
                safe_close(perr[i]);
        }
        proc_free(p);
        return r;
}

/* Reads what is available on @fd into @buf (capacity @max), discarding the rest. Returns 1 at EOF,
 * 0 otherwise; sets *overflow when more than @max arrived. */
static int drain(int fd, uint8_t *buf, size_t max, size_t *size, bool *overflow) {
        for (;;) {
                uint8_t scratch[4096];
                uint8_t *dst = *size < max ? buf + *size : scratch;
                size_t room = *size < max ? max - *size : sizeof scratch;
                ssize_t n = read(fd, dst, room);

                if (n == 0)
                        return 1;
                if (n < 0)
                        return errno == EINTR ? 0 : (errno == EAGAIN ? 0 : 1);
                if (dst == scratch) {
                        explicit_bzero(scratch, (size_t) n);
                        if (overflow)
                                *overflow = true;
                } else
                        *size += (size_t) n;
                if (overflow && *overflow)
                        return 0;
        }
}

/* A persistent helper's reply is complete at its first newline; anything after it is extra. */
static bool line_complete(exec_result *res) {
        const uint8_t *nl = memchr(res->out->data, '\n', res->out_size);

        if (!nl)
                return false;
        if ((size_t) (nl - res->out->data) + 1 < res->out_size)
                res->extra = true;
        return true;
}

/* Writes @in to the helper and collects its output until @deadline: until it exits (@line false: a
 * one-shot helper, whose stdin is closed once written), or until its first full line on stdout (@line).
 * Returns 1 when the helper has exited, 0 otherwise, -errno on a poll failure. */
static int exchange(exec_proc *p, const uint8_t *in, size_t in_size, bool line, usec_t deadline, exec_result *res) {
        int cancel_fd = kms_gate_cancel_fd();
        bool out_eof = false, err_eof = p->err < 0, in_done = in_size == 0;
        size_t written = 0;

        if (in_done && !line)
                p->in = safe_close(p->in);
        for (;;) {
                struct pollfd fds[5];
                size_t nfds = 0;
                usec_t now = now_monotonic();
                int timeout_ms, idx_in = -1, idx_out = -1, idx_err = -1;

                if (proc_exited(p)) {
                        /* Whatever it wrote is in the pipes now; do not wait for descendants' EOF. */
                        if (!out_eof)
                                (void) drain(p->out, res->out->data, EXEC_REPLY_MAX, &res->out_size, &res->oversize);
                        if (!err_eof)
                                (void) drain(p->err, (uint8_t *) res->err, EXEC_STDERR_MAX, &res->err_size, NULL);
                        if (line)
                                (void) line_complete(res);
                        return 1;
                }
                if (line && line_complete(res)) {
                        if (!err_eof)
                                (void) drain(p->err, (uint8_t *) res->err, EXEC_STDERR_MAX, &res->err_size, NULL);
                        return 0;
                }
                if (res->oversize)
                        return 0;
                if (now >= deadline) {
                        res->timed_out = true;
                        return 0;
                }
                if (kms_gate_cancelled()) {
                        res->cancelled = true;
                        return 0;
                }
                timeout_ms = (int) MIN((deadline - now + 999) / 1000, (usec_t) 1000);
                if (p->pidfd < 0)
                        timeout_ms = MIN(timeout_ms, 10);

                if (!in_done) {
                        idx_in = (int) nfds;
                        fds[nfds++] = (struct pollfd) { .fd = p->in, .events = POLLOUT };
                }
                if (!out_eof) {
                        idx_out = (int) nfds;
                        fds[nfds++] = (struct pollfd) { .fd = p->out, .events = POLLIN };
                }
                if (!err_eof) {
                        idx_err = (int) nfds;
                        fds[nfds++] = (struct pollfd) { .fd = p->err, .events = POLLIN };
                }
                if (p->pidfd >= 0)
                        fds[nfds++] = (struct pollfd) { .fd = p->pidfd, .events = POLLIN };
                if (cancel_fd >= 0)
                        fds[nfds++] = (struct pollfd) { .fd = cancel_fd, .events = POLLIN };

                if (poll(fds, nfds, timeout_ms) < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (idx_in >= 0 && fds[idx_in].revents) {
                        ssize_t n = write(p->in, in + written, in_size - written);

                        if (n > 0)
                                written += (size_t) n;
                        if ((n < 0 && errno != EAGAIN && errno != EINTR) || written == in_size) {
                                in_done = true; /* done, or the helper stopped reading */
                                if (!line)
                                        p->in = safe_close(p->in);
                        }
                }
                if (idx_out >= 0 && fds[idx_out].revents)
                        out_eof = drain(p->out, res->out->data, EXEC_REPLY_MAX, &res->out_size, &res->oversize) > 0;
                if (idx_err >= 0 && fds[idx_err].revents)
                        err_eof = drain(p->err, (uint8_t *) res->err, EXEC_STDERR_MAX, &res->err_size, NULL) > 0;
        }
}

int exec_run_once(const exec_command *cmd, const uint8_t *in, size_t in_size, usec_t timeout, exec_result *res,
                  bool *ret_exec_failed) {
        sigpipe_guard g;
        exec_proc *p = NULL;
        int r;

        r = result_init(res);
        if (r < 0)
                return r;
        sigpipe_block(&g);
        r = proc_spawn(cmd, &p, ret_exec_failed);
        if (r >= 0) {
                r = exchange(p, in, in_size, false, now_monotonic() + timeout, res);
                r = MIN(r, 0);
                /* Kill stragglers (and the helper itself on timeout or oversize), then reap. */
                proc_kill(p);
                res->status = p->status;
        }
        sigpipe_restore(&g);
        proc_free(p);
        result_terminate(res);
        return r;
}

/* ---- persistent helpers ---- */

void exec_pool_init(exec_pool *p) {
        *p = (exec_pool) {};
        pthread_mutex_init(&p->lock, NULL);
}

static void proc_discard(exec_proc *p) {
        if (!p)
                return;
        p->in = safe_close(p->in); /* EOF first: a helper between requests may be reading */
        proc_kill(p);
        proc_free(p);
}

/* A pool helper killed: one fewer running. */
static void pool_discard(exec_pool *p, exec_proc *proc) {
        proc_discard(proc);
        pthread_mutex_lock(&p->lock);
        p->n_running--;
        pthread_mutex_unlock(&p->lock);
}

void exec_pool_stats(exec_pool *p, unsigned *ret_running, uint64_t *ret_started) {
        pthread_mutex_lock(&p->lock);
        *ret_running = p->n_running;
        *ret_started = p->n_started;
        pthread_mutex_unlock(&p->lock);
}

void exec_pool_done(exec_pool *p) {
        while (p->idle) {
                exec_proc *proc = p->idle;

                p->idle = proc->next;
                proc_discard(proc);
        }
        pthread_mutex_destroy(&p->lock);
}

/* An idle helper is fit for a request if it lives and has written nothing on stdout since its last
 * reply. What it wrote on stderr between requests is discarded. */
static bool proc_idle_ok(exec_proc *p) {
        struct pollfd fds[3] = {
                { .fd = p->in, .events = 0 },
                { .fd = p->out, .events = POLLIN },
                { .fd = p->err, .events = POLLIN },
        };

        if (proc_exited(p))
                return false;
        if (poll(fds, p->err >= 0 ? 3 : 2, 0) < 0)
                return false;
        if (fds[0].revents || fds[1].revents)
                return false;
        if (p->err >= 0 && fds[2].revents) {
                char discard[EXEC_STDERR_MAX];
                size_t n = 0;

                if (drain(p->err, (uint8_t *) discard, sizeof discard, &n, NULL) > 0)
                        p->err = safe_close(p->err); /* it closed its stderr: nothing more to read there */
                while (n == sizeof discard) {
                        n = 0;
                        (void) drain(p->err, (uint8_t *) discard, sizeof discard, &n, NULL);
                }
        }
        return true;
}

int exec_pool_acquire(exec_pool *p, const exec_command *cmd, const uint8_t *hello, size_t hello_size,
                      bool (*hello_ok)(const char *line, size_t size), usec_t deadline, exec_proc **ret,
                      bool *ret_fresh, exec_result *res, bool *ret_exec_failed) {
        exec_proc *proc = NULL, *stale = NULL;
        sigpipe_guard g;
        int r;

        pthread_mutex_lock(&p->lock);
        while (p->idle) {
                exec_proc *q = p->idle;

                p->idle = q->next;
                if (proc_idle_ok(q)) {
                        proc = q;
                        break;
                }
                q->next = stale;
                stale = q;
        }
        pthread_mutex_unlock(&p->lock);
        while (stale) {
                exec_proc *q = stale;

                stale = q->next;
                pool_discard(p, q);
        }
        if (proc) {
                proc->next = NULL;
                *ret = proc;
                *ret_fresh = false;
                return 0;
        }

        r = result_init(res);
        if (r < 0)
                return r;
        sigpipe_block(&g);
        r = proc_spawn(cmd, &proc, ret_exec_failed);
        if (r >= 0) {
                r = exchange(proc, hello, hello_size, true, deadline, res);
                if (r >= 0) {
                        result_terminate(res);
                        if (r > 0 || res->timed_out || res->cancelled || res->oversize || res->extra ||
                            !line_complete(res) || !hello_ok((const char *) res->out->data, res->out_size))
                                r = -EPROTO;
                }
                if (r < 0) {
                        proc->in = safe_close(proc->in);
                        proc_kill(proc);
                        res->status = proc->status;
                        proc = proc_free(proc);
                }
        }
        sigpipe_restore(&g);
        if (r < 0)
                return r;
        pthread_mutex_lock(&p->lock);
        p->n_started++;
        p->n_running++;
        pthread_mutex_unlock(&p->lock);
        exec_result_done(res);
        *ret = proc;
        *ret_fresh = true;
        return 0;
}

bool exec_proc_request(exec_proc *proc, const uint8_t *in, size_t in_size, usec_t deadline, exec_result *res) {
        sigpipe_guard g;
        bool fit;
        int r;

        if (result_init(res) < 0)
                return false;
        sigpipe_block(&g);
        r = exchange(proc, in, in_size, true, deadline, res);
        fit = r == 0 && !res->timed_out && !res->cancelled && !res->oversize && line_complete(res) && !res->extra;
        if (line_complete(res)) /* the reply is its first line; what followed is not (and the helper goes) */
                res->out_size = (size_t) ((uint8_t *) memchr(res->out->data, '\n', res->out_size) - res->out->data) + 1;
        if (!fit) {
                proc->in = safe_close(proc->in);
                proc_kill(proc);
                res->status = r > 0 ? proc->status : 0;
                res->exited = r > 0;
        }
        sigpipe_restore(&g);
        result_terminate(res);
        return fit;
}

void exec_pool_release(exec_pool *p, exec_proc *proc, bool reuse) {
        if (!proc)
                return;
        if (!reuse || proc->reaped) {
                pool_discard(p, proc);
                return;
        }
        pthread_mutex_lock(&p->lock);
        proc->next = p->idle; /* the most recently used first: a few warm helpers serve a light load */
        p->idle = proc;
        pthread_mutex_unlock(&p->lock);
}
