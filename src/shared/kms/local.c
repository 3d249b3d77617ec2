/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The embedded KMS. Each CMK is one JSON file STATE/keys/<uuid>.json (0600, written atomically);
 * its 32-byte material is sealed with AES-256-GCM under the root key, bound to the CMK id. The root
 * key comes from the systemd credential "evs-root-key" ($CREDENTIALS_DIRECTORY) when present, else
 * from RootKeyFile= (default STATE/root.key, 0400, created on first use). Every operation holds an
 * exclusive flock on STATE/keys/.lock, so evsctl-less tools and a daemon never interleave writes.
 *
 * State mapping: the file's "state" is the normalised state itself. A pending-deletion key whose
 * window has passed is destroyed (all its material versions dropped, file kept as a tombstone) on the
 * next access and by kms_sweep().
 *
 * Versions (rotation): a CMK has numbered material versions 1..N, each sealed under the root key (version 1
 * bound to the CMK id as before, version V > 1 to "ID/vV"). Wraps use the newest; a wrapped key records its
 * version ("EVL2" blobs: magic, id, 4-byte big-endian version, sealed data key; AAD binds the version) and
 * "EVL1" blobs of before rotation existed are version 1. A key file that was never rotated and has no
 * rotation period keeps format version 1 (material = version 1); otherwise format version 2 adds
 * "versions" (V > 1: version, created, material), "rotation_days", "next_rotation" and "rotated". A
 * rotation is one atomic rewrite of the key file (temp, fsync, rename, fsync dir): a crash at any point
 * leaves the old file (newest = old version) or the new one, both complete. Automatic rotation happens when
 * an enabled key is loaded (every access, and kms_sweep()) after its next_rotation; a disabled or pending-
 * deletion key is not rotated (and rotates on the first access after it is enabled again, if overdue). */

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "backends.h"
#include "crypto.h"
#include "fileio.h"
#include "json-util.h"
#include "string-util.h"

#define ROOT_KEY_CREDENTIAL "evs-root-key"
#define KEY_FILE_MAX (64U * 1024U)
#define WRAP_MAGIC "EVL1"
#define WRAP_HEADER_SIZE (4U + 36U)
#define WRAP2_MAGIC "EVL2"
#define WRAP2_HEADER_SIZE (4U + 36U + 4U)
#define SEALED_SIZE (AES_GCM_NONCE_SIZE + AES_GCM_KEY_SIZE + AES_GCM_TAG_SIZE)
#define VERSIONS_MAX 4096U

typedef struct local_backend {
        kms_backend base;
        char *key_dir;
        char *root_key_file;
        secret *root_key;
} local_backend;

/* One material version, sealed under the root key. */
typedef struct local_version {
        unsigned version;
        usec_t created;
        uint8_t *sealed;
        size_t sealed_size;
} local_version;

/* A CMK as stored. */
typedef struct local_key {
        kms_key info;
        local_version *versions; /* 1..N in order; none once destroyed */
        size_t n_versions;
} local_key;

static void local_versions_wipe(local_key *k) {
        for (size_t i = 0; i < k->n_versions; i++) {
                if (k->versions[i].sealed)
                        explicit_bzero(k->versions[i].sealed, k->versions[i].sealed_size);
                free(k->versions[i].sealed);
        }
        k->versions = mfree(k->versions);
        k->n_versions = 0;
}

static void local_key_done(local_key *k) {
        kms_key_done(&k->info);
        local_versions_wipe(k);
        *k = (local_key) {};
}

/* The sealing AAD of version @v of key @id: the id itself for version 1 (as before versions existed). */
static int version_aad(const char *id, unsigned v, char **ret) {
        if (v <= 1)
                return (*ret = strdup(id)) ? 0 : -ENOMEM;
        return asprintf(ret, "%s/v%u", id, v) < 0 ? -ENOMEM : 0;
}

static local_backend *LOCAL(kms_backend *b) {
        return (local_backend *) b;
}

static usec_t now(local_backend *l) {
        return l->base.ctx && l->base.ctx->now ? l->base.ctx->now() : now_realtime();
}

static int local_open(const kms_backend_config *cfg, const kms_context *ctx, kms_backend **ret, char **ret_error) {
        static const char *const known[] = { "RootKeyFile", NULL };
        _cleanup_free_ local_backend *l = NULL;
        const kms_setting *s;
        int r;

        r = kms_config_check_known(cfg, known, ret_error);
        if (r < 0)
                return r;
        if (!ctx->state_dir)
                return kms_config_error(ret_error, NULL, "[Backend %s]: no state directory", cfg->name);

        l = calloc(1, sizeof *l);
        if (!l)
                return -ENOMEM;
        if (asprintf(&l->key_dir, "%s/keys", ctx->state_dir) < 0)
                return -ENOMEM;

        s = kms_config_find(cfg, "RootKeyFile");
        if (s) {
                if (s->value[0] != '/') {
                        free(l->key_dir);
                        return kms_config_error(ret_error, s, "RootKeyFile= must be an absolute path: %s", s->value);
                }
                l->root_key_file = strdup(s->value);
        } else if (asprintf(&l->root_key_file, "%s/root.key", ctx->state_dir) < 0)
                l->root_key_file = NULL;
        if (!l->root_key_file) {
                free(l->key_dir);
                return -ENOMEM;
        }

        *ret = &TAKE_PTR(l)->base;
        return 0;
}

static void local_free(kms_backend *b) {
        local_backend *l = LOCAL(b);

        free(l->key_dir);
        free(l->root_key_file);
        secret_free(l->root_key);
        free(l);
}

static int read_root_key(const char *path, secret **ret) {
        char *buf = NULL;
        size_t size;
        int r;

        r = read_full_file_secure(path, 4096, &buf, &size);
        if (r < 0)
                return r;
        if (size != AES_GCM_KEY_SIZE) {
                erase_and_free(buf, size);
                return -EBADMSG;
        }
        r = secret_new_copy(buf, size, ret);
        erase_and_free(buf, size);
        return r;
}

static bool is_key_file(const char *name);

/* The number of key files in the store (good or bad), or -errno. */
static int count_key_files(local_backend *l) {
        struct dirent *de;
        int n = 0;
        DIR *d;

        d = opendir(l->key_dir);
        if (!d)
                return errno == ENOENT ? 0 : negative_errno();
        while ((de = readdir(d)))
                if (is_key_file(de->d_name))
                        n++;
        closedir(d);
        return n;
}

/* Loads the root key: the systemd credential first, else the file, created on first use of an empty store. */
static int load_root_key(local_backend *l) {
        _cleanup_(secret_freep) secret *key = NULL;
        _cleanup_free_ char *dir = NULL;
        const char *base;
        int n, r;

        if (l->root_key)
                return 0;

        if (l->base.ctx->credentials_dir) {
                _cleanup_free_ char *cred = NULL;

                if (asprintf(&cred, "%s/%s", l->base.ctx->credentials_dir, ROOT_KEY_CREDENTIAL) < 0)
                        return -ENOMEM;
                r = read_root_key(cred, &key);
                if (r == -EBADMSG)
                        return kms_backend_set_error(&l->base, r, "credential %s is not %u bytes", cred,
                                                     AES_GCM_KEY_SIZE);
                if (r < 0 && r != -ENOENT)
                        return kms_backend_set_error(&l->base, r, "cannot read credential %s", cred);
                if (r >= 0) {
                        l->root_key = TAKE_PTR(key);
                        return 0;
                }
        }

        r = read_root_key(l->root_key_file, &key);
        if (r == -EBADMSG)
                return kms_backend_set_error(&l->base, r, "root key %s is not %u bytes", l->root_key_file,
                                             AES_GCM_KEY_SIZE);
        if (r == -ENOENT) {
                /* A new root key only for an empty store: keys sealed under a lost one must never be
                 * joined by keys under a new one (restoring the old file would then lose those). */
                n = count_key_files(l);
                if (n < 0)
                        return kms_backend_set_error(&l->base, n, "cannot read %s", l->key_dir);
                if (n > 0 && l->base.ctx->credentials_dir)
                        return kms_backend_set_error(&l->base, -EHOSTDOWN,
                                                     "root key missing: no credential " ROOT_KEY_CREDENTIAL
                                                     " in %s and no file %s, but %s holds %d key file(s) sealed "
                                                     "under it: restore it (a new root key is made only for an "
                                                     "empty store)",
                                                     l->base.ctx->credentials_dir, l->root_key_file, l->key_dir, n);
                if (n > 0)
                        return kms_backend_set_error(&l->base, -EHOSTDOWN,
                                                     "root key %s is missing, but %s holds %d key file(s) sealed "
                                                     "under it: restore it (a new root key is made only for an "
                                                     "empty store)",
                                                     l->root_key_file, l->key_dir, n);
                dir = strdup(l->root_key_file);
                if (!dir)
                        return -ENOMEM;
                base = strrchr(dir, '/');
                dir[base - dir] = 0;
                r = mkdir_p(dir, 0700);
                if (r < 0)
                        return kms_backend_set_error(&l->base, r, "cannot create %s: %s", dir, strerror(-r));
                r = crypto_random_secret(AES_GCM_KEY_SIZE, &key);
                if (r < 0)
                        return r;
                r = write_file_atomic(dir, base + 1, key->data, key->size, 0400);
        }
        if (r < 0)
                return kms_backend_set_error(&l->base, r, "cannot read root key %s", l->root_key_file);

        l->root_key = TAKE_PTR(key);
        return 0;
}

/* Takes the store lock; returns the fd to close. Also creates the key directory. */
static int lock_store(local_backend *l) {
        _cleanup_free_ char *path = NULL;
        int fd, r;

        r = mkdir_p(l->key_dir, 0700);
        if (r < 0)
                return kms_backend_set_error(&l->base, r, "cannot create %s: %s", l->key_dir, strerror(-r));
        if (asprintf(&path, "%s/.lock", l->key_dir) < 0)
                return -ENOMEM;
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return kms_backend_set_error(&l->base, negative_errno(), "cannot open %s: %m", path);
        if (flock(fd, LOCK_EX) < 0) {
                r = negative_errno();
                safe_close(fd);
                return r;
        }
        r = load_root_key(l);
        if (r < 0) {
                safe_close(fd);
                return r;
        }
        return fd;
}

static bool key_needs_v2(const local_key *k) {
        return k->n_versions > 1 || k->info.version > 1 || k->info.rotation_days > 0 || k->info.rotated > 0;
}

static int versions_to_json(const local_key *k, json_object **ret) {
        _cleanup_(json_object_putp) json_object *a = json_object_new_array();
        int r;

        if (!a)
                return -ENOMEM;
        for (size_t i = 1; i < k->n_versions; i++) {
                _cleanup_(json_object_putp) json_object *v = json_object_new_object();
                _cleanup_free_ char *material = NULL;

                if (!v)
                        return -ENOMEM;
                r = base64_encode(k->versions[i].sealed, k->versions[i].sealed_size, &material);
                if (r < 0)
                        return r;
                if ((r = json_add_uint64(v, "version", k->versions[i].version)) < 0 ||
                    (r = json_add_uint64(v, "created", k->versions[i].created)) < 0 ||
                    (r = json_add_string(v, "material", material, false)) < 0)
                        return r;
                if (json_object_array_add(a, TAKE_PTR(v)) < 0)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(a);
        return 0;
}

static int key_to_json(const local_key *k, char **ret) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        _cleanup_free_ char *material = NULL;
        bool v2 = key_needs_v2(k);
        char *s;
        int r;

        if (!o)
                return -ENOMEM;
        if (k->n_versions > 0) {
                r = base64_encode(k->versions[0].sealed, k->versions[0].sealed_size, &material);
                if (r < 0)
                        return r;
        }
        if ((r = json_add_uint64(o, "version", v2 ? 2 : 1)) < 0 ||
            (r = json_add_string(o, "id", k->info.id, false)) < 0 ||
            (r = json_add_string(o, "alias", k->info.alias, true)) < 0 ||
            (r = json_add_string(o, "description", k->info.description, true)) < 0 ||
            (r = json_add_string(o, "state", kms_key_state_to_string(k->info.state), false)) < 0 ||
            (r = json_add_uint64(o, "created", k->info.created)) < 0 ||
            (r = k->info.deletion_date ? json_add_uint64(o, "deletion_date", k->info.deletion_date)
                                       : json_add_string(o, "deletion_date", NULL, true)) < 0 ||
            (r = json_add_string(o, "material", material, true)) < 0)
                return r;
        if (v2) {
                json_object *a = NULL;

                r = versions_to_json(k, &a);
                if (r < 0)
                        return r;
                if (json_object_object_add(o, "versions", a) < 0) {
                        json_object_put(a);
                        return -ENOMEM;
                }
                if ((r = json_add_uint64(o, "current_version", k->info.version)) < 0 ||
                    (r = json_add_uint64(o, "rotation_days", k->info.rotation_days)) < 0 ||
                    (r = json_add_uint64(o, "next_rotation", k->info.next_rotation)) < 0 ||
                    (r = json_add_uint64(o, "rotated", k->info.rotated)) < 0)
                        return r;
        }

        s = json_to_string_dup(o, true);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

static int add_version(local_key *k, unsigned version, usec_t created, const char *material_b64) {
        local_version *a, v = { .version = version, .created = created };
        int r;

        r = base64_decode(material_b64, &v.sealed, &v.sealed_size);
        if (r < 0)
                return r;
        if (v.sealed_size != SEALED_SIZE) {
                free(v.sealed);
                return -EINVAL;
        }
        a = reallocarray(k->versions, k->n_versions + 1, sizeof *a);
        if (!a) {
                free(v.sealed);
                return -ENOMEM;
        }
        k->versions = a;
        k->versions[k->n_versions++] = v;
        return 0;
}

/* Format version 2's fields: versions 2..N in order, the newest being current_version. */
static int versions_from_json(json_object *o, local_key *k) {
        uint64_t current, days, next, rotated;
        json_object *a;
        size_t n;
        int r;

        if (!json_object_object_get_ex(o, "versions", &a) || !json_object_is_type(a, json_type_array))
                return -EINVAL;
        if (json_get_uint64(o, "current_version", false, &current) < 0 ||
            json_get_uint64(o, "rotation_days", false, &days) < 0 ||
            json_get_uint64(o, "next_rotation", false, &next) < 0 ||
            json_get_uint64(o, "rotated", false, &rotated) < 0)
                return -EINVAL;
        if (current < 1 || current > VERSIONS_MAX || (days != 0 && (days < KMS_ROTATION_DAYS_MIN ||
                                                                     days > KMS_ROTATION_DAYS_MAX)))
                return -EINVAL;
        n = json_object_array_length(a);
        if (k->n_versions == 0 && n != 0) /* destroyed: no material of any version */
                return -EINVAL;
        if (k->n_versions > 0 && n != current - 1)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                json_object *v = json_object_array_get_idx(a, i);
                const char *material;
                uint64_t version, created;

                if (!json_object_is_type(v, json_type_object) ||
                    json_get_uint64(v, "version", false, &version) < 0 || version != i + 2 ||
                    json_get_uint64(v, "created", false, &created) < 0 ||
                    json_get_string(v, "material", false, &material) < 0)
                        return -EINVAL;
                r = add_version(k, (unsigned) version, created, material);
                if (r < 0)
                        return r == -ENOMEM ? r : -EINVAL;
        }
        k->info.version = (unsigned) current;
        k->info.rotation_days = (unsigned) days;
        k->info.next_rotation = days ? next : 0;
        k->info.rotated = rotated;
        return 0;
}

static int key_from_json(const char *text, local_key *ret) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        _cleanup_(local_key_done) local_key k = {};
        const char *id, *alias, *desc, *state, *material;
        uint64_t version, created, deletion;
        int r;

        r = json_parse(text, KEY_FILE_MAX, &o);
        if (r < 0)
                return r;
        if (!json_object_is_type(o, json_type_object))
                return -EINVAL;
        if (json_get_uint64(o, "version", false, &version) < 0 || (version != 1 && version != 2) ||
            json_get_string(o, "id", false, &id) < 0 || !uuid_valid(id) ||
            json_get_string(o, "alias", true, &alias) < 0 || (alias && !kms_alias_valid(alias)) ||
            json_get_string(o, "description", true, &desc) < 0 ||
            json_get_string(o, "state", false, &state) < 0 ||
            json_get_uint64(o, "created", false, &created) < 0 ||
            json_get_uint64(o, "deletion_date", true, &deletion) < 0 ||
            json_get_string(o, "material", true, &material) < 0)
                return -EINVAL;

        k.info.state = kms_key_state_from_string(state);
        if (k.info.state < 0 || k.info.state == KMS_KEY_UNAVAILABLE)
                return -EINVAL;
        if ((k.info.state == KMS_KEY_PENDING_DELETION) != (deletion != 0))
                return -EINVAL;
        if ((k.info.state == KMS_KEY_DESTROYED) != !material)
                return -EINVAL;

        if ((r = free_and_strdup(&k.info.id, id)) < 0 || (r = free_and_strdup(&k.info.alias, alias)) < 0 ||
            (r = free_and_strdup(&k.info.description, desc)) < 0)
                return r;
        k.info.created = created;
        k.info.deletion_date = deletion;
        if (material) {
                r = add_version(&k, 1, created, material);
                if (r < 0)
                        return r;
                k.info.version = 1;
        }
        if (version == 2) {
                r = versions_from_json(o, &k);
                if (r < 0)
                        return r;
        }
        *ret = k;
        k = (local_key) {};
        return 0;
}

static int store_key(local_backend *l, const local_key *k) {
        _cleanup_free_ char *text = NULL, *name = NULL;
        int r;

        r = key_to_json(k, &text);
        if (r < 0)
                return r;
        if (asprintf(&name, "%s.json", k->info.id) < 0)
                return -ENOMEM;
        r = write_file_atomic(l->key_dir, name, text, strlen(text), 0600);
        if (r < 0)
                return kms_backend_set_error(&l->base, r, "cannot write %s/%s: %s", l->key_dir, name, strerror(-r));
        return 0;
}

/* Appends material version N+1 (fresh random material sealed under the root key) to @k in memory and makes it
 * the current one; the caller stores the key file (one atomic write). */
static int new_version(local_backend *l, local_key *k) {
        _cleanup_(secret_freep) secret *material = NULL;
        _cleanup_free_ char *aad = NULL;
        local_version v = { .version = k->info.version + 1, .created = now(l) }, *a;
        int r;

        if (k->n_versions >= VERSIONS_MAX)
                return kms_backend_set_error(&l->base, -E2BIG, "key %s has %u versions: no more", k->info.id,
                                             VERSIONS_MAX);
        r = crypto_random_secret(AES_GCM_KEY_SIZE, &material);
        if (r < 0)
                return r;
        r = version_aad(k->info.id, v.version, &aad);
        if (r < 0)
                return r;
        r = aes_gcm_seal(l->root_key, aad, strlen(aad), material->data, material->size, &v.sealed, &v.sealed_size);
        if (r < 0)
                return r;
        a = reallocarray(k->versions, k->n_versions + 1, sizeof *a);
        if (!a) {
                free(v.sealed);
                return -ENOMEM;
        }
        k->versions = a;
        k->versions[k->n_versions++] = v;
        k->info.version = v.version;
        if (v.version > 1)
                k->info.rotated = v.created;
        if (k->info.rotation_days > 0)
                k->info.next_rotation = v.created + (usec_t) k->info.rotation_days * USEC_PER_DAY;
        return 0;
}

/* Rotates an enabled key whose automatic rotation is due. A disabled or pending-deletion key is not rotated. */
static int auto_rotate_key(local_backend *l, local_key *k) {
        local_key copy;
        int r;

        if (k->info.state != KMS_KEY_ENABLED || k->info.rotation_days == 0 || now(l) < k->info.next_rotation ||
            !l->root_key)
                return 0;
        copy = *k;
        r = new_version(l, k);
        if (r < 0)
                return r;
        r = store_key(l, k);
        if (r < 0) {
                /* Not written: the stored key stays as it was, and so does this copy. */
                explicit_bzero(k->versions[k->n_versions - 1].sealed, k->versions[k->n_versions - 1].sealed_size);
                free(k->versions[k->n_versions - 1].sealed);
                k->n_versions--;
                k->info.version = copy.info.version;
                k->info.rotated = copy.info.rotated;
                k->info.next_rotation = copy.info.next_rotation;
        }
        return r;
}

/* Destroys the key if its deletion window has passed. */
static int expire_key(local_backend *l, local_key *k) {
        if (k->info.state != KMS_KEY_PENDING_DELETION || now(l) < k->info.deletion_date)
                return 0;
        local_versions_wipe(k); /* every version goes */
        k->info.state = KMS_KEY_DESTROYED;
        k->info.deletion_date = 0; /* kms.h: 0 unless pending; key_from_json() insists */
        return store_key(l, k);
}

/* Loads key file @name (read with read_state_file(): never blocks, follows no symlink, at most 64 KiB). A file
 * that is not a regular file, does not parse, or holds another key than its name says is -EUCLEAN with
 * *ret_reason naming it. -ENOENT, -ENOMEM, errors of writing an expired key. */
static int load_key_file(local_backend *l, const char *name, local_key *ret, char **ret_reason) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        _cleanup_(local_key_done) local_key k = {};
        char *reason = NULL;
        int r;

        if (asprintf(&path, "%s/%s", l->key_dir, name) < 0)
                return -ENOMEM;
        r = read_state_file(path, KEY_FILE_MAX, &text, NULL);
        if (r == -ENOENT || r == -ENOMEM)
                return r;
        if (r < 0 && asprintf(&reason, "key file %s is unreadable: %s", path, read_file_error(r)) < 0)
                return -ENOMEM;
        if (r >= 0 && key_from_json(text, &k) < 0 && asprintf(&reason, "key file %s is corrupt", path) < 0)
                return -ENOMEM;
        if (!reason && strncmp(name, k.info.id, 36) != 0 &&
            asprintf(&reason, "key file %s is corrupt: it holds key %s", path, k.info.id) < 0)
                return -ENOMEM;
        if (reason) {
                *ret_reason = reason;
                return -EUCLEAN;
        }
        r = expire_key(l, &k);
        if (r < 0)
                return r;
        r = auto_rotate_key(l, &k);
        if (r < 0)
                return r;
        *ret = k;
        k = (local_key){};
        return 0;
}

static bool is_key_file(const char *name) {
        size_t n = strlen(name);
        char id[37];

        if (n != 36 + 5 || !streq(name + 36, ".json"))
                return false;
        memcpy(id, name, 36);
        id[36] = 0;
        return uuid_valid(id);
}

/* Calls @f for each stored key; stops on a negative return. A key file that does not load (-EUCLEAN) does not
 * stop the walk: @f sees it as a key of state unavailable, its id from the file name and the reason as its
 * description, so that one bad file never disables the store. */
static int foreach_key(local_backend *l, int (*f)(local_key *k, void *userdata), void *userdata) {
        DIR *d;
        struct dirent *de;
        int r = 0;

        d = opendir(l->key_dir);
        if (!d)
                return errno == ENOENT ? 0 : negative_errno();
        while ((de = readdir(d))) {
                _cleanup_(local_key_done) local_key k = {};
                char *reason = NULL;

                if (!is_key_file(de->d_name))
                        continue;
                r = load_key_file(l, de->d_name, &k, &reason);
                if (r == -ENOENT)
                        continue;
                if (r == -EUCLEAN) {
                        k.info.id = strndup(de->d_name, 36);
                        k.info.description = reason;
                        k.info.state = KMS_KEY_UNAVAILABLE;
                        if (!k.info.id) {
                                r = -ENOMEM;
                                break;
                        }
                } else if (r < 0)
                        break;
                r = f(&k, userdata);
                if (r != 0)
                        break;
        }
        closedir(d);
        return r < 0 ? r : 0;
}

static bool is_bad(const local_key *k) {
        return k->info.state == KMS_KEY_UNAVAILABLE;
}

struct find_alias {
        const char *alias;
        local_key *ret;
        bool found;
        char *other;     /* a second key file holding the alias */
        char *first_bad; /* the reason of the first key file that does not load */
};

static void find_alias_done(struct find_alias *fa) {
        free(fa->other);
        free(fa->first_bad);
}

static int find_alias_cb(local_key *k, void *userdata) {
        struct find_alias *fa = userdata;

        if (is_bad(k)) {
                if (!fa->first_bad)
                        fa->first_bad = TAKE_PTR(k->info.description);
                return 0;
        }
        if (!streq_ptr(k->info.alias, fa->alias))
                return 0;
        if (fa->found) { /* a copied key file: the alias is ambiguous */
                if (!fa->other)
                        fa->other = TAKE_PTR(k->info.id);
                return 0;
        }
        fa->found = true;
        if (fa->ret) {
                *fa->ret = *k;
                *k = (local_key) {};
        }
        return 0;
}

/* Looks for @alias in every key file. -EUCLEAN when two key files hold it. */
static int find_alias(local_backend *l, struct find_alias *fa) {
        int r;

        r = foreach_key(l, find_alias_cb, fa);
        if (r < 0)
                return r;
        if (fa->other) {
                r = kms_backend_set_error(&l->base, -EUCLEAN,
                                          "alias %s is held by two key files in %s (keys %s and %s): remove the copy",
                                          fa->alias, l->key_dir, fa->ret ? fa->ret->info.id : "another", fa->other);
                if (fa->ret)
                        local_key_done(fa->ret);
                fa->found = false;
                return r;
        }
        return 0;
}

/* Finds a key by id or alias, with the lock held. -ENOENT, -EUCLEAN for a key file that does not load. */
static int find_key(local_backend *l, const char *ref, local_key *ret) {
        _cleanup_(find_alias_done) struct find_alias fa = {.alias = ref, .ret = ret};
        _cleanup_free_ char *name = NULL, *reason = NULL;
        int r;

        if (uuid_valid(ref)) {
                if (asprintf(&name, "%s.json", ref) < 0)
                        return -ENOMEM;
                r = load_key_file(l, name, ret, &reason);
                if (r == -ENOENT)
                        return kms_backend_set_error(&l->base, r, "no key %s", ref);
                if (r == -EUCLEAN)
                        return kms_backend_set_error(&l->base, r, "%s", reason);
                return r;
        }
        r = find_alias(l, &fa);
        if (r < 0)
                return r;
        if (!fa.found && fa.first_bad)
                return kms_backend_set_error(&l->base, -ENOENT, "no key %s (and %s)", ref, fa.first_bad);
        if (!fa.found)
                return kms_backend_set_error(&l->base, -ENOENT, "no key %s", ref);
        return 0;
}

static int copy_info(const kms_key *from, kms_key *ret) {
        kms_key k = { .state = from->state, .created = from->created, .deletion_date = from->deletion_date,
                      .version = from->version, .rotation_days = from->rotation_days,
                      .next_rotation = from->next_rotation, .rotated = from->rotated };

        if (free_and_strdup(&k.id, from->id) < 0 || free_and_strdup(&k.alias, from->alias) < 0 ||
            free_and_strdup(&k.description, from->description) < 0) {
                kms_key_done(&k);
                return -ENOMEM;
        }
        *ret = k;
        return 0;
}

static int local_key_create(kms_backend *b, const char *alias, const char *description, kms_key *ret) {
        local_backend *l = LOCAL(b);
        _cleanup_(closep) int lock = -EBADF;
        _cleanup_(local_key_done) local_key k = {};
        char id[37];
        int r;

        lock = lock_store(l);
        if (lock < 0)
                return lock;

        if (alias) {
                _cleanup_(find_alias_done) struct find_alias fa = {.alias = alias};

                r = find_alias(l, &fa);
                if (r < 0)
                        return r;
                if (fa.found)
                        return kms_backend_set_error(b, -EEXIST, "alias %s is already taken", alias);
                /* The default key is made on first use: not while a key file that may be it does not load. */
                if (fa.first_bad && streq(alias, KMS_DEFAULT_KEY_ALIAS))
                        return kms_backend_set_error(b, -EUCLEAN, "cannot create the default key %s: %s",
                                                     KMS_DEFAULT_KEY_ALIAS, fa.first_bad);
        }

        r = uuid_random(id);
        if (r < 0)
                return r;
        k.info.state = KMS_KEY_ENABLED;
        k.info.created = now(l);
        if ((r = free_and_strdup(&k.info.id, id)) < 0 || (r = free_and_strdup(&k.info.alias, alias)) < 0 ||
            (r = free_and_strdup(&k.info.description, description)) < 0)
                return r;
        r = new_version(l, &k);
        if (r < 0)
                return r;

        r = store_key(l, &k);
        if (r < 0)
                return r;
        return copy_info(&k.info, ret);
}

struct list_state {
        kms_key *keys;
        size_t n;
};

static int list_cb(local_key *k, void *userdata) {
        struct list_state *s = userdata;
        kms_key *a;

        a = reallocarray(s->keys, s->n + 1, sizeof(kms_key));
        if (!a)
                return -ENOMEM;
        s->keys = a;
        s->keys[s->n++] = k->info;
        k->info = (kms_key) {};
        return 0;
}

static int cmp_created(const void *a, const void *b) {
        const kms_key *x = a, *y = b;

        if (x->created != y->created)
                return x->created < y->created ? -1 : 1;
        return strcmp(x->id, y->id);
}

static int local_key_list(kms_backend *b, kms_key **ret, size_t *ret_n) {
        local_backend *l = LOCAL(b);
        _cleanup_(closep) int lock = -EBADF;
        struct list_state s = {};
        int r;

        lock = lock_store(l);
        if (lock < 0)
                return lock;
        r = foreach_key(l, list_cb, &s);
        if (r < 0) {
                kms_key_array_free(s.keys, s.n);
                return r;
        }
        if (s.n > 0)
                qsort(s.keys, s.n, sizeof(kms_key), cmp_created);
        *ret = s.keys;
        *ret_n = s.n;
        return 0;
}

static int local_key_get(kms_backend *b, const char *ref, kms_key *ret) {
        local_backend *l = LOCAL(b);
        _cleanup_(closep) int lock = -EBADF;
        _cleanup_(local_key_done) local_key k = {};
        int r;

        lock = lock_store(l);
        if (lock < 0)
                return lock;
        r = find_key(l, ref, &k);
        if (r < 0)
                return r;
        return copy_info(&k.info, ret);
}

static int refuse_transition(kms_backend *b, const local_key *k, const char *what) {
        char ts[FORMAT_TIMESTAMP_MAX];

        if (k->info.state == KMS_KEY_PENDING_DELETION)
                return kms_backend_set_error(
                        b, -EKEYREJECTED, "cannot %s key %s: it is pending deletion on %s (cancel the deletion first)",
                        what, k->info.id, format_timestamp(ts, sizeof ts, k->info.deletion_date));
        return kms_backend_set_error(b, -EKEYREJECTED, "cannot %s key %s: it is %s", what, k->info.id,
                                     kms_key_state_to_string(k->info.state));
}

/* Loads @id under the lock, lets @f change it, stores it. */
static int modify_key(kms_backend *b, const char *id, int (*f)(kms_backend *b, local_key *k, void *userdata),
                      void *userdata, kms_key *ret) {
        local_backend *l = LOCAL(b);
        _cleanup_(closep) int lock = -EBADF;
        _cleanup_(local_key_done) local_key k = {};
        int r;

        lock = lock_store(l);
        if (lock < 0)
                return lock;
        r = find_key(l, id, &k);
        if (r < 0)
                return r;
        r = f(b, &k, userdata);
        if (r < 0)
                return r;
        if (r > 0) {
                r = store_key(l, &k);
                if (r < 0)
                        return r;
        }
        return ret ? copy_info(&k.info, ret) : 0;
}

static int set_enabled_cb(kms_backend *b, local_key *k, void *userdata) {
        bool enable = *(bool *) userdata;
        kms_key_state want = enable ? KMS_KEY_ENABLED : KMS_KEY_DISABLED;

        if (k->info.state == want)
                return 0; /* idempotent */
        if (k->info.state != KMS_KEY_ENABLED && k->info.state != KMS_KEY_DISABLED)
                return refuse_transition(b, k, enable ? "enable" : "disable");
        k->info.state = want;
        return 1;
}

static int local_key_set_enabled(kms_backend *b, const char *id, bool enabled) {
        return modify_key(b, id, set_enabled_cb, &enabled, NULL);
}

static int schedule_cb(kms_backend *b, local_key *k, void *userdata) {
        unsigned days = *(unsigned *) userdata;

        if (k->info.state != KMS_KEY_ENABLED && k->info.state != KMS_KEY_DISABLED)
                return refuse_transition(b, k, "schedule the deletion of");
        k->info.state = KMS_KEY_PENDING_DELETION;
        k->info.deletion_date = now(LOCAL(b)) + (usec_t) days * USEC_PER_DAY;
        return 1;
}

static int local_key_schedule_deletion(kms_backend *b, const char *id, unsigned days, kms_key *ret) {
        return modify_key(b, id, schedule_cb, &days, ret);
}

static int cancel_cb(kms_backend *b, local_key *k, void *userdata) {
        if (k->info.state != KMS_KEY_PENDING_DELETION)
                return refuse_transition(b, k, "cancel the deletion of");
        k->info.state = KMS_KEY_DISABLED;
        k->info.deletion_date = 0;
        return 1;
}

static int local_key_cancel_deletion(kms_backend *b, const char *id) {
        return modify_key(b, id, cancel_cb, NULL, NULL);
}

static int build_aad(const char *id, const char *context, char **ret) {
        /* Domain-separated, NUL-delimited: neither field can contain NUL. */
        size_t a = strlen(id), c = strlen(context);
        static const char prefix[] = "evs-local-wrap-v1";
        char *p = malloc(sizeof prefix + a + 1 + c);

        if (!p)
                return -ENOMEM;
        memcpy(p, prefix, sizeof prefix);
        memcpy(p + sizeof prefix, id, a + 1);
        memcpy(p + sizeof prefix + a + 1, context, c);
        *ret = p;
        return (int) (sizeof prefix + a + 1 + c);
}

/* Loads a usable key and opens the material of @version (0: the current one); *ret_version says which. A
 * disabled or pending-deletion key refuses every version. */
static int open_material(local_backend *l, const char *id, unsigned version, secret **ret, unsigned *ret_version) {
        _cleanup_(local_key_done) local_key k = {};
        _cleanup_free_ char *aad = NULL;
        char ts[FORMAT_TIMESTAMP_MAX];
        const local_version *v;
        int r;

        r = find_key(l, id, &k);
        if (r < 0)
                return r;
        r = kms_key_state_to_errno(k.info.state);
        if (r == -EKEYEXPIRED)
                return kms_backend_set_error(&l->base, r, "key %s%s%s%s is pending deletion on %s", k.info.id,
                                             k.info.alias ? " (" : "", strempty(k.info.alias),
                                             k.info.alias ? ")" : "",
                                             format_timestamp(ts, sizeof ts, k.info.deletion_date));
        if (r < 0)
                return kms_backend_set_error(&l->base, r, "key %s%s%s%s is %s", k.info.id, k.info.alias ? " (" : "",
                                             strempty(k.info.alias), k.info.alias ? ")" : "",
                                             kms_key_state_to_string(k.info.state));
        if (k.n_versions == 0)
                return kms_backend_set_error(&l->base, -ENOKEY, "key %s has no material", k.info.id);
        if (version == 0)
                version = k.info.version;
        if (version > k.n_versions)
                return kms_backend_set_error(&l->base, -EBADMSG,
                                             "wrapped key names version %u of key %s, which has %u version(s)",
                                             version, k.info.id, k.info.version);
        v = &k.versions[version - 1];
        r = version_aad(k.info.id, version, &aad);
        if (r < 0)
                return r;
        r = aes_gcm_open(l->root_key, aad, strlen(aad), v->sealed, v->sealed_size, ret);
        if (r == -EBADMSG)
                return kms_backend_set_error(&l->base, -EUCLEAN,
                                             "material of key %s version %u does not open with this root key",
                                             k.info.id, version);
        if (r >= 0 && ret_version)
                *ret_version = version;
        return r;
}

/* The AAD of a wrap: version 1 keeps the format of before versions existed ("EVL1" blobs); later versions
 * bind the version too. Domain-separated, NUL-delimited: neither field can contain NUL. */
static int build_wrap_aad(const char *id, unsigned version, const char *context, char **ret, size_t *ret_size) {
        _cleanup_free_ char *p = NULL;
        int n;

        if (version <= 1) {
                n = build_aad(id, context, &p);
                if (n < 0)
                        return n;
                *ret_size = (size_t) n;
                *ret = TAKE_PTR(p);
                return 0;
        }
        n = asprintf(&p, "evs-local-wrap-v2%c%s%c%u%c%s", 0, id, 0, version, 0, context);
        if (n < 0)
                return -ENOMEM;
        *ret_size = (size_t) n;
        *ret = TAKE_PTR(p);
        return 0;
}

static int local_wrap_versioned(kms_backend *b, const char *id, const char *context, const secret *plain,
                                uint8_t **ret, size_t *ret_size, unsigned *ret_version) {
        local_backend *l = LOCAL(b);
        _cleanup_(closep) int lock = -EBADF;
        _cleanup_(secret_freep) secret *material = NULL;
        _cleanup_free_ char *aad = NULL;
        _cleanup_free_ uint8_t *sealed = NULL, *out = NULL;
        size_t sealed_size, aad_size, header;
        unsigned version = 0;
        int r;

        if (!uuid_valid(id))
                return kms_backend_set_error(b, -EINVAL, "not a local key id: %s", id);

        lock = lock_store(l);
        if (lock < 0)
                return lock;
        r = open_material(l, id, 0, &material, &version);
        if (r < 0)
                return r;
        r = build_wrap_aad(id, version, context, &aad, &aad_size);
        if (r < 0)
                return r;
        r = aes_gcm_seal(material, aad, aad_size, plain->data, plain->size, &sealed, &sealed_size);
        if (r < 0)
                return r;

        header = version <= 1 ? WRAP_HEADER_SIZE : WRAP2_HEADER_SIZE;
        out = malloc(header + sealed_size);
        if (!out)
                return -ENOMEM;
        memcpy(out, version <= 1 ? WRAP_MAGIC : WRAP2_MAGIC, 4);
        memcpy(out + 4, id, 36);
        if (version > 1) {
                out[40] = (uint8_t) (version >> 24);
                out[41] = (uint8_t) (version >> 16);
                out[42] = (uint8_t) (version >> 8);
                out[43] = (uint8_t) version;
        }
        memcpy(out + header, sealed, sealed_size);
        *ret = TAKE_PTR(out);
        *ret_size = header + sealed_size;
        *ret_version = version;
        return 0;
}

static int local_wrap(kms_backend *b, const char *id, const char *context, const secret *plain, uint8_t **ret,
                      size_t *ret_size) {
        unsigned v;

        return local_wrap_versioned(b, id, context, plain, ret, ret_size, &v);
}

/* The version a local wrapped key was made with: 1 for "EVL1", the recorded one for "EVL2". -EBADMSG. */
static int wrapped_version(const uint8_t *wrapped, size_t size, unsigned *ret_version, size_t *ret_header) {
        unsigned v;

        if (size > WRAP_HEADER_SIZE && memcmp(wrapped, WRAP_MAGIC, 4) == 0) {
                *ret_version = 1;
                *ret_header = WRAP_HEADER_SIZE;
                return 0;
        }
        if (size <= WRAP2_HEADER_SIZE || memcmp(wrapped, WRAP2_MAGIC, 4) != 0)
                return -EBADMSG;
        v = (unsigned) wrapped[40] << 24 | (unsigned) wrapped[41] << 16 | (unsigned) wrapped[42] << 8 | wrapped[43];
        if (v < 2 || v > VERSIONS_MAX)
                return -EBADMSG;
        *ret_version = v;
        *ret_header = WRAP2_HEADER_SIZE;
        return 0;
}

static int local_unwrap(kms_backend *b, const char *id, const char *context, const uint8_t *wrapped, size_t size,
                        secret **ret) {
        local_backend *l = LOCAL(b);
        _cleanup_(closep) int lock = -EBADF;
        _cleanup_(secret_freep) secret *material = NULL;
        _cleanup_free_ char *aad = NULL;
        size_t aad_size, header;
        unsigned version;
        int r;

        if (!uuid_valid(id))
                return kms_backend_set_error(b, -EINVAL, "not a local key id: %s", id);
        if (wrapped_version(wrapped, size, &version, &header) < 0)
                return kms_backend_set_error(b, -EBADMSG, "wrapped key is not in the local format");
        if (memcmp(wrapped + 4, id, 36) != 0)
                return kms_backend_set_error(b, -EXDEV, "wrapped key belongs to key %.36s, not %s",
                                             (const char *) wrapped + 4, id);

        lock = lock_store(l);
        if (lock < 0)
                return lock;
        r = open_material(l, id, version, &material, NULL);
        if (r < 0)
                return r;
        r = build_wrap_aad(id, version, context, &aad, &aad_size);
        if (r < 0)
                return r;
        r = aes_gcm_open(material, aad, aad_size, wrapped + header, size - header, ret);
        if (r == -EBADMSG)
                return kms_backend_set_error(b, r,
                                             "wrapped key fails authentication (altered, or bound to another volume)");
        return r;
}

static int rotate_cb(kms_backend *b, local_key *k, void *userdata) {
        int r;

        if (k->info.state != KMS_KEY_ENABLED) /* kms.c checked; the file may have changed since */
                return refuse_transition(b, k, "rotate");
        r = new_version(LOCAL(b), k);
        return r < 0 ? r : 1;
}

static int local_key_rotate(kms_backend *b, const char *id, kms_key *ret) {
        return modify_key(b, id, rotate_cb, NULL, ret);
}

static int set_rotation_cb(kms_backend *b, local_key *k, void *userdata) {
        unsigned days = *(unsigned *) userdata;

        if (k->info.state != KMS_KEY_ENABLED)
                return refuse_transition(b, k, "set the rotation of");
        if (k->info.rotation_days == days)
                return 0; /* idempotent: the schedule stays */
        k->info.rotation_days = days;
        k->info.next_rotation = days ? now(LOCAL(b)) + (usec_t) days * USEC_PER_DAY : 0;
        return 1;
}

static int local_key_set_rotation(kms_backend *b, const char *id, unsigned days, kms_key *ret) {
        return modify_key(b, id, set_rotation_cb, &days, ret);
}

static int sweep_cb(local_key *k, void *userdata) {
        return 0; /* load_key_file() already expired it */
}

static int local_sweep(kms_backend *b) {
        local_backend *l = LOCAL(b);
        _cleanup_(closep) int lock = -EBADF;

        lock = lock_store(l);
        if (lock < 0)
                return lock;
        return foreach_key(l, sweep_cb, NULL);
}

const kms_backend_ops kms_local_ops = {
        .type = "local",
        .thread_safe = false, /* cheap calls: one at a time through the store lock is plenty */
        .unwrap_checks_state = true,
        .open = local_open,
        .free = local_free,
        .key_create = local_key_create,
        .key_list = local_key_list,
        .key_get = local_key_get,
        .key_set_enabled = local_key_set_enabled,
        .key_schedule_deletion = local_key_schedule_deletion,
        .key_cancel_deletion = local_key_cancel_deletion,
        .wrap = local_wrap,
        .unwrap = local_unwrap,
        .wrap_versioned = local_wrap_versioned,
        .key_rotate = local_key_rotate,
        .key_set_rotation = local_key_set_rotation,
        .sweep = local_sweep,
};
