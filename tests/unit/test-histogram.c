/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* src/basic/histogram.c: which bucket a duration lands in (a bound is inclusive, as OpenMetrics'
 * "le" says), the cumulative bucket lines, +Inf, _count and _sum, with and without labels. */

#include <stdlib.h>
#include <string.h>

#include "histogram.h"
#include "test-util.h"

static const double bounds[] = { 0.001, 0.01, 1 };

static char *written(const histogram *h, const char *labels) {
        char *text = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&text, &size);

        assert_non_null(f);
        histogram_write(f, "t_seconds", labels, h);
        assert_int_equal(fclose(f), 0);
        return text;
}

static void test_buckets(void **state) {
        histogram h = HISTOGRAM_INIT(bounds);

        (void) state;
        histogram_observe(&h, 0);            /* le 0.001 */
        histogram_observe(&h, 1000);         /* exactly 0.001: le 0.001 */
        histogram_observe(&h, 1001);         /* le 0.01 */
        histogram_observe(&h, USEC_PER_SEC); /* exactly 1: le 1 */
        histogram_observe(&h, 5 * USEC_PER_SEC);
        assert_int_equal(h.buckets[0], 2);
        assert_int_equal(h.buckets[1], 1);
        assert_int_equal(h.buckets[2], 1);
        assert_int_equal(h.buckets[3], 1);
        assert_true(h.sum > 6.002 && h.sum < 6.0021);
}

static void test_write(void **state) {
        histogram h = HISTOGRAM_INIT(bounds);
        char *text;

        (void) state;
        text = written(&h, "");
        assert_string_equal(text, "t_seconds_bucket{le=\"0.001\"} 0\n"
                                  "t_seconds_bucket{le=\"0.01\"} 0\n"
                                  "t_seconds_bucket{le=\"1\"} 0\n"
                                  "t_seconds_bucket{le=\"+Inf\"} 0\n"
                                  "t_seconds_count 0\n"
                                  "t_seconds_sum 0.000000\n");
        free(text);

        histogram_observe(&h, 500);
        histogram_observe(&h, 2 * USEC_PER_SEC);
        histogram_observe(&h, 250 * 1000);
        text = written(&h, "backend=\"tk\",op=\"wrap\"");
        assert_string_equal(text, "t_seconds_bucket{backend=\"tk\",op=\"wrap\",le=\"0.001\"} 1\n"
                                  "t_seconds_bucket{backend=\"tk\",op=\"wrap\",le=\"0.01\"} 1\n"
                                  "t_seconds_bucket{backend=\"tk\",op=\"wrap\",le=\"1\"} 2\n"
                                  "t_seconds_bucket{backend=\"tk\",op=\"wrap\",le=\"+Inf\"} 3\n"
                                  "t_seconds_count{backend=\"tk\",op=\"wrap\"} 3\n"
                                  "t_seconds_sum{backend=\"tk\",op=\"wrap\"} 2.250500\n");
        free(text);
}

static void test_header(void **state) {
        char *text = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&text, &size);

        (void) state;
        assert_non_null(f);
        histogram_write_header(f, "t_seconds", "What it measures.");
        assert_int_equal(fclose(f), 0);
        assert_string_equal(text, "# TYPE t_seconds histogram\n# UNIT t_seconds seconds\n# HELP t_seconds What it measures.\n");
        free(text);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_buckets),
                cmocka_unit_test(test_write),
                cmocka_unit_test(test_header),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
