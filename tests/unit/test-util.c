/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include "config.h"
#include "fileio.h"
#include "test-util.h"

usec_t test_clock = TEST_CLOCK_START;

usec_t test_clock_now(void) {
        return test_clock;
}

char *test_mkdtemp(void) {
        const char *tmp = getenv("TMPDIR");
        char *p = NULL;

        if (isempty(tmp))
                tmp = "/tmp";
        assert_true(asprintf(&p, "%s/evs-unit-XXXXXX", tmp) > 0);
        assert_non_null(mkdtemp(p));
        return p;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        if (flag == FTW_DP || flag == FTW_D)
                return rmdir(path) < 0 ? -1 : 0;
        return unlink(path) < 0 ? -1 : 0;
}

void test_rm_rf(const char *path) {
        if (!path)
                return;
        /* Depth first, not following symlinks, staying on this file system. */
        if (nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0 && errno != ENOENT)
                fprintf(stderr, "warning: cannot remove %s: %m\n", path);
}

char *test_path(const char *dir, const char *name) {
        char *p = NULL;

        assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
        return p;
}

kms_backend *test_local_backend(const kms_context *ctx) {
        kms_backend_config cfg = { .name = (char *) "local", .type = (char *) "local" };
        kms_backend *b = NULL;
        char *error = NULL;
        int r;

        r = kms_backend_open(&cfg, ctx, &b, &error);
        if (r < 0)
                fail_msg("kms_backend_open(local): %s: %s", strerror(-r), strna(error));
        assert_non_null(b);
        return b;
}

kms_registry *test_local_registry(const char *state_dir) {
        evs_config c = {};
        kms_registry *reg = NULL;
        char *error = NULL;
        int r;

        assert_int_equal(unsetenv("CREDENTIALS_DIRECTORY"), 0);
        r = evs_config_load(NULL, false, &c, &error);
        if (r < 0)
                fail_msg("evs_config_load: %s: %s", strerror(-r), strna(error));
        free(c.state_dir);
        c.state_dir = strdup(state_dir);
        assert_non_null(c.state_dir);

        r = kms_registry_new(&c, test_clock_now, &reg, &error);
        evs_config_done(&c);
        if (r < 0)
                fail_msg("kms_registry_new: %s: %s", strerror(-r), strna(error));
        return reg;
}

void test_write_file(const char *path, const void *data, size_t size, mode_t mode) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        const char *p = data;

        assert_true(fd >= 0);
        assert_int_equal(fchmod(fd, mode), 0);
        while (size > 0) {
                ssize_t n = write(fd, p, size);

                assert_true(n > 0);
                p += n;
                size -= (size_t) n;
        }
        assert_int_equal(close(fd), 0);
}

char *test_read_file(const char *path, size_t *ret_size) {
        char *buf = NULL;
        int r;

        r = read_full_file(path, 64U * 1024U * 1024U, &buf, ret_size);
        if (r < 0)
                fail_msg("cannot read %s: %s", path, strerror(-r));
        return buf;
}

int test_file_mode(const char *path) {
        struct stat st;

        if (stat(path, &st) < 0)
                return -errno;
        return (int) (st.st_mode & 07777);
}

static int count(const char *dir, const char *prefix) {
        DIR *d = opendir(dir);
        struct dirent *de;
        int n = 0;

        if (!d)
                return -errno;
        while ((de = readdir(d))) {
                if (streq(de->d_name, ".") || streq(de->d_name, ".."))
                        continue;
                if (!prefix || strncmp(de->d_name, prefix, strlen(prefix)) == 0)
                        n++;
        }
        closedir(d);
        return n;
}

int test_count_prefix(const char *dir, const char *prefix) {
        return count(dir, prefix);
}

int test_count_entries(const char *dir) {
        return count(dir, NULL);
}

void test_sha256_file(const char *path, uint8_t ret[32]) {
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        uint8_t buf[65536];
        unsigned len = 0;
        int fd;

        assert_non_null(md);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(EVP_DigestInit_ex(md, EVP_sha256(), NULL), 1);
        for (;;) {
                ssize_t n = read(fd, buf, sizeof buf);

                assert_true(n >= 0);
                if (n == 0)
                        break;
                assert_int_equal(EVP_DigestUpdate(md, buf, (size_t) n), 1);
        }
        assert_int_equal(EVP_DigestFinal_ex(md, ret, &len), 1);
        assert_int_equal(len, 32);
        close(fd);
        EVP_MD_CTX_free(md);
}

unsigned test_count_fds(void) {
        DIR *d = opendir("/proc/self/fd");
        unsigned n = 0;

        assert_non_null(d);
        while (readdir(d))
                n++;
        closedir(d);
        return n;
}

bool test_pid_alive(pid_t pid) {
        char path[64], buf[512], *p;
        bool alive = false;
        FILE *f;

        snprintf(path, sizeof path, "/proc/%d/stat", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return false;
        if (fgets(buf, sizeof buf, f) && (p = strrchr(buf, ')')))
                alive = p[2] != 'Z' && p[2] != 'X';
        fclose(f);
        return alive;
}
