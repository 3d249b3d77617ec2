/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libdevmapper's wait for udev, with the engine lock given up.
 *
 * When libcryptsetup opens or closes a mapping, libdevmapper hands udev a "cookie" with the device's
 * event and waits until udev has run its rules for it (the /dev/mapper link, blkid's probe of the new
 * device, `dmsetup udevcomplete`): a semop() that waits for the cookie's semaphore to reach zero. That
 * takes udev's time, not ours: tens of milliseconds, seconds behind a busy udev queue at boot, as long as
 * a rule that hangs. The job waits holding the engine lock, so every other volume's device work would
 * wait with it. This semop() replaces the C library's for this program: that one wait, and only it (one
 * operation, sem_op 0, blocking: libdevmapper's other semaphore operations add, or subtract without
 * waiting), runs inside the wait hooks (wait-hooks.h), like a KMS call. Whatever libdevmapper and
 * libcryptsetup do before and after it still runs under the lock, one job at a time. */

#include <errno.h>
#include <stdbool.h>
#include <sys/sem.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "macro.h"
#include "wait-hooks.h"

_public_ int semop(int semid, struct sembuf *sops, size_t nsops) {
        bool wait = nsops == 1 && sops && sops[0].sem_op == 0 && !(sops[0].sem_flg & IPC_NOWAIT);
        long r;
        int saved;

        if (wait)
                wait_hooks_begin();
        r = syscall(SYS_semtimedop, semid, sops, nsops, NULL);
        saved = errno;
        if (wait)
                wait_hooks_end();
        errno = saved;
        return (int) r;
}
