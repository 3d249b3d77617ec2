/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <time.h>

#include "time-util.h"

static usec_t now_clock(clockid_t id) {
        struct timespec ts;

        (void) clock_gettime(id, &ts);
        return (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / 1000;
}

usec_t now_realtime(void) {
        return now_clock(CLOCK_REALTIME);
}

usec_t now_monotonic(void) {
        return now_clock(CLOCK_MONOTONIC);
}

const char *format_timestamp(char *buf, size_t size, usec_t t) {
        struct tm tm;
        time_t sec;

        if (t == 0)
                return "n/a";
        sec = (time_t) (t / USEC_PER_SEC);
        if (!gmtime_r(&sec, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
                return "n/a";
        return buf;
}
