/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* src/shared/inherit.c: what a system disk, a data disk, an AS configuration and a server launched from one
 * inherit. */

#include <string.h>

#include "inherit.h"
#include "luks.h"
#include "string-util.h"
#include "test-util.h"

static void set(char **p, const char *s) {
        assert_int_equal(free_and_strdup(p, s), 0);
}

static void cmk(disk_spec *d, const char *backend, const char *key_id) {
        set(&d->backend, backend);
        set(&d->key_id, key_id);
        set(&d->key_alias, "alias/x");
        set(&d->cipher, "aes-xts-plain64");
}

static void test_system_disk_from_image(void **state) {
        evs_token t = { .backend = (char *) "kmip", .key_id = (char *) "42" };
        disk_plan p = {};

        assert_int_equal(inherit_system_disk_from_image("web1", "/dev/vda", &t, 1, &p), 0);
        assert_string_equal(p.device, "/dev/vda");
        assert_string_equal(p.volume_id, "web1-sys");
        assert_string_equal(p.key_ref, "kmip:42"); /* the image's CMK, never the default */
        assert_int_equal(p.min_size, EVS_LUKS_DATA_OFFSET + 4096);
        disk_plan_done(&p);
        assert_int_equal(inherit_system_disk_from_image("web1", "/dev/vda", &t, 8192, &p), 0);
        assert_int_equal(p.min_size, EVS_LUKS_DATA_OFFSET + 8192);
        disk_plan_done(&p);

        assert_int_equal(inherit_system_disk_from_image("bad name", "/dev/vda", &t, 1, &p), -EINVAL);
        assert_int_equal(inherit_system_disk_from_image("web1", "", &t, 1, &p), -EINVAL);
        t.key_id = NULL;
        assert_int_equal(inherit_system_disk_from_image("web1", "/dev/vda", &t, 1, &p), -EINVAL);
        assert_null(p.device);
}

static void test_data_disk(void **state) {
        disk_plan p = {};

        /* The CMK the operator names... */
        assert_int_equal(inherit_data_disk("web1", 2, "/dev/vdc:key=hsm:finance", &p), 0);
        assert_string_equal(p.device, "/dev/vdc");
        assert_string_equal(p.volume_id, "web1-data2");
        assert_string_equal(p.key_ref, "hsm:finance");
        assert_int_equal(p.min_size, 0);
        disk_plan_done(&p);
        /* ... or the default ... */
        assert_int_equal(inherit_data_disk("web1", 1, "/dev/vdb", &p), 0);
        assert_string_equal(p.volume_id, "web1-data1");
        assert_null(p.key_ref);
        disk_plan_done(&p);
        /* ... or plain, only when asked. */
        assert_int_equal(inherit_data_disk("web1", 1, "/dev/vdb:plain", &p), 0);
        assert_string_equal(p.device, "/dev/vdb");
        assert_null(p.volume_id);
        assert_null(p.key_ref);
        disk_plan_done(&p);

        assert_int_equal(inherit_data_disk("web1", 1, "/dev/vdb:key=", &p), -EINVAL);
        assert_int_equal(inherit_data_disk("web1", 0, "/dev/vdb", &p), -EINVAL);
        assert_int_equal(inherit_data_disk("web1", SERVER_DATA_DISKS_MAX + 1, "/dev/vdb", &p), -EINVAL);
        assert_null(p.device);
}

static void server(server_record *s, size_t n_data) {
        *s = (server_record) { .n_data = n_data };
        set(&s->name, "web1");
        set(&s->image, "img-0123456789ab");
        set(&s->image_name, "debian");
        set(&s->system.volume_id, "web1-sys");
        set(&s->system.device, "/dev/vda");
        cmk(&s->system, "local", "k-sys");
        s->data = calloc(n_data + 1, sizeof(disk_spec));
        assert_non_null(s->data);
        for (size_t i = 0; i < n_data; i++)
                set(&s->data[i].device, "/dev/vdx");
}

static void test_as_config_from_server(void **state) {
        as_config_record a = {};
        server_record s;
        size_t bad = 99;

        server(&s, 2);
        set(&s.data[0].volume_id, "web1-data1");
        cmk(&s.data[0], "kmip", "k-data");
        set(&s.data[0].mapping, "/dev/mapper/evs-web1-data1");
        s.data[1].plain = true;

        assert_int_equal(inherit_as_config_from_server("web", &s, true, 7, &a, &bad), 0);
        assert_string_equal(a.name, "web");
        assert_string_equal(a.image, "img-0123456789ab");
        assert_string_equal(a.image_name, "debian");
        assert_string_equal(a.source_server, "web1");
        assert_int_equal(a.created, 7);
        assert_false(a.system.plain);
        assert_string_equal(a.system.backend, "local");
        assert_string_equal(a.system.key_id, "k-sys");
        assert_string_equal(a.system.key_alias, "alias/x");
        assert_string_equal(a.system.cipher, "aes-xts-plain64");
        assert_null(a.system.device); /* a configuration names no device */
        assert_null(a.system.volume_id);
        assert_int_equal(a.n_data, 2);
        assert_string_equal(a.data[0].backend, "kmip");
        assert_string_equal(a.data[0].key_id, "k-data");
        assert_null(a.data[0].mapping);
        assert_true(a.data[1].plain);
        assert_null(a.data[1].key_id);
        as_config_record_done(&a);

        /* Refused: a system disk not encrypted (plain, or its header no longer holds its volume)... */
        assert_int_equal(inherit_as_config_from_server("web", &s, false, 7, &a, &bad), -ENODATA);
        s.system.plain = true;
        assert_int_equal(inherit_as_config_from_server("web", &s, true, 7, &a, &bad), -ENODATA);
        s.system.plain = false;
        /* ... an encrypted data disk whose CMK is unknown ... */
        s.data[0].key_id = mfree(s.data[0].key_id);
        assert_int_equal(inherit_as_config_from_server("web", &s, true, 7, &a, &bad), -ENOKEY);
        assert_int_equal(bad, 0);
        /* ... no image. */
        s.image = mfree(s.image);
        assert_int_equal(inherit_as_config_from_server("web", &s, true, 7, &a, &bad), -ENOMSG);
        assert_null(a.name);
        server_record_done(&s);
}

static void test_server_from_as_config(void **state) {
        as_config_record a = { .n_data = 2 };
        disk_plan p = {};

        set(&a.name, "web");
        set(&a.image, "img-0123456789ab");
        cmk(&a.system, "kmip", "k-sys");
        a.system.size = 1;
        a.data = calloc(2, sizeof(disk_spec));
        assert_non_null(a.data);
        cmk(&a.data[0], "local", "k-data");
        a.data[0].size = 123456;
        a.data[1].plain = true;
        a.data[1].size = 654321;

        /* The system disk gets the CMK the configuration recorded and room for the image. */
        assert_int_equal(inherit_system_disk_from_as_config("web2", "/dev/vda", &a, 4097, &p), 0);
        assert_string_equal(p.volume_id, "web2-sys");
        assert_string_equal(p.key_ref, "kmip:k-sys");
        assert_int_equal(p.min_size, EVS_LUKS_DATA_OFFSET + 8192);
        disk_plan_done(&p);

        /* Each data disk its CMK or plain, and at least the source disk's size. */
        assert_int_equal(inherit_data_disk_from_as_config("web2", 1, "/dev/vdb", &a.data[0], &p), 0);
        assert_string_equal(p.device, "/dev/vdb");
        assert_string_equal(p.volume_id, "web2-data1");
        assert_string_equal(p.key_ref, "local:k-data");
        assert_int_equal(p.min_size, 123456);
        disk_plan_done(&p);
        assert_int_equal(inherit_data_disk_from_as_config("web2", 2, "/dev/vdc", &a.data[1], &p), 0);
        assert_null(p.volume_id);
        assert_null(p.key_ref);
        assert_int_equal(p.min_size, 654321);
        disk_plan_done(&p);

        /* The configuration decides: a key or :plain given is refused. */
        assert_int_equal(inherit_data_disk_from_as_config("web2", 1, "/dev/vdb:key=other", &a.data[0], &p), -EPERM);
        assert_int_equal(inherit_data_disk_from_as_config("web2", 2, "/dev/vdc:plain", &a.data[1], &p), -EPERM);
        assert_int_equal(inherit_data_disk_from_as_config("web2", 1, ":plain", &a.data[0], &p), -EINVAL);
        assert_null(p.device);
        as_config_record_done(&a);
}

static void test_image_key_from_volume(void **state) {
        evs_token t = { .backend = (char *) "pkcs11", .key_id = (char *) "cafe" };
        _cleanup_free_ char *ref = NULL;

        assert_int_equal(inherit_image_key_from_volume(&t, &ref), 0);
        assert_string_equal(ref, "pkcs11:cafe");
        t.backend = NULL;
        assert_int_equal(inherit_image_key_from_volume(&t, &ref), -EINVAL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_system_disk_from_image),
                cmocka_unit_test(test_data_disk),
                cmocka_unit_test(test_as_config_from_server),
                cmocka_unit_test(test_server_from_as_config),
                cmocka_unit_test(test_image_key_from_volume),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
