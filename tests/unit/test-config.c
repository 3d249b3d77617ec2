/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <limits.h>
#include <sys/stat.h>

#include "build-config.h"
#include "config.h"
#include "test-util.h"

typedef struct fixture {
        char *dir;
        char *conf; /* dir/evs-cryptd.conf */
        char *dropins; /* dir/evs-cryptd.conf.d */
} fixture;

static int setup(void **state) {
        fixture *f = calloc(1, sizeof *f);

        assert_non_null(f);
        f->dir = test_mkdtemp();
        f->conf = test_path(f->dir, "evs-cryptd.conf");
        f->dropins = test_path(f->dir, "evs-cryptd.conf.d");
        *state = f;
        return 0;
}

static int teardown(void **state) {
        fixture *f = *state;

        test_rm_rf(f->dir);
        free(f->dir);
        free(f->conf);
        free(f->dropins);
        free(f);
        return 0;
}

#define TEST(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

static void write_text(const char *path, const char *text) {
        test_write_file(path, text, strlen(text), 0644);
}

static void write_dropin(fixture *f, const char *name, const char *text) {
        _cleanup_free_ char *p = test_path(f->dropins, name);

        if (mkdir(f->dropins, 0755) < 0)
                assert_int_equal(errno, EEXIST);
        write_text(p, text);
}

static void load_ok(const char *path, evs_config *ret) {
        char *error = NULL;
        int r = evs_config_load(path, true, ret, &error);

        if (r < 0)
                fail_msg("evs_config_load(%s): %s: %s", path, strerror(-r), strna(error));
        assert_null(error);
}

/* Loads @path, which must fail with -EINVAL and an error that is exactly "@file:@line: @reason". */
static void expect_error_at(const char *path, const char *file, unsigned line, const char *reason) {
        _cleanup_free_ char *error = NULL, *want = NULL;
        evs_config c = {};
        int r;

        r = evs_config_load(path, true, &c, &error);
        if (r != -EINVAL)
                fail_msg("expected -EINVAL for %s:%u (%s), got %d", file, line, reason, r);
        assert_null(c.state_dir); /* nothing handed out */
        assert_true(asprintf(&want, "%s:%u: %s", file, line, reason) > 0);
        if (!error || !streq(error, want))
                fail_msg("error \"%s\", expected \"%s\"", strna(error), want);
}

/* A file holding @text fails with "FILE:@line: @reason", for each of @n cases. */
typedef struct error_case {
        const char *text;
        unsigned line;
        const char *reason;
} error_case;

static void expect_errors(fixture *f, const error_case *cases, size_t n) {
        for (size_t i = 0; i < n; i++) {
                write_text(f->conf, cases[i].text);
                expect_error_at(f->conf, f->conf, cases[i].line, cases[i].reason);
        }
}

static void expect_defaults(const evs_config *c) {
        assert_string_equal(c->state_dir, EVS_STATE_DIR);
        assert_string_equal(c->bus_path, EVS_BUS_PATH);
        assert_string_equal(c->default_backend, "local");
        assert_true(c->auto_attach);
        assert_int_equal(c->sweep_interval_sec, 3600);
        assert_int_equal(c->n_backends, 1);
        assert_string_equal(c->backends[0].name, "local");
        assert_string_equal(c->backends[0].type, "local");
        assert_int_equal(c->backends[0].n_settings, 0);
        assert_ptr_equal(evs_config_backend(c, "local"), &c->backends[0]);
}

static void test_defaults(void **state) {
        fixture *f = *state;
        _cleanup_(evs_config_done) evs_config a = {}, b = {}, e = {};
        char *error = NULL;

        assert_int_equal(evs_config_load(NULL, false, &a, &error), 0);
        assert_null(error);
        expect_defaults(&a);

        /* A missing file is fine unless it must exist. */
        assert_int_equal(evs_config_load(f->conf, false, &b, &error), 0);
        assert_null(error);
        expect_defaults(&b);
        assert_int_equal(evs_config_load(f->conf, true, &(evs_config) {}, &error), -ENOENT);
        assert_non_null(error);
        assert_non_null(strstr(error, f->conf));
        error = mfree(error);

        /* An empty file, and one of only comments and blank lines, are the defaults too. */
        write_text(f->conf, "");
        load_ok(f->conf, &e);
        expect_defaults(&e);
        evs_config_done(&e);
        write_text(f->conf, "# comment\n; comment\n\n   \n[Daemon]\n# nothing set\n");
        load_ok(f->conf, &e);
        expect_defaults(&e);
}

static void test_full_file(void **state) {
        fixture *f = *state;
        _cleanup_(evs_config_done) evs_config c = {};
        const kms_backend_config *hsm, *local;

        write_text(f->conf,
                   "# evs-cryptd.conf\n"                      /* 1 */
                   "[Daemon]\n"                               /* 2 */
                   "StateDirectory=/var/lib/evs-test\n"       /* 3 */
                   "BusPath = /run/evs-test/bus\n"            /* 4 */
                   "AutoAttach=no\n"                          /* 5 */
                   "SweepIntervalSec=600\n"                   /* 6 */
                   "\n"                                       /* 7 */
                   "[KMS]\n"                                  /* 8 */
                   "DefaultBackend=hsm\n"                     /* 9 */
                   "\n"                                       /* 10 */
                   "[Backend hsm]\n"                          /* 11 */
                   "Type=pkcs11\n"                            /* 12 */
                   "Module=/usr/lib/softhsm/libsofthsm2.so\n" /* 13 */
                   "PinFile=/etc/evs/pin\n"                   /* 14 */
                   "\n"                                       /* 15 */
                   "[Backend local]\n"                        /* 16 */
                   "RootKeyFile=/etc/evs/root.key\n");        /* 17 */
        load_ok(f->conf, &c);

        assert_string_equal(c.state_dir, "/var/lib/evs-test");
        assert_string_equal(c.bus_path, "/run/evs-test/bus");
        assert_false(c.auto_attach);
        assert_int_equal(c.sweep_interval_sec, 600);
        assert_string_equal(c.default_backend, "hsm");
        assert_int_equal(c.n_backends, 2);

        hsm = evs_config_backend(&c, "hsm");
        assert_non_null(hsm);
        assert_string_equal(hsm->name, "hsm");
        assert_string_equal(hsm->type, "pkcs11");
        assert_int_equal(hsm->n_settings, 2); /* Type= is not a setting */
        assert_string_equal(hsm->settings[0].key, "Module");
        assert_string_equal(hsm->settings[0].value, "/usr/lib/softhsm/libsofthsm2.so");
        assert_string_equal(hsm->settings[0].file, f->conf);
        assert_int_equal(hsm->settings[0].line, 13);
        assert_string_equal(hsm->settings[1].key, "PinFile");
        assert_int_equal(hsm->settings[1].line, 14);
        assert_ptr_equal(kms_config_find(hsm, "PinFile"), &hsm->settings[1]);
        assert_null(kms_config_find(hsm, "Type"));

        local = evs_config_backend(&c, "local");
        assert_non_null(local);
        assert_string_equal(local->type, "local");
        assert_int_equal(local->n_settings, 1);
        assert_string_equal(local->settings[0].value, "/etc/evs/root.key");
        assert_int_equal(local->settings[0].line, 17);

        assert_null(evs_config_backend(&c, "nope"));
}

/* The syntax of systemd unit files (evs-cryptd.conf(5)), where inih, which read these files before, had its
 * own: an indented line continued the previous value, "KEY=VALUE ;text" lost its text, a line of more than
 * 199 bytes was cut in two, and "KEY: VALUE" was an assignment. */
static void test_syntax(void **state) {
        fixture *f = *state;
        _cleanup_(evs_config_done) evs_config c = {};
        _cleanup_free_ char *text = NULL, *long_value = NULL;
        const kms_backend_config *b;

        long_value = malloc(1001);
        assert_non_null(long_value);
        memset(long_value, 'v', 1000);
        long_value[0] = '/';
        long_value[1000] = '\0';
        assert_true(asprintf(&text,
                             "\xef\xbb\xbf# a byte order mark first\r\n"          /* 1 */
                             "  [Daemon]  \r\n"                                   /* 2 */
                             "    AutoAttach = no\n"                              /* 3 */
                             "\tStateDirectory=/var/lib/a ;b #c\n"                /* 4 */
                             "[Backend tk]\n"                                     /* 5 */
                             "Type=exec\n"                                        /* 6 */
                             "  Helper=%s\n"                                      /* 7 */
                             "Option.list=one, \\\n"                              /* 8 */
                             "  # a comment within is skipped\n"                  /* 9 */
                             "    two,\\\n"                                       /* 10 */
                             "three\n"                                            /* 11 */
                             "Option.path=C:\\\\\n"                               /* 12 */
                             "# a comment never goes on \\\n"                     /* 13 */
                             "Option.last=1\n",                                   /* 14 */
                             long_value) > 0);
        write_text(f->conf, text);
        load_ok(f->conf, &c);

        assert_false(c.auto_attach);
        assert_string_equal(c.state_dir, "/var/lib/a ;b #c");
        b = evs_config_backend(&c, "tk");
        assert_non_null(b);
        assert_string_equal(b->type, "exec");
        assert_int_equal(b->n_settings, 4);
        assert_string_equal(b->settings[0].key, "Helper");
        assert_string_equal(b->settings[0].value, long_value);
        assert_int_equal(b->settings[0].line, 7);
        assert_string_equal(b->settings[1].key, "Option.list");
        assert_string_equal(b->settings[1].value, "one,      two, three");
        assert_int_equal(b->settings[1].line, 8); /* where it began */
        assert_string_equal(b->settings[2].value, "C:\\\\"); /* an escaped backslash does not go on */
        assert_int_equal(b->settings[2].line, 12);
        assert_string_equal(b->settings[3].key, "Option.last");
        assert_int_equal(b->settings[3].line, 14);
}

static void test_syntax_errors(void **state) {
        fixture *f = *state;
        static const char nul[] = "[Daemon]\n\nAutoAttach=n\0o\n";
        static const error_case cases[] = {
                { "[Daemon]\nAutoAttach: no\n", 2, "syntax error (expected [Section] or Key=Value)" },
                { "[Daemon]\n=no\n", 2, "syntax error (expected [Section] or Key=Value)" },
                { "\n[]\n", 2, "syntax error (expected [Section] or Key=Value)" },
                { "AutoAttach=no\n[Daemon]\n", 1, "AutoAttach= is outside of any [Section]" },
                { "[Daemon]\nAutoAttach=no\n\n[Bogus]\n", 4, "unknown section [Bogus]" }, /* with no keys too */
                { "[Daemon]\n    AutoAttach=no\n\tFrob=1\n", 3, "unknown key Frob= in [Daemon]" },
                /* A continued line: its errors are reported where it began, and the lines after keep count. */
                { "[Daemon]\n\nAutoAttach=ma\\\nybe\n", 3, "AutoAttach= is not a boolean: ma ybe" },
                { "[Daemon]\nStateDirectory=/a\\\n# c\nb\nFrob=1\n", 5, "unknown key Frob= in [Daemon]" },
                /* The file ends in a backslash. */
                { "[Daemon]\nAutoAttach=maybe \\\n", 2, "AutoAttach= is not a boolean: maybe" },
        };
        _cleanup_free_ char *huge = NULL;
        size_t n = 70 * 1024;

        expect_errors(f, cases, ELEMENTSOF(cases));

        test_write_file(f->conf, nul, sizeof nul - 1, 0644);
        expect_error_at(f->conf, f->conf, 3, "the line holds a NUL byte");

        /* Longer than 64 KiB, physical or continued: refused, and the lines after it keep their numbers. */
        huge = malloc(n + 64);
        assert_non_null(huge);
        memcpy(huge, "[Daemon]\nStateDirectory=/", 25);
        memset(huge + 25, 'x', n);
        strcpy(huge + 25 + n, "\nAutoAttach=no\n");
        write_text(f->conf, huge);
        expect_error_at(f->conf, f->conf, 2, "the line is longer than 65536 characters");
        for (size_t i = 25; i + 200 < 25 + n; i += 200)
                memcpy(huge + i + 198, "\\\n", 2);
        write_text(f->conf, huge);
        expect_error_at(f->conf, f->conf, 2, "the line is longer than 65536 characters");
        strcpy(huge + 25 + n, "\nFrob=1\n");
        write_text(f->conf, huge);
        expect_error_at(f->conf, f->conf, 2, "the line is longer than 65536 characters");
}

/* Loads @path, which must fail with -EINVAL and exactly the error @want. */
static void expect_error(const char *path, const char *want) {
        _cleanup_free_ char *error = NULL;
        evs_config c = {};
        int r;

        r = evs_config_load(path, true, &c, &error);
        if (r != -EINVAL || !error || !streq(error, want))
                fail_msg("expected -EINVAL and \"%s\", got %d and \"%s\"", want, r, strna(error));
        assert_null(c.state_dir);
}

/* A file that cannot be read as one gives a line naming it, and the daemon never waits on it (a FIFO). */
static void test_unreadable(void **state) {
        fixture *f = *state;
        _cleanup_free_ char *sub = test_path(f->dropins, "x.conf"), *want = NULL, *big = NULL;

        write_text(f->conf, "[Daemon]\nAutoAttach=no\n");
        assert_int_equal(mkdir(f->dropins, 0755), 0);

        assert_int_equal(mkdir(sub, 0755), 0);
        assert_true(asprintf(&want, "%s: a directory", sub) > 0);
        expect_error(f->conf, want);
        assert_int_equal(rmdir(sub), 0);

        assert_int_equal(symlink("/nonexistent/evs.conf", sub), 0);
        free(want);
        assert_true(asprintf(&want, "%s: No such file or directory", sub) > 0);
        expect_error(f->conf, want);
        assert_int_equal(unlink(sub), 0);

        assert_int_equal(mkfifo(sub, 0644), 0);
        free(want);
        assert_true(asprintf(&want, "%s: not a regular file", sub) > 0);
        expect_error(f->conf, want);
        assert_int_equal(unlink(sub), 0);

        assert_int_equal(rmdir(f->dropins), 0);
        write_text(f->dropins, "");
        free(want);
        assert_true(asprintf(&want, "%s: Not a directory", f->dropins) > 0);
        expect_error(f->conf, want);
        assert_int_equal(unlink(f->dropins), 0);

        big = malloc(1024 * 1024 + 2);
        assert_non_null(big);
        memset(big, '#', 1024 * 1024 + 1);
        big[1024 * 1024 + 1] = '\0';
        write_text(f->conf, big);
        free(want);
        assert_true(asprintf(&want, "%s: too large", f->conf) > 0);
        expect_error(f->conf, want);

        write_text(f->conf, ""); /* empty: the defaults */
        {
                _cleanup_(evs_config_done) evs_config c = {};

                load_ok(f->conf, &c);
                expect_defaults(&c);
        }
}

static void test_dropins(void **state) {
        fixture *f = *state;
        _cleanup_(evs_config_done) evs_config c = {}, d = {};
        const kms_backend_config *x;
        const kms_setting *s;
        _cleanup_free_ char *d20 = test_path(f->dropins, "20-b.conf");

        write_text(f->conf,
                   "[Daemon]\n"
                   "SweepIntervalSec=100\n"
                   "[Backend x]\n"
                   "Module=/main\n");
        /* Created out of order: the order applied is lexical. */
        write_dropin(f, "20-b.conf", "[Daemon]\nSweepIntervalSec=300\n\n[Backend x]\nModule=/twenty\n");
        write_dropin(f, "05-z.conf", "[Daemon]\nSweepIntervalSec=50\nAutoAttach=no\n");
        write_dropin(f, "10-a.conf", "[Daemon]\nSweepIntervalSec=200\n[Backend x]\nType=kmip\nModule=/ten\n");
        /* Not drop-ins: never read (they would fail to parse). */
        write_dropin(f, "README", "garbage\n");
        write_dropin(f, "30-c.conf.bak", "garbage\n");
        write_dropin(f, ".40-hidden.conf", "garbage\n");
        write_dropin(f, "conf", "garbage\n");

        load_ok(f->conf, &c);
        assert_int_equal(c.sweep_interval_sec, 300);
        assert_false(c.auto_attach); /* from 05, untouched later */
        x = evs_config_backend(&c, "x");
        assert_non_null(x);
        assert_string_equal(x->type, "kmip");
        s = kms_config_find(x, "Module");
        assert_non_null(s);
        assert_string_equal(s->value, "/twenty");
        assert_string_equal(s->file, d20);
        assert_int_equal(s->line, 5);
        assert_int_equal(x->n_settings, 3);

        /* The full order, not just the last word: a backend's settings list records it. Created in a
         * scrambled order, so neither creation nor directory order can pass for lexical order. */
        {
                _cleanup_(evs_config_done) evs_config o = {};
                static const char *const names[] = { "71-o.conf", "3-o.conf", "70-o.conf", "a-o.conf", "07-o.conf",
                                                     "700-o.conf", "Z-o.conf", "00-o.conf", "69-o.conf", "10-o.conf",
                                                     "1-o.conf", "_-o.conf" };
                static const char *const sorted[] = { "00-o.conf", "07-o.conf", "1-o.conf", "10-o.conf", "3-o.conf",
                                                      "69-o.conf", "70-o.conf", "700-o.conf", "71-o.conf", "Z-o.conf",
                                                      "_-o.conf", "a-o.conf" };
                const kms_backend_config *ob;

                for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                        _cleanup_free_ char *text = NULL;

                        assert_true(asprintf(&text, "[Backend order]\nType=exec\nFrom=%s\n", names[i]) > 0);
                        write_dropin(f, names[i], text);
                }
                load_ok(f->conf, &o);
                ob = evs_config_backend(&o, "order");
                assert_non_null(ob);
                assert_int_equal(ob->n_settings, ELEMENTSOF(sorted));
                for (size_t i = 0; i < ELEMENTSOF(sorted); i++) {
                        _cleanup_free_ char *p = test_path(f->dropins, sorted[i]);

                        assert_string_equal(ob->settings[i].value, sorted[i]);
                        assert_string_equal(ob->settings[i].file, p);
                }
                assert_string_equal(kms_config_find(ob, "From")->value, "a-o.conf");
                assert_int_equal(o.sweep_interval_sec, 300);
        }

        /* Drop-ins apply even when the main file is absent (and need not exist). */
        assert_int_equal(unlink(f->conf), 0);
        {
                char *error = NULL;

                assert_int_equal(evs_config_load(f->conf, false, &d, &error), 0);
                assert_null(error);
        }
        assert_int_equal(d.sweep_interval_sec, 300);

        /* An error in a drop-in names the drop-in. */
        write_dropin(f, "15-bad.conf", "\n[Daemon]\nAutoAttach=maybe\n");
        write_text(f->conf, "");
        {
                _cleanup_free_ char *bad = test_path(f->dropins, "15-bad.conf");

                expect_error_at(f->conf, bad, 3, "AutoAttach= is not a boolean: maybe");
        }
}

static void test_errors(void **state) {
        fixture *f = *state;
        static const error_case cases[] = {
                { "# c\n\n[Bogus]\nKey=1\n", 3, "unknown section [Bogus]" },
                { "[Daemon]\nAutoAttach=yes\n[daemon]\nAutoAttach=yes\n", 3, "unknown section [daemon]" },
                { "[Daemon]\nStateDirectory=/x\nFrobnicate=1\n", 3, "unknown key Frobnicate= in [Daemon]" },
                { "[Daemon]\n\n\n\nstatedirectory=/x\n", 5, "unknown key statedirectory= in [Daemon]" },
                { "[KMS]\nDefaultBackend=local\nDefault=local\n", 3, "unknown key Default= in [KMS]" },
                { "\n[KMS]\nDefaultBackend=a b\n", 3, "DefaultBackend= is not a backend name: a b" },
                { "[Daemon]\nAutoAttach=maybe\n", 2, "AutoAttach= is not a boolean: maybe" },
                { "[Daemon]\nAutoAttach=\n", 2, "AutoAttach= is not a boolean: " },
                { "[Daemon]\n# x\nAutoAttach=2\n", 3, "AutoAttach= is not a boolean: 2" },
                { "[Daemon]\nStateDirectory=var/lib/evs\n", 2, "StateDirectory= must be an absolute path: var/lib/evs" },
                { "[Daemon]\nAutoAttach=yes\nBusPath=run/bus\n", 3, "BusPath= must be an absolute path: run/bus" },
                { "[Daemon]\nStateDirectory=\n", 2, "StateDirectory= must be an absolute path: " },
                { "[Daemon]\nSweepIntervalSec=0\n", 2, "SweepIntervalSec= must be 1..604800: 0" },
                { "[Daemon]\nSweepIntervalSec=604801\n", 2, "SweepIntervalSec= must be 1..604800: 604801" },
                { "[Daemon]\nSweepIntervalSec=1h\n", 2, "SweepIntervalSec= must be 1..604800: 1h" },
                { "[Daemon]\nAutoAttach=yes\nthis line has no equals sign\n", 3,
                  "syntax error (expected [Section] or Key=Value)" },
                { "# c\n[Daemon\n", 2, "syntax error (expected [Section] or Key=Value)" },
                { "\n\n\n\ngarbage\n[Daemon]\nAutoAttach=maybe\n", 5, "syntax error (expected [Section] or Key=Value)" },
                { "[Daemon]\n\n[Backend bad/name]\nType=local\n", 3,
                  "[Backend bad/name]: backend names are 1-64 of [A-Za-z0-9_-]" },
                /* The first error is the one reported. */
                { "[Daemon]\nAutoAttach=maybe\nFrobnicate=1\n", 2, "AutoAttach= is not a boolean: maybe" },
        };

        expect_errors(f, cases, ELEMENTSOF(cases));
}

static void test_backend_errors(void **state) {
        fixture *f = *state;

        /* The line of a section with no Type= is its first setting. */
        write_text(f->conf,
                   "[Daemon]\n"
                   "AutoAttach=yes\n"
                   "\n"
                   "[Backend vault]\n"
                   "Command=/usr/bin/vault-helper\n"
                   "Timeout=5\n");
        expect_error_at(f->conf, f->conf, 5, "[Backend vault] has no Type=");

        /* A later Type= in a drop-in completes it. */
        write_dropin(f, "50-type.conf", "[Backend vault]\nType=exec\n");
        {
                _cleanup_(evs_config_done) evs_config c = {};

                load_ok(f->conf, &c);
                assert_string_equal(evs_config_backend(&c, "vault")->type, "exec");
        }

        /* DefaultBackend= naming no section: the line of the DefaultBackend= that is in effect. */
        write_text(f->conf,
                   "[KMS]\n"
                   "DefaultBackend=local\n"
                   "\n"
                   "[KMS]\n"
                   "DefaultBackend=hsm\n"
                   "[Backend vault]\n"
                   "Type=exec\n");
        expect_error_at(f->conf, f->conf, 5, "DefaultBackend=hsm names no [Backend hsm] section");
        {
                _cleanup_free_ char *p = test_path(f->dropins, "60-default.conf");

                write_dropin(f, "60-default.conf", "# drop-in\n[KMS]\nDefaultBackend=missing\n");
                expect_error_at(f->conf, p, 3, "DefaultBackend=missing names no [Backend missing] section");
                write_dropin(f, "60-default.conf", "[KMS]\nDefaultBackend=vault\n");
        }
        {
                _cleanup_(evs_config_done) evs_config c = {};

                load_ok(f->conf, &c);
                assert_string_equal(c.default_backend, "vault");
        }
}

static void test_backend_open_errors(void **state) {
        fixture *f = *state;
        _cleanup_(evs_config_done) evs_config c = {};
        kms_context ctx = { .state_dir = f->dir };
        kms_backend *b = NULL;
        char *error = NULL;
        const kms_backend_config *cfg;

        write_text(f->conf,
                   "[Backend second]\n"                 /* 1 */
                   "Type=local\n"                       /* 2 */
                   "RootKeyFile=/etc/evs/second.key\n"  /* 3 */
                   "\n"                                 /* 4 */
                   "# the next one is wrong\n"          /* 5 */
                   "RootKeyFlie=/etc/evs/typo.key\n"    /* 6 */
                   "[Backend third]\n"                  /* 7 */
                   "Type=local\n"                       /* 8 */
                   "RootKeyFile=relative.key\n"         /* 9 */
                   "[Backend fourth]\n"                 /* 10 */
                   "Type=local\n"                       /* 11 */
                   "RootKeyFile=/etc/evs/fourth.key\n"  /* 12 */
                   "[Backend fifth]\n"                  /* 13 */
                   "Type=nosuchtype\n");                /* 14 */
        load_ok(f->conf, &c);

        cfg = evs_config_backend(&c, "second");
        assert_non_null(cfg);
        assert_int_equal(kms_backend_open(cfg, &ctx, &b, &error), -EINVAL);
        assert_null(b);
        {
                _cleanup_free_ char *want = NULL;

                assert_true(asprintf(&want, "%s:6: unknown key RootKeyFlie= in [Backend second]", f->conf) > 0);
                assert_non_null(error);
                assert_string_equal(error, want);
                error = mfree(error);
        }

        cfg = evs_config_backend(&c, "third");
        assert_int_equal(kms_backend_open(cfg, &ctx, &b, &error), -EINVAL);
        {
                _cleanup_free_ char *want = NULL;

                assert_true(asprintf(&want, "%s:9: RootKeyFile= must be an absolute path: relative.key", f->conf) > 0);
                assert_non_null(error);
                assert_string_equal(error, want);
                error = mfree(error);
        }

        cfg = evs_config_backend(&c, "fifth");
        assert_int_equal(kms_backend_open(cfg, &ctx, &b, &error), -EINVAL);
        assert_non_null(error);
        assert_non_null(strstr(error, "nosuchtype"));
        error = mfree(error);

        /* The good one opens (and touches nothing yet). */
        cfg = evs_config_backend(&c, "fourth");
        assert_int_equal(kms_backend_open(cfg, &ctx, &b, &error), 0);
        assert_null(error);
        assert_string_equal(b->name, "fourth");
        kms_backend_free(b);
        assert_int_equal(access("/etc/evs/fourth.key", F_OK), -1);
}

static void test_parse_boolean(void **state) {
        static const char *const yes[] = { "1", "yes", "y", "true", "t", "on", "YES", "Yes", "TRUE", "On", "Y" };
        static const char *const no[] = { "0", "no", "n", "false", "f", "off", "NO", "False", "OFF", "N" };
        static const char *const bad[] = { "", "2", "-1", "01", "yess", "ye", "nope", " yes", "yes ", "on\n",
                                           "enable", "enabled", "disabled", "truee", "o", "of" };

        for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                assert_int_equal(parse_boolean(yes[i]), 1);
        for (size_t i = 0; i < ELEMENTSOF(no); i++)
                assert_int_equal(parse_boolean(no[i]), 0);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                if (parse_boolean(bad[i]) != -EINVAL)
                        fail_msg("parse_boolean(\"%s\") accepted it", bad[i]);
}

static void test_parse_unsigned(void **state) {
        static const struct {
                const char *s;
                unsigned min, max;
                int r;
                unsigned v;
        } cases[] = {
                { "0", 0, 10, 0, 0 },
                { "1", 1, 10, 0, 1 },
                { "10", 1, 10, 0, 10 },
                { "010", 1, 10, 0, 10 }, /* decimal, never octal */
                { "11", 1, 10, -ERANGE, 0 },
                { "0", 1, 10, -ERANGE, 0 },
                { "4294967295", 0, UINT_MAX, 0, UINT_MAX },
                { "4294967296", 0, UINT_MAX, -ERANGE, 0 },
                { "18446744073709551615", 0, UINT_MAX, -ERANGE, 0 },
                { "18446744073709551616", 0, UINT_MAX, -ERANGE, 0 },
                { "99999999999999999999999", 0, UINT_MAX, -ERANGE, 0 },
                { "", 0, 10, -EINVAL, 0 },
                { "-1", 0, 10, -EINVAL, 0 },
                { "-0", 0, 10, -EINVAL, 0 },
                { "+1", 0, 10, -EINVAL, 0 },
                { " 1", 0, 10, -EINVAL, 0 },
                { "\t1", 0, 10, -EINVAL, 0 },
                { "\n1", 0, 10, -EINVAL, 0 },
                { "1 ", 0, 10, -EINVAL, 0 },
                { "1\n", 0, 10, -EINVAL, 0 },
                { "1a", 0, 10, -EINVAL, 0 },
                { "0x10", 0, 100, -EINVAL, 0 },
                { "1.5", 0, 10, -EINVAL, 0 },
                { "1e3", 0, 10000, -EINVAL, 0 },
                { "one", 0, 10, -EINVAL, 0 },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                unsigned v = 12345;
                int r = parse_unsigned(cases[i].s, cases[i].min, cases[i].max, &v);

                if (r != cases[i].r)
                        fail_msg("parse_unsigned(\"%s\", %u, %u) = %d, expected %d", cases[i].s, cases[i].min,
                                 cases[i].max, r, cases[i].r);
                assert_int_equal(v, r == 0 ? cases[i].v : 12345); /* untouched on failure */
        }
        assert_int_equal(parse_unsigned(NULL, 0, 1, &(unsigned) { 0 }), -EINVAL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                TEST(test_defaults),
                TEST(test_full_file),
                TEST(test_syntax),
                TEST(test_syntax_errors),
                TEST(test_unreadable),
                TEST(test_dropins),
                TEST(test_errors),
                TEST(test_backend_errors),
                TEST(test_backend_open_errors),
                cmocka_unit_test(test_parse_boolean),
                cmocka_unit_test(test_parse_unsigned),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
