/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* OpenMetrics text in the Prometheus text format (version 0.0.4), for readers that take only that one:
 * node_exporter's textfile collector above all, which keeps the type and help of a counter only when they
 * name the sample (NAME_total), and reads every other counter as an untyped metric.
 *
 * The rules: a counter family NAME's "# TYPE" and "# HELP" lines name NAME_total; its NAME_created samples
 * (and a histogram's) are left out; "# UNIT" lines and the closing "# EOF" are left out; the type "unknown"
 * is "untyped"; "\"" in a help text is unescaped (the Prometheus format escapes only "\\" and "\n"); an
 * exemplar (" # {...} V" after a sample's value) is left out. The types info, stateset and gaugehistogram
 * have no counterpart: -EOPNOTSUPP. Text that does not end with "# EOF" or whose "# TYPE" line is
 * malformed: -EBADMSG. */

int openmetrics_to_prometheus(const char *text, char **ret);
