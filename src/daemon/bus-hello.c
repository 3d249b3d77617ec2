/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The few org.freedesktop.DBus methods that stock bus clients send before anything else, answered on the
 * daemon's peer-to-peer connections, so that `busctl --address=unix:path=/run/evs-cryptd/bus` and
 * `gdbus ... --address` work (both connect as bus clients: Hello first, then GetNameOwner or AddMatch
 * depending on the command). There is no broker: the peer is the only other party, the daemon owns
 * org.evs.Cryptd1, match rules are accepted and have nothing to filter, and every signal the daemon
 * would send reaches the peer anyway. Unprivileged: they reveal nothing, and a non-root client then gets
 * the Manager's own AccessDenied instead of a hang. */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bus-api.h"
#include "bus-hello.h"
#include "macro.h"

#define DBUS_NAME "org.freedesktop.DBus"
/* The name clients address the daemon by (busctl SERVICE, gdbus --dest). */
#define EVS_BUS_NAME "org.evs.Cryptd1"
#define DBUS_PATH "/org/freedesktop/DBus"
/* The unique names of the two ends of a connection. */
#define PEER_UNIQUE_NAME ":1.1"
#define DAEMON_UNIQUE_NAME ":1.0"

static bool name_is_ours(const char *name) {
        return streq(name, EVS_BUS_NAME) || streq(name, DAEMON_UNIQUE_NAME) || streq(name, DBUS_NAME);
}

static int method_hello(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return sd_bus_reply_method_return(m, "s", PEER_UNIQUE_NAME);
}

static int method_get_name_owner(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        const char *name;
        int r;

        r = sd_bus_message_read(m, "s", &name);
        if (r < 0)
                return r;
        if (streq(name, PEER_UNIQUE_NAME))
                return sd_bus_reply_method_return(m, "s", PEER_UNIQUE_NAME);
        if (!name_is_ours(name))
                return sd_bus_error_setf(error, "org.freedesktop.DBus.Error.NameHasNoOwner",
                                         "Could not get owner of name '%s': no such name", name);
        return sd_bus_reply_method_return(m, "s", streq(name, DBUS_NAME) ? DBUS_NAME : DAEMON_UNIQUE_NAME);
}

static int method_name_has_owner(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        const char *name;
        int r;

        r = sd_bus_message_read(m, "s", &name);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(m, "b", name_is_ours(name) || streq(name, PEER_UNIQUE_NAME));
}

static int method_list_names(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return sd_bus_reply_method_return(m, "as", 4, DBUS_NAME, DAEMON_UNIQUE_NAME, EVS_BUS_NAME, PEER_UNIQUE_NAME);
}

static int method_match(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        const char *rule;
        int r;

        r = sd_bus_message_read(m, "s", &rule);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(m, NULL);
}

static int method_get_id(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        sd_id128_t id;
        char s[SD_ID128_STRING_MAX];
        int r;

        r = sd_bus_get_bus_id(sd_bus_message_get_bus(m), &id);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(m, "s", sd_id128_to_string(id, s));
}

static int method_get_connection_unix_user(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        const char *name;
        uid_t uid;
        int r;

        r = sd_bus_message_read(m, "s", &name);
        if (r < 0)
                return r;
        if (!streq(name, PEER_UNIQUE_NAME))
                return sd_bus_error_setf(error, "org.freedesktop.DBus.Error.NameHasNoOwner",
                                         "Could not get UID of name '%s': no such name", name);
        r = sd_bus_query_sender_creds(m, SD_BUS_CREDS_EUID, &creds);
        if (r >= 0)
                r = sd_bus_creds_get_euid(creds, &uid);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(m, "u", (uint32_t) uid);
}

static const sd_bus_vtable dbus_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("Hello", "", "s", method_hello, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("GetNameOwner", "s", "s", method_get_name_owner, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("NameHasOwner", "s", "b", method_name_has_owner, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("ListNames", "", "as", method_list_names, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("AddMatch", "s", "", method_match, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("RemoveMatch", "s", "", method_match, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("GetId", "", "s", method_get_id, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("GetConnectionUnixUser", "s", "u", method_get_connection_unix_user,
                      SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

/* libsystemd 252's server side leaves a message that came in the same read as the client's "BEGIN" in
 * its buffer until the next byte arrives: GLib sends Hello right behind BEGIN, so gdbus hung about
 * one time in ten. So while a connection is being set up, the bus is processed until idle after every
 * loop iteration that did something; once it is running and idle (or closed), the source goes: a
 * source per connection for the whole connection's life would cost every iteration of the loop one
 * sd_bus_process() per connection ever opened (a storm of 200 clients, or a flood of peers that close
 * before authenticating, made the loop quadratic). The source holds a reference on the bus. */
typedef struct post_state {
        sd_bus *bus;
} post_state;

static int on_post(sd_event_source *s, void *userdata) {
        post_state *p = userdata;
        int r = 0;

        if (sd_bus_is_open(p->bus) > 0) {
                /* Until it has nothing more to do: this very call may be the one that reads "BEGIN" and the
                 * message behind it, and a post source does not trigger itself again. */
                for (unsigned i = 0; i < 64; i++) {
                        r = sd_bus_process(p->bus, NULL);
                        if (r <= 0)
                                break;
                }
                if (r != 0 || sd_bus_is_ready(p->bus) <= 0)
                        return 0; /* still authenticating, or more to do: look again next iteration */
        }
        /* Running and idle, or closed: from now on the connection's own I/O source does it all. This drops
         * the loop's reference, the only one (sd-event frees a source unreferenced in its own dispatch
         * once the dispatch returns); the destroy callback drops the bus. */
        (void) sd_event_source_set_enabled(s, SD_EVENT_OFF);
        sd_event_source_unref(s);
        return 0;
}

static void post_state_free(void *userdata) {
        post_state *p = userdata;

        sd_bus_unref(p->bus);
        free(p);
}

int bus_hello_register(sd_bus *bus, sd_event *event) {
        sd_event_source *s = NULL;
        post_state *p;
        int r;

        r = sd_bus_add_object_vtable(bus, NULL, DBUS_PATH, DBUS_NAME, dbus_vtable, NULL);
        if (r < 0)
                return r;
        p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        p->bus = sd_bus_ref(bus);
        r = sd_event_add_post(event, &s, on_post, p);
        if (r < 0) {
                post_state_free(p);
                return r;
        }
        r = sd_event_source_set_destroy_callback(s, post_state_free);
        if (r < 0) {
                post_state_free(p);
                sd_event_source_unref(s);
                return r;
        }
        /* Floating: owned by the loop (which takes a reference of its own: ours goes), freed by on_post()
         * once the bus is closed or idle, or with the loop. */
        r = sd_event_source_set_floating(s, true);
        sd_event_source_unref(s);
        return r;
}
