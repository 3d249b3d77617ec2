/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Encrypted images: import from a raw image file or block device, list, show, delete. */

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>

#include "evs-messages.h"
#include "dm.h"
#include "envelope.h"
#include "errors.h"
#include "fileio.h"
#include "image.h"
#include "image-ops.h"
#include "inherit.h"
#include "log.h"
#include "luks.h"
#include "records.h"
#include "volume-db.h"
#include "volume-ops.h"
#include "string-util.h"

void image_view_done(image_view *v) {
        if (!v)
                return;
        free(v->id);
        free(v->name);
        free(v->path);
        free(v->key_id);
        free(v->key_alias);
        free(v->backend);
        free(v->cipher);
        free(v->source);
        *v = (image_view) {};
}

void image_view_array_free(image_view *v, size_t n) {
        for (size_t i = 0; i < n; i++)
                image_view_done(&v[i]);
        free(v);
}

/* The view of a record; the image's own header wins for the key and the cipher. */
static int fill_view(manager *m, const image_record *rec, image_view *ret) {
        _cleanup_(image_view_done) image_view v = {};
        _cleanup_(luks_info_done) luks_info info = {};
        _cleanup_(kms_key_done) kms_key key = {};
        const char *reason, *key_id = rec->key_id, *alias = rec->key_alias, *backend = rec->backend,
                            *cipher = rec->cipher;
        kms_backend *b;
        int r;

        r = image_path(m->config.state_dir, rec->id, &v.path);
        if (r < 0)
                return r;
        if (luks_read(v.path, &info, &reason) >= 0) {
                key_id = info.token.key_id;
                alias = info.token.key_alias;
                backend = info.token.backend;
                cipher = info.cipher;
        }
        if ((r = free_and_strdup_nonempty(&v.id, rec->id)) < 0 ||
            (r = free_and_strdup_nonempty(&v.name, rec->name)) < 0 ||
            (r = free_and_strdup_nonempty(&v.key_id, key_id)) < 0 ||
            (r = free_and_strdup_nonempty(&v.key_alias, alias)) < 0 ||
            (r = free_and_strdup_nonempty(&v.backend, backend)) < 0 ||
            (r = free_and_strdup_nonempty(&v.cipher, cipher)) < 0 ||
            (r = free_and_strdup_nonempty(&v.source, rec->source)) < 0)
                return r;
        v.size = rec->size;
        v.created = rec->created;
        if (kms_registry_get(m->registry, backend, &b) < 0)
                v.key_state = "unavailable";
        else {
                r = kms_key_get(b, key_id, &key);
                v.key_state = r >= 0 ? kms_key_state_to_string(key.state) : r == -ENOENT ? "destroyed" : "unavailable";
        }
        *ret = v;
        v = (image_view) {};
        return 0;
}

/* Finds an image by id, else by name. -ENXIO; the error of loading record @ref when it is the id of a record
 * that does not load (and no image has that name). */
static int find_record(manager *m, const char *ref, image_record *ret) {
        image_record *l = NULL;
        size_t n = 0;
        int r, k = -ENOENT;

        if (volume_id_valid(ref) && (k = image_db_load(m->config.state_dir, ref, ret)) >= 0)
                return 0;
        r = image_db_list(m->config.state_dir, &l, &n);
        if (r < 0)
                return r;
        r = k == -ENOENT || k == -EINVAL ? -ENXIO : k;
        for (size_t i = 0; i < n; i++)
                if (streq(l[i].name, ref)) {
                        *ret = l[i];
                        l[i] = (image_record) {};
                        r = 0;
                        break;
                }
        image_record_array_free(l, n);
        return r;
}

/* Opens the source read-only and sizes it. Sets @error. */
static int open_source(const char *file, int *ret_fd, uint64_t *ret_size, sd_bus_error *error) {
        _cleanup_(closep) int fd = -EBADF;
        struct stat st;
        uint64_t size;

        if (isempty(file) || file[0] != '/')
                return evs_bus_error_setf(error, EINVAL, "The image file must be an absolute path: '%s'.",
                                          strempty(file));
        /* O_NONBLOCK: a FIFO must not hang the daemon; it is refused below anyway. */
        fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0 && errno == ENOENT)
                return evs_bus_error_setf(error, ENOENT, "Cannot import %s: no such file.", file);
        if (fd < 0)
                return evs_bus_error_setf(error, errno == EACCES ? EACCES : EINVAL,
                                          "Cannot import %s: cannot open it: %s.", file, strerror(errno));
        if (fstat(fd, &st) < 0)
                return evs_bus_error_setf(error, errno, "Cannot import %s: %s.", file, strerror(errno));
        if (S_ISDIR(st.st_mode))
                return evs_bus_error_setf(error, EINVAL, "Cannot import %s: it is a directory, not an image file.",
                                          file);
        if (S_ISREG(st.st_mode))
                size = (uint64_t) st.st_size;
        else if (S_ISBLK(st.st_mode)) {
                if (ioctl(fd, BLKGETSIZE64, &size) < 0)
                        return evs_bus_error_setf(error, errno, "Cannot import %s: cannot read its size: %s.", file,
                                                  strerror(errno));
        } else
                return evs_bus_error_setf(error, EINVAL,
                                          "Cannot import %s: it is neither a regular file nor a block device.", file);
        if (size == 0)
                return evs_bus_error_setf(error, EINVAL, "Cannot import %s: it is empty.", file);
        /* Readable? A first read says so now, in one line, rather than halfway through. */
        {
                char c;

                if (pread(fd, &c, 1, 0) != 1)
                        return evs_bus_error_setf(error, EIO, "Cannot import %s: cannot read it: %s.", file,
                                                  strerror(errno ?: EIO));
        }
        /* Back to blocking reads. */
        if (fcntl(fd, F_SETFL, O_RDONLY) < 0)
                return evs_bus_error_setf(error, errno, "Cannot import %s: %s.", file, strerror(errno));
        *ret_fd = TAKE_FD(fd);
        *ret_size = size;
        return 0;
}

/* Removes what an import interrupted by a crash left: STATE/images/.<id>.img.tmp. The daemon runs one
 * import at a time, so none of them is in progress. */
static void remove_stale_temp_files(const char *dir) {
        DIR *d = opendir(dir);
        struct dirent *de;

        if (!d)
                return;
        while ((de = readdir(d))) {
                size_t n = strlen(de->d_name);

                if (de->d_name[0] != '.' || n <= strlen(".img.tmp") + 1 ||
                    !streq(de->d_name + n - strlen(".img.tmp"), ".img.tmp"))
                        continue;
                if (unlinkat(dirfd(d), de->d_name, 0) >= 0)
                        log_info("Removed %s/%s, left by an interrupted image import.", dir, de->d_name);
        }
        closedir(d);
}

/* Progress of a long copy, on the STATUS= line (it runs as a job: the event loop feeds the watchdog). */
void image_copy_progress(uint64_t done, uint64_t total, void *userdata) {
        static __thread usec_t last = 0;
        usec_t now = now_monotonic();

        if (now - last < USEC_PER_SEC)
                return;
        last = now;
        (void) sd_notifyf(false, "STATUS=Copying an image: %" PRIu64 "%% done.",
                          total ? done * 100 / total : 100);
}

static int name_taken(manager *m, const char *name) {
        image_record *l = NULL;
        size_t n = 0;
        int r;

        r = image_db_list(m->config.state_dir, &l, &n);
        if (r < 0)
                return r;
        r = 0;
        for (size_t i = 0; i < n; i++)
                if (streq(l[i].name, name))
                        r = 1;
        image_record_array_free(l, n);
        return r;
}

/* Not a volume id (they never start with a dot): the lock of the image store for engine_volume_lock(). */
#define IMAGE_STORE_LOCK ".images"

static int check_new_name(manager *m, const char *name, sd_bus_error *error);

/* How an image's data area is filled: @tmp is formatted for @data_key. */
typedef int (*payload_fn)(const char *tmp, const secret *data_key, void *userdata);

/* Makes image @name under @key_ref: a temporary file formatted and filled by @fill, renamed into place,
 * then recorded with @size and @source. Sets @error. */
static int image_write(manager *m, const char *name, const char *key_ref, uint64_t size, const char *source,
                       payload_fn fill, void *userdata, image_view *ret, sd_bus_error *error) {
        _cleanup_(kms_key_done) kms_key key = {};
        _cleanup_(secret_freep) secret *data_key = NULL;
        _cleanup_(evs_token_done) evs_token t = {};
        _cleanup_(image_record_done) image_record rec = {};
        _cleanup_(luks_info_done) luks_info info = {};
        _cleanup_free_ char *dir = NULL, *tmp_name = NULL, *tmp = NULL, *final = NULL, *what = NULL;
        _cleanup_(closep) int fd = -EBADF, dfd = -EBADF;
        _cleanup_(engine_volume_unlockp) void *store = NULL;
        const char *reason;
        char id[17];
        kms_backend *b = NULL;
        int r;

        /* One image written at a time: the engine lock is given up around the KMS calls and the copy, and
         * meanwhile another image's name check and its sweep of stale temporary files must wait. */
        store = engine_volume_lock(IMAGE_STORE_LOCK);
        r = check_new_name(m, name, error);
        if (r < 0)
                return r;

        r = kms_registry_resolve(m->registry, empty_to_null(key_ref), /* "" on the bus: not given */ &b, &key);
        if (r == -ENOENT && !b)
                return evs_bus_error_setf(error, ENOENT, "Unknown KMS backend in key reference '%s'.", key_ref);
        if (r == -EINVAL)
                return evs_bus_error_setf(error, EINVAL, "Invalid key reference '%s'.", key_ref);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Key %s: %s.", isempty(key_ref) ? KMS_DEFAULT_KEY_ALIAS : key_ref,
                                          kms_backend_error(b) ?: strerror(-r));
        r = kms_key_state_to_errno(key.state);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Refusing to make image %s: key %s%s%s%s is %s.", name,
                                          KMS_KEY_AS_TYPED(key_ref, key.id), kms_key_state_to_string(key.state));

        r = image_id_new(id);
        if (r >= 0)
                r = image_dir(m->config.state_dir, &dir);
        if (r >= 0)
                r = mkdir_p(dir, 0700);
        if (r >= 0)
                r = image_path(m->config.state_dir, id, &final);
        if (r >= 0 && (asprintf(&tmp_name, ".%s.img.tmp", id) < 0 || asprintf(&tmp, "%s/%s", dir, tmp_name) < 0))
                r = -ENOMEM;
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot prepare the image store: %s.", strerror(-r));
        remove_stale_temp_files(dir);

        /* Header (16 MiB) plus the data rounded up to whole 4096-byte sectors. */
        fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600);
        if (fd < 0)
                return evs_bus_error_setf(error, errno, "Cannot create %s: %s.", tmp, strerror(errno));
        if (ftruncate(fd, (off_t) (16U * 1024U * 1024U + (size + 4095) / 4096 * 4096)) < 0) {
                r = -errno;
                (void) unlink(tmp);
                return evs_bus_error_setf(error, -r, "Cannot size %s: %s.", tmp, strerror(-r));
        }

        r = envelope_seal(b, &key, id, &data_key, &t);
        if (r < 0) {
                (void) unlink(tmp);
                return evs_bus_error_setf(error, -r, "Cannot wrap a data key with key %s: %s.", key.id,
                                          kms_backend_error(b) ?: strerror(-r));
        }
        r = luks_format(tmp, id, data_key, &t, false, &what);
        if (r >= 0)
                r = fill(tmp, data_key, userdata);
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        if (r >= 0 && rename(tmp, final) < 0)
                r = -errno;
        if (r < 0) {
                (void) unlink(tmp);
                return evs_bus_error_setf(error, -r, "Cannot write image %s from %s: %s.", name, source, strerror(-r));
        }
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0)
                (void) fsync(dfd);

        r = luks_read(final, &info, &reason);
        if (r < 0) {
                (void) unlink(final);
                return evs_bus_error_setf(error, -r, "Cannot read back image %s: %s.", final, reason ?: strerror(-r));
        }
        rec = (image_record) {
                .size = size,
                .created = now_realtime(),
        };
        if ((r = free_and_strdup_nonempty(&rec.id, id)) < 0 || (r = free_and_strdup_nonempty(&rec.name, name)) < 0 ||
            (r = free_and_strdup_nonempty(&rec.key_id, t.key_id)) < 0 ||
            (r = free_and_strdup_nonempty(&rec.key_alias, t.key_alias)) < 0 ||
            (r = free_and_strdup_nonempty(&rec.backend, t.backend)) < 0 ||
            (r = free_and_strdup_nonempty(&rec.cipher, info.cipher)) < 0 ||
            (r = free_and_strdup_nonempty(&rec.source, source)) < 0 ||
            (r = image_db_save(m->config.state_dir, &rec)) < 0) {
                (void) unlink(final);
                return evs_bus_error_setf(error, -r, "Cannot record image %s: %s.", name, strerror(-r));
        }

        log_id(LOG_INFO, 0, EVS_MESSAGE_IMAGE_CREATED, "Made image %s (%s) from %s: %" PRIu64 " bytes, key %s (%s), %s.", name, id, source, size, t.key_id,
                 t.backend, final);
        return fill_view(m, &rec, ret);
}

static int check_new_name(manager *m, const char *name, sd_bus_error *error) {
        int r;

        if (!image_name_valid(name))
                return evs_bus_error_setf(error, EINVAL, "Invalid image name '%s': " VOLUME_ID_RULE ".",
                                          strempty(name));
        r = name_taken(m, name);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot list images: %s.", strerror(-r));
        if (r > 0)
                return evs_bus_error_setf(error, EEXIST, "An image named %s exists already.", name);
        return 0;
}

typedef struct import_source {
        int fd;
        uint64_t size;
} import_source;

static int fill_from_file(const char *tmp, const secret *data_key, void *userdata) {
        import_source *s = userdata;

        return image_encrypt_payload(tmp, data_key, s->fd, s->size, image_copy_progress, NULL);
}

int image_import(manager *m, const char *file, const char *name, const char *key_ref, image_view *ret,
                 sd_bus_error *error) {
        _cleanup_(closep) int src = -EBADF;
        uint64_t size = 0;
        int r;

        r = check_new_name(m, name, error);
        if (r < 0)
                return r;
        r = open_source(file, &src, &size, error);
        if (r < 0)
                return r;
        return image_write(m, name, key_ref, size, file, fill_from_file, &(import_source) { .fd = src, .size = size },
                           ret, error);
}

typedef struct volume_source {
        const char *device;
        const secret *data_key;
        uint64_t size;
} volume_source;

static int fill_from_volume(const char *tmp, const secret *data_key, void *userdata) {
        volume_source *s = userdata;

        return image_copy_payload(s->device, s->data_key, tmp, data_key, s->size, image_copy_progress, NULL);
}

int image_create_from_volume(manager *m, const char *device, const char *volume_id, const char *name,
                             const char *source, image_view *ret, sd_bus_error *error) {
        _cleanup_(luks_info_done) luks_info info = {};
        _cleanup_(secret_freep) secret *data_key = NULL;
        _cleanup_(kms_key_done) kms_key key = {};
        _cleanup_free_ char *key_ref = NULL;
        const char *reason = NULL;
        kms_backend *b;
        _cleanup_(engine_volume_unlockp) void *vlock = NULL;
        uint64_t size = 0;
        int r;

        r = check_new_name(m, name, error);
        if (r < 0)
                return r;
        vlock = engine_volume_lock(volume_id); /* the source volume stays as it is through the copy */
        r = luks_read(device, &info, &reason);
        if (r < 0 || !streq_ptr(info.subsystem, EVS_LUKS_SUBSYSTEM) || !streq_ptr(info.label, volume_id))
                return evs_bus_error_setf(error, ENODATA,
                                          "Refusing to make image %s from %s: %s is not encrypted (%s).", name, source,
                                          device, r == -ENODATA ? reason : r < 0 ? strerror(-r) : "not EVS volume");
        r = kms_registry_get(m->registry, info.token.backend, &b);
        if (r < 0)
                return evs_bus_error_setf(error, ENOENT, "Volume %s: unknown KMS backend %s.", volume_id,
                                          info.token.backend);
        r = envelope_open(b, &info.token, volume_id, &key, &data_key);
        if (r == -EKEYREVOKED || r == -EKEYEXPIRED || r == -ENOKEY)
                return evs_bus_error_setf(error, -r, "Refusing to make image %s from %s: key %s of %s is %s.", name,
                                          source, info.token.key_id, volume_id,
                                          r == -EKEYREVOKED   ? "disabled"
                                          : r == -EKEYEXPIRED ? "pending-deletion"
                                                              : "destroyed");
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot unwrap the data key of %s: %s.", volume_id,
                                          kms_backend_error(b) ?: strerror(-r));
        r = image_data_size(device, &size);
        if (r >= 0 && size == 0)
                r = -ENOSPC;
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot size the data area of %s: %s.", device, strerror(-r));
        r = inherit_image_key_from_volume(&info.token, &key_ref);
        if (r < 0)
                return r;
        return image_write(m, name, key_ref, size, source, fill_from_volume,
                           &(volume_source) { .device = device, .data_key = data_key, .size = size }, ret, error);
}

int image_get(manager *m, const char *ref, image_view *ret, sd_bus_error *error) {
        _cleanup_(image_record_done) image_record rec = {};
        int r;

        if (isempty(ref))
                return evs_bus_error_setf(error, EINVAL, "No image given.");
        r = find_record(m, ref, &rec);
        if (r == -ENXIO)
                return evs_bus_error_setf(error, ENXIO, "No image %s.", ref);
        if (r < 0 && r != -ENOMEM)
                return record_error(m, "images", "Image", ref, r, error);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot look up image %s: %s.", ref, strerror(-r));
        r = fill_view(m, &rec, ret);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot show image %s: %s.", ref, strerror(-r));
        return 0;
}

int image_list(manager *m, image_view **ret, size_t *ret_n, sd_bus_error *error) {
        image_record *recs = NULL;
        image_view *l;
        size_t n = 0;
        int r;

        r = image_db_list_all(m->config.state_dir, &recs, &n);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot list images: %s.", strerror(-r));
        l = calloc(MAX(n, (size_t) 1), sizeof(image_view));
        if (!l) {
                image_record_array_free(recs, n);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                if (recs[i].corrupt) {
                        /* Listed by id, its key state unknown (ListUnreadableRecords says why), never dropped. */
                        log_warning("Image %s: %s; it is listed as unreadable.", recs[i].id, recs[i].corrupt);
                        l[i].key_state = "unknown";
                        r = image_path(m->config.state_dir, recs[i].id, &l[i].path);
                        if (r >= 0 && !(l[i].id = strdup(recs[i].id)))
                                r = -ENOMEM;
                } else
                        r = fill_view(m, &recs[i], &l[i]);
                if (r < 0) {
                        image_record_array_free(recs, n);
                        image_view_array_free(l, n);
                        return evs_bus_error_setf(error, -r, "Cannot list images: %s.", strerror(-r));
                }
        }
        image_record_array_free(recs, n);
        *ret = l;
        *ret_n = n;
        return 0;
}

int image_rewrap(manager *m, const char *ref, const char *key_ref, image_view *ret, sd_bus_error *error) {
        _cleanup_(image_record_done) image_record rec = {};
        _cleanup_(image_view_done) image_view v = {};
        _cleanup_(volume_view_done) volume_view vv = {};
        int r;

        r = image_get(m, ref, &v, error);
        if (r < 0)
                return r;
        r = volume_rewrap(m, v.path, key_ref, &vv, error);
        if (r < 0)
                return r;

        /* The header is the truth (and now names the new CMK); keep the record in step. */
        r = image_db_load(m->config.state_dir, v.id, &rec);
        if (r >= 0 && ((r = free_and_strdup(&rec.key_id, vv.key_id)) < 0 ||
                       (r = free_and_strdup(&rec.key_alias, vv.key_alias)) < 0 ||
                       (r = free_and_strdup(&rec.backend, vv.backend)) < 0))
                return r;
        if (r >= 0)
                r = image_db_save(m->config.state_dir, &rec);
        if (r < 0)
                log_warning_errno(r, "Cannot record the new key of image %s: %m", v.id);
        image_view_done(&v);
        return image_get(m, ref, ret, error);
}

int image_delete(manager *m, const char *ref, image_view *ret, sd_bus_error *error) {
        _cleanup_(image_view_done) image_view v = {};
        _cleanup_(dm_mapping_info_done) dm_mapping_info dmi = {};
        _cleanup_free_ char *mapping = NULL, *dir = NULL, *name = NULL;
        int r;

        r = image_get(m, ref, &v, error);
        if (r < 0)
                return r;
        r = volume_mapping_name(v.id, &mapping);
        if (r < 0)
                return r;
        if (dm_mapping_get(mapping, &dmi) >= 0 && dmi.exists)
                return evs_bus_error_setf(error, EBUSY, "Image %s is attached as /dev/mapper/%s; detach it first.",
                                          v.name, mapping);

        /* The record first: a crash in between leaves an unlisted file, never a listed image without one. */
        r = image_db_remove(m->config.state_dir, v.id);
        if (r < 0 && r != -ENOENT)
                return evs_bus_error_setf(error, -r, "Cannot delete image %s: %s.", v.name, strerror(-r));
        r = image_dir(m->config.state_dir, &dir);
        if (r >= 0 && asprintf(&name, "%s.img", v.id) < 0)
                r = -ENOMEM;
        if (r >= 0)
                r = unlink_durable(dir, name);
        if (r < 0 && r != -ENOENT)
                return evs_bus_error_setf(error, -r, "Cannot delete the file of image %s: %s.", v.name, strerror(-r));
        (void) volume_db_remove(m->config.state_dir, v.id); /* if it was ever attached */

        log_id(LOG_INFO, 0, EVS_MESSAGE_IMAGE_DELETED, "Deleted image %s (%s); key %s (%s) is left as it was.", v.name, v.id, strna(v.key_id),
                 strna(v.backend));
        *ret = v;
        v = (image_view) {};
        return 0;
}
