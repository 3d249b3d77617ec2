/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The errno <-> bus error <-> exit code table (errors.c) and the one-line escaping (string-util.c) that
 * every message from a KMS, a token or a record goes through. */

#include "errors.h"
#include "kms.h"
#include "string-util.h"
#include "test-util.h"

static void test_cescape(void **state) {
        static const struct {
                const char *in, *out;
        } cases[] = {
                { "", "" },
                { "plain text, 100% ok", "plain text, 100% ok" },
                { "two\nlines", "two\\nlines" },
                { "tab\tcr\rbell\a", "tab\\tcr\\rbell\\a" },
                { "\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m" },
                { "del\x7f", "del\\x7f" },
                { "back\\slash kept", "back\\slash kept" },
                { "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91" },
                { "csi\xc2\x9b" "31m", "csi\\xc2\\x9b31m" },            /* C1 control U+009B */
                { "bad\xff\xfe", "bad\\xff\\xfe" },                     /* not UTF-8 */
                { "cut\xe2\x82", "cut\\xe2\\x82" },                      /* truncated sequence */
                { "over\xc0\xaf", "over\\xc0\\xaf" },                    /* overlong */
                { "surrogate\xed\xa0\x80", "surrogate\\xed\\xa0\\x80" },
        };

        (void) state;
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *e = cescape(cases[i].in), *twice = NULL;

                assert_non_null(e);
                assert_string_equal(e, cases[i].out);
                assert_int_equal(string_needs_escape(cases[i].in), !streq(cases[i].in, cases[i].out));
                assert_false(string_needs_escape(e));
                twice = cescape(e); /* escaping is idempotent: daemon and evsctl may both apply it */
                assert_string_equal(twice, e);
        }
        assert_null(cescape(NULL));
        assert_false(string_needs_escape(NULL));
}

static void test_exit_codes(void **state) {
        static const struct {
                int error, exit_code;
        } cases[] = {
                { 0, EXIT_OK },
                { EKEYREVOKED, EXIT_KEY_STATE },
                { KMS_EPROTECTED, EXIT_KEY_STATE },
                { EPERM, EXIT_PERMISSION }, /* a write the file system refused is not a key's state */
                { EACCES, EXIT_PERMISSION },
                { ENOSPC, EXIT_FAILURE_OTHER },
                { EROFS, EXIT_FAILURE_OTHER },
                { EIO, EXIT_FAILURE_OTHER },
                { ENOTBLK, EXIT_USAGE },
                { EINVAL, EXIT_USAGE },
                { ENOENT, EXIT_NOT_FOUND },
                { EHOSTDOWN, EXIT_KMS_UNAVAILABLE },
                { ENOTEMPTY, EXIT_DEVICE_HAS_DATA },
                { EBUSY, EXIT_BUSY },
                { ENOTRECOVERABLE, EXIT_FAILURE_OTHER }, /* anything else */
        };

        (void) state;
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                assert_int_equal(evs_exit_code(-cases[i].error), cases[i].exit_code);
                assert_int_equal(evs_exit_code(cases[i].error), cases[i].exit_code);
        }
}

/* Every errno the daemon's file and device operations end in has a name of ours, and the client maps the
 * name back to the errno (and so to the exit code). */
static void test_bus_names(void **state) {
        static const struct {
                int error;
                const char *name;
        } cases[] = {
                { ENOTBLK, "NotBlockDevice" },  { EPERM, "OperationNotPermitted" }, { ENOSPC, "NoSpace" },
                { EROFS, "ReadOnlyFileSystem" }, { EDQUOT, "QuotaExceeded" },        { EIO, "IOError" },
                { EACCES, "AccessDenied" },     { KMS_EPROTECTED, "KeyProtected" },  { EINVAL, "InvalidArgument" },
        };

        (void) state;
        assert_int_equal(evs_errors_register(), 0);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *want = NULL;
                sd_bus_error e = SD_BUS_ERROR_NULL;

                assert_int_equal(evs_bus_error_setf(&e, -cases[i].error, "Cannot write %s: %s.", "x", "why"),
                                 -cases[i].error);
                assert_int_not_equal(asprintf(&want, EVS_BUS_ERROR_PREFIX "%s", cases[i].name), -1);
                assert_string_equal(e.name, want);
                assert_string_equal(e.message, "Cannot write x: why.");
                assert_int_equal(sd_bus_error_get_errno(&e), cases[i].error);
                sd_bus_error_free(&e);
        }
}

static void test_bus_message_one_line(void **state) {
        sd_bus_error e = SD_BUS_ERROR_NULL;

        (void) state;
        evs_bus_error_setf(&e, -EHOSTDOWN, "Key k: %s.", "helper says\nline two \x1b[31mred");
        assert_string_equal(e.message, "Key k: helper says\\nline two \\x1b[31mred.");
        sd_bus_error_free(&e);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_cescape),
                cmocka_unit_test(test_exit_codes),
                cmocka_unit_test(test_bus_names),
                cmocka_unit_test(test_bus_message_one_line),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
