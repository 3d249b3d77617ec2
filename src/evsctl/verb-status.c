/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "bus-api.h"
#include "evsctl.h"
#include "json-util.h"

int verb_status(sd_bus *bus, int argc, char *argv[]) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_object_putp) json_object *o = json_object_new_object(), *backends = json_object_new_array();
        const char *version, *state_dir, *def, *b;
        uint32_t volumes, attached;
        int r;

        if (!o || !backends)
                return -ENOMEM;
        r = call(bus, "GetStatus", &reply, "");
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(reply, 'r', "sssasuu");
        if (r >= 0)
                r = sd_bus_message_read(reply, "sss", &version, &state_dir, &def);
        if (r >= 0)
                r = sd_bus_message_enter_container(reply, 'a', "s");
        while (r >= 0 && (r = sd_bus_message_read(reply, "s", &b)) > 0)
                json_object_array_add(backends, json_object_new_string(b));
        if (r >= 0)
                r = sd_bus_message_exit_container(reply);
        if (r >= 0)
                r = sd_bus_message_read(reply, "uu", &volumes, &attached);
        if (r < 0)
                return r;

        if (arg_json) {
                json_add_string(o, "version", version, false);
                json_add_string(o, "state_directory", state_dir, false);
                json_add_string(o, "default_backend", def, false);
                json_object_object_add(o, "backends", json_object_get(backends));
                json_add_uint64(o, "volumes", volumes);
                json_add_uint64(o, "attached", attached);
                json_print(o);
                return 0;
        }
        printf("evs-cryptd %s\n", version);
        printf("  State directory: %s\n", state_dir);
        printf("  KMS backends:    %s (default %s)\n",
               json_object_to_json_string_ext(backends, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE), def);
        printf("  Volumes:         %u known, %u attached\n", volumes, attached);
        return 0;
}
