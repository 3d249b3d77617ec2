/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* evs-cryptd.conf: the syntax of systemd unit files (config.c), sections and keys:
 *   [Daemon]  StateDirectory=  BusPath=  AutoAttach=  RefuseUnboundKeyslots=  SweepIntervalSec=
 *   [KMS]     DefaultBackend=
 *   [Backend NAME]  Type=local|kmip|pkcs11|exec  plus the type's own keys (validated by the backend)
 * The main file is read first, then FILE.d/ *.conf in lexical order; later lines win. */

#include <stdbool.h>
#include <stddef.h>

#include "kms.h"
#include "string-util.h"

typedef struct evs_config {
        char *state_dir;
        char *bus_path;
        char *default_backend;
        bool auto_attach;
        bool refuse_unbound_keyslots; /* keyslots no evs-kms or evs-recovery token is bound to refuse an attach */
        unsigned sweep_interval_sec;
        kms_backend_config *backends; /* always holds "local" */
        size_t n_backends;
} evs_config;

/* Loads @path and its drop-ins over the built-in defaults. A missing @path is fine when
 * !@must_exist. -EINVAL with *ret_error = "FILE:LINE: reason" for a syntax error, an unknown section
 * or key, or a bad value; -ENOENT for a missing file that must exist; -ENOMEM. */
int evs_config_load(const char *path, bool must_exist, evs_config *ret, char **ret_error);
void evs_config_done(evs_config *c);

/* The backend section named @name, or NULL. */
const kms_backend_config *evs_config_backend(const evs_config *c, const char *name);

/* Parses yes/no/true/false/on/off/1/0. -EINVAL. */
int parse_boolean(const char *s);
