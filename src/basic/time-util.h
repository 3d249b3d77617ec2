/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef uint64_t usec_t;

#define USEC_PER_SEC UINT64_C(1000000)
#define USEC_PER_DAY (UINT64_C(86400) * USEC_PER_SEC)

usec_t now_realtime(void);
usec_t now_monotonic(void);

/* Formats @t as UTC ISO 8601 ("2026-11-28T01:02:03Z") into @buf. Returns @buf, "n/a" for 0. */
const char *format_timestamp(char *buf, size_t size, usec_t t);
#define FORMAT_TIMESTAMP_MAX 32

/* Parses UTC-anchored ISO 8601 "YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)" (a space may replace
 * the 'T'). -EINVAL when malformed or before 1970. */
int parse_timestamp(const char *s, usec_t *ret);
