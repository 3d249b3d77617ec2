/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdint.h>
#include <sys/mman.h>

#include "secret.h"
#include "test-util.h"

/* ASan's and TSan's mlock() interceptors do nothing. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#  define SANITIZED_MLOCK true
#else
#  define SANITIZED_MLOCK false
#endif

static size_t page_size(void) {
        return (size_t) sysconf(_SC_PAGESIZE);
}

/* The VmFlags of the mapping that holds @p, from /proc/self/smaps. */
static char *vm_flags(const void *p) {
        _cleanup_(fclosep) FILE *f = fopen("/proc/self/smaps", "re");
        char line[1024];
        bool inside = false;

        assert_non_null(f);
        while (fgets(line, sizeof line, f)) {
                unsigned long start, end;

                if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && strchr(line, '-') < strchr(line, ' ')) {
                        inside = (uintptr_t) p >= start && (uintptr_t) p < end;
                        continue;
                }
                if (inside && strncmp(line, "VmFlags:", 8) == 0)
                        return strdup(line + 8);
        }
        fail_msg("no mapping holds %p", p);
        return NULL;
}

static bool has_flag(const char *flags, const char *flag) {
        char padded[8];

        snprintf(padded, sizeof padded, " %s", flag);
        for (const char *s = flags; (s = strstr(s, padded)); s++)
                if (s[3] == ' ' || s[3] == '\n' || s[3] == 0)
                        return true;
        return false;
}

static bool page_mapped(const void *p) {
        unsigned char v;

        if (mincore((void *) ((uintptr_t) p & ~(uintptr_t) (page_size() - 1)), 1, &v) == 0)
                return true;
        assert_int_equal(errno, ENOMEM);
        return false;
}

static void test_new_sizes(void **state) {
        static const size_t sizes[] = { 0, 1, 31, 32, 4095, 4096, 4097, 65536, 100000 };
        size_t page = page_size();

        for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
                _cleanup_(secret_freep) secret *s = NULL;
                _cleanup_free_ char *flags = NULL;
                size_t want = sizes[i] == 0 ? page : (sizes[i] + page - 1) / page * page;

                assert_int_equal(secret_new(sizes[i], &s), 0);
                assert_non_null(s);
                assert_non_null(s->data);
                assert_int_equal(s->size, sizes[i]);
                assert_int_equal(s->mapped, want);
                assert_int_equal((uintptr_t) s->data % page, 0);

                /* Zeroed, all of it, and writable. */
                for (size_t j = 0; j < s->mapped; j++)
                        assert_int_equal(s->data[j], 0);
                memset(s->data, 0x5a, s->mapped);

                /* Locked in memory (not under ASan or TSan: SANITIZED_MLOCK), out of core dumps. */
                flags = vm_flags(s->data);
                if (!(has_flag(flags, "lo") || SANITIZED_MLOCK) || !has_flag(flags, "dd"))
                        fail_msg("secret of %zu bytes has VmFlags%s", sizes[i], flags);
                for (size_t off = 0; off < s->mapped; off += page)
                        assert_true(page_mapped(s->data + off));
        }

        assert_int_equal(secret_new(32, NULL), -EINVAL);
        assert_null(secret_free(NULL));
}

static void test_free_unmaps(void **state) {
        secret *s = NULL;
        uint8_t *p;
        size_t mapped;

        assert_int_equal(secret_new(3 * page_size(), &s), 0);
        p = s->data;
        mapped = s->mapped;
        assert_null(secret_free(s));
        for (size_t off = 0; off < mapped; off += page_size())
                assert_false(page_mapped(p + off));
}

static void test_copy(void **state) {
        _cleanup_(secret_freep) secret *a = NULL, *b = NULL, *empty = NULL;
        uint8_t buf[5000];

        for (size_t i = 0; i < sizeof buf; i++)
                buf[i] = (uint8_t) (i * 7 + 3);
        assert_int_equal(secret_new_copy(buf, sizeof buf, &a), 0);
        assert_int_equal(a->size, sizeof buf);
        assert_memory_equal(a->data, buf, sizeof buf);
        assert_ptr_not_equal(a->data, buf);
        for (size_t j = sizeof buf; j < a->mapped; j++)
                assert_int_equal(a->data[j], 0);

        /* A copy is independent of its source. */
        assert_int_equal(secret_new_copy(a->data, a->size, &b), 0);
        assert_true(secret_equal(a, b));
        a->data[0] ^= 1;
        assert_false(secret_equal(a, b));
        assert_int_equal(b->data[0], buf[0]);

        assert_int_equal(secret_new_copy(NULL, 0, &empty), 0);
        assert_int_equal(empty->size, 0);
}

static void test_truncate(void **state) {
        _cleanup_(secret_freep) secret *s = NULL;
        size_t page = page_size();

        assert_int_equal(secret_new(2 * page + 100, &s), 0);
        memset(s->data, 0xaa, s->size);

        assert_int_equal(secret_truncate(s, s->size + 1), -EINVAL);
        assert_int_equal(s->size, 2 * page + 100);
        assert_int_equal(secret_truncate(s, s->size), 0);
        assert_int_equal(s->size, 2 * page + 100);

        assert_int_equal(secret_truncate(s, 10), 0);
        assert_int_equal(s->size, 10);
        for (size_t i = 0; i < 10; i++)
                assert_int_equal(s->data[i], 0xaa);
        /* The tail is wiped, across pages. */
        for (size_t i = 10; i < s->mapped; i++)
                if (s->data[i] != 0)
                        fail_msg("byte %zu after truncation is 0x%02x", i, s->data[i]);

        assert_int_equal(secret_truncate(s, 11), -EINVAL);
        assert_int_equal(secret_truncate(s, 0), 0);
        assert_int_equal(s->size, 0);
        assert_int_equal(s->data[0], 0);
        assert_int_equal(secret_truncate(NULL, 0), -EINVAL);
}

static void test_equal(void **state) {
        _cleanup_(secret_freep) secret *a = NULL, *b = NULL, *c = NULL, *e1 = NULL, *e2 = NULL;
        uint8_t x[64], y[64];

        for (size_t i = 0; i < sizeof x; i++)
                x[i] = (uint8_t) (0xc0 ^ i);
        assert_int_equal(secret_new_copy(x, 32, &a), 0);
        assert_int_equal(secret_new_copy(x, 32, &b), 0);
        assert_int_equal(secret_new_copy(x, 31, &c), 0);
        assert_int_equal(secret_new(0, &e1), 0);
        assert_int_equal(secret_new(0, &e2), 0);

        assert_true(secret_equal(a, b));
        assert_true(secret_equal(a, a));
        assert_false(secret_equal(a, c)); /* prefix, other size */
        assert_false(secret_equal(c, a));
        assert_true(secret_equal(e1, e2));
        assert_false(secret_equal(e1, a));
        assert_true(secret_equal(NULL, NULL));
        assert_false(secret_equal(a, NULL));
        assert_false(secret_equal(NULL, a));

        /* Any single bit differing anywhere. */
        for (size_t bit = 0; bit < 32 * 8; bit++) {
                b->data[bit / 8] ^= (uint8_t) (1U << (bit % 8));
                assert_false(secret_equal(a, b));
                b->data[bit / 8] ^= (uint8_t) (1U << (bit % 8));
        }
        assert_true(secret_equal(a, b));

        memcpy(y, x, sizeof y);
        assert_int_equal(memcmp_const(x, y, sizeof x), 0);
        assert_int_equal(memcmp_const(x, y, 0), 0);
        for (size_t bit = 0; bit < sizeof y * 8; bit++) {
                y[bit / 8] ^= (uint8_t) (1U << (bit % 8));
                assert_int_not_equal(memcmp_const(x, y, sizeof x), 0);
                /* Only the first n bytes count. */
                assert_int_equal(memcmp_const(x, y, bit / 8), 0);
                y[bit / 8] ^= (uint8_t) (1U << (bit % 8));
        }
}

static void test_steal(void **state) {
        size_t page = page_size();
        secret *s = NULL;
        uint8_t *p;
        size_t size = 0;

        /* One page. */
        assert_int_equal(secret_new(32, &s), 0);
        memset(s->data, 0x11, 32);
        p = secret_steal_data(s, &size);
        assert_non_null(p);
        assert_int_equal(size, 32);
        for (size_t i = 0; i < 32; i++)
                assert_int_equal(p[i], 0x11);
        assert_true(page_mapped(p));
        secret_data_free(p, size);
        assert_false(page_mapped(p));

        /* Several pages: all are released. */
        assert_int_equal(secret_new(3 * page, &s), 0);
        memset(s->data, 0x22, s->size);
        p = secret_steal_data(s, &size);
        assert_int_equal(size, 3 * page);
        assert_int_equal(p[3 * page - 1], 0x22);
        secret_data_free(p, size);
        for (size_t i = 0; i < 3; i++)
                assert_false(page_mapped(p + i * page));

        /* Truncated to less than it mapped, then stolen: the size handed out is the visible one, and
         * secret_data_free() of that size still releases every page (nothing stays locked). */
        assert_int_equal(secret_new(3 * page, &s), 0);
        memset(s->data, 0x33, s->size);
        assert_int_equal(secret_truncate(s, 10), 0);
        p = secret_steal_data(s, &size);
        assert_int_equal(size, 10);
        assert_int_equal(p[9], 0x33);
        assert_int_equal(p[10], 0);
        secret_data_free(p, size);
        for (size_t i = 0; i < 3; i++)
                if (page_mapped(p + i * page))
                        fail_msg("page %zu of a truncated, stolen secret is still mapped after secret_data_free()", i);

        secret_data_free(NULL, 0);
        erase_and_free(NULL, 0);
}

static void test_erase_and_free(void **state) {
        char *p = strdup("secret");

        assert_non_null(p);
        erase_and_free(p, strlen(p) + 1); /* ASan/valgrind catch a bad free */
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_new_sizes),
                cmocka_unit_test(test_free_unmaps),
                cmocka_unit_test(test_copy),
                cmocka_unit_test(test_truncate),
                cmocka_unit_test(test_equal),
                cmocka_unit_test(test_steal),
                cmocka_unit_test(test_erase_and_free),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
