/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Logging for the programs (daemon, evsctl). src/shared code itself only logs at debug level.
 * To the journal when it is there (native protocol, structured fields), else to stderr, with
 * "<N>" priority prefixes when stderr is not a terminal (so a supervisor can tell levels apart). */

#include <stdbool.h>
#include <syslog.h>

#include "macro.h"

void log_setup(const char *ident, bool allow_journal);
void log_set_max_level(int level);
int log_get_max_level(void);

/* The source file of a call site, relative to the source tree (meson.build strips the build path with
 * -fmacro-prefix-map): "src/daemon/main.c". */
#define PROJECT_FILE __FILE__

/* Logs and returns -abs(@error) (or 0 when @error is 0); %m in @fmt is strerror(@error). @file, @line and
 * @func are the call site: the journal's CODE_FILE=, CODE_LINE= and CODE_FUNC=. Called through the
 * log_*() macros below. */
int log_internal_at(int level, int error, const char *file, int line, const char *func, const char *fmt, ...)
        _printf_(6, 7);

/* Logs @fmt with extra journal fields given as a NULL-terminated array of "KEY=value" strings:
 * log_fields(LOG_INFO, 0, fields, "Attached %s", id). */
int log_fields_internal(int level, int error, const char *file, int line, const char *func,
                        const char *const *fields, const char *fmt, ...) _printf_(7, 8);

#define log_full_errno(level, error, ...) \
        log_internal_at((level), (error), PROJECT_FILE, __LINE__, __func__, __VA_ARGS__)
#define log_internal(level, error, ...) log_full_errno(level, error, __VA_ARGS__)
#define log_fields(level, error, fields, ...) \
        log_fields_internal((level), (error), PROJECT_FILE, __LINE__, __func__, (fields), __VA_ARGS__)
/* An event with its MESSAGE_ID (src/shared/evs-messages.h, explained in evs-cryptd.catalog):
 * log_id(LOG_INFO, 0, EVS_MESSAGE_KEY_CREATED, "Created key %s.", id). */
#define log_id(level, error, message_id, ...) \
        log_fields((level), (error), ((const char *const[]) { "MESSAGE_ID=" message_id, NULL }), __VA_ARGS__)

#define log_debug(...) log_full_errno(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...) log_full_errno(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) log_full_errno(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_full_errno(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_full_errno(LOG_ERR, 0, __VA_ARGS__)
#define log_debug_errno(e, ...) log_full_errno(LOG_DEBUG, (e), __VA_ARGS__)
#define log_warning_errno(e, ...) log_full_errno(LOG_WARNING, (e), __VA_ARGS__)
#define log_error_errno(e, ...) log_full_errno(LOG_ERR, (e), __VA_ARGS__)
#define log_oom() log_full_errno(LOG_ERR, ENOMEM, "Out of memory.")
