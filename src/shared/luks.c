/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <blkid.h>
#include <fcntl.h>
#include <libcryptsetup.h>
#include <linux/keyctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "crypto.h"
#include "dm.h"
#include "envelope.h"
#include "json-util.h"
#include "luks.h"
#include "string-util.h"
#include "wait-hooks.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(struct crypt_device *, crypt_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(blkid_probe, blkid_free_probe);

int luks_probe_signature(const char *device, char **ret_what) {
        _cleanup_(blkid_free_probep) blkid_probe pr = NULL;
        const char *type = NULL;
        struct stat st;
        int r;

        if (stat(device, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
                return -ENOTBLK; /* a character device, a directory, a FIFO: no volume can live there */

        errno = 0;
        pr = blkid_new_probe_from_filename(device);
        if (!pr)
                return errno > 0 ? -errno : -EIO;

        blkid_probe_enable_superblocks(pr, 1);
        blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE);
        blkid_probe_enable_partitions(pr, 1);
        blkid_probe_set_partitions_flags(pr, BLKID_PARTS_MAGIC);

        errno = 0;
        r = blkid_do_safeprobe(pr);
        if (r == 1) /* nothing found */
                return 0;
        if (r == -2) {
                *ret_what = strdup("several conflicting signatures");
                return *ret_what ? 1 : -ENOMEM;
        }
        if (r < 0)
                return errno > 0 ? -errno : -EIO;

        if (blkid_probe_lookup_value(pr, "TYPE", &type, NULL) == 0 && type)
                *ret_what = strdup(type);
        else if (blkid_probe_lookup_value(pr, "PTTYPE", &type, NULL) == 0 && type) {
                if (asprintf(ret_what, "partition table %s", type) < 0)
                        *ret_what = NULL;
        } else
                *ret_what = strdup("unknown signature");
        return *ret_what ? 1 : -ENOMEM;
}

/* The size of the regular file or block device open as @fd. -ENOTBLK for anything else. */
static int fd_size(int fd, uint64_t *ret) {
        struct stat st;
        off_t end;

        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
                return -ENOTBLK;
        end = lseek(fd, 0, SEEK_END);
        if (end < 0)
                return negative_errno();
        *ret = (uint64_t) end;
        return 0;
}

static int device_size(const char *device, uint64_t *ret) {
        _cleanup_(closep) int fd = open(device, O_RDONLY | O_CLOEXEC);

        if (fd < 0)
                return negative_errno();
        return fd_size(fd, ret);
}

/* LUKS2 binary header: the magic opens each of the two copies; hdr_size (the offset of the second copy) is a
 * big-endian u64 at byte 8. libcryptsetup looks for the second copy at these offsets when the first is bad. */
#define LUKS2_MAGIC_LEN 6U
#define LUKS2_HEADER_AREA EVS_LUKS_DATA_OFFSET /* metadata + keyslots: the data offset of an EVS volume */
static const uint64_t luks2_hdr2_offsets[] = { 0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000,
                                               0x200000, 0x400000 };

static int pwrite_all(int fd, const void *buf, size_t size, uint64_t offset) {
        const uint8_t *p = buf;

        while (size > 0) {
                ssize_t n = pwrite(fd, p, size, (off_t) offset);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n == 0)
                        return -EIO;
                p += n;
                size -= (size_t) n;
                offset += (uint64_t) n;
        }
        return 0;
}

static int pread_all(int fd, void *buf, size_t size, uint64_t offset) {
        uint8_t *p = buf;

        while (size > 0) {
                ssize_t n = pread(fd, p, size, (off_t) offset);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n == 0)
                        return -EIO;
                p += n;
                size -= (size_t) n;
                offset += (uint64_t) n;
        }
        return 0;
}

/* Builds the complete header (keyslot and evs-kms token included) in a detached header in memory. */
/* The volume key sealed under the data key (token.h, "evs_sealed_volume_key"), bound to the volume's LUKS
 * UUID and id: a token copied onto another volume, or a volume whose UUID changed, does not open it. */
static int sealed_vk_aad(const char *uuid, const char *volume_id, char **ret) {
        if (!uuid || !volume_id)
                return -EINVAL;
        return asprintf(ret, "evs-kms volume key v1\n%s\n%s", uuid, volume_id) < 0 ? -ENOMEM : 0;
}

static int seal_volume_key(const secret *data_key, const char *uuid, const char *volume_id, const secret *vk,
                           evs_token *token) {
        _cleanup_free_ char *aad = NULL;
        _cleanup_free_ uint8_t *sealed = NULL;
        size_t size;
        int r;

        r = sealed_vk_aad(uuid, volume_id, &aad);
        if (r < 0)
                return r;
        r = aes_gcm_seal(data_key, aad, strlen(aad), vk->data, vk->size, &sealed, &size);
        if (r < 0)
                return r;
        if (size != EVS_SEALED_VK_SIZE)
                return -EIO;
        free(token->sealed_vk);
        token->sealed_vk = TAKE_PTR(sealed);
        return 0;
}

/* After an activation of mapping @name, the volume key's copy in the kernel keyring goes: libcryptsetup
 * puts it in the calling thread's keyring (a logon key, "cryptsetup:UUID-d0") for dm-crypt to take from
 * there instead of from the table, and dm-crypt has copied it when the table loads. Left there, it would
 * stay in the kernel for as long as this worker thread lives, after the volume's detach too (libcryptsetup
 * drops it only when the detach runs on the same thread). The table keeps the key's name, not the key. */
static int activated(struct crypt_device *cd, const char *name, int r) {
        char desc[128];
        long id;

        if (r < 0 || !name || !crypt_get_uuid(cd))
                return r;
        snprintf(desc, sizeof desc, "cryptsetup:%s-d0", crypt_get_uuid(cd));
        id = syscall(SYS_keyctl, KEYCTL_SEARCH, KEY_SPEC_THREAD_KEYRING, "logon", desc, 0);
        if (id >= 0) {
                (void) syscall(SYS_keyctl, KEYCTL_REVOKE, id);
                (void) syscall(SYS_keyctl, KEYCTL_UNLINK, id, KEY_SPEC_THREAD_KEYRING);
        }
        return r;
}

/* Activates @cd with the volume key sealed in @t, skipping the keyslot. -ENODATA when this cannot be
 * used (no sealed key, the token's keyslot is gone, the seal does not open with @data_key): the caller
 * falls back to the keyslot, which gives the authoritative answer. -EPERM when the opened key does not
 * match the volume's digest. */
static int activate_sealed(struct crypt_device *cd, const char *name, const evs_token *t, const secret *data_key) {
        _cleanup_(secret_freep) secret *vk = NULL;
        _cleanup_free_ char *aad = NULL;
        crypt_keyslot_info ki;
        int r;

        if (!t->sealed_vk || crypt_get_volume_key_size(cd) != (int) EVS_LUKS_VOLUME_KEY_SIZE)
                return -ENODATA;
        /* A token whose keyslot was killed must not keep the volume open. */
        ki = crypt_keyslot_status(cd, t->keyslot);
        if (ki != CRYPT_SLOT_ACTIVE && ki != CRYPT_SLOT_ACTIVE_LAST)
                return -ENODATA;
        r = sealed_vk_aad(crypt_get_uuid(cd), crypt_get_label(cd), &aad);
        if (r < 0)
                return r == -EINVAL ? -ENODATA : r;
        r = aes_gcm_open(data_key, aad, strlen(aad), t->sealed_vk, EVS_SEALED_VK_SIZE, &vk);
        if (r == -EBADMSG)
                return -ENODATA;
        if (r < 0)
                return r;
        if (vk->size != EVS_LUKS_VOLUME_KEY_SIZE)
                return -ENODATA;
        return activated(cd, name, crypt_activate_by_volume_key(cd, name, (const char *) vk->data, vk->size, 0));
}

static int format_detached(int header_fd, const char *device, const char *volume_id, const secret *data_key,
                           evs_token *token, uint32_t sector_size) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        _cleanup_free_ char *json = NULL, *header_path = NULL;
        _cleanup_(secret_freep) secret *vk = NULL;
        /* SHA-256 rather than SHA-512: the digest inherits the hash, and every activation verifies the
         * volume key against it; PBKDF2-SHA256 to a 32-byte digest is one HMAC chain of the cheaper hash
         * (0.40 vs 0.89 ms natively, tens of ms under emulation). Both keys have full entropy. */
        struct crypt_pbkdf_type pbkdf = {
                .type = CRYPT_KDF_PBKDF2,
                .hash = "sha256",
                .iterations = 1000,
                .flags = CRYPT_PBKDF_NO_BENCHMARK,
        };
        struct crypt_params_luks2 params = {
                .label = volume_id,
                .subsystem = EVS_LUKS_SUBSYSTEM,
                .sector_size = sector_size,
        };
        int r, slot;

        if (asprintf(&header_path, "/proc/self/fd/%d", header_fd) < 0)
                return -ENOMEM;
        r = luks_register_token_handler();
        if (r < 0)
                return r;
        r = crypt_init_data_device(&cd, header_path, device);
        if (r < 0)
                return r;
        r = crypt_set_data_offset(cd, LUKS2_HEADER_AREA / 512U);
        if (r < 0)
                return r;
        r = crypt_set_pbkdf_type(cd, &pbkdf);
        if (r < 0)
                return r;
        r = crypto_random_secret(EVS_LUKS_VOLUME_KEY_SIZE, &vk);
        if (r < 0)
                return r;
        r = crypt_format(cd, CRYPT_LUKS2, EVS_LUKS_CIPHER, EVS_LUKS_CIPHER_MODE, NULL, (const char *) vk->data,
                         vk->size, &params);
        if (r < 0)
                return r;
        r = seal_volume_key(data_key, crypt_get_uuid(cd), volume_id, vk, token);
        if (r < 0)
                return r;
        slot = crypt_keyslot_add_by_volume_key(cd, CRYPT_ANY_SLOT, NULL, 0, (const char *) data_key->data,
                                               data_key->size);
        if (slot < 0)
                return slot;

        token->keyslot = slot;
        r = evs_token_to_json(token, &json);
        if (r < 0)
                return r;
        r = crypt_token_json_set(cd, CRYPT_ANY_TOKEN, json);
        return r < 0 ? r : 0;
}

/* Copies the finished header onto @device so that the device is never a LUKS2 volume without its token:
 * first every place a header copy can start is overwritten (the magic left out), then the whole area
 * without the two magics, and last the magics (second copy, then first), each step synced. Killed at any
 * point, the device holds the complete new header or none that libcryptsetup or blkid recognises. */
static int write_header(int header_fd, const char *device) {
        _cleanup_free_ uint8_t *buf = NULL;
        _cleanup_(closep) int fd = -EBADF;
        uint8_t magic1[LUKS2_MAGIC_LEN], magic2[LUKS2_MAGIC_LEN];
        uint64_t hdr2 = 0;
        int r;

        buf = malloc(LUKS2_HEADER_AREA);
        if (!buf)
                return -ENOMEM;
        r = pread_all(header_fd, buf, LUKS2_HEADER_AREA, 0);
        if (r < 0)
                return r;
        for (size_t i = 8; i < 16; i++)
                hdr2 = hdr2 << 8 | buf[i];
        if (hdr2 < 4096 || hdr2 > LUKS2_HEADER_AREA / 2 || memcmp(buf, "LUKS\xba\xbe", LUKS2_MAGIC_LEN) != 0 ||
            memcmp(buf + hdr2, "SKUL\xba\xbe", LUKS2_MAGIC_LEN) != 0)
                return -EIO; /* not what crypt_format() writes */
        memcpy(magic1, buf, LUKS2_MAGIC_LEN);
        memcpy(magic2, buf + hdr2, LUKS2_MAGIC_LEN);
        memset(buf, 0, LUKS2_MAGIC_LEN);
        memset(buf + hdr2, 0, LUKS2_MAGIC_LEN);

        fd = open(device, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        /* An old header (first or second copy) must not survive half overwritten. */
        r = pwrite_all(fd, buf, 4096, 0);
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(luks2_hdr2_offsets); i++)
                r = pwrite_all(fd, buf + luks2_hdr2_offsets[i], 4096, luks2_hdr2_offsets[i]);
        if (r < 0)
                return r;
        if (fdatasync(fd) < 0)
                return negative_errno();
        r = pwrite_all(fd, buf, LUKS2_HEADER_AREA, 0);
        if (r < 0)
                return r;
        if (fdatasync(fd) < 0)
                return negative_errno();
        r = pwrite_all(fd, magic2, LUKS2_MAGIC_LEN, hdr2);
        if (r < 0)
                return r;
        if (fdatasync(fd) < 0)
                return negative_errno();
        r = pwrite_all(fd, magic1, LUKS2_MAGIC_LEN, 0);
        if (r < 0)
                return r;
        if (fsync(fd) < 0)
                return negative_errno();
        return 0;
}

int luks_format(const char *device, const char *volume_id, const secret *data_key, evs_token *token, bool force,
                char **ret_what) {
        _cleanup_free_ char *what = NULL;
        _cleanup_(closep) int header_fd = -EBADF;
        uint64_t size;
        int r;

        if (!volume_id_valid(volume_id) || !data_key || data_key->size == 0)
                return -EINVAL;

        r = device_size(device, &size);
        if (r < 0)
                return r;
        if (size < LUKS2_HEADER_AREA + 4096U)
                return -EFBIG; /* too small: the LUKS2 header alone takes 16 MiB (-ENOSPC is a full file system) */

        r = luks_probe_signature(device, &what);
        if (r < 0)
                return r;
        if (r > 0 && !force) {
                *ret_what = TAKE_PTR(what);
                return -ENOTEMPTY;
        }

        header_fd = memfd_create("evs-luks2-header", MFD_CLOEXEC);
        if (header_fd < 0)
                return negative_errno();
        if (ftruncate(header_fd, LUKS2_HEADER_AREA) < 0)
                return negative_errno();

        r = format_detached(header_fd, device, volume_id, data_key, token, size % 4096 == 0 ? 4096 : 512);
        if (r < 0)
                return r;
        return write_header(header_fd, device);
}

void luks_info_done(luks_info *i) {
        if (!i)
                return;
        free(i->label);
        free(i->subsystem);
        free(i->uuid);
        free(i->cipher);
        evs_token_done(&i->token);
        crypt_free(i->cd);
        if (i->snapshot)
                safe_close(i->snapshot_fd); /* after the header loaded from it */
        *i = (luks_info) {};
}

/* Finds the first evs-kms token. -ENODATA when there is none. */
static int find_token(struct crypt_device *cd, int *ret_id, const char **ret_json) {
        for (int id = 0; id < 32; id++) {
                const char *type, *json;

                if (crypt_token_status(cd, id, &type) == CRYPT_TOKEN_INACTIVE || !type || !streq(type, EVS_TOKEN_TYPE))
                        continue;
                if (crypt_token_json_get(cd, id, &json) < 0)
                        continue;
                *ret_id = id;
                *ret_json = json;
                return 0;
        }
        return -ENODATA;
}

/* Where the secondary LUKS2 header may start (the LUKS2 header sizes), as libcryptsetup looks for it. */
static const uint64_t hdr2_offsets[] = {0x4000,  0x8000,   0x10000,  0x20000, 0x40000,
                                        0x80000, 0x100000, 0x200000, 0x400000};
#define LUKS2_HDR_SIZE_MAX 0x400000U

static bool hdr_size_valid(uint64_t size) {
        for (size_t i = 0; i < ELEMENTSOF(hdr2_offsets); i++)
                if (size == hdr2_offsets[i])
                        return true;
        return false;
}

static uint64_t be64(const uint8_t *p) {
        uint64_t v = 0;

        for (size_t i = 0; i < 8; i++)
                v = v << 8 | p[i];
        return v;
}

/* How much of @fd holds the two header copies: 0 when neither magic is where a LUKS2 header can start (not
 * LUKS2: nothing for libcryptsetup to load or to recover). *ret_hdr_size is the primary's size, or 0. */
static int header_extent(int fd, uint64_t size, uint64_t *ret_len, uint64_t *ret_hdr_size) {
        uint8_t bin[16], magic[LUKS2_MAGIC_LEN];
        uint64_t hdr_size = 0;
        int r;

        if (size < 4096) {
                *ret_len = *ret_hdr_size = 0;
                return 0;
        }
        r = pread_all(fd, bin, sizeof bin, 0);
        if (r < 0)
                return r;
        if (memcmp(bin, "LUKS\xba\xbe", LUKS2_MAGIC_LEN) == 0 && hdr_size_valid(be64(bin + 8)))
                hdr_size = be64(bin + 8);
        *ret_hdr_size = hdr_size;
        if (hdr_size > 0) {
                *ret_len = MIN(size, 2 * hdr_size);
                return 0;
        }
        /* No usable primary: libcryptsetup would look for the secondary at every offset, and recover from it. */
        for (size_t i = ELEMENTSOF(hdr2_offsets); i > 0; i--) {
                uint64_t off = hdr2_offsets[i - 1];

                if (off + sizeof magic > size)
                        continue;
                r = pread_all(fd, magic, sizeof magic, off);
                if (r < 0)
                        return r;
                if (memcmp(magic, "SKUL\xba\xbe", LUKS2_MAGIC_LEN) == 0) {
                        *ret_len = MIN(size, off + LUKS2_HDR_SIZE_MAX);
                        return 0;
                }
        }
        *ret_len = memcmp(bin, "LUKS\xba\xbe", LUKS2_MAGIC_LEN) == 0 ? MIN(size, 2 * LUKS2_HDR_SIZE_MAX) : 0;
        return 0;
}

int luks_load(const char *device, struct crypt_device **ret) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        int r;

        r = luks_crypt_init(device, &cd);
        if (r < 0)
                return r;
        r = crypt_load(cd, CRYPT_LUKS2, NULL);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(cd);
        return 0;
}

/* Loads @len bytes of header @data, on a device of @size bytes, from a memfd, letting libcryptsetup repair the
 * memfd as it likes; @ret_after (when not NULL) gets the @len bytes as they are after the load. 0 and *ret (when
 * not NULL) when a LUKS2 header loads, -ENODATA when none does. *ret is bound to the memfd by its
 * /proc/self/fd path: with @ret_fd the memfd is handed over, to be closed only after *ret is freed. */
static int load_copy(const uint8_t *data, uint64_t len, uint64_t size, struct crypt_device **ret, int *ret_fd,
                     uint8_t *ret_after) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        _cleanup_(closep) int mfd = -EBADF;
        _cleanup_free_ char *path = NULL;
        int r;

        mfd = memfd_create("evs-luks-header", MFD_CLOEXEC);
        if (mfd < 0)
                return negative_errno();
        if (ftruncate(mfd, (off_t) size) < 0) /* sparse: libcryptsetup checks the device can hold the areas */
                return negative_errno();
        r = pwrite_all(mfd, data, len, 0);
        if (r < 0)
                return r;
        if (asprintf(&path, "/proc/self/fd/%d", mfd) < 0)
                return -ENOMEM;
        r = luks_crypt_init(path, &cd);
        if (r < 0)
                return r;
        r = crypt_load(cd, CRYPT_LUKS2, NULL);
        if (r == -EINVAL || r == -ENXIO) /* no or not a LUKS2 header */
                return -ENODATA;
        if (r < 0)
                return r;
        if (ret_after) {
                r = pread_all(mfd, ret_after, len, 0);
                if (r < 0)
                        return r;
        }
        if (ret)
                *ret = TAKE_PTR(cd);
        if (ret_fd)
                *ret_fd = TAKE_FD(mfd);
        return 0;
}

/* Does one header copy of @data load on its own? The other one is wiped first (the secondary: from the
 * primary's size on; the primary: its binary header, so that libcryptsetup looks for the secondary). */
static int copy_loads(const uint8_t *data, uint64_t len, uint64_t size, uint64_t hdr_size, bool primary) {
        _cleanup_free_ uint8_t *buf = NULL;
        int r;

        if (primary && hdr_size == 0)
                return false;
        buf = malloc(len);
        if (!buf)
                return -ENOMEM;
        memcpy(buf, data, len);
        if (primary)
                memset(buf + hdr_size, 0, len - hdr_size);
        else
                memset(buf, 0, 4096);
        r = load_copy(buf, len, size, NULL, NULL, NULL);
        return r == -ENODATA ? false : r < 0 ? r : true;
}

/* The header area of @device as it is now: *ret_len bytes of a device of *ret_size (*ret_len 0 and *ret NULL
 * when it holds no LUKS2 header), *ret_hdr_size as header_extent() says. Reads only @device. */
static int read_header_area(const char *device, uint64_t *ret_size, uint64_t *ret_len, uint64_t *ret_hdr_size,
                            uint8_t **ret) {
        _cleanup_(closep) int fd = -EBADF;
        _cleanup_free_ uint8_t *buf = NULL;
        int r;

        fd = open(device, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return negative_errno();
        r = fd_size(fd, ret_size);
        if (r < 0)
                return r;
        r = header_extent(fd, *ret_size, ret_len, ret_hdr_size);
        if (r < 0)
                return r;
        if (*ret_len > 0) {
                buf = malloc(*ret_len);
                if (!buf)
                        return -ENOMEM;
                r = pread_all(fd, buf, *ret_len, 0);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(buf);
        return 0;
}

/* read_header_area() on a probe thread (probe.h), for luks_read_within(). */
typedef struct header_area {
        uint64_t size, len, hdr_size;
        uint8_t *data;
} header_area;

static void header_area_free(void *p) {
        header_area *a = p;

        if (!a)
                return;
        free(a->data);
        free(a);
}

static int header_area_probe(const char *device, void **ret) {
        header_area *a = calloc(1, sizeof *a);
        int r;

        if (!a)
                return -ENOMEM;
        r = read_header_area(device, &a->size, &a->len, &a->hdr_size, &a->data);
        if (r < 0) {
                header_area_free(a);
                return r;
        }
        *ret = a;
        return 0;
}

/* read_header_area(), on this thread (@wait 0) or on a probe thread waited for at most @wait. */
static int read_header_area_within(const char *device, usec_t wait, uint64_t *ret_size, uint64_t *ret_len,
                                   uint64_t *ret_hdr_size, uint8_t **ret) {
        header_area *a = NULL;
        int r;

        if (wait == 0)
                return read_header_area(device, ret_size, ret_len, ret_hdr_size, ret);
        r = probe_run(header_area_probe, header_area_free, device, wait, (void **) &a);
        if (r < 0)
                return r;
        *ret_size = a->size;
        *ret_len = a->len;
        *ret_hdr_size = a->hdr_size;
        *ret = TAKE_PTR(a->data);
        header_area_free(a);
        return 0;
}

probe *luks_prefetch(const char *device) {
        return probe_start(header_area_probe, header_area_free, device);
}

/* Loads the LUKS2 header of @device without writing to it. crypt_load() repairs a damaged or outdated header
 * copy from the other one in place, a write on every read-only verb; so the header area is copied into a
 * memfd of the device's size, and loaded from there. When libcryptsetup changed the copy, one copy on the disk
 * is damaged (*ret_damaged says which; the other one is what loaded) or, both valid, one is older than the other
 * (*ret_outdated: an interrupted header update, which libcryptsetup finishes on its next write). A change seen
 * once is checked again, so that a header being rewritten right then is not taken for damage.
 * -ENODATA (*ret_reason "not a LUKS2 volume"), -errno. */
static int load_readonly(const char *device, usec_t wait, struct crypt_device **ret, int *ret_fd, bool *ret_outdated,
                         const char **ret_damaged, const char **ret_reason) {
        for (unsigned attempt = 0;; attempt++) {
                _cleanup_(closep) int mfd = -EBADF;
                _cleanup_(crypt_freep) struct crypt_device *cd = NULL; /* freed before its memfd is closed */
                _cleanup_free_ uint8_t *orig = NULL, *after = NULL;
                uint64_t size = 0, len = 0, hdr_size = 0;
                int r, primary_ok, secondary_ok;

                /* The first read is a wait that touches nothing shared (wait-hooks.h): the daemon gives up its
                 * engine lock meanwhile, so a disk whose I/O hangs holds up only its own caller. A second read,
                 * after libcryptsetup changed the first copy, is made with the lock held: then none of the
                 * daemon's own header writes can interleave with the read that tells damage from an update. */
                if (attempt == 0)
                        wait_hooks_begin();
                r = read_header_area_within(device, wait, &size, &len, &hdr_size, &orig);
                if (attempt == 0)
                        wait_hooks_end();
                if (r == -ETIMEDOUT)
                        *ret_reason = "the disk does not answer";
                if (r < 0)
                        return r;
                if (len == 0) {
                        *ret_reason = "not a LUKS2 volume";
                        return -ENODATA;
                }

                after = malloc(len);
                if (!after)
                        return -ENOMEM;
                /* What libcryptsetup made of the copy: changed means it recovered one header copy. */
                r = load_copy(orig, len, size, &cd, &mfd, after);
                if (r == -ENODATA)
                        *ret_reason = "not a LUKS2 volume";
                if (r < 0)
                        return r;
                *ret_outdated = false;
                *ret_damaged = NULL;
                if (memcmp(orig, after, len) == 0) {
                        *ret = TAKE_PTR(cd);
                        if (ret_fd)
                                *ret_fd = TAKE_FD(mfd);
                        return 0;
                }
                if (attempt == 0)
                        continue;
                primary_ok = copy_loads(orig, len, size, hdr_size, true);
                if (primary_ok < 0)
                        return primary_ok;
                secondary_ok = copy_loads(orig, len, size, hdr_size, false);
                if (secondary_ok < 0)
                        return secondary_ok;
                if (primary_ok && secondary_ok)
                        *ret_outdated = true;
                else
                        *ret_damaged = primary_ok
                                               ? "the secondary LUKS2 header is damaged (the primary copy is intact)"
                                               : "the primary LUKS2 header is damaged (the secondary copy is intact)";
                *ret = TAKE_PTR(cd);
                if (ret_fd)
                        *ret_fd = TAKE_FD(mfd);
                return 0;
        }
}

static bool token_binds(struct crypt_device *cd, int token) {
        const char *type;

        if (crypt_token_status(cd, token, &type) == CRYPT_TOKEN_INACTIVE || !type)
                return false;
        return streq(type, EVS_TOKEN_TYPE) || streq(type, EVS_RECOVERY_TOKEN_TYPE);
}

/* The keyslot token @token is bound to (the first), -ENOENT when none. */
static int token_keyslot(struct crypt_device *cd, int token) {
        for (int slot = 0; slot < crypt_keyslot_max(CRYPT_LUKS2); slot++)
                if (crypt_token_is_assigned(cd, token, slot) == 0)
                        return slot;
        return -ENOENT;
}

static int find_recovery_token(struct crypt_device *cd) {
        for (int id = 0; id < 32; id++) {
                const char *type;

                if (crypt_token_status(cd, id, &type) != CRYPT_TOKEN_INACTIVE && type &&
                    streq(type, EVS_RECOVERY_TOKEN_TYPE))
                        return id;
        }
        return -ENOENT;
}

int luks_unbound_keyslots(struct crypt_device *cd, int **ret_slots, size_t *ret_n, int *ret_recovery_slot) {
        _cleanup_free_ int *slots = NULL;
        size_t n = 0;
        int recovery = -1, max = crypt_keyslot_max(CRYPT_LUKS2), t;

        for (int slot = 0; slot < max; slot++) {
                crypt_keyslot_info st = crypt_keyslot_status(cd, slot);
                bool bound = false;

                if (st != CRYPT_SLOT_ACTIVE && st != CRYPT_SLOT_ACTIVE_LAST)
                        continue; /* free, or an unbound key that opens nothing */
                for (int id = 0; id < 32 && !bound; id++)
                        bound = token_binds(cd, id) && crypt_token_is_assigned(cd, id, slot) == 0;
                if (bound)
                        continue;
                if (ret_slots) {
                        int *a = reallocarray(slots, n + 1, sizeof(int));

                        if (!a)
                                return -ENOMEM;
                        slots = a;
                        slots[n] = slot;
                }
                n++;
        }
        t = find_recovery_token(cd);
        if (t >= 0)
                recovery = token_keyslot(cd, t);
        if (ret_slots)
                *ret_slots = TAKE_PTR(slots);
        *ret_n = n;
        if (ret_recovery_slot)
                *ret_recovery_slot = recovery < 0 ? -1 : recovery;
        return 0;
}

int luks_device_unbound_keyslots(const char *device, int **ret_slots, size_t *ret_n, int *ret_recovery_slot) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        int r;

        r = luks_load(device, &cd);
        if (r == -EINVAL || r == -ENXIO)
                return -ENODATA;
        if (r < 0)
                return r;
        return luks_unbound_keyslots(cd, ret_slots, ret_n, ret_recovery_slot);
}

int luks_recovery_add(const char *device, const char *volume_id, int evs_keyslot, const secret *data_key,
                      const secret *passphrase, int *ret_keyslot) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        _cleanup_(json_object_putp) json_object *o = NULL, *slots = NULL;
        char num[16];
        int r, slot;

        if (!volume_id_valid(volume_id) || !data_key || !passphrase || passphrase->size == 0)
                return -EINVAL;
        r = luks_load(device, &cd);
        if (r < 0)
                return r;
        if (find_recovery_token(cd) >= 0)
                return -EEXIST;
        /* The evs-kms keyslot is unlocked by the data key, as `cryptsetup luksAddKey` would; the new keyslot
         * gets libcryptsetup's default (benchmarked Argon2id) KDF: a passphrase has no full entropy. */
        slot = crypt_keyslot_add_by_passphrase(cd, CRYPT_ANY_SLOT, (const char *) data_key->data, data_key->size,
                                               (const char *) passphrase->data, passphrase->size);
        if (slot == -EPERM || slot == -ENOENT)
                return -EPERM;
        if (slot < 0)
                return slot;
        (void) evs_keyslot;

        snprintf(num, sizeof num, "%d", slot);
        o = json_object_new_object();
        slots = json_object_new_array();
        if (!o || !slots || json_object_array_add(slots, json_object_new_string(num)) < 0 ||
            json_object_object_add(o, "type", json_object_new_string(EVS_RECOVERY_TOKEN_TYPE)) < 0 ||
            json_object_object_add(o, "keyslots", TAKE_PTR(slots)) < 0 ||
            json_object_object_add(o, "evs_volume_id", json_object_new_string(volume_id)) < 0) {
                (void) crypt_keyslot_destroy(cd, slot);
                return -ENOMEM;
        }
        r = crypt_token_json_set(cd, CRYPT_ANY_TOKEN, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
        if (r < 0) {
                (void) crypt_keyslot_destroy(cd, slot); /* no recovery keyslot without its record */
                return r;
        }
        *ret_keyslot = slot;
        return 0;
}

int luks_recovery_remove(const char *device, int *ret_keyslot) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        int r, t, slot;

        r = luks_load(device, &cd);
        if (r < 0)
                return r;
        t = find_recovery_token(cd);
        if (t < 0)
                return -ENOENT;
        slot = token_keyslot(cd, t);
        /* The keyslot first: a passphrase that still opens the disk must never lose its record. */
        if (slot >= 0) {
                r = crypt_keyslot_destroy(cd, slot);
                if (r < 0)
                        return r;
        }
        r = crypt_token_json_set(cd, t, NULL);
        if (r < 0)
                return r;
        *ret_keyslot = slot;
        return 0;
}

static int read_header(const char *device, bool keep, usec_t wait, luks_info *ret, const char **ret_reason) {
        _cleanup_(luks_info_done) luks_info i = {};
        _cleanup_(closep) int mfd = -EBADF;
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL; /* freed before its memfd is closed */
        const char *json, *damaged = NULL;
        bool outdated = false;
        int r;

        r = load_readonly(device, wait, &cd, keep ? &mfd : NULL, &outdated, &damaged, ret_reason);
        if (r < 0)
                return r;
        i.damaged = damaged;

        if ((r = free_and_strdup(&i.label, crypt_get_label(cd))) < 0 ||
            (r = free_and_strdup(&i.subsystem, crypt_get_subsystem(cd))) < 0 ||
            (r = free_and_strdup(&i.uuid, crypt_get_uuid(cd))) < 0)
                return r;
        if (asprintf(&i.cipher, "%s-%s", strempty(crypt_get_cipher(cd)), strempty(crypt_get_cipher_mode(cd))) < 0)
                return -ENOMEM;
        i.sector_size = (uint32_t) crypt_get_sector_size(cd);
        i.volume_key_bits = (uint32_t) crypt_get_volume_key_size(cd) * 8;
        i.data_sectors = crypt_get_data_offset(cd); /* refined below for devices that exist */

        r = find_token(cd, &i.token_id, &json);
        if (r < 0) {
                *ret_reason = "no evs-kms token";
                return r;
        }
        r = evs_token_from_json(json, &i.token, ret_reason);
        if (r < 0)
                return r;
        {
                size_t n = 0;

                r = luks_unbound_keyslots(cd, NULL, &n, &i.recovery_keyslot);
                if (r < 0)
                        return r;
                i.n_unbound_keyslots = (unsigned) n;
        }

        if (keep && !damaged && !outdated) {
                /* The copy just read is the header on the disk, intact: the activation uses it as it is,
                 * with @device as the data device (one header load per attach). It has no keyslot areas:
                 * an activation through a keyslot loads the device's (luks_info_activate()). */
                r = crypt_set_data_device(cd, device);
                if (r < 0)
                        return r;
                i.cd = TAKE_PTR(cd);
                i.snapshot_fd = TAKE_FD(mfd);
                i.snapshot = true;
        } else if (keep && !damaged) {
                /* For the activation: the device itself. A header whose two copies merely disagree (an
                 * interrupted update) is brought up to date by this load; a damaged one is never loaded from
                 * the device (the caller refuses to activate it). */
                crypt_free(cd);
                cd = NULL;
                r = luks_load(device, &cd);
                if (r < 0)
                        return r;
                i.cd = TAKE_PTR(cd);
        }
        *ret = i;
        i = (luks_info) {};
        return 0;
}

int luks_read(const char *device, luks_info *ret, const char **ret_reason) {
        return read_header(device, false, 0, ret, ret_reason);
}

int luks_read_within(const char *device, usec_t wait, luks_info *ret, const char **ret_reason) {
        return read_header(device, false, wait, ret, ret_reason);
}

int luks_read_keep(const char *device, luks_info *ret, const char **ret_reason) {
        return read_header(device, true, 0, ret, ret_reason);
}

int luks_info_next_token(luks_info *i, int after, int *ret_id, evs_token *ret_token, const char **ret_reason) {
        const char *type, *json;

        if (!i->cd)
                return -EINVAL;
        for (int id = after + 1; id < 32; id++) {
                if (crypt_token_status(i->cd, id, &type) == CRYPT_TOKEN_INACTIVE || !type ||
                    !streq(type, EVS_TOKEN_TYPE))
                        continue;
                if (crypt_token_json_get(i->cd, id, &json) < 0)
                        continue;
                *ret_id = id;
                return evs_token_from_json(json, ret_token, ret_reason);
        }
        return -ENODATA;
}

int luks_info_activate(luks_info *i, const char *name, int token_id, const secret *data_key) {
        _cleanup_(evs_token_done) evs_token other = {};
        luks_unlock u = { .data_key = data_key };
        const evs_token *t = &i->token;
        const char *json, *reason;
        int r;

        if (!i->cd || !data_key)
                return -EINVAL;
        if (token_id != i->token_id) {
                t = NULL;
                if (crypt_token_json_get(i->cd, token_id, &json) >= 0 &&
                    evs_token_from_json(json, &other, &reason) >= 0)
                        t = &other;
        }
        if (t) {
                r = activate_sealed(i->cd, name, t, data_key);
                if (r != -ENODATA && r != -EPERM)
                        return r < 0 ? r : 0;
        }
        if (i->snapshot) {
                /* The keyslot areas are on the device only. */
                _cleanup_(crypt_freep) struct crypt_device *dev = NULL;

                r = luks_load(crypt_get_device_name(i->cd), &dev);
                if (r < 0)
                        return r;
                r = activated(dev, name, crypt_activate_by_token(dev, name, token_id, &u, 0));
        } else
                r = activated(i->cd, name, crypt_activate_by_token(i->cd, name, token_id, &u, 0));
        kms_key_done(&u.key);
        if (r < 0 && u.error < 0 && u.error != -EPERM)
                return u.error;
        return r < 0 ? r : 0;
}

int luks_repair(const char *device, bool *ret_repaired, const char **ret_reason) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL, *check = NULL;
        const char *damaged = NULL, *what;
        bool outdated = false;
        int r;

        r = load_readonly(device, 0, &check, NULL, &outdated, &damaged, ret_reason);
        if (r < 0)
                return r; /* -ENODATA: neither copy is intact */
        if (!outdated && !damaged) {
                *ret_repaired = false; /* both copies intact and in agreement: nothing to write */
                return 0;
        }
        crypt_free(check);
        check = NULL;
        what = damaged ?: "the two LUKS2 header copies disagreed (an interrupted header update)";

        r = luks_crypt_init(device, &cd);
        if (r < 0)
                return r;
        r = crypt_repair(cd, CRYPT_LUKS2, NULL);
        if (r < 0) {
                *ret_reason = what;
                return r;
        }
        r = load_readonly(device, 0, &check, NULL, &outdated, &damaged, ret_reason);
        if (r < 0)
                return r;
        if (outdated || damaged) { /* repaired, yet still not clean */
                *ret_reason = damaged ?: "the two LUKS2 header copies still disagree";
                return -EIO;
        }
        *ret_repaired = true;
        *ret_reason = what;
        return 0;
}

int luks_token_add(const char *device, const evs_token *token, int *ret_token_id) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        _cleanup_free_ char *json = NULL;
        int r;

        r = evs_token_to_json(token, &json);
        if (r < 0)
                return r;
        r = luks_load(device, &cd);
        if (r < 0)
                return r;
        r = crypt_token_json_set(cd, CRYPT_ANY_TOKEN, json);
        if (r < 0)
                return r;
        *ret_token_id = r;
        return 0;
}

int luks_token_remove(const char *device, int id) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        int r;

        r = luks_load(device, &cd);
        if (r < 0)
                return r;
        r = crypt_token_json_set(cd, id, NULL);
        return r < 0 ? r : 0;
}

void luks_unlock_done(luks_unlock *u) {
        kms_key_done(&u->key);
}

int luks_token_open(void *cd, int token, char **buffer, size_t *buffer_len, void *usrptr) {
        luks_unlock *u = usrptr;
        _cleanup_(evs_token_done) evs_token t = {};
        secret *data_key = NULL;
        const char *json;
        kms_backend *b;
        int r;

        if (!u)
                return -EINVAL;
        u->error = 0;
        u->reason = NULL;

        if (u->data_key) {
                /* Unwrapped before libcryptsetup was entered: no KMS call from inside it. */
                secret *copy = NULL;

                r = secret_new(u->data_key->size, &copy);
                if (r < 0)
                        return u->error = r;
                memcpy(copy->data, u->data_key->data, u->data_key->size);
                *buffer = secret_steal_data(copy, buffer_len);
                return 0;
        }

        r = crypt_token_json_get(cd, token, &json);
        if (r < 0)
                return u->error = r;
        r = evs_token_from_json(json, &t, &u->reason);
        if (r < 0)
                return u->error = r;
        r = kms_registry_get(u->registry, t.backend, &b);
        if (r < 0) {
                u->reason = "the token names a KMS backend that is not configured";
                return u->error = -ENOENT;
        }
        u->backend = b;
        kms_key_done(&u->key);
        r = envelope_open(b, &t, u->volume_id, &u->key, &data_key);
        if (r < 0)
                return u->error = r;

        *buffer = secret_steal_data(data_key, buffer_len);
        return 0;
}

void luks_token_buffer_free(void *buffer, size_t buffer_len) {
        secret_data_free(buffer, buffer_len);
}

int luks_token_validate(void *cd, const char *json) {
        _cleanup_(evs_token_done) evs_token t = {};
        const char *reason;

        return evs_token_from_json(json, &t, &reason) < 0 ? -EINVAL : 0;
}

static int token_open_cb(struct crypt_device *cd, int token, char **buffer, size_t *buffer_len, void *usrptr) {
        return luks_token_open(cd, token, buffer, buffer_len, usrptr);
}

static int token_validate_cb(struct crypt_device *cd, const char *json) {
        return luks_token_validate(cd, json);
}

int luks_register_token_handler(void) {
        static const crypt_token_handler handler = {
                .name = EVS_TOKEN_TYPE,
                .open = token_open_cb,
                .buffer_free = luks_token_buffer_free,
                .validate = token_validate_cb,
        };
        static int registered = 0;
        int r;

        if (registered)
                return 0;
        r = crypt_token_register(&handler);
        if (r < 0)
                return r;
        registered = 1;
        return 0;
}

int luks_crypt_init(const char *device, struct crypt_device **ret) {
        int r;

        r = luks_register_token_handler();
        if (r < 0)
                return r;
        return crypt_init(ret, device);
}

int luks_activate(const char *device, const char *name, luks_unlock *u) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        int r, id;
        const char *json;

        r = luks_load(device, &cd);
        if (r < 0)
                return r;
        r = find_token(cd, &id, &json);
        if (r < 0) {
                u->reason = "no evs-kms token";
                return r;
        }

        u->error = 0;
        /* The handler calls the KMS from inside libcryptsetup, which must not be re-entered by another
         * thread meanwhile: the caller's lock stays held (kms.h). */
        wait_hooks_suppress(true);
        r = activated(cd, name, crypt_activate_by_token(cd, name, id, u, 0));
        wait_hooks_suppress(false);
        if (r < 0 && r != -EEXIST && u->error < 0) {
                /* Several evs-kms tokens exist only after an interrupted rewrap: they wrap the same data key,
                 * so any that unwraps will do. The reported failure stays the first token's. */
                luks_unlock first = *u;

                for (int other = id + 1; other < 32; other++) {
                        const char *type;

                        if (crypt_token_status(cd, other, &type) == CRYPT_TOKEN_INACTIVE || !type ||
                            !streq(type, EVS_TOKEN_TYPE))
                                continue;
                        u->key = (kms_key) {};
                        u->error = 0;
                        wait_hooks_suppress(true);
                        r = activated(cd, name, crypt_activate_by_token(cd, name, other, u, 0));
                        wait_hooks_suppress(false);
                        if (r >= 0) {
                                kms_key_done(&first.key);
                                return 0;
                        }
                        kms_key_done(&u->key);
                }
                kms_key_done(&u->key);
                *u = first;
                return u->error; /* the handler's own reason, not libcryptsetup's summary */
        }
        return r < 0 ? r : 0;
}

int luks_deactivate(const char *name, const dm_mapping_info *seen, bool deferred) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        int r;

        /* An EVS volume's mapping (LUKS2, straight on its disk): libdevmapper alone, reading nothing from the
         * disk, so that a disk whose I/O hangs can still be detached (under the engine lock, which such a read
         * would hold as long as it waits). */
        r = seen ? dm_mapping_close_seen(name, seen, deferred) : dm_mapping_close(name, deferred);
        if (r != -EMEDIUMTYPE)
                return r;
        /* Any other mapping libcryptsetup's way, which knows its layers. A context without a device: given
         * NULL, crypt_deactivate_by_name() would crypt_init_by_name(), which also loads both header copies. */
        r = crypt_init(&cd, NULL);
        if (r < 0)
                return r;
        r = crypt_deactivate_by_name(cd, name, deferred ? CRYPT_DEACTIVATE_DEFERRED : 0);
        if (r == -ENODEV || r == -ENXIO)
                return -ENODEV;
        return r < 0 ? r : 0;
}
