/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdint.h>

#include "macro.h"
#include "string-util.h"

int free_and_strdup(char **p, const char *s) {
        char *t = NULL;

        if (s && !(t = strdup(s)))
                return -ENOMEM;
        free(*p);
        *p = t;
        return 0;
}

int free_and_strdup_nonempty(char **p, const char *s) {
        return free_and_strdup(p, isempty(s) ? NULL : s);
}

/* The length of the valid UTF-8 sequence at @s that is not a C1 control, or 0. */
static size_t utf8_printable_len(const unsigned char *s) {
        uint32_t c;
        size_t n;

        if (s[0] < 0x80)
                return s[0] >= 0x20 && s[0] != 0x7f;
        if (s[0] >= 0xc2 && s[0] <= 0xdf)
                n = 2, c = s[0] & 0x1fU;
        else if (s[0] >= 0xe0 && s[0] <= 0xef)
                n = 3, c = s[0] & 0x0fU;
        else if (s[0] >= 0xf0 && s[0] <= 0xf4)
                n = 4, c = s[0] & 0x07U;
        else
                return 0;
        for (size_t i = 1; i < n; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0; /* also stops at the NUL */
                c = c << 6 | (s[i] & 0x3fU);
        }
        if ((n == 3 && c < 0x800) || (n == 4 && (c < 0x10000 || c > 0x10ffff)) || (c >= 0xd800 && c <= 0xdfff))
                return 0; /* overlong, out of range, surrogate */
        if (c >= 0x80 && c <= 0x9f)
                return 0; /* C1 controls: CSI (U+009B) starts an escape sequence on some terminals */
        return n;
}

bool string_needs_escape(const char *s) {
        const unsigned char *p = (const unsigned char *) s;

        if (!s)
                return false;
        while (*p) {
                size_t n = utf8_printable_len(p);

                if (n == 0)
                        return true;
                p += n;
        }
        return false;
}

char *cescape(const char *s) {
        const unsigned char *p = (const unsigned char *) s;
        char *buf, *o;

        if (!s)
                return NULL;
        buf = malloc(strlen(s) * 4 + 1);
        if (!buf)
                return NULL;
        for (o = buf; *p;) {
                size_t n = utf8_printable_len(p);

                if (n > 0) {
                        memcpy(o, p, n);
                        o += n;
                        p += n;
                        continue;
                }
                *o++ = '\\';
                switch (*p) {
                case '\n': *o++ = 'n'; break;
                case '\t': *o++ = 't'; break;
                case '\r': *o++ = 'r'; break;
                case '\a': *o++ = 'a'; break;
                case '\b': *o++ = 'b'; break;
                case '\f': *o++ = 'f'; break;
                case '\v': *o++ = 'v'; break;
                default:
                        *o++ = 'x';
                        *o++ = "0123456789abcdef"[*p >> 4];
                        *o++ = "0123456789abcdef"[*p & 0xf];
                }
                p++;
        }
        *o = '\0';
        return buf;
}

int parse_unsigned(const char *s, unsigned min, unsigned max, unsigned *ret) {
        unsigned long v;
        char *end;

        if (isempty(s) || !(*s >= '0' && *s <= '9')) /* no sign, no whitespace (strtoul skips it) */
                return -EINVAL;
        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        if (errno != 0 || *end)
                return -EINVAL;
        if (v < min || v > max)
                return -ERANGE;
        *ret = (unsigned) v;
        return 0;
}
