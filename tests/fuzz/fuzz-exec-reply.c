/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target for the exec backend's handling of a helper's reply (evs-kms-exec(7)): whatever a helper
 * prints, the daemon must answer with a clean error or a well-formed result. Input: byte 0 picks the
 * operation, byte 1 the exit status, the rest is the helper's standard output. kms_exec_parse_reply() runs it
 * through the same kms_*() verb and reply checks a real helper's answer goes through; a failure must leave a
 * one-line reason. */

#include <stdint.h>
#include <stdlib.h>

#include "fuzz-util.h"
#include "kms/backends.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const char *const ops[] = { "describe", "create", "list", "disable", "enable",
                                           "schedule-deletion", "cancel-deletion", "wrap", "unwrap" };
        int r;

        if (size < 2 || size > 128 * 1024)
                return 0;
        r = kms_exec_parse_reply(ops[data[0] % ELEMENTSOF(ops)], data + 2, size - 2, data[1] % 4 == 3 ? data[1] : data[1] % 2);
        if (r == -ENOTRECOVERABLE)
                fuzz_fail(); /* a failure without a reason, or one that is not one line */
        return 0;
}
