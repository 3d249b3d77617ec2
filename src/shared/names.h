/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The naming rules, one implementation each, shared by the config parser, the token codec, the KMS
 * layer, the daemon and evsctl. */

#include <stdbool.h>

#include "macro.h"

/* Volume ids (and the ids of images, servers, AS configurations): 1-64 of [A-Za-z0-9._-]. */
bool volume_id_valid(const char *id) _pure_;
/* CMK aliases: 1-128 of [A-Za-z0-9/_.-], not a UUID, no "..", no leading or trailing '/'. */
bool kms_alias_valid(const char *alias) _pure_;
/* Backend instance names ([Backend NAME], tokens): 1-64 of [A-Za-z0-9_-]. */
bool backend_name_valid(const char *name) _pure_;
