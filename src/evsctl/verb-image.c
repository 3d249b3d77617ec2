/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <limits.h>

#include "bus-api.h"
#include "evsctl.h"
#include "evsctl-options.h"
#include "json-util.h"
#include "time-util.h"

/* An IMAGE struct of bus-api.h into JSON: 1 when read, 0 at the end of an array. */
static int read_image(sd_bus_message *m, json_object **ret) {
        static const char *const names[] = {"id",        "name",      "path",    "key_id",
                                            "key_alias", "key_state", "backend", "cipher"};
        _cleanup_(json_object_putp) json_object *o = NULL;
        const char *f[8], *source;
        uint64_t size, created;
        char ts[FORMAT_TIMESTAMP_MAX];
        int r;

        r = sd_bus_message_read(m, EVS_IMAGE_SIG, &f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6], &f[7], &size,
                                &source, &created);
        if (r <= 0)
                return r;
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if ((r = json_add_string(o, names[i], isempty(f[i]) ? NULL : f[i], true)) < 0)
                        return r;
        if ((r = json_add_uint64(o, "size", size)) < 0 ||
            (r = json_add_string(o, "source", isempty(source) ? NULL : source, true)) < 0 ||
            (r = json_add_string(o, "created", created ? format_timestamp(ts, sizeof ts, created) : NULL, true)) < 0)
                return r;
        *ret = TAKE_PTR(o);
        return 1;
}

static void print_image(json_object *v) {
        static const char *const fields[] = { "id", "name", "path", "key_id", "key_alias", "key_state",
                                              "backend", "cipher", "size", "source", "created" };

        if (arg_json) {
                json_print(v);
                return;
        }
        for (size_t i = 0; i < ELEMENTSOF(fields); i++) {
                char buf[FORMAT_BYTES_MAX];
                json_object *size;

                if (streq(fields[i], "size") && json_object_object_get_ex(v, "size", &size)) {
                        uint64_t b = (uint64_t) json_object_get_int64(size);

                        printf("%10s: %s (%" PRIu64 " bytes)\n", fields[i], format_bytes(buf, sizeof buf, b), b);
                } else
                        printf("%10s: %s\n", fields[i], json_text(v, fields[i]) ?: "-");
        }
}

int verb_image_import(sd_bus *bus, int argc, char *argv[]) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *path = NULL;
        int r;

        if (!opt_name) {
                fprintf(stderr, "evsctl: image import needs --name NAME.\n");
                return -EDOM;
        }
        r = absolute_path_arg(argv[1], &path);
        if (r < 0)
                return r;
        r = call(bus, "ImportImage", &reply, "sss", path, opt_name, strempty(opt_key));
        if (r < 0)
                return r;
        return show_reply(reply, read_image, print_image);
}

int verb_image_show(sd_bus *bus, int argc, char *argv[]) {
        return show_verb(bus, "GetImage", argv[1], read_image, print_image);
}

int verb_image_rewrap(sd_bus *bus, int argc, char *argv[]) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_object_putp) json_object *v = NULL;
        _cleanup_free_ char *own = NULL;
        const char *key_ref = opt_key;
        int r;

        if (!opt_key == !opt_latest) {
                fprintf(stderr, "evsctl: image rewrap needs exactly one of --key KEY and --latest.\n");
                return -EDOM;
        }
        if (opt_latest) {
                /* Under the newest version of the image's own key: the same crash-safe rewrap, same key. */
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *cur_reply = NULL;
                _cleanup_(json_object_putp) json_object *cur = NULL;

                r = call(bus, "GetImage", &cur_reply, "s", argv[1]);
                if (r < 0)
                        return r;
                r = read_image(cur_reply, &cur);
                if (r <= 0)
                        return r < 0 ? r : -EBADMSG;
                if (!json_str(cur, "key_id") || !json_str(cur, "backend")) {
                        fprintf(stderr, "evsctl: image %s has no readable key token to re-wrap.\n", esc(argv[1]));
                        return -ENODATA;
                }
                if (asprintf(&own, "%s:%s", json_str(cur, "backend"), json_str(cur, "key_id")) < 0)
                        return -ENOMEM;
                key_ref = own;
        }
        r = call(bus, "RewrapImage", &reply, "ss", argv[1], key_ref);
        if (r < 0)
                return r;
        r = read_reply(reply, read_image, &v);
        if (r < 0)
                return r;
        if (arg_json)
                json_print(v);
        else if (opt_latest)
                printf("Image %s: data key re-wrapped under the newest version of key %s (%s).\n",
                       json_text(v, "name"), json_text(v, "key_alias") ?: json_text(v, "key_id"),
                       json_text(v, "backend"));
        else
                printf("Image %s: data key now wrapped by key %s (%s).\n", json_text(v, "name"),
                       json_text(v, "key_alias") ?: json_text(v, "key_id"), json_text(v, "backend"));
        return 0;
}

int verb_image_delete(sd_bus *bus, int argc, char *argv[]) {
        _cleanup_(json_object_putp) json_object *v = NULL;
        int r;

        r = call_read(bus, "DeleteImage", argv[1], read_image, &v);
        if (r < 0)
                return r;
        if (arg_json)
                json_print(v);
        else
                printf("Deleted image %s (%s); key %s was left as it is.\n", json_text(v, "name"), json_text(v, "id"),
                       json_text(v, "key_alias") ?: json_text(v, "key_id"));
        return 0;
}

static int image_row(table *t, json_object *v) {
        json_object *size;
        char buf[FORMAT_BYTES_MAX];

        /* People get 2.9M, --json keeps the bytes. */
        if (!json_object_object_get_ex(v, "size", &size))
                size = NULL;
        return table_add_row(t, json_str(v, "id"), json_str(v, "name"),
                             size ? format_bytes(buf, sizeof buf, (uint64_t) json_object_get_int64(size)) : NULL,
                             json_str(v, "key_alias") ?: json_str(v, "key_id"),
                             json_str(v, "unreadable") ? "unreadable" : json_str(v, "key_state"), json_str(v, "cipher"),
                             json_str(v, "source"));
}

int verb_image_list(sd_bus *bus, int argc, char *argv[]) {
        static const char *const columns[] = { "IMAGE", "NAME", "SIZE", "KEY", "KEY_STATE", "CIPHER", "SOURCE", NULL };

        return list_records_verb(bus, "ListImages", "images", "image", EVS_IMAGE_SIG, read_image, columns, image_row);
}

int verb_image_create(sd_bus *bus, int argc, char *argv[]) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        if (!opt_from_server || !opt_name) {
                fprintf(stderr, "evsctl: image create needs --from-server SERVER and --name NAME.\n");
                return -EDOM;
        }
        r = call(bus, "CreateImageFromServer", &reply, "ss", opt_from_server, opt_name);
        if (r < 0)
                return r;
        return show_reply(reply, read_image, print_image);
}
