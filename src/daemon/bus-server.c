/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The peer-to-peer D-Bus server: one sd-bus connection per accepted client of the daemon's own
 * socket, no broker. Only root may call. */

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-id128.h>

#include "bus-api.h"
#include "bus-methods.h"
#include "errors.h"
#include "fileio.h"
#include "log.h"
#include "manager.h"

int bus_check_root(sd_bus_message *msg, sd_bus_error *error) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        uid_t uid;
        int r;

        r = sd_bus_query_sender_creds(msg, SD_BUS_CREDS_EUID, &creds);
        if (r < 0)
                return evs_bus_error_setf(error, EACCES, "Cannot determine the caller's identity.");
        r = sd_bus_creds_get_euid(creds, &uid);
        if (r < 0 || uid != 0)
                return evs_bus_error_setf(error, EACCES, "Access denied: only root may use evs-cryptd.");
        return 0;
}

int bus_reply_array(sd_bus_message *msg, const char *sig, const void *items, size_t n, size_t size,
                    int (*append)(sd_bus_message *reply, const void *item)) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_new_method_return(msg, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', sig);
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = append(reply, (const uint8_t *) items + i * size);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

#define U SD_BUS_VTABLE_UNPRIVILEGED /* sd-bus's own check does not apply on a p2p socket; check_root() does */

const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("ListKeys", "", "a" EVS_KEY_SIG, method_list_keys, U),
        SD_BUS_METHOD("GetKey", "s", EVS_KEY_SIG, method_get_key, U),
        SD_BUS_METHOD("CreateKey", "sss", EVS_KEY_SIG, method_create_key, U),
        SD_BUS_METHOD("DisableKey", "s", EVS_KEY_SIG, method_disable_key, U),
        SD_BUS_METHOD("EnableKey", "s", EVS_KEY_SIG, method_enable_key, U),
        SD_BUS_METHOD("ScheduleKeyDeletion", "su", EVS_KEY_SIG, method_schedule_key_deletion, U),
        SD_BUS_METHOD("CancelKeyDeletion", "s", EVS_KEY_SIG, method_cancel_key_deletion, U),
        SD_BUS_METHOD("CreateVolume", "sssb", EVS_VOLUME_SIG, method_create_volume, U),
        SD_BUS_METHOD("AttachVolume", "s", EVS_VOLUME_SIG "b", method_attach_volume, U),
        SD_BUS_METHOD("DetachVolume", "sb", "bb", method_detach_volume, U),
        SD_BUS_METHOD("GetVolume", "s", EVS_VOLUME_SIG, method_get_volume, U),
        SD_BUS_METHOD("ListVolumes", "", "a" EVS_VOLUME_SIG, method_list_volumes, U),
        SD_BUS_METHOD("RewrapVolume", "ss", EVS_VOLUME_SIG, method_rewrap_volume, U),
        SD_BUS_METHOD("ImportImage", "sss", EVS_IMAGE_SIG, method_import_image, U),
        SD_BUS_METHOD("ListImages", "", "a" EVS_IMAGE_SIG, method_list_images, U),
        SD_BUS_METHOD("GetImage", "s", EVS_IMAGE_SIG, method_get_image, U),
        SD_BUS_METHOD("DeleteImage", "s", EVS_IMAGE_SIG, method_delete_image, U),
        SD_BUS_METHOD("RewrapImage", "ss", EVS_IMAGE_SIG, method_rewrap_image, U),
        SD_BUS_METHOD("CreateImageFromServer", "ss", EVS_IMAGE_SIG, method_create_image_from_server, U),
        SD_BUS_METHOD("CreateServer", "ssssasb", EVS_SERVER_SIG, method_create_server, U),
        SD_BUS_METHOD("ListServers", "", "a" EVS_SERVER_SIG, method_list_servers, U),
        SD_BUS_METHOD("GetServer", "s", EVS_SERVER_SIG, method_get_server, U),
        SD_BUS_METHOD("DeleteServer", "s", EVS_SERVER_SIG, method_delete_server, U),
        SD_BUS_METHOD("CreateAsConfig", "ss", EVS_AS_CONFIG_SIG, method_create_as_config, U),
        SD_BUS_METHOD("ListAsConfigs", "", "a" EVS_AS_CONFIG_SIG, method_list_as_configs, U),
        SD_BUS_METHOD("GetAsConfig", "s", EVS_AS_CONFIG_SIG, method_get_as_config, U),
        SD_BUS_METHOD("DeleteAsConfig", "s", EVS_AS_CONFIG_SIG, method_delete_as_config, U),
        SD_BUS_METHOD("GetStatus", "", EVS_STATUS_SIG, method_get_status, U),
        SD_BUS_VTABLE_END,
};

typedef struct connection {
        manager *manager;
        sd_bus *bus;
        sd_event_source *cleanup;
} connection;

static int on_cleanup(sd_event_source *s, void *userdata) {
        connection *c = userdata;

        sd_bus_flush_close_unref(c->bus);
        sd_event_source_unref(c->cleanup);
        free(c);
        return 0;
}

static int on_disconnected(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        connection *c = userdata;
        int r;

        /* Free the connection outside its own dispatch. */
        r = sd_event_add_defer(c->manager->event, &c->cleanup, on_cleanup, c);
        if (r < 0)
                return log_warning_errno(r, "Cannot schedule connection cleanup: %m");
        return sd_event_source_set_enabled(c->cleanup, SD_EVENT_ONESHOT);
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        manager *m = userdata;
        _cleanup_(closep) int cfd = -EBADF;
        connection *c;
        sd_id128_t id;
        int r;

        cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
                if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                        return 0;
                return log_error_errno(errno, "Failed to accept a bus connection: %m");
        }

        c = calloc(1, sizeof *c);
        if (!c)
                return log_oom();
        c->manager = m;

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
                r = sd_bus_add_match(c->bus, NULL,
                                     "type='signal',path='/org/freedesktop/DBus/Local',"
                                     "interface='org.freedesktop.DBus.Local',member='Disconnected'",
                                     on_disconnected, c);
        if (r >= 0)
                r = sd_bus_start(c->bus);
        if (r >= 0)
                r = sd_bus_attach_event(c->bus, m->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0) {
                log_warning_errno(r, "Failed to set up a bus connection: %m");
                sd_bus_flush_close_unref(c->bus);
                free(c);
        }
        return 0;
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
