/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <systemd/sd-daemon.h>

#include "errors.h"
#include "fileio.h"
#include "lib-log.h"
#include "log.h"
#include "luks.h"
#include "manager.h"
#include "volume-ops.h"

int manager_new(const char *config_path, bool config_must_exist, manager **ret) {
        _cleanup_(manager_freep) manager *m = NULL;
        _cleanup_free_ char *error = NULL;
        int r;

        m = calloc(1, sizeof *m);
        if (!m)
                return log_oom();
        m->listen_fd = -EBADF;

        r = evs_config_load(config_path, config_must_exist, &m->config, &error);
        if (r < 0)
                return log_error_errno(r, "Bad configuration: %s", error ?: strerror(-r));

        r = mkdir_p(m->config.state_dir, 0700);
        if (r < 0)
                return log_error_errno(r, "Failed to create state directory %s: %m", m->config.state_dir);

        error = mfree(error);
        r = kms_registry_new(&m->config, NULL, &m->registry, &error);
        if (r < 0)
                return log_error_errno(r, "Bad KMS configuration: %s", error ?: strerror(-r));

        lib_log_setup();

        r = evs_errors_register();
        if (r < 0)
                return log_error_errno(r, "Failed to register bus errors: %m");
        r = luks_register_token_handler();
        if (r < 0)
                return log_error_errno(r, "Failed to register the evs-kms token handler: %m");

        r = sd_event_default(&m->event);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate the event loop: %m");

        *ret = TAKE_PTR(m);
        return 0;
}

manager *manager_free(manager *m) {
        if (!m)
                return NULL;
        sd_event_source_unref(m->listen_source);
        sd_event_source_unref(m->sweep_source);
        if (m->listen_fd >= 0) {
                safe_close(m->listen_fd);
                if (m->listen_fd_ours)
                        (void) unlink(m->config.bus_path);
        }
        kms_registry_free(m->registry);
        evs_config_done(&m->config);
        sd_event_unref(m->event);
        free(m);
        return NULL;
}

void manager_notify_status(manager *m) {
        (void) sd_notifyf(false, "STATUS=Serving %u attached volume(s); backends: %zu, default %s.",
                          volume_count_attached(), m->registry->n_backends, m->registry->default_backend);
}

int manager_start(manager *m) {
        int r;

        r = bus_server_listen(m);
        if (r < 0)
                return r;
        r = volume_reconcile(m);
        if (r < 0)
                return r;
        (void) manager_check_open_volumes(m);
        return manager_start_sweep(m);
}
