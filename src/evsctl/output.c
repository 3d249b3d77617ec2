/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <assert.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>

#include "bus-api.h"
#include "evsctl.h"
#include "json-util.h"
#include "string-util.h"
#include "time-util.h"

struct table {
        size_t n_columns;
        char **cells; /* row-major, header first */
        size_t n_cells;
};

table *table_new(const char *const *columns) {
        table *t = calloc(1, sizeof *t);

        if (!t)
                return NULL;
        while (columns[t->n_columns])
                t->n_columns++;
        t->cells = calloc(t->n_columns, sizeof(char *));
        if (!t->cells)
                return table_free(t);
        for (size_t i = 0; i < t->n_columns; i++)
                if (!(t->cells[i] = strdup(columns[i])))
                        return table_free(t);
        t->n_cells = t->n_columns;
        return t;
}
int table_add_row(table *t, ...) {
        char **a = reallocarray(t->cells, t->n_cells + t->n_columns, sizeof(char *));
        va_list ap;

        if (!a)
                return -ENOMEM;
        t->cells = a;
        va_start(ap, t);
        for (size_t i = 0; i < t->n_columns; i++) {
                const char *s = va_arg(ap, const char *);
                a[t->n_cells++] = cescape(isempty(s) ? "-" : s); /* one row, one line */
        }
        va_end(ap);
        return 0;
}

void table_print(table *t) {
        size_t width[16] = {};

        for (size_t i = 0; i < t->n_cells; i++) {
                size_t c = i % t->n_columns, n = strlen(strempty(t->cells[i]));
                if (c < ELEMENTSOF(width))
                        width[c] = MAX(width[c], n);
        }
        for (size_t i = 0; i < t->n_cells; i++) {
                size_t c = i % t->n_columns;
                bool last = c == t->n_columns - 1;

                if (last)
                        printf("%s\n", strempty(t->cells[i]));
                else
                        printf("%-*s  ", (int) width[c % ELEMENTSOF(width)], strempty(t->cells[i]));
        }
}

table *table_free(table *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n_cells; i++)
                free(t->cells[i]);
        free(t->cells);
        free(t);
        return NULL;
}

void json_print(json_object *o) {
        puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
}

const char *json_str(json_object *o, const char *key) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || !v)
                return NULL;
        return json_object_get_string(v);
}

const char *esc(const char *s) {
        static char *ring[32];
        static size_t next;
        char *e;

        if (!s)
                return NULL;
        if (!string_needs_escape(s))
                return s;
        e = cescape(s);
        if (!e)
                return "(out of memory)";
        free(ring[next]);
        ring[next] = e;
        next = (next + 1) % ELEMENTSOF(ring);
        return e;
}

const char *format_bytes(char *buf, size_t l, uint64_t bytes) {
        static const char suffix[] = "KMGTPE";
        double v = (double) bytes;
        size_t i = 0;

        if (bytes < 1024) {
                snprintf(buf, l, "%" PRIu64 "B", bytes);
                return buf;
        }
        v /= 1024;
        while (v >= 1024 && i + 1 < sizeof suffix - 1) {
                v /= 1024;
                i++;
        }
        snprintf(buf, l, "%.1f%c", v, suffix[i]);
        return buf;
}

const char *json_text(json_object *o, const char *key) {
        return esc(json_str(o, key));
}

void print_call_error(const sd_bus_error *error, int r) {
        fprintf(stderr, "evsctl: %s\n", esc(error && error->message ? error->message : strerror(-r)));
}

static int add_str(json_object *o, const char *key, const char *s) {
        return json_add_string(o, key, isempty(s) ? NULL : s, true);
}

static int add_time(json_object *o, const char *key, uint64_t t) {
        char buf[FORMAT_TIMESTAMP_MAX];

        return add_str(o, key, t ? format_timestamp(buf, sizeof buf, t) : NULL);
}

int read_key(sd_bus_message *m, json_object **ret) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        const char *backend, *id, *alias, *desc, *state;
        uint64_t created, deletion;
        int r;

        r = sd_bus_message_read(m, EVS_KEY_SIG, &backend, &id, &alias, &desc, &state, &created, &deletion);
        if (r <= 0)
                return r;
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        if ((r = add_str(o, "id", id)) < 0 || (r = add_str(o, "alias", alias)) < 0 ||
            (r = add_str(o, "description", desc)) < 0 || (r = add_str(o, "state", state)) < 0 ||
            (r = add_str(o, "backend", backend)) < 0 || (r = add_time(o, "created", created)) < 0 ||
            (r = add_time(o, "deletion_date", deletion)) < 0)
                return r;
        *ret = TAKE_PTR(o);
        return 1;
}

int read_volume(sd_bus_message *m, json_object **ret) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        const char *f[10];
        static const char *const names[10] = { "id", "device", "mapping", "state", "key_id",
                                               "key_alias", "key_state", "backend", "warning", "last_error" };
        int r;

        r = sd_bus_message_read(m, EVS_VOLUME_SIG, &f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6], &f[7], &f[8],
                                &f[9]);
        if (r <= 0)
                return r;
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        for (size_t i = 0; i < 10; i++)
                if ((r = add_str(o, names[i], f[i])) < 0)
                        return r;
        *ret = TAKE_PTR(o);
        return 1;
}

void add_key_rotation(sd_bus *bus, json_object *k) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *ref = json_str(k, "id"), *backend = json_str(k, "backend");
        _cleanup_free_ char *full = NULL;
        uint32_t version, days;
        uint64_t next, rotated;

        if (!ref || (backend && asprintf(&full, "%s:%s", backend, ref) < 0))
                return;
        if (call_quiet(bus, "GetKeyRotation", &reply, "s", full ?: ref) < 0 ||
            sd_bus_message_read(reply, EVS_KEY_ROTATION_SIG, &version, &days, &next, &rotated) < 0 || version == 0)
                return; /* an older daemon, or a backend that has no versions: nothing to add */
        (void) json_add_uint64(k, "version", version);
        if (days > 0)
                (void) json_add_uint64(k, "rotation_days", days);
        else
                (void) json_add_string(k, "rotation_days", NULL, true);
        (void) add_time(k, "next_rotation", next);
        (void) add_time(k, "rotated", rotated);
}

/* The tail of VOLUME_EX after the VOLUME fields, added to @o. */
static int read_volume_ex_tail(sd_bus_message *m, json_object *o) {
        const char *by;
        uint32_t unbound;
        int32_t recovery;
        int r;

        r = sd_bus_message_read(m, "uis", &unbound, &recovery, &by);
        if (r < 0)
                return r;
        if (json_object_object_add(o, "unbound_keyslots", json_object_new_int64(unbound)) < 0 ||
            json_object_object_add(o, "recovery_keyslot", recovery >= 0 ? json_object_new_int64(recovery) : NULL) < 0)
                return -ENOMEM;
        return add_str(o, "attached_by", by);
}

static int read_volume_fields(sd_bus_message *m, json_object **ret) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        const char *f[10];
        static const char *const names[10] = { "id", "device", "mapping", "state", "key_id",
                                               "key_alias", "key_state", "backend", "warning", "last_error" };
        int r;

        r = sd_bus_message_read(m, "ssssssssss", &f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6], &f[7], &f[8], &f[9]);
        if (r < 0)
                return r;
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        for (size_t i = 0; i < 10; i++)
                if ((r = add_str(o, names[i], f[i])) < 0)
                        return r;
        r = read_volume_ex_tail(m, o);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(o);
        return 0;
}

int read_volume_ex(sd_bus_message *m, json_object **ret) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        int r;

        r = sd_bus_message_enter_container(m, 'r', "ssssssssssuis");
        if (r <= 0)
                return r;
        r = read_volume_fields(m, &o);
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(o);
        return 1;
}

int read_check(sd_bus_message *m, json_object **ret) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        const char *name, *message;
        int r;

        r = sd_bus_message_enter_container(m, 'r', "ssssssssssuisss");
        if (r <= 0)
                return r;
        r = read_volume_fields(m, &o);
        if (r < 0)
                return r;
        r = sd_bus_message_read(m, "ss", &name, &message);
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        if (json_object_object_add(o, "attachable", json_object_new_boolean(isempty(name))) < 0)
                return -ENOMEM;
        if ((r = add_str(o, "error", name)) < 0 || (r = add_str(o, "error_message", message)) < 0)
                return r;
        *ret = TAKE_PTR(o);
        return 1;
}

void print_key(json_object *k) {
        static const char *const fields[] = {"id",      "alias",   "description",  "state",
                                             "backend", "created", "deletion_date"};
        json_object *v;

        if (arg_json) {
                json_print(k);
                return;
        }
        for (size_t i = 0; i < ELEMENTSOF(fields); i++)
                printf("%14s: %s\n", fields[i], json_text(k, fields[i]) ?: "-");
        if (!json_object_object_get_ex(k, "version", &v))
                return;
        printf("%14s: %d\n", "version", json_object_get_int(v));
        if (json_object_object_get_ex(k, "rotation_days", &v) && v)
                printf("%14s: every %d days\n", "rotation", json_object_get_int(v));
        else
                printf("%14s: off\n", "rotation");
        printf("%14s: %s\n", "next_rotation", json_text(k, "next_rotation") ?: "-");
        printf("%14s: %s\n", "rotated", json_text(k, "rotated") ?: "-");
}

int add_volume_key_version(json_object *v, unsigned version, unsigned latest) {
        int r;

        if ((r = version ? json_add_uint64(v, "key_version", version)
                         : json_add_string(v, "key_version", NULL, true)) < 0 ||
            (r = latest ? json_add_uint64(v, "key_latest_version", latest)
                        : json_add_string(v, "key_latest_version", NULL, true)) < 0)
                return r;
        if (json_object_object_add(v, "key_outdated", json_object_new_boolean(version && latest && version < latest)) <
            0)
                return -ENOMEM;
        return 0;
}

int add_volume_created(json_object *v, uint64_t created) {
        return add_time(v, "created", created);
}

void print_volume(json_object *v) {
        static const char *const fields[] = { "id", "device", "mapping", "state", "key_id", "key_alias",
                                              "key_state", "backend", "warning", "last_error" };

        if (arg_json) {
                json_print(v);
                return;
        }
        for (size_t i = 0; i < ELEMENTSOF(fields); i++)
                if (json_str(v, fields[i]) || i < 8)
                        printf("%11s: %s\n", fields[i], json_text(v, fields[i]) ?: "-");
        if (json_str(v, "attached_by"))
                printf("%11s: %s\n", "attached_by", json_text(v, "attached_by"));
        if (json_object_object_get_ex(v, "created", NULL))
                printf("%11s: %s\n", "created", json_text(v, "created") ?: "-");
        {
                json_object *o;

                if (json_object_object_get_ex(v, "recovery_keyslot", &o) && o)
                        printf("%11s: keyslot %d\n", "recovery", json_object_get_int(o));
        }
        {
                json_object *kv, *lv, *out;

                if (!json_object_object_get_ex(v, "key_version", &kv) || !kv)
                        return;
                json_object_object_get_ex(v, "key_latest_version", &lv);
                json_object_object_get_ex(v, "key_outdated", &out);
                if (json_object_get_boolean(out))
                        printf("%11s: %d, older than the key's newest %d (evsctl volume rewrap %s --latest)\n",
                               "key_version", json_object_get_int(kv), json_object_get_int(lv), json_text(v, "id"));
                else
                        printf("%11s: %d\n", "key_version", json_object_get_int(kv));
        }
}

int absolute_path_arg(const char *arg, char **ret) {
        char buf[PATH_MAX];

        if (!realpath(arg, buf)) {
                int e = errno;

                fprintf(stderr, "evsctl: %s: %s.\n", esc(arg), strerror(e));
                return e == ENOENT ? -ENXIO : -e;
        }
        *ret = strdup(buf);
        return *ret ? 0 : -ENOMEM;
}

int read_disk_owner(sd_bus_message *m, disk_kind kind, const char *const *names, size_t n_names,
                    json_object **ret) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        char sig[64];
        int r;

        assert(n_names > 0 && n_names < 16);
        snprintf(sig, sizeof sig, "%.*s%sa%st", (int) n_names, "ssssssssssssssss", disk_bus_signature(kind),
                 disk_bus_signature(kind));
        r = sd_bus_message_enter_container(m, 'r', sig);
        if (r <= 0)
                return r;
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        for (size_t i = 0; i < n_names; i++) {
                const char *f;

                r = sd_bus_message_read_basic(m, 's', &f);
                if (r < 0)
                        return r;
                /* "id" like every other object (--json); the name is the identity, kept as "name" too. */
                if (i == 0 && (r = json_add_string(o, "id", isempty(f) ? NULL : f, true)) < 0)
                        return r;
                if ((r = json_add_string(o, names[i], isempty(f) ? NULL : f, true)) < 0)
                        return r;
        }
        r = read_disks_and_created(m, kind, o);
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(o);
        return 1;
}

int read_reply(sd_bus_message *reply, int (*read)(sd_bus_message *m, json_object **ret), json_object **ret) {
        int r = read(reply, ret);

        return r < 0 ? r : r == 0 ? -EBADMSG : 0;
}

int show_reply(sd_bus_message *reply, int (*read)(sd_bus_message *m, json_object **ret),
               void (*print)(json_object *v)) {
        _cleanup_(json_object_putp) json_object *v = NULL;
        int r;

        r = read_reply(reply, read, &v);
        if (r < 0)
                return r;
        print(v);
        return 0;
}

int call_read(sd_bus *bus, const char *method, const char *arg, int (*read)(sd_bus_message *m, json_object **ret),
              json_object **ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = call(bus, method, &reply, "s", arg);
        if (r < 0)
                return r;
        return read_reply(reply, read, ret);
}

int show_verb(sd_bus *bus, const char *method, const char *arg, int (*read)(sd_bus_message *m, json_object **ret),
              void (*print)(json_object *v)) {
        _cleanup_(json_object_putp) json_object *v = NULL;
        int r;

        r = call_read(bus, method, arg, read, &v);
        if (r < 0)
                return r;
        print(v);
        return 0;
}

int read_disks_and_created(sd_bus_message *m, disk_kind kind, json_object *o) {
        disk_spec sys = {}, *data = NULL;
        char ts[FORMAT_TIMESTAMP_MAX];
        uint64_t created;
        size_t n = 0;
        int r;

        r = disk_list_bus_read(m, kind, &sys, &data, &n);
        if (r < 0)
                return r;
        r = disk_list_to_json(o, kind, DISK_JSON_API, &sys, data, n);
        disk_spec_done(&sys);
        disk_spec_array_free(data, n);
        if (r < 0)
                return r;
        r = sd_bus_message_read(m, "t", &created);
        if (r < 0)
                return r;
        return json_add_string(o, "created", created ? format_timestamp(ts, sizeof ts, created) : NULL, true);
}

/* The reasons of ListUnreadableRecords for @kind, by id (empty from an older daemon). NULL on OOM. */
static json_object *load_unreadable(sd_bus *bus, const char *kind) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        json_object *map = json_object_new_object();

        if (!map || call_quiet(bus, "ListUnreadableRecords", &reply, "") < 0 ||
            sd_bus_message_enter_container(reply, 'a', EVS_UNREADABLE_RECORD_SIG) < 0)
                return map;
        for (;;) {
                const char *k, *id, *reason;

                if (sd_bus_message_read(reply, EVS_UNREADABLE_RECORD_SIG, &k, &id, &reason) <= 0)
                        break;
                if (streq(k, kind))
                        json_object_object_add(map, id, json_object_new_string(reason));
        }
        return map;
}

static int list_verb_full(sd_bus *bus, const char *method, const char *kind, const char *what, const char *sig,
                          int (*read)(sd_bus_message *m, json_object **ret), const char *const *columns,
                          int (*add_row)(table *t, json_object *item)) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(json_object_putp) json_object *arr = json_object_new_array(), *unreadable = NULL;
        _cleanup_(table_freep) table *t = table_new(columns);
        int r;

        if (!arr || !t)
                return -ENOMEM;
        if (kind && !(unreadable = load_unreadable(bus, kind)))
                return -ENOMEM;
        r = call(bus, method, &reply, "");
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(reply, 'a', sig);
        if (r < 0)
                return r;
        for (;;) {
                json_object *item = NULL;

                r = read(reply, &item);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                json_object_array_add(arr, item);
                if (unreadable) {
                        json_object *why = NULL;

                        if (json_str(item, "id"))
                                json_object_object_get_ex(unreadable, json_str(item, "id"), &why);
                        r = json_add_string(item, "unreadable", why ? json_object_get_string(why) : NULL, true);
                        if (r < 0)
                                return r;
                }
                r = add_row(t, item);
                if (r < 0)
                        return r;
        }
        if (arg_json) {
                json_print(arr);
                return 0;
        }
        table_print(t);
        for (size_t i = 0; unreadable && i < json_object_array_length(arr); i++) {
                json_object *item = json_object_array_get_idx(arr, i);

                if (json_str(item, "unreadable"))
                        fprintf(stderr, "evsctl: %s %s: %s.\n", what, json_text(item, "id"),
                                json_text(item, "unreadable"));
        }
        return 0;
}

int list_verb(sd_bus *bus, const char *method, const char *sig, int (*read)(sd_bus_message *m, json_object **ret),
              const char *const *columns, int (*add_row)(table *t, json_object *item)) {
        return list_verb_full(bus, method, NULL, NULL, sig, read, columns, add_row);
}

int list_records_verb(sd_bus *bus, const char *method, const char *kind, const char *what, const char *sig,
                      int (*read)(sd_bus_message *m, json_object **ret), const char *const *columns,
                      int (*add_row)(table *t, json_object *item)) {
        return list_verb_full(bus, method, kind, what, sig, read, columns, add_row);
}
