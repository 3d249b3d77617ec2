/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* main() for the fuzz targets built without libFuzzer (-DEVS_FUZZ_STANDALONE, any compiler): every file given
 * (or every file in a directory given: a seed corpus) is run, then $EVS_FUZZ_MUTATIONS (default 2000)
 * deterministic mutations of it: bit flips, bytes replaced by ones a parser cares about, truncations, a
 * span duplicated, a span deleted. The same inputs on every run, so a failure is reproducible. */

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define INPUT_MAX (64U * 1024U)

static uint64_t rng = 0x9e3779b97f4a7c15u;
static unsigned long inputs;

static uint64_t next_random(void) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return rng;
}

static void mutate_and_run(const uint8_t *seed, size_t len, unsigned long mutations) {
        static const char alphabet[] = "{}[]\":,.=/\\-_ \t\n\r0123456789aefnrstul\x00\x01\x1b\x7f\x80\xc3\xff";
        static uint8_t buf[INPUT_MAX * 2];

        LLVMFuzzerTestOneInput(seed, len);
        inputs++;
        for (unsigned long m = 0; m < mutations; m++) {
                size_t n = MIN(len, (size_t) INPUT_MAX);

                memcpy(buf, seed, n);
                for (unsigned e = 0; e < 1 + next_random() % 4; e++) {
                        size_t at = n ? next_random() % n : 0, span = n ? 1 + next_random() % MIN(n - at, (size_t) 64) : 0;

                        switch (next_random() % 6) {
                        case 0:
                                if (n)
                                        buf[at] ^= (uint8_t) (1u << (next_random() % 8));
                                break;
                        case 1:
                                if (n)
                                        buf[at] = (uint8_t) alphabet[next_random() % (sizeof alphabet - 1)];
                                break;
                        case 2:
                                n = at;
                                break;
                        case 3:
                                if (n && n + span <= sizeof buf) {
                                        memmove(buf + at + span, buf + at, n - at);
                                        n += span;
                                }
                                break;
                        case 4:
                                if (n) {
                                        memmove(buf + at, buf + at + span, n - at - span);
                                        n -= span;
                                }
                                break;
                        case 5:
                                if (n)
                                        buf[at] = (uint8_t) next_random();
                                break;
                        }
                }
                LLVMFuzzerTestOneInput(buf, n);
                inputs++;
        }
}

static int run_file(const char *path, unsigned long mutations) {
        static uint8_t buf[INPUT_MAX];
        FILE *f = fopen(path, "re");
        size_t n;

        if (!f) {
                perror(path);
                return -1;
        }
        n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        mutate_and_run(buf, n, mutations);
        return 0;
}

static int compare(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static int run_path(const char *path, unsigned long mutations, unsigned *files) {
        struct dirent *de;
        struct stat st;
        char **names = NULL;
        size_t n = 0;
        DIR *d;
        int r = 0;

        if (stat(path, &st) < 0) {
                perror(path);
                return -1;
        }
        if (!S_ISDIR(st.st_mode)) {
                (*files)++;
                return run_file(path, mutations);
        }
        d = opendir(path);
        if (!d) {
                perror(path);
                return -1;
        }
        while ((de = readdir(d))) {
                char **a;

                if (de->d_name[0] == '.')
                        continue;
                a = realloc(names, (n + 1) * sizeof *names);
                if (!a)
                        abort();
                names = a;
                if (asprintf(&names[n++], "%s/%s", path, de->d_name) < 0)
                        abort();
        }
        closedir(d);
        qsort(names, n, sizeof *names, compare); /* the same order, so the same inputs */
        for (size_t i = 0; i < n; i++) {
                if (r >= 0)
                        r = run_path(names[i], mutations, files);
                free(names[i]);
        }
        free(names);
        return r;
}

int main(int argc, char *argv[]) {
        const char *e = getenv("EVS_FUZZ_MUTATIONS");
        unsigned long mutations = e ? strtoul(e, NULL, 10) : 2000;
        unsigned files = 0;

        if (argc < 2) {
                fprintf(stderr, "usage: %s FILE|CORPUS-DIR...\n", argv[0]);
                return 2;
        }
        for (int i = 1; i < argc; i++)
                if (run_path(argv[i], mutations, &files) < 0)
                        return 1;
        if (files == 0) {
                fprintf(stderr, "%s: no input files\n", argv[0]);
                return 1;
        }
        printf("%s: %u seed files, %lu inputs (%lu mutations each), no failure\n", argv[0], files, inputs, mutations);
        return 0;
}
