/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A histogram of durations for OpenMetrics, with the bucket bounds (in seconds, ascending) of the
 * family it belongs to. Not locked: its owner's lock guards it. */

#include <stdint.h>
#include <stdio.h>

#include "macro.h"
#include "time-util.h"

#define HISTOGRAM_BOUNDS_MAX 15U

typedef struct histogram {
        const double *bounds;
        size_t n_bounds;                              /* at most HISTOGRAM_BOUNDS_MAX */
        uint64_t buckets[HISTOGRAM_BOUNDS_MAX + 1];   /* per bucket, not cumulative; the last is +Inf */
        double sum;                                   /* seconds */
} histogram;

#define HISTOGRAM_INIT(b) ((histogram) { .bounds = (b), .n_bounds = ELEMENTSOF(b) })

void histogram_observe(histogram *h, usec_t duration);

/* The family's header: "# TYPE NAME histogram", "# UNIT NAME seconds", "# HELP NAME HELP". */
void histogram_write_header(FILE *f, const char *name, const char *help);

/* The samples of one histogram of family @name: NAME_bucket{LABELS,le="..."} (cumulative), NAME_count
 * and NAME_sum, where @labels is "" or a label list such as backend="tk",op="wrap". */
void histogram_write(FILE *f, const char *name, const char *labels, const histogram *h);
