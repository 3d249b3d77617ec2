/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdarg.h>

#include "bus-api.h"
#include "evsctl.h"
#include "evsctl-options.h"
#include "json-util.h"

static int show_key_reply(sd_bus *bus, sd_bus_message *reply) {
        _cleanup_(json_object_putp) json_object *k = NULL;
        int r;

        r = read_key(reply, &k);
        if (r <= 0)
                return r < 0 ? r : -EBADMSG;
        add_key_rotation(bus, k);
        print_key(k);
        return 0;
}

static int key_call(sd_bus *bus, const char *method, const char *types, ...);

int verb_key_create(sd_bus *bus, int argc, char *argv[]) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = call(bus, "CreateKey", &reply, "sss", argv[1], strempty(opt_description), strempty(opt_backend));
        if (r < 0)
                return r;
        return show_key_reply(bus, reply);
}

static int key_row(table *t, json_object *k) {
        return table_add_row(t, json_str(k, "id"), json_str(k, "alias"), json_str(k, "state"), json_str(k, "backend"),
                             json_str(k, "created"), json_str(k, "deletion_date"));
}

int verb_key_list(sd_bus *bus, int argc, char *argv[]) {
        static const char *const columns[] = { "ID", "ALIAS", "STATE", "BACKEND", "CREATED", "DELETION", NULL };

        return list_verb(bus, "ListKeys", EVS_KEY_SIG, read_key, columns, key_row);
}

int verb_key_show(sd_bus *bus, int argc, char *argv[]) {
        return key_call(bus, "GetKey", "s", argv[1]);
}

int verb_key_disable(sd_bus *bus, int argc, char *argv[]) {
        return key_call(bus, "DisableKey", "s", argv[1]);
}

int verb_key_enable(sd_bus *bus, int argc, char *argv[]) {
        return key_call(bus, "EnableKey", "s", argv[1]);
}

int verb_key_schedule_deletion(sd_bus *bus, int argc, char *argv[]) {
        if (opt_days == 0) {
                fprintf(stderr, "evsctl: key schedule-deletion needs --days N (7..1096).\n");
                return -EDOM; /* usage */
        }
        return key_call(bus, "ScheduleKeyDeletion", "su", argv[1], opt_days);
}

int verb_key_cancel_deletion(sd_bus *bus, int argc, char *argv[]) {
        return key_call(bus, "CancelKeyDeletion", "s", argv[1]);
}

int verb_key_rotate(sd_bus *bus, int argc, char *argv[]) {
        return key_call(bus, "RotateKey", "s", argv[1]);
}

int verb_key_set_rotation(sd_bus *bus, int argc, char *argv[]) {
        if (opt_off == (opt_days != 0)) {
                fprintf(stderr, "evsctl: key set-rotation needs exactly one of --days N (%u..%u) and --off.\n",
                        30U, 365U);
                return -EDOM; /* usage */
        }
        if (opt_days != 0 && (opt_days < 30 || opt_days > 365)) {
                fprintf(stderr, "evsctl: key set-rotation: a rotation period of %u days is outside %u..%u.\n",
                        (unsigned) opt_days, 30U, 365U);
                return -EDOM;
        }
        return key_call(bus, "SetKeyRotation", "su", argv[1], opt_off ? 0U : opt_days);
}

static int key_call(sd_bus *bus, const char *method, const char *types, ...) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        va_list ap;
        int r;

        va_start(ap, types);
        r = callv(bus, method, &reply, types, ap);
        va_end(ap);
        if (r < 0)
                return r;
        return show_key_reply(bus, reply);
}
