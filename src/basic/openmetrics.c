/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "openmetrics.h"
#include "strv.h"

/* One line of the text, without its newline. */
typedef struct line {
        const char *start;
        size_t len;
} line;

static bool line_is(line l, const char *s) {
        return l.len == strlen(s) && memcmp(l.start, s, l.len) == 0;
}

static bool line_starts(line l, const char *prefix) {
        return l.len >= strlen(prefix) && memcmp(l.start, prefix, strlen(prefix)) == 0;
}

/* The length of the metric name at the start of @s. */
static size_t name_len(const char *s, size_t len) {
        size_t n = 0;

        while (n < len && s[n] != ' ' && s[n] != '{')
                n++;
        return n;
}

/* Whether @name (@len bytes) is in @list. */
static bool listed(char **list, const char *name, size_t len) {
        STRV_FOREACH(s, list)
                if (strlen(*s) == len && memcmp(*s, name, len) == 0)
                        return true;
        return false;
}

static int list_add(char ***list, size_t *n, const char *name, size_t len) {
        char **l = reallocarray(*list, *n + 2, sizeof(char *));

        if (!l)
                return -ENOMEM;
        *list = l;
        l[*n] = strndup(name, len);
        l[*n + 1] = NULL;
        if (!l[*n])
                return -ENOMEM;
        (*n)++;
        return 0;
}

/* The families whose TYPE is counter (@counters) and those with _created samples (counters and
 * histograms, @created); -EBADMSG for a TYPE line without a name and a type, -EOPNOTSUPP for a type the
 * Prometheus format does not have. */
static int families(const char *text, char ***counters, char ***created) {
        size_t n_counters = 0, n_created = 0;
        int r;

        for (const char *p = text; *p;) {
                const char *nl = strchr(p, '\n'), *name;
                line l = { p, nl ? (size_t) (nl - p) : strlen(p) }, t;
                size_t len;

                p = nl ? nl + 1 : p + l.len;
                if (!line_starts(l, "# TYPE "))
                        continue;
                name = l.start + 7;
                len = name_len(name, l.len - 7);
                if (len == 0 || len + 8 > l.len)
                        return -EBADMSG;
                t = (line) { name + len + 1, l.len - 8 - len };
                if (line_is(t, "info") || line_is(t, "stateset") || line_is(t, "gaugehistogram"))
                        return -EOPNOTSUPP;
                if (line_is(t, "counter") && (r = list_add(counters, &n_counters, name, len)) < 0)
                        return r;
                if ((line_is(t, "counter") || line_is(t, "histogram")) &&
                    (r = list_add(created, &n_created, name, len)) < 0)
                        return r;
        }
        return 0;
}

/* A HELP text, "\"" unescaped. */
static void write_help(FILE *f, const char *s, size_t len) {
        for (size_t i = 0; i < len; i++) {
                if (s[i] == '\\' && i + 1 < len) {
                        if (s[i + 1] != '"')
                                fputc('\\', f);
                        fputc(s[++i], f);
                } else
                        fputc(s[i], f);
        }
}

/* A sample line without its exemplar: the end of the value, past the label set's quoted values. */
static size_t sample_len(line l) {
        size_t i = name_len(l.start, l.len);
        bool quoted = false;

        if (i < l.len && l.start[i] == '{')
                for (; i < l.len; i++) {
                        if (quoted && l.start[i] == '\\')
                                i++;
                        else if (l.start[i] == '"')
                                quoted = !quoted;
                        else if (!quoted && l.start[i] == '}')
                                break;
                }
        for (; i + 2 < l.len; i++)
                if (memcmp(l.start + i, " # ", 3) == 0)
                        return i;
        return l.len;
}

/* Whether sample @l is NAME_created of a family of @created. */
static bool is_created(char **created, line l) {
        size_t len = name_len(l.start, l.len);

        return len > 8 && memcmp(l.start + len - 8, "_created", 8) == 0 && listed(created, l.start, len - 8);
}

static int convert(FILE *f, const char *text, char **counters, char **created) {
        for (const char *p = text; *p;) {
                const char *nl = strchr(p, '\n');
                line l = { p, nl ? (size_t) (nl - p) : strlen(p) };

                p = nl ? nl + 1 : p + l.len;
                if (line_is(l, "# EOF")) {
                        if (*p)
                                return -EBADMSG; /* "# EOF" must close the text */
                        return 0;
                }
                if (line_starts(l, "# UNIT ") || (!line_starts(l, "#") && is_created(created, l)))
                        continue;
                if (line_starts(l, "# TYPE ") || line_starts(l, "# HELP ")) {
                        const char *name = l.start + 7, *rest;
                        size_t len = name_len(name, l.len - 7);

                        rest = name + len;
                        fprintf(f, "%.7s%.*s%s", l.start, (int) len, name, listed(counters, name, len) ? "_total" : "");
                        if (line_starts(l, "# TYPE ") && line_is((line) { rest, l.len - (size_t) (rest - l.start) },
                                                                 " unknown"))
                                fputs(" untyped", f);
                        else if (line_starts(l, "# HELP "))
                                write_help(f, rest, l.len - (size_t) (rest - l.start));
                        else
                                fprintf(f, "%.*s", (int) (l.len - (size_t) (rest - l.start)), rest);
                        fputc('\n', f);
                        continue;
                }
                fprintf(f, "%.*s\n", (int) (line_starts(l, "#") ? l.len : sample_len(l)), l.start);
        }
        return -EBADMSG; /* no "# EOF" */
}

int openmetrics_to_prometheus(const char *text, char **ret) {
        _cleanup_(strv_freep) char **counters = NULL, **created = NULL;
        char *out = NULL;
        size_t size = 0;
        FILE *f;
        int r;

        r = families(text, &counters, &created);
        if (r < 0)
                return r;
        f = open_memstream(&out, &size);
        if (!f)
                return -ENOMEM;
        r = convert(f, text, counters, created);
        if (fclose(f) != 0 && r >= 0)
                r = -ENOMEM;
        if (r < 0) {
                free(out);
                return r;
        }
        *ret = out;
        return 0;
}
