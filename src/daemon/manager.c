/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <systemd/sd-daemon.h>

#include "errors.h"
#include "kms-gate.h"
#include "string-util.h"
#include "fileio.h"
#include "lib-log.h"
#include "log.h"
#include "luks.h"
#include "manager.h"
#include "records.h"
#include "volume-ops.h"

#define STATE_LOCK_FILE "daemon.lock"

/* One daemon per state directory: two would both read-modify-write its records, both make a root key on
 * first use (one of them then seals keys under a key that is lost), and both attach the same disks. */
static int take_state_lock(manager *m) {
        _cleanup_free_ char *path = NULL;
        pid_t holder;
        int r;

        if (asprintf(&path, "%s/" STATE_LOCK_FILE, m->config.state_dir) < 0)
                return log_oom();
        r = lock_file_take(path, &m->state_lock_fd, &holder);
        if (r == -EBUSY) {
                char pid[32] = "";

                if (holder > 0)
                        (void) snprintf(pid, sizeof pid, "PID %d, ", (int) holder);
                return log_error_errno(r, "State directory %s is in use by another evs-cryptd (%s%s is locked): not "
                                       "starting.", m->config.state_dir, pid, path);
        }
        if (r < 0)
                return log_error_errno(r, "Failed to lock %s: %m", path);
        return 0;
}

int manager_new(const char *config_path, bool config_must_exist, manager **ret) {
        _cleanup_(manager_freep) manager *m = NULL;
        _cleanup_free_ char *error = NULL;
        int r;

        m = calloc(1, sizeof *m);
        if (!m)
                return log_oom();
        m->listen_fd = -EBADF;
        m->state_lock_fd = -EBADF;

        r = evs_config_load(config_path, config_must_exist, &m->config, &error);
        if (r < 0)
                return log_error_errno(r, "Bad configuration: %s", error ?: strerror(-r));

        r = mkdir_p(m->config.state_dir, 0700);
        if (r < 0)
                return log_error_errno(r, "Failed to create state directory %s: %m", m->config.state_dir);
        r = take_state_lock(m);
        if (r < 0)
                return r;

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
        r = engine_new(m->event, &m->engine);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the request engine: %m");

        *ret = TAKE_PTR(m);
        return 0;
}

manager *manager_free(manager *m) {
        if (!m)
                return NULL;
        bus_server_close_all();
        sd_event_source_unref(m->listen_source);
        sd_event_source_unref(m->sweep_source);
        if (m->listen_fd >= 0) {
                safe_close(m->listen_fd);
                if (m->listen_fd_ours)
                        (void) unlink(m->config.bus_path);
        }
        engine_free(m->engine);
        kms_registry_free(m->registry);
        evs_config_done(&m->config);
        sd_event_unref(m->event);
        safe_close(m->state_lock_fd); /* last: nothing of ours touches the state directory after it */
        free(m);
        return NULL;
}

void manager_count_attached(manager *m) {
        atomic_store(&m->n_attached, volume_count_attached());
}

void manager_notify_status(manager *m) {
        _cleanup_free_ char *kms = NULL;
        size_t size = 0;
        engine_stats es;
        FILE *f;

        f = open_memstream(&kms, &size);
        if (!f)
                return;
        for (size_t i = 0; i < m->registry->n_backends; i++) {
                kms_gate_status s;

                kms_gate_get_status(m->registry->backends[i]->gate, &s);
                fprintf(f, "%s%s %u in flight, %u queued", i > 0 ? "; " : "", m->registry->backends[i]->name,
                        s.in_flight, s.queued);
        }
        if (fclose(f) != 0)
                return;
        engine_get_stats(m->engine, &es);
        (void) sd_notifyf(false, "STATUS=Serving %u attached volume(s), %u request(s) in progress; KMS: %s.",
                          atomic_load(&m->n_attached), es.jobs, strempty(kms));
}

int manager_start(manager *m) {
        int r;

        r = bus_server_listen(m);
        if (r < 0)
                return r;
        r = volume_reconcile(m);
        if (r < 0)
                return r;
        records_warn_unreadable(m);
        manager_count_attached(m);
        /* The first look at the open volumes' CMKs: a job, since a KMS may be slow to answer. */
        (void) manager_submit_key_check(m);
        return manager_start_sweep(m);
}
