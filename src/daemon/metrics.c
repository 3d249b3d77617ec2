/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>

#include "histogram.h"
#include "kms-gate.h"
#include "metrics.h"
#include "string-util.h"

static const double attach_bounds[] = { 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30 };
static const double lock_bounds[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 };
#define N_LABELS 32

typedef struct counter {
        char *label;
        uint64_t value;
} counter;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static counter attaches[N_LABELS], refusals[N_LABELS], detaches[N_LABELS];
static histogram attach_duration = HISTOGRAM_INIT(attach_bounds);
static histogram lock_hold = HISTOGRAM_INIT(lock_bounds), lock_wait = HISTOGRAM_INIT(lock_bounds);
static usec_t lock_hold_cpu;

/* Called locked. Labels beyond N_LABELS are counted under "other". */
static void count(counter *c, const char *label) {
        size_t i;

        for (i = 0; i < N_LABELS - 1 && c[i].label; i++)
                if (streq(c[i].label, label))
                        break;
        if (!c[i].label) {
                c[i].label = strdup(i == N_LABELS - 1 ? "other" : label);
                if (!c[i].label)
                        return;
        }
        c[i].value++;
}

void metrics_attach_done(const char *result, const char *reason, usec_t duration) {
        pthread_mutex_lock(&lock);
        count(attaches, result);
        if (reason)
                count(refusals, reason);
        histogram_observe(&attach_duration, duration);
        pthread_mutex_unlock(&lock);
}

void metrics_engine_job_done(usec_t held, usec_t held_cpu, usec_t waited) {
        pthread_mutex_lock(&lock);
        histogram_observe(&lock_hold, held);
        histogram_observe(&lock_wait, waited);
        lock_hold_cpu += held_cpu;
        pthread_mutex_unlock(&lock);
}

void metrics_detach_done(const char *result) {
        pthread_mutex_lock(&lock);
        count(detaches, result);
        pthread_mutex_unlock(&lock);
}

static void write_counters(FILE *f, const char *name, const char *help, const char *label, const counter *c) {
        fprintf(f, "# TYPE %s counter\n# HELP %s %s\n", name, name, help);
        for (size_t i = 0; i < N_LABELS && c[i].label; i++)
                fprintf(f, "%s_total{%s=\"%s\"} %" PRIu64 "\n", name, label, c[i].label, c[i].value);
}

/* Persistent exec helpers (Persistent=yes), per backend that keeps them: one family after the other, as
 * OpenMetrics wants (no family's samples between another's). */
static void write_helper_processes(FILE *f, kms_registry *registry) {
        static const struct {
                const char *name, *type, *help, *suffix;
                bool started;
        } families[] = {
                { "evs_kms_helper_processes", "gauge", "Persistent exec helpers running, idle or serving a call.", "",
                  false },
                { "evs_kms_helper_starts", "counter", "Persistent exec helpers started (each answered the handshake).",
                  "_total", true },
        };

        for (size_t k = 0; k < ELEMENTSOF(families); k++) {
                bool header = false;

                for (size_t i = 0; i < registry->n_backends; i++) {
                        kms_backend *b = registry->backends[i];
                        uint64_t started;
                        unsigned running;

                        if (kms_helper_processes(b, &running, &started) < 0)
                                continue;
                        if (!header) {
                                fprintf(f, "# TYPE %s %s\n# HELP %s %s\n", families[k].name, families[k].type,
                                        families[k].name, families[k].help);
                                header = true;
                        }
                        fprintf(f, "%s%s{backend=\"%s\"} %" PRIu64 "\n", families[k].name, families[k].suffix,
                                b->name, families[k].started ? started : (uint64_t) running);
                }
        }
}

int metrics_format(kms_registry *registry, char **ret) {
        _cleanup_free_ const char **names = NULL;
        _cleanup_free_ kms_gate **gates = NULL;
        char *text = NULL;
        size_t size = 0;
        FILE *f;

        names = calloc(registry->n_backends + 1, sizeof *names);
        gates = calloc(registry->n_backends + 1, sizeof *gates);
        if (!names || !gates)
                return -ENOMEM;
        for (size_t i = 0; i < registry->n_backends; i++) {
                names[i] = registry->backends[i]->name;
                gates[i] = registry->backends[i]->gate;
        }
        f = open_memstream(&text, &size);
        if (!f)
                return -ENOMEM;

        kms_gate_metrics_write(f, gates, names, registry->n_backends);
        write_helper_processes(f, registry);
        pthread_mutex_lock(&lock);
        write_counters(f, "evs_attaches", "Attach requests by result.", "result", attaches);
        write_counters(f, "evs_refusals", "Refused attaches by reason (the bus error name).", "reason", refusals);
        write_counters(f, "evs_detaches", "Detach requests by result.", "result", detaches);
        histogram_write_header(f, "evs_attach_duration_seconds", "Time from an attach request to its answer.");
        histogram_write(f, "evs_attach_duration_seconds", "", &attach_duration);
        histogram_write_header(f, "evs_engine_lock_hold_seconds",
                               "Time each request held the engine lock: its device work, done one request at a time.");
        histogram_write(f, "evs_engine_lock_hold_seconds", "", &lock_hold);
        fprintf(f, "# TYPE evs_engine_lock_hold_cpu_seconds counter\n"
                   "# UNIT evs_engine_lock_hold_cpu_seconds seconds\n"
                   "# HELP evs_engine_lock_hold_cpu_seconds CPU time the jobs used while they held the engine lock.\n"
                   "evs_engine_lock_hold_cpu_seconds_total %.6f\n",
                (double) lock_hold_cpu / (double) USEC_PER_SEC);
        histogram_write_header(f, "evs_engine_lock_wait_seconds",
                               "Time each request waited for the engine lock, behind other requests' device work.");
        histogram_write(f, "evs_engine_lock_wait_seconds", "", &lock_wait);
        pthread_mutex_unlock(&lock);
        fputs("# EOF\n", f);
        if (fclose(f) != 0) {
                free(text);
                return -ENOMEM;
        }
        *ret = text;
        return 0;
}
