/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* src/shared/image.c: image ids and names, the payload writer's contract (sizes, padding, refusals) and
 * the records. That the payload decrypts byte-exact is proven against libcryptsetup's own decryption in
 * tests/integration/test-daemon.sh and against dm-crypt in tests/vm/test-image.sh. */

#include <fcntl.h>
#include <sys/stat.h>

#include "crypto.h"
#include "envelope.h"
#include "image.h"
#include "luks.h"
#include "test-util.h"

#define HEADER (16U * 1024U * 1024U)

typedef struct fixture {
        char *dir;
        char *state;
        kms_registry *reg;
        kms_backend *b;
        kms_key key;
} fixture;

static int setup(void **state) {
        fixture *f = calloc(1, sizeof *f);

        assert_non_null(f);
        test_clock = TEST_CLOCK_START;
        f->dir = test_mkdtemp();
        f->state = test_path(f->dir, "state");
        f->reg = test_local_registry(f->state);
        assert_int_equal(kms_registry_get(f->reg, NULL, &f->b), 0);
        assert_int_equal(kms_key_get(f->b, KMS_DEFAULT_KEY_ALIAS, &f->key), 0);
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
        free(f);
        return 0;
}

#define TEST(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

/* A formatted, empty image file for @id sized for @payload bytes; its data key in *ret_dk. */
static char *make_image(fixture *f, const char *id, uint64_t payload, secret **ret_dk) {
        _cleanup_(evs_token_done) evs_token t = {};
        char *path = test_path(f->dir, id), *what = NULL;
        int fd, r;

        fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, (off_t) (HEADER + (payload + 4095) / 4096 * 4096)), 0);
        assert_int_equal(close(fd), 0);
        assert_int_equal(envelope_seal(f->b, &f->key, id, ret_dk, &t), 0);
        r = luks_format(path, id, *ret_dk, &t, false, &what);
        if (r < 0)
                fail_msg("luks_format: %s", strerror(-r));
        return path;
}

static int source(fixture *f, const char *name, size_t size, uint8_t **ret_data) {
        _cleanup_free_ char *path = test_path(f->dir, name);
        uint8_t *data = malloc(size);
        int fd;

        assert_non_null(data);
        assert_int_equal(crypto_random(data, size), 0);
        test_write_file(path, data, size, 0400);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        *ret_data = data;
        return fd;
}

static off_t file_size(const char *path) {
        struct stat st;

        assert_int_equal(stat(path, &st), 0);
        return st.st_size;
}

static void test_ids_and_names(void **state) {
        char a[17], b[17];

        assert_int_equal(image_id_new(a), 0);
        assert_int_equal(image_id_new(b), 0);
        assert_int_equal(strlen(a), 16);
        assert_memory_equal(a, "img-", 4);
        assert_string_not_equal(a, b);
        assert_true(volume_id_valid(a));
        for (size_t i = 4; i < 16; i++)
                assert_non_null(strchr("0123456789abcdef", a[i]));

        assert_true(image_name_valid("base"));
        assert_true(image_name_valid("ubuntu-22.04_x"));
        assert_false(image_name_valid(""));
        assert_false(image_name_valid(".base"));
        assert_false(image_name_valid(NULL));
        assert_false(image_name_valid("a b"));
        assert_false(image_name_valid("a/b"));
}

static void count_progress(uint64_t done, uint64_t total, void *userdata) {
        unsigned *calls = userdata;

        assert_true(done > 0 && done <= total && total % 4096 == 0);
        (*calls)++;
}

static void test_payload_sizes(void **state) {
        fixture *f = *state;
        static const size_t sizes[] = { 1, 4095, 4096, 4097, 1024 * 1024 + 1, 3 * 1024 * 1024 };

        for (size_t k = 0; k < ELEMENTSOF(sizes); k++) {
                _cleanup_(secret_freep) secret *dk = NULL;
                _cleanup_free_ uint8_t *data = NULL;
                _cleanup_free_ char *img = NULL, *raw = NULL, *name = NULL;
                uint8_t before[32], after[32];
                unsigned calls = 0;
                size_t n;
                int fd;

                assert_true(asprintf(&name, "img-%zu", k) > 0);
                img = make_image(f, name, sizes[k], &dk);
                fd = source(f, "src.raw", sizes[k], &data);
                test_sha256_file(img, before);
                assert_int_equal(image_encrypt_payload(img, dk, fd, sizes[k], count_progress, &calls), 0);
                assert_int_equal(calls, (sizes[k] + 1024 * 1024 - 1) / (1024 * 1024));
                assert_int_equal(close(fd), 0);
                test_sha256_file(img, after);
                assert_memory_not_equal(before, after, 32);

                /* The data area is exactly the payload rounded up to whole sectors, and not the plaintext. */
                assert_int_equal(file_size(img), HEADER + (sizes[k] + 4095) / 4096 * 4096);
                raw = test_read_file(img, &n);
                assert_memory_not_equal(raw + HEADER, data, MIN(sizes[k], (size_t) 64));
                /* The header still opens with the data key. */
                {
                        _cleanup_(luks_unlock_done) luks_unlock u = { .registry = f->reg, .volume_id = name };

                        assert_int_equal(luks_activate(img, NULL, &u), 0);
                }
                test_rm_rf(img);
                {
                        _cleanup_free_ char *p = test_path(f->dir, "src.raw");

                        assert_int_equal(unlink(p), 0);
                }
        }
}

static void test_payload_deterministic(void **state) {
        fixture *f = *state;
        _cleanup_(secret_freep) secret *dk = NULL;
        _cleanup_free_ uint8_t *data = NULL;
        _cleanup_free_ char *img = NULL, *a = NULL, *b = NULL;
        size_t na, nb;
        int fd;

        /* Same key, same plaintext, same sectors: same ciphertext (XTS is deterministic per sector); a
         * source read twice gives the same image. */
        img = make_image(f, "img-det", 10000, &dk);
        fd = source(f, "src.raw", 10000, &data);
        assert_int_equal(image_encrypt_payload(img, dk, fd, 10000, NULL, NULL), 0);
        a = test_read_file(img, &na);
        assert_int_equal(image_encrypt_payload(img, dk, fd, 10000, NULL, NULL), 0);
        b = test_read_file(img, &nb);
        assert_int_equal(na, nb);
        assert_memory_equal(a + HEADER, b + HEADER, na - HEADER);
        assert_int_equal(close(fd), 0);

        /* Two equal plaintext sectors encrypt differently (the IV is the sector number). */
        {
                _cleanup_free_ char *p = test_path(f->dir, "zeros.raw"), *c = NULL;
                _cleanup_free_ uint8_t *zeros = calloc(1, 10000);
                size_t nc;

                assert_non_null(zeros);
                test_write_file(p, zeros, 10000, 0600);
                fd = open(p, O_RDONLY | O_CLOEXEC);
                assert_true(fd >= 0);
                assert_int_equal(image_encrypt_payload(img, dk, fd, 10000, NULL, NULL), 0);
                assert_int_equal(close(fd), 0);
                c = test_read_file(img, &nc);
                assert_memory_not_equal(c + HEADER, c + HEADER + 4096, 4096);
                assert_memory_not_equal(c + HEADER + 4096, c + HEADER + 8192, 4096);
                /* Within a 4096-byte sector XTS chains the 16-byte blocks: no repetition either. */
                assert_memory_not_equal(c + HEADER, c + HEADER + 16, 16);
        }
}

static void test_payload_refusals(void **state) {
        fixture *f = *state;
        _cleanup_(secret_freep) secret *dk = NULL, *wrong = NULL;
        _cleanup_free_ uint8_t *data = NULL;
        _cleanup_free_ char *img = NULL;
        int fd;

        img = make_image(f, "img-ref", 8192, &dk);
        fd = source(f, "src.raw", 8192, &data);
        assert_int_equal(crypto_random_secret(KMS_DATA_KEY_SIZE, &wrong), 0);
        assert_int_equal(image_encrypt_payload(img, wrong, fd, 8192, NULL, NULL), -EPERM);
        assert_int_equal(image_encrypt_payload(img, dk, fd, 0, NULL, NULL), -EINVAL);
        assert_int_equal(image_encrypt_payload(img, dk, -1, 8192, NULL, NULL), -EINVAL);
        /* The source is shorter than announced. */
        assert_int_equal(image_encrypt_payload(img, dk, fd, 8193, NULL, NULL), -EIO);
        assert_int_equal(close(fd), 0);
        /* Not a LUKS2 image. */
        {
                _cleanup_free_ char *p = test_path(f->dir, "src.raw");

                fd = open(p, O_RDONLY | O_CLOEXEC);
                assert_true(fd >= 0);
                assert_true(image_encrypt_payload(p, dk, fd, 8192, NULL, NULL) < 0);
                assert_int_equal(close(fd), 0);
        }
}

/* A formatted volume file of @size bytes (512-byte sectors when @size is not a multiple of 4096). */
static char *make_volume(fixture *f, const char *id, uint64_t size, secret **ret_dk) {
        _cleanup_(evs_token_done) evs_token t = {};
        char *path = test_path(f->dir, id), *what = NULL;
        int fd;

        fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, (off_t) size), 0);
        assert_int_equal(close(fd), 0);
        assert_int_equal(envelope_seal(f->b, &f->key, id, ret_dk, &t), 0);
        assert_int_equal(luks_format(path, id, *ret_dk, &t, false, &what), 0);
        return path;
}

static void test_copy_payload(void **state) {
        fixture *f = *state;
        _cleanup_(secret_freep) secret *dka = NULL, *dkb = NULL, *wrong = NULL;
        _cleanup_free_ uint8_t *data = NULL;
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL, *ra = NULL, *rb = NULL, *rc = NULL;
        const uint64_t size = 3 * 1024 * 1024 + 1, padded = 3 * 1024 * 1024 + 4096;
        uint64_t data_size = 0;
        unsigned calls = 0;
        size_t na, nb, nc;
        int fd;

        /* A: the payload in a 4096-byte-sector image. */
        a = make_image(f, "img-a", size, &dka);
        fd = source(f, "src.raw", size, &data);
        assert_int_equal(image_encrypt_payload(a, dka, fd, size, NULL, NULL), 0);
        assert_int_equal(close(fd), 0);
        assert_int_equal(image_data_size(a, &data_size), 0);
        assert_int_equal(data_size, padded);

        /* A -> B, a volume with 512-byte sectors and room to spare, under another data key. */
        b = make_volume(f, "vol-b", HEADER + 8 * 1024 * 1024 + 512, &dkb);
        assert_int_equal(image_copy_payload(a, dka, b, dkb, size, count_progress, &calls), 0);
        assert_true(calls >= 4);
        rb = test_read_file(b, &nb);
        assert_int_equal(nb, HEADER + 8 * 1024 * 1024 + 512); /* a file large enough is not resized */
        ra = test_read_file(a, &na);
        assert_memory_not_equal(ra + HEADER, rb + HEADER, 4096); /* other volume key */
        assert_memory_not_equal(rb + HEADER, data, 64);

        /* B -> C, a copy of A's header (same volume key) whose data area was wiped: C's data area is A's
         * again, byte for byte, across the change of sector size both ways. */
        c = test_path(f->dir, "img-a-copy");
        test_write_file(c, ra, HEADER, 0600);
        assert_int_equal(image_copy_payload(b, dkb, c, dka, size, NULL, NULL), 0);
        rc = test_read_file(c, &nc);
        assert_int_equal(nc, HEADER + padded);
        assert_memory_equal(ra + HEADER, rc + HEADER, padded);

        /* Refusals. */
        assert_int_equal(crypto_random_secret(KMS_DATA_KEY_SIZE, &wrong), 0);
        assert_int_equal(image_copy_payload(a, wrong, c, dka, size, NULL, NULL), -EPERM);
        assert_int_equal(image_copy_payload(a, dka, c, wrong, size, NULL, NULL), -EPERM);
        assert_int_equal(image_copy_payload(a, dka, c, dka, 0, NULL, NULL), -EINVAL);
        assert_int_equal(image_copy_payload(a, dka, c, dka, padded + 1, NULL, NULL), -EIO); /* past A's data */
        {
                _cleanup_free_ char *p = test_path(f->dir, "src.raw");

                assert_true(image_copy_payload(p, dka, c, dka, size, NULL, NULL) < 0); /* not LUKS2 */
                assert_true(image_data_size(p, &data_size) < 0);
        }
}

static void test_records(void **state) {
        fixture *f = *state;
        _cleanup_(image_record_done) image_record got = {};
        _cleanup_free_ char *path = NULL, *dir = NULL, *json = NULL, *bad = NULL;
        image_record a = {
                .id = (char *) "img-000000000001", .name = (char *) "zeta", .key_id = (char *) "k1",
                .key_alias = (char *) "app1", .backend = (char *) "local", .cipher = (char *) "aes-xts-plain64",
                .size = 3000001, .source = (char *) "/src/a.raw", .created = TEST_CLOCK_START,
        };
        image_record b = {
                .id = (char *) "img-000000000002", .name = (char *) "alpha", .key_id = (char *) "k2",
                .backend = (char *) "local", .size = 1,
        };
        image_record invalid = { .id = (char *) "img-x", .name = (char *) "bad name", .key_id = (char *) "k",
                                 .backend = (char *) "local" };
        image_record *l = NULL;
        size_t n = 0;

        assert_int_equal(image_db_list(f->state, &l, &n), 0);
        assert_int_equal(n, 0);
        assert_int_equal(image_db_load(f->state, "img-000000000001", &got), -ENOENT);
        assert_int_equal(image_db_save(f->state, &invalid), -EINVAL);

        assert_int_equal(image_db_save(f->state, &a), 0);
        assert_int_equal(image_db_save(f->state, &b), 0);
        assert_int_equal(image_db_load(f->state, "img-000000000001", &got), 0);
        assert_string_equal(got.name, "zeta");
        assert_string_equal(got.key_id, "k1");
        assert_string_equal(got.key_alias, "app1");
        assert_string_equal(got.cipher, "aes-xts-plain64");
        assert_string_equal(got.source, "/src/a.raw");
        assert_int_equal(got.size, 3000001);
        assert_int_equal(got.created, TEST_CLOCK_START);

        assert_int_equal(image_dir(f->state, &dir), 0);
        assert_int_equal(test_file_mode(dir), 0700);
        json = test_path(dir, "img-000000000001.json");
        assert_int_equal(test_file_mode(json), 0600);

        /* A corrupt record is skipped by the list and reported by load. */
        bad = test_path(dir, "img-00000000000b.json");
        test_write_file(bad, "{ nope", 6, 0600);
        assert_int_equal(image_db_load(f->state, "img-00000000000b", &(image_record) {}), -EUCLEAN);

        assert_int_equal(image_db_list(f->state, &l, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(l[0].name, "alpha"); /* sorted by name */
        assert_null(l[0].key_alias);
        assert_string_equal(l[1].name, "zeta");
        image_record_array_free(l, n);

        assert_int_equal(image_path(f->state, "img-000000000001", &path), 0);
        assert_true(strstr(path, "/images/img-000000000001.img") != NULL);
        assert_int_equal(image_db_remove(f->state, "img-000000000001"), 0);
        assert_int_equal(image_db_remove(f->state, "img-000000000001"), -ENOENT);
        assert_int_equal(image_db_remove(f->state, "../x"), -EINVAL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_ids_and_names),
                TEST(test_payload_sizes),
                TEST(test_payload_deterministic),
                TEST(test_payload_refusals),
                TEST(test_copy_payload),
                TEST(test_records),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
