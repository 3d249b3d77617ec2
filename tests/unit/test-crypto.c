/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "crypto.h"
#include "test-util.h"

static secret *random_key(size_t size) {
        secret *k = NULL;

        assert_int_equal(crypto_random_secret(size, &k), 0);
        assert_non_null(k);
        assert_int_equal(k->size, size);
        return k;
}

static void test_random(void **state) {
        _cleanup_(secret_freep) secret *a = random_key(32), *b = random_key(32);
        uint8_t zero[32] = {}, buf[64] = {};

        /* 2^-256: two draws are never equal, never all zero. */
        assert_false(secret_equal(a, b));
        assert_memory_not_equal(a->data, zero, sizeof zero);
        assert_int_equal(crypto_random(buf, sizeof buf), 0);
        assert_memory_not_equal(buf, zero, sizeof zero);
        assert_int_equal(crypto_random(buf, 0), 0);
}

static void test_gcm_round_trip(void **state) {
        static const size_t sizes[] = { 0, 1, 15, 16, 17, 32, 100, 4096 };
        static const char aad[] = "volume-1";
        _cleanup_(secret_freep) secret *key = random_key(AES_GCM_KEY_SIZE);
        uint8_t plain[4096];

        assert_int_equal(crypto_random(plain, sizeof plain), 0);

        for (size_t i = 0; i < ELEMENTSOF(sizes); i++)
                for (int with_aad = 0; with_aad <= 1; with_aad++) {
                        _cleanup_free_ uint8_t *sealed = NULL, *sealed2 = NULL;
                        _cleanup_(secret_freep) secret *opened = NULL;
                        size_t n = 0, n2 = 0;
                        const void *a = with_aad ? aad : NULL;
                        size_t a_size = with_aad ? strlen(aad) : 0;

                        assert_int_equal(aes_gcm_seal(key, a, a_size, plain, sizes[i], &sealed, &n), 0);
                        assert_int_equal(n, AES_GCM_NONCE_SIZE + sizes[i] + AES_GCM_TAG_SIZE);
                        if (sizes[i] >= 16) /* the ciphertext is not the plaintext */
                                assert_memory_not_equal(sealed + AES_GCM_NONCE_SIZE, plain, sizes[i]);

                        assert_int_equal(aes_gcm_open(key, a, a_size, sealed, n, &opened), 0);
                        assert_int_equal(opened->size, sizes[i]);
                        if (sizes[i] > 0)
                                assert_memory_equal(opened->data, plain, sizes[i]);

                        /* A fresh random nonce every time. */
                        assert_int_equal(aes_gcm_seal(key, a, a_size, plain, sizes[i], &sealed2, &n2), 0);
                        assert_int_equal(n, n2);
                        assert_memory_not_equal(sealed, sealed2, AES_GCM_NONCE_SIZE);
                }
}

static void test_gcm_wrong_aad_and_key(void **state) {
        _cleanup_(secret_freep) secret *key = random_key(32), *other = random_key(32), *out = NULL;
        _cleanup_free_ uint8_t *sealed = NULL;
        static const char plain[] = "thirty-two bytes of data key....";
        size_t n = 0;

        assert_int_equal(aes_gcm_seal(key, "vol-a", 5, plain, 32, &sealed, &n), 0);

        assert_int_equal(aes_gcm_open(key, "vol-b", 5, sealed, n, &out), -EBADMSG);
        assert_int_equal(aes_gcm_open(key, "vol-", 4, sealed, n, &out), -EBADMSG);
        assert_int_equal(aes_gcm_open(key, "vol-a ", 6, sealed, n, &out), -EBADMSG);
        assert_int_equal(aes_gcm_open(key, NULL, 0, sealed, n, &out), -EBADMSG);
        assert_int_equal(aes_gcm_open(other, "vol-a", 5, sealed, n, &out), -EBADMSG);
        assert_null(out);

        assert_int_equal(aes_gcm_open(key, "vol-a", 5, sealed, n, &out), 0);
        assert_memory_equal(out->data, plain, 32);
}

static void test_gcm_bit_flips(void **state) {
        _cleanup_(secret_freep) secret *key = random_key(32), *ok = NULL;
        _cleanup_free_ uint8_t *sealed = NULL;
        uint8_t plain[32];
        size_t n = 0;

        assert_int_equal(crypto_random(plain, sizeof plain), 0);
        assert_int_equal(aes_gcm_seal(key, "ctx", 3, plain, sizeof plain, &sealed, &n), 0);

        for (size_t bit = 0; bit < n * 8; bit++) {
                secret *out = NULL;

                sealed[bit / 8] ^= (uint8_t) (1U << (bit % 8));
                if (aes_gcm_open(key, "ctx", 3, sealed, n, &out) != -EBADMSG)
                        fail_msg("flipping bit %zu of %zu was not detected", bit, n * 8);
                assert_null(out);
                sealed[bit / 8] ^= (uint8_t) (1U << (bit % 8));
        }

        /* And the restored blob still opens: the loop really flipped one bit at a time. */
        assert_int_equal(aes_gcm_open(key, "ctx", 3, sealed, n, &ok), 0);
        assert_memory_equal(ok->data, plain, sizeof plain);
}

static void test_gcm_short_input(void **state) {
        _cleanup_(secret_freep) secret *key = random_key(32), *empty = NULL;
        _cleanup_free_ uint8_t *sealed = NULL;
        uint8_t buf[AES_GCM_NONCE_SIZE + AES_GCM_TAG_SIZE] = {};
        size_t n = 0;

        for (size_t i = 0; i < sizeof buf; i++) {
                secret *out = NULL;

                assert_int_equal(aes_gcm_open(key, NULL, 0, buf, i, &out), -EBADMSG);
                assert_null(out);
        }
        /* Exactly nonce + tag of zeros: the right size for an empty plaintext, but forged. */
        assert_int_equal(aes_gcm_open(key, NULL, 0, buf, sizeof buf, &empty), -EBADMSG);

        /* A real blob cut short by one byte, or with one byte more. */
        assert_int_equal(aes_gcm_seal(key, NULL, 0, "abcd", 4, &sealed, &n), 0);
        assert_int_equal(aes_gcm_open(key, NULL, 0, sealed, n - 1, &empty), -EBADMSG);
        sealed = realloc(sealed, n + 1);
        assert_non_null(sealed);
        sealed[n] = 0;
        assert_int_equal(aes_gcm_open(key, NULL, 0, sealed, n + 1, &empty), -EBADMSG);
        assert_null(empty);

        /* The empty plaintext seals and opens. */
        sealed = mfree(sealed);
        assert_int_equal(aes_gcm_seal(key, NULL, 0, NULL, 0, &sealed, &n), 0);
        assert_int_equal(n, AES_GCM_NONCE_SIZE + AES_GCM_TAG_SIZE);
        assert_int_equal(aes_gcm_open(key, NULL, 0, sealed, n, &empty), 0);
        assert_int_equal(empty->size, 0);
}

static void test_gcm_key_size(void **state) {
        static const size_t bad[] = { 0, 1, 16, 24, 31, 33, 64 };
        _cleanup_(secret_freep) secret *good = random_key(32);
        _cleanup_free_ uint8_t *sealed = NULL;
        uint8_t *out = NULL;
        secret *opened = NULL;
        size_t n = 0, out_size = 0;

        assert_int_equal(aes_gcm_seal(good, NULL, 0, "x", 1, &sealed, &n), 0);

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_(secret_freep) secret *k = random_key(bad[i]);

                assert_int_equal(aes_gcm_seal(k, NULL, 0, "x", 1, &out, &out_size), -EINVAL);
                assert_int_equal(aes_gcm_open(k, NULL, 0, sealed, n, &opened), -EINVAL);
        }
        assert_int_equal(aes_gcm_seal(NULL, NULL, 0, "x", 1, &out, &out_size), -EINVAL);
        assert_int_equal(aes_gcm_open(NULL, NULL, 0, sealed, n, &opened), -EINVAL);
        assert_null(out);
        assert_null(opened);
}

static void test_base64_vectors(void **state) {
        /* RFC 4648 section 10. */
        static const char *const vectors[][2] = {
                { "", "" },          { "f", "Zg==" },         { "fo", "Zm8=" },         { "foo", "Zm9v" },
                { "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
        };

        for (size_t i = 0; i < ELEMENTSOF(vectors); i++) {
                _cleanup_free_ char *enc = NULL;
                _cleanup_free_ uint8_t *dec = NULL;
                size_t n = SIZE_MAX;

                assert_int_equal(base64_encode(vectors[i][0], strlen(vectors[i][0]), &enc), 0);
                assert_string_equal(enc, vectors[i][1]);
                assert_int_equal(base64_decode(vectors[i][1], &dec, &n), 0);
                assert_int_equal(n, strlen(vectors[i][0]));
                if (n > 0)
                        assert_memory_equal(dec, vectors[i][0], n);
        }

        /* All 64 symbols. */
        {
                static const uint8_t all[] = { 0x00, 0x10, 0x83, 0x10, 0x51, 0x87, 0x20, 0x92, 0x8b, 0x30, 0xd3, 0x8f,
                                               0x41, 0x14, 0x93, 0x51, 0x55, 0x97, 0x61, 0x96, 0x9b, 0x71, 0xd7, 0x9f,
                                               0x82, 0x18, 0xa3, 0x92, 0x59, 0xa7, 0xa2, 0x9a, 0xab, 0xb2, 0xdb, 0xaf,
                                               0xc3, 0x1c, 0xb3, 0xd3, 0x5d, 0xb7, 0xe3, 0x9e, 0xbb, 0xf3, 0xdf, 0xbf };
                _cleanup_free_ char *enc = NULL;

                assert_int_equal(base64_encode(all, sizeof all, &enc), 0);
                assert_string_equal(enc, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");
        }
}

static void test_base64_round_trip(void **state) {
        uint8_t data[64];

        for (size_t size = 0; size <= 64; size++)
                for (int round = 0; round < 8; round++) {
                        _cleanup_free_ char *enc = NULL;
                        _cleanup_free_ uint8_t *dec = NULL;
                        size_t n = SIZE_MAX;

                        assert_int_equal(crypto_random(data, sizeof data), 0);
                        if (round == 0)
                                memset(data, 0, sizeof data);
                        else if (round == 1)
                                memset(data, 0xff, sizeof data);

                        assert_int_equal(base64_encode(data, size, &enc), 0);
                        assert_int_equal(strlen(enc), (size + 2) / 3 * 4);
                        if (base64_decode(enc, &dec, &n) != 0)
                                fail_msg("decoding the encoding of %zu bytes (\"%s\") failed", size, enc);
                        assert_int_equal(n, size);
                        if (size > 0)
                                assert_memory_equal(dec, data, size);
                }
}

static void assert_decode_rejects(const char *s) {
        uint8_t *dec = NULL;
        size_t n = SIZE_MAX;
        int r = base64_decode(s, &dec, &n);

        if (r != -EINVAL)
                fail_msg("base64_decode(\"%s\") returned %d, not -EINVAL", s, r);
        assert_null(dec);
        assert_int_equal(n, SIZE_MAX);
}

static void test_base64_rejects(void **state) {
        static const char *const bad[] = {
                /* characters outside the standard alphabet */
                "Zm9v!A==", "Zm9-", "Zm9_", "Zm9vYm.y", "Zm9vYmF\x80", "\xc3\xa9m9",
                /* length not a multiple of 4 */
                "Z", "Zm", "Zm9", "Zm9vY", "Zm9vYg=", "Zm9vYg===",
                /* misplaced padding */
                "====", "=m9v", "Z=9v", "Zm=v", "Zg==Zm9v", "Zm8=Zm9v", "Z===", "Zm9vYg=a",
                /* non-canonical trailing bits */
                "Zh==", "Zv==", "Zm9=", "Zm+=", "Zm9vYh==", "Zm9vYmF=",
                /* whitespace anywhere */
                " Zm9v", "Zm9v ", "Zm 9v", "Zm9v\nYmFy", "Zm9v\r\nYmFy", "Zm9\tv", "Zm9vYmF\n",
        };

        assert_int_equal(base64_decode(NULL, &(uint8_t *) { NULL }, &(size_t) { 0 }), -EINVAL);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                assert_decode_rejects(bad[i]);

        /* Every byte outside the alphabet, in every position of a group. */
        for (int c = 1; c < 256; c++) {
                char s[5];

                if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
                    c == '/')
                        continue;
                for (int pos = 0; pos < 4; pos++) {
                        memcpy(s, "QUFB", 5);
                        s[pos] = (char) c;
                        assert_decode_rejects(s);
                }
        }
}

static int cmp_uuid(const void *a, const void *b) {
        return strcmp(a, b);
}

static void test_uuid_random(void **state) {
        enum { N = 2000 };
        static char ids[N][37];

        for (size_t i = 0; i < N; i++) {
                assert_int_equal(uuid_random(ids[i]), 0);
                assert_int_equal(strlen(ids[i]), 36);
                assert_true(uuid_valid(ids[i]));
                assert_int_equal(ids[i][14], '4'); /* version 4 */
                assert_non_null(strchr("89ab", ids[i][19])); /* RFC 4122 variant */
                for (size_t j = 0; j < 36; j++)
                        assert_true(ids[i][j] == '-' || (ids[i][j] >= '0' && ids[i][j] <= '9') ||
                                    (ids[i][j] >= 'a' && ids[i][j] <= 'f'));
        }
        qsort(ids, N, sizeof ids[0], cmp_uuid);
        for (size_t i = 1; i < N; i++)
                assert_string_not_equal(ids[i - 1], ids[i]);
}

static void test_uuid_valid(void **state) {
        static const char *const good[] = {
                "123e4567-e89b-42d3-a456-426614174000",
                "00000000-0000-0000-0000-000000000000",
                "ffffffff-ffff-ffff-ffff-ffffffffffff",
        };
        static const char *const bad[] = {
                "",
                "123e4567-e89b-42d3-a456-42661417400",   /* 35 */
                "123e4567-e89b-42d3-a456-4266141740000", /* 37 */
                "123e4567e89b42d3a456426614174000",      /* no dashes */
                "123e4567-e89b-42d3-a4564-26614174000",  /* dash misplaced */
                "123e456-7e89b-42d3-a456-426614174000",
                "123e4567-e89b-42d3-a456_426614174000",
                "123e4567-e89b-42d3-a456-42661417400g",  /* not hex */
                "g23e4567-e89b-42d3-a456-426614174000",
                " 23e4567-e89b-42d3-a456-426614174000",
                "123e4567-e89b-42d3-a456-42661417400 ",
                "123e4567-e89b-42d3-a456-4266141740\n0",
                "{23e4567-e89b-42d3-a456-426614174000}",
                "------------------------------------",
                "evs/default",
        };

        for (size_t i = 0; i < ELEMENTSOF(good); i++)
                assert_true(uuid_valid(good[i]));
        assert_false(uuid_valid(NULL));
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                if (uuid_valid(bad[i]))
                        fail_msg("uuid_valid(\"%s\") accepted it", bad[i]);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_random),
                cmocka_unit_test(test_gcm_round_trip),
                cmocka_unit_test(test_gcm_wrong_aad_and_key),
                cmocka_unit_test(test_gcm_bit_flips),
                cmocka_unit_test(test_gcm_short_input),
                cmocka_unit_test(test_gcm_key_size),
                cmocka_unit_test(test_base64_vectors),
                cmocka_unit_test(test_base64_round_trip),
                cmocka_unit_test(test_base64_rejects),
                cmocka_unit_test(test_uuid_random),
                cmocka_unit_test(test_uuid_valid),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
