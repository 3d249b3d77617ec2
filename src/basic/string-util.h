/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Replaces *@p with a copy of @s (NULL stays NULL), freeing the old value. -ENOMEM (then *@p is unchanged). */
int free_and_strdup(char **p, const char *s);
/* The same, but an empty string is stored as NULL. */
int free_and_strdup_nonempty(char **p, const char *s);
