/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>

/* A multi-threaded host (the daemon) sets hooks that run around every long wait that touches no shared
 * state, or only state with a lock of its own: a KMS answer (kms.c, every backend call), the copy loop of a
 * payload (image.c), the write of a volume record (volume-db.c), the first read of a volume's header
 * area from its disk (luks.c) and, in the daemon, libdevmapper's wait for udev (src/daemon/udev-cookie.c). The host gives up its lock on shared state meanwhile. A caller about to enter code that must not see the lock given up
 * (a KMS call from inside libcryptsetup's token callback) suppresses the hooks for its thread meanwhile. */
void wait_hooks_set(void (*begin)(void), void (*end)(void));
void wait_hooks_suppress(bool suppress);
/* Whether this thread's hooks are suppressed: it keeps its lock through a wait, so it must not wait for
 * another thread that may need that lock (kms.c's shared describes). */
bool wait_hooks_suppressed(void);

/* Around such a wait; nested or suppressed calls do nothing. */
void wait_hooks_begin(void);
void wait_hooks_end(void);
