/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <systemd/sd-device.h>

#include "crypttab.h"
#include "evs-messages.h"
#include "dm.h"
#include "log.h"
#include "token.h"
#include "udev-watch.h"
#include "volume-ops.h"

struct udev_watch {
        sd_device_monitor *monitor;
};


/* A disk that appeared or went: handled as a job, like a bus request (the same queue, the same
 * per-volume serialisation), so that 200 disks appearing at boot neither block the loop nor each
 * other's KMS calls. */
typedef struct udev_job {
        manager *manager;
        char *node;
        char *id;
        bool remove;
} udev_job;

static int udev_job_run(void *userdata) {
        udev_job *j = userdata;
        manager *m = j->manager;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        if (!j->remove) {
                _cleanup_(volume_view_done) volume_view v = {};
                _cleanup_free_ char *tab = NULL;
                bool already = false;

                /* A disk of /etc/crypttab is systemd-cryptsetup's to open (at boot, or when its unit is
                 * started): attaching it too would race that unit for the disk. */
                r = crypttab_lists(EVS_CRYPTTAB, j->node, &tab);
                if (r < 0)
                        return log_oom();
                if (r > 0) {
                        log_id(LOG_INFO, 0, EVS_MESSAGE_VOLUME_APPEARED,
                               "Volume %s appeared on %s; it is listed in " EVS_CRYPTTAB " as %s, which "
                               "systemd-cryptsetup opens: not attaching.",
                               j->id, j->node, tab);
                        return 0;
                }

                /* volume_attach() logs refusals with their reason and records them for `evsctl volume list`. */
                r = volume_attach(m, j->node, &v, &already, &error);
                if (r < 0 && !sd_bus_error_has_name(&error, "org.evs.Cryptd1.Error.KeyDisabled"))
                        log_debug("Attach of %s on %s failed: %s", j->id, j->node, error.message ?: strerror(-r));
        } else {
                _cleanup_free_ char *mapping = NULL;
                _cleanup_(dm_mapping_info_done) dm_mapping_info dmi = {};
                bool was = false, deferred = false;

                if (!volume_id_valid(j->id) || volume_mapping_name(j->id, &mapping) < 0)
                        return 0;
                if (dm_mapping_get(mapping, &dmi) < 0 || !dmi.exists)
                        return 0;
                log_notice("Disk %s of volume %s disappeared; closing mapping %s.", j->node, j->id, mapping);
                /* The disk is gone: a mapping still held open is removed as soon as it is closed. */
                r = volume_detach(m, j->id, VOLUME_DETACH_DISK_GONE, &was, &deferred, &error);
                if (r < 0)
                        log_warning_errno(r, "Failed to close mapping %s of vanished disk %s: %s", mapping, j->node,
                                          error.message ?: strerror(-r));
        }
        sd_bus_error_free(&error);
        return 0;
}

static void udev_job_done(void *userdata, int r) {
        udev_job *j = userdata;

        manager_notify_status(j->manager);
        free(j->node);
        free(j->id);
        free(j);
}

static void submit_device(manager *m, sd_device *d, bool remove) {
        const char *node, *id;
        udev_job *j;
        int r;

        if (sd_device_get_devname(d, &node) < 0 || sd_device_get_property_value(d, EVS_UDEV_PROPERTY, &id) < 0)
                return;
        if (!remove && !m->config.auto_attach) {
                log_id(LOG_INFO, 0, EVS_MESSAGE_VOLUME_APPEARED, "Volume %s appeared on %s; AutoAttach=no, not attaching.", id, node);
                return;
        }
        j = calloc(1, sizeof *j);
        if (!j || !(j->node = strdup(node)) || !(j->id = strdup(id))) {
                if (j)
                        free(j->node);
                free(j);
                log_oom();
                return;
        }
        j->manager = m;
        j->remove = remove;
        r = engine_submit(m->engine, udev_job_run, udev_job_done, j);
        if (r < 0) {
                log_warning_errno(r, "Cannot queue disk %s of volume %s: %m", node, id);
                udev_job_done(j, r);
        }
}

static void attach_device(manager *m, sd_device *d) {
        submit_device(m, d, false);
}

static void remove_device(manager *m, sd_device *d) {
        submit_device(m, d, true);
}

static int on_device(sd_device_monitor *monitor, sd_device *d, void *userdata) {
        manager *m = userdata;
        sd_device_action_t action;

        if (sd_device_get_action(d, &action) < 0)
                return 0;
        if (action == SD_DEVICE_ADD || action == SD_DEVICE_CHANGE)
                attach_device(m, d);
        else if (action == SD_DEVICE_REMOVE)
                remove_device(m, d);
        return 0;
}

static int coldplug(manager *m) {
        _cleanup_(sd_device_enumerator_unrefp) sd_device_enumerator *e = NULL;
        int r;

        r = sd_device_enumerator_new(&e);
        if (r >= 0)
                r = sd_device_enumerator_add_match_subsystem(e, "block", true);
        if (r >= 0)
                r = sd_device_enumerator_add_match_property(e, EVS_UDEV_PROPERTY, "*");
        if (r < 0)
                return log_error_errno(r, "Failed to enumerate block devices: %m");
        for (sd_device *d = sd_device_enumerator_get_device_first(e); d; d = sd_device_enumerator_get_device_next(e))
                attach_device(m, d);
        return 0;
}

int udev_watch_start(manager *m) {
        struct udev_watch *w;
        int r;

        if (access("/run/udev/control", F_OK) < 0) {
                log_info("udev is not running: not watching for EVS disks.");
                return 0;
        }

        w = calloc(1, sizeof *w);
        if (!w)
                return log_oom();
        r = sd_device_monitor_new(&w->monitor);
        if (r >= 0)
                r = sd_device_monitor_filter_add_match_subsystem_devtype(w->monitor, "block", NULL);
        if (r >= 0)
                r = sd_device_monitor_attach_event(w->monitor, m->event);
        if (r >= 0)
                r = sd_device_monitor_start(w->monitor, on_device, m);
        if (r < 0) {
                sd_device_monitor_unref(w->monitor);
                free(w);
                return log_error_errno(r, "Failed to watch udev block devices: %m");
        }
        m->udev = w;
        return coldplug(m);
}

void udev_watch_stop(manager *m) {
        if (!m->udev)
                return;
        sd_device_monitor_unref(m->udev->monitor);
        free(m->udev);
        m->udev = NULL;
}
