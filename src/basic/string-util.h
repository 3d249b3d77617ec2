/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>

/* Replaces *@p with a copy of @s (NULL stays NULL), freeing the old value. -ENOMEM (then *@p is unchanged). */
int free_and_strdup(char **p, const char *s);
/* The same, but an empty string is stored as NULL. */
int free_and_strdup_nonempty(char **p, const char *s);

/* A copy of @s fit for one line of a terminal or a log: control characters (C0, DEL and the C1 range
 * U+0080..U+009F) and bytes that are not valid UTF-8 become C-style escapes (\n, \t, \r, \x1b, \xc2\x9b...).
 * Everything else, backslashes included, is kept, so escaping an escaped string changes nothing. NULL @s
 * gives NULL; NULL on OOM. */
char *cescape(const char *s);
/* True when cescape(@s) would change @s. */
bool string_needs_escape(const char *s);

/* Parses a decimal unsigned in [min, max]. -EINVAL, -ERANGE. */
int parse_unsigned(const char *s, unsigned min, unsigned max, unsigned *ret);
