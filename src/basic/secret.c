/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "secret.h"

static size_t page_round(size_t size) {
        size_t page = (size_t) sysconf(_SC_PAGESIZE);

        return (size + page - 1) / page * page;
}

int secret_new(size_t size, secret **ret) {
        _cleanup_(secret_freep) secret *s = NULL;
        void *p;

        if (!ret)
                return -EINVAL;

        s = calloc(1, sizeof(secret));
        if (!s)
                return -ENOMEM;

        s->mapped = page_round(MAX(size, (size_t) 1));
        p = mmap(NULL, s->mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
                return negative_errno();
        s->data = p;
        s->size = size;

        /* Keep it out of swap and out of core dumps. mlock() can fail under RLIMIT_MEMLOCK for
         * unprivileged test runs; that is reported, never ignored. */
        if (mlock(s->data, s->mapped) < 0)
                return negative_errno();
        (void) madvise(s->data, s->mapped, MADV_DONTDUMP);
        (void) madvise(s->data, s->mapped, MADV_WIPEONFORK);

        *ret = TAKE_PTR(s);
        return 0;
}

int secret_new_copy(const void *data, size_t size, secret **ret) {
        secret *s;
        int r;

        r = secret_new(size, &s);
        if (r < 0)
                return r;
        if (size > 0)
                memcpy(s->data, data, size);
        *ret = s;
        return 0;
}

secret *secret_free(secret *s) {
        if (!s)
                return NULL;
        if (s->data) {
                explicit_bzero(s->data, s->mapped);
                (void) munlock(s->data, s->mapped);
                (void) munmap(s->data, s->mapped);
        }
        free(s);
        return NULL;
}

int secret_truncate(secret *s, size_t size) {
        if (!s || size > s->size)
                return -EINVAL;
        explicit_bzero(s->data + size, s->size - size);
        s->size = size;
        return 0;
}

int memcmp_const(const void *a, const void *b, size_t n) {
        const volatile uint8_t *x = a, *y = b;
        uint8_t d = 0;

        for (size_t i = 0; i < n; i++)
                d |= x[i] ^ y[i];
        return d != 0;
}

bool secret_equal(const secret *a, const secret *b) {
        if (!a || !b)
                return a == b;
        if (a->size != b->size)
                return false;
        return memcmp_const(a->data, b->data, a->size) == 0;
}

void erase_and_free(void *p, size_t n) {
        if (!p)
                return;
        explicit_bzero(p, n);
        free(p);
}

void *secret_steal_data(secret *s, size_t *ret_size) {
        uint8_t *p = s->data;
        size_t keep = page_round(MAX(s->size, (size_t) 1));

        /* secret_data_free() only knows the visible size: give back the pages a truncation left
         * beyond it now, so that none stays mapped and locked. */
        if (s->mapped > keep) {
                explicit_bzero(p + keep, s->mapped - keep);
                (void) munlock(p + keep, s->mapped - keep);
                (void) munmap(p + keep, s->mapped - keep);
        }
        *ret_size = s->size;
        free(s);
        return p;
}

void secret_data_free(void *data, size_t size) {
        size_t mapped = page_round(MAX(size, (size_t) 1));

        if (!data)
                return;
        explicit_bzero(data, mapped);
        (void) munlock(data, mapped);
        (void) munmap(data, mapped);
}
