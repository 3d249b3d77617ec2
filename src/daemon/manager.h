/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include <stdatomic.h>

#include "config.h"
#include "engine.h"
#include "kms-registry.h"

typedef struct manager {
        evs_config config;
        kms_registry *registry;
        sd_event *event;
        sd_event_source *listen_source;
        sd_event_source *sweep_source;
        int listen_fd;
        int state_lock_fd; /* flock()ed STATE/daemon.lock: one daemon per state directory */
        bool listen_fd_ours; /* we bound it (not socket activation): unlink on exit */
        struct udev_watch *udev; /* see udev-watch.c; NULL when not watching */
        engine *engine;
        atomic_uint n_attached;   /* open evs-* mappings, as the last job that looked counted them */
        atomic_bool sweep_running;
} manager;

int manager_new(const char *config_path, bool config_must_exist, manager **ret);
manager *manager_free(manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(manager *, manager_free);

/* Binds the bus socket (or takes it from socket activation), reconciles and starts the timers. */
int manager_start(manager *m);

/* Updates STATUS= for the service manager. Any thread. */
void manager_notify_status(manager *m);
/* Recounts the open evs-* mappings into m->n_attached. Under the engine lock (a job). */
void manager_count_attached(manager *m);

/* bus-server.c */
int bus_server_listen(manager *m);
/* Closes and frees every bus connection still open. At exit, after the loop has stopped. */
void bus_server_close_all(void);
extern const sd_bus_vtable manager_vtable[];

/* key-watch.c: checks the CMKs of open volumes and warns when one changed state. */
int manager_check_open_volumes(manager *m);
/* Runs the sweep of every backend and manager_check_open_volumes() as a job, unless one is running. */
int manager_submit_key_check(manager *m);
int manager_start_sweep(manager *m);
