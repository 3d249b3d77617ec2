/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The live state of a server's or AS configuration's disks: what the headers, the KMS and device-mapper say
 * now. Apart from server.c so that evsctl, which only decodes disks, links no KMS backend. */

#include "server.h"

typedef struct kms_registry kms_registry;

/* The header of a server disk wins for its CMK and cipher: reads the header of @d->device and, when it
 * holds EVS volume @d->volume_id, takes its key id, alias, backend and cipher. 1 when it does, 0 when it
 * does not (or cannot be read), -ENOMEM. A plain disk: 1, nothing read. */
int disk_spec_read_header(disk_spec *d);
/* The state of the disk's CMK now (one KMS call): "destroyed" for a key the backend does not know,
 * "unavailable" for a backend that does not answer; NULL for a disk without CMK. -ENOMEM. */
int disk_spec_fill_key_state(disk_spec *d, kms_registry *registry);
/* d->mapping: /dev/mapper/evs-VOLID while the volume is open, else NULL. -ENOMEM. */
int disk_spec_fill_mapping(disk_spec *d);
