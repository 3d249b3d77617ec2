/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdlib.h>
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

int parse_timestamp(const char *s, usec_t *ret) {
        struct tm tm = {};
        const char *p;
        char *end;
        long offset = 0;
        usec_t frac = 0;
        time_t t;

        if (!s)
                return -EINVAL;
        p = strptime(s, "%Y-%m-%d", &tm);
        if (!p || (*p != 'T' && *p != ' '))
                return -EINVAL;
        p = strptime(p + 1, "%H:%M:%S", &tm);
        if (!p)
                return -EINVAL;
        if (*p == '.') {
                usec_t scale = USEC_PER_SEC / 10;

                if (!(p[1] >= '0' && p[1] <= '9'))
                        return -EINVAL;
                for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
                        frac += (usec_t) (*p - '0') * scale;
        }
        if (*p == 'Z' || *p == 'z')
                p++;
        else if (*p == '+' || *p == '-') {
                unsigned long h, m;

                if (!(p[1] >= '0' && p[1] <= '9'))
                        return -EINVAL;
                h = strtoul(p + 1, &end, 10);
                if (end != p + 3 || *end != ':' || !(end[1] >= '0' && end[1] <= '9'))
                        return -EINVAL;
                m = strtoul(end + 1, &end, 10);
                if (end != p + 6 || h > 23 || m > 59)
                        return -EINVAL;
                offset = (long) (h * 3600 + m * 60) * (*p == '-' ? -1 : 1);
                p = end;
        } else
                return -EINVAL;
        if (*p != 0)
                return -EINVAL;

        t = timegm(&tm);
        if (t == (time_t) -1 || t - offset < 0)
                return -EINVAL;
        *ret = (usec_t) (t - offset) * USEC_PER_SEC + frac;
        return 0;
}
