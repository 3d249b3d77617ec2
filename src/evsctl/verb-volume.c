/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <limits.h>
#include <unistd.h>
#include <termios.h>

#include "bus-api.h"
#include "evsctl.h"
#include "evsctl-options.h"
#include "json-util.h"
#include "time-util.h"
#include "secret.h"

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

/* Adds "created" to volume @v from GetVolumeCreated (null from an older daemon, or when unknown). */
static int add_created(sd_bus *bus, json_object *v, const char *ref) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *id;
        uint64_t created = 0;

        if (call_quiet(bus, "GetVolumeCreated", &reply, "s", ref) < 0 ||
            sd_bus_message_read(reply, EVS_VOLUME_CREATED_SIG, &id, &created) < 0)
                created = 0;
        return add_volume_created(v, created);
}

int verb_volume_create(sd_bus *bus, int argc, char *argv[]) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_object_putp) json_object *v = NULL;
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
        r = show_volume_reply(reply, &v);
        if (r < 0)
                return r;
        r = add_created(bus, v, json_str(v, "id") ?: opt_volume_id);
        if (r < 0)
                return r;
        print_volume(v);
        return 0;
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

/* Adds the key version fields of volume @v from GetVolumeKeyVersion (nothing from an older daemon). */
static void add_key_version(sd_bus *bus, json_object *v, const char *ref) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *id;
        uint32_t version, latest;

        if (call_quiet(bus, "GetVolumeKeyVersion", &reply, "s", ref) < 0 ||
            sd_bus_message_read(reply, EVS_VOLUME_KEY_VERSION_SIG, &id, &version, &latest) < 0)
                return;
        (void) add_volume_key_version(v, version, latest);
}

int verb_volume_show(sd_bus *bus, int argc, char *argv[]) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_object_putp) json_object *v = NULL;
        _cleanup_free_ char *ref = NULL;
        int r;

        r = absolute_device(argv[1], &ref);
        if (r < 0)
                return r;
        r = call(bus, "GetVolumeDetails", &reply, "s", ref);
        if (r < 0)
                return r;
        r = read_volume_ex(reply, &v);
        if (r <= 0)
                return r < 0 ? r : -EBADMSG;
        add_key_version(bus, v, ref);
        r = add_created(bus, v, ref);
        if (r < 0)
                return r;
        print_volume(v);
        return 0;
}

/* Re-wraps volume @ref under @key_ref and says so; with @latest, under its own key's newest version (through
 * the same crash-safe RewrapVolume: a new token under the same key, then the old one removed). */
static int rewrap_one(sd_bus *bus, const char *ref, const char *key_ref, bool latest) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL, *vreply = NULL;
        _cleanup_(json_object_putp) json_object *v = NULL;
        _cleanup_free_ char *own = NULL;
        unsigned before = 0;
        int r;

        if (latest) {
                _cleanup_(json_object_putp) json_object *cur = NULL;
                const char *id;
                uint32_t version, newest;

                r = call(bus, "GetVolume", &vreply, "s", ref);
                if (r < 0)
                        return r;
                r = show_volume_reply(vreply, &cur);
                if (r < 0)
                        return r;
                if (!json_str(cur, "key_id") || !json_str(cur, "backend")) {
                        fprintf(stderr, "evsctl: volume %s has no readable key token to re-wrap.\n", esc(ref));
                        return -ENODATA;
                }
                if (asprintf(&own, "%s:%s", json_str(cur, "backend"), json_str(cur, "key_id")) < 0)
                        return -ENOMEM;
                key_ref = own;
                sd_bus_message_unref(vreply);
                vreply = NULL;
                if (call_quiet(bus, "GetVolumeKeyVersion", &vreply, "s", ref) >= 0 &&
                    sd_bus_message_read(vreply, EVS_VOLUME_KEY_VERSION_SIG, &id, &version, &newest) > 0)
                        before = version;
        }
        r = call(bus, "RewrapVolume", &reply, "ss", ref, key_ref);
        if (r < 0)
                return r;
        r = show_volume_reply(reply, &v);
        if (r < 0)
                return r;
        add_key_version(bus, v, json_str(v, "id") ?: ref);
        if (arg_json) {
                json_print(v);
                return 0;
        }
        if (latest) {
                json_object *kv = NULL;

                json_object_object_get_ex(v, "key_version", &kv);
                if (kv && before)
                        printf("Volume %s: data key re-wrapped under version %d of key %s (was version %u).\n",
                               json_text(v, "id"), json_object_get_int(kv),
                               json_text(v, "key_alias") ?: json_text(v, "key_id"), before);
                else
                        printf("Volume %s: data key re-wrapped under the newest version of key %s.\n",
                               json_text(v, "id"), json_text(v, "key_alias") ?: json_text(v, "key_id"));
        } else
                printf("Volume %s: data key now wrapped by key %s (%s).\n", json_text(v, "id"),
                       json_text(v, "key_alias") ?: json_text(v, "key_id"), json_text(v, "backend"));
        return 0;
}

/* --all: every volume wrapped with an older version of its key than the newest, one after another. */
static int rewrap_all(sd_bus *bus) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_object_putp) json_object *done = json_object_new_array();
        unsigned n_done = 0, n_failed = 0;
        int r, first_error = 0;

        if (!done)
                return -ENOMEM;
        r = call(bus, "ListVolumeKeyVersions", &reply, "");
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(reply, 'a', EVS_VOLUME_KEY_VERSION_SIG);
        if (r < 0)
                return r;
        for (;;) {
                const char *id;
                uint32_t version, latest;

                r = sd_bus_message_read(reply, EVS_VOLUME_KEY_VERSION_SIG, &id, &version, &latest);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                if (!version || !latest || version >= latest)
                        continue;
                if (!arg_json)
                        printf("Volume %s: key version %u, newest %u: re-wrapping.\n", esc(id), version, latest);
                r = rewrap_one(bus, id, NULL, true);
                if (r < 0) {
                        n_failed++;
                        if (first_error == 0)
                                first_error = r;
                } else
                        n_done++;
        }
        if (!arg_json)
                printf("%u volume(s) re-wrapped under their key's newest version, %u failed.\n", n_done, n_failed);
        return first_error;
}

int verb_volume_rewrap(sd_bus *bus, int argc, char *argv[]) {
        _cleanup_free_ char *ref = NULL;
        int r;

        if (opt_all) {
                if (argc > 1 || opt_key) {
                        fprintf(stderr, "evsctl: volume rewrap --all takes no volume and no --key (it re-wraps every "
                                        "volume under its own key's newest version).\n");
                        return -EDOM;
                }
                return rewrap_all(bus);
        }
        if (argc < 2) {
                fprintf(stderr, "evsctl: volume rewrap needs a volume (or --all).\n");
                return -EDOM;
        }
        if (!opt_key == !opt_latest) {
                fprintf(stderr, "evsctl: volume rewrap needs exactly one of --key KEY and --latest.\n");
                return -EDOM;
        }
        r = absolute_device(argv[1], &ref);
        if (r < 0)
                return r;
        return rewrap_one(bus, ref, opt_key, opt_latest);
}

/* The key versions of ListVolumeKeyVersions and the creation times of ListVolumesCreated, by volume id, for the
 * list's rows (empty with an older daemon). */
static json_object *list_versions = NULL, *list_created = NULL;

static int read_volume_versioned(sd_bus_message *m, json_object **ret) {
        json_object *v = NULL, *e;
        int r;

        r = read_volume_ex(m, &v);
        if (r <= 0)
                return r;
        if (list_versions && json_str(v, "id") && json_object_object_get_ex(list_versions, json_str(v, "id"), &e)) {
                r = add_volume_key_version(v, (unsigned) json_object_get_int64(json_object_array_get_idx(e, 0)),
                                           (unsigned) json_object_get_int64(json_object_array_get_idx(e, 1)));
                if (r < 0) {
                        json_object_put(v);
                        return r;
                }
        }
        e = NULL;
        if (list_created && json_str(v, "id"))
                json_object_object_get_ex(list_created, json_str(v, "id"), &e);
        r = add_volume_created(v, e ? (uint64_t) json_object_get_int64(e) : 0);
        if (r < 0) {
                json_object_put(v);
                return r;
        }
        *ret = v;
        return 1;
}

static void load_list_created(sd_bus *bus) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;

        list_created = json_object_new_object();
        if (!list_created || call_quiet(bus, "ListVolumesCreated", &reply, "") < 0 ||
            sd_bus_message_enter_container(reply, 'a', EVS_VOLUME_CREATED_SIG) < 0)
                return;
        for (;;) {
                const char *id;
                uint64_t created;

                if (sd_bus_message_read(reply, EVS_VOLUME_CREATED_SIG, &id, &created) <= 0)
                        break;
                if (created > 0 && created <= INT64_MAX)
                        json_object_object_add(list_created, id, json_object_new_int64((int64_t) created));
        }
}

static void load_list_versions(sd_bus *bus) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;

        list_versions = json_object_new_object();
        if (!list_versions || call_quiet(bus, "ListVolumeKeyVersions", &reply, "") < 0 ||
            sd_bus_message_enter_container(reply, 'a', EVS_VOLUME_KEY_VERSION_SIG) < 0)
                return;
        for (;;) {
                json_object *e;
                const char *id;
                uint32_t version, latest;

                if (sd_bus_message_read(reply, EVS_VOLUME_KEY_VERSION_SIG, &id, &version, &latest) <= 0)
                        break;
                e = json_object_new_array();
                if (!e)
                        break;
                json_object_array_add(e, json_object_new_int64(version));
                json_object_array_add(e, json_object_new_int64(latest));
                json_object_object_add(list_versions, id, e);
        }
}

static int volume_row(table *t, json_object *v) {
        _cleanup_free_ char *note = NULL;
        json_object *out, *kv, *lv;

        if (!json_str(v, "warning") && !json_str(v, "last_error") && json_object_object_get_ex(v, "key_outdated", &out) &&
            json_object_get_boolean(out) && json_object_object_get_ex(v, "key_version", &kv) &&
            json_object_object_get_ex(v, "key_latest_version", &lv) &&
            asprintf(&note, "wrapped with key version %d, newest %d: rewrap --latest", json_object_get_int(kv),
                     json_object_get_int(lv)) < 0)
                return -ENOMEM;
        return table_add_row(t, json_str(v, "id"), json_str(v, "state"), json_str(v, "device"), json_str(v, "mapping"),
                             json_str(v, "key_alias") ?: json_str(v, "key_id"), json_str(v, "key_state"),
                             json_str(v, "warning") ?: json_str(v, "last_error") ?: note);
}

int verb_volume_list(sd_bus *bus, int argc, char *argv[]) {
        static const char *const columns[] = { "VOLUME", "STATE", "DEVICE", "MAPPING", "KEY", "KEY_STATE", "NOTE", NULL };
        int r;

        load_list_versions(bus);
        load_list_created(bus);
        r = list_verb(bus, "ListVolumeDetails", EVS_VOLUME_EX_SIG, read_volume_versioned, columns, volume_row);
        json_object_put(list_versions);
        json_object_put(list_created);
        list_versions = list_created = NULL;
        return r;
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

/* The -errno an attach would have answered, from a CHECK's error name. */
static int check_errno(json_object *c) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        const char *name = json_str(c, "error");
        int r;

        if (!name)
                return 0;
        e.name = name;
        e.message = json_str(c, "error_message");
        r = sd_bus_error_get_errno(&e);
        return r > 0 ? -r : -EIO;
}

static int check_row(table *t, json_object *c) {
        const char *verdict = json_str(c, "error");

        if (verdict && strncmp(verdict, "org.evs.Cryptd1.Error.", strlen("org.evs.Cryptd1.Error.")) == 0)
                verdict += strlen("org.evs.Cryptd1.Error.");
        return table_add_row(t, json_str(c, "id"), json_str(c, "state"), json_str(c, "device"),
                             json_str(c, "key_alias") ?: json_str(c, "key_id"), json_str(c, "key_state"),
                             verdict ?: "ok", json_str(c, "error_message") ?: json_str(c, "warning"));
}

int verb_volume_check(sd_bus *bus, int argc, char *argv[]) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_object_putp) json_object *c = NULL;
        _cleanup_free_ char *ref = NULL;
        int r;

        if (opt_all == (argc > 1)) {
                fprintf(stderr, "evsctl: volume check takes VOLID|DEVICE or --all.\n");
                return -EDOM;
        }
        if (opt_all) {
                static const char *const columns[] = { "VOLUME", "STATE", "DEVICE", "KEY", "KEY STATE", "ATTACH",
                                                       "REASON", NULL };
                _cleanup_(json_object_putp) json_object *arr = json_object_new_array();
                _cleanup_(table_freep) table *t = table_new(columns);
                int first = 0;

                if (!arr || !t)
                        return -ENOMEM;
                r = call(bus, "CheckAllVolumes", &reply, "");
                if (r < 0)
                        return r;
                r = sd_bus_message_enter_container(reply, 'a', EVS_CHECK_SIG);
                if (r < 0)
                        return r;
                for (;;) {
                        json_object *item = NULL;

                        r = read_check(reply, &item);
                        if (r < 0)
                                return r;
                        if (r == 0)
                                break;
                        json_object_array_add(arr, item);
                        if (first == 0)
                                first = check_errno(item);
                        r = check_row(t, item);
                        if (r < 0)
                                return r;
                }
                if (arg_json)
                        json_print(arr);
                else
                        table_print(t);
                return first; /* the exit code of the first volume that would not attach */
        }

        r = absolute_device(argv[1], &ref);
        if (r < 0)
                return r;
        r = call(bus, "CheckVolume", &reply, "s", ref);
        if (r < 0)
                return r;
        r = read_check(reply, &c);
        if (r <= 0)
                return r < 0 ? r : -EBADMSG;
        if (arg_json)
                json_print(c);
        else {
                printf("%11s: %s\n", "volume", json_text(c, "id") ?: "-");
                printf("%11s: %s\n", "device", json_text(c, "device") ?: "-");
                printf("%11s: %s\n", "state", json_text(c, "state") ?: "-");
                if (json_str(c, "mapping"))
                        printf("%11s: %s\n", "mapping", json_text(c, "mapping"));
                if (json_str(c, "attached_by"))
                        printf("%11s: %s\n", "attached_by", json_text(c, "attached_by"));
                printf("%11s: %s\n", "key", json_text(c, "key_alias") ?: json_text(c, "key_id") ?: "-");
                printf("%11s: %s\n", "key_state", json_text(c, "key_state") ?: "-");
                if (json_str(c, "warning"))
                        printf("%11s: %s\n", "warning", json_text(c, "warning"));
                if (json_str(c, "error"))
                        printf("Attach would fail: %s\n", json_text(c, "error_message"));
                else
                        printf("Attach would succeed%s.\n", json_str(c, "warning") ? " (with the warning above)" : "");
        }
        if (json_str(c, "warning") && !arg_json)
                fprintf(stderr, "evsctl: warning: volume %s: %s.\n", json_text(c, "id"), json_text(c, "warning"));
        return check_errno(c);
}

/* Reads a passphrase: from the terminal with echo off, twice (they must match); from standard input, one
 * line, when it is not a terminal. Never from argv or the environment. */
static int read_passphrase(secret **ret) {
        _cleanup_(secret_freep) secret *a = NULL, *b = NULL;
        bool tty = isatty(STDIN_FILENO);

        for (int round = 0; round < (tty ? 2 : 1); round++) {
                _cleanup_(secret_freep) secret *buf = NULL;
                struct termios old, quiet;
                size_t n = 0;
                int r, c;

                r = secret_new(1024, &buf);
                if (r < 0)
                        return r;
                if (tty) {
                        fputs(round == 0 ? "Recovery passphrase: " : "Repeat the recovery passphrase: ", stderr);
                        fflush(stderr);
                        if (tcgetattr(STDIN_FILENO, &old) < 0)
                                return -errno;
                        quiet = old;
                        quiet.c_lflag &= ~(tcflag_t) ECHO;
                        quiet.c_lflag |= ECHONL;
                        if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) < 0)
                                return -errno;
                }
                while ((c = getchar()) != EOF && c != '\n')
                        if (n < buf->size)
                                ((uint8_t *) buf->data)[n++] = (uint8_t) c;
                if (tty)
                        (void) tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
                if (n >= buf->size) {
                        fprintf(stderr, "evsctl: the recovery passphrase is too long (at most 512 bytes).\n");
                        return -EDOM;
                }
                if (n == 0) {
                        fprintf(stderr, "evsctl: the recovery passphrase is empty.\n");
                        return -EDOM;
                }
                r = secret_new_copy(buf->data, n, round == 0 ? &a : &b);
                if (r < 0)
                        return r;
        }
        if (b && (a->size != b->size || !secret_equal(a, b))) {
                fprintf(stderr, "evsctl: the passphrases do not match; nothing changed.\n");
                return -EDOM;
        }
        *ret = TAKE_PTR(a);
        return 0;
}

int verb_volume_recovery(sd_bus *bus, int argc, char *argv[]) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(secret_freep) secret *pass = NULL;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *ref = NULL;
        bool add;
        int32_t slot;
        int r;

        if (!streq(argv[1], "add") && !streq(argv[1], "remove")) {
                fprintf(stderr, "evsctl: volume recovery takes add or remove, not '%s'.\n", esc(argv[1]));
                return -EDOM;
        }
        add = streq(argv[1], "add");
        r = absolute_device(argv[2], &ref);
        if (r < 0)
                return r;
        if (!add) {
                r = call(bus, "RemoveRecoveryPassphrase", &reply, "s", ref);
                if (r < 0)
                        return r;
                r = sd_bus_message_read(reply, "i", &slot);
                if (r < 0)
                        return r;
                if (arg_json)
                        printf("{ \"volume\": \"%s\", \"removed_keyslot\": %d }\n", argv[2], slot);
                else
                        printf("Removed the recovery passphrase of volume %s (keyslot %d).\n", esc(argv[2]), slot);
                return 0;
        }

        r = read_passphrase(&pass);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_call(bus, &m, NULL, EVS_BUS_OBJECT, EVS_BUS_INTERFACE, "AddRecoveryPassphrase");
        if (r < 0)
                return r;
        r = sd_bus_message_sensitive(m); /* wiped when freed */
        if (r >= 0)
                r = sd_bus_message_append(m, "s", ref);
        if (r >= 0)
                r = sd_bus_message_append_array(m, 'y', pass->data, pass->size);
        pass = secret_free(pass);
        if (r < 0)
                return r;
        r = sd_bus_call(bus, m, EVSCTL_CALL_TIMEOUT, &error, &reply);
        if (r < 0) {
                print_call_error(&error, r);
                sd_bus_error_free(&error);
                return r;
        }
        r = sd_bus_message_read(reply, "i", &slot);
        if (r < 0)
                return r;
        if (arg_json)
                printf("{ \"volume\": \"%s\", \"recovery_keyslot\": %d }\n", argv[2], slot);
        else
                printf("Volume %s has a recovery passphrase in keyslot %d: it opens the volume without the CMK.\n",
                       esc(argv[2]), slot);
        return 0;
}
