/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* LUKS2 on image files: libcryptsetup formats and checks keys on a regular file without
 * device-mapper, so this runs on any host (mappings are the VM suite's business). */

#include <fcntl.h>
#include <libcryptsetup.h>
#include <sys/stat.h>

#include "envelope.h"
#include "luks.h"
#include "test-util.h"

#define VOLUME "vol-luks-1"
#define IMAGE_SIZE (32U * 1024U * 1024U)

typedef struct fixture {
        char *dir;
        char *state;
        char *image;
        kms_registry *reg;
        kms_backend *b; /* the registry's "local" */
        kms_key key;    /* evs/default */
} fixture;

static void make_image(const char *path, uint64_t size) {
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, (off_t) size), 0); /* sparse */
        assert_int_equal(close(fd), 0);
}

static int setup(void **state) {
        fixture *f = calloc(1, sizeof *f);

        assert_non_null(f);
        test_clock = TEST_CLOCK_START;
        f->dir = test_mkdtemp();
        f->state = test_path(f->dir, "state");
        f->image = test_path(f->dir, "disk.img");
        f->reg = test_local_registry(f->state);
        assert_int_equal(kms_registry_get(f->reg, NULL, &f->b), 0);
        assert_string_equal(f->b->name, "local");
        assert_int_equal(kms_key_get(f->b, KMS_DEFAULT_KEY_ALIAS, &f->key), 0);
        make_image(f->image, IMAGE_SIZE);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        fixture *f = *state;

        kms_key_done(&f->key);
        kms_registry_free(f->reg);
        test_rm_rf(f->dir);
        free(f->dir);
        free(f->state);
        free(f->image);
        free(f);
        return 0;
}

#define TEST(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

/* Seals a fresh data key for @volume under evs/default. */
static void seal(fixture *f, const char *volume, secret **ret_dk, evs_token *ret) {
        int r = envelope_seal(f->b, &f->key, volume, ret_dk, ret);

        if (r < 0)
                fail_msg("envelope_seal: %s: %s", strerror(-r), strna(kms_backend_error(f->b)));
}

static void format_ok(const char *image, const char *volume, const secret *dk, evs_token *t, bool force) {
        char *what = NULL;
        int r = luks_format(image, volume, dk, t, force, &what);

        if (r < 0)
                fail_msg("luks_format(%s): %s (%s)", image, strerror(-r), strna(what));
        assert_null(what);
}

/* Seals and formats @f->image as VOLUME. */
static void format_volume(fixture *f, secret **ret_dk, evs_token *ret) {
        seal(f, VOLUME, ret_dk, ret);
        format_ok(f->image, VOLUME, *ret_dk, ret, false);
}

/* Does @key open keyslot @slot of @image (a key check, no mapping)? */
static int passphrase_check(const char *image, int slot, const void *key, size_t size) {
        struct crypt_device *cd = NULL;
        int r;

        assert_int_equal(crypt_init(&cd, image), 0);
        assert_int_equal(crypt_load(cd, CRYPT_LUKS2, NULL), 0);
        r = crypt_activate_by_passphrase(cd, NULL, slot, key, size, 0);
        crypt_free(cd);
        return r;
}

static void test_format_read(void **state) {
        fixture *f = *state;
        _cleanup_(secret_freep) secret *dk = NULL;
        _cleanup_(evs_token_done) evs_token t = {};
        _cleanup_(luks_info_done) luks_info info = {};
        const char *reason = NULL;
        struct crypt_device *cd = NULL;
        struct crypt_pbkdf_type pbkdf = {};

        format_volume(f, &dk, &t);
        assert_true(t.keyslot >= 0);

        assert_int_equal(luks_read(f->image, &info, &reason), 0);
        assert_null(reason);
        assert_string_equal(info.label, VOLUME);
        assert_string_equal(info.subsystem, "evs");
        assert_string_equal(info.cipher, "aes-xts-plain64");
        assert_int_equal(info.volume_key_bits, 512);
        assert_int_equal(info.sector_size, 4096);
        assert_non_null(info.uuid);
        assert_true(info.token_id >= 0);

        /* The token on disk is the one sealed. */
        assert_int_equal(info.token.keyslot, t.keyslot);
        assert_string_equal(info.token.backend, "local");
        assert_string_equal(info.token.key_id, f->key.id);
        assert_string_equal(info.token.key_alias, KMS_DEFAULT_KEY_ALIAS);
        assert_string_equal(info.token.volume_id, VOLUME);
        assert_int_equal(info.token.wrapped_size, t.wrapped_size);
        assert_memory_equal(info.token.wrapped, t.wrapped, t.wrapped_size);

        /* One keyslot, PBKDF2 with the minimum iterations: the data key has full entropy. */
        assert_int_equal(crypt_init(&cd, f->image), 0);
        assert_int_equal(crypt_load(cd, CRYPT_LUKS2, NULL), 0);
        assert_int_equal(crypt_keyslot_get_pbkdf(cd, t.keyslot, &pbkdf), 0);
        assert_string_equal(pbkdf.type, CRYPT_KDF_PBKDF2);
        assert_int_equal(pbkdf.iterations, 1000);
        for (int slot = 0; slot < 32; slot++) {
                crypt_keyslot_info ki = crypt_keyslot_status(cd, slot);

                if (slot == t.keyslot)
                        assert_true(ki == CRYPT_SLOT_ACTIVE || ki == CRYPT_SLOT_ACTIVE_LAST);
                else
                        assert_int_equal(ki, CRYPT_SLOT_INACTIVE);
        }
        crypt_free(cd);

        /* The keyslot's passphrase is exactly the data key. */
        assert_true(passphrase_check(f->image, t.keyslot, dk->data, dk->size) >= 0);
        dk->data[0] ^= 1;
        assert_int_equal(passphrase_check(f->image, t.keyslot, dk->data, dk->size), -EPERM);
}

static void test_activate_check(void **state) {
        fixture *f = *state;
        _cleanup_(secret_freep) secret *dk = NULL;
        _cleanup_(evs_token_done) evs_token t = {};
        _cleanup_(luks_unlock_done) luks_unlock u = { .volume_id = VOLUME }, other = { .volume_id = "vol-other" };

        format_volume(f, &dk, &t);
        u.registry = f->reg;
        other.registry = f->reg;

        /* The registered evs-kms handler unwraps the data key and it opens the keyslot. */
        assert_int_equal(luks_activate(f->image, NULL, &u), 0);
        assert_int_equal(u.error, 0);
        assert_ptr_equal(u.backend, f->b);
        assert_string_equal(u.key.id, f->key.id);
        assert_int_equal(u.key.state, KMS_KEY_ENABLED);

        /* A disk that should be another volume: refused before any unwrap. */
        assert_int_equal(luks_activate(f->image, NULL, &other), -EMEDIUMTYPE);
        assert_int_equal(other.error, -EMEDIUMTYPE);
        assert_non_null(strstr(strempty(kms_backend_error(f->b)), "vol-other"));
}

static void test_activate_wrong_key(void **state) {
        fixture *f = *state;
        _cleanup_(secret_freep) secret *dk1 = NULL, *dk2 = NULL;
        _cleanup_(evs_token_done) evs_token t1 = {}, t2 = {};
        _cleanup_(luks_unlock_done) luks_unlock u = { .volume_id = VOLUME };
        int r;

        /* The keyslot holds one data key, the token wraps another: the token handler does its job,
         * and the check still fails, so success above really means "this key opens the volume". */
        seal(f, VOLUME, &dk1, &t1);
        seal(f, VOLUME, &dk2, &t2);
        format_ok(f->image, VOLUME, dk1, &t2, false);
        u.registry = f->reg;
        r = luks_activate(f->image, NULL, &u);
        assert_true(r < 0);
        assert_int_equal(u.error, 0);
}

static void test_activate_key_states(void **state) {
        fixture *f = *state;
        _cleanup_(secret_freep) secret *dk = NULL;
        _cleanup_(evs_token_done) evs_token t = {};
        _cleanup_(kms_key_done) kms_key k = {};
        _cleanup_(luks_unlock_done) luks_unlock u = { .volume_id = VOLUME };

        assert_int_equal(kms_key_create(f->b, "luks/custom", NULL, &k), 0);
        assert_int_equal(envelope_seal(f->b, &k, VOLUME, &dk, &t), 0);
        format_ok(f->image, VOLUME, dk, &t, false);
        u.registry = f->reg;

        assert_int_equal(luks_activate(f->image, NULL, &u), 0);
        assert_int_equal(kms_key_set_enabled(f->b, k.id, false, NULL), 0);
        assert_int_equal(luks_activate(f->image, NULL, &u), -EKEYREVOKED);
        assert_int_equal(kms_key_schedule_deletion(f->b, k.id, 7, NULL), 0);
        assert_int_equal(luks_activate(f->image, NULL, &u), -EKEYEXPIRED);
        test_clock += 7 * USEC_PER_DAY;
        assert_int_equal(luks_activate(f->image, NULL, &u), -ENOKEY);
}

static bool have_mkfs_ext4(void) {
        return system("PATH=\"$PATH:/usr/sbin:/sbin\" command -v mkfs.ext4 >/dev/null 2>&1") == 0;
}

static void test_refuse_ext4(void **state) {
        fixture *f = *state;
        _cleanup_(secret_freep) secret *dk = NULL;
        _cleanup_(evs_token_done) evs_token t = {};
        _cleanup_(luks_info_done) luks_info info = {};
        _cleanup_free_ char *cmd = NULL, *what = NULL;
        uint8_t before[32], after[32];
        const char *reason = NULL;

        if (!have_mkfs_ext4()) {
                print_message("mkfs.ext4 is not installed: skipping the ext4 case\n");
                skip();
        }
        assert_true(asprintf(&cmd, "PATH=\"$PATH:/usr/sbin:/sbin\" mkfs.ext4 -q -F '%s'", f->image) > 0);
        assert_int_equal(system(cmd), 0);
        test_sha256_file(f->image, before);

        seal(f, VOLUME, &dk, &t);
        assert_int_equal(luks_format(f->image, VOLUME, dk, &t, false, &what), -ENOTEMPTY);
        assert_non_null(what);
        assert_string_equal(what, "ext4");
        test_sha256_file(f->image, after);
        assert_memory_equal(before, after, 32);
        assert_int_equal(luks_read(f->image, &info, &reason), -ENODATA);
        assert_string_equal(reason, "not a LUKS2 volume");
        what = mfree(what);

        /* Forced: formatted anyway. */
        format_ok(f->image, VOLUME, dk, &t, true);
        assert_int_equal(luks_read(f->image, &info, &reason), 0);
        assert_string_equal(info.label, VOLUME);
}

static void test_refuse_luks(void **state) {
        fixture *f = *state;
        _cleanup_(secret_freep) secret *dk = NULL, *dk2 = NULL;
        _cleanup_(evs_token_done) evs_token t = {}, t2 = {};
        _cleanup_(luks_info_done) luks_info info = {}, info2 = {};
        _cleanup_free_ char *what = NULL;
        _cleanup_(luks_unlock_done) luks_unlock u = { .volume_id = "vol-luks-2" };
        uint8_t before[32], after[32];
        const char *reason = NULL;

        format_volume(f, &dk, &t);
        assert_int_equal(luks_read(f->image, &info, &reason), 0);
        test_sha256_file(f->image, before);

        /* An existing LUKS volume is never overwritten by accident, not even by the same volume. */
        seal(f, "vol-luks-2", &dk2, &t2);
        assert_int_equal(luks_format(f->image, "vol-luks-2", dk2, &t2, false, &what), -ENOTEMPTY);
        assert_string_equal(what, "crypto_LUKS");
        what = mfree(what);
        assert_int_equal(luks_format(f->image, VOLUME, dk, &t, false, &what), -ENOTEMPTY);
        test_sha256_file(f->image, after);
        assert_memory_equal(before, after, 32);

        /* Forced: a new volume, new UUID, the new token opens it. */
        format_ok(f->image, "vol-luks-2", dk2, &t2, true);
        assert_int_equal(luks_read(f->image, &info2, &reason), 0);
        assert_string_equal(info2.label, "vol-luks-2");
        assert_string_not_equal(info2.uuid, info.uuid);
        u.registry = f->reg;
        assert_int_equal(luks_activate(f->image, NULL, &u), 0);
}

static void test_refuse_other_signatures(void **state) {
        fixture *f = *state;
        _cleanup_(secret_freep) secret *dk = NULL;
        _cleanup_(evs_token_done) evs_token t = {};
        _cleanup_free_ char *what = NULL;
        uint8_t mbr[512] = {}, before[32], after[32];
        int fd;

        /* A DOS partition table: one partition entry and the boot signature. */
        mbr[446 + 4] = 0x83;          /* Linux */
        mbr[446 + 8] = 0x00;
        mbr[446 + 9] = 0x08;          /* starts at LBA 2048 */
        mbr[446 + 12] = 0x00;
        mbr[446 + 13] = 0x80;         /* 32768 sectors */
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        fd = open(f->image, O_WRONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(pwrite(fd, mbr, sizeof mbr, 0), (ssize_t) sizeof mbr);
        assert_int_equal(close(fd), 0);
        test_sha256_file(f->image, before);

        seal(f, VOLUME, &dk, &t);
        assert_int_equal(luks_format(f->image, VOLUME, dk, &t, false, &what), -ENOTEMPTY);
        assert_non_null(what);
        assert_non_null(strstr(what, "dos"));
        test_sha256_file(f->image, after);
        assert_memory_equal(before, after, 32);
}

static void test_format_errors(void **state) {
        fixture *f = *state;
        _cleanup_(secret_freep) secret *dk = NULL;
        _cleanup_(evs_token_done) evs_token t = {};
        _cleanup_free_ char *small = test_path(f->dir, "small.img"), *empty = test_path(f->dir, "empty.img"),
                            *dir = test_path(f->dir, "a-directory"), *missing = test_path(f->dir, "missing.img");
        char *what = NULL;
        uint8_t before[32], after[32];
        int r;

        seal(f, VOLUME, &dk, &t);

        /* Too small for the 16 MiB LUKS2 header and any data. */
        make_image(small, 16U * 1024U * 1024U);
        test_sha256_file(small, before);
        assert_int_equal(luks_format(small, VOLUME, dk, &t, false, &what), -EFBIG);
        assert_int_equal(luks_format(small, VOLUME, dk, &t, true, &what), -EFBIG);
        test_sha256_file(small, after);
        assert_memory_equal(before, after, 32);
        make_image(empty, 0);
        assert_int_equal(luks_format(empty, VOLUME, dk, &t, false, &what), -EFBIG);

        /* Not a device or an image. */
        assert_int_equal(mkdir(dir, 0700), 0);
        r = luks_format(dir, VOLUME, dk, &t, true, &what);
        assert_true(r < 0);
        assert_int_not_equal(r, -ENOSPC);
        assert_int_equal(luks_format(missing, VOLUME, dk, &t, true, &what), -ENOENT);
        assert_int_equal(access(missing, F_OK), -1);

        /* Bad arguments. */
        assert_int_equal(luks_format(f->image, "bad/volume", dk, &t, false, &what), -EINVAL);
        assert_int_equal(luks_format(f->image, "", dk, &t, false, &what), -EINVAL);
        assert_int_equal(luks_format(f->image, VOLUME, NULL, &t, false, &what), -EINVAL);
        assert_null(what);

        /* None of it touched the image. */
        {
                _cleanup_(luks_info_done) luks_info info = {};
                const char *reason = NULL;

                assert_int_equal(luks_read(f->image, &info, &reason), -ENODATA);
                assert_string_equal(reason, "not a LUKS2 volume");
        }
}

static void test_tokens(void **state) {
        fixture *f = *state;
        _cleanup_(secret_freep) secret *dk = NULL;
        _cleanup_(evs_token_done) evs_token t = {};
        _cleanup_(luks_unlock_done) luks_unlock u = { .volume_id = VOLUME };
        const char *reason = NULL;
        int id = -1;

        format_volume(f, &dk, &t);
        u.registry = f->reg;
        {
                _cleanup_(luks_info_done) luks_info info = {};

                assert_int_equal(luks_read(f->image, &info, &reason), 0);
                assert_int_equal(luks_token_remove(f->image, info.token_id), 0);
        }
        {
                _cleanup_(luks_info_done) luks_info info = {};

                assert_int_equal(luks_read(f->image, &info, &reason), -ENODATA);
                assert_string_equal(reason, "no evs-kms token");
        }
        assert_true(luks_activate(f->image, NULL, &u) < 0);

        assert_int_equal(luks_token_add(f->image, &t, &id), 0);
        assert_true(id >= 0);
        assert_int_equal(luks_activate(f->image, NULL, &u), 0);
}

/* Overwrites 8 bytes at @offset of @path. */
/* luks_info_activate() of a volume read with luks_read_keep(), as an attach does (a key check: no name). */
static int info_activate(const char *image, const secret *dk) {
        _cleanup_(luks_info_done) luks_info info = {};
        const char *reason = NULL;
        int r;

        r = luks_read_keep(image, &info, &reason);
        if (r < 0)
                return r;
        return luks_info_activate(&info, NULL, info.token_id, dk);
}

/* Rewrites the evs-kms token of @image as @t. */
static void token_rewrite(const char *image, const evs_token *t) {
        _cleanup_free_ char *json = NULL;
        struct crypt_device *cd = NULL;
        int id = -1;
        const char *type;

        assert_int_equal(evs_token_to_json(t, &json), 0);
        assert_int_equal(crypt_init(&cd, image), 0);
        assert_int_equal(crypt_load(cd, CRYPT_LUKS2, NULL), 0);
        for (int i = 0; i < 32 && id < 0; i++)
                if (crypt_token_status(cd, i, &type) != CRYPT_TOKEN_INACTIVE && type && streq(type, EVS_TOKEN_TYPE))
                        id = i;
        assert_true(id >= 0);
        assert_int_equal(crypt_token_json_set(cd, id, json), id);
        crypt_free(cd);
}

/* The volume key sealed in the token opens the volume without the keyslot; without it (or with another
 * data key) the keyslot answers; a token whose keyslot is gone opens nothing. */
static void test_sealed_volume_key(void **state) {
        fixture *f = *state;
        _cleanup_(secret_freep) secret *dk = NULL, *wrong = NULL;
        _cleanup_(evs_token_done) evs_token t = {}, plain = {};
        _cleanup_(luks_info_done) luks_info info = {};
        const char *reason = NULL;
        struct crypt_device *cd = NULL;
        uint64_t offset = 0, length = 0;
        _cleanup_free_ uint8_t *zeros = NULL;
        int fd;

        format_volume(f, &dk, &t);
        assert_non_null(t.sealed_vk);
        assert_int_equal(luks_read(f->image, &info, &reason), 0);
        assert_non_null(info.token.sealed_vk);
        assert_memory_equal(info.token.sealed_vk, t.sealed_vk, EVS_SEALED_VK_SIZE);
        assert_int_equal(info_activate(f->image, dk), 0);

        /* Another data key opens neither the seal nor the keyslot. */
        assert_int_equal(secret_new_copy(dk->data, dk->size, &wrong), 0);
        wrong->data[3] ^= 0x40;
        assert_int_equal(info_activate(f->image, wrong), -EPERM);

        /* With the keyslot's key material destroyed, only the sealed key opens the volume... */
        assert_int_equal(crypt_init(&cd, f->image), 0);
        assert_int_equal(crypt_load(cd, CRYPT_LUKS2, NULL), 0);
        assert_int_equal(crypt_keyslot_area(cd, t.keyslot, &offset, &length), 0);
        crypt_free(cd);
        zeros = calloc(1, length);
        assert_non_null(zeros);
        fd = open(f->image, O_WRONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(pwrite(fd, zeros, length, (off_t) offset), (ssize_t) length);
        assert_int_equal(close(fd), 0);
        assert_int_equal(passphrase_check(f->image, t.keyslot, dk->data, dk->size), -EPERM);
        assert_int_equal(info_activate(f->image, dk), 0);

        /* ...and a token without it (as older versions wrote) goes through the keyslot, which now fails. */
        luks_info_done(&info);
        assert_int_equal(luks_read(f->image, &info, &reason), 0);
        plain = info.token;
        info.token = (evs_token) {};
        free(plain.sealed_vk);
        plain.sealed_vk = NULL;
        token_rewrite(f->image, &plain);
        assert_int_equal(info_activate(f->image, dk), -EPERM);

        /* A seal bound to another volume's UUID does not open: put the seal back, change the UUID. */
        assert_int_equal(evs_token_copy_sealed_vk(&plain, &t), 0);
        token_rewrite(f->image, &plain);
        assert_int_equal(info_activate(f->image, dk), 0);
        assert_int_equal(crypt_init(&cd, f->image), 0);
        assert_int_equal(crypt_load(cd, CRYPT_LUKS2, NULL), 0);
        assert_int_equal(crypt_set_uuid(cd, "0b9c2e4e-66a1-4cf4-9d0e-5a1c3f6b7d20"), 0);
        crypt_free(cd);
        assert_int_equal(info_activate(f->image, dk), -EPERM);
}

static void scribble(const char *path, off_t offset) {
        int fd = open(path, O_WRONLY | O_CLOEXEC);

        assert_true(fd >= 0);
        assert_int_equal(pwrite(fd, "XXXXXXXX", 8, offset), 8);
        assert_int_equal(close(fd), 0);
}

/* luks_read() never lets libcryptsetup repair a damaged header copy: it reads the intact one and says which
 * one is damaged; luks_repair() repairs, on purpose, and only when there is something to repair. */
static void test_damaged_header(void **state) {
        fixture *f = *state;
        _cleanup_(secret_freep) secret *dk = NULL;
        _cleanup_(evs_token_done) evs_token t = {};
        _cleanup_free_ char *pristine = test_path(f->dir, "pristine.img");
        uint8_t before[32], after[32];
        static const struct {
                off_t offset;
                const char *reason;
        } cases[] = {
                {4200, "the primary LUKS2 header is damaged (the secondary copy is intact)"},
                {16384 + 4200, "the secondary LUKS2 header is damaged (the primary copy is intact)"},
        };

        format_volume(f, &dk, &t);
        {
                _cleanup_free_ char *data = NULL;
                size_t size = 0;

                data = test_read_file(f->image, &size);
                test_write_file(pristine, data, size, 0600);
        }

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(luks_info_done) luks_info info = {}, again = {};
                const char *reason = NULL;
                bool repaired = true;

                assert_int_equal(rename(pristine, f->image), 0);
                {
                        _cleanup_free_ char *data = NULL;
                        size_t size = 0;

                        data = test_read_file(f->image, &size);
                        test_write_file(pristine, data, size, 0600);
                }
                scribble(f->image, cases[i].offset);
                test_sha256_file(f->image, before);

                assert_int_equal(luks_read(f->image, &info, &reason), 0);
                assert_string_equal(info.label, VOLUME);
                assert_non_null(info.damaged);
                assert_string_equal(info.damaged, cases[i].reason);
                test_sha256_file(f->image, after);
                assert_memory_equal(before, after, 32); /* not a byte written */

                reason = NULL;
                assert_int_equal(luks_repair(f->image, &repaired, &reason), 0);
                assert_true(repaired);
                assert_string_equal(reason, cases[i].reason);
                assert_int_equal(luks_read(f->image, &again, &reason), 0);
                assert_string_equal(again.label, VOLUME);
                assert_null(again.damaged);
                assert_int_equal(passphrase_check(f->image, t.keyslot, dk->data, dk->size), t.keyslot);

                /* Intact now: a second repair writes nothing. */
                test_sha256_file(f->image, before);
                assert_int_equal(luks_repair(f->image, &repaired, &reason), 0);
                assert_false(repaired);
                test_sha256_file(f->image, after);
                assert_memory_equal(before, after, 32);
        }

        /* An interrupted header update: both copies valid, the secondary one older. It reads (the newest copy)
         * without a write and is not called damaged; a repair brings the older copy up to date. */
        {
                _cleanup_(luks_info_done) luks_info info = {};
                _cleanup_free_ char *old = NULL, *cur = NULL;
                const char *reason = NULL;
                bool repaired = false;
                size_t size = 0;
                int id = -1, fd;

                assert_int_equal(rename(pristine, f->image), 0);
                old = test_read_file(f->image, &size);
                assert_int_equal(luks_token_add(f->image, &t, &id), 0); /* a header update: seqid + 1 */
                fd = open(f->image, O_WRONLY | O_CLOEXEC);
                assert_true(fd >= 0);
                assert_int_equal(pwrite(fd, old + 16384, 16384, 16384), 16384); /* the old secondary back */
                assert_int_equal(close(fd), 0);
                cur = test_read_file(f->image, NULL);
                test_write_file(pristine, cur, size, 0600);
                test_sha256_file(f->image, before);

                assert_int_equal(luks_read(f->image, &info, &reason), 0);
                assert_string_equal(info.label, VOLUME);
                assert_null(info.damaged); /* not damage: libcryptsetup's own next write finishes it */
                test_sha256_file(f->image, after);
                assert_memory_equal(before, after, 32);
                assert_int_equal(luks_repair(f->image, &repaired, &reason), 0);
                assert_true(repaired);
                assert_non_null(strstr(reason, "interrupted"));
                assert_int_equal(luks_repair(f->image, &repaired, &reason), 0);
                assert_false(repaired);
        }

        /* Both copies damaged: not LUKS2 any more, nothing to repair from. */
        assert_int_equal(rename(pristine, f->image), 0);
        scribble(f->image, 4200);
        scribble(f->image, 16384 + 4200);
        {
                _cleanup_(luks_info_done) luks_info info = {};
                const char *reason = NULL;
                bool repaired = false;

                assert_int_equal(luks_read(f->image, &info, &reason), -ENODATA);
                assert_int_equal(luks_repair(f->image, &repaired, &reason), -ENODATA);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                TEST(test_format_read),
                TEST(test_activate_check),
                TEST(test_activate_wrong_key),
                TEST(test_activate_key_states),
                TEST(test_refuse_ext4),
                TEST(test_refuse_luks),
                TEST(test_refuse_other_signatures),
                TEST(test_format_errors),
                TEST(test_tokens),
                TEST(test_damaged_header),
                TEST(test_sealed_volume_key),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
