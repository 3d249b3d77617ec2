/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <blkid.h>
#include <ctype.h>
#include <unistd.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <systemd/sd-device.h>

#include "dm.h"
#include "engine.h"
#include "kms-gate.h"
#include "metrics.h"
#include "envelope.h"
#include "errors.h"
#include "evs-messages.h"
#include "log.h"
#include "luks.h"
#include "probe.h"
#include "volume-db.h"
#include "volume-ops.h"
#include "string-util.h"


void volume_view_done(volume_view *v) {
        if (!v)
                return;
        free(v->id);
        free(v->device);
        free(v->mapping);
        free(v->key_id);
        free(v->key_alias);
        free(v->backend);
        free(v->warning);
        free(v->last_error);
        free(v->attached_by);
        *v = (volume_view) { .recovery_keyslot = -1 };
}

void volume_view_array_free(volume_view *v, size_t n) {
        for (size_t i = 0; i < n; i++)
                volume_view_done(&v[i]);
        free(v);
}

/* The reason a backend gave, or the errno's text. */
static const char *backend_reason(kms_backend *b, int r) {
        const char *e = kms_backend_error(b);

        return e ?: strerror(-r);
}

/* Journal entry for an attach, detach or refusal: the fields answer "who opened what, and why not". The
 * macro passes the call site (CODE_FILE/CODE_LINE/CODE_FUNC). */
#define log_volume_event(...) log_volume_event_at(PROJECT_FILE, __LINE__, __func__, __VA_ARGS__)
static void log_volume_event_at(const char *file, int line, const char *func, int level, int error,
                                const char *message_id, const char *result, const char *volume_id,
                                const char *device, const evs_token *t, const char *fmt, ...) _printf_(11, 12);
static void log_volume_event_at(const char *file, int line, const char *func, int level, int error,
                                const char *message_id, const char *result, const char *volume_id,
                                const char *device, const evs_token *t, const char *fmt, ...) {
        char f_id[64], f_vol[96], f_dev[4200], f_key[300], f_alias[200], f_backend[100], f_result[64];
        const char *fields[8];
        size_t n = 0;
        char msg[2048];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);

        snprintf(f_id, sizeof f_id, "MESSAGE_ID=%s", message_id);
        fields[n++] = f_id;
        snprintf(f_vol, sizeof f_vol, "EVS_VOLUME_ID=%s", strempty(volume_id));
        fields[n++] = f_vol;
        snprintf(f_result, sizeof f_result, "EVS_RESULT=%s", result);
        fields[n++] = f_result;
        if (device) {
                snprintf(f_dev, sizeof f_dev, "EVS_DEVICE=%s", device);
                fields[n++] = f_dev;
        }
        if (t) {
                snprintf(f_key, sizeof f_key, "EVS_KEY_ID=%s", t->key_id);
                fields[n++] = f_key;
                if (t->key_alias) {
                        snprintf(f_alias, sizeof f_alias, "EVS_KEY_ALIAS=%s", t->key_alias);
                        fields[n++] = f_alias;
                }
                snprintf(f_backend, sizeof f_backend, "EVS_BACKEND=%s", t->backend);
                fields[n++] = f_backend;
        }
        fields[n] = NULL;
        log_fields_internal(level, error, file, line, func, fields, "%s", msg);
}

/* The disk serial the host sees for a block device ("" when none, or not a block device). */
static int device_serial(const char *device, char **ret) {
        _cleanup_(sd_device_unrefp) sd_device *d = NULL;
        const char *s = NULL;
        struct stat st;
        size_t n;

        *ret = NULL;
        if (stat(device, &st) < 0 || !S_ISBLK(st.st_mode))
                return 0;
        if (sd_device_new_from_devnum(&d, 'b', st.st_rdev) < 0)
                return 0;
        if (sd_device_get_sysattr_value(d, "serial", &s) < 0 &&
            sd_device_get_property_value(d, "ID_SERIAL_SHORT", &s) < 0)
                return 0;
        n = strlen(s);
        while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\n'))
                n--;
        if (n == 0)
                return 0;
        *ret = strndup(s, n);
        return *ret ? 0 : -ENOMEM;
}

/* Virtio cuts serials at 20 bytes: a serial matches when it is the volume id or its 20-byte prefix. */
static bool serial_matches(const char *serial, const char *volume_id) {
        size_t n = strlen(serial);

        if (streq(serial, volume_id))
                return true;
        return n == 20 && strlen(volume_id) > 20 && strncmp(serial, volume_id, 20) == 0;
}

/* How a request reads a volume's header: to act on the volume, kept loaded for an activation, or only to
 * show it (a read that waits for the disk at most VOLUME_VIEW_WAIT_USEC: a disk whose I/O hangs is shown
 * as such, rather than holding the request until the disk answers). */
typedef enum header_read {
        HEADER_READ,
        HEADER_KEEP,
        HEADER_VIEW,
} header_read;

static int read_volume_header(const char *device, header_read how, luks_info *ret, const char **ret_reason) {
        if (how == HEADER_VIEW)
                return luks_read_within(device, VOLUME_VIEW_WAIT_USEC, ret, ret_reason);
        return (how == HEADER_KEEP ? luks_read_keep : luks_read)(device, ret, ret_reason);
}

/* The device whose LUKS2 label is @label (a blkid scan), as a probe_fn: its own blkid cache, shared with no
 * other thread. */
static int label_search(const char *label, void **ret) {
        char *found = blkid_evaluate_tag("LABEL", label, NULL);

        if (!found)
                return -ENXIO;
        *ret = found;
        return 0;
}

/* Finds the device holding volume @id: the recorded device, the backing device of its open mapping,
 * else a blkid scan by LUKS2 label. Each candidate is confirmed from its header, which is handed back
 * (kept loaded for HEADER_KEEP) so that nobody reads it again. -ETIMEDOUT (HEADER_VIEW) when a candidate's
 * disk does not answer: no scan then, which would wait for that disk too; -ETIME when the scan itself did not
 * end in time (some disk does not answer). */
static int find_device_by_id(manager *m, const char *id, header_read how, char **ret, luks_info *ret_info) {
        _cleanup_(volume_record_done) volume_record rec = {};
        _cleanup_(dm_mapping_info_done) dm_mapping_info dmi = {};
        _cleanup_free_ char *mapping = NULL;
        const char *candidates[3] = {};
        char *found;
        size_t n = 0;

        if (volume_db_load(m->config.state_dir, id, &rec) >= 0 && rec.device)
                candidates[n++] = rec.device;
        else if (volume_mapping_name(id, &mapping) >= 0 && dm_mapping_get(mapping, &dmi) >= 0 && dmi.backing_device)
                candidates[n++] = dmi.backing_device;

        for (size_t i = 0; i < n; i++) {
                _cleanup_(luks_info_done) luks_info info = {};
                const char *reason;
                int r = read_volume_header(candidates[i], how, &info, &reason);

                if (r == -ETIMEDOUT)
                        return r;
                if (r >= 0 && streq_ptr(info.label, id) && streq_ptr(info.subsystem, EVS_LUKS_SUBSYSTEM)) {
                        *ret = strdup(candidates[i]);
                        if (!*ret)
                                return -ENOMEM;
                        *ret_info = info;
                        info = (luks_info) {};
                        return 0;
                }
        }
        if (n > 0 && !mapping && volume_mapping_name(id, &mapping) >= 0 && dm_mapping_get(mapping, &dmi) >= 0 &&
            dmi.backing_device && !streq(dmi.backing_device, candidates[0])) {
                /* The record is stale: the open mapping knows better. */
                _cleanup_(luks_info_done) luks_info info = {};
                const char *reason;
                int r = read_volume_header(dmi.backing_device, how, &info, &reason);

                if (r == -ETIMEDOUT)
                        return r;
                if (r >= 0 && streq_ptr(info.label, id) && streq_ptr(info.subsystem, EVS_LUKS_SUBSYSTEM)) {
                        *ret = strdup(dmi.backing_device);
                        if (!*ret)
                                return -ENOMEM;
                        *ret_info = info;
                        info = (luks_info) {};
                        return 0;
                }
        }

        /* The scan reads every disk, so for a view it waits on one whose I/O hangs like a header read does. */
        void *p = NULL;
        int r = how == HEADER_VIEW ? probe_run(label_search, free, id, VOLUME_VIEW_WAIT_USEC, &p)
                                   : label_search(id, &p);

        if (r < 0 && r != -ENXIO) /* -ETIMEDOUT, or -EAGAIN: too many reads wait already */
                return r == -ENOMEM ? r : -ETIME;
        found = p;
        if (found) {
                _cleanup_(luks_info_done) luks_info info = {};
                const char *reason;

                if (read_volume_header(found, how, &info, &reason) >= 0 &&
                    streq_ptr(info.subsystem, EVS_LUKS_SUBSYSTEM)) {
                        *ret = found;
                        *ret_info = info;
                        info = (luks_info) {};
                        return 0;
                }
                free(found);
        }
        return -ENXIO;
}

/* The reason of a failed header read, as one line. */
static int header_error(sd_bus_error *error, const char *device, int r, const char *reason) {
        if (r == -ENODATA)
                return evs_bus_error_setf(error, ENODATA, "%s is not an EVS volume: %s.", device, reason);
        if (r == -EBADMSG)
                return evs_bus_error_setf(error, EBADMSG, "%s has a malformed evs-kms token: %s.", device, reason);
        if (r == -ENOENT)
                return evs_bus_error_setf(error, ENXIO, "Device %s does not exist.", device);
        if (r == -ETIMEDOUT)
                return evs_bus_error_setf(error, ETIMEDOUT,
                                          "%s does not answer: its LUKS2 header could not be read within %" PRIu64
                                          " s.",
                                          device, VOLUME_VIEW_WAIT_USEC / USEC_PER_SEC);
        return evs_bus_error_setf(error, -r, "Cannot read the LUKS2 header of %s: %s.", device, strerror(-r));
}

/* Resolves a volume id or a device path to a device and its header, read as @how says. */
static int resolve_as(manager *m, const char *ref, header_read how, char **ret_device, luks_info *ret_info,
                      sd_bus_error *error) {
        _cleanup_free_ char *device = NULL;
        const char *reason = NULL;
        int r;

        if (isempty(ref))
                return evs_bus_error_setf(error, EINVAL, "No volume given.");
        if (ref[0] == '/') {
                device = strdup(ref);
                if (!device)
                        return -ENOMEM;
                r = read_volume_header(device, how, ret_info, &reason);
                if (r < 0)
                        return header_error(error, device, r, reason);
        } else {
                if (!volume_id_valid(ref))
                        return evs_bus_error_setf(error, EINVAL, "Invalid volume id '%s': " VOLUME_ID_RULE ".", ref);
                r = find_device_by_id(m, ref, how, &device, ret_info);
                if (r == -ENOMEM)
                        return r;
                if (r == -ETIMEDOUT)
                        return evs_bus_error_setf(error, ETIMEDOUT,
                                                  "The disk of volume %s does not answer: its header could not be "
                                                  "read within %" PRIu64 " s.",
                                                  ref, VOLUME_VIEW_WAIT_USEC / USEC_PER_SEC);
                if (r == -ETIME) { /* an ETIMEDOUT to the caller; -ETIME tells volume_get() which wait it was */
                        (void) evs_bus_error_setf(error, ETIMEDOUT,
                                                  "No device holding volume %s was found within %" PRIu64
                                                  " s: the search by label waits on a disk that does not answer.",
                                                  ref, VOLUME_VIEW_WAIT_USEC / USEC_PER_SEC);
                        return -ETIME;
                }
                if (r < 0)
                        return evs_bus_error_setf(error, ENXIO, "No device holds volume %s.", ref);
        }

        if (!streq_ptr(ret_info->subsystem, EVS_LUKS_SUBSYSTEM)) {
                luks_info_done(ret_info);
                return evs_bus_error_setf(error, ENODATA,
                                          "%s is LUKS2 but not an EVS volume (subsystem is not \"evs\").", device);
        }
        if (ret_info->damaged) /* never repaired behind the operator's back */
                log_warning("%s: %s; evsctl volume repair %s restores it.", device, ret_info->damaged, device);
        *ret_device = TAKE_PTR(device);
        return 0;
}

/* Kept loaded when @keep. */
static int resolve(manager *m, const char *ref, bool keep, char **ret_device, luks_info *ret_info,
                   sd_bus_error *error) {
        return resolve_as(m, ref, keep ? HEADER_KEEP : HEADER_READ, ret_device, ret_info, error);
}

int volume_resolve(manager *m, const char *ref, char **ret_device, luks_info *ret_info, sd_bus_error *error) {
        return resolve(m, ref, false, ret_device, ret_info, error);
}

/* systemd's unit-name escaping of a mapping name (systemd-cryptsetup@NAME.service). */
static int unit_escape(const char *name, char **ret) {
        _cleanup_free_ char *e = malloc(strlen(name) * 4 + 1);
        char *p;

        if (!e)
                return -ENOMEM;
        p = e;
        for (const char *c = name; *c; c++) {
                if (*c == '/')
                        *p++ = '-';
                else if ((*c == '.' && c == name) ||
                         !(isalnum((unsigned char) *c) || *c == ':' || *c == '_' || *c == '.'))
                        p += sprintf(p, "\\x%02x", (unsigned char) *c);
                else
                        *p++ = *c;
        }
        *p = 0;
        *ret = TAKE_PTR(e);
        return 0;
}

/* The systemd-cryptsetup@ unit that owns mapping @name (crypttab), as "systemd-cryptsetup@NAME.service"; NULL
 * when none. The unit's file is generated from /etc/crypttab (or written by hand); no call to systemd. */
static int cryptsetup_unit(const char *name, char **ret) {
        static const char *const dirs[] = { "/run/systemd/generator", "/run/systemd/generator.early",
                                            "/run/systemd/generator.late", "/etc/systemd/system",
                                            "/run/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system" };
        _cleanup_free_ char *esc = NULL, *unit = NULL;
        int r;

        *ret = NULL;
        r = unit_escape(name, &esc);
        if (r < 0)
                return r;
        if (asprintf(&unit, "systemd-cryptsetup@%s.service", esc) < 0)
                return -ENOMEM;
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                _cleanup_free_ char *path = NULL;

                if (asprintf(&path, "%s/%s", dirs[i], unit) < 0)
                        return -ENOMEM;
                if (access(path, F_OK) == 0) {
                        *ret = TAKE_PTR(unit);
                        return 0;
                }
        }
        return 0;
}

/* The open mapping of volume @id: evs-ID (unless @own_absent: the caller has just seen none), else one of
 * any name whose dm UUID carries the volume's LUKS UUID (made by systemd-cryptsetup from crypttab, or by
 * hand), looked for among the mappings on @device, the volume's disk, when given and present
 * (dm_find_luks_mapping()). *ret_attached_by: "systemd-cryptsetup" when a systemd-cryptsetup@ unit owns it
 * (*ret_unit names the unit), the mapping's name when another tool made it, NULL when it is evs-cryptd's
 * own; *ret_info (may be NULL) what dm_mapping_get() said of it. -ENOENT when nothing is open. */
static int find_open_mapping(const char *id, const char *luks_uuid, const char *device, bool own_absent,
                             char **ret_name, char **ret_attached_by, char **ret_unit, dm_mapping_info *ret_info) {
        _cleanup_(dm_mapping_info_done) dm_mapping_info dmi = {};
        _cleanup_free_ char *name = NULL, *unit = NULL, *by = NULL;
        int r;

        r = volume_mapping_name(id, &name);
        if (r < 0)
                return r;
        if (own_absent || dm_mapping_get(name, &dmi) < 0 || !dmi.exists) {
                name = mfree(name);
                if (!luks_uuid || dm_find_luks_mapping(luks_uuid, device, &name) < 0)
                        return -ENOENT;
                dm_mapping_info_done(&dmi);
                if (dm_mapping_get(name, &dmi) < 0 || !dmi.exists)
                        return -ENOENT;
        }
        /* A mapping without a live table (an attach killed between creating the device and loading its
         * table) is no open volume: the next attach or detach removes it. */
        if (dm_mapping_is_stale(&dmi))
                return -ENOENT;
        r = cryptsetup_unit(name, &unit);
        if (r < 0)
                return r;
        if (unit)
                by = strdup("systemd-cryptsetup");
        else if (strncmp(name, EVS_MAPPING_PREFIX, strlen(EVS_MAPPING_PREFIX)) != 0 ||
                 !streq(name + strlen(EVS_MAPPING_PREFIX), id))
                by = strdup(name);
        if ((unit || by) && !by)
                return -ENOMEM;
        *ret_name = TAKE_PTR(name);
        if (ret_attached_by)
                *ret_attached_by = TAKE_PTR(by);
        if (ret_unit)
                *ret_unit = TAKE_PTR(unit);
        if (ret_info) {
                *ret_info = dmi;
                dmi = (dm_mapping_info) {};
        }
        return 0;
}

/* Sets the mapping, state and attached_by of @v from find_open_mapping(). */
static int view_set_mapping(volume_view *v, const char *id, const char *luks_uuid, const char *device) {
        _cleanup_free_ char *name = NULL, *by = NULL;
        int r;

        r = find_open_mapping(id, luks_uuid, device, false, &name, &by, NULL, NULL);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        free(v->mapping);
        if (asprintf(&v->mapping, "/dev/mapper/%s", name) < 0)
                return -ENOMEM;
        v->state = "attached";
        free(v->attached_by);
        v->attached_by = TAKE_PTR(by);
        return 0;
}

/* "N keyslots not bound to the CMK", appended to @warning. */
static int warn_unbound(char **warning, unsigned n) {
        char *w;

        if (n == 0)
                return 0;
        if (asprintf(&w, "%s%s%u keyslot%s not bound to the CMK", strempty(*warning), *warning ? "; " : "", n,
                     n == 1 ? "" : "s") < 0)
                return -ENOMEM;
        free(*warning);
        *warning = w;
        return 0;
}

/* The CMK's state for a view: what the KMS said in the last seconds, else one describe when the
 * backend answers promptly, else the last state seen (or "unavailable"): listing volumes never waits
 * on a slow KMS. */
static const char *view_key_state(manager *m, const evs_token *t) {
        _cleanup_(kms_key_done) kms_key key = {};
        kms_key_state st;
        usec_t when = 0;
        kms_backend *b;
        bool seen;
        int r;

        if (kms_registry_get(m->registry, t->backend, &b) < 0)
                return "unavailable";
        seen = kms_gate_key_state_seen(b->gate, t->key_id, &st, &when) >= 0;
        if (seen && now_monotonic() - when < 2 * USEC_PER_SEC)
                return kms_key_state_to_string(st);
        if (!kms_backend_healthy(b))
                return seen ? kms_key_state_to_string(st) : "unavailable";
        r = kms_key_get(b, t->key_id, &key);
        return r >= 0 ? kms_key_state_to_string(key.state) : r == -ENOENT ? "destroyed" : "unavailable";
}

/* The version the token was wrapped with (a local token without evs_key_version is version 1, like its EVL1
 * blob; so is a kmip one, written before KMIP keys had versions: its wrapped key names the CMK's first key) and
 * the CMK's newest version as the last answer showed it (view_key_state() just asked if it could). */
static void view_key_versions(manager *m, const evs_token *t, volume_view *v) {
        kms_backend *b;

        if (kms_registry_get(m->registry, t->backend, &b) < 0)
                return;
        v->key_version = t->key_version;
        if (v->key_version == 0 && (streq(b->ops->type, "local") || streq(b->ops->type, "kmip")))
                v->key_version = 1;
        if (kms_key_version_seen(b, t->key_id, &v->key_latest_version) >= 0)
                return;
        v->key_latest_version = 0;
        if (b->ops->key_rotate && kms_backend_healthy(b)) {
                _cleanup_(kms_key_done) kms_key key = {};

                if (kms_key_get(b, t->key_id, &key) >= 0)
                        v->key_latest_version = key.version;
        }
}

/* Fills the live parts of a view: mapping, key state, warning. */
static int fill_view(manager *m, const char *id, const char *device, const evs_token *t, const char *last_error,
                     volume_view *ret) {
        _cleanup_(volume_view_done) volume_view v = { .recovery_keyslot = -1 };
        _cleanup_(dm_mapping_info_done) dm_mapping_info dmi = {};
        int r;

        if ((r = free_and_strdup_nonempty(&v.id, id)) < 0 || (r = free_and_strdup_nonempty(&v.device, device)) < 0 ||
            (r = free_and_strdup_nonempty(&v.last_error, last_error)) < 0)
                return r;
        r = volume_mapping_name(id, &v.mapping);
        if (r < 0)
                return r;
        r = dm_mapping_get(v.mapping, &dmi);
        if (r < 0 || !dmi.exists || dm_mapping_is_stale(&dmi)) /* no table: not attached (find_open_mapping()) */
                v.mapping = mfree(v.mapping);
        else {
                char *path;

                if (asprintf(&path, "/dev/mapper/%s", v.mapping) < 0)
                        return -ENOMEM;
                free(v.mapping);
                v.mapping = path;
        }
        v.state = v.mapping ? "attached" : "detached";

        if (t) {
                if ((r = free_and_strdup_nonempty(&v.key_id, t->key_id)) < 0 ||
                    (r = free_and_strdup_nonempty(&v.key_alias, t->key_alias)) < 0 ||
                    (r = free_and_strdup_nonempty(&v.backend, t->backend)) < 0)
                        return r;
                v.key_state = view_key_state(m, t);
                view_key_versions(m, t, &v);
                if (v.mapping && !streq(v.key_state, "enabled") &&
                    asprintf(&v.warning, "key %s: will not re-attach", v.key_state) < 0)
                        return -ENOMEM;
        }
        *ret = v;
        v = (volume_view) {};
        return 0;
}

typedef struct record_seen {
        const char *device;
        const evs_token *token;
        const char *last_error;
        uint64_t created;
} record_seen;

static int record_seen_apply(volume_record *rec, int load_result, void *userdata) {
        const record_seen *s = userdata;
        int r;

        if (s->created > 0)
                rec->created = s->created;
        else if (load_result == -ENOENT)
                rec->created = now_realtime();
        if ((r = free_and_strdup(&rec->device, s->device)) < 0 ||
            (r = free_and_strdup(&rec->last_error, s->last_error)) < 0)
                return r;
        if (s->token && ((r = free_and_strdup(&rec->key_id, s->token->key_id)) < 0 ||
                         (r = free_and_strdup(&rec->key_alias, s->token->key_alias)) < 0 ||
                         (r = free_and_strdup(&rec->backend, s->token->backend)) < 0))
                return r;
        return 0;
}

/* Records what was seen of volume @id. @created: when it was formatted (volume create), 0 to keep the
 * record's; a record made now for the first time (a volume made elsewhere) is created now. The write gives
 * up the engine lock (volume_db_update()). */
static int save_record(manager *m, const char *id, const char *device, const evs_token *t, const char *last_error,
                       uint64_t created) {
        record_seen s = { .device = device, .token = t, .last_error = last_error, .created = created };

        return volume_db_update(m->config.state_dir, id, record_seen_apply, &s);
}

/* Everything volume_create() checks before it writes anything: arguments, the CMK's state, signatures on
 * the device. On success *ret_backend and *ret_key describe the CMK. */
static int create_check(manager *m, const char *device, const char *volume_id, const char *key_ref, bool force,
                        kms_backend **ret_backend, kms_key *ret_key, sd_bus_error *error) {
        _cleanup_(kms_key_done) kms_key key = {};
        _cleanup_free_ char *what = NULL;
        kms_backend *b = NULL;
        int r;

        if (isempty(device) || device[0] != '/')
                return evs_bus_error_setf(error, EINVAL, "Device must be an absolute path: '%s'.", strempty(device));
        if (!volume_id_valid(volume_id))
                return evs_bus_error_setf(error, EINVAL, "Invalid volume id '%s': " VOLUME_ID_RULE ".",
                                          strempty(volume_id));

        r = kms_registry_resolve(m->registry, empty_to_null(key_ref), /* "" on the bus: not given */ &b, &key);
        if (r == -ENOENT && !b)
                return evs_bus_error_setf(error, ENOENT, "Unknown KMS backend in key reference '%s'.", key_ref);
        if (r == -EINVAL)
                return evs_bus_error_setf(error, EINVAL, "Invalid key reference '%s'.", key_ref);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Key %s: %s.", isempty(key_ref) ? KMS_DEFAULT_KEY_ALIAS : key_ref,
                                          backend_reason(b, r));
        r = kms_key_state_to_errno(key.state);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Refusing to create volume %s: key %s%s%s%s is %s.", volume_id,
                                          KMS_KEY_AS_TYPED(key_ref, key.id), kms_key_state_to_string(key.state));

        /* Refuse before wrapping anything: nothing on a disk is lost by accident. */
        r = luks_probe_signature(device, &what);
        if (r == -ENOTBLK)
                return evs_bus_error_setf(error, ENOTBLK, "Cannot use %s: it is neither a block device nor an image file.",
                                          device);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot probe %s: %s.", device, strerror(-r));
        if (r > 0 && !force)
                return evs_bus_error_setf(error, ENOTEMPTY,
                                               "Refusing to format %s: it holds data (%s). Use --force to destroy it.",
                                               device, what);
        *ret_backend = b;
        *ret_key = key;
        key = (kms_key) {};
        return 0;
}

int volume_create_check(manager *m, const char *device, const char *volume_id, const char *key_ref, bool force,
                        sd_bus_error *error) {
        _cleanup_(kms_key_done) kms_key key = {};
        kms_backend *b = NULL;

        return create_check(m, device, volume_id, key_ref, force, &b, &key, error);
}

int volume_create_keyed(manager *m, const char *device, const char *volume_id, const char *key_ref, bool force,
                        secret **ret_data_key, volume_view *ret, sd_bus_error *error) {
        _cleanup_(kms_key_done) kms_key key = {};
        _cleanup_(secret_freep) secret *data_key = NULL;
        _cleanup_(evs_token_done) evs_token t = {};
        _cleanup_free_ char *what = NULL;
        kms_backend *b = NULL;
        uint64_t created;
        int r;

        _cleanup_(engine_volume_unlockp) void *vlock = NULL;

        r = create_check(m, device, volume_id, key_ref, force, &b, &key, error);
        if (r < 0)
                return r;
        vlock = engine_volume_lock(volume_id);

        r = envelope_seal(b, &key, volume_id, &data_key, &t);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot wrap a data key with key %s: %s.", key.id,
                                               backend_reason(b, r));

        what = mfree(what);
        r = luks_format(device, volume_id, data_key, &t, force, &what);
        if (r == -ENOTEMPTY)
                return evs_bus_error_setf(error, ENOTEMPTY,
                                               "Refusing to format %s: it holds data (%s). Use --force to destroy it.",
                                               device, what);
        if (r == -EFBIG)
                return evs_bus_error_setf(error, EINVAL, "Device %s is too small for a LUKS2 volume (needs > 16 MiB).",
                                               device);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot format %s: %s.", device, strerror(-r));

        created = now_realtime();
        r = save_record(m, volume_id, device, &t, NULL, created);
        if (r < 0)
                log_warning_errno(r, "Cannot record volume %s: %m", volume_id);

        log_volume_event(LOG_INFO, 0, EVS_MESSAGE_VOLUME_CREATED, "created", volume_id, device, &t,
                         "Created volume %s on %s with key %s (%s).", volume_id, device, t.key_id, t.backend);
        r = fill_view(m, volume_id, device, &t, NULL, ret);
        if (r < 0)
                return r;
        ret->created = created;
        if (ret_data_key)
                *ret_data_key = TAKE_PTR(data_key);
        return 0;
}

int volume_create(manager *m, const char *device, const char *volume_id, const char *key_ref, bool force,
                  volume_view *ret, sd_bus_error *error) {
        return volume_create_keyed(m, device, volume_id, key_ref, force, NULL, ret, error);
}

/* Records, logs and returns a refusal (the volume's key or identity says no) or a failure (busy, no
 * device-mapper, an error of the system) with its one-line reason, logged at the caller's line. With
 * @check (evsctl volume check) it only returns the reason: nothing is recorded or logged. */
#define refuse(check, ...)                                                                                           \
        refuse_at(PROJECT_FILE, __LINE__, __func__, check, EVS_MESSAGE_ATTACH_REFUSED, "refused", __VA_ARGS__)
#define attach_failed(check, ...)                                                                                    \
        refuse_at(PROJECT_FILE, __LINE__, __func__, check, EVS_MESSAGE_ATTACH_FAILED, "failed", __VA_ARGS__)
static int refuse_at(const char *file, int line, const char *func, bool check, const char *message_id,
                     const char *result, manager *m, const char *id, const char *device, const evs_token *t, int r,
                     sd_bus_error *error, const char *fmt, ...) _printf_(13, 14);
static int refuse_at(const char *file, int line, const char *func, bool check, const char *message_id,
                     const char *result, manager *m, const char *id, const char *device, const evs_token *t, int r,
                     sd_bus_error *error, const char *fmt, ...) {
        char msg[1024];
        va_list ap;
        int k;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);

        if (check)
                return evs_bus_error_setf(error, -r, "%s", msg);
        if (volume_id_valid(id)) {
                k = save_record(m, id, device, t, msg, 0);
                if (k < 0)
                        log_warning_errno(k, "Cannot record the refusal of volume %s: %m", id);
        }
        log_volume_event_at(file, line, func, LOG_WARNING, r, message_id, result, id, device, t, "%s", msg);
        return evs_bus_error_setf(error, -r, "%s", msg);
}

/* The view of a volume an attach has just opened or found open, from what the attach knows: no
 * device-mapper or KMS call. */
static int attached_view(const char *id, const char *device, const char *mapping, const luks_info *info,
                         const char *key_state, volume_view *ret) {
        _cleanup_(volume_view_done) volume_view v = { .unbound_keyslots = info->n_unbound_keyslots,
                                                      .recovery_keyslot = info->recovery_keyslot };
        const evs_token *t = &info->token;
        int r;

        if ((r = free_and_strdup_nonempty(&v.id, id)) < 0 || (r = free_and_strdup_nonempty(&v.device, device)) < 0 ||
            (r = free_and_strdup_nonempty(&v.key_id, t->key_id)) < 0 ||
            (r = free_and_strdup_nonempty(&v.key_alias, t->key_alias)) < 0 ||
            (r = free_and_strdup_nonempty(&v.backend, t->backend)) < 0)
                return r;
        if (asprintf(&v.mapping, "/dev/mapper/%s", mapping) < 0)
                return -ENOMEM;
        v.state = "attached";
        v.key_state = key_state;
        if (!streq(key_state, "enabled") && !streq(key_state, "unknown") &&
            asprintf(&v.warning, "key %s: will not re-attach", key_state) < 0)
                return -ENOMEM;
        r = warn_unbound(&v.warning, info->n_unbound_keyslots);
        if (r < 0)
                return r;
        *ret = v;
        v = (volume_view) {};
        return 0;
}

/* Journal entry: volume @id has keyslots no evs-kms token is bound to (EVS_KEYSLOTS lists them). */
static void log_unbound_keyslots(int level, const char *result, const char *id, const char *device,
                                 const luks_info *info) {
        _cleanup_free_ int *slots = NULL;
        char list[256] = "", f_id[64], f_vol[96], f_res[64], f_dev[4200], f_key[300], f_slots[300];
        const char *fields[7];
        size_t n = 0, k = 0;

        if (info->cd)
                (void) luks_unbound_keyslots(info->cd, &slots, &n, NULL);
        for (size_t i = 0; slots && i < n; i++)
                k += (size_t) snprintf(list + k, k < sizeof list ? sizeof list - k : 0, "%s%d", i ? "," : "",
                                       slots[i]);
        snprintf(f_id, sizeof f_id, "MESSAGE_ID=%s", EVS_MESSAGE_UNBOUND_KEYSLOTS);
        snprintf(f_vol, sizeof f_vol, "EVS_VOLUME_ID=%s", id);
        snprintf(f_res, sizeof f_res, "EVS_RESULT=%s", result);
        snprintf(f_dev, sizeof f_dev, "EVS_DEVICE=%s", device);
        snprintf(f_key, sizeof f_key, "EVS_KEY_ID=%s", info->token.key_id);
        snprintf(f_slots, sizeof f_slots, "EVS_KEYSLOTS=%s", list);
        fields[0] = f_id, fields[1] = f_vol, fields[2] = f_res, fields[3] = f_dev, fields[4] = f_key;
        fields[5] = f_slots, fields[6] = NULL;
        log_fields_internal(level, 0, PROJECT_FILE, __LINE__, __func__, fields,
                            "Volume %s on %s has %u keyslot%s not bound to the CMK (%s): %s open it without key %s%s.",
                            id, device, info->n_unbound_keyslots, info->n_unbound_keyslots == 1 ? "" : "s", list,
                            info->n_unbound_keyslots == 1 ? "it opens" : "they", info->token.key_id,
                            streq(result, "refused") ? "; attach refused (RefuseUnboundKeyslots=yes)" : "");
}

/* What a check knows of the volume from its header, before asking anything else. */
static int check_fill(volume_check_result *ck, manager *m, const char *id, const char *device, const luks_info *info) {
        volume_view *v = &ck->view;
        int r;

        if ((r = free_and_strdup_nonempty(&v->id, id)) < 0 || (r = free_and_strdup_nonempty(&v->device, device)) < 0 ||
            (r = free_and_strdup_nonempty(&v->key_id, info->token.key_id)) < 0 ||
            (r = free_and_strdup_nonempty(&v->key_alias, info->token.key_alias)) < 0 ||
            (r = free_and_strdup_nonempty(&v->backend, info->token.backend)) < 0)
                return r;
        v->unbound_keyslots = info->n_unbound_keyslots;
        v->recovery_keyslot = info->recovery_keyslot;
        r = warn_unbound(&v->warning, info->n_unbound_keyslots);
        if (r < 0)
                return r;
        v->state = "detached";
        (void) m;
        return view_set_mapping(v, id, info->uuid, device);
}

/* The attach, and with @check (volume_check()) every rule of it without opening anything: the same
 * header, identity, serial, keyslot, mapping and KMS checks in the same order, the unwrapped key wiped.
 * In check mode an open mapping does not end the checks (the answer is what an attach after a detach
 * would say), and the lack of device-mapper is reported only when nothing else refuses. */
static int attach_locked(manager *m, const char *ref, bool check, volume_view *ret, bool *ret_already,
                         volume_check_result *ck, sd_bus_error *error) {
        _cleanup_(luks_info_done) luks_info info = {};
        _cleanup_(dm_mapping_info_done) dm_mapping_info dmi = {};
        _cleanup_(engine_volume_unlockp) void *vlock = NULL;
        _cleanup_(secret_freep) secret *data_key = NULL;
        _cleanup_free_ char *device = NULL, *serial = NULL, *mapping = NULL;
        _cleanup_(kms_key_done) kms_key key = {};
        const evs_token *t;
        kms_backend *b = NULL;
        kms_key_state st;
        const char *id, *reason = NULL;
        int r, token_id;

        /* The header, loaded once and kept for the activation. */
        r = resolve(m, ref, true, &device, &info, error);
        if (r < 0)
                return r;
        id = info.label;
        t = &info.token;
        if (ck) {
                r = check_fill(ck, m, id, device, &info);
                if (r < 0)
                        return r;
        }

        if (info.damaged) /* activating would let libcryptsetup rewrite it: only volume repair may */
                return refuse(check, m, id, device, t, -EUCLEAN, error,
                              "Refusing to attach volume %s: %s; evsctl volume repair %s restores it.", id,
                              info.damaged, device);
        if (!volume_label_valid(id))
                return refuse(check, m, NULL, device, t, -EMEDIUMTYPE, error,
                              "Refusing to attach %s: its LUKS2 label is not a valid volume id.", device);
        if (!streq(t->volume_id, id))
                return refuse(
                        check, m, id, device, t, -EMEDIUMTYPE, error,
                        "Refusing to attach volume %s: volume id mismatch, the key token on %s belongs to volume %s.",
                        id, device, t->volume_id);
        if (ref[0] != '/' && !streq(ref, id))
                return refuse(check, m, id, device, t, -EMEDIUMTYPE, error,
                              "Refusing to attach volume %s: volume id mismatch, %s holds volume %s.", ref, device, id);
        r = device_serial(device, &serial);
        if (r < 0)
                return r;
        if (serial && !serial_matches(serial, id))
                return refuse(check, m, id, device, t, -EMEDIUMTYPE, error,
                              "Refusing to attach volume %s: volume id mismatch, the disk serial of %s is %s.", id,
                              device, serial);

        /* One operation at a time on this volume: a second attach waits here, then finds it open. */
        vlock = engine_volume_lock(id);

        r = volume_mapping_name(id, &mapping);
        if (r < 0)
                return r;
        r = dm_mapping_get(mapping, &dmi);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot inspect mapping %s: %s.", mapping, strerror(-r));
        if (dm_mapping_is_stale(&dmi) && check)
                dmi.exists = false; /* the attach would remove it; a check changes nothing */
        else if (dm_mapping_is_stale(&dmi)) {
                /* Left by an attach killed half-way: not open, only in the way. */
                r = dm_mapping_remove(mapping);
                if (r < 0 && r != -ENODEV)
                        return attach_failed(check, m, id, device, t, r, error,
                                             "Cannot attach volume %s: cannot remove the leftover mapping %s of an "
                                             "interrupted attach: %s.", id, mapping, strerror(-r));
                log_notice("Removed mapping %s, which an interrupted attach left without a table.", mapping);
                dmi.exists = false;
        }
        if (dmi.exists) {
                if (dmi.backing_device && !dm_same_device(dmi.backing_device, device))
                        return attach_failed(check, m, id, device, t, -EBUSY, error,
                                             "Mapping %s is already open on another device (%s).", mapping,
                                             dmi.backing_device);
                if (!check) {
                        *ret_already = true;
                        /* No KMS call: the state shown is the last one the KMS gave (the unwrap that opened
                         * it, a describe, the key watch), however old, or "unknown" before it gave any (just
                         * after a restart, until the key watch's first look). */
                        if (kms_registry_get(m->registry, t->backend, &b) < 0 ||
                            kms_key_state_seen(b, t->key_id, &st) < 0)
                                return attached_view(id, device, mapping, &info, "unknown", ret);
                        return attached_view(id, device, mapping, &info, kms_key_state_to_string(st), ret);
                }
        }

        /* Keyslots that open the volume without the CMK. */
        if (info.n_unbound_keyslots > 0) {
                char what[64];

                snprintf(what, sizeof what, "%u keyslot%s not bound to the CMK", info.n_unbound_keyslots,
                         info.n_unbound_keyslots == 1 ? "" : "s");
                if (m->config.refuse_unbound_keyslots) {
                        if (!check)
                                log_unbound_keyslots(LOG_WARNING, "refused", id, device, &info);
                        return refuse(check, m, id, device, t, -ENOTUNIQ, error,
                                      "Refusing to attach volume %s: %s (they open it without key %s; "
                                      "RefuseUnboundKeyslots=yes).",
                                      id, what, t->key_id);
                }
                if (!check)
                        log_unbound_keyslots(LOG_WARNING, "warning", id, device, &info);
        }

        if (!dmi.exists) {
                /* Open under another name (crypttab, by hand): attached already, never a second mapping. */
                _cleanup_free_ char *other = NULL, *by = NULL;

                if (find_open_mapping(id, info.uuid, device, true, &other, &by, NULL, NULL) >= 0) {
                        if (check) {
                                ck->view.state = "attached";
                                free(ck->view.mapping);
                                ck->view.mapping = NULL;
                                if (asprintf(&ck->view.mapping, "/dev/mapper/%s", other) < 0)
                                        return -ENOMEM;
                                free(ck->view.attached_by);
                                ck->view.attached_by = TAKE_PTR(by);
                        } else {
                                *ret_already = true;
                                r = fill_view(m, id, device, t, NULL, ret);
                                if (r < 0)
                                        return r;
                                ret->unbound_keyslots = info.n_unbound_keyslots;
                                ret->recovery_keyslot = info.recovery_keyslot;
                                r = view_set_mapping(ret, id, info.uuid, device);
                                if (r < 0)
                                        return r;
                                return warn_unbound(&ret->warning, info.n_unbound_keyslots);
                        }
                }
        }

        if (!check && !dm_available())
                return attach_failed(check, m, id, device, t, -EOPNOTSUPP, error,
                                     "Cannot attach volume %s: this kernel has no device-mapper (dm_mod, dm_crypt).", id);

        r = kms_registry_get(m->registry, t->backend, &b);
        if (r < 0)
                return refuse(check, m, id, device, t, -ENOENT, error,
                              "Refusing to attach volume %s: its token names KMS backend %s, which is not configured.",
                              id, t->backend);

        /* The KMS call, with the engine lock given up: other volumes go on meanwhile. */
        token_id = info.token_id;
        r = envelope_open(b, t, id, &key, &data_key);
        if (r < 0 && r != -EMEDIUMTYPE) {
                /* Several tokens exist only after an interrupted rewrap; any that unwraps will do. The
                 * reported failure stays the first token's. */
                _cleanup_free_ char *first_reason = kms_backend_error_take(b);
                int first = r, other_id = info.token_id;

                for (;;) {
                        _cleanup_(evs_token_done) evs_token other = {};
                        kms_backend *ob;

                        if (luks_info_next_token(&info, other_id, &other_id, &other, &reason) < 0)
                                break;
                        if (kms_registry_get(m->registry, other.backend, &ob) < 0)
                                continue;
                        kms_key_done(&key);
                        if (envelope_open(ob, &other, id, &key, &data_key) >= 0) {
                                token_id = other_id;
                                r = 0;
                                break;
                        }
                }
                if (r < 0) {
                        kms_backend_error_put(b, TAKE_PTR(first_reason));
                        r = first;
                }
        }
        if (r < 0)
                return refuse(check, m, id, device, t, r, error, "Refusing to attach volume %s: %s.", id,
                              backend_reason(b, r));
        if (check) {
                data_key = secret_free(data_key); /* the check ends here: the key unwraps */
                ck->view.key_state = kms_key_state_to_string(key.state);
                if (!dm_available())
                        return attach_failed(check, m, id, device, t, -EOPNOTSUPP, error,
                                             "Cannot attach volume %s: this kernel has no device-mapper (dm_mod, dm_crypt).",
                                             id);
                return 0;
        }

        if (m->engine && engine_stopping(m->engine))
                return evs_bus_error_setf(error, ECANCELED, "evs-cryptd is shutting down; volume %s not attached.",
                                          id);
        r = luks_info_activate(&info, mapping, token_id, data_key);
        data_key = secret_free(data_key);
        if (r == -EEXIST) {
                *ret_already = true;
                return attached_view(id, device, mapping, &info, kms_key_state_to_string(key.state), ret);
        }
        if (r == -EPERM)
                return refuse(check, m, id, device, t, -EBADMSG, error,
                              "Refusing to attach volume %s: the unwrapped data key does not open its keyslot.", id);
        if (r < 0)
                return attach_failed(check, m, id, device, t, r, error, "Cannot attach volume %s: %s.", id, strerror(-r));

        atomic_fetch_add(&m->n_attached, 1);
        r = save_record(m, id, device, t, NULL, 0);
        if (r < 0)
                log_warning_errno(r, "Cannot record volume %s: %m", id);
        log_volume_event(LOG_INFO, 0, EVS_MESSAGE_VOLUME_ATTACHED, "attached", id, device, t,
                         "Attached volume %s (%s) as /dev/mapper/%s with key %s (%s).", id, device, mapping, t->key_id,
                         t->backend);
        *ret_already = false;
        return attached_view(id, device, mapping, &info, kms_key_state_to_string(key.state), ret);
}

int volume_attach(manager *m, const char *ref, volume_view *ret, bool *ret_already, sd_bus_error *error) {
        usec_t start = now_monotonic();
        bool already = false;
        int r;

        r = attach_locked(m, ref, false, ret, &already, NULL, error);
        metrics_attach_done(r >= 0 ? (already ? "already" : "attached") : "refused",
                            r >= 0 ? NULL : (error && error->name ? error->name : "unknown"), now_monotonic() - start);
        if (r >= 0)
                *ret_already = already;
        return r;
}

void volume_check_result_done(volume_check_result *c) {
        if (!c)
                return;
        volume_view_done(&c->view);
        free(c->error_name);
        free(c->error_message);
        *c = (volume_check_result) {};
}

void volume_check_result_array_free(volume_check_result *c, size_t n) {
        for (size_t i = 0; i < n; i++)
                volume_check_result_done(&c[i]);
        free(c);
}

int volume_check(manager *m, const char *ref, volume_check_result *ret) {
        _cleanup_(volume_check_result_done) volume_check_result ck = { .view.recovery_keyslot = -1 };
        _cleanup_(volume_view_done) volume_view unused = {};
        sd_bus_error e = SD_BUS_ERROR_NULL;
        bool already = false;
        int r;

        r = attach_locked(m, ref, true, &unused, &already, &ck, &e);
        if (r == -ENOMEM) {
                sd_bus_error_free(&e);
                return r;
        }
        if (!ck.view.id && !ck.view.device &&
            free_and_strdup_nonempty(ref && ref[0] == '/' ? &ck.view.device : &ck.view.id, ref) < 0)
                r = -ENOMEM;
        else if (!ck.view.state)
                ck.view.state = "unknown";
        if (r < 0 && r != -ENOMEM && (free_and_strdup(&ck.error_name, e.name) < 0 ||
                                      free_and_strdup(&ck.error_message, e.message ?: strerror(-r)) < 0))
                r = -ENOMEM;
        sd_bus_error_free(&e);
        if (r == -ENOMEM)
                return r;
        *ret = ck;
        ck = (volume_check_result) {};
        return 0;
}

int volume_check_all(manager *m, volume_check_result **ret, size_t *ret_n, sd_bus_error *error) {
        volume_check_result *l = NULL;
        volume_view *views = NULL;
        size_t n_views = 0, n = 0;
        int r;

        r = volume_list(m, &views, &n_views, error);
        if (r < 0)
                return r;
        l = calloc(n_views ?: 1, sizeof(volume_check_result));
        if (!l) {
                volume_view_array_free(views, n_views);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n_views; i++) {
                r = volume_check(m, views[i].device && !views[i].id ? views[i].device : views[i].id, &l[n]);
                if (r < 0) {
                        volume_view_array_free(views, n_views);
                        volume_check_result_array_free(l, n);
                        return r;
                }
                n++;
        }
        volume_view_array_free(views, n_views);
        *ret = l;
        *ret_n = n;
        return 0;
}

/* The CMK's state as an errno and a one-line reason (deletion date and days left included), from one
 * describe: why volume @id could not be attached again. 0 when it could. */
static int reattach_verdict(manager *m, const char *id, const evs_token *t, char *buf, size_t size) {
        _cleanup_(kms_key_done) kms_key key = {};
        char ts[FORMAT_TIMESTAMP_MAX];
        kms_backend *b;
        int r;

        if (kms_registry_get(m->registry, t->backend, &b) < 0) {
                snprintf(buf, size, "its token names KMS backend %s, which is not configured", t->backend);
                return -ENOENT;
        }
        r = kms_key_get(b, t->key_id, &key);
        if (r == -ENOENT) {
                snprintf(buf, size, "key %s%s%s%s is destroyed (the KMS no longer knows it)", t->key_id,
                         t->key_alias ? " (" : "", strempty(t->key_alias), t->key_alias ? ")" : "");
                return -ENOKEY;
        }
        if (r < 0) {
                snprintf(buf, size, "KMS backend %s does not answer for key %s: %s", t->backend, t->key_id,
                         backend_reason(b, r));
                return -EHOSTDOWN;
        }
        r = kms_key_state_to_errno(key.state);
        if (r == -EKEYEXPIRED) {
                usec_t now = now_realtime();
                uint64_t days = key.deletion_date > now ? (key.deletion_date - now + USEC_PER_DAY - 1) / USEC_PER_DAY : 0;

                snprintf(buf, size, "key %s%s%s%s is pending deletion on %s (%" PRIu64 " day%s left)", key.id,
                         key.alias ? " (" : "", strempty(key.alias), key.alias ? ")" : "",
                         format_timestamp(ts, sizeof ts, key.deletion_date), days, days == 1 ? "" : "s");
        } else if (r < 0)
                snprintf(buf, size, "key %s%s%s%s is %s", key.id, key.alias ? " (" : "", strempty(key.alias),
                         key.alias ? ")" : "", kms_key_state_to_string(key.state));
        return r;
}

/* The last CMK state a KMS answer showed for @t, without a KMS call; NULL when none was seen. */
static const char *last_key_state(manager *m, const evs_token *t) {
        kms_key_state st;
        kms_backend *b;

        if (!t || kms_registry_get(m->registry, t->backend, &b) < 0 ||
            kms_gate_key_state_seen(b->gate, t->key_id, &st, NULL) < 0)
                return NULL;
        return kms_key_state_to_string(st);
}

static int detach_locked(manager *m, const char *ref, volume_detach_mode mode, bool *ret_was_attached,
                         bool *ret_deferred, sd_bus_error *error) {
        _cleanup_(dm_mapping_info_done) dm_mapping_info dmi = {};
        _cleanup_(volume_record_done) volume_record rec = {};
        _cleanup_(luks_info_done) luks_info info = {}, header = {}, rh = {};
        _cleanup_(engine_volume_unlockp) void *vlock = NULL;
        _cleanup_free_ char *mapping = NULL, *unit = NULL;
        const dm_mapping_info *seen_dm;
        const evs_token *t = NULL;
        const char *id = ref, *reason, *seen;
        bool force = mode == VOLUME_DETACH_FORCED || mode == VOLUME_DETACH_DISK_GONE;
        unsigned inspected;
        int r;

        if (isempty(ref))
                return evs_bus_error_setf(error, EINVAL, "No volume given.");
        if (ref[0] == '/') {
                r = luks_read(ref, &info, &reason);
                if (r < 0 || !volume_label_valid(info.label))
                        return evs_bus_error_setf(error, ENXIO, "%s does not hold an EVS volume.", ref);
                id = info.label;
        } else if (!volume_id_valid(ref))
                return evs_bus_error_setf(error, EINVAL, "Invalid volume id '%s': " VOLUME_ID_RULE ".", ref);
        vlock = engine_volume_lock(id);

        (void) volume_db_load(m->config.state_dir, id, &rec);
        {
                /* The mapping under any name: by the volume's LUKS UUID (from the device given, else the
                 * recorded one). */
                _cleanup_(luks_info_done) luks_info found = {};
                _cleanup_free_ char *device = NULL;
                const char *uuid = info.uuid, *disk = uuid ? ref : NULL;

                /* Its own name evs-ID first, which takes no read of the disk: a detach --force of a volume whose
                 * disk's I/O hangs goes through. The UUID is looked for only when that name is not open. */
                r = find_open_mapping(id, uuid, disk, false, &mapping, NULL, &unit, &dmi);
                if (r == -ENOENT && !uuid) {
                        if (rec.device && luks_read(rec.device, &rh, &reason) >= 0 && streq_ptr(rh.label, id))
                                uuid = rh.uuid, disk = rec.device;
                        /* No record (a volume only systemd-cryptsetup opened, from crypttab): the disk holding
                         * it. */
                        if (!uuid && find_device_by_id(m, id, HEADER_READ, &device, &found) >= 0)
                                uuid = found.uuid, disk = device;
                        if (uuid)
                                r = find_open_mapping(id, uuid, disk, false, &mapping, NULL, &unit, &dmi);
                }
                if (r < 0 && r != -ENOENT)
                        return r;
                if (r == -ENOENT) {
                        r = volume_mapping_name(id, &mapping);
                        if (r < 0)
                                return r;
                }
        }
        /* Found open, it was inspected; else evs-ID is looked at (a leftover without a table is removed). */
        if (!dmi.exists) {
                r = dm_mapping_get(mapping, &dmi);
                if (r < 0)
                        return evs_bus_error_setf(error, -r, "Cannot inspect mapping %s: %s.", mapping,
                                                  strerror(-r));
        }
        /* That inspection serves the close too, unless the engine lock is given up before it (the guard's KMS
         * call, a header read): then the close looks again. */
        inspected = engine_lock_releases();

        if (dmi.exists && unit && !force) {
                char msg[1024];

                snprintf(msg, sizeof msg,
                         "Refusing to detach volume %s: its mapping %s belongs to %s (crypttab); stop that unit instead "
                         "(systemctl stop %s), or use --force.",
                         id, mapping, unit, unit);
                log_volume_event(LOG_WARNING, -EBUSY, EVS_MESSAGE_DETACH_REFUSED, "detach-refused", id,
                                 dmi.backing_device, NULL, "%s", msg);
                return evs_bus_error_setf(error, EBUSY, "%s", msg);
        }

        if (!dmi.exists) {
                if (!rec.id)
                        return evs_bus_error_setf(error, ENXIO, "Unknown volume %s.", id);
                *ret_was_attached = false;
                *ret_deferred = false;
                return 0;
        }

        /* The CMK of the volume, from its header (the record's copy when the disk cannot be read); the header
         * read above when it came from the device under the mapping. Without the guard the CMK serves only the
         * log line: the record's copy, where there is one, and the disk is not read. */
        if (streq_ptr(rh.label, id) && dm_same_device(dmi.backing_device, rec.device))
                t = &rh.token;
        else if (info.label && dm_same_device(dmi.backing_device, ref))
                t = &info.token;
        else if (!(force && rec.key_id && rec.backend) && dmi.backing_device &&
                 luks_read(dmi.backing_device, &header, &reason) >= 0 && streq_ptr(header.label, id))
                t = &header.token;
        else if (info.label)
                t = &info.token;
        else if (rec.key_id && rec.backend) {
                header.token.key_id = strdup(rec.key_id);
                header.token.backend = strdup(rec.backend);
                if (!header.token.key_id || !header.token.backend)
                        return -ENOMEM;
                t = &header.token;
        }

        if ((mode == VOLUME_DETACH_GUARDED || mode == VOLUME_DETACH_CHECK) && t && !dm_mapping_is_stale(&dmi)) {
                /* The detach guard: one describe. A volume that could not be attached again stays open. */
                char why[1024];

                r = reattach_verdict(m, id, t, why, sizeof why);
                if (r < 0) {
                        char msg[1400];

                        snprintf(msg, sizeof msg,
                                 "Refusing to detach volume %s: it could not be attached again: %s. Nothing was "
                                 "closed; use --force to detach anyway.",
                                 id, why);
                        log_volume_event(LOG_WARNING, r, EVS_MESSAGE_DETACH_REFUSED, "detach-refused", id,
                                         dmi.backing_device, t, "%s", msg);
                        return evs_bus_error_setf(error, -r, "%s", msg);
                }
        }

        if (mode == VOLUME_DETACH_CHECK) {
                if (dmi.open_count > 0 && !dm_mapping_is_stale(&dmi))
                        return evs_bus_error_setf(
                                error, EBUSY,
                                "Volume %s is in use (open count %u); close it first, or use --force for a deferred "
                                "removal.",
                                id, dmi.open_count);
                *ret_was_attached = true;
                *ret_deferred = false;
                return 0;
        }

        /* A mapping without a table (an attach killed half-way) is no LUKS mapping for libcryptsetup. */
        seen_dm = engine_lock_releases() == inspected ? &dmi : NULL;
        r = dm_mapping_is_stale(&dmi) ? dm_mapping_remove(mapping) : luks_deactivate(mapping, seen_dm, false);
        if (r == -EBUSY && force) {
                r = luks_deactivate(mapping, seen_dm, true);
                if (r >= 0) {
                        log_volume_event(
                                LOG_NOTICE, 0, EVS_MESSAGE_VOLUME_DETACHED, "detach-deferred", id, dmi.backing_device,
                                NULL,
                                "Volume %s is in use (open count %u): mapping %s will be removed when it is closed.",
                                id, dmi.open_count, mapping);
                        *ret_was_attached = true;
                        *ret_deferred = true;
                        r = 0;
                        goto unguarded;
                }
        }
        if (r == -EBUSY)
                return evs_bus_error_setf(
                        error, EBUSY,
                        "Volume %s is in use (open count %u); close it first, or use --force for a deferred removal.",
                        id, dmi.open_count);
        if (r == -ENODEV) {
                *ret_was_attached = false;
                *ret_deferred = false;
                return 0;
        }
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot close mapping %s: %s.", mapping, strerror(-r));

        log_volume_event(LOG_INFO, 0, EVS_MESSAGE_VOLUME_DETACHED, "detached", id, dmi.backing_device, NULL,
                         "Detached volume %s (mapping %s closed).", id, mapping);
        *ret_was_attached = true;
        *ret_deferred = false;

unguarded:
        /* No KMS call here: the state shown is the last one a KMS answer gave. */
        seen = last_key_state(m, t);
        if (mode == VOLUME_DETACH_FORCED)
                log_volume_event(LOG_WARNING, 0, EVS_MESSAGE_DETACH_FORCED, "detach-forced", id, dmi.backing_device, t,
                                 "Volume %s detached with --force, without the detach guard (key %s, last seen %s)%s.",
                                 id, t ? t->key_id : "unknown", seen ?: "never",
                                 seen && !streq(seen, "enabled") ? ": it cannot be attached again until its key is enabled" : "");
        else if (mode == VOLUME_DETACH_DISK_GONE && seen && !streq(seen, "enabled"))
                log_volume_event(LOG_WARNING, 0, EVS_MESSAGE_DETACH_FORCED, "disk-removed", id, dmi.backing_device, t,
                                 "Disk of volume %s removed while its key %s was %s: it cannot be attached again until "
                                 "the key is enabled.",
                                 id, t->key_id, seen);
        return 0;
}

int volume_detach(manager *m, const char *ref, volume_detach_mode mode, bool *ret_was_attached, bool *ret_deferred,
                  sd_bus_error *error) {
        bool was = false, deferred = false;
        int r;

        r = detach_locked(m, ref, mode, &was, &deferred, error);
        if (mode == VOLUME_DETACH_CHECK) {
                *ret_was_attached = r >= 0 && was;
                *ret_deferred = false;
                return r;
        }
        metrics_detach_done(r < 0 ? "failed" : !was ? "not-attached" : deferred ? "deferred" : "detached");
        if (r < 0)
                return r;
        if (was && !deferred && atomic_load(&m->n_attached) > 0)
                atomic_fetch_sub(&m->n_attached, 1);
        *ret_was_attached = was;
        *ret_deferred = deferred;
        return 0;
}

typedef struct record_recovery_slot {
        const char *device;
        const evs_token *token;
        int slot;
} record_recovery_slot;

static int record_recovery_apply(volume_record *rec, int load_result, void *userdata) {
        const record_recovery_slot *s = userdata;
        int r;

        (void) load_result;
        if ((r = free_and_strdup(&rec->device, s->device)) < 0 ||
            (r = free_and_strdup(&rec->key_id, s->token->key_id)) < 0 ||
            (r = free_and_strdup(&rec->backend, s->token->backend)) < 0)
                return r;
        rec->recovery_keyslot = mfree(rec->recovery_keyslot);
        if (s->slot >= 0 && asprintf(&rec->recovery_keyslot, "%d", s->slot) < 0)
                return -ENOMEM;
        return 0;
}

static int record_recovery(manager *m, const char *id, const char *device, const evs_token *t, int slot) {
        record_recovery_slot s = { .device = device, .token = t, .slot = slot };

        return volume_db_update(m->config.state_dir, id, record_recovery_apply, &s);
}

int volume_recovery_add(manager *m, const char *ref, const secret *passphrase, int *ret_keyslot, sd_bus_error *error) {
        _cleanup_(luks_info_done) luks_info info = {};
        _cleanup_(engine_volume_unlockp) void *vlock = NULL;
        _cleanup_(secret_freep) secret *data_key = NULL;
        _cleanup_(kms_key_done) kms_key key = {};
        _cleanup_free_ char *device = NULL;
        kms_backend *b;
        int r, slot;

        if (!passphrase || passphrase->size == 0)
                return evs_bus_error_setf(error, EINVAL, "The recovery passphrase is empty.");
        if (passphrase->size > 512)
                return evs_bus_error_setf(error, EINVAL, "The recovery passphrase is longer than 512 bytes.");
        r = resolve(m, ref, false, &device, &info, error);
        if (r < 0)
                return r;
        vlock = engine_volume_lock(info.label);
        if (info.recovery_keyslot >= 0)
                return evs_bus_error_setf(error, EEXIST,
                                          "Volume %s already has a recovery passphrase (keyslot %d); remove it first.",
                                          info.label, info.recovery_keyslot);
        r = kms_registry_get(m->registry, info.token.backend, &b);
        if (r < 0)
                return evs_bus_error_setf(error, ENOENT, "Volume %s: its token names KMS backend %s, which is not configured.",
                                          info.label, info.token.backend);
        /* The data key opens the evs-kms keyslot: the CMK must allow it (one KMS call). */
        r = envelope_open(b, &info.token, info.label, &key, &data_key);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot add a recovery passphrase to volume %s: %s.", info.label,
                                          backend_reason(b, r));
        r = luks_recovery_add(device, info.label, info.token.keyslot, data_key, passphrase, &slot);
        data_key = secret_free(data_key);
        if (r == -EEXIST)
                return evs_bus_error_setf(error, EEXIST, "Volume %s already has a recovery passphrase; remove it first.",
                                          info.label);
        if (r == -EPERM)
                return evs_bus_error_setf(error, EBADMSG, "Volume %s: the unwrapped data key does not open its keyslot.",
                                          info.label);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot add a recovery passphrase to volume %s: %s.", info.label,
                                          strerror(-r));
        r = record_recovery(m, info.label, device, &info.token, slot);
        if (r < 0)
                log_warning_errno(r, "Cannot record the recovery keyslot of volume %s: %m", info.label);
        log_volume_event(LOG_NOTICE, 0, EVS_MESSAGE_RECOVERY_CHANGED, "recovery-added", info.label, device, &info.token,
                         "Volume %s has a recovery passphrase now (keyslot %d): it opens the volume without key %s.",
                         info.label, slot, info.token.key_id);
        *ret_keyslot = slot;
        return 0;
}

int volume_recovery_remove(manager *m, const char *ref, int *ret_keyslot, sd_bus_error *error) {
        _cleanup_(luks_info_done) luks_info info = {};
        _cleanup_(engine_volume_unlockp) void *vlock = NULL;
        _cleanup_free_ char *device = NULL;
        int r, slot = -1;

        r = resolve(m, ref, false, &device, &info, error);
        if (r < 0)
                return r;
        vlock = engine_volume_lock(info.label);
        r = luks_recovery_remove(device, &slot);
        if (r == -ENOENT)
                return evs_bus_error_setf(error, ENOENT, "Volume %s has no recovery passphrase.", info.label);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot remove the recovery passphrase of volume %s: %s.",
                                          info.label, strerror(-r));
        r = record_recovery(m, info.label, device, &info.token, -1);
        if (r < 0)
                log_warning_errno(r, "Cannot record volume %s: %m", info.label);
        log_volume_event(LOG_NOTICE, 0, EVS_MESSAGE_RECOVERY_CHANGED, "recovery-removed", info.label, device,
                         &info.token, "Removed the recovery passphrase of volume %s (keyslot %d).", info.label, slot);
        *ret_keyslot = slot;
        return 0;
}

int volume_get(manager *m, const char *ref, volume_view *ret, sd_bus_error *error) {
        _cleanup_(luks_info_done) luks_info info = {};
        _cleanup_(volume_record_done) volume_record rec = {};
        _cleanup_free_ char *device = NULL;
        int r, k = -ENOENT;

        r = resolve_as(m, ref, HEADER_VIEW, &device, &info, error);
        if ((r == -ENXIO || r == -ETIMEDOUT || r == -ETIME) && ref[0] != '/' &&
            (k = volume_db_load(m->config.state_dir, ref, &rec)) >= 0) {
                /* Known, but its disk is gone, or does not answer, or the search for it waits on a disk that
                 * does not answer: show what we remember. */
                char why[128] = "device not present";

                if (r == -ETIMEDOUT)
                        snprintf(why, sizeof why, "disk not answering: its header could not be read within %" PRIu64 " s",
                                 VOLUME_VIEW_WAIT_USEC / USEC_PER_SEC);
                else if (r == -ETIME)
                        snprintf(why, sizeof why,
                                 "disk not found: the search for it by label did not end within %" PRIu64 " s",
                                 VOLUME_VIEW_WAIT_USEC / USEC_PER_SEC);
                sd_bus_error_free(error);
                r = fill_view(m, rec.id, rec.device, NULL, why, ret);
                if (r >= 0)
                        ret->created = rec.created;
                return r;
        }
        if (r == -ENXIO && ref[0] != '/' && k != -ENOENT) { /* a record that does not load: unknown, not absent */
                _cleanup_free_ char *why = volume_db_error(m->config.state_dir, ref, k);

                log_warning("Volume %s: %s.", ref, strna(why));
                sd_bus_error_free(error);
                r = fill_view(m, ref, NULL, NULL, why, ret);
                if (r >= 0)
                        ret->state = "unknown";
                return r;
        }
        if (r == -ETIME) /* no record: an unknown volume, its search waits */
                return -ETIMEDOUT;
        if (r < 0)
                return r;
        (void) volume_db_load(m->config.state_dir, info.label, &rec);
        r = fill_view(m, info.label, device, &info.token, rec.last_error, ret);
        if (r < 0)
                return r;
        ret->created = rec.created;
        if (info.damaged && !ret->warning &&
            asprintf(&ret->warning, "%s: evsctl volume repair restores it", info.damaged) < 0)
                return -ENOMEM;
        ret->unbound_keyslots = info.n_unbound_keyslots;
        ret->recovery_keyslot = info.recovery_keyslot;
        r = view_set_mapping(ret, info.label, info.uuid, device);
        if (r < 0)
                return r;
        return warn_unbound(&ret->warning, info.n_unbound_keyslots);
}

static int add_view(volume_view **l, size_t *n, volume_view *v) {
        volume_view *a = reallocarray(*l, *n + 1, sizeof(volume_view));

        if (!a)
                return -ENOMEM;
        *l = a;
        a[(*n)++] = *v;
        *v = (volume_view) {};
        return 0;
}

static bool have_view(volume_view *l, size_t n, const char *id) {
        for (size_t i = 0; i < n; i++)
                if (streq(l[i].id, id))
                        return true;
        return false;
}

static void prefetch_release(probe **p, size_t n) {
        for (size_t i = 0; p && i < n; i++)
                probe_release(p[i]);
        free(p);
}

int volume_list(manager *m, volume_view **ret, size_t *ret_n, sd_bus_error *error) {
        _cleanup_(strv_freep) char **names = NULL;
        volume_record *recs = NULL;
        volume_view *l = NULL;
        probe **prefetched = NULL;
        size_t n_recs = 0, n = 0;
        int r;

        r = volume_db_list(m->config.state_dir, &recs, &n_recs);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot list volumes: %s.", strerror(-r));

        /* Every recorded disk's header read starts now, each on its own thread, and so does the search by
         * label for a volume whose recorded disk is gone: disks whose I/O hangs then cost the list one
         * VOLUME_VIEW_WAIT_USEC in all, not one each. (Without the memory for it, each is read in its turn.) */
        prefetched = n_recs > 0 ? calloc(n_recs, sizeof(probe *)) : NULL;
        for (size_t i = 0; prefetched && i < n_recs; i++)
                if (recs[i].device && access(recs[i].device, F_OK) >= 0)
                        prefetched[i] = luks_prefetch(recs[i].device);
                else
                        prefetched[i] = probe_start(label_search, free, recs[i].id);

        for (size_t i = 0; i < n_recs; i++) {
                _cleanup_(volume_view_done) volume_view v = {};
                sd_bus_error e = SD_BUS_ERROR_NULL;

                r = volume_get(m, recs[i].id, &v, &e);
                sd_bus_error_free(&e);
                if (r < 0) {
                        r = fill_view(m, recs[i].id, recs[i].device, NULL, recs[i].last_error ?: "unreadable", &v);
                        if (r < 0)
                                goto fail;
                }
                if (recs[i].corrupt && !v.warning && !(v.warning = strdup(recs[i].corrupt))) {
                        r = -ENOMEM;
                        goto fail;
                }
                r = add_view(&l, &n, &v);
                if (r < 0)
                        goto fail;
        }

        /* Mappings the kernel has that we have no record of (made by another tool, or a lost state dir). */
        r = dm_list_names(EVS_MAPPING_PREFIX, &names);
        if (r >= 0)
                STRV_FOREACH(name, names) {
                        _cleanup_(volume_view_done) volume_view v = {};
                        sd_bus_error e = SD_BUS_ERROR_NULL;
                        const char *id = *name + strlen(EVS_MAPPING_PREFIX);

                        if (!volume_id_valid(id) || have_view(l, n, id))
                                continue;
                        r = volume_get(m, id, &v, &e);
                        sd_bus_error_free(&e);
                        if (r < 0 && (r = fill_view(m, id, NULL, NULL, NULL, &v)) < 0)
                                goto fail;
                        r = add_view(&l, &n, &v);
                        if (r < 0)
                                goto fail;
                }

        prefetch_release(prefetched, n_recs);
        volume_record_array_free(recs, n_recs);
        *ret = l;
        *ret_n = n;
        return 0;

fail:
        prefetch_release(prefetched, n_recs);
        volume_record_array_free(recs, n_recs);
        volume_view_array_free(l, n);
        return evs_bus_error_setf(error, -r, "Cannot list volumes: %s.", strerror(-r));
}

int volume_reconcile(manager *m) {
        _cleanup_(strv_freep) char **names = NULL;
        int r;

        {
                volume_record *recs = NULL;
                size_t n = 0;

                if (volume_db_list(m->config.state_dir, &recs, &n) >= 0)
                        for (size_t i = 0; i < n; i++)
                                if (recs[i].corrupt)
                                        log_warning("Volume %s: %s; it is listed with state unknown.", recs[i].id,
                                                    recs[i].corrupt);
                volume_record_array_free(recs, n);
        }

        r = dm_list_names(EVS_MAPPING_PREFIX, &names);
        if (r < 0) {
                log_warning_errno(r, "Cannot list device-mapper devices, nothing to reconcile: %m");
                return 0;
        }

        STRV_FOREACH(name, names) {
                _cleanup_(dm_mapping_info_done) dm_mapping_info dmi = {};
                _cleanup_(luks_info_done) luks_info info = {};
                const char *id = *name + strlen(EVS_MAPPING_PREFIX), *reason;

                if (!volume_id_valid(id) || dm_mapping_get(*name, &dmi) < 0 || !dmi.exists)
                        continue;
                if (!dmi.backing_device || luks_read(dmi.backing_device, &info, &reason) < 0) {
                        log_warning("Open mapping %s: cannot read its volume header; leaving it alone.", *name);
                        continue;
                }
                r = save_record(m, id, dmi.backing_device, &info.token, NULL, 0);
                if (r < 0)
                        log_warning_errno(r, "Cannot record volume %s: %m", id);
                log_info("Found open mapping %s of volume %s on %s.", *name, id, dmi.backing_device);
        }
        return 0;
}

unsigned volume_count_attached(void) {
        _cleanup_(strv_freep) char **names = NULL;

        if (dm_list_names(EVS_MAPPING_PREFIX, &names) < 0)
                return 0;
        return (unsigned) strv_length(names);
}
