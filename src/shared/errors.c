/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdarg.h>
#include <stdio.h>

#include "errors.h"
#include "string-util.h"

/* name, errno, exit code: the single source. */
#define EVS_ERRORS(X)                                                  \
        X(KeyDisabled, EKEYREVOKED, EXIT_KEY_STATE)                    \
        X(KeyPendingDeletion, EKEYEXPIRED, EXIT_KEY_STATE)             \
        X(KeyDestroyed, ENOKEY, EXIT_KEY_STATE)                        \
        X(KeyStateConflict, EKEYREJECTED, EXIT_KEY_STATE)              \
        X(KeyProtected, EBADRQC, EXIT_KEY_STATE) /* KMS_EPROTECTED */  \
        X(KmsUnavailable, EHOSTDOWN, EXIT_KMS_UNAVAILABLE)             \
        X(KmsProtocolError, EPROTO, EXIT_KMS_UNAVAILABLE)              \
        X(KeyNotFound, ENOENT, EXIT_NOT_FOUND)                         \
        X(VolumeNotFound, ENXIO, EXIT_NOT_FOUND)                       \
        X(VolumeBusy, EBUSY, EXIT_BUSY)                                \
        X(DeviceHasData, ENOTEMPTY, EXIT_DEVICE_HAS_DATA)              \
        X(VolumeMismatch, EMEDIUMTYPE, EXIT_FAILURE_OTHER)             \
        X(WrappedKeyInvalid, EBADMSG, EXIT_FAILURE_OTHER)              \
        X(WrongKey, EXDEV, EXIT_FAILURE_OTHER)                         \
        X(NotEncrypted, ENODATA, EXIT_FAILURE_OTHER)                   \
        X(AlreadyExists, EEXIST, EXIT_FAILURE_OTHER)                   \
        X(NotSupported, EOPNOTSUPP, EXIT_FAILURE_OTHER)                \
        X(KeyslotNotBound, ENOTUNIQ, EXIT_FAILURE_OTHER)               \
        X(StoreCorrupt, EUCLEAN, EXIT_FAILURE_OTHER)                   \
        X(AccessDenied, EACCES, EXIT_PERMISSION)                       \
        X(InvalidArgument, EINVAL, EXIT_USAGE)                         \
        X(NotBlockDevice, ENOTBLK, EXIT_USAGE)                         \
        /* What a file or device operation of the daemon can fail with: */ \
        X(OperationNotPermitted, EPERM, EXIT_PERMISSION)               \
        X(NoSpace, ENOSPC, EXIT_FAILURE_OTHER)                         \
        X(ReadOnlyFileSystem, EROFS, EXIT_FAILURE_OTHER)               \
        X(QuotaExceeded, EDQUOT, EXIT_FAILURE_OTHER)                   \
        X(IOError, EIO, EXIT_FAILURE_OTHER)

#define MAP_ENTRY(name, error, code) SD_BUS_ERROR_MAP(EVS_BUS_ERROR_PREFIX #name, error),
const sd_bus_error_map evs_bus_error_map[] = {
        EVS_ERRORS(MAP_ENTRY)
        SD_BUS_ERROR_MAP_END
};

static const struct {
        const char *name;
        int error;
        int exit_code;
} error_table[] = {
#define TABLE_ENTRY(name, error, code) { EVS_BUS_ERROR_PREFIX #name, error, code },
        EVS_ERRORS(TABLE_ENTRY)
};

int evs_errors_register(void) {
        static bool done = false;
        int r;

        if (done)
                return 0;
        r = sd_bus_error_add_map(evs_bus_error_map);
        if (r < 0)
                return r;
        done = true;
        return 0;
}

int evs_exit_code(int r) {
        int e = r < 0 ? -r : r;

        if (e == 0)
                return EXIT_OK;
        for (size_t i = 0; i < ELEMENTSOF(error_table); i++)
                if (error_table[i].error == e)
                        return error_table[i].exit_code;
        return EXIT_FAILURE_OTHER;
}

int evs_bus_error_setf(sd_bus_error *error, int r, const char *fmt, ...) {
        char msg[1024];
        va_list ap;
        int e = r < 0 ? -r : r;

        _cleanup_free_ char *line = NULL;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        /* The text carries names and reasons from KMSs, tokens and records: keep it on one line. */
        line = cescape(msg);

        /* sd-bus maps errno to names only through its built-in list: name ours explicitly. */
        for (size_t i = 0; i < ELEMENTSOF(error_table); i++)
                if (error_table[i].error == e)
                        return sd_bus_error_set(error, error_table[i].name, line ?: msg);
        return sd_bus_error_set_errnof(error, e, "%s", line ?: msg);
}
