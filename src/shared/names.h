/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The naming rules, one implementation each, shared by the config parser, the token codec, the KMS
 * layer, the daemon and evsctl. */

#include <stdbool.h>

#include "macro.h"

/* Volume ids (and the ids and names of images, servers, AS configurations): 1-64 of [A-Za-z0-9._-], not
 * starting with '.'. Every new name and every state file name follows it. */
bool volume_id_valid(const char *id) _pure_;
#define VOLUME_ID_RULE "1-64 characters of [A-Za-z0-9._-], not starting with '.'"
/* What the header of a volume made before that rule may carry as its label and token volume id: also a
 * leading '.' (but not "." or ".."). Only for reading existing disks, so that they still open; never for
 * a new name. */
bool volume_label_valid(const char *id) _pure_;
/* CMK aliases: 1-128 of [A-Za-z0-9/_.-], not a UUID, no "..", no leading or trailing '/'. */
bool kms_alias_valid(const char *alias) _pure_;
/* Backend instance names ([Backend NAME], tokens): 1-64 of [A-Za-z0-9_-]. */
bool backend_name_valid(const char *name) _pure_;

/* An RFC 4122 UUID in its 36-character text form (any version, either case). */
bool uuid_valid(const char *s) _pure_;
