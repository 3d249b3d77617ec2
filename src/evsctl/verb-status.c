/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <inttypes.h>

#include "bus-api.h"
#include "evsctl.h"
#include "evsctl-options.h"
#include "fileio.h"
#include "json-util.h"
#include "openmetrics.h"

/* GetBackends as a JSON array of objects (the "kms" member of status --json). */
static int read_kms_queues(sd_bus *bus, json_object **ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_object_putp) json_object *a = json_object_new_array();
        const char *name, *type;
        uint32_t in_flight, queued, max_in_flight, max_concurrent, rps, timeout_ms;
        int r;

        if (!a)
                return -ENOMEM;
        r = call(bus, "GetBackends", &reply, "");
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(reply, 'a', EVS_BACKEND_SIG);
        while (r >= 0 && (r = sd_bus_message_read(reply, EVS_BACKEND_SIG, &name, &type, &in_flight, &queued,
                                                  &max_in_flight, &max_concurrent, &rps, &timeout_ms)) > 0) {
                json_object *o = json_object_new_object();

                if (!o)
                        return -ENOMEM;
                json_object_array_add(a, o);
                json_add_string(o, "name", name, false);
                json_add_string(o, "type", type, false);
                json_add_uint64(o, "in_flight", in_flight);
                json_add_uint64(o, "queued", queued);
                json_add_uint64(o, "max_in_flight", max_in_flight);
                json_add_uint64(o, "max_concurrent_requests", max_concurrent);
                json_add_uint64(o, "requests_per_second", rps);
                json_add_uint64(o, "timeout_ms", timeout_ms);
        }
        if (r < 0)
                return r;
        *ret = TAKE_PTR(a);
        return 0;
}

int verb_status(sd_bus *bus, int argc, char *argv[]) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_object_putp) json_object *o = json_object_new_object(), *backends = json_object_new_array();
        _cleanup_(json_object_putp) json_object *kms = NULL;
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
        r = read_kms_queues(bus, &kms);
        if (r < 0)
                return r;

        if (arg_json) {
                json_add_string(o, "version", version, false);
                json_add_string(o, "state_directory", state_dir, false);
                json_add_string(o, "default_backend", def, false);
                json_object_object_add(o, "backends", json_object_get(backends));
                json_add_uint64(o, "volumes", volumes);
                json_add_uint64(o, "attached", attached);
                json_object_object_add(o, "kms", json_object_get(kms));
                json_print(o);
                return 0;
        }
        printf("evs-cryptd %s\n", version);
        printf("  State directory: %s\n", state_dir);
        printf("  KMS backends:    ");
        for (size_t i = 0; i < json_object_array_length(backends); i++)
                printf("%s%s", i > 0 ? ", " : "", esc(json_object_get_string(json_object_array_get_idx(backends, i))));
        printf(" (default %s)\n", esc(def));
        printf("  Volumes:         %u known, %u attached\n", volumes, attached);
        printf("  KMS calls:       ");
        for (size_t i = 0; i < json_object_array_length(kms); i++) {
                json_object *k = json_object_array_get_idx(kms, i), *v;
                uint64_t n[3] = {};
                const char *keys[] = { "in_flight", "queued", "max_concurrent_requests" };

                for (size_t j = 0; j < ELEMENTSOF(keys); j++)
                        if (json_object_object_get_ex(k, keys[j], &v))
                                n[j] = (uint64_t) json_object_get_int64(v);
                json_object_object_get_ex(k, "name", &v);
                printf("%s%s %" PRIu64 " in flight (max %" PRIu64 "), %" PRIu64 " queued", i > 0 ? "; " : "",
                       json_object_get_string(v), n[0], n[2], n[1]);
        }
        printf("\n");
        return 0;
}

/* --output FILE: the text replaces FILE atomically (a scraper never reads half of it), mode 0644. */
static const char *output_name(const char *path) {
        const char *slash = strrchr(path, '/'), *name = slash ? slash + 1 : path;

        return isempty(name) || streq(name, ".") || streq(name, "..") ? NULL : name;
}

static int write_output(const char *path, const char *text) {
        const char *slash = strrchr(path, '/');
        _cleanup_free_ char *dir = strndup(path, slash ? (size_t) MAX(slash - path, 1) : 0);
        int r;

        if (!dir)
                return -ENOMEM;
        r = write_file_atomic(slash ? dir : ".", output_name(path), text, strlen(text), 0644);
        if (r < 0)
                fprintf(stderr, "evsctl: Cannot write %s: %s.\n", path, strerror(-r));
        return r;
}

int verb_metrics(sd_bus *bus, int argc, char *argv[]) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *converted = NULL;
        const char *text;
        int r;

        if (opt_output && !output_name(opt_output)) {
                fprintf(stderr, "evsctl: --output needs a file name, not a directory: %s\n", opt_output);
                return -EDOM;
        }
        r = call(bus, "GetMetrics", &reply, "");
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "s", &text);
        if (r < 0)
                return r;
        if (opt_prometheus) {
                r = openmetrics_to_prometheus(text, &converted);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        fprintf(stderr, "evsctl: The daemon's metrics cannot be written in the Prometheus text format: %s.\n",
                                r == -EOPNOTSUPP ? "they hold a type that format lacks" : "they are not OpenMetrics text");
                        return -EBADMSG;
                }
                text = converted;
        }
        if (opt_output)
                return write_output(opt_output, text);
        fputs(text, stdout);
        return 0;
}
