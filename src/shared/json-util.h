/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(json_object *, json_object_put);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct json_tokener *, json_tokener_free);

/* Typed getters for a member of @o. -ENODATA when missing (or null where @nullable allows it: then
 * *ret is NULL / 0), -EINVAL when present with the wrong type or an out-of-range value. */
int json_get_string(json_object *o, const char *key, bool nullable, const char **ret);
int json_get_uint64(json_object *o, const char *key, bool nullable, uint64_t *ret);
/* An optional string member into *ret (replacing it): missing, null and "" become NULL. -EINVAL for
 * another type, -ENOMEM. */
int json_get_string_dup(json_object *o, const char *key, char **ret);

/* Adds @key only when @v is not NULL (or as JSON null when @null_if_missing). -ENOMEM. */
int json_add_string(json_object *o, const char *key, const char *v, bool null_if_missing);
int json_add_uint64(json_object *o, const char *key, uint64_t v);

/* Serialises compactly; the caller frees. NULL on OOM. */
char *json_to_string_dup(json_object *o, bool pretty);

/* Parses one JSON document of at most @max bytes. -EINVAL (naming nothing: the caller knows what it
 * parsed), -ENOMEM. */
int json_parse(const char *text, size_t max, json_object **ret);
