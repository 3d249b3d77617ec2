/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Envelope encryption of a volume's data key: 32 random bytes, wrapped by a CMK, bound to the volume
 * id. The one implementation used by the daemon, evsctl's tools, the token plugin and the tests. */

#include "kms.h"
#include "token.h"

/* Generates a data key and wraps it under @key for @volume_id. Fills *ret_token (keyslot -1: the
 * caller sets it). Errors of kms_wrap(); -EINVAL for an invalid volume id. */
int envelope_seal(kms_backend *b, const kms_key *key, const char *volume_id, secret **ret_data_key,
                  evs_token *ret_token);

/* Re-wraps the data key of @token under @key (same volume), into *ret_token. */
int envelope_rewrap(kms_backend *from, const evs_token *token, kms_backend *to, const kms_key *key,
                    evs_token *ret_token);

/* Checks @token against the expected volume id (-EMEDIUMTYPE on a mismatch: a token copied from another
 * volume), that its CMK is usable (-EKEYREVOKED, -EKEYEXPIRED, -ENOKEY, -EHOSTDOWN, -ENOENT), and unwraps
 * (-EBADMSG when the wrapped key was altered, -EXDEV when it belongs to another CMK). One KMS call (the
 * unwrap) for backends whose unwrap enforces the CMK's state, a describe and the unwrap for the others.
 * On success *ret_key (may be NULL) describes the CMK (from the token when no describe was made). */
int envelope_open(kms_backend *b, const evs_token *token, const char *volume_id, kms_key *ret_key,
                  secret **ret_data_key);
