/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* evs-bench-run: runs a list of commands one after another or all at once and prints their latencies, for
 * bench/attach-storm and tests/vm/test-storm.sh (a shell loop would add its own fork and date(1) costs to every
 * sample).
 *
 *   evs-bench-run [--parallel] [--times FILE] [--errors FILE] < COMMANDS
 *   evs-bench-run --bus PATH [--parallel] [--times FILE] [--errors FILE] < CALLS
 *   evs-bench-run --loop-setup BACKING SLOT_BYTES COUNT
 *
 * COMMANDS: one command a line, words separated by spaces (no quoting, no shell). Each command runs with
 * stdin and stdout on /dev/null and stderr appended to --errors FILE (default /dev/null). --parallel starts
 * them all before waiting for any; otherwise each waits for the previous one. --times FILE gets one line per
 * command: START_US END_US STATUS (CLOCK_MONOTONIC microseconds, STATUS the exit status or 128+signal).
 * The output is one line:
 *   n=N ok=N failed=N p50=MS p99=MS max=MS wall=MS
 * Exit status 0 when every command could be started (whatever their status), 1 otherwise.
 *
 * --bus makes the requests itself, from this one process, to evs-cryptd's bus at PATH: CALLS are lines
 * "attach VOLUME", "detach VOLUME" or "detach-force VOLUME", each made on a connection of its own (as N evsctl
 * processes would, without their N process starts: what the daemon itself does in a storm, as in one of disks
 * that udev announces at once). STATUS is 0 for a success, 1 for an error reply (its message to --errors FILE).
 *
 * --loop-setup makes COUNT loop devices over BACKING, device i over bytes [i * SLOT_BYTES, (i + 1) * SLOT_BYTES),
 * which must be /dev/loop<i> (the volume records of tests/vm/prepare-volumes.sh say so): one process instead
 * of COUNT losetup runs, which cost ~0.1 s each under TCG. */

#include <errno.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "bus-api.h"
#include "macro.h"

typedef struct job {
        char *line; /* argv's words point into it */
        char **argv;
        pid_t pid;
        uint64_t start, end;
        int status;
        sd_bus *bus; /* --bus */
} job;

static uint64_t now_us(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000U + (uint64_t) ts.tv_nsec / 1000U;
}

static char **split(char *line) {
        char **argv = NULL, *save = NULL;
        size_t n = 0;

        for (char *w = strtok_r(line, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save)) {
                char **a = realloc(argv, (n + 2) * sizeof *argv);

                if (!a) {
                        free(argv);
                        return NULL;
                }
                argv = a;
                argv[n++] = w;
                argv[n] = NULL;
        }
        return argv;
}

static int start(job *j, int err_fd) {
        j->start = now_us();
        j->pid = fork();
        if (j->pid < 0)
                return -errno;
        if (j->pid == 0) {
                int null = open("/dev/null", O_RDWR | O_CLOEXEC);

                if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(null, STDOUT_FILENO) < 0 ||
                    dup2(err_fd >= 0 ? err_fd : null, STDERR_FILENO) < 0)
                        _exit(127);
                execvp(j->argv[0], j->argv);
                dprintf(STDERR_FILENO, "evs-bench-run: %s: %s\n", j->argv[0], strerror(errno));
                _exit(127);
        }
        return 0;
}

static void finish(job *jobs, size_t n, pid_t pid, int status) {
        for (size_t i = 0; i < n; i++)
                if (jobs[i].pid == pid) {
                        jobs[i].end = now_us();
                        jobs[i].status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                        jobs[i].pid = 0;
                        return;
                }
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

        return x < y ? -1 : x > y;
}

/* Nearest-rank percentile. */
static double pct(const uint64_t *v, size_t n, unsigned p) {
        size_t rank;

        if (n == 0)
                return 0;
        rank = (n * p + 99) / 100;
        return (double) v[rank ? rank - 1 : 0] / 1000.0;
}

static int loop_setup(const char *backing, const char *slot_s, const char *count_s) {
        unsigned long long slot = strtoull(slot_s, NULL, 10);
        unsigned long count = strtoul(count_s, NULL, 10);
        int ctl, bfd;

        if (slot == 0 || slot % 512 != 0 || count == 0) {
                fprintf(stderr, "evs-bench-run: --loop-setup BACKING SLOT_BYTES COUNT: bad numbers\n");
                return 2;
        }
        ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        bfd = open(backing, O_RDWR | O_CLOEXEC);
        if (ctl < 0 || bfd < 0) {
                fprintf(stderr, "evs-bench-run: %s: %s\n", ctl < 0 ? "/dev/loop-control" : backing, strerror(errno));
                return 1;
        }
        for (unsigned long i = 0; i < count; i++) {
                struct loop_config cfg = {
                        .fd = (uint32_t) bfd,
                        .info = { .lo_offset = i * slot, .lo_sizelimit = slot },
                };
                char path[64];
                int nr = ioctl(ctl, LOOP_CTL_GET_FREE), fd = -1;

                if (nr < 0 || (unsigned long) nr != i) {
                        fprintf(stderr, "evs-bench-run: the free loop device is %d, not %lu: %s\n", nr, i,
                                nr < 0 ? strerror(errno) : "another loop device is in use");
                        return 1;
                }
                snprintf(path, sizeof path, "/dev/loop%d", nr);
                for (int tries = 0; fd < 0 && tries < 100; tries++) {
                        fd = open(path, O_RDWR | O_CLOEXEC);
                        if (fd < 0 && errno == ENOENT)
                                usleep(10000);
                        else if (fd < 0)
                                break;
                }
                if (fd < 0 || ioctl(fd, LOOP_CONFIGURE, &cfg) < 0) {
                        fprintf(stderr, "evs-bench-run: %s: %s\n", path, strerror(errno));
                        return 1;
                }
                close(fd);
        }
        return 0;
}

/* ---- --bus ---- */

typedef struct bus_run {
        sd_event *event;
        size_t running;
        int err_fd;
} bus_run;

static bus_run the_run;

static int on_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        job *j = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);

        (void) ret_error;
        j->end = now_us();
        j->status = e ? 1 : 0;
        if (e && the_run.err_fd >= 0)
                dprintf(the_run.err_fd, "%s: %s\n", j->argv[1], e->message ?: e->name);
        j->bus = sd_bus_flush_close_unref(j->bus);
        the_run.running--;
        return 0;
}

/* Starts the call of @j on a connection of its own; 0 when it was sent. */
static int bus_start(job *j, const char *address) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        const char *verb = j->argv[0], *id = j->argv[1];
        int r;

        j->start = now_us();
        if (!id || j->argv[2] || (!streq(verb, "attach") && !streq(verb, "detach") && !streq(verb, "detach-force")))
                return -EINVAL;
        r = sd_bus_new(&j->bus);
        if (r >= 0)
                r = sd_bus_set_address(j->bus, address);
        if (r >= 0)
                r = sd_bus_start(j->bus);
        if (r >= 0)
                r = sd_bus_attach_event(j->bus, the_run.event, SD_EVENT_PRIORITY_NORMAL);
        if (r >= 0)
                r = sd_bus_message_new_method_call(j->bus, &m, NULL, EVS_BUS_OBJECT, EVS_BUS_INTERFACE,
                                                   streq(verb, "attach") ? "AttachVolume" : "DetachVolume");
        if (r >= 0)
                r = streq(verb, "attach") ? sd_bus_message_append(m, "s", id)
                                          : sd_bus_message_append(m, "sb", id, streq(verb, "detach-force"));
        if (r >= 0)
                r = sd_bus_call_async(j->bus, NULL, m, on_reply, j, 600U * 1000000U);
        if (r < 0) {
                j->bus = sd_bus_flush_close_unref(j->bus);
                return r;
        }
        the_run.running++;
        return 0;
}

/* Dispatches answers until every call sent has its answer. */
static int wait_running(void) {
        while (the_run.running > 0) {
                int r = sd_event_run(the_run.event, UINT64_MAX);

                if (r < 0) {
                        fprintf(stderr, "evs-bench-run: sd_event_run: %s\n", strerror(-r));
                        return r;
                }
        }
        return 0;
}

/* Runs the calls of @jobs, all at once when @parallel, else each after the last one's answer. */
static int bus_run_all(job *jobs, size_t n, const char *path, bool parallel, int err_fd) {
        _cleanup_free_ char *address = NULL;
        int r, ret = 0;

        if (asprintf(&address, "unix:path=%s", path) < 0)
                return 1;
        r = sd_event_new(&the_run.event);
        if (r < 0) {
                fprintf(stderr, "evs-bench-run: sd_event_new: %s\n", strerror(-r));
                return 1;
        }
        the_run.err_fd = err_fd;
        for (size_t i = 0; i < n; i++) {
                r = bus_start(&jobs[i], address);
                if (r < 0) {
                        fprintf(stderr, "evs-bench-run: %s %s: %s\n", jobs[i].argv[0], strna(jobs[i].argv[1]),
                                r == -EINVAL ? "not \"attach|detach|detach-force VOLUME\"" : strerror(-r));
                        jobs[i].end = jobs[i].start;
                        jobs[i].status = 127;
                        ret = 1;
                        continue;
                }
                if (!parallel && wait_running() < 0)
                        return 1;
        }
        if (wait_running() < 0)
                return 1;
        the_run.event = sd_event_unref(the_run.event);
        return ret;
}

int main(int argc, char *argv[]) {
        const char *times_path = NULL, *errors_path = NULL, *bus_path = NULL;
        bool parallel = false;
        job *jobs = NULL;
        size_t n = 0, ok = 0, running = 0;
        uint64_t t0, t1, *lat;
        char *line = NULL;
        size_t cap = 0;
        int err_fd = -1, ret = 0;
        FILE *f;

        if (argc == 5 && streq(argv[1], "--loop-setup"))
                return loop_setup(argv[2], argv[3], argv[4]);
        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "--parallel"))
                        parallel = true;
                else if (streq(argv[i], "--times") && i + 1 < argc)
                        times_path = argv[++i];
                else if (streq(argv[i], "--errors") && i + 1 < argc)
                        errors_path = argv[++i];
                else if (streq(argv[i], "--bus") && i + 1 < argc)
                        bus_path = argv[++i];
                else {
                        fprintf(stderr, "usage: evs-bench-run [--bus PATH] [--parallel] [--times FILE] [--errors FILE] < COMMANDS\n");
                        return 2;
                }
        }
        while (getline(&line, &cap, stdin) > 0) {
                char *copy = strdup(line), **a;
                job *js;

                if (!copy)
                        return 1;
                a = split(copy);
                if (!a) {
                        free(copy);
                        continue;
                }
                js = realloc(jobs, (n + 1) * sizeof *jobs);
                if (!js)
                        return 1;
                jobs = js;
                jobs[n++] = (job) { .line = copy, .argv = a };
        }
        free(line);
        if (errors_path) {
                err_fd = open(errors_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
                if (err_fd < 0) {
                        fprintf(stderr, "evs-bench-run: %s: %s\n", errors_path, strerror(errno));
                        return 1;
                }
        }

        t0 = now_us();
        if (bus_path)
                ret = bus_run_all(jobs, n, bus_path, parallel, err_fd);
        for (size_t i = 0; !bus_path && i < n; i++) {
                int status;
                pid_t pid;

                if (start(&jobs[i], err_fd) < 0) {
                        fprintf(stderr, "evs-bench-run: fork: %s\n", strerror(errno));
                        jobs[i].end = jobs[i].start;
                        jobs[i].status = 127;
                        ret = 1;
                        continue;
                }
                running++;
                if (parallel)
                        continue;
                while ((pid = waitpid(jobs[i].pid, &status, 0)) < 0 && errno == EINTR)
                        ;
                finish(jobs, n, pid, status);
                running--;
        }
        while (running > 0) {
                int status;
                pid_t pid = wait(&status);

                if (pid < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                finish(jobs, n, pid, status);
                running--;
        }
        t1 = now_us();

        lat = calloc(n + 1, sizeof *lat);
        if (!lat)
                return 1;
        f = times_path ? fopen(times_path, "we") : NULL;
        for (size_t i = 0; i < n; i++) {
                lat[i] = jobs[i].end - jobs[i].start;
                ok += jobs[i].status == 0;
                if (f)
                        fprintf(f, "%llu %llu %d\n", (unsigned long long) jobs[i].start,
                                (unsigned long long) jobs[i].end, jobs[i].status);
        }
        if (f)
                fclose(f);
        qsort(lat, n, sizeof *lat, cmp_u64);
        printf("n=%zu ok=%zu failed=%zu p50=%.1f p99=%.1f max=%.1f wall=%.1f\n", n, ok, n - ok, pct(lat, n, 50),
               pct(lat, n, 99), n ? (double) lat[n - 1] / 1000.0 : 0.0, (double) (t1 - t0) / 1000.0);
        free(lat);
        for (size_t i = 0; i < n; i++) {
                free(jobs[i].argv);
                free(jobs[i].line);
        }
        free(jobs);
        return ret;
}
