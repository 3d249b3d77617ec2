/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Bus methods of the CMKs: list, get, create, disable, enable, schedule and cancel deletion, rotation. */

#include "evs-messages.h"
#include "bus-api.h"
#include "bus-methods.h"
#include "errors.h"
#include "log.h"
#include "manager.h"

static int append_key(sd_bus_message *reply, const kms_key *k) {
        return sd_bus_message_append(reply, EVS_KEY_SIG, strempty(k->backend), strempty(k->id), strempty(k->alias),
                                     strempty(k->description), kms_key_state_to_string(k->state), (uint64_t) k->created,
                                     (uint64_t) k->deletion_date);
}

static int append_key_item(sd_bus_message *reply, const void *item) {
        return append_key(reply, item);
}

static int reply_key(sd_bus_message *msg, const kms_key *k) {
        return bus_reply(msg, append_key_item, k);
}

/* Sets @error from a backend failure: the backend's reason when it left one. */
static int key_error(sd_bus_error *error, kms_backend *b, int r, const char *what, const char *ref) {
        const char *e = b ? kms_backend_error(b) : NULL;

        if (isempty(ref))
                return evs_bus_error_setf(error, EINVAL, "No key given: an empty key reference is not valid.");
        if (r == -ENOENT && !b)
                return evs_bus_error_setf(error, ENOENT, "Unknown KMS backend in key reference '%s'.", ref);
        if (r == -ENOENT)
                return evs_bus_error_setf(error, ENOENT, "No key %s.", ref);
        if (r == -EINVAL && !e)
                return evs_bus_error_setf(error, EINVAL, "Invalid key reference '%s'.", ref);
        return evs_bus_error_setf(error, -r, "Cannot %s key %s: %s.", what, ref, e ?: strerror(-r));
}

/* A key file the backend could not load is listed as unavailable with the reason (naming the file) as its
 * description: logged once per distinct reason, however often the keys are listed. */
static void warn_unreadable_key(const kms_backend *b, const kms_key *k) {
        static char *warned[64];
        static size_t n_warned = 0;

        if (k->state != KMS_KEY_UNAVAILABLE || !k->description)
                return;
        for (size_t i = 0; i < n_warned; i++)
                if (streq(warned[i], k->description))
                        return;
        log_warning("Backend %s: %s; key %s is shown as unavailable.", b->name, k->description, k->id);
        if (n_warned < ELEMENTSOF(warned) && (warned[n_warned] = strdup(k->description)))
                n_warned++;
}

int method_list_keys(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        manager *m = userdata;
        kms_key *all = NULL;
        size_t n_all = 0;
        int r = 0;

        for (size_t i = 0; i < m->registry->n_backends; i++) {
                kms_backend *b = m->registry->backends[i];
                kms_key *keys = NULL, *a;
                size_t n = 0;

                r = kms_key_list(b, &keys, &n);
                if (r == -EHOSTDOWN && b != m->registry->backends[0]) {
                        log_warning_errno(r, "Cannot list keys of backend %s: %s", b->name,
                                          strna(kms_backend_error(b)));
                        continue;
                }
                if (r < 0) {
                        r = key_error(error, b, r, "list", b->name);
                        goto out;
                }
                if (n == 0) {
                        free(keys); /* reallocarray(all, 0) would free all and answer NULL */
                        continue;
                }
                a = reallocarray(all, n_all + n, sizeof(kms_key));
                if (!a) {
                        kms_key_array_free(keys, n);
                        r = -ENOMEM;
                        goto out;
                }
                all = a;
                for (size_t j = 0; j < n; j++)
                        warn_unreadable_key(b, &keys[j]);
                memcpy(all + n_all, keys, n * sizeof(kms_key));
                n_all += n;
                free(keys);
        }
        r = bus_reply_array(msg, EVS_KEY_SIG, all, n_all, sizeof(kms_key), append_key_item);
out:
        kms_key_array_free(all, n_all);
        return r;
}

int method_get_key(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(kms_key_done) kms_key k = {};
        manager *m = userdata;
        kms_backend *b = NULL;
        const char *ref;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "s", &ref);
        if (r < 0)
                return r;
        r = kms_registry_resolve(m->registry, ref, &b, &k);
        if (r < 0)
                return key_error(error, b, r, "look up", ref);
        return reply_key(msg, &k);
}

int method_create_key(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(kms_key_done) kms_key k = {};
        manager *m = userdata;
        const char *alias, *desc, *backend;
        kms_backend *b;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "sss", &alias, &desc, &backend);
        if (r < 0)
                return r;
        r = kms_registry_get(m->registry, isempty(backend) ? NULL : backend, &b);
        if (r < 0)
                return evs_bus_error_setf(error, ENOENT, "No KMS backend named '%s' is configured.", backend);
        if (!isempty(alias) && streq(alias, KMS_DEFAULT_KEY_ALIAS))
                return evs_bus_error_setf(error, EEXIST, "The alias %s is reserved for the default key.",
                                               KMS_DEFAULT_KEY_ALIAS);
        r = kms_key_create(b, isempty(alias) ? NULL : alias, isempty(desc) ? NULL : desc, &k);
        if (r < 0)
                return key_error(error, b, r, "create", isempty(alias) ? "(no alias)" : alias);
        log_id(LOG_INFO, 0, EVS_MESSAGE_KEY_CREATED, "Created key %s%s%s on backend %s.", k.id, k.alias ? " alias " : "", strempty(k.alias), b->name);
        return reply_key(msg, &k);
}

typedef enum key_verb {
        KEY_DISABLE,
        KEY_ENABLE,
        KEY_SCHEDULE_DELETION,
        KEY_CANCEL_DELETION,
} key_verb;

static int key_change(sd_bus_message *msg, manager *m, key_verb verb, sd_bus_error *error) {
        static const char *const what[] = { "disable", "enable", "schedule the deletion of", "cancel the deletion of" };
        _cleanup_(kms_key_done) kms_key out = {};
        _cleanup_free_ char *backend = NULL, *key = NULL;
        kms_backend *b = NULL;
        const char *ref;
        uint32_t days = 0;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = verb == KEY_SCHEDULE_DELETION ? sd_bus_message_read(msg, "su", &ref, &days)
                                          : sd_bus_message_read(msg, "s", &ref);
        if (r < 0)
                return r;
        r = kms_ref_split(ref, &backend, &key);
        if (r < 0)
                return evs_bus_error_setf(error, EINVAL, "Invalid key reference '%s'.", ref);
        r = kms_registry_get(m->registry, backend, &b);
        if (r < 0)
                return key_error(error, NULL, -ENOENT, what[verb], ref);

        switch (verb) {
        case KEY_DISABLE:
        case KEY_ENABLE:
                r = kms_key_set_enabled(b, key, verb == KEY_ENABLE, &out);
                break;
        case KEY_SCHEDULE_DELETION:
                r = kms_key_schedule_deletion(b, key, days, &out);
                break;
        case KEY_CANCEL_DELETION:
                r = kms_key_cancel_deletion(b, key, &out);
                break;
        }
        if (r < 0)
                return key_error(error, b, r, what[verb], ref);

        {
                char f_id[64], f_key[300], f_backend[100], f_state[64];
                const char *fields[] = { f_id, f_key, f_backend, f_state, NULL };

                snprintf(f_id, sizeof f_id, "MESSAGE_ID=%s", EVS_MESSAGE_KEY_CHANGED);
                snprintf(f_key, sizeof f_key, "EVS_KEY_ID=%s", out.id);
                snprintf(f_backend, sizeof f_backend, "EVS_BACKEND=%s", b->name);
                snprintf(f_state, sizeof f_state, "EVS_KEY_STATE=%s", kms_key_state_to_string(out.state));
                log_fields(LOG_NOTICE, 0, fields, "Key %s%s%s%s (%s): now %s.", out.id, out.alias ? " (" : "",
                           strempty(out.alias), out.alias ? ")" : "", b->name, kms_key_state_to_string(out.state));
        }
        /* Open volumes keep working; tell the operator which ones will not re-attach. */
        (void) manager_check_open_volumes(m);
        return reply_key(msg, &out);
}

int method_disable_key(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return key_change(msg, userdata, KEY_DISABLE, error);
}

int method_enable_key(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return key_change(msg, userdata, KEY_ENABLE, error);
}

int method_schedule_key_deletion(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return key_change(msg, userdata, KEY_SCHEDULE_DELETION, error);
}

int method_cancel_key_deletion(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        return key_change(msg, userdata, KEY_CANCEL_DELETION, error);
}

/* Rotation. KEY_ROTATION = (uutt) current version, rotation period in days (0 = off), next rotation (usec,
 * 0 = none), last rotation (usec, 0 = never); zeros where the backend does not know. */
static int append_rotation_item(sd_bus_message *reply, const void *item) {
        const kms_key *k = item;

        return sd_bus_message_append(reply, EVS_KEY_ROTATION_SIG, k->version, k->rotation_days,
                                     (uint64_t) k->next_rotation, (uint64_t) k->rotated);
}

static int resolve_ref(manager *m, const char *ref, const char *what, kms_backend **ret_b, char **ret_key,
                       sd_bus_error *error) {
        _cleanup_free_ char *backend = NULL;
        int r;

        r = kms_ref_split(ref, &backend, ret_key);
        if (r < 0)
                return key_error(error, NULL, -EINVAL, what, ref);
        r = kms_registry_get(m->registry, backend, ret_b);
        if (r < 0) {
                *ret_key = mfree(*ret_key);
                return key_error(error, NULL, -ENOENT, what, ref);
        }
        return 0;
}

static void log_rotation(kms_backend *b, const kms_key *k, const char *what) {
        char f_id[64], f_key[300], f_backend[100], f_version[64];
        const char *fields[] = { f_id, f_key, f_backend, f_version, NULL };

        snprintf(f_id, sizeof f_id, "MESSAGE_ID=%s", EVS_MESSAGE_KEY_CHANGED);
        snprintf(f_key, sizeof f_key, "EVS_KEY_ID=%s", k->id);
        snprintf(f_backend, sizeof f_backend, "EVS_BACKEND=%s", b->name);
        snprintf(f_version, sizeof f_version, "EVS_KEY_VERSION=%u", k->version);
        log_fields(LOG_NOTICE, 0, fields, "Key %s%s%s%s (%s): %s.", k->id, k->alias ? " (" : "", strempty(k->alias),
                   k->alias ? ")" : "", b->name, what);
}

int method_rotate_key(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(kms_key_done) kms_key k = {};
        _cleanup_free_ char *key = NULL, *what = NULL;
        kms_backend *b = NULL;
        const char *ref;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "s", &ref);
        if (r < 0)
                return r;
        if (isempty(ref))
                return key_error(error, NULL, -EINVAL, "rotate", ref);
        r = resolve_ref(userdata, ref, "rotate", &b, &key, error);
        if (r < 0)
                return r;
        r = kms_key_rotate(b, key, &k);
        if (r < 0)
                return key_error(error, b, r, "rotate", ref);
        if (asprintf(&what, "rotated, now at version %u", k.version) < 0)
                return -ENOMEM;
        log_rotation(b, &k, what);
        return reply_key(msg, &k);
}

int method_set_key_rotation(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(kms_key_done) kms_key k = {};
        _cleanup_free_ char *key = NULL, *what = NULL;
        kms_backend *b = NULL;
        const char *ref;
        uint32_t days;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "su", &ref, &days);
        if (r < 0)
                return r;
        if (isempty(ref))
                return key_error(error, NULL, -EINVAL, "set the rotation of", ref);
        r = resolve_ref(userdata, ref, "set the rotation of", &b, &key, error);
        if (r < 0)
                return r;
        r = kms_key_set_rotation(b, key, days, &k);
        if (r < 0)
                return key_error(error, b, r, "set the rotation of", ref);
        if (days == 0)
                what = strdup("automatic rotation off");
        else if (asprintf(&what, "automatic rotation every %u days", days) < 0)
                what = NULL;
        if (!what)
                return -ENOMEM;
        log_rotation(b, &k, what);
        return reply_key(msg, &k);
}

int method_get_key_rotation(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_(kms_key_done) kms_key k = {};
        manager *m = userdata;
        kms_backend *b = NULL;
        const char *ref;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(msg, "s", &ref);
        if (r < 0)
                return r;
        {
                _cleanup_free_ char *backend = NULL, *key = NULL;

                /* A backend without key versions has nothing to say: no KMS call for it. */
                if (kms_ref_split(ref, &backend, &key) >= 0 && kms_registry_get(m->registry, backend, &b) >= 0 &&
                    !b->ops->key_rotate)
                        return bus_reply(msg, append_rotation_item, &k);
        }
        r = kms_registry_resolve(m->registry, ref, &b, &k);
        if (r < 0)
                return key_error(error, b, r, "look up", ref);
        return bus_reply(msg, append_rotation_item, &k);
}
