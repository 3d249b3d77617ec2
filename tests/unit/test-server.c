/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* src/shared/server.c: server names, the volume ids of a server's disks, the --data-disk argument. */

#include <string.h>

#include "server.h"
#include "test-util.h"

static void test_names(void **state) {
        char name[64];

        assert_true(server_name_valid("web1"));
        assert_true(server_name_valid("a.b_c-d"));
        assert_false(server_name_valid(""));
        assert_false(server_name_valid(NULL));
        assert_false(server_name_valid("bad name"));
        assert_false(server_name_valid("a/b"));
        assert_false(server_name_valid(".web"));
        assert_false(server_name_valid(".."));
        memset(name, 'x', SERVER_NAME_MAX);
        name[SERVER_NAME_MAX] = 0;
        assert_true(server_name_valid(name));
        name[SERVER_NAME_MAX] = 'x';
        name[SERVER_NAME_MAX + 1] = 0;
        assert_false(server_name_valid(name));
}

static void test_volume_ids(void **state) {
        char name[SERVER_NAME_MAX + 1], *id = NULL;

        assert_int_equal(server_volume_id("web1", 0, &id), 0);
        assert_string_equal(id, "web1-sys");
        free(id);
        assert_int_equal(server_volume_id("web1", 3, &id), 0);
        assert_string_equal(id, "web1-data3");
        free(id);
        /* The longest name with the highest index is still a valid volume id. */
        memset(name, 'n', SERVER_NAME_MAX);
        name[SERVER_NAME_MAX] = 0;
        assert_int_equal(server_volume_id(name, SERVER_DATA_DISKS_MAX, &id), 0);
        assert_true(volume_id_valid(id));
        free(id);
        assert_int_equal(server_volume_id("web1", SERVER_DATA_DISKS_MAX + 1, &id), -EINVAL);
        assert_int_equal(server_volume_id("bad name", 0, &id), -EINVAL);
}

static void test_disk_specs(void **state) {
        static const struct {
                const char *spec, *device, *key;
                bool plain;
        } good[] = {
                { "/dev/vdb", "/dev/vdb", NULL, false },
                { "/dev/vdb:plain", "/dev/vdb", NULL, true },
                { "/dev/vdb:key=finance", "/dev/vdb", "finance", false },
                { "/dev/vdb:key=hsm:finance", "/dev/vdb", "hsm:finance", false },
                { "/dev/disk/by-id/x:y:key=evs/default", "/dev/disk/by-id/x:y", "evs/default", false },
                { "/dev/disk/by-path/pci-0:1", "/dev/disk/by-path/pci-0:1", NULL, false },
        };
        static const char *const bad[] = { "", ":plain", ":key=x", "/dev/vdb:key=" };

        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                _cleanup_free_ char *device = NULL, *key = NULL;
                bool plain = !good[i].plain;

                assert_int_equal(server_disk_spec_parse(good[i].spec, &device, &key, &plain), 0);
                assert_string_equal(device, good[i].device);
                if (good[i].key)
                        assert_string_equal(key, good[i].key);
                else
                        assert_null(key);
                assert_int_equal(plain, good[i].plain);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                char *device = NULL, *key = NULL;
                bool plain = false;

                assert_int_equal(server_disk_spec_parse(bad[i], &device, &key, &plain), -EINVAL);
                assert_null(device);
                assert_null(key);
        }
        assert_int_equal(server_disk_spec_parse(NULL, &(char *) { NULL }, &(char *) { NULL }, &(bool) { false }), -EINVAL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_names),
                cmocka_unit_test(test_volume_ids),
                cmocka_unit_test(test_disk_specs),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
