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

/* Logs and returns -abs(@error) (or 0 when @error is 0); %m in @fmt is strerror(@error). */
int log_internal(int level, int error, const char *fmt, ...) _printf_(3, 4);

/* Logs @fmt with extra journal fields given as "KEY=value" strings, NULL-terminated after the
 * format arguments are consumed: log_fields(LOG_INFO, 0, fields, "Attached %s", id). */
int log_fields(int level, int error, const char *const *fields, const char *fmt, ...) _printf_(4, 5);

#define log_debug(...) log_internal(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...) log_internal(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) log_internal(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_internal(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_internal(LOG_ERR, 0, __VA_ARGS__)
#define log_debug_errno(e, ...) log_internal(LOG_DEBUG, (e), __VA_ARGS__)
#define log_warning_errno(e, ...) log_internal(LOG_WARNING, (e), __VA_ARGS__)
#define log_error_errno(e, ...) log_internal(LOG_ERR, (e), __VA_ARGS__)
#define log_oom() log_internal(LOG_ERR, ENOMEM, "Out of memory.")
