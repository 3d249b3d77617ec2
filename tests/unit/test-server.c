/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* src/shared/server.c: server names, the volume ids of a server's disks, the --data-disk argument, the
 * one disk type and its codecs (records, bus structs, evsctl's JSON). */

#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bus-api.h"
#include "docstore.h"
#include "json-util.h"
#include "server.h"
#include "string-util.h"
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

static void disk(disk_spec *d, const char *volume_id, const char *device, uint64_t size, const char *key_id,
                 bool plain) {
        *d = (disk_spec) { .size = size, .plain = plain };
        assert_int_equal(free_and_strdup_nonempty(&d->volume_id, volume_id), 0);
        assert_int_equal(free_and_strdup_nonempty(&d->device, device), 0);
        if (key_id) {
                assert_int_equal(free_and_strdup(&d->key_id, key_id), 0);
                assert_int_equal(free_and_strdup(&d->backend, "local"), 0);
                assert_int_equal(free_and_strdup(&d->cipher, "aes-xts-plain64"), 0);
                assert_int_equal(free_and_strdup(&d->key_state, "enabled"), 0);
        }
}

static char *list_json(disk_kind kind, disk_json_mode mode, const disk_spec *sys, const disk_spec *data, size_t n) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        char *t;

        assert_non_null(o);
        assert_int_equal(disk_list_to_json(o, kind, mode, sys, data, n), 0);
        t = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        assert_non_null(t);
        return t;
}

/* The records and evsctl's JSON are exactly what each kind wrote before they shared one codec. */
static void test_disk_json(void **state) {
        disk_spec sys, data[2];
        char *t;

        disk(&sys, "web1-sys", "/dev/vda", 0, "k1", false);
        disk(&data[0], "web1-data1", "/dev/vdb", 0, "k2", false);
        disk(&data[1], NULL, "/dev/vdc", 0, NULL, true);
        assert_int_equal(free_and_strdup(&sys.mapping, "/dev/mapper/evs-web1-sys"), 0);

        t = list_json(DISK_OF_SERVER, DISK_JSON_RECORD, &sys, data, 2);
        assert_string_equal(t, "{\"system_disk\":{\"volume_id\":\"web1-sys\",\"device\":\"/dev/vda\",\"key_id\":\"k1\","
                               "\"key_alias\":null,\"backend\":\"local\",\"cipher\":\"aes-xts-plain64\",\"plain\":false},"
                               "\"data_disks\":[{\"volume_id\":\"web1-data1\",\"device\":\"/dev/vdb\",\"key_id\":\"k2\","
                               "\"key_alias\":null,\"backend\":\"local\",\"cipher\":\"aes-xts-plain64\",\"plain\":false},"
                               "{\"volume_id\":null,\"device\":\"/dev/vdc\",\"key_id\":null,\"key_alias\":null,"
                               "\"backend\":null,\"cipher\":null,\"plain\":true}]}");
        free(t);
        t = list_json(DISK_OF_SERVER, DISK_JSON_API, &sys, data, 1);
        assert_string_equal(t, "{\"system_disk\":{\"volume_id\":\"web1-sys\",\"device\":\"/dev/vda\",\"key_id\":\"k1\","
                               "\"key_alias\":null,\"key_state\":\"enabled\",\"backend\":\"local\","
                               "\"cipher\":\"aes-xts-plain64\",\"mapping\":\"/dev/mapper/evs-web1-sys\"},"
                               "\"data_disks\":[{\"volume_id\":\"web1-data1\",\"device\":\"/dev/vdb\",\"key_id\":\"k2\","
                               "\"key_alias\":null,\"key_state\":\"enabled\",\"backend\":\"local\","
                               "\"cipher\":\"aes-xts-plain64\",\"mapping\":null,\"plain\":false}]}");
        free(t);
        disk_spec_done(&sys);
        disk_spec_done(&data[0]);
        disk_spec_done(&data[1]);

        disk(&sys, NULL, NULL, 4096, "k1", false);
        disk(&data[0], NULL, NULL, 8192, NULL, true);
        t = list_json(DISK_OF_AS_CONFIG, DISK_JSON_RECORD, &sys, data, 1);
        assert_string_equal(t, "{\"system_disk\":{\"size\":4096,\"key_id\":\"k1\",\"key_alias\":null,\"backend\":\"local\","
                               "\"cipher\":\"aes-xts-plain64\",\"plain\":false},\"data_disks\":[{\"size\":8192,"
                               "\"key_id\":null,\"key_alias\":null,\"backend\":null,\"cipher\":null,\"plain\":true}]}");
        free(t);
        t = list_json(DISK_OF_AS_CONFIG, DISK_JSON_API, &sys, data, 1);
        assert_string_equal(t, "{\"system_disk\":{\"size\":4096,\"key_id\":\"k1\",\"key_alias\":null,"
                               "\"key_state\":\"enabled\",\"backend\":\"local\",\"cipher\":\"aes-xts-plain64\"},"
                               "\"data_disks\":[{\"size\":8192,\"key_id\":null,\"key_alias\":null,\"key_state\":null,"
                               "\"backend\":null,\"cipher\":null,\"plain\":true}]}");
        free(t);
        disk_spec_done(&sys);
        disk_spec_done(&data[0]);
}

static void test_disk_json_invalid(void **state) {
        static const struct {
                disk_kind kind;
                const char *json;
        } bad[] = {
                { DISK_OF_SERVER, "{\"data_disks\":[]}" },
                { DISK_OF_SERVER, "{\"system_disk\":{\"volume_id\":\"a-sys\",\"device\":\"/dev/vda\"}}" },
                { DISK_OF_SERVER, "{\"system_disk\":{\"volume_id\":\"a-sys\"},\"data_disks\":[]}" },
                { DISK_OF_SERVER, "{\"system_disk\":{\"device\":\"/dev/vda\"},\"data_disks\":[]}" },
                { DISK_OF_SERVER, "{\"system_disk\":{\"volume_id\":\"a/b\",\"device\":\"/dev/vda\"},\"data_disks\":[]}" },
                { DISK_OF_SERVER, "{\"system_disk\":{\"volume_id\":\"a-sys\",\"device\":\"/dev/vda\"},\"data_disks\":[1]}" },
                { DISK_OF_AS_CONFIG, "{\"system_disk\":{\"key_id\":\"k\",\"backend\":\"local\"},\"data_disks\":[]}" },
                { DISK_OF_AS_CONFIG, "{\"system_disk\":{\"size\":1,\"backend\":\"local\"},\"data_disks\":[]}" },
                { DISK_OF_AS_CONFIG, "{\"system_disk\":{\"size\":1,\"key_id\":\"k\"},\"data_disks\":[]}" },
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_(json_object_putp) json_object *o = json_tokener_parse(bad[i].json);
                disk_spec sys = {}, *data = NULL;
                size_t n = 0;

                assert_non_null(o);
                assert_int_equal(disk_list_from_json(o, bad[i].kind, &sys, &data, &n), -EUCLEAN);
                assert_null(data);
        }
}

/* A record written is read back the same; a plain server disk needs no volume id, an AS one no key. */
static void test_records(void **state) {
        _cleanup_free_ char *dir = test_mkdtemp();
        server_record s = { .created = 42 }, s2 = {};
        as_config_record a = { .created = 43 }, a2 = {};

        s.name = strdup("web1");
        s.image = strdup("img-0123456789ab");
        s.data = calloc(1, sizeof(disk_spec));
        s.n_data = 1;
        disk(&s.system, "web1-sys", "/dev/vda", 0, "k1", false);
        disk(&s.data[0], NULL, "/dev/vdb", 0, NULL, true);
        assert_int_equal(server_db_save(dir, &s), 0);
        assert_int_equal(server_db_load(dir, "web1", &s2), 0);
        assert_string_equal(s2.name, "web1");
        assert_string_equal(s2.image, "img-0123456789ab");
        assert_null(s2.image_name);
        assert_null(s2.as_config);
        assert_int_equal(s2.created, 42);
        assert_string_equal(s2.system.volume_id, "web1-sys");
        assert_string_equal(s2.system.key_id, "k1");
        assert_null(s2.system.key_state); /* live, never recorded */
        assert_int_equal(s2.n_data, 1);
        assert_true(s2.data[0].plain);
        assert_string_equal(s2.data[0].device, "/dev/vdb");
        assert_int_equal(server_db_load(dir, "web2", &s2), -ENXIO);
        assert_int_equal(server_db_load(dir, "bad name", &s2), -ENXIO);

        a.name = strdup("web");
        a.image = strdup("img-0123456789ab");
        a.source_server = strdup("web1");
        a.data = calloc(1, sizeof(disk_spec));
        a.n_data = 1;
        disk(&a.system, NULL, NULL, 1 << 20, "k1", false);
        disk(&a.data[0], NULL, NULL, 2 << 20, "k2", false);
        assert_int_equal(as_config_db_save(dir, &a), 0);
        assert_int_equal(as_config_db_load(dir, "web", &a2), 0);
        assert_string_equal(a2.source_server, "web1");
        assert_int_equal(a2.system.size, 1 << 20);
        assert_int_equal(a2.data[0].size, 2 << 20);
        assert_string_equal(a2.data[0].key_id, "k2");
        as_config_record_done(&a2);
        /* A configuration with a plain system disk is corrupt. */
        a.system.plain = true;
        assert_int_equal(as_config_db_save(dir, &a), 0);
        assert_int_equal(as_config_db_load(dir, "web", &a2), -EUCLEAN);

        server_record_done(&s);
        server_record_done(&s2);
        as_config_record_done(&a);
        test_rm_rf(dir);
}

/* DISK and AS_DISK: what the daemon appends evsctl reads back. */
static void test_bus(void **state) {
        _cleanup_(sd_bus_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        disk_spec sys, data[2], rsys = {}, *rdata = NULL;
        size_t n = 0;
        int fds[2];

        disk(&sys, "web1-sys", "/dev/vda", 0, "k1", false);
        disk(&data[0], NULL, "/dev/vdb", 0, NULL, true);
        disk(&data[1], NULL, NULL, 4096, "k2", false);
        /* A bus on one end of a socket pair: enough to build and read messages, none is sent. */
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
        assert_int_equal(sd_bus_new(&bus), 0);
        assert_int_equal(sd_bus_set_fd(bus, fds[0], fds[0]), 0);
        assert_int_equal(sd_bus_start(bus), 0);
        assert_int_equal(sd_bus_message_new_signal(bus, &m, "/org/evs/Cryptd1", "org.evs.Test", "T"), 0);
        assert_int_equal(disk_list_bus_append(m, DISK_OF_SERVER, &sys, data, 2), 0);
        assert_int_equal(disk_list_bus_append(m, DISK_OF_AS_CONFIG, &data[1], data, 0), 0);
        assert_int_equal(sd_bus_message_seal(m, 1, 0), 0);
        assert_string_equal(sd_bus_message_get_signature(m, true),
                            EVS_DISK_SIG "a" EVS_DISK_SIG EVS_AS_DISK_SIG "a" EVS_AS_DISK_SIG);
        assert_int_equal(sd_bus_message_rewind(m, true), 1);

        assert_int_equal(disk_list_bus_read(m, DISK_OF_SERVER, &rsys, &rdata, &n), 0);
        assert_string_equal(rsys.volume_id, "web1-sys");
        assert_string_equal(rsys.key_state, "enabled");
        assert_null(rsys.mapping); /* "" on the bus */
        assert_int_equal(n, 2);
        assert_true(rdata[0].plain);
        assert_null(rdata[0].volume_id);
        assert_string_equal(rdata[0].device, "/dev/vdb");
        assert_null(rdata[1].device);
        assert_string_equal(rdata[1].key_id, "k2");
        disk_spec_done(&rsys);
        disk_spec_array_free(rdata, n);

        assert_int_equal(disk_list_bus_read(m, DISK_OF_AS_CONFIG, &rsys, &rdata, &n), 0);
        assert_int_equal(rsys.size, 4096);
        assert_string_equal(rsys.key_id, "k2");
        assert_int_equal(n, 0);
        disk_spec_done(&rsys);
        disk_spec_array_free(rdata, n);
        /* Nothing left: no system disk, nothing read. */
        assert_true(disk_list_bus_read(m, DISK_OF_AS_CONFIG, &rsys, &rdata, &n) < 0);
        assert_null(rsys.key_id);

        disk_spec_done(&sys);
        disk_spec_done(&data[0]);
        disk_spec_done(&data[1]);
        m = sd_bus_message_unref(m);
        bus = sd_bus_close_unref(bus);
        close(fds[1]);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_names),
                cmocka_unit_test(test_volume_ids),
                cmocka_unit_test(test_disk_specs),
                cmocka_unit_test(test_disk_json),
                cmocka_unit_test(test_disk_json_invalid),
                cmocka_unit_test(test_records),
                cmocka_unit_test(test_bus),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
