/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* src/basic/openmetrics.c: OpenMetrics text in the Prometheus text format: counters' TYPE and HELP name
 * NAME_total, UNIT, EOF, _created samples and exemplars left out, "unknown" is "untyped", HELP's \" is
 * unescaped; text without "# EOF" at its end, or with a malformed TYPE line or an OpenMetrics-only type, is
 * refused. */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "openmetrics.h"
#include "test-util.h"

static void expect(const char *in, const char *want) {
        char *out = NULL;

        assert_int_equal(openmetrics_to_prometheus(in, &out), 0);
        assert_string_equal(out, want);
        free(out);
}

static void expect_error(const char *in, int error) {
        char *out = NULL;

        assert_int_equal(openmetrics_to_prometheus(in, &out), error);
        assert_null(out);
}

static void test_counter(void **state) {
        (void) state;
        expect("# TYPE evs_attaches counter\n"
               "# HELP evs_attaches Attach requests by result.\n"
               "evs_attaches_total{result=\"attached\"} 3\n"
               "evs_attaches_created{result=\"attached\"} 1.7e9\n"
               "# EOF\n",
               "# TYPE evs_attaches_total counter\n"
               "# HELP evs_attaches_total Attach requests by result.\n"
               "evs_attaches_total{result=\"attached\"} 3\n");
        /* HELP first, a counter without samples, a unit */
        expect("# HELP c_seconds CPU time.\n"
               "# TYPE c_seconds counter\n"
               "# UNIT c_seconds seconds\n"
               "c_seconds_total 0.5\n"
               "# TYPE idle counter\n"
               "# EOF\n",
               "# HELP c_seconds_total CPU time.\n"
               "# TYPE c_seconds_total counter\n"
               "c_seconds_total 0.5\n"
               "# TYPE idle_total counter\n");
}

static void test_others(void **state) {
        (void) state;
        /* gauges and histograms keep their names; a gauge named like a counter's _created stays */
        expect("# TYPE q gauge\n"
               "# HELP q Queued \\\"calls\\\", \\\\ and \\n.\n"
               "q{backend=\"a\"} 2\n"
               "# TYPE x_created gauge\n"
               "x_created 1\n"
               "# TYPE d_seconds histogram\n"
               "# UNIT d_seconds seconds\n"
               "d_seconds_bucket{le=\"+Inf\"} 1\n"
               "d_seconds_count 1\n"
               "d_seconds_sum 0.25\n"
               "d_seconds_created 1.7e9\n"
               "# TYPE u unknown\n"
               "u 7\n"
               "# EOF\n",
               "# TYPE q gauge\n"
               "# HELP q Queued \"calls\", \\\\ and \\n.\n"
               "q{backend=\"a\"} 2\n"
               "# TYPE x_created gauge\n"
               "x_created 1\n"
               "# TYPE d_seconds histogram\n"
               "d_seconds_bucket{le=\"+Inf\"} 1\n"
               "d_seconds_count 1\n"
               "d_seconds_sum 0.25\n"
               "# TYPE u untyped\n"
               "u 7\n");
}

static void test_exemplar(void **state) {
        (void) state;
        /* the exemplar goes; " # " inside a label value is no exemplar */
        expect("# TYPE d histogram\n"
               "d_bucket{op=\"a # b\",le=\"1\"} 4 # {trace_id=\"x\"} 0.5\n"
               "d_bucket{op=\"a \\\" # b\",le=\"+Inf\"} 4\n"
               "# EOF\n",
               "# TYPE d histogram\n"
               "d_bucket{op=\"a # b\",le=\"1\"} 4\n"
               "d_bucket{op=\"a \\\" # b\",le=\"+Inf\"} 4\n");
}

static void test_eof(void **state) {
        (void) state;
        expect("q 1\n# EOF", "q 1\n"); /* the newline after EOF is optional */
        expect("# EOF\n", "");
}

static void test_refused(void **state) {
        (void) state;
        expect_error("", -EBADMSG);
        expect_error("# TYPE q gauge\nq 1\n", -EBADMSG); /* no EOF */
        expect_error("# EOF\nq 1\n", -EBADMSG);   /* EOF before the end */
        expect_error("# TYPE q\n# EOF\n", -EBADMSG); /* no type */
        expect_error("# TYPE  gauge\n# EOF\n", -EBADMSG);
        expect_error("# TYPE i info\ni_info 1\n# EOF\n", -EOPNOTSUPP);
        expect_error("# TYPE s stateset\n# EOF\n", -EOPNOTSUPP);
        expect_error("# TYPE g gaugehistogram\n# EOF\n", -EOPNOTSUPP);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_counter),
                cmocka_unit_test(test_others),
                cmocka_unit_test(test_exemplar),
                cmocka_unit_test(test_eof),
                cmocka_unit_test(test_refused),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
