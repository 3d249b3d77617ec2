/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <assert.h>
#include <inttypes.h>

#include "histogram.h"

void histogram_observe(histogram *h, usec_t duration) {
        double secs = (double) duration / (double) USEC_PER_SEC;
        size_t b = 0;

        assert(h->n_bounds <= HISTOGRAM_BOUNDS_MAX);
        while (b < h->n_bounds && secs > h->bounds[b])
                b++;
        h->buckets[b]++;
        h->sum += secs;
}

void histogram_write_header(FILE *f, const char *name, const char *help) {
        fprintf(f, "# TYPE %s histogram\n# UNIT %s seconds\n# HELP %s %s\n", name, name, name, help);
}

void histogram_write(FILE *f, const char *name, const char *labels, const histogram *h) {
        const char *sep = *labels ? "," : "";
        uint64_t cum = 0;

        for (size_t b = 0; b <= h->n_bounds; b++) {
                cum += h->buckets[b];
                if (b < h->n_bounds)
                        fprintf(f, "%s_bucket{%s%sle=\"%g\"} %" PRIu64 "\n", name, labels, sep, h->bounds[b], cum);
                else
                        fprintf(f, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, labels, sep, cum);
        }
        if (*labels)
                fprintf(f, "%s_count{%s} %" PRIu64 "\n%s_sum{%s} %.6f\n", name, labels, cum, name, labels, h->sum);
        else
                fprintf(f, "%s_count %" PRIu64 "\n%s_sum %.6f\n", name, cum, name, h->sum);
}
