/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdarg.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
/* The CODE_* fields are the call site's (log.h), not this file's. */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#include "log.h"
#include "string-util.h"

static const char *log_ident = "evs";
static int max_level = LOG_INFO;
static bool use_journal = false;
static bool prefix_levels = false;

static bool journal_stream_is_stderr(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%lu:%lu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
                return false;
        return st.st_dev == dev && st.st_ino == ino;
}

void log_setup(const char *ident, bool allow_journal) {
        log_ident = ident;
        /* The journal when our stderr is connected to it (running as a service) or, for a daemon,
         * whenever its socket exists; stderr otherwise. */
        use_journal = allow_journal &&
                      (journal_stream_is_stderr() || access("/run/systemd/journal/socket", W_OK) == 0);
        prefix_levels = !use_journal && !isatty(STDERR_FILENO) && allow_journal;
}

void log_set_max_level(int level) {
        max_level = level;
}

int log_get_max_level(void) {
        return max_level;
}

static int log_dispatch(int level, int error, const char *file, int line, const char *func, const char *const *fields,
                        const char *fmt, va_list ap) _printf_(7, 0);
static int log_dispatch(int level, int error, const char *file, int line, const char *func, const char *const *fields,
                        const char *fmt, va_list ap) {
        _cleanup_free_ char *escaped = NULL;
        char buf[2048];
        const char *msg = buf;
        int saved = errno;

        if (error < 0)
                error = -error;
        if (level > max_level)
                return -error;

        errno = error; /* for %m */
        vsnprintf(buf, sizeof buf, fmt, ap);
        errno = saved;
        /* One entry, one line: text from a KMS, a token or a record may hold control characters. */
        if (string_needs_escape(buf) && (escaped = cescape(buf)))
                msg = escaped;

        if (use_journal) {
                struct iovec iov[32];
                char prio[16], errno_field[32], ident[64], code_line[32];
                _cleanup_free_ char *message = NULL, *code_file = NULL, *code_func = NULL;
                size_t n = 0;

                if (asprintf(&message, "MESSAGE=%s", msg) < 0)
                        goto fallback;
                snprintf(prio, sizeof prio, "PRIORITY=%d", level);
                snprintf(ident, sizeof ident, "SYSLOG_IDENTIFIER=%s", log_ident);
                iov[n++] = (struct iovec) { message, strlen(message) };
                iov[n++] = (struct iovec) { prio, strlen(prio) };
                iov[n++] = (struct iovec) { ident, strlen(ident) };
                if (file && asprintf(&code_file, "CODE_FILE=%s", file) >= 0) {
                        snprintf(code_line, sizeof code_line, "CODE_LINE=%d", line);
                        iov[n++] = (struct iovec) { code_file, strlen(code_file) };
                        iov[n++] = (struct iovec) { code_line, strlen(code_line) };
                }
                if (func && asprintf(&code_func, "CODE_FUNC=%s", func) >= 0)
                        iov[n++] = (struct iovec) { code_func, strlen(code_func) };
                if (error > 0) {
                        snprintf(errno_field, sizeof errno_field, "ERRNO=%d", error);
                        iov[n++] = (struct iovec) { errno_field, strlen(errno_field) };
                }
                for (const char *const *f = fields; f && *f && n < ELEMENTSOF(iov); f++)
                        iov[n++] = (struct iovec) { (void *) *f, strlen(*f) };
                if (sd_journal_sendv(iov, (int) n) >= 0)
                        return -error;
        }

fallback:
        /* One write(2) per entry: lines of concurrent workers never interleave (stderr is unbuffered, so
         * piecewise fprintf()s would be one write each). */
        {
                _cleanup_free_ char *line_buf = NULL;
                size_t size = 0;
                FILE *f = open_memstream(&line_buf, &size);

                if (!f) {
                        fprintf(stderr, "%s\n", msg);
                        return -error;
                }
                if (prefix_levels) {
                        /* No journal: keep the structured fields visible on the line. */
                        fprintf(f, "<%d>%s", level, msg);
                        for (const char *const *fl = fields; fl && *fl; fl++) {
                                _cleanup_free_ char *e = string_needs_escape(*fl) ? cescape(*fl) : NULL;

                                fprintf(f, " %s", e ?: *fl);
                        }
                        fputc('\n', f);
                } else
                        fprintf(f, "%s\n", msg);
                if (fclose(f) == 0)
                        (void) !write(STDERR_FILENO, line_buf, size);
        }
        return -error;
}

int log_internal_at(int level, int error, const char *file, int line, const char *func, const char *fmt, ...) {
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = log_dispatch(level, error, file, line, func, NULL, fmt, ap);
        va_end(ap);
        return r;
}

int log_fields_internal(int level, int error, const char *file, int line, const char *func,
                        const char *const *fields, const char *fmt, ...) {
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = log_dispatch(level, error, file, line, func, fields, fmt, ap);
        va_end(ap);
        return r;
}
