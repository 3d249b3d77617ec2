/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <getopt.h>
#include <stdarg.h>

#include "build-config.h"
#include "bus-api.h"
#include "config.h"
#include "errors.h"
#include "evsctl.h"
#include "evsctl-options.h"
#include "strv.h"

bool arg_json = false;
const char *arg_bus_path = NULL;
const char *opt_description = NULL;
const char *opt_backend = NULL;
const char *opt_volume_id = NULL;
const char *opt_key = NULL;
uint32_t opt_days = 0;
bool opt_force = false;
bool opt_off = false;
bool opt_latest = false;
bool opt_all = false;
const char *opt_name = NULL;
const char *opt_image = NULL;
const char *opt_as_config = NULL;
const char *opt_system_disk = NULL;
char **opt_data_disks = NULL;
const char *opt_from_server = NULL;
bool opt_prometheus = false;
const char *opt_output = NULL;

typedef struct verb_entry {
        const char *group;
        const char *name;
        int n_args; /* positional arguments after the verb; -N: 0 to N */
        unsigned options;
        int (*run)(sd_bus *bus, int argc, char *argv[]);
        const char *usage;
        const char *help;
} verb_entry;

static const verb_entry verbs[] = {
        {"status", NULL, 0, 0, verb_status, "status", "Show the daemon's state and its KMS queues"},
        {"metrics", NULL, 0, OPT_FORMAT | OPT_OUTPUT, verb_metrics,
         "metrics [--format openmetrics|prometheus] [--output FILE]",
         "Print the daemon's counters as OpenMetrics or Prometheus text (--output: into FILE, atomically)"},
        {"key", "create", 1, OPT_DESCRIPTION | OPT_BACKEND, verb_key_create,
         "key create ALIAS [--description TEXT] [--backend NAME]", "Create a customer master key"},
        {"key", "list", 0, 0, verb_key_list, "key list", "List the keys of every backend"},
        {"key", "show", 1, 0, verb_key_show, "key show KEY", "Show one key"},
        {"key", "disable", 1, 0, verb_key_disable, "key disable KEY", "Disable a key (open volumes keep working)"},
        {"key", "enable", 1, 0, verb_key_enable, "key enable KEY", "Enable a disabled key"},
        {"key", "schedule-deletion", 1, OPT_DAYS, verb_key_schedule_deletion, "key schedule-deletion KEY --days N",
         "Schedule a key's destruction in N days (7..1096)"},
        {"key", "cancel-deletion", 1, 0, verb_key_cancel_deletion, "key cancel-deletion KEY",
         "Cancel a scheduled deletion (the key stays disabled)"},
        {"key", "rotate", 1, 0, verb_key_rotate, "key rotate KEY",
         "Make a new material version of a key now (older versions keep unwrapping)"},
        {"key", "set-rotation", 1, OPT_DAYS | OPT_OFF, verb_key_set_rotation, "key set-rotation KEY --days N|--off",
         "Rotate a key automatically every N days (30..365), or no longer"},
        {"volume", "create", 1, OPT_ID | OPT_KEY | OPT_FORCE, verb_volume_create,
         "volume create DEVICE --id VOLID [--key KEY] [--force]", "Format a device as an encrypted EVS volume"},
        {"volume", "attach", 1, 0, verb_volume_attach, "volume attach VOLID|DEVICE",
         "Open the volume's dm-crypt mapping /dev/mapper/evs-VOLID"},
        {"volume", "detach", 1, OPT_FORCE, verb_volume_detach, "volume detach VOLID [--force]",
         "Close the mapping; refused when the volume could not be attached again (--force: anyway, deferred when in use)"},
        {"volume", "list", 0, 0, verb_volume_list, "volume list", "List known and attached volumes"},
        {"volume", "check", -1, OPT_ALL, verb_volume_check, "volume check VOLID|DEVICE|--all",
         "Tell whether an attach would succeed now, and why not (nothing is opened)"},
        {"volume", "recovery", 2, 0, verb_volume_recovery, "volume recovery add|remove VOLID|DEVICE",
         "Add (passphrase from the terminal) or remove a recovery passphrase that opens without the CMK"},
        {"volume", "show", 1, 0, verb_volume_show, "volume show VOLID|DEVICE", "Show one volume"},
        {"volume", "repair", 1, 0, verb_volume_repair, "volume repair VOLID|DEVICE",
         "Rewrite a damaged LUKS2 header copy from the intact one (nothing else ever repairs)"},
        {"volume", "rewrap", -1, OPT_KEY | OPT_LATEST | OPT_ALL, verb_volume_rewrap,
         "volume rewrap VOLID|DEVICE --key KEY|--latest, or --all",
         "Re-wrap the data key under another key or its key's newest version (data untouched, crash-safe)"},
        {"image", "import", 1, OPT_NAME | OPT_KEY, verb_image_import, "image import FILE --name NAME [--key KEY]",
         "Make an encrypted image from a raw image file or block device (read, never modified)"},
        {"image", "list", 0, 0, verb_image_list, "image list", "List encrypted images"},
        {"image", "show", 1, 0, verb_image_show, "image show IMAGE", "Show one image (by id or name)"},
        {"image", "delete", 1, 0, verb_image_delete, "image delete IMAGE", "Delete an image (its key is left alone)"},
        {"image", "rewrap", 1, OPT_KEY | OPT_LATEST, verb_image_rewrap, "image rewrap IMAGE --key KEY|--latest",
         "Re-wrap an image's data key under another key (data untouched, crash-safe)"},
        {"image", "create", 0, OPT_FROM_SERVER | OPT_NAME, verb_image_create,
         "image create --from-server SERVER --name NAME",
         "Make an encrypted image from a server's system disk (same key and cipher)"},
        {"server", "create", 1, OPT_IMAGE | OPT_AS_CONFIG | OPT_SYSTEM_DISK | OPT_DATA_DISK | OPT_FORCE,
         verb_server_create,
         "server create NAME --image IMAGE|--as-config CONFIG --system-disk DEVICE [--data-disk "
         "DEVICE[:key=KEY|:plain]]... [--force]",
         "Create a server: its system disk from an encrypted image, encrypted data disks, all attached"},
        {"server", "list", 0, 0, verb_server_list, "server list", "List servers"},
        {"server", "show", 1, 0, verb_server_show, "server show SERVER", "Show one server and its disks"},
        {"server", "delete", 1, OPT_FORCE, verb_server_delete, "server delete SERVER [--force]",
         "Detach a server's volumes and forget it (disks and data stay); refused when one could not be attached again"},
        {"as-config", "create", 1, OPT_FROM_SERVER, verb_as_config_create, "as-config create NAME --from-server SERVER",
         "Record a server's encryption mode as an auto-scaling configuration"},
        {"as-config", "list", 0, 0, verb_as_config_list, "as-config list", "List AS configurations"},
        {"as-config", "show", 1, 0, verb_as_config_show, "as-config show CONFIG", "Show one AS configuration"},
        {"as-config", "delete", 1, 0, verb_as_config_delete, "as-config delete CONFIG", "Delete an AS configuration"},
};

static void help(FILE *f) {
        fprintf(f, "evsctl [--json] [--bus PATH] GROUP VERB [ARGS...]\n\n"
                   "Inspect and control evs-cryptd, the EVS volume encryption daemon.\n\n");
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (strlen(verbs[i].usage) > 58) /* a long usage gets a line of its own */
                        fprintf(f, "  %s\n  %-58s %s\n", verbs[i].usage, "", verbs[i].help);
                else
                        fprintf(f, "  %-58s %s\n", verbs[i].usage, verbs[i].help);
        fprintf(f, "\nOptions:\n"
                   "  -h --help           Show this help (also after a verb)\n"
                   "     --version        Show the version\n"
                   "  -j --json           Print JSON\n"
                   "     --bus PATH       The daemon's socket (default $EVS_BUS, else " EVS_BUS_PATH ")\n\n"
                   "KEY is a key id or alias, optionally prefixed by a backend: [BACKEND:]KEY.\n"
                   "Exit codes: 0 ok, 1 failure, 2 usage, 3 refused by the key's state, 4 not found, 5 busy,\n"
                   "6 KMS unavailable, 7 permission denied, 8 device holds data. See evsctl(8).\n");
}

/* The verbs of @group, as `evsctl GROUP` and `evsctl GROUP --help` show them. */
static void group_help(FILE *f, const char *group) {
        fprintf(f, "evsctl [--json] [--bus PATH] %s VERB [ARGS...]\n\nVerbs:\n", group);
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                if (!streq(verbs[i].group, group))
                        continue;
                if (strlen(verbs[i].usage) > 58)
                        fprintf(f, "  %s\n  %-58s %s\n", verbs[i].usage, "", verbs[i].help);
                else
                        fprintf(f, "  %-58s %s\n", verbs[i].usage, verbs[i].help);
        }
        fprintf(f, "\nSee evsctl --help for the options, evsctl(8) for the details.\n");
}

/* Levenshtein distance of @a and @b (both short command words). */
static size_t edit_distance(const char *a, const char *b) {
        size_t la = strlen(a), lb = strlen(b), row[64];

        if (la >= ELEMENTSOF(row) || lb >= ELEMENTSOF(row))
                return SIZE_MAX;
        for (size_t j = 0; j <= lb; j++)
                row[j] = j;
        for (size_t i = 1; i <= la; i++) {
                size_t diag = row[0];

                row[0] = i;
                for (size_t j = 1; j <= lb; j++) {
                        size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);

                        best = MIN(best, up + 1);
                        best = MIN(best, row[j - 1] + 1);
                        diag = up;
                        row[j] = best;
                }
        }
        return row[lb];
}

/* The verb of @group (or, with @group NULL, the group) nearest to @word, NULL when none is close. */
static const char *nearest(const char *group, const char *word) {
        const char *best = NULL;
        size_t best_d = SIZE_MAX, len = strlen(word);

        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                const char *cand = group ? verbs[i].name : verbs[i].group;
                size_t d;

                if (!cand || (group && !streq(verbs[i].group, group)))
                        continue;
                d = edit_distance(word, cand);
                /* a prefix ("sched") is as good as one typo */
                if (len >= 3 && strncmp(cand, word, len) == 0)
                        d = MIN(d, (size_t) 1);
                if (d < best_d) {
                        best_d = d;
                        best = cand;
                }
        }
        return best_d <= MAX((size_t) 2, len / 3) ? best : NULL;
}

static bool group_exists(const char *group) {
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (streq(verbs[i].group, group))
                        return true;
        return false;
}

int callv(sd_bus *bus, const char *method, sd_bus_message **ret, const char *types, va_list ap) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_message_new_method_call(bus, &m, NULL, EVS_BUS_OBJECT, EVS_BUS_INTERFACE, method);
        if (r < 0)
                return r;
        r = sd_bus_message_appendv(m, types, ap);
        if (r < 0)
                return r;
        /* The daemon answers every call by itself, within the KMS's Timeout= once the call is admitted:
         * during a storm queued calls take longer than sd-bus's default of 25 s, so wait up to 5 minutes. */
        r = sd_bus_call(bus, m, EVSCTL_CALL_TIMEOUT, &error, ret);
        if (r < 0) {
                print_call_error(&error, r);
                sd_bus_error_free(&error);
                return r;
        }
        return 0;
}

int call_quiet(sd_bus *bus, const char *method, sd_bus_message **ret, const char *types, ...) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        va_list ap;
        int r;

        r = sd_bus_message_new_method_call(bus, &m, NULL, EVS_BUS_OBJECT, EVS_BUS_INTERFACE, method);
        if (r < 0)
                return r;
        va_start(ap, types);
        r = sd_bus_message_appendv(m, types, ap);
        va_end(ap);
        if (r < 0)
                return r;
        r = sd_bus_call(bus, m, EVSCTL_CALL_TIMEOUT, &error, ret);
        sd_bus_error_free(&error);
        return r;
}

int call(sd_bus *bus, const char *method, sd_bus_message **ret, const char *types, ...) {
        va_list ap;
        int r;

        va_start(ap, types);
        r = callv(bus, method, ret, types, ap);
        va_end(ap);
        return r;
}

static int connect_bus(sd_bus **ret) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_free_ char *address = NULL;
        const char *path = arg_bus_path ?: getenv("EVS_BUS") ?: EVS_BUS_PATH;
        int r;

        if (asprintf(&address, "unix:path=%s", path) < 0)
                return -ENOMEM;
        r = sd_bus_new(&bus);
        if (r >= 0)
                r = sd_bus_set_address(bus, address);
        if (r >= 0)
                r = sd_bus_start(bus);
        if (r < 0) {
                fprintf(stderr, "evsctl: cannot reach evs-cryptd at %s: %s\n", path, strerror(-r));
                return r == -EACCES || r == -EPERM ? -EACCES : -ECONNREFUSED;
        }
        *ret = TAKE_PTR(bus);
        return 0;
}

/* Appends a --data-disk argument (they are repeated, in order). */
static int data_disk_add(const char *arg) {
        size_t n = strv_length(opt_data_disks);
        char **l = reallocarray(opt_data_disks, n + 2, sizeof(char *));

        if (!l)
                return -ENOMEM;
        opt_data_disks = l;
        l[n] = strdup(arg);
        l[n + 1] = NULL;
        return l[n] ? 0 : -ENOMEM;
}

static int usage_error(const char *fmt, ...) _printf_(1, 2);
static int usage_error(const char *fmt, ...) {
        va_list ap;

        fputs("evsctl: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputs(" (see evsctl --help)\n", stderr);
        return EXIT_USAGE;
}

static int run(int argc, char *argv[]) {
        enum {
                ARG_VERSION = 0x100,
                ARG_BUS,
                ARG_DESCRIPTION,
                ARG_BACKEND,
                ARG_ID,
                ARG_KEY,
                ARG_DAYS,
                ARG_FORCE,
                ARG_NAME,
                ARG_IMAGE,
                ARG_AS_CONFIG,
                ARG_SYSTEM_DISK,
                ARG_DATA_DISK,
                ARG_FROM_SERVER,
                ARG_OFF,
                ARG_LATEST,
                ARG_ALL,
                ARG_FORMAT,
                ARG_OUTPUT,
        };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "json", no_argument, NULL, 'j' },
                { "bus", required_argument, NULL, ARG_BUS },
                { "description", required_argument, NULL, ARG_DESCRIPTION },
                { "backend", required_argument, NULL, ARG_BACKEND },
                { "id", required_argument, NULL, ARG_ID },
                { "key", required_argument, NULL, ARG_KEY },
                { "days", required_argument, NULL, ARG_DAYS },
                { "force", no_argument, NULL, ARG_FORCE },
                { "name", required_argument, NULL, ARG_NAME },
                { "image", required_argument, NULL, ARG_IMAGE },
                { "as-config", required_argument, NULL, ARG_AS_CONFIG },
                { "system-disk", required_argument, NULL, ARG_SYSTEM_DISK },
                { "data-disk", required_argument, NULL, ARG_DATA_DISK },
                { "from-server", required_argument, NULL, ARG_FROM_SERVER },
                { "off", no_argument, NULL, ARG_OFF },
                { "latest", no_argument, NULL, ARG_LATEST },
                { "all", no_argument, NULL, ARG_ALL },
                { "format", required_argument, NULL, ARG_FORMAT },
                { "output", required_argument, NULL, ARG_OUTPUT },
                {},
        };
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        unsigned given = 0;
        bool want_help = false;
        const verb_entry *v = NULL;
        char **pos;
        int n_pos, c, r;

        opterr = 0; /* our own messages, prefixed "evsctl:" like every other */
        while ((c = getopt_long(argc, argv, ":hj", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        want_help = true;
                        break;
                case ARG_VERSION:
                        puts("evsctl " PACKAGE_VERSION);
                        return 0;
                case 'j':
                        arg_json = true;
                        break;
                case ARG_BUS:
                        arg_bus_path = optarg;
                        break;
                case ARG_DESCRIPTION:
                        opt_description = optarg;
                        given |= OPT_DESCRIPTION;
                        break;
                case ARG_BACKEND:
                        opt_backend = optarg;
                        given |= OPT_BACKEND;
                        break;
                case ARG_ID:
                        opt_volume_id = optarg;
                        given |= OPT_ID;
                        break;
                case ARG_KEY:
                        opt_key = optarg;
                        given |= OPT_KEY;
                        break;
                case ARG_DAYS: {
                        unsigned d;

                        if (parse_unsigned(optarg, 1, UINT32_MAX, &d) < 0)
                                return usage_error("--days takes a whole number of days: %s", optarg);
                        opt_days = d;
                        given |= OPT_DAYS;
                        break;
                }
                case ARG_FORCE:
                        opt_force = true;
                        given |= OPT_FORCE;
                        break;
                case ARG_OFF:
                        opt_off = true;
                        given |= OPT_OFF;
                        break;
                case ARG_LATEST:
                        opt_latest = true;
                        given |= OPT_LATEST;
                        break;
                case ARG_ALL:
                        opt_all = true;
                        given |= OPT_ALL;
                        break;
                case ARG_FORMAT:
                        if (!streq(optarg, "openmetrics") && !streq(optarg, "prometheus"))
                                return usage_error("--format takes openmetrics or prometheus: %s", optarg);
                        opt_prometheus = streq(optarg, "prometheus");
                        given |= OPT_FORMAT;
                        break;
                case ARG_OUTPUT:
                        opt_output = optarg;
                        given |= OPT_OUTPUT;
                        break;
                case ARG_NAME:
                        opt_name = optarg;
                        given |= OPT_NAME;
                        break;
                case ARG_IMAGE:
                        opt_image = optarg;
                        given |= OPT_IMAGE;
                        break;
                case ARG_AS_CONFIG:
                        opt_as_config = optarg;
                        given |= OPT_AS_CONFIG;
                        break;
                case ARG_SYSTEM_DISK:
                        opt_system_disk = optarg;
                        given |= OPT_SYSTEM_DISK;
                        break;
                case ARG_DATA_DISK:
                        if (data_disk_add(optarg) < 0)
                                return EXIT_FAILURE_OTHER;
                        given |= OPT_DATA_DISK;
                        break;
                case ARG_FROM_SERVER:
                        opt_from_server = optarg;
                        given |= OPT_FROM_SERVER;
                        break;
                case ':':
                        return usage_error("option %s needs a value", argv[optind - 1]);
                case '?':
                        if (optopt > 0 && optopt < 0x100)
                                return usage_error("unknown option -%c", optopt);
                        return usage_error("unknown option %s", argv[optind - 1]);
                default:
                        return EXIT_USAGE;
                }

        pos = argv + optind;
        n_pos = argc - optind;
        if (n_pos == 0) {
                if (want_help) {
                        help(stdout);
                        return 0;
                }
                return usage_error("no verb given");
        }

        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (streq(verbs[i].group, pos[0]) &&
                    (!verbs[i].name || (n_pos > 1 && streq(verbs[i].name, pos[1])))) {
                        v = &verbs[i];
                        break;
                }
        if (!v && !group_exists(pos[0])) {
                const char *g = nearest(NULL, pos[0]);

                if (g)
                        return usage_error("unknown verb group '%s'; did you mean '%s'?", pos[0], g);
                return usage_error("unknown verb group '%s'", pos[0]);
        }
        if (!v && n_pos == 1) {
                /* `evsctl key`: the group's verbs; with --help that is the answer, without it a usage error. */
                if (want_help) {
                        group_help(stdout, pos[0]);
                        return 0;
                }
                fprintf(stderr, "evsctl: %s needs a verb.\n\n", pos[0]);
                group_help(stderr, pos[0]);
                return EXIT_USAGE;
        }
        if (!v) {
                const char *n = nearest(pos[0], pos[1]);

                if (n)
                        return usage_error("unknown verb '%s %s'; did you mean '%s'?", pos[0], pos[1], n);
                return usage_error("unknown verb '%s %s'", pos[0], pos[1]);
        }
        if (want_help) {
                printf("evsctl %s\n\n%s.\n", v->usage, v->help);
                return 0;
        }
        if (v->name) {
                pos++;
                n_pos--;
        }
        if (v->n_args < 0 && n_pos - 1 > -v->n_args)
                return usage_error("%s takes at most %d argument%s: evsctl %s", v->usage, -v->n_args,
                                   v->n_args == -1 ? "" : "s", v->usage);
        if (v->n_args >= 0 && n_pos - 1 != v->n_args)
                return usage_error("%s takes %d argument%s: evsctl %s", v->usage, v->n_args, v->n_args == 1 ? "" : "s",
                                   v->usage);
        if (given & ~v->options)
                return usage_error("an option given is not valid for: evsctl %s", v->usage);
        /* An empty argument never silently means a default (key show "" was evs/default). */
        for (int i = 1; i < n_pos; i++)
                if (isempty(pos[i]))
                        return usage_error("argument %d is empty: evsctl %s", i, v->usage);
        {
                const char *const values[] = {opt_backend, opt_volume_id, opt_key,         opt_name,
                                              opt_image,   opt_as_config, opt_system_disk, opt_from_server,
                                              opt_output};
                static const char *const names[] = {"--backend", "--id",        "--key",         "--name",
                                                    "--image",   "--as-config", "--system-disk", "--from-server",
                                                    "--output"};

                for (size_t i = 0; i < ELEMENTSOF(values); i++)
                        if (values[i] && !*values[i])
                                return usage_error("%s needs a value, not an empty string", names[i]);
                STRV_FOREACH(d, opt_data_disks)
                if (!**d)
                        return usage_error("--data-disk needs a value, not an empty string");
        }

        r = evs_errors_register();
        if (r < 0)
                return EXIT_FAILURE_OTHER;
        r = connect_bus(&bus);
        if (r < 0)
                return r == -EACCES ? EXIT_PERMISSION : EXIT_FAILURE_OTHER;

        r = v->run(bus, n_pos, pos);
        if (r == -EDOM)
                return EXIT_USAGE;
        if (r < 0)
                return evs_exit_code(r);
        return 0;
}

int main(int argc, char *argv[]) {
        int r = run(argc, argv);

        strv_free(opt_data_disks);
        return r;
}
