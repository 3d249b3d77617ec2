/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libcryptsetup-token-evs-kms.so: the evs-kms LUKS2 token for stock cryptsetup and
 * systemd-cryptsetup. The same unlock code as the daemon (luks_token_open -> envelope_open): it reads
 * evs-cryptd.conf, opens the configured KMS backends in-process, checks the CMK and unwraps the data
 * key, bound to the volume's LUKS2 label. */

#include <libcryptsetup.h>

#include "build-config.h"
#include "json-util.h"
#include "luks.h"
#include "token.h"

_public_ const char *cryptsetup_token_version(void);
_public_ int cryptsetup_token_open(struct crypt_device *cd, int token, char **buffer, size_t *buffer_len, void *usrptr);
_public_ void cryptsetup_token_buffer_free(void *buffer, size_t buffer_len);
_public_ int cryptsetup_token_validate(struct crypt_device *cd, const char *json);
_public_ void cryptsetup_token_dump(struct crypt_device *cd, const char *json);

const char *cryptsetup_token_version(void) {
        return PACKAGE_VERSION;
}

int cryptsetup_token_open(struct crypt_device *cd, int token, char **buffer, size_t *buffer_len, void *usrptr) {
        _cleanup_(evs_config_done) evs_config config = {};
        _cleanup_(kms_registry_freep) kms_registry *reg = NULL;
        _cleanup_free_ char *error = NULL;
        luks_unlock u = {};
        const char *label, *config_path = secure_getenv("EVS_CONFIG") ?: EVS_CONFIG_FILE;
        int r;

        r = evs_config_load(config_path, false, &config, &error);
        if (r >= 0)
                r = kms_registry_new(&config, NULL, &reg, &error);
        if (r < 0) {
                crypt_log(cd, CRYPT_LOG_ERROR, error ?: "evs-kms: cannot load the configuration\n");
                return -EINVAL;
        }

        label = crypt_get_label(cd);
        if (!volume_label_valid(label)) {
                crypt_log(cd, CRYPT_LOG_ERROR, "evs-kms: the LUKS2 label is not a volume id\n");
                return -EINVAL;
        }
        u.registry = reg;
        u.volume_id = label;
        r = luks_token_open(cd, token, buffer, buffer_len, &u);
        if (r < 0) {
                char msg[512];

                snprintf(msg, sizeof msg, "evs-kms: cannot unlock volume %s: %s\n", label,
                         u.reason ?: kms_backend_error(u.backend) ?: strerror(-r));
                crypt_log(cd, CRYPT_LOG_ERROR, msg);
        }
        luks_unlock_done(&u);
        /* libcryptsetup expects -EPERM for "this token cannot unlock": keep the reason in the log. */
        return r < 0 ? -EPERM : 0;
}

void cryptsetup_token_buffer_free(void *buffer, size_t buffer_len) {
        luks_token_buffer_free(buffer, buffer_len);
}

int cryptsetup_token_validate(struct crypt_device *cd, const char *json) {
        return luks_token_validate(cd, json);
}

void cryptsetup_token_dump(struct crypt_device *cd, const char *json) {
        _cleanup_(evs_token_done) evs_token t = {};
        const char *reason = NULL;
        char line[512];

        if (evs_token_from_json(json, &t, &reason) < 0) {
                snprintf(line, sizeof line, "\tinvalid evs-kms token: %s\n", strna(reason));
                crypt_log(cd, CRYPT_LOG_NORMAL, line);
                return;
        }
        snprintf(line, sizeof line, "\tbackend:  %s\n\tkey:      %s%s%s%s\n\tvolume:   %s\n", t.backend, t.key_id,
                 t.key_alias ? " (" : "", strempty(t.key_alias), t.key_alias ? ")" : "", t.volume_id);
        crypt_log(cd, CRYPT_LOG_NORMAL, line);
}
