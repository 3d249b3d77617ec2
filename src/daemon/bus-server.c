/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The peer-to-peer D-Bus server: one sd-bus connection per accepted client of the daemon's own
 * socket, no broker. Only root may call. */

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-id128.h>

#include "bus-api.h"
#include "bus-hello.h"
#include "bus-methods.h"
#include "errors.h"
#include "fileio.h"
#include "log.h"
#include "engine.h"
#include "manager.h"

/* A bus method running as a job (see bus_method_async()). */
typedef struct bus_job {
        manager *manager;
        sd_bus_message *msg;
        sd_bus_message_handler_t handler;
        sd_bus_error error;
        bool replied;
} bus_job;

static __thread bus_job *current_job = NULL;

int bus_check_root(sd_bus_message *msg, sd_bus_error *error) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        uid_t uid;
        int r;

        if (current_job)
                return 0; /* checked on the loop before the job was submitted */
        r = sd_bus_query_sender_creds(msg, SD_BUS_CREDS_EUID, &creds);
        if (r < 0)
                return evs_bus_error_setf(error, EACCES, "Cannot determine the caller's identity.");
        r = sd_bus_creds_get_euid(creds, &uid);
        if (r < 0 || uid != 0)
                return evs_bus_error_setf(error, EACCES, "Access denied: only root may use evs-cryptd.");
        return 0;
}

typedef struct reply_build {
        sd_bus_message *msg;
        const char *array_sig; /* NULL: one item */
        const void *items;
        size_t n, size;
        int (*append)(sd_bus_message *reply, const void *item);
} reply_build;

/* On the loop thread: sd-bus objects are not thread-safe. */
static int reply_on_loop(void *p) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const reply_build *b = p;
        int r;

        r = sd_bus_message_new_method_return(b->msg, &reply);
        if (r >= 0 && !b->array_sig)
                r = b->append(reply, b->items);
        else if (r >= 0) {
                r = sd_bus_message_open_container(reply, 'a', b->array_sig);
                for (size_t i = 0; r >= 0 && i < b->n; i++)
                        r = b->append(reply, (const uint8_t *) b->items + i * b->size);
                if (r >= 0)
                        r = sd_bus_message_close_container(reply);
        }
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int reply_build_send(const reply_build *b) {
        int r;

        r = engine_call_on_loop(reply_on_loop, (void *) b);
        if (r >= 0 && current_job)
                current_job->replied = true;
        return r;
}

int bus_reply(sd_bus_message *msg, int (*append)(sd_bus_message *reply, const void *item), const void *item) {
        return reply_build_send(&(reply_build) { .msg = msg, .items = item, .append = append });
}

int bus_reply_array(sd_bus_message *msg, const char *sig, const void *items, size_t n, size_t size,
                    int (*append)(sd_bus_message *reply, const void *item)) {
        return reply_build_send(&(reply_build) {
                .msg = msg, .array_sig = sig, .items = items, .n = n, .size = size, .append = append });
}

static int bus_job_run(void *userdata) {
        bus_job *j = userdata;
        int r;

        current_job = j;
        r = j->handler(j->msg, j->manager, &j->error);
        current_job = NULL;
        return r;
}

/* On the loop: the error reply of a job that failed, then the message goes. */
static void bus_job_done(void *userdata, int r) {
        bus_job *j = userdata;

        if (!j->replied) {
                if (r >= 0)
                        r = -EIO; /* a handler that returned without replying: a bug, but answer */
                if (r == -ECANCELED && !sd_bus_error_is_set(&j->error))
                        (void) evs_bus_error_setf(&j->error, ECANCELED, "evs-cryptd is shutting down.");
                if (sd_bus_error_is_set(&j->error))
                        (void) sd_bus_reply_method_error(j->msg, &j->error);
                else
                        (void) sd_bus_reply_method_errno(j->msg, r, NULL);
        }
        manager_notify_status(j->manager);
        sd_bus_error_free(&j->error);
        sd_bus_message_unref(j->msg);
        free(j);
}

/* Runs @handler as a job: the caller is checked here, the work is done on a worker thread, and the
 * loop goes on serving everyone else. */
static int bus_method_async(sd_bus_message *msg, void *userdata, sd_bus_error *error,
                            sd_bus_message_handler_t handler) {
        manager *m = userdata;
        bus_job *j;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        j = calloc(1, sizeof *j);
        if (!j)
                return -ENOMEM;
        *j = (bus_job) { .manager = m, .msg = sd_bus_message_ref(msg), .handler = handler, .error = SD_BUS_ERROR_NULL };
        r = engine_submit(m->engine, bus_job_run, bus_job_done, j);
        if (r < 0) {
                sd_bus_message_unref(j->msg);
                free(j);
                if (r == -ECANCELED)
                        return evs_bus_error_setf(error, ECANCELED, "evs-cryptd is shutting down.");
                return r;
        }
        return 1;
}

#define ASYNC(fn)                                                                                   \
        static int async_##fn(sd_bus_message *msg, void *userdata, sd_bus_error *error) {           \
                return bus_method_async(msg, userdata, error, fn);                                  \
        }

ASYNC(method_list_keys)
ASYNC(method_get_key)
ASYNC(method_create_key)
ASYNC(method_disable_key)
ASYNC(method_enable_key)
ASYNC(method_schedule_key_deletion)
ASYNC(method_cancel_key_deletion)
ASYNC(method_rotate_key)
ASYNC(method_set_key_rotation)
ASYNC(method_get_key_rotation)
ASYNC(method_get_volume_key_version)
ASYNC(method_list_volume_key_versions)
ASYNC(method_get_volume_created)
ASYNC(method_list_volumes_created)
ASYNC(method_create_volume)
ASYNC(method_attach_volume)
ASYNC(method_detach_volume)
ASYNC(method_get_volume)
ASYNC(method_list_volumes)
ASYNC(method_rewrap_volume)
ASYNC(method_repair_volume)
ASYNC(method_get_volume_details)
ASYNC(method_list_volume_details)
ASYNC(method_check_volume)
ASYNC(method_check_all_volumes)
ASYNC(method_add_recovery_passphrase)
ASYNC(method_remove_recovery_passphrase)
ASYNC(method_import_image)
ASYNC(method_list_images)
ASYNC(method_get_image)
ASYNC(method_delete_image)
ASYNC(method_rewrap_image)
ASYNC(method_create_image_from_server)
ASYNC(method_create_server)
ASYNC(method_list_servers)
ASYNC(method_get_server)
ASYNC(method_delete_server)
ASYNC(method_delete_server_ex)
ASYNC(method_create_as_config)
ASYNC(method_list_as_configs)
ASYNC(method_get_as_config)
ASYNC(method_delete_as_config)
ASYNC(method_list_unreadable_records)

#define U SD_BUS_VTABLE_UNPRIVILEGED /* sd-bus's own check does not apply on a p2p socket; check_root() does */

const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("ListKeys", "", "a" EVS_KEY_SIG, async_method_list_keys, U),
        SD_BUS_METHOD("GetKey", "s", EVS_KEY_SIG, async_method_get_key, U),
        SD_BUS_METHOD("CreateKey", "sss", EVS_KEY_SIG, async_method_create_key, U),
        SD_BUS_METHOD("DisableKey", "s", EVS_KEY_SIG, async_method_disable_key, U),
        SD_BUS_METHOD("EnableKey", "s", EVS_KEY_SIG, async_method_enable_key, U),
        SD_BUS_METHOD("ScheduleKeyDeletion", "su", EVS_KEY_SIG, async_method_schedule_key_deletion, U),
        SD_BUS_METHOD("CancelKeyDeletion", "s", EVS_KEY_SIG, async_method_cancel_key_deletion, U),
        SD_BUS_METHOD("RotateKey", "s", EVS_KEY_SIG, async_method_rotate_key, U),
        SD_BUS_METHOD("SetKeyRotation", "su", EVS_KEY_SIG, async_method_set_key_rotation, U),
        SD_BUS_METHOD("GetKeyRotation", "s", EVS_KEY_ROTATION_SIG, async_method_get_key_rotation, U),
        SD_BUS_METHOD("CreateVolume", "sssb", EVS_VOLUME_SIG, async_method_create_volume, U),
        SD_BUS_METHOD("AttachVolume", "s", EVS_VOLUME_SIG "b", async_method_attach_volume, U),
        SD_BUS_METHOD("DetachVolume", "sb", "bb", async_method_detach_volume, U),
        SD_BUS_METHOD("GetVolume", "s", EVS_VOLUME_SIG, async_method_get_volume, U),
        SD_BUS_METHOD("ListVolumes", "", "a" EVS_VOLUME_SIG, async_method_list_volumes, U),
        SD_BUS_METHOD("RewrapVolume", "ss", EVS_VOLUME_SIG, async_method_rewrap_volume, U),
        SD_BUS_METHOD("RepairVolume", "s", EVS_VOLUME_SIG "b", async_method_repair_volume, U),
        SD_BUS_METHOD("GetVolumeKeyVersion", "s", EVS_VOLUME_KEY_VERSION_SIG, async_method_get_volume_key_version, U),
        SD_BUS_METHOD("ListVolumeKeyVersions", "", "a" EVS_VOLUME_KEY_VERSION_SIG,
                      async_method_list_volume_key_versions, U),
        SD_BUS_METHOD("GetVolumeCreated", "s", EVS_VOLUME_CREATED_SIG, async_method_get_volume_created, U),
        SD_BUS_METHOD("ListVolumesCreated", "", "a" EVS_VOLUME_CREATED_SIG, async_method_list_volumes_created, U),
        SD_BUS_METHOD("GetVolumeDetails", "s", EVS_VOLUME_EX_SIG, async_method_get_volume_details, U),
        SD_BUS_METHOD("ListVolumeDetails", "", "a" EVS_VOLUME_EX_SIG, async_method_list_volume_details, U),
        SD_BUS_METHOD("CheckVolume", "s", EVS_CHECK_SIG, async_method_check_volume, U),
        SD_BUS_METHOD("CheckAllVolumes", "", "a" EVS_CHECK_SIG, async_method_check_all_volumes, U),
        SD_BUS_METHOD("AddRecoveryPassphrase", "say", "i", async_method_add_recovery_passphrase,
                      U | SD_BUS_VTABLE_SENSITIVE),
        SD_BUS_METHOD("RemoveRecoveryPassphrase", "s", "i", async_method_remove_recovery_passphrase, U),
        SD_BUS_METHOD("ImportImage", "sss", EVS_IMAGE_SIG, async_method_import_image, U),
        SD_BUS_METHOD("ListImages", "", "a" EVS_IMAGE_SIG, async_method_list_images, U),
        SD_BUS_METHOD("GetImage", "s", EVS_IMAGE_SIG, async_method_get_image, U),
        SD_BUS_METHOD("DeleteImage", "s", EVS_IMAGE_SIG, async_method_delete_image, U),
        SD_BUS_METHOD("RewrapImage", "ss", EVS_IMAGE_SIG, async_method_rewrap_image, U),
        SD_BUS_METHOD("CreateImageFromServer", "ss", EVS_IMAGE_SIG, async_method_create_image_from_server, U),
        SD_BUS_METHOD("CreateServer", "ssssasb", EVS_SERVER_SIG, async_method_create_server, U),
        SD_BUS_METHOD("ListServers", "", "a" EVS_SERVER_SIG, async_method_list_servers, U),
        SD_BUS_METHOD("GetServer", "s", EVS_SERVER_SIG, async_method_get_server, U),
        SD_BUS_METHOD("DeleteServer", "s", EVS_SERVER_SIG, async_method_delete_server, U),
        SD_BUS_METHOD("DeleteServerEx", "sb", EVS_SERVER_SIG, async_method_delete_server_ex, U),
        SD_BUS_METHOD("CreateAsConfig", "ss", EVS_AS_CONFIG_SIG, async_method_create_as_config, U),
        SD_BUS_METHOD("ListAsConfigs", "", "a" EVS_AS_CONFIG_SIG, async_method_list_as_configs, U),
        SD_BUS_METHOD("ListUnreadableRecords", "", "a" EVS_UNREADABLE_RECORD_SIG, async_method_list_unreadable_records, U),
        SD_BUS_METHOD("GetAsConfig", "s", EVS_AS_CONFIG_SIG, async_method_get_as_config, U),
        SD_BUS_METHOD("DeleteAsConfig", "s", EVS_AS_CONFIG_SIG, async_method_delete_as_config, U),
        SD_BUS_METHOD("GetStatus", "", EVS_STATUS_SIG, method_get_status, U),
        SD_BUS_METHOD("GetBackends", "", "a" EVS_BACKEND_SIG, method_get_backends, U),
        SD_BUS_METHOD("GetMetrics", "", "s", method_get_metrics, U),
        SD_BUS_VTABLE_END,
};

/* What a caller that is not root may cost: the socket is 0666 so that such a caller gets a clear AccessDenied
 * reply, but at most BUS_UNPRIVILEGED_MAX of them hold a connection at a time (a new one replaces the oldest),
 * each for at most BUS_UNPRIVILEGED_USEC. Root's connections are never capped, so no local user can fill the
 * daemon's descriptor table or lock root out. */
#define BUS_UNPRIVILEGED_MAX 4U
#define BUS_UNPRIVILEGED_USEC (3U * USEC_PER_SEC)
/* When accept() fails for lack of descriptors or memory, the socket is not watched for this long. */
#define BUS_ACCEPT_PAUSE_USEC (250U * 1000U)

typedef struct connection {
        manager *manager;
        sd_bus *bus;
        sd_event_source *cleanup;
        sd_event_source *timeout; /* non-root connections only */
        int slot;                 /* index in unprivileged[], -1 for root */
        uint64_t accepted;        /* CLOCK_MONOTONIC */
        struct connection *prev, *next; /* every open connection, for bus_server_close_all() */
} connection;

static connection *unprivileged[BUS_UNPRIVILEGED_MAX] = {};
static connection *connections = NULL;
static sd_event_source *resume_source = NULL;
static bool accept_paused_logged = false;

static void connection_free_full(connection *c, bool flush) {
        if (!c)
                return;
        if (c->prev)
                c->prev->next = c->next;
        else if (connections == c)
                connections = c->next;
        if (c->next)
                c->next->prev = c->prev;
        if (c->slot >= 0)
                unprivileged[c->slot] = NULL;
        if (c->bus && !flush) {
                /* At exit: what is queued for a running peer (say, the reply to a request cancelled by the
                 * stop) is written as far as its socket takes it, without waiting for the peer. */
                if (c->slot < 0 && sd_bus_is_ready(c->bus) > 0)
                        for (unsigned i = 0; i < 16 && sd_bus_process(c->bus, NULL) > 0; i++)
                                ;
                /* bus-hello.c's post source may still hold the bus: detached, the bus holds no reference
                 * on the loop, so that the loop and everything on it is freed. */
                (void) sd_bus_detach_event(c->bus);
        }
        if (c->slot >= 0 || !flush)
                /* Never wait for a peer that is not root to read what is queued for it, nor at exit. */
                sd_bus_close_unref(c->bus);
        else
                sd_bus_flush_close_unref(c->bus);
        sd_event_source_disable_unref(c->cleanup);
        sd_event_source_disable_unref(c->timeout);
        free(c);
}

static void connection_free(connection *c) {
        connection_free_full(c, true);
}

static int on_cleanup(sd_event_source *s, void *userdata) {
        connection_free(userdata);
        return 0;
}

static int schedule_cleanup(connection *c) {
        int r;

        if (c->cleanup)
                return 0;
        /* Free the connection outside its own dispatch. */
        r = sd_event_add_defer(c->manager->event, &c->cleanup, on_cleanup, c);
        if (r == -ESTALE) /* the loop is exiting: bus_server_close_all() frees it */
                return 0;
        if (r < 0)
                return log_warning_errno(r, "Cannot schedule connection cleanup: %m");
        return sd_event_source_set_enabled(c->cleanup, SD_EVENT_ONESHOT);
}

static int on_disconnected(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return schedule_cleanup(userdata);
}

static int on_unprivileged_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        connection *c = userdata;

        log_debug("Closing the connection of a non-root peer after %u s.",
                  (unsigned) (BUS_UNPRIVILEGED_USEC / USEC_PER_SEC));
        (void) schedule_cleanup(c);
        return 0;
}

static int on_resume(sd_event_source *s, uint64_t usec, void *userdata) {
        manager *m = userdata;

        return sd_event_source_set_enabled(m->listen_source, SD_EVENT_ON);
}

/* accept() failed with @error for lack of resources: stop watching the socket for a moment (the pending
 * connection would wake us at once again) and try again; never give up accepting. */
static void pause_accepting(manager *m, int error) {
        uint64_t now_usec;
        int r;

        if (!accept_paused_logged) {
                log_warning_errno(error, "Cannot accept bus connections (%m); retrying every %u ms.",
                                  (unsigned) (BUS_ACCEPT_PAUSE_USEC / 1000));
                accept_paused_logged = true;
        }
        r = sd_event_now(m->event, CLOCK_MONOTONIC, &now_usec);
        if (r >= 0 && !resume_source) {
                r = sd_event_add_time(m->event, &resume_source, CLOCK_MONOTONIC, now_usec + BUS_ACCEPT_PAUSE_USEC, 0,
                                      on_resume, m);
                if (r >= 0)
                        r = sd_event_source_set_floating(resume_source, true); /* freed with the event loop */
        } else if (r >= 0) {
                r = sd_event_source_set_time(resume_source, now_usec + BUS_ACCEPT_PAUSE_USEC);
                if (r >= 0)
                        r = sd_event_source_set_enabled(resume_source, SD_EVENT_ONESHOT);
        }
        if (r < 0) {
                /* Without the timer, keep the socket watched: a busy loop beats never accepting again. */
                log_warning_errno(r, "Cannot arm the accept retry timer: %m");
                return;
        }
        (void) sd_event_source_set_enabled(m->listen_source, SD_EVENT_OFF);
}

/* A free slot for a new non-root connection: the oldest one is closed when all are taken. */
static int unprivileged_slot(void) {
        int oldest = 0;

        for (unsigned i = 0; i < BUS_UNPRIVILEGED_MAX; i++) {
                if (!unprivileged[i])
                        return (int) i;
                if (unprivileged[i]->accepted < unprivileged[oldest]->accepted)
                        oldest = (int) i;
        }
        log_debug("%u non-root connections open: closing the oldest.", BUS_UNPRIVILEGED_MAX);
        connection_free(unprivileged[oldest]); /* not inside its dispatch: we are in the listen socket's */
        return oldest;
}

static void accept_one(manager *m, int fd) {
        _cleanup_(closep) int cfd = fd;
        struct ucred cred = {};
        socklen_t len = sizeof cred;
        connection *c;
        sd_id128_t id;
        int r;

        if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || len != sizeof cred) {
                log_debug_errno(errno, "Cannot read a bus peer's credentials, closing: %m");
                return;
        }

        c = calloc(1, sizeof *c);
        if (!c) {
                log_oom();
                return;
        }
        c->manager = m;
        c->slot = -1;
        c->next = connections;
        if (connections)
                connections->prev = c;
        connections = c;
        (void) sd_event_now(m->event, CLOCK_MONOTONIC, &c->accepted);
        if (cred.uid != 0) {
                c->slot = unprivileged_slot();
                unprivileged[c->slot] = c;
                r = sd_event_add_time(m->event, &c->timeout, CLOCK_MONOTONIC, c->accepted + BUS_UNPRIVILEGED_USEC, 0,
                                      on_unprivileged_timeout, c);
                if (r < 0) {
                        log_warning_errno(r, "Cannot arm a connection timeout: %m");
                        connection_free(c);
                        return;
                }
        }

        r = sd_id128_randomize(&id);
        if (r >= 0)
                r = sd_bus_new(&c->bus);
        if (r >= 0)
                r = sd_bus_set_fd(c->bus, cfd, cfd);
        if (r >= 0) {
                TAKE_FD(cfd);
                r = sd_bus_set_server(c->bus, 1, id);
        }
        if (r >= 0)
                r = sd_bus_set_anonymous(c->bus, 1);
        if (r >= 0)
                r = sd_bus_negotiate_creds(c->bus, 1, SD_BUS_CREDS_EUID | SD_BUS_CREDS_PID);
        if (r >= 0)
                r = sd_bus_add_object_vtable(c->bus, NULL, EVS_BUS_OBJECT, EVS_BUS_INTERFACE, manager_vtable, m);
        if (r >= 0)
                r = bus_hello_register(c->bus, m->event); /* busctl, gdbus: bus-hello.c */
        if (r >= 0)
                r = sd_bus_add_match(c->bus, NULL,
                                     "type='signal',path='/org/freedesktop/DBus/Local',"
                                     "interface='org.freedesktop.DBus.Local',member='Disconnected'",
                                     on_disconnected, c);
        if (r >= 0)
                /* Not the default flush at loop exit: it waits for a peer still authenticating to finish
                 * (90 s), so a peer of any user could hold up the stop. bus_server_close_all() instead. */
                r = sd_bus_set_close_on_exit(c->bus, false);
        if (r >= 0)
                r = sd_bus_start(c->bus);
        if (r >= 0)
                r = sd_bus_attach_event(c->bus, m->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0) {
                /* A peer gone before we got to it is not worth a warning. */
                log_internal(r == -ECONNRESET || r == -EPIPE ? LOG_DEBUG : LOG_WARNING, r,
                             "Failed to set up a bus connection: %m");
                connection_free(c);
        }
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        manager *m = userdata;

        /* Drains the backlog: a refused peer costs one accept() and one close(). Never returns an error, which
         * would make sd-event stop watching the socket for good. */
        for (unsigned i = 0; i < 64; i++) {
                int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

                if (cfd < 0) {
                        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                                return 0;
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                                pause_accepting(m, errno);
                                return 0;
                        }
                        log_warning_errno(errno, "Failed to accept a bus connection: %m");
                        return 0;
                }
                if (accept_paused_logged) {
                        log_info("Accepting bus connections again.");
                        accept_paused_logged = false;
                }
                accept_one(m, cfd);
        }
        return 0;
}

void bus_server_close_all(void) {
        /* At exit: the peers still connected (a client that had not hung up when SIGTERM came) are closed
         * without waiting for them to read, and their connections are freed before the loop. */
        while (connections)
                connection_free_full(connections, false);
}

/* Does a process listen on a socket bound to @path (another evs-cryptd, or evs-cryptd.socket)? Read off
 * /proc/net/unix, not tried with a connection: one to evs-cryptd.socket would start the service. False when
 * that cannot be read. */
static bool socket_listened_on(const char *path) {
        _cleanup_(fclosep) FILE *f = fopen("/proc/net/unix", "re");
        _cleanup_free_ char *line = NULL;
        size_t cap = 0, n = strlen(path);
        ssize_t k;

        if (!f)
                return false;
        while ((k = getline(&line, &cap, f)) > 0) {
                unsigned long flags;
                size_t len = (size_t) k;

                if (line[len - 1] == '\n')
                        line[--len] = '\0';
                if (len <= n || line[len - n - 1] != ' ' || !streq(line + len - n, path))
                        continue;
                /* "Num: RefCount Protocol Flags ...": __SO_ACCEPTCON in Flags is a listening socket */
                if (sscanf(line, "%*s %*s %*s %lx", &flags) == 1 && (flags & 0x10000UL))
                        return true;
        }
        return false;
}

int bus_server_listen(manager *m) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_(closep) int fd = -EBADF;
        _cleanup_free_ char *dir = NULL;
        char *slash;
        int n, r;

        n = sd_listen_fds(1);
        if (n > 1)
                return log_error_errno(EINVAL, "Expected at most one socket from the service manager, got %d.", n);
        if (n == 1) {
                fd = SD_LISTEN_FDS_START;
                r = sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0);
                if (r <= 0)
                        return log_error_errno(r < 0 ? r : EINVAL,
                                               "Passed socket is not a listening AF_UNIX stream socket.");
                /* systemd passes it blocking: the accept loop in on_accept() would wait in accept(). */
                if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
                        return log_error_errno(errno, "Failed to make the passed socket non-blocking: %m");
                log_debug("Using the socket passed by the service manager.");
        } else {
                if (strlen(m->config.bus_path) >= sizeof sa.sun_path)
                        return log_error_errno(ENAMETOOLONG, "BusPath=%s is too long.", m->config.bus_path);
                strcpy(sa.sun_path, m->config.bus_path);

                dir = strdup(m->config.bus_path);
                if (!dir)
                        return log_oom();
                slash = strrchr(dir, '/');
                if (slash && slash != dir) {
                        *slash = 0;
                        r = mkdir_p(dir, 0755);
                        if (r < 0)
                                return log_error_errno(r, "Failed to create %s: %m", dir);
                }

                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (fd < 0)
                        return log_error_errno(errno, "Failed to create the bus socket: %m");
                /* A socket left by a daemon that is gone is replaced; one that a process still listens on
                 * (another evs-cryptd, or evs-cryptd.socket) is not taken from it. */
                if (socket_listened_on(sa.sun_path))
                        return log_error_errno(EADDRINUSE, "BusPath=%s is served by another process (another "
                                               "evs-cryptd, or evs-cryptd.socket): not starting.", sa.sun_path);
                (void) unlink(sa.sun_path);
                if (bind(fd, (struct sockaddr *) &sa, sizeof sa) < 0)
                        return log_error_errno(errno, "Failed to bind %s: %m", sa.sun_path);
                /* Anyone may connect, so that non-root callers get a clear AccessDenied from us. */
                if (chmod(sa.sun_path, 0666) < 0)
                        return log_error_errno(errno, "Failed to chmod %s: %m", sa.sun_path);
                if (listen(fd, SOMAXCONN) < 0)
                        return log_error_errno(errno, "Failed to listen on %s: %m", sa.sun_path);
                m->listen_fd_ours = true;
        }

        r = sd_event_add_io(m->event, &m->listen_source, fd, EPOLLIN, on_accept, m);
        if (r < 0)
                return log_error_errno(r, "Failed to watch the bus socket: %m");
        m->listen_fd = TAKE_FD(fd);
        return 0;
}
