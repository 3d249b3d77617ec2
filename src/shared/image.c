/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <fcntl.h>
#include <libcryptsetup.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include "crypto.h"
#include "docstore.h"
#include "image.h"
#include "json-util.h"
#include "luks.h"
#include "strv.h"
#include "token.h"
#include "wait-hooks.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct crypt_device *, crypt_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_CIPHER_CTX *, EVP_CIPHER_CTX_free);

#define CHUNK (1024U * 1024U)
#define KIND "images"

int image_id_new(char ret[static 17]) {
        char uuid[37];
        size_t n = 0;
        int r;

        r = uuid_random(uuid);
        if (r < 0)
                return r;
        memcpy(ret, IMAGE_ID_PREFIX, strlen(IMAGE_ID_PREFIX));
        n = strlen(IMAGE_ID_PREFIX);
        for (const char *p = uuid; *p && n < 16; p++)
                if (*p != '-')
                        ret[n++] = *p;
        ret[n] = 0;
        return 0;
}

bool image_name_valid(const char *name) {
        return volume_id_valid(name);
}

/* Reads exactly @size bytes unless the source ends: returns the number read. */
static ssize_t read_full(int fd, void *buf, size_t size) {
        size_t done = 0;

        while (done < size) {
                ssize_t n = read(fd, (uint8_t *) buf + done, size - done);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return negative_errno();
                if (n == 0)
                        break;
                done += (size_t) n;
        }
        return (ssize_t) done;
}

static int write_full(int fd, const void *buf, size_t size, off_t offset) {
        size_t done = 0;

        while (done < size) {
                ssize_t n = pwrite(fd, (const uint8_t *) buf + done, size - done, offset + (off_t) done);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return negative_errno();
                done += (size_t) n;
        }
        return 0;
}

/* aes-xts-plain64 of one sector, as dm-crypt does it: IV = 512-byte sector number, little-endian. The
 * direction is the one @ctx was set up for. */
static int xts_sector(EVP_CIPHER_CTX *ctx, uint64_t sector512, uint8_t *buf, size_t size) {
        uint8_t iv[16] = {};
        int n = 0;

        for (size_t i = 0; i < 8; i++)
                iv[i] = (uint8_t) (sector512 >> (8 * i));
        if (EVP_CipherInit_ex(ctx, NULL, NULL, NULL, iv, -1) != 1 ||
            EVP_CipherUpdate(ctx, buf, &n, buf, (int) size) != 1 || (size_t) n != size)
                return -EIO;
        return 0;
}

/* An EVS volume (image file or block device) opened for userspace XTS on its data area. */
typedef struct xts_volume {
        EVP_CIPHER_CTX *ctx;
        uint64_t offset;    /* bytes: where the data area starts */
        uint64_t data_size; /* bytes: the data area as it is now (the file or device size minus @offset) */
        uint32_t sector_size;
} xts_volume;

static void xts_volume_done(xts_volume *v) {
        EVP_CIPHER_CTX_free(v->ctx);
        *v = (xts_volume) {};
}

/* Takes the volume key of @path from its keyslot with @data_key and sets up AES-XTS in direction
 * @encrypt. -EINVAL for a header this does not support, -EPERM for a data key that opens no keyslot. */
static int xts_volume_open(const char *path, const secret *data_key, bool encrypt, xts_volume *ret) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *ctx = NULL;
        _cleanup_(secret_freep) secret *vk = NULL;
        _cleanup_(closep) int fd = -EBADF;
        size_t vk_size = EVS_LUKS_VOLUME_KEY_SIZE;
        uint32_t sector_size;
        uint64_t offset;
        off_t end;
        int r;

        r = luks_load(path, &cd);
        if (r < 0)
                return r;
        if (!streq_ptr(crypt_get_cipher(cd), EVS_LUKS_CIPHER) ||
            !streq_ptr(crypt_get_cipher_mode(cd), EVS_LUKS_CIPHER_MODE) ||
            crypt_get_volume_key_size(cd) != (int) EVS_LUKS_VOLUME_KEY_SIZE)
                return -EINVAL;
        sector_size = (uint32_t) crypt_get_sector_size(cd);
        if (sector_size < 512 || sector_size > 4096 || CHUNK % sector_size != 0)
                return -EINVAL;
        offset = crypt_get_data_offset(cd) * 512U;

        r = secret_new(EVS_LUKS_VOLUME_KEY_SIZE, &vk);
        if (r < 0)
                return r;
        r = crypt_volume_key_get(cd, CRYPT_ANY_SLOT, (char *) vk->data, &vk_size, (const char *) data_key->data,
                                 data_key->size);
        if (r < 0)
                return r;
        if (vk_size != EVS_LUKS_VOLUME_KEY_SIZE)
                return -EINVAL;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        end = lseek(fd, 0, SEEK_END);
        if (end < 0)
                return negative_errno();

        ctx = EVP_CIPHER_CTX_new();
        if (!ctx)
                return -ENOMEM;
        if (EVP_CipherInit_ex(ctx, EVP_aes_256_xts(), NULL, vk->data, NULL, encrypt ? 1 : 0) != 1)
                return -EIO;
        *ret = (xts_volume) {
                .ctx = TAKE_PTR(ctx),
                .offset = offset,
                .data_size = (uint64_t) end > offset ? (uint64_t) end - offset : 0,
                .sector_size = sector_size,
        };
        return 0;
}

/* Opens @path for writing @padded bytes of data area: a regular file is grown, a block device must be
 * large enough (-ENOSPC). */
static int open_for_payload(const char *path, const xts_volume *v, uint64_t padded, int *ret_fd) {
        _cleanup_(closep) int fd = -EBADF;
        struct stat st;

        fd = open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (S_ISREG(st.st_mode)) {
                if ((uint64_t) st.st_size < v->offset + padded && ftruncate(fd, (off_t) (v->offset + padded)) < 0)
                        return negative_errno();
        } else if (v->data_size < padded)
                return -ENOSPC;
        *ret_fd = TAKE_FD(fd);
        return 0;
}

static int xts_buffer(const xts_volume *v, uint64_t done, uint8_t *buf, size_t size) {
        for (size_t s = 0; s < size; s += v->sector_size) {
                int r = xts_sector(v->ctx, (done + s) / 512U, buf + s, v->sector_size);

                if (r < 0)
                        return r;
        }
        return 0;
}

int image_encrypt_payload(const char *image, const secret *data_key, int source_fd, uint64_t size,
                          image_progress_fn progress, void *userdata) {
        _cleanup_(xts_volume_done) xts_volume v = {};
        _cleanup_(closep) int fd = -EBADF;
        _cleanup_free_ uint8_t *buf = NULL;
        uint64_t padded, done = 0;
        int r;

        if (!data_key || source_fd < 0 || size == 0)
                return -EINVAL;

        r = xts_volume_open(image, data_key, true, &v);
        if (r < 0)
                return r;
        padded = (size + v.sector_size - 1) / v.sector_size * v.sector_size;
        r = open_for_payload(image, &v, padded, &fd);
        if (r < 0)
                return r;
        if (lseek(source_fd, 0, SEEK_SET) < 0)
                return negative_errno();

        buf = malloc(CHUNK);
        if (!buf)
                return -ENOMEM;
        /* The copy touches nothing shared: a host's lock is given up meanwhile (wait-hooks.h). */
        r = 0;
        wait_hooks_begin();
        while (done < padded) {
                size_t want = (size_t) MIN((uint64_t) CHUNK, size - MIN(done, size)), chunk;
                ssize_t n = want > 0 ? read_full(source_fd, buf, want) : 0;

                if (n < 0) {
                        r = (int) n;
                        break;
                }
                if ((size_t) n < want) {
                        r = -EIO; /* the source shrank under us */
                        break;
                }
                chunk = (size_t) MIN((uint64_t) CHUNK, padded - done);
                memset(buf + n, 0, chunk - (size_t) n);
                r = xts_buffer(&v, done, buf, chunk);
                if (r < 0)
                        break;
                r = write_full(fd, buf, chunk, (off_t) (v.offset + done));
                if (r < 0)
                        break;
                done += chunk;
                if (progress)
                        progress(done, padded, userdata);
        }
        wait_hooks_end();
        if (buf) /* never NULL here: the test quiets gcc's -Wnonnull under -fsanitize */
                explicit_bzero(buf, CHUNK);
        if (r < 0)
                return r;
        if (fsync(fd) < 0)
                return negative_errno();
        return 0;
}

int image_data_size(const char *path, uint64_t *ret) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        _cleanup_(closep) int fd = -EBADF;
        uint64_t offset;
        off_t end;
        int r;

        r = luks_load(path, &cd);
        if (r < 0)
                return r;
        offset = crypt_get_data_offset(cd) * 512U;
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        end = lseek(fd, 0, SEEK_END);
        if (end < 0)
                return negative_errno();
        *ret = (uint64_t) end > offset ? (uint64_t) end - offset : 0;
        return 0;
}

int image_copy_payload(const char *source, const secret *source_key, const char *target, const secret *target_key,
                       uint64_t size, image_progress_fn progress, void *userdata) {
        _cleanup_(xts_volume_done) xts_volume src = {}, dst = {};
        _cleanup_(closep) int in = -EBADF, out = -EBADF;
        _cleanup_free_ uint8_t *buf = NULL;
        uint64_t readable, padded, done = 0;
        uint32_t align;
        int r;

        if (!source_key || !target_key || size == 0)
                return -EINVAL;

        r = xts_volume_open(source, source_key, false, &src);
        if (r < 0)
                return r;
        r = xts_volume_open(target, target_key, true, &dst);
        if (r < 0)
                return r;
        /* Both sector sizes are powers of two: the larger is a multiple of the smaller. */
        align = MAX(src.sector_size, dst.sector_size);
        readable = (size + src.sector_size - 1) / src.sector_size * src.sector_size;
        padded = (size + align - 1) / align * align;
        if (readable > src.data_size)
                return -EIO;
        r = open_for_payload(target, &dst, (size + dst.sector_size - 1) / dst.sector_size * dst.sector_size, &out);
        if (r < 0)
                return r;
        in = open(source, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (in < 0)
                return negative_errno();

        buf = malloc(CHUNK);
        if (!buf)
                return -ENOMEM;
        /* The copy touches nothing shared: a host's lock is given up meanwhile (wait-hooks.h). */
        r = 0;
        wait_hooks_begin();
        while (done < padded) {
                size_t chunk = (size_t) MIN((uint64_t) CHUNK, padded - done);
                size_t avail = (size_t) MIN((uint64_t) chunk, readable - MIN(done, readable)), keep, write_size;
                ssize_t n;

                memset(buf, 0, chunk);
                n = avail > 0 ? pread(in, buf, avail, (off_t) (src.offset + done)) : 0;
                if (n < 0) {
                        r = negative_errno();
                        break;
                }
                if ((size_t) n < avail) {
                        r = -EIO;
                        break;
                }
                r = xts_buffer(&src, done, buf, avail);
                if (r < 0)
                        break;
                /* Nothing of the source past @size: its last sector is padded with zeros. */
                keep = (size_t) MIN((uint64_t) chunk, size - MIN(done, size));
                memset(buf + keep, 0, chunk - keep);
                /* The target's data area ends at @size rounded up to its own sector size. */
                write_size = (size_t) MIN((uint64_t) chunk,
                                          (size + dst.sector_size - 1) / dst.sector_size * dst.sector_size - done);
                r = xts_buffer(&dst, done, buf, write_size);
                if (r < 0)
                        break;
                r = write_full(out, buf, write_size, (off_t) (dst.offset + done));
                if (r < 0)
                        break;
                done += chunk;
                if (progress)
                        progress(done, padded, userdata);
        }
        wait_hooks_end();
        if (buf) /* never NULL here: the test quiets gcc's -Wnonnull under -fsanitize */
                explicit_bzero(buf, CHUNK);
        if (r < 0)
                return r;
        if (fsync(out) < 0)
                return negative_errno();
        return 0;
}

void image_record_done(image_record *i) {
        if (!i)
                return;
        free(i->id);
        free(i->name);
        free(i->key_id);
        free(i->key_alias);
        free(i->backend);
        free(i->cipher);
        free(i->source);
        free(i->corrupt);
        *i = (image_record) {};
}

void image_record_array_free(image_record *i, size_t n) {
        for (size_t k = 0; k < n; k++)
                image_record_done(&i[k]);
        free(i);
}

int image_dir(const char *state_dir, char **ret) {
        return asprintf(ret, "%s/images", state_dir) < 0 ? -ENOMEM : 0;
}

int image_path(const char *state_dir, const char *id, char **ret) {
        if (!volume_id_valid(id))
                return -EINVAL;
        return asprintf(ret, "%s/images/%s.img", state_dir, id) < 0 ? -ENOMEM : 0;
}

int image_db_save(const char *state_dir, const image_record *i) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        int r;

        if (!o)
                return -ENOMEM;
        if (!volume_id_valid(i->id) || !image_name_valid(i->name) || !i->key_id || !i->backend)
                return -EINVAL;
        if ((r = json_add_string(o, "id", i->id, false)) < 0 || (r = json_add_string(o, "name", i->name, false)) < 0 ||
            (r = json_add_string(o, "key_id", i->key_id, false)) < 0 ||
            (r = json_add_string(o, "key_alias", i->key_alias, true)) < 0 ||
            (r = json_add_string(o, "backend", i->backend, false)) < 0 ||
            (r = json_add_string(o, "cipher", i->cipher, true)) < 0 || (r = json_add_uint64(o, "size", i->size)) < 0 ||
            (r = json_add_string(o, "source", i->source, true)) < 0 ||
            (r = json_add_uint64(o, "created", i->created)) < 0)
                return r;
        return docstore_save(state_dir, KIND, i->id, o);
}

int image_db_load(const char *state_dir, const char *id, image_record *ret) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        _cleanup_(image_record_done) image_record i = {};
        uint64_t created = 0;
        int r;

        r = docstore_load(state_dir, KIND, id, &o);
        if (r < 0)
                return r;
        if (json_get_string_dup(o, "id", &i.id) < 0 || !streq_ptr(i.id, id) ||
            json_get_string_dup(o, "name", &i.name) < 0 || !image_name_valid(i.name) ||
            json_get_string_dup(o, "key_id", &i.key_id) < 0 || !i.key_id ||
            json_get_string_dup(o, "key_alias", &i.key_alias) < 0 ||
            json_get_string_dup(o, "backend", &i.backend) < 0 || !i.backend ||
            json_get_string_dup(o, "cipher", &i.cipher) < 0 || json_get_string_dup(o, "source", &i.source) < 0 ||
            json_get_uint64(o, "size", false, &i.size) < 0 || json_get_uint64(o, "created", false, &created) < 0)
                return -EUCLEAN;
        i.created = created;
        *ret = i;
        i = (image_record) {};
        return 0;
}

int image_db_remove(const char *state_dir, const char *id) {
        return docstore_remove(state_dir, KIND, id);
}

static int cmp_name(const void *a, const void *b) {
        const image_record *x = a, *y = b;
        int c = strcmp(x->name ?: x->id, y->name ?: y->id);

        return c != 0 ? c : strcmp(x->id, y->id);
}

static int load_one(void *userdata, const char *id, void *record) {
        return image_db_load(userdata, id, record);
}

static int load_one_or_corrupt(void *userdata, const char *id, void *record) {
        image_record *i = record;
        int r;

        r = image_db_load(userdata, id, i);
        if (r >= 0 || r == -ENOENT || r == -ENOMEM) /* -ENOENT: removed since the listing */
                return r;
        i->id = strdup(id);
        i->corrupt = docstore_error(userdata, KIND, id, r);
        if (!i->id || !i->corrupt) {
                image_record_done(i);
                return -ENOMEM;
        }
        return 0;
}

static int list(const char *state_dir, bool all, image_record **ret, size_t *ret_n) {
        int r;

        r = docstore_load_all(state_dir, KIND, sizeof(image_record), all ? load_one_or_corrupt : load_one,
                              (void *) state_dir, (void **) ret, ret_n);
        if (r >= 0 && *ret_n > 0)
                qsort(*ret, *ret_n, sizeof(image_record), cmp_name);
        return r;
}

int image_db_list(const char *state_dir, image_record **ret, size_t *ret_n) {
        return list(state_dir, false, ret, ret_n);
}

int image_db_list_all(const char *state_dir, image_record **ret, size_t *ret_n) {
        return list(state_dir, true, ret, ret_n);
}
