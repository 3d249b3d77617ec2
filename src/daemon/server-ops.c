/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Servers: create from an encrypted image or an AS configuration, list, show, delete; images made from a
 * server's system disk. */

#include <fcntl.h>
#include <sys/stat.h>

#include "evs-messages.h"
#include "dm.h"
#include "docstore.h"
#include "envelope.h"
#include "errors.h"
#include "fileio.h"
#include "image.h"
#include "inherit.h"
#include "server-live.h"
#include "json-util.h"
#include "log.h"
#include "luks.h"
#include "records.h"
#include "server.h"
#include "server-ops.h"
#include "strv.h"
#include "volume-ops.h"
#include "string-util.h"

#define KIND SERVER_KIND

/* --- live state --- */

/* The header wins for the key and the cipher; the mapping and the key state are read now. Returns false
 * when the header does not hold the disk's volume. */
static bool disk_fill_live(manager *m, disk_spec *d) {
        int r = disk_spec_read_header(d);

        if (r < 0 || disk_spec_fill_key_state(d, m->registry) < 0 || disk_spec_fill_mapping(d) < 0)
                return false;
        return r > 0;
}

static void fill_live(manager *m, server_record *v) {
        unsigned encrypted = 0, attached = 0;
        disk_spec *disks[1 + SERVER_DATA_DISKS_MAX];
        size_t n = 0;

        disks[n++] = &v->system;
        for (size_t i = 0; i < v->n_data && n < ELEMENTSOF(disks); i++)
                disks[n++] = &v->data[i];
        for (size_t i = 0; i < n; i++) {
                if (!disk_fill_live(m, disks[i]) && !v->warning &&
                    asprintf(&v->warning, "%s does not hold volume %s", disks[i]->device, disks[i]->volume_id) < 0)
                        v->warning = NULL;
                if (disks[i]->plain)
                        continue;
                encrypted++;
                if (disks[i]->mapping)
                        attached++;
        }
        v->state = attached == 0 ? "detached" : attached == encrypted ? "attached" : "partially-attached";
}

int server_get(manager *m, const char *name, server_record *ret, sd_bus_error *error) {
        int r;

        r = server_record_load(m, name, ret, error);
        if (r < 0)
                return r;
        fill_live(m, ret);
        return 0;
}

/* For the list: a record that does not load is listed too, by name, state "unknown", the reason its warning
 * (a broken file never makes a server vanish). */
static int load_one(void *userdata, const char *name, void *record) {
        manager *m = userdata;
        server_record *v = record;
        int r = server_db_load(m->config.state_dir, name, v);

        if (r >= 0) {
                fill_live(userdata, v);
                return r;
        }
        if (r == -ENXIO || r == -ENOMEM) /* -ENXIO: removed since the listing */
                return r;
        v->name = strdup(name);
        v->corrupt = docstore_error(m->config.state_dir, KIND, name, r);
        v->warning = v->corrupt ? strdup(v->corrupt) : NULL;
        if (!v->name || !v->warning) {
                server_record_done(v);
                return -ENOMEM;
        }
        v->state = "unknown";
        log_warning("Server %s: %s; it is listed with state unknown.", name, v->corrupt);
        return 0;
}

int server_list(manager *m, server_record **ret, size_t *ret_n, sd_bus_error *error) {
        int r;

        r = docstore_load_all(m->config.state_dir, KIND, sizeof(server_record), load_one, m, (void **) ret, ret_n);
        if (r < 0)
                return evs_bus_error_setf(error, r, "Cannot list servers: %s.", strerror(-r));
        return 0;
}

/* --- create --- */

static bool same_file(const struct stat *a, const struct stat *b) {
        if (S_ISBLK(a->st_mode) && S_ISBLK(b->st_mode))
                return a->st_rdev == b->st_rdev;
        return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/* The server already using @device, if any (a copy of its name in *ret). */
static int device_owner(manager *m, const struct stat *st, char **ret) {
        _cleanup_(strv_freep) char **names = NULL;
        int r;

        *ret = NULL;
        r = docstore_list(m->config.state_dir, KIND, &names);
        if (r < 0)
                return r;
        STRV_FOREACH(name, names) {
                _cleanup_(server_record_done) server_record v = {};
                struct stat o;

                if (server_db_load(m->config.state_dir, *name, &v) < 0)
                        continue;
                for (size_t i = 0; i <= v.n_data; i++) {
                        const char *d = i == 0 ? v.system.device : v.data[i - 1].device;

                        if (stat(d, &o) >= 0 && same_file(st, &o)) {
                                *ret = strdup(*name);
                                return *ret ? 1 : -ENOMEM;
                        }
                }
        }
        return 0;
}

static const char *state_word(int r) {
        return r == -EKEYREVOKED ? "disabled" : r == -EKEYEXPIRED ? "pending-deletion" : "destroyed";
}

/* The CMK @key_ref must be usable now (exit code 3 otherwise). A key the backend does not know is
 * destroyed when it was @recorded (by an image, a header, an AS configuration), else unknown. */
static int check_key_usable(manager *m, const char *server, const char *what, const char *key_ref, bool recorded,
                            sd_bus_error *error) {
        _cleanup_(kms_key_done) kms_key key = {};
        kms_backend *b = NULL;
        int r;

        r = kms_registry_resolve(m->registry, key_ref, &b, &key);
        if (isempty(key_ref))
                key_ref = KMS_DEFAULT_KEY_ALIAS; /* what the reasons below name */
        if (r == -ENOENT && !b)
                return evs_bus_error_setf(error, ENOENT,
                                          "Refusing to create server %s: unknown KMS backend in key reference '%s'.",
                                          server, key_ref);
        if (r == -ENOENT && recorded)
                return evs_bus_error_setf(error, ENOKEY, "Refusing to create server %s: key %s of %s is destroyed.",
                                          server, key_ref, what);
        if (r == -ENOENT)
                return evs_bus_error_setf(error, ENOENT, "Refusing to create server %s: no key %s (for %s).", server,
                                          key_ref, what);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Refusing to create server %s: key %s of %s: %s.", server, key_ref,
                                          what, kms_backend_error(b) ?: strerror(-r));
        r = kms_key_state_to_errno(key.state);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Refusing to create server %s: key %s of %s is %s.", server,
                                          key.alias ?: key.id, what, kms_key_state_to_string(key.state));
        return 0;
}

int server_create(manager *m, const char *name, const char *image_ref, const char *as_config, const char *system_disk,
                  char **data_disks, bool force, server_record *ret, sd_bus_error *error) {
        _cleanup_(as_config_record_done) as_config_record cfg = {};
        _cleanup_(image_view_done) image_view img = {};
        _cleanup_(luks_info_done) luks_info img_info = {};
        _cleanup_(secret_freep) secret *img_key = NULL, *sys_key = NULL;
        _cleanup_(server_record_done) server_record v = {};
        disk_plan plans[1 + SERVER_DATA_DISKS_MAX] = {};
        struct stat sts[1 + SERVER_DATA_DISKS_MAX];
        size_t n_data = strv_length(data_disks), n = 0, n_formatted = 0;
        const char *reason = NULL;
        kms_backend *b;
        int r;

        if (!server_name_valid(name))
                return evs_bus_error_setf(
                        error, EINVAL,
                        "Invalid server name '%s': 1-%u characters of [A-Za-z0-9._-], not starting with '.'.",
                        strempty(name), SERVER_NAME_MAX);
        if (isempty(image_ref) == isempty(as_config))
                return evs_bus_error_setf(error, EINVAL, "Server %s needs either an image or an AS configuration.",
                                          name);
        if (isempty(system_disk))
                return evs_bus_error_setf(error, EINVAL, "Server %s needs a system disk.", name);
        if (n_data > SERVER_DATA_DISKS_MAX)
                return evs_bus_error_setf(error, EINVAL, "At most %u data disks.", SERVER_DATA_DISKS_MAX);
        r = server_db_load(m->config.state_dir, name, &v);
        if (r != -ENXIO)
                return r >= 0 ? evs_bus_error_setf(error, EEXIST, "A server named %s exists already.", name)
                              : record_error(m, KIND, "Server", name, r, error);

        /* The image, and the CMK of every disk. */
        if (!isempty(as_config)) {
                r = as_config_record_load(m, as_config, &cfg, error);
                if (r < 0)
                        return r;
                if (cfg.n_data != n_data)
                        return evs_bus_error_setf(error, EINVAL,
                                                  "AS configuration %s has %zu data disk%s, %zu given: give one "
                                                  "--data-disk DEVICE for each.",
                                                  cfg.name, cfg.n_data, cfg.n_data == 1 ? "" : "s", n_data);
                image_ref = cfg.image;
        }
        r = image_get(m, image_ref, &img, error);
        if (r == -ENXIO && cfg.name) {
                sd_bus_error_free(error);
                return evs_bus_error_setf(error, ENXIO, "The image %s of AS configuration %s no longer exists.",
                                          cfg.image_name ?: cfg.image, cfg.name);
        }
        if (r < 0)
                return r;
        r = luks_read(img.path, &img_info, &reason);
        if (r < 0)
                return evs_bus_error_setf(error, r == -ENODATA ? ENODATA : -r,
                                          "Cannot read the header of image %s: %s.", img.name, reason ?: strerror(-r));

        /* The system disk: the image's CMK, or the one the AS configuration recorded. */
        r = cfg.name ? inherit_system_disk_from_as_config(name, system_disk, &cfg, img.size, &plans[0])
                     : inherit_system_disk_from_image(name, system_disk, &img_info.token, img.size, &plans[0]);
        if (r < 0)
                goto oom;
        n = 1;

        /* Each data disk: the CMK named, the default or plain; or what the AS configuration recorded. */
        for (size_t i = 0; i < n_data; i++, n++) {
                r = cfg.name ? inherit_data_disk_from_as_config(name, (unsigned) i + 1, data_disks[i], &cfg.data[i],
                                                                &plans[n])
                             : inherit_data_disk(name, (unsigned) i + 1, data_disks[i], &plans[n]);
                if (r == -EINVAL) {
                        r = evs_bus_error_setf(error, EINVAL, "Invalid data disk '%s': DEVICE[:key=KEY|:plain].",
                                               data_disks[i]);
                        goto out;
                }
                if (r == -EPERM) {
                        r = evs_bus_error_setf(error, EINVAL,
                                               "Data disk %s: the AS configuration %s decides its encryption; "
                                               "give the device alone.",
                                               data_disks[i], cfg.name);
                        goto out;
                }
                if (r < 0)
                        goto oom;
        }

        /* Every CMK usable: an image or a configuration whose key is disabled, pending deletion or destroyed
         * makes no server. */
        {
                _cleanup_free_ char *what = NULL, *img_ref = NULL;

                if (asprintf(&what, "image %s", img.name) < 0 ||
                    inherit_key_ref(img_info.token.backend, img_info.token.key_id, &img_ref) < 0)
                        goto oom;
                r = check_key_usable(m, name, what, img_ref, true, error);
                if (r < 0)
                        goto out;
                for (size_t i = 0; i < n; i++) {
                        if (!plans[i].volume_id)
                                continue;
                        what = mfree(what);
                        if ((i == 0 ? asprintf(&what, "the system disk%s%s", cfg.name ? " of AS configuration " : "",
                                               cfg.name ?: "")
                                    : asprintf(&what, "data disk %zu%s%s", i, cfg.name ? " of AS configuration " : "",
                                               cfg.name ?: "")) < 0)
                                goto oom;
                        r = check_key_usable(m, name, what, plans[i].key_ref, i == 0 || cfg.name, error);
                        if (r < 0)
                                goto out;
                }
        }

        /* Every disk: an absolute path that exists, no two the same, none another server's, large enough. */
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *owner = NULL, *mapping = NULL;
                _cleanup_(dm_mapping_info_done) dm_mapping_info dmi = {};
                uint64_t size = 0;

                if (plans[i].device[0] != '/') {
                        r = evs_bus_error_setf(error, EINVAL, "Disk %s must be an absolute path.", plans[i].device);
                        goto out;
                }
                if (stat(plans[i].device, &sts[i]) < 0) {
                        r = evs_bus_error_setf(error, errno == ENOENT ? ENXIO : errno, "Disk %s: %s.", plans[i].device,
                                               strerror(errno));
                        goto out;
                }
                if (!S_ISBLK(sts[i].st_mode) && !S_ISREG(sts[i].st_mode)) {
                        r = evs_bus_error_setf(error, EINVAL, "Disk %s is neither a block device nor a regular file.",
                                               plans[i].device);
                        goto out;
                }
                for (size_t k = 0; k < i; k++)
                        if (same_file(&sts[k], &sts[i])) {
                                r = evs_bus_error_setf(error, EINVAL, "Disk %s is given twice.", plans[i].device);
                                goto out;
                        }
                r = device_owner(m, &sts[i], &owner);
                if (r < 0) {
                        r = evs_bus_error_setf(error, -r, "Cannot list servers: %s.", strerror(-r));
                        goto out;
                }
                if (r > 0) {
                        r = evs_bus_error_setf(error, EBUSY, "Disk %s is a disk of server %s.", plans[i].device, owner);
                        goto out;
                }
                if (plans[i].volume_id && volume_mapping_name(plans[i].volume_id, &mapping) >= 0 &&
                    dm_mapping_get(mapping, &dmi) >= 0 && dmi.exists) {
                        r = evs_bus_error_setf(error, EBUSY, "Volume %s is open already (/dev/mapper/%s).",
                                               plans[i].volume_id, mapping);
                        goto out;
                }
                r = path_size(plans[i].device, &size);
                if (r < 0) {
                        r = evs_bus_error_setf(error, -r, "Cannot size disk %s: %s.", plans[i].device, strerror(-r));
                        goto out;
                }
                if (size < plans[i].min_size) {
                        r = evs_bus_error_setf(error, EINVAL,
                                               "%s %s is too small: %" PRIu64 " bytes, %s needs %" PRIu64 ".",
                                               i == 0 ? "System disk" : "Data disk", plans[i].device, size,
                                               i == 0 ? "the image" : "the AS configuration", plans[i].min_size);
                        goto out;
                }
                /* volume_create()'s own checks: the key, and no signature unless forced. */
                if (plans[i].volume_id) {
                        r = volume_create_check(m, plans[i].device, plans[i].volume_id, plans[i].key_ref, force, error);
                        if (r < 0)
                                goto out;
                }
        }

        /* The image's data key, before anything is written. */
        r = kms_registry_get(m->registry, img_info.token.backend, &b);
        if (r >= 0)
                r = envelope_open(b, &img_info.token, img.id, NULL, &img_key);
        if (r < 0) {
                r = evs_bus_error_setf(error, -r, "Cannot unwrap the data key of image %s: %s.", img.name,
                                       r == -EKEYREVOKED || r == -EKEYEXPIRED || r == -ENOKEY ? state_word(r)
                                                                                               : strerror(-r));
                goto out;
        }

        /* Now write: the system disk with the image's data, then the data disks. */
        for (size_t i = 0; i < n; i++) {
                _cleanup_(volume_view_done) volume_view vv = {};

                if (!plans[i].volume_id)
                        continue;
                r = volume_create_keyed(m, plans[i].device, plans[i].volume_id, plans[i].key_ref, force,
                                        i == 0 ? &sys_key : NULL, &vv, error);
                if (r < 0)
                        goto out;
                n_formatted++;
                if (i == 0) {
                        /* The engine lock is given up during the copy: nothing else touches the new system
                         * disk meanwhile (an attach of it waits). */
                        void *vlock = engine_volume_lock(plans[0].volume_id);

                        r = image_copy_payload(img.path, img_key, plans[0].device, sys_key, img.size,
                                               image_copy_progress, NULL);
                        engine_volume_unlock(vlock);
                        if (r < 0) {
                                r = evs_bus_error_setf(error, -r, "Cannot copy image %s onto %s: %s.", img.name,
                                                       plans[0].device, strerror(-r));
                                goto out;
                        }
                }
        }

        v.created = now_realtime();
        if (free_and_strdup_nonempty(&v.name, name) < 0 || free_and_strdup_nonempty(&v.image, img.id) < 0 ||
            free_and_strdup_nonempty(&v.image_name, img.name) < 0 ||
            free_and_strdup_nonempty(&v.as_config, cfg.name) < 0)
                goto oom;
        v.data = calloc(MAX(n_data, (size_t) 1), sizeof(disk_spec));
        if (!v.data)
                goto oom;
        v.n_data = n_data;
        for (size_t i = 0; i < n; i++) {
                disk_spec *d = i == 0 ? &v.system : &v.data[i - 1];

                d->device = TAKE_PTR(plans[i].device);
                d->volume_id = TAKE_PTR(plans[i].volume_id);
                d->plain = !d->volume_id;
                (void) disk_fill_live(m, d);
        }
        r = server_db_save(m->config.state_dir, &v);
        if (r < 0) {
                r = evs_bus_error_setf(error, -r, "Cannot record server %s (its disks are formatted): %s.", name,
                                       strerror(-r));
                goto out;
        }
        log_id(LOG_INFO, 0, EVS_MESSAGE_SERVER_CREATED, "Created server %s from image %s%s%s: system disk %s, %zu data disk(s).", name, img.name,
                 cfg.name ? " (AS configuration " : "", cfg.name ? cfg.name : "", v.system.device, n_data);

        /* Attach everything; a volume that cannot attach leaves the server created and says why. */
        for (size_t i = 0; i <= v.n_data; i++) {
                _cleanup_(volume_view_done) volume_view vv = {};
                sd_bus_error e = SD_BUS_ERROR_NULL;
                disk_spec *d = i == 0 ? &v.system : &v.data[i - 1];
                bool already = false;

                if (d->plain)
                        continue;
                r = volume_attach(m, d->device, &vv, &already, &e);
                if (r < 0) {
                        log_id(LOG_WARNING, 0, EVS_MESSAGE_SERVER_VOLUME_NOT_ATTACHED, "Server %s: volume %s not attached: %s", name, d->volume_id, e.message);
                        if (!v.warning &&
                            asprintf(&v.warning, "volume %s not attached: %s", d->volume_id, e.message) < 0)
                                v.warning = NULL;
                }
                sd_bus_error_free(&e);
        }
        {
                char *w = TAKE_PTR(v.warning);

                fill_live(m, &v);
                if (w) {
                        free(v.warning);
                        v.warning = w;
                }
        }
        *ret = v;
        v = (server_record) {};
        r = 0;
        goto out;

oom:
        r = -ENOMEM;
out:
        /* Checked first, a disk can still fail while being written (an I/O error, the KMS gone): say what
         * was formatted already, so that the operator retries with --force knowingly. */
        if (r < 0 && n_formatted > 0)
                log_id(LOG_WARNING, 0, EVS_MESSAGE_SERVER_CREATE_FAILED, "Creating server %s failed after formatting %zu disk(s), starting with %s; no server was "
                            "recorded.",
                            name, n_formatted, plans[0].device ?: "?");
        for (size_t i = 0; i < ELEMENTSOF(plans); i++)
                disk_plan_done(&plans[i]);
        return r;
}

/* --- delete, image --- */

int server_delete(manager *m, const char *name, bool force, server_record *ret, sd_bus_error *error) {
        _cleanup_(server_record_done) server_record v = {};
        int r;

        r = server_get(m, name, &v, error);
        if (r < 0)
                return r;
        /* The detach guard of every volume first (one describe each): a volume that could not be attached
         * again, or that is in use, keeps the whole server, nothing detached. --force: no guard, no KMS call. */
        for (size_t i = 0; !force && i <= v.n_data; i++) {
                disk_spec *d = i == 0 ? &v.system : &v.data[i - 1];
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                bool was_attached = false, deferred = false;

                if (d->plain || !d->mapping)
                        continue;
                r = volume_detach(m, d->volume_id, VOLUME_DETACH_CHECK, &was_attached, &deferred, &e);
                if (r < 0) {
                        if (!sd_bus_error_is_set(&e))
                                return r;
                        (void) sd_bus_error_setf(error, e.name, "Refusing to delete server %s (nothing detached): %s",
                                                 v.name, e.message);
                        return r;
                }
        }
        for (size_t i = 0; i <= v.n_data; i++) {
                disk_spec *d = i == 0 ? &v.system : &v.data[i - 1];
                bool was_attached = false, deferred = false;

                if (d->plain || !d->mapping)
                        continue;
                r = volume_detach(m, d->volume_id, force ? VOLUME_DETACH_FORCED : VOLUME_DETACH_CHECKED,
                                  &was_attached, &deferred, error);
                if (r < 0)
                        return r;
                d->mapping = mfree(d->mapping);
        }
        r = docstore_remove(m->config.state_dir, KIND, v.name);
        if (r < 0 && r != -ENOENT)
                return evs_bus_error_setf(error, -r, "Cannot delete the record of server %s: %s.", v.name,
                                          strerror(-r));
        log_id(LOG_INFO, 0, EVS_MESSAGE_SERVER_DELETED, "Deleted server %s; its volumes are detached, its disks and their data left as they are.", v.name);
        v.state = "detached";
        *ret = v;
        v = (server_record) {};
        return 0;
}

int server_create_image(manager *m, const char *server, const char *name, image_view *ret, sd_bus_error *error) {
        _cleanup_(server_record_done) server_record v = {};
        _cleanup_free_ char *source = NULL;
        int r;

        r = server_record_load(m, server, &v, error);
        if (r < 0)
                return r;
        if (v.system.plain || !v.system.volume_id)
                return evs_bus_error_setf(
                        error, ENODATA,
                        "Refusing to make image %s from server %s: its system disk %s is not encrypted.",
                        strempty(name), v.name, v.system.device);
        if (asprintf(&source, "server:%s", v.name) < 0)
                return -ENOMEM;
        return image_create_from_volume(m, v.system.device, v.system.volume_id, name, source, ret, error);
}
