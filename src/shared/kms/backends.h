/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "kms.h"

extern const kms_backend_ops kms_local_ops;
extern const kms_backend_ops kms_kmip_ops;
extern const kms_backend_ops kms_pkcs11_ops;
extern const kms_backend_ops kms_exec_ops;

/* The exec backend's handling of a helper's answer without a helper: @reply (@size bytes, exit status
 * @exit_status) is taken as the reply to @op (describe, create, list, disable, enable, schedule-deletion,
 * cancel-deletion, wrap, unwrap) and goes through exactly the checks and parsing of a real one, through the
 * kms_*() verbs. For the fuzz target (tests/fuzz/fuzz-exec-reply.c) and tests, never used by the daemon.
 * Returns what the verb returned; -ENOTRECOVERABLE when a failure left no reason or a reason that is not one
 * line; -EINVAL for an unknown @op. */
int kms_exec_parse_reply(const char *op, const uint8_t *reply, size_t size, int exit_status);
