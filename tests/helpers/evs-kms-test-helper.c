/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* evs-kms-test-helper: a small, fast evs-kms-exec(7) helper for the tests and the benchmarks (built, never
 * installed). It speaks the protocol with real AES-256-GCM (OpenSSL), every wrap bound to the key id and the
 * volume id, and starts in a few milliseconds (the python exec-helper-test costs ~0.3 s per call in the TCG VM).
 *
 * Keys are files DIR/<id>.json, the same layout as tests/integration/exec-helper-test (either helper can serve
 * the other's store): {"id","alias","description","state","created","deletion_date","material"}, times in Unix
 * seconds, material base64; ciphertexts are "evst1:<key id>:<base64(nonce | ciphertext | tag)>", the AAD
 * "<key id>\0<volume id>". Every op of the protocol is implemented: describe, list, create, wrap, unwrap,
 * disable, enable, schedule-deletion, cancel-deletion; anything else is answered "unsupported".
 *
 * Options (Option.NAME=VALUE in the backend's section, the request's "options" object):
 *   dir=PATH      the key store, required (created if missing)
 *   delay=MS      answer after MS milliseconds (0..600000)
 *   hang=1        never answer: sleep until killed (the daemon's Timeout= does that)
 *   throttle=K    answer "throttled" to the first K attempts of each distinct request (same op, key and volume
 *                 id, or alias for create), then serve it: every caller sees exactly K throttled answers
 *   rate=R        a quota of R requests per second over all the helper processes of this store (sliding
 *                 window of one second); a request above it is answered "throttled"
 *   ops=OP,OP..   delay, hang, throttle and rate apply only to these ops (default: all)
 *   log=PATH      append one line per call, written with one write(2) when the call ends (when it starts for a
 *                 hang):  START END PID OP KEY VOLUME RESULT
 *                 START/END: CLOCK_MONOTONIC seconds with 6 decimals (END "-" for a hang), KEY the request's key
 *                 (alias for create), VOLUME the context's volume id ("-" when none), RESULT "ok", "hang" or the
 *                 error code ("throttled", "not-found"...). Fields never hold spaces (escaped as %20).
 * Counters and the quota live in DIR/.throttle-*, DIR/.rate, serialised with flock(DIR/.lock), as are creates
 * and lifecycle changes (aliases stay unique under concurrent creates).
 *
 * Usage, as the daemon runs it: evs-kms-test-helper OP < request.json, or evs-kms-test-helper serve (a
 * persistent helper, Persistent=yes: the handshake line, then one request line after another, each answered
 * with one line, until EOF; the option serve=no makes it answer the handshake "unsupported", as a helper
 * without the mode would). */

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>

#include <json-c/json.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#define REQUEST_MAX (64 * 1024)
#define NONCE_SIZE 12
#define TAG_SIZE 16
#define KEY_SIZE 32
#define PLAINTEXT_MAX 1024
#define RATE_MAX 100000

typedef struct request {
        const char *op;
        json_object *req, *opts;
        const char *key, *volume, *dir;
        bool knobs; /* delay/hang/throttle/rate apply to this op */
        struct timespec start;
} request;

static request R;

/* Built with -fsanitize=address (the sanitizer builds of scripts/test.sh): a one-shot helper's memory goes
 * with its process, and LeakSanitizer's report at exit would turn every answer into exit status 1 (a
 * protocol error for the daemon). UBSan and ASan's other checks stay on. */
const char *__asan_default_options(void);
__attribute__((visibility("default"), used)) const char *__asan_default_options(void) {
        return "detect_leaks=0";
}

static bool serving;      /* evs-kms-test-helper serve */
static jmp_buf next_request;

static const char *opt(const char *name) {
        json_object *v;

        if (!R.opts || !json_object_object_get_ex(R.opts, name, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

static long opt_num(const char *name, long min, long max) {
        const char *s = opt(name);
        char *end;
        long v;

        if (!s)
                return 0;
        errno = 0;
        v = strtol(s, &end, 10);
        if (errno || end == s || *end || v < min || v > max) {
                fprintf(stderr, "evs-kms-test-helper: option %s=%s: want %ld..%ld\n", name, s, min, max);
                return -1;
        }
        return v;
}

static const char *req_string(json_object *o, const char *name) {
        json_object *v;

        if (!o || !json_object_object_get_ex(o, name, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

/* One log field: no spaces, no control characters. */
static void log_field(char *buf, size_t *n, size_t max, const char *s) {
        if (!s || !*s)
                s = "-";
        for (; *s && *n + 4 < max; s++)
                if ((unsigned char) *s <= ' ' || *s == '%' || (unsigned char) *s == 0x7f)
                        *n += (size_t) snprintf(buf + *n, max - *n, "%%%02X", (unsigned char) *s);
                else
                        buf[(*n)++] = *s;
        buf[(*n)++] = ' ';
}

static void log_call(const char *result, bool ended) {
        const char *path = opt("log");
        struct timespec end;
        char line[4096];
        size_t n;
        int fd;

        if (!path)
                return;
        clock_gettime(CLOCK_MONOTONIC, &end);
        n = (size_t) snprintf(line, sizeof line, "%lld.%06ld ", (long long) R.start.tv_sec, R.start.tv_nsec / 1000);
        if (ended)
                n += (size_t) snprintf(line + n, sizeof line - n, "%lld.%06ld ", (long long) end.tv_sec,
                                       end.tv_nsec / 1000);
        else
                n += (size_t) snprintf(line + n, sizeof line - n, "- ");
        n += (size_t) snprintf(line + n, sizeof line - n, "%ld ", (long) getpid());
        log_field(line, &n, sizeof line - 600, R.op);
        log_field(line, &n, sizeof line - 400, R.key);
        log_field(line, &n, sizeof line - 200, R.volume);
        log_field(line, &n, sizeof line - 2, result);
        line[n - 1] = '\n';
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
                return;
        (void) !write(fd, line, n);
        close(fd);
}

static void emit(json_object *o) {
        const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);

        fputs(s, stdout);
        fputc('\n', stdout);
        fflush(stdout);
}

/* The answer is out: the next request, or the end of this process. */
_Noreturn static void done(void) {
        if (serving)
                longjmp(next_request, 1);
        exit(0);
}

_Noreturn static void reply(json_object *o) {
        log_call("ok", true);
        emit(o);
        json_object_put(o);
        done();
}

_Noreturn __attribute__((format(printf, 2, 3))) static void fail(const char *code, const char *fmt, ...) {
        json_object *o = json_object_new_object(), *e = json_object_new_object();
        char msg[1024];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        json_object_object_add(e, "code", json_object_new_string(code));
        json_object_object_add(e, "message", json_object_new_string(msg));
        json_object_object_add(o, "error", e);
        log_call(code, true);
        emit(o);
        json_object_put(o);
        done();
}

/* ---- base64 ---- */

static char *b64_encode(const uint8_t *p, size_t n) {
        char *s = malloc(4 * ((n + 2) / 3) + 1);

        if (!s)
                fail("invalid", "out of memory");
        EVP_EncodeBlock((unsigned char *) s, p, (int) n);
        return s;
}

/* Standard base64 with padding; -1 when it is not. */
static int b64_decode(const char *s, uint8_t **ret, size_t *ret_size) {
        size_t n = strlen(s), pad = 0;
        uint8_t *p;
        int r;

        if (n == 0 || n % 4 != 0)
                return -1;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];

                if (c == '=') {
                        if (i < n - 2)
                                return -1;
                        pad++;
                } else if (pad || !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                                    c == '+' || c == '/'))
                        return -1;
        }
        p = malloc(n / 4 * 3 + 1);
        if (!p)
                return -1;
        r = EVP_DecodeBlock(p, (const unsigned char *) s, (int) n);
        if (r < 0 || (size_t) r < pad) {
                free(p);
                return -1;
        }
        *ret = p;
        *ret_size = (size_t) r - pad;
        return 0;
}

/* ---- the store ---- */

static int lock_fd = -1;

static void store_lock(void) {
        char path[4096];

        if (lock_fd >= 0)
                return;
        snprintf(path, sizeof path, "%s/.lock", R.dir);
        lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (lock_fd < 0 || flock(lock_fd, LOCK_EX) < 0)
                fail("unavailable", "cannot lock %s: %m", path);
}

static void store_unlock(void) {
        if (lock_fd >= 0)
                close(lock_fd);
        lock_fd = -1;
}

static bool name_is_file_safe(const char *s) {
        if (!*s || strlen(s) > 200 || *s == '.')
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' ||
                      *s == '_' || *s == '.'))
                        return false;
        return true;
}

static long long key_int(json_object *k, const char *name) {
        json_object *v;

        if (!json_object_object_get_ex(k, name, &v) || !json_object_is_type(v, json_type_int))
                return -1;
        return json_object_get_int64(v);
}

static bool state_is(json_object *k, const char *state) {
        const char *s = req_string(k, "state");

        return s && strcmp(s, state) == 0;
}

static void key_set_state(json_object *k, const char *state) {
        json_object_object_add(k, "state", json_object_new_string(state));
}

static void store_save(json_object *k) {
        char path[4096], tmp[4200];
        const char *s = json_object_to_json_string_ext(k, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        size_t n = strlen(s);
        int fd;

        snprintf(path, sizeof path, "%s/%s.json", R.dir, req_string(k, "id"));
        snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long) getpid());
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, s, n) != (ssize_t) n || fsync(fd) < 0 || close(fd) < 0 || rename(tmp, path) < 0)
                fail("unavailable", "cannot write %s: %m", path);
}

/* A key whose deletion date has passed is destroyed now (its material dropped). */
static json_object *store_load_file(const char *path) {
        json_object *k = json_object_from_file(path);
        long long when;

        if (!k || !req_string(k, "id") || !req_string(k, "state"))
                return NULL;
        when = key_int(k, "deletion_date");
        if (state_is(k, "pending-deletion") && when >= 0 && when <= (long long) time(NULL)) {
                key_set_state(k, "destroyed");
                json_object_object_add(k, "material", NULL);
                store_lock();
                store_save(k);
        }
        return k;
}

static int cmp_names(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* All keys, sorted by file name; *ret_n set. */
static json_object **store_load_all(size_t *ret_n) {
        json_object **keys = NULL;
        char **names = NULL;
        size_t n = 0, m = 0;
        struct dirent *de;
        DIR *d = opendir(R.dir);

        if (!d)
                fail("unavailable", "cannot open the key store %s: %m", R.dir);
        while ((de = readdir(d))) {
                size_t l = strlen(de->d_name);

                if (de->d_name[0] == '.' || l < 6 || strcmp(de->d_name + l - 5, ".json") != 0)
                        continue;
                names = realloc(names, (n + 1) * sizeof *names);
                if (!names || !(names[n] = strdup(de->d_name)))
                        fail("invalid", "out of memory");
                n++;
        }
        closedir(d);
        if (n > 0)
                qsort(names, n, sizeof *names, cmp_names);
        keys = calloc(n + 1, sizeof *keys);
        if (!keys)
                fail("invalid", "out of memory");
        for (size_t i = 0; i < n; i++) {
                char path[4096];

                snprintf(path, sizeof path, "%s/%s", R.dir, names[i]);
                keys[m] = store_load_file(path);
                if (keys[m])
                        m++;
                free(names[i]);
        }
        free(names);
        *ret_n = m;
        return keys;
}

/* By id (a direct file look-up), else by alias. */
static json_object *store_find(const char *ref) {
        json_object **all, *found = NULL;
        size_t n;

        if (!ref || !*ref)
                fail("invalid", "request without a key");
        if (name_is_file_safe(ref)) {
                char path[4096];

                snprintf(path, sizeof path, "%s/%s.json", R.dir, ref);
                if (access(path, F_OK) == 0 && (found = store_load_file(path)))
                        return found;
        }
        all = store_load_all(&n);
        for (size_t i = 0; i < n; i++) {
                const char *alias = req_string(all[i], "alias");

                if (!found && ((alias && strcmp(alias, ref) == 0) || strcmp(req_string(all[i], "id"), ref) == 0))
                        found = json_object_get(all[i]);
                json_object_put(all[i]);
        }
        free(all);
        if (!found)
                fail("not-found", "no key %s", ref);
        return found;
}

static json_object *iso(long long t) {
        struct tm tm;
        time_t tt = (time_t) t;
        char s[64];

        if (t < 0 || !gmtime_r(&tt, &tm))
                return NULL;
        strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%SZ", &tm);
        return json_object_new_string(s);
}

static json_object *copy_string(json_object *k, const char *name) {
        const char *s = req_string(k, name);

        return s ? json_object_new_string(s) : NULL;
}

static json_object *public(json_object *k) {
        json_object *o = json_object_new_object();

        json_object_object_add(o, "id", copy_string(k, "id"));
        json_object_object_add(o, "alias", copy_string(k, "alias"));
        json_object_object_add(o, "description", copy_string(k, "description"));
        json_object_object_add(o, "state", copy_string(k, "state"));
        json_object_object_add(o, "created", iso(key_int(k, "created")));
        json_object_object_add(o, "deletion_date", iso(key_int(k, "deletion_date")));
        return o;
}

static void usable(json_object *k) {
        if (!state_is(k, "enabled"))
                fail(req_string(k, "state"), "key %s is %s", req_string(k, "id"), req_string(k, "state"));
}

static uint8_t *material(json_object *k) {
        const char *m = req_string(k, "material");
        uint8_t *p;
        size_t n;

        if (!m || b64_decode(m, &p, &n) < 0 || n != KEY_SIZE)
                fail("unavailable", "key %s has no usable material", req_string(k, "id"));
        return p;
}

static void random_bytes(void *p, size_t n) {
        if (getrandom(p, n, 0) != (ssize_t) n)
                fail("unavailable", "getrandom: %m");
}

/* ---- AES-256-GCM ---- */

static size_t aad_build(uint8_t *buf, size_t max, const char *id, const char *volume) {
        size_t a = strlen(id), b = strlen(volume);

        if (a + 1 + b > max)
                fail("invalid", "key id or volume id too long");
        memcpy(buf, id, a);
        buf[a] = 0;
        memcpy(buf + a + 1, volume, b);
        return a + 1 + b;
}

/* Encrypts (enc) or decrypts in..in+n into out; for decryption the tag follows the input. Returns false when the
 * tag does not authenticate. */
static bool gcm(bool enc, const uint8_t *key, const uint8_t *nonce, const uint8_t *aad, size_t aad_size,
                const uint8_t *in, size_t n, uint8_t *out, uint8_t *tag) {
        EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
        int l, ok;

        ok = c && EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE_SIZE, NULL) &&
             EVP_CipherInit_ex(c, NULL, NULL, key, nonce, enc) &&
             EVP_CipherUpdate(c, NULL, &l, aad, (int) aad_size) && EVP_CipherUpdate(c, out, &l, in, (int) n);
        if (ok && !enc)
                ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_SIZE, tag);
        if (ok)
                ok = EVP_CipherFinal_ex(c, out + l, &l);
        if (ok && enc)
                ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_SIZE, tag);
        EVP_CIPHER_CTX_free(c);
        return ok;
}

/* ---- the operations ---- */

static void op_create(void) {
        const char *alias = req_string(R.req, "alias"), *desc = req_string(R.req, "description");
        json_object *k = json_object_new_object(), **all;
        uint8_t id[8], mat[KEY_SIZE];
        char hex[2 * sizeof id + 4], *m;
        size_t n;

        if (alias && !*alias)
                alias = NULL;
        store_lock();
        if (alias) {
                all = store_load_all(&n);
                for (size_t i = 0; i < n; i++) {
                        const char *a = req_string(all[i], "alias");

                        if (a && strcmp(a, alias) == 0)
                                fail("exists", "alias %s is taken", alias);
                }
        }
        random_bytes(id, sizeof id);
        random_bytes(mat, sizeof mat);
        strcpy(hex, "tk-");
        for (size_t i = 0; i < sizeof id; i++)
                sprintf(hex + 3 + 2 * i, "%02x", id[i]);
        m = b64_encode(mat, sizeof mat);
        OPENSSL_cleanse(mat, sizeof mat);
        json_object_object_add(k, "id", json_object_new_string(hex));
        json_object_object_add(k, "alias", alias ? json_object_new_string(alias) : NULL);
        json_object_object_add(k, "description", desc && *desc ? json_object_new_string(desc) : NULL);
        json_object_object_add(k, "state", json_object_new_string("enabled"));
        json_object_object_add(k, "created", json_object_new_int64((int64_t) time(NULL)));
        json_object_object_add(k, "deletion_date", NULL);
        json_object_object_add(k, "material", json_object_new_string(m));
        store_save(k);
        store_unlock();
        reply(public(k));
}

static void op_list(void) {
        json_object *o = json_object_new_object(), *arr = json_object_new_array(), **all;
        size_t n;

        all = store_load_all(&n);
        for (size_t i = 0; i < n; i++)
                json_object_array_add(arr, public(all[i]));
        json_object_object_add(o, "keys", arr);
        reply(o);
}

static void op_wrap(void) {
        const char *pt_b64 = req_string(R.req, "plaintext"), *id;
        json_object *k = store_find(R.key), *o;
        uint8_t *pt, *key, *blob, aad[4096];
        size_t n, aad_size;
        char *b64, *ct;

        if (!R.volume)
                fail("invalid", "wrap without context.volume_id");
        if (!pt_b64 || b64_decode(pt_b64, &pt, &n) < 0 || n == 0 || n > PLAINTEXT_MAX)
                fail("invalid", "plaintext is not base64 of 1..%d bytes", PLAINTEXT_MAX);
        usable(k);
        id = req_string(k, "id");
        key = material(k);
        blob = malloc(NONCE_SIZE + n + TAG_SIZE);
        if (!blob)
                fail("invalid", "out of memory");
        random_bytes(blob, NONCE_SIZE);
        aad_size = aad_build(aad, sizeof aad, id, R.volume);
        if (!gcm(true, key, blob, aad, aad_size, pt, n, blob + NONCE_SIZE, blob + NONCE_SIZE + n))
                fail("unavailable", "AES-GCM encryption failed");
        OPENSSL_cleanse(pt, n);
        OPENSSL_cleanse(key, KEY_SIZE);
        b64 = b64_encode(blob, NONCE_SIZE + n + TAG_SIZE);
        if (asprintf(&ct, "evst1:%s:%s", id, b64) < 0)
                fail("invalid", "out of memory");
        o = json_object_new_object();
        json_object_object_add(o, "ciphertext", json_object_new_string(ct));
        reply(o);
}

static void op_unwrap(void) {
        const char *ct = req_string(R.req, "ciphertext"), *id;
        json_object *k = store_find(R.key), *o, *v;
        uint8_t *blob, *key, *pt, aad[4096];
        const char *p, *q;
        size_t n, aad_size;
        char *b64;

        if (!R.volume)
                fail("invalid", "unwrap without context.volume_id");
        if (!ct || strncmp(ct, "evst1:", 6) != 0 || !(q = strchr((p = ct + 6), ':')))
                fail("bad-ciphertext", "not a test helper ciphertext");
        id = req_string(k, "id");
        if ((size_t) (q - p) != strlen(id) || strncmp(p, id, strlen(id)) != 0)
                fail("wrong-key", "ciphertext belongs to key %.*s", (int) (q - p), p);
        usable(k);
        if (b64_decode(q + 1, &blob, &n) < 0 || n < NONCE_SIZE + TAG_SIZE + 1)
                fail("bad-ciphertext", "ciphertext fails authentication");
        n -= NONCE_SIZE + TAG_SIZE;
        key = material(k);
        pt = malloc(n + 16);
        if (!pt)
                fail("invalid", "out of memory");
        aad_size = aad_build(aad, sizeof aad, id, R.volume);
        if (!gcm(false, key, blob, aad, aad_size, blob + NONCE_SIZE, n, pt, blob + NONCE_SIZE + n))
                fail("bad-ciphertext", "ciphertext fails authentication");
        OPENSSL_cleanse(key, KEY_SIZE);
        b64 = b64_encode(pt, n);
        OPENSSL_cleanse(pt, n);
        o = json_object_new_object();
        json_object_object_add(o, "plaintext", json_object_new_string(b64));
        log_call("ok", true);
        emit(o);
        OPENSSL_cleanse(b64, strlen(b64));
        free(b64);
        v = json_object_object_get(o, "plaintext");
        OPENSSL_cleanse((char *) json_object_get_string(v), (size_t) json_object_get_string_len(v));
        json_object_put(o);
        done();
}

static void op_lifecycle(void) {
        json_object *k;
        long long days;

        store_lock();
        k = store_find(R.key);
        if (state_is(k, "destroyed"))
                fail("destroyed", "key %s is destroyed", req_string(k, "id"));
        if (strcmp(R.op, "disable") == 0 || strcmp(R.op, "enable") == 0) {
                if (state_is(k, "pending-deletion"))
                        fail("invalid-state", "key %s is pending deletion", req_string(k, "id"));
                key_set_state(k, strcmp(R.op, "enable") == 0 ? "enabled" : "disabled");
                store_save(k);
                reply(json_object_new_object());
        }
        if (strcmp(R.op, "schedule-deletion") == 0) {
                json_object *d;

                if (state_is(k, "pending-deletion"))
                        fail("invalid-state", "key %s is already pending deletion", req_string(k, "id"));
                if (!json_object_object_get_ex(R.req, "days", &d) || !json_object_is_type(d, json_type_int) ||
                    (days = json_object_get_int64(d)) < 1 || days > 1096)
                        fail("invalid", "days must be a number 1..1096");
                key_set_state(k, "pending-deletion");
                json_object_object_add(k, "deletion_date", json_object_new_int64((int64_t) time(NULL) + days * 86400));
                store_save(k);
                reply(public(k));
        }
        /* cancel-deletion */
        if (!state_is(k, "pending-deletion"))
                fail("invalid-state", "key %s is not pending deletion", req_string(k, "id"));
        key_set_state(k, "disabled");
        json_object_object_add(k, "deletion_date", NULL);
        store_save(k);
        reply(json_object_new_object());
}

/* ---- the knobs ---- */

static bool op_listed(const char *list, const char *op) {
        size_t l = strlen(op);

        for (const char *p = list; *p;) {
                const char *e = strchrnul(p, ',');

                if ((size_t) (e - p) == l && strncmp(p, op, l) == 0)
                        return true;
                p = *e ? e + 1 : e;
        }
        return false;
}

static uint64_t fnv1a(const char *s, uint64_t h) {
        for (; *s; s++)
                h = (h ^ (uint8_t) *s) * 0x100000001b3ULL;
        return (h ^ 0xff) * 0x100000001b3ULL;
}

/* throttle=K: the first K attempts of this request are throttled. */
static void knob_throttle(long k) {
        char path[4096], buf[32] = "";
        uint64_t h = fnv1a(R.op, 0xcbf29ce484222325ULL);
        long seen = 0;
        FILE *f;

        h = fnv1a(R.key ?: "-", h);
        h = fnv1a(R.volume ?: "-", h);
        snprintf(path, sizeof path, "%s/.throttle-%016" PRIx64, R.dir, h);
        store_lock();
        f = fopen(path, "re");
        if (f) {
                if (fgets(buf, sizeof buf, f))
                        seen = strtol(buf, NULL, 10);
                fclose(f);
        }
        if (seen < k) {
                f = fopen(path, "we");
                if (f) {
                        fprintf(f, "%ld\n", seen + 1);
                        fclose(f);
                }
                store_unlock();
                fail("throttled", "quota exceeded (throttle=%ld, attempt %ld)", k, seen + 1);
        }
        store_unlock();
}

/* rate=R: at most R request starts within any second, over all processes. DIR/.rate holds their times (ns). */
static void knob_rate(long rate) {
        char path[4096];
        uint64_t now = (uint64_t) R.start.tv_sec * 1000000000ULL + (uint64_t) R.start.tv_nsec, *t;
        size_t n = 0, kept = 0;
        FILE *f;

        t = calloc((size_t) rate + 1, sizeof *t);
        if (!t)
                fail("invalid", "out of memory");
        snprintf(path, sizeof path, "%s/.rate", R.dir);
        store_lock();
        f = fopen(path, "re");
        if (f) {
                unsigned long long v;

                while (fscanf(f, "%llu", &v) == 1)
                        if ((uint64_t) v + 1000000000ULL > now && v <= now && kept < (size_t) rate)
                                t[kept++] = (uint64_t) v;
                fclose(f);
        }
        if (kept >= (size_t) rate) {
                store_unlock();
                fail("throttled", "quota of %ld requests per second exceeded", rate);
        }
        t[kept++] = now;
        f = fopen(path, "we");
        if (f) {
                for (n = 0; n < kept; n++)
                        fprintf(f, "%" PRIu64 "\n", t[n]);
                fclose(f);
        }
        store_unlock();
        free(t);
}

static void knobs(void) {
        long delay = opt_num("delay", 0, 600000), throttle = opt_num("throttle", 0, 1000000),
             rate = opt_num("rate", 0, RATE_MAX), hang = opt_num("hang", 0, 1);

        if (delay < 0 || throttle < 0 || rate < 0 || hang < 0)
                fail("invalid", "bad test helper option (see its stderr)");
        if (rate > 0)
                knob_rate(rate);
        if (throttle > 0)
                knob_throttle(throttle);
        if (hang) {
                log_call("hang", false);
                for (;;)
                        pause();
        }
        if (delay > 0) {
                struct timespec ts = { .tv_sec = delay / 1000, .tv_nsec = (delay % 1000) * 1000000L };

                while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                        ;
        }
}

/* Answers one request (@buf, @n bytes) for @op; never returns. */
_Noreturn static void handle(const char *op, char *buf, size_t n) {
        const char *ops;
        json_object *ctx, *v;

        buf[n] = 0;
        R.req = json_tokener_parse(buf);
        OPENSSL_cleanse(buf, n);
        if (!R.req || !json_object_is_type(R.req, json_type_object))
                fail("invalid", "the request is not a JSON object");
        if (json_object_object_get_ex(R.req, "options", &v) && json_object_is_type(v, json_type_object))
                R.opts = v;
        if (!op)
                op = req_string(R.req, "op") ?: "";
        R.op = op;
        if (!json_object_object_get_ex(R.req, "version", &v) || json_object_get_int(v) != 1 ||
            !req_string(R.req, "op") || strcmp(req_string(R.req, "op"), op) != 0)
                fail("invalid", "bad request envelope (version 1, op = argv[1])");
        R.key = strcmp(op, "create") == 0 ? req_string(R.req, "alias") : req_string(R.req, "key");
        if (json_object_object_get_ex(R.req, "context", &ctx))
                R.volume = req_string(ctx, "volume_id");
        R.dir = opt("dir");
        if (!R.dir || R.dir[0] != '/')
                fail("invalid", "option dir= (an absolute path) is required");
        if (mkdir(R.dir, 0700) < 0 && errno != EEXIST)
                fail("unavailable", "cannot create %s: %m", R.dir);

        ops = opt("ops");
        R.knobs = !ops || op_listed(ops, op);
        if (R.knobs)
                knobs();

        if (strcmp(op, "describe") == 0)
                reply(public(store_find(R.key)));
        if (strcmp(op, "list") == 0)
                op_list();
        if (strcmp(op, "create") == 0)
                op_create();
        if (strcmp(op, "wrap") == 0)
                op_wrap();
        if (strcmp(op, "unwrap") == 0)
                op_unwrap();
        if (strcmp(op, "disable") == 0 || strcmp(op, "enable") == 0 || strcmp(op, "schedule-deletion") == 0 ||
            strcmp(op, "cancel-deletion") == 0)
                op_lifecycle();
        fail("unsupported", "operation %s is not implemented", op);
}

/* The next line of stdin (without its newline) into @buf; false at EOF. A line longer than REQUEST_MAX is
 * cut (and fails to parse). */
static bool read_line(char *buf, size_t *ret_n) {
        static char in[REQUEST_MAX];
        static size_t have = 0;
        size_t n = 0;

        for (;;) {
                char *nl = memchr(in, '\n', have);
                ssize_t k;

                if (nl || have == sizeof in) {
                        size_t len = nl ? (size_t) (nl - in) : have;

                        n = len < REQUEST_MAX ? len : REQUEST_MAX;
                        memcpy(buf, in, n);
                        have -= nl ? len + 1 : len;
                        memmove(in, in + (nl ? len + 1 : len), have);
                        OPENSSL_cleanse(in + have, sizeof in - have);
                        *ret_n = n;
                        return true;
                }
                k = read(STDIN_FILENO, in + have, sizeof in - have);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0) {
                        if (have == 0)
                                return false;
                        memcpy(buf, in, have); /* a last line without its newline */
                        *ret_n = have;
                        OPENSSL_cleanse(in, have);
                        have = 0;
                        return true;
                }
                have += (size_t) k;
        }
}

/* evs-kms-test-helper serve: the handshake, then a request per line until EOF. */
static int serve(void) {
        static char buf[REQUEST_MAX + 1];
        json_object *hello, *v;
        size_t n;

        serving = true;
        if (!read_line(buf, &n))
                return 0;
        buf[n] = 0;
        hello = json_tokener_parse(buf);
        if (!hello || !json_object_is_type(hello, json_type_object) ||
            !json_object_object_get_ex(hello, "op", &v) || strcmp(json_object_get_string(v), "serve") != 0) {
                fprintf(stderr, "evs-kms-test-helper: the first line is not the serve handshake\n");
                return 1;
        }
        if (json_object_object_get_ex(hello, "options", &v) && json_object_is_type(v, json_type_object))
                R.opts = v;
        if (opt("serve") && strcmp(opt("serve"), "no") == 0) {
                R.op = "serve";
                serving = false;
                fail("unsupported", "operation serve is not implemented");
        }
        R.opts = NULL;
        v = json_object_new_object();
        json_object_object_add(v, "serve", json_object_new_int(1));
        emit(v);
        json_object_put(v);
        json_object_put(hello);

        setjmp(next_request);
        json_object_put(R.req);
        R = (request) {};
        if (!read_line(buf, &n))
                return 0;
        clock_gettime(CLOCK_MONOTONIC, &R.start);
        handle(NULL, buf, n);
}

int main(int argc, char *argv[]) {
        static char buf[REQUEST_MAX + 1];
        const char *op = argc > 1 ? argv[1] : "";
        size_t n = 0;
        ssize_t k;

        clock_gettime(CLOCK_MONOTONIC, &R.start);
        if (strcmp(op, "serve") == 0)
                return serve();
        R.op = op;
        while (n < REQUEST_MAX && (k = read(STDIN_FILENO, buf + n, REQUEST_MAX - n)) != 0) {
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        fail("invalid", "cannot read the request: %m");
                }
                n += (size_t) k;
        }
        handle(op, buf, n);
}
