/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* RepairVolume: the one verb that lets libcryptsetup rewrite a damaged LUKS2 header copy from the intact one.
 * Every other verb reads headers without repairing them (luks_read()) and refuses a damaged one. */

#include "bus-api.h"
#include "bus-methods.h"
#include "errors.h"
#include "log.h"
#include "manager.h"
#include "volume-db.h"
#include "volume-ops.h"

static int volume_repair(manager *m, const char *ref, volume_view *ret, bool *ret_repaired, sd_bus_error *error) {
        _cleanup_(volume_record_done) volume_record rec = {};
        _cleanup_(luks_info_done) luks_info info = {};
        _cleanup_free_ char *device = NULL;
        const char *reason = NULL;
        bool repaired = false;
        int r;

        if (isempty(ref))
                return evs_bus_error_setf(error, EINVAL, "No volume given.");
        if (ref[0] == '/')
                device = strdup(ref);
        else if (!volume_id_valid(ref))
                return evs_bus_error_setf(error, EINVAL, "Invalid volume id '%s': " VOLUME_ID_RULE ".", ref);
        else if (volume_db_load(m->config.state_dir, ref, &rec) >= 0 && rec.device)
                device = TAKE_PTR(rec.device); /* where it was last seen: its header may not read now */
        else {
                r = volume_resolve(m, ref, &device, &info, error);
                if (r < 0)
                        return r;
        }
        if (!device)
                return -ENOMEM;

        r = luks_repair(device, &repaired, &reason);
        if (r == -ENOENT)
                return evs_bus_error_setf(error, ENXIO, "Device %s does not exist.", device);
        if (r == -ENODATA)
                return evs_bus_error_setf(error, ENODATA, "Cannot repair %s: %s (neither LUKS2 header copy is intact).",
                                          device, reason ?: "not a LUKS2 volume");
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot repair the LUKS2 header of %s: %s%s%s.", device,
                                          strerror(-r), reason ? ": " : "", strempty(reason));
        if (repaired)
                log_notice("Repaired the LUKS2 header of %s (%s) from its intact copy.", device, reason ?: "damaged");
        else
                log_info("LUKS2 header of %s: both copies intact, nothing to repair.", device);
        *ret_repaired = repaired;
        return volume_get(m, device, ret, error);
}

typedef struct repair_reply {
        const volume_view *view;
        int repaired;
} repair_reply;

static int append_repair(sd_bus_message *reply, const void *item) {
        const repair_reply *p = item;
        const volume_view *v = p->view;

        return sd_bus_message_append(reply, EVS_VOLUME_SIG "b", strempty(v->id), strempty(v->device),
                                     strempty(v->mapping), strempty(v->state), strempty(v->key_id),
                                     strempty(v->key_alias), strempty(v->key_state), strempty(v->backend),
                                     strempty(v->warning), strempty(v->last_error), p->repaired);
}

int method_repair_volume(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(volume_view_done) volume_view v = {};
        bool repaired = false;
        const char *ref;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "s", &ref);
        if (r < 0)
                return r;
        r = volume_repair(userdata, ref, &v, &repaired, error);
        if (r < 0)
                return r;
        return bus_reply(msg, append_repair, &(repair_reply){&v, repaired});
}
