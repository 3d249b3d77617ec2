/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target for the documents under the state directory, which a crash, a full disk or a careless
 * hand may have damaged: volume records (volume-db.c), image records (image.c), the local KMS's key files
 * (kms/local.c), and the JSON layer (docstore.c) every record kind is read through, servers and AS
 * configurations included. Input: byte 0 picks the kind, the rest is the file. Checked on every input:
 * loading one document succeeds with a record that names itself, or fails with -EUCLEAN (or -ENOMEM,
 * or -ENOENT for what is not a document); listing never fails because of one bad file but skips it. */

#include <stdint.h>
#include <stdlib.h>

#include "docstore.h"
#include "fuzz-util.h"
#include "image.h"
#include "kms.h"
#include "volume-db.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define KEY_ID "123e4567-e89b-42d3-a456-426614174000"
#define IMAGE_ID "img-0123456789ab"

static const char *state_dir(void) {
        static char *s;

        if (!s && asprintf(&s, "%s/state", fuzz_scratch_dir()) < 0)
                fuzz_fail();
        return s;
}

static void write_doc(const char *kind, const char *name, const uint8_t *data, size_t size) {
        _cleanup_free_ char *path = NULL;

        if (asprintf(&path, "%s/%s/%s.json", state_dir(), kind, name) < 0)
                fuzz_fail();
        fuzz_write_file(path, data, size);
}

static bool load_ok(int r) {
        return r >= 0 || r == -EUCLEAN || r == -ENOMEM;
}

static void volume_record_check(const uint8_t *data, size_t size) {
        _cleanup_(volume_record_done) volume_record v = {};
        volume_record *all = NULL;
        size_t n = 0;
        int r;

        write_doc("volumes", "vol-1", data, size);
        r = volume_db_load(state_dir(), "vol-1", &v);
        if (!load_ok(r) || (r >= 0 && !streq_ptr(v.id, "vol-1")))
                fuzz_fail();
        r = volume_db_list(state_dir(), &all, &n);
        if (r < 0 && r != -ENOMEM)
                fuzz_fail();
        volume_record_array_free(all, n);
}

static void image_record_check(const uint8_t *data, size_t size) {
        _cleanup_(image_record_done) image_record i = {};
        image_record *all = NULL;
        size_t n = 0;
        int r;

        write_doc("images", IMAGE_ID, data, size);
        r = image_db_load(state_dir(), IMAGE_ID, &i);
        if (!load_ok(r) || (r >= 0 && (!streq_ptr(i.id, IMAGE_ID) || !i.name || !i.key_id)))
                fuzz_fail();
        r = image_db_list(state_dir(), &all, &n);
        if (r < 0 && r != -ENOMEM)
                fuzz_fail();
        image_record_array_free(all, n);
        /* With the records that do not load: the image is listed either way, loaded or marked corrupt. */
        all = NULL;
        n = 0;
        r = image_db_list_all(state_dir(), &all, &n);
        if (r < 0 && r != -ENOMEM)
                fuzz_fail();
        if (r >= 0 && (n != 1 || !streq_ptr(all[0].id, IMAGE_ID) || !all[0].corrupt != !!all[0].name))
                fuzz_fail();
        image_record_array_free(all, n);
}

static kms_backend *local_backend(void) {
        static kms_backend *b;
        static kms_context ctx; /* the backend keeps a pointer to it */
        kms_backend_config cfg = { .name = (char *) "local", .type = (char *) "local" };
        _cleanup_free_ char *error = NULL;

        ctx.state_dir = state_dir();
        if (!b && kms_backend_open(&cfg, &ctx, &b, &error) < 0)
                fuzz_fail();
        return b;
}

static void key_file_check(const uint8_t *data, size_t size) {
        kms_backend *b = local_backend();
        _cleanup_(kms_key_done) kms_key k = {};
        kms_key *keys = NULL;
        size_t n = 0;
        int r;

        write_doc("keys", KEY_ID, data, size);
        r = kms_key_get(b, KEY_ID, &k);
        if (r >= 0 && !streq_ptr(k.id, KEY_ID))
                fuzz_fail(); /* a file answers only for the id it is named after */
        r = kms_key_list(b, &keys, &n);
        for (size_t i = 0; r >= 0 && i < n; i++)
                if (!keys[i].id)
                        fuzz_fail();
        kms_key_array_free(keys, n);
}

static void other_record_check(const char *kind, const uint8_t *data, size_t size) {
        json_object *o = NULL;
        char **ids = NULL;
        int r;

        write_doc(kind, "rec-1", data, size);
        r = docstore_load(state_dir(), kind, "rec-1", &o);
        if (!load_ok(r) || (r >= 0 && !json_object_is_type(o, json_type_object)))
                fuzz_fail();
        json_object_put(o);
        r = docstore_list(state_dir(), kind, &ids);
        if (r < 0 && r != -ENOMEM)
                fuzz_fail();
        for (char **i = ids; i && *i; i++)
                free(*i);
        free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1 || size > 96 * 1024)
                return 0;
        switch (data[0] % 5) {
        case 0:
                volume_record_check(data + 1, size - 1);
                break;
        case 1:
                image_record_check(data + 1, size - 1);
                break;
        case 2:
                key_file_check(data + 1, size - 1);
                break;
        case 3:
                other_record_check("servers", data + 1, size - 1);
                break;
        case 4:
                other_record_check("as-configs", data + 1, size - 1);
                break;
        }
        return 0;
}
