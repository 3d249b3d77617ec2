/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <systemd/sd-bus.h>

#include "luks.h"
#include "manager.h"

/* A volume as the API shows it. Empty strings are NULL here. */
typedef struct volume_view {
        char *id;
        char *device;
        char *mapping;
        const char *state; /* "attached", "detached" */
        char *key_id;
        char *key_alias;
        const char *key_state;
        char *backend;
        char *warning;
        char *last_error;
        unsigned key_version;        /* CMK material version the data key is wrapped with, 0 = unknown */
        unsigned key_latest_version; /* the CMK's newest version as last seen, 0 = unknown */
        /* Beyond the VOLUME struct (GetVolumeDetails, ListVolumeDetails): */
        unsigned unbound_keyslots; /* keyslots no evs-kms or evs-recovery token is bound to */
        int recovery_keyslot;      /* the evs-recovery token's keyslot, -1 when none */
        char *attached_by;         /* who opened the mapping when not evs-cryptd under evs-ID: "systemd-cryptsetup", a name */
        uint64_t created;          /* usec, from the volume record (GetVolumeCreated): 0 = unknown */
} volume_view;

/* How long a view of a volume (volume_get(), volume_list()) waits for its disk to answer the read of its
 * header: a disk whose I/O hangs is shown as not answering (from the volume's record), not waited for. */
#define VOLUME_VIEW_WAIT_USEC (2 * USEC_PER_SEC)

void volume_view_done(volume_view *v);
void volume_view_array_free(volume_view *v, size_t n);

/* Each sets @error (a one-line reason, org.evs.Cryptd1.Error.* through the errno map) and returns -errno. */
int volume_create(manager *m, const char *device, const char *volume_id, const char *key_ref, bool force,
                  volume_view *ret, sd_bus_error *error);
/* What volume_create() checks before it writes anything (arguments, the CMK's state, signatures on
 * @device unless @force), without writing: a caller formatting several disks validates them all first. */
int volume_create_check(manager *m, const char *device, const char *volume_id, const char *key_ref, bool force,
                        sd_bus_error *error);
/* volume_create(), also handing back the new data key (to fill the data area in userspace). */
int volume_create_keyed(manager *m, const char *device, const char *volume_id, const char *key_ref, bool force,
                        secret **ret_data_key, volume_view *ret, sd_bus_error *error);
int volume_attach(manager *m, const char *ref, volume_view *ret, bool *ret_already, sd_bus_error *error);
typedef enum volume_detach_mode {
        VOLUME_DETACH_GUARDED,   /* refused (nothing closed) when the volume could not be attached again: one describe */
        VOLUME_DETACH_FORCED,    /* --force: no KMS call, a busy mapping removed deferred, logged DETACH_FORCED */
        VOLUME_DETACH_DISK_GONE, /* udev removal: as forced, warned when the last key state seen is not enabled */
        VOLUME_DETACH_CHECK,     /* nothing closed: 0 when a guarded detach would go ahead (the guard's describe, the
                                  * systemd-cryptsetup@ owner, in use), else its refusal; the first pass of a caller
                                  * detaching several volumes (server delete) */
        VOLUME_DETACH_CHECKED,   /* as guarded, without the describe: a VOLUME_DETACH_CHECK just passed */
} volume_detach_mode;

int volume_detach(manager *m, const char *ref, volume_detach_mode mode, bool *ret_was_attached, bool *ret_deferred,
                  sd_bus_error *error);
int volume_get(manager *m, const char *ref, volume_view *ret, sd_bus_error *error);
int volume_list(manager *m, volume_view **ret, size_t *ret_n, sd_bus_error *error);
/* evsctl volume check: every check of an attach, nothing opened, nothing recorded; one KMS call. */
typedef struct volume_check_result {
        volume_view view;    /* what is known; state "attached" when a mapping is open, key_state once the KMS answered */
        char *error_name;    /* the error an attach would answer (org.evs.Cryptd1.Error.*), NULL when it would attach */
        char *error_message; /* its one-line reason */
} volume_check_result;

void volume_check_result_done(volume_check_result *c);
void volume_check_result_array_free(volume_check_result *c, size_t n);
/* -ENOMEM only: every other outcome is in @ret. */
int volume_check(manager *m, const char *ref, volume_check_result *ret);
/* volume_check() of every volume volume_list() knows. */
int volume_check_all(manager *m, volume_check_result **ret, size_t *ret_n, sd_bus_error *error);
/* evsctl volume recovery add|remove: a keyslot opened by @passphrase (libcryptsetup's default KDF) and an
 * evs-recovery token bound to it, recorded in the volume record; adding needs the CMK (one KMS call). */
int volume_recovery_add(manager *m, const char *ref, const secret *passphrase, int *ret_keyslot, sd_bus_error *error);
int volume_recovery_remove(manager *m, const char *ref, int *ret_keyslot, sd_bus_error *error);
/* Resolves a volume id or a device path to its device and header (an EVS volume). */
int volume_resolve(manager *m, const char *ref, char **ret_device, luks_info *ret_info, sd_bus_error *error);
/* rewrap.c: re-wraps the data key of volume @ref under @key_ref, crash-safe (see src/shared/rewrap.h). */
int volume_rewrap(manager *m, const char *ref, const char *key_ref, volume_view *ret, sd_bus_error *error);

/* Records open evs-* mappings found at start. */
int volume_reconcile(manager *m);
/* Number of open evs-* mappings. */
unsigned volume_count_attached(void);
