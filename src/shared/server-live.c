/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "dm.h"
#include "kms-registry.h"
#include "luks.h"
#include "server-live.h"
#include "string-util.h"
#include "token.h"

int disk_spec_read_header(disk_spec *d) {
        _cleanup_(luks_info_done) luks_info info = {};
        const char *reason;

        if (d->plain)
                return 1;
        if (luks_read(d->device, &info, &reason) < 0 || !streq_ptr(info.label, d->volume_id) ||
            !streq_ptr(info.subsystem, EVS_LUKS_SUBSYSTEM))
                return 0;
        if (free_and_strdup_nonempty(&d->key_id, info.token.key_id) < 0 ||
            free_and_strdup_nonempty(&d->key_alias, info.token.key_alias) < 0 ||
            free_and_strdup_nonempty(&d->backend, info.token.backend) < 0 ||
            free_and_strdup_nonempty(&d->cipher, info.cipher) < 0)
                return -ENOMEM;
        return 1;
}

int disk_spec_fill_key_state(disk_spec *d, kms_registry *registry) {
        _cleanup_(kms_key_done) kms_key key = {};
        const char *state;
        kms_backend *b;
        int r;

        if (!d->key_id)
                return free_and_strdup(&d->key_state, NULL);
        if (kms_registry_get(registry, d->backend, &b) < 0)
                state = "unavailable";
        else {
                r = kms_key_get(b, d->key_id, &key);
                state = r >= 0 ? kms_key_state_to_string(key.state) : r == -ENOENT ? "destroyed" : "unavailable";
        }
        return free_and_strdup(&d->key_state, state);
}

int disk_spec_fill_mapping(disk_spec *d) {
        _cleanup_(dm_mapping_info_done) dm_mapping_info dmi = {};
        _cleanup_free_ char *mapping = NULL;

        d->mapping = mfree(d->mapping);
        if (d->volume_id && volume_mapping_name(d->volume_id, &mapping) >= 0 && dm_mapping_get(mapping, &dmi) >= 0 &&
            dmi.exists && asprintf(&d->mapping, "/dev/mapper/%s", mapping) < 0) {
                d->mapping = NULL;
                return -ENOMEM;
        }
        return 0;
}
