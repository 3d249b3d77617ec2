/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <limits.h>

#include "bus-api.h"
#include "evsctl.h"
#include "evsctl-options.h"
#include "json-util.h"

static int show_volume_reply(sd_bus_message *reply, json_object **ret) {
        _cleanup_(json_object_putp) json_object *v = NULL;
        int r;

        r = read_volume(reply, &v);
        if (r <= 0)
                return r < 0 ? r : -EBADMSG;
        if (ret)
                *ret = TAKE_PTR(v);
        else
                print_volume(v);
        return 0;
}

/* VOLID|DEVICE: a volume id has no '/', anything else is a path made absolute for the daemon. */
static int absolute_device(const char *arg, char **ret) {
        if (!strchr(arg, '/')) {
                *ret = strdup(arg);
                return *ret ? 0 : -ENOMEM;
        }
        return absolute_path_arg(arg, ret);
}

int verb_volume_create(sd_bus *bus, int argc, char *argv[]) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *device = NULL;
        int r;

        if (!opt_volume_id) {
                fprintf(stderr, "evsctl: volume create needs --id VOLID.\n");
                return -EDOM;
        }
        r = absolute_path_arg(argv[1], &device); /* always a device or file, "v.img" included */
        if (r < 0)
                return r;
        r = call(bus, "CreateVolume", &reply, "sssb", device, opt_volume_id, strempty(opt_key), opt_force);
        if (r < 0)
                return r;
        return show_volume_reply(reply, NULL);
}

int verb_volume_attach(sd_bus *bus, int argc, char *argv[]) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_object_putp) json_object *v = NULL;
        _cleanup_free_ char *ref = NULL;
        int already, r;

        r = absolute_device(argv[1], &ref);
        if (r < 0)
                return r;
        r = call(bus, "AttachVolume", &reply, "s", ref);
        if (r < 0)
                return r;
        r = show_volume_reply(reply, &v);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "b", &already);
        if (r < 0)
                return r;
        if (arg_json) {
                json_object_object_add(v, "already_attached", json_object_new_boolean(already));
                json_print(v);
        } else if (already)
                printf("Volume %s is already attached as %s.\n", json_text(v, "id"), json_text(v, "mapping"));
        else
                printf("Attached volume %s as %s.\n", json_text(v, "id"), json_text(v, "mapping"));
        return 0;
}

int verb_volume_detach(sd_bus *bus, int argc, char *argv[]) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *ref = NULL;
        int was, deferred, r;

        r = absolute_device(argv[1], &ref);
        if (r < 0)
                return r;
        r = call(bus, "DetachVolume", &reply, "sb", ref, opt_force);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "bb", &was, &deferred);
        if (r < 0)
                return r;
        if (arg_json)
                printf("{ \"volume\": \"%s\", \"was_attached\": %s, \"deferred\": %s }\n", argv[1],
                       was ? "true" : "false", deferred ? "true" : "false");
        else if (deferred)
                printf("Volume %s is in use: its mapping will be removed when it is closed.\n", argv[1]);
        else if (was)
                printf("Detached volume %s.\n", argv[1]);
        else
                printf("Volume %s is not attached.\n", argv[1]);
        return 0;
}

int verb_volume_show(sd_bus *bus, int argc, char *argv[]) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *ref = NULL;
        int r;

        r = absolute_device(argv[1], &ref);
        if (r < 0)
                return r;
        r = call(bus, "GetVolume", &reply, "s", ref);
        if (r < 0)
                return r;
        return show_volume_reply(reply, NULL);
}

int verb_volume_rewrap(sd_bus *bus, int argc, char *argv[]) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_object_putp) json_object *v = NULL;
        _cleanup_free_ char *ref = NULL;
        int r;

        if (!opt_key) {
                fprintf(stderr, "evsctl: volume rewrap needs --key KEY.\n");
                return -EDOM;
        }
        r = absolute_device(argv[1], &ref);
        if (r < 0)
                return r;
        r = call(bus, "RewrapVolume", &reply, "ss", ref, opt_key);
        if (r < 0)
                return r;
        r = show_volume_reply(reply, &v);
        if (r < 0)
                return r;
        if (arg_json)
                json_print(v);
        else
                printf("Volume %s: data key now wrapped by key %s (%s).\n", json_text(v, "id"),
                       json_text(v, "key_alias") ?: json_text(v, "key_id"), json_text(v, "backend"));
        return 0;
}

static int volume_row(table *t, json_object *v) {
        return table_add_row(t, json_str(v, "id"), json_str(v, "state"), json_str(v, "device"), json_str(v, "mapping"),
                             json_str(v, "key_alias") ?: json_str(v, "key_id"), json_str(v, "key_state"),
                             json_str(v, "warning") ?: json_str(v, "last_error"));
}

int verb_volume_list(sd_bus *bus, int argc, char *argv[]) {
        static const char *const columns[] = { "VOLUME", "STATE", "DEVICE", "MAPPING", "KEY", "KEY_STATE", "NOTE", NULL };

        return list_verb(bus, "ListVolumes", EVS_VOLUME_SIG, read_volume, columns, volume_row);
}

int verb_volume_repair(sd_bus *bus, int argc, char *argv[]) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_object_putp) json_object *v = NULL;
        _cleanup_free_ char *ref = NULL;
        int repaired, r;

        r = absolute_device(argv[1], &ref);
        if (r < 0)
                return r;
        r = call(bus, "RepairVolume", &reply, "s", ref);
        if (r < 0)
                return r;
        r = show_volume_reply(reply, &v);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "b", &repaired);
        if (r < 0)
                return r;
        if (arg_json) {
                json_object_object_add(v, "repaired", json_object_new_boolean(repaired));
                json_print(v);
        } else if (repaired)
                printf("Repaired the LUKS2 header of volume %s on %s.\n", json_text(v, "id"), json_text(v, "device"));
        else
                printf("The LUKS2 header of volume %s on %s is intact: nothing to repair.\n", json_text(v, "id"),
                       json_text(v, "device"));
        return 0;
}
