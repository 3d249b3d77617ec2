/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The PKCS#11 backend: CMKs are AES-256 secret keys inside an HSM token, reached through any
 * PKCS#11 module loaded with dlopen(). Wrap and unwrap run inside the token (CKM_AES_GCM).
 *
 * Configuration ([Backend NAME], Type=pkcs11):
 *   Module=PATH      the PKCS#11 module (absolute path), required
 *   TokenLabel=L     the token, chosen by label (never by slot index), required
 *   PinFile=P        the user PIN: an absolute path of a file readable only by its owner, or a bare
 *                    credential name looked up in $CREDENTIALS_DIRECTORY; required
 *
 * Keys: CKO_SECRET_KEY/CKK_AES objects with a non-empty CKA_ID. A key's id is the hex of its CKA_ID
 * (created keys get 16 random bytes), its alias is CKA_LABEL. Created keys are token objects,
 * private, sensitive, non-extractable, CKA_ENCRYPT and CKA_DECRYPT true, CKA_WRAP/CKA_UNWRAP false.
 *
 * State mapping: CKA_ENCRYPT and CKA_DECRYPT both true -> enabled, otherwise disabled. Disable sets
 * both false, so the token itself refuses the key (CKR_KEY_FUNCTION_NOT_PERMITTED). PKCS#11 has no
 * scheduled deletion: those verbs are -EOPNOTSUPP (never emulated locally). A key removed from the
 * token is simply not found. No description and no creation time are kept.
 *
 * Wrapped format (all binary):
 *   "EVP1" | version 0x01 | id length (1 byte) | CKA_ID | IV (12) | ciphertext || tag (16)
 * AES-GCM with a 128-bit tag; the AAD is the header (magic up to the end of the id) followed by the
 * context (the volume id), so neither the key id nor the volume can be swapped.
 *
 * The module is initialised once per process (shared by instances using the same module, reference
 * counted). Each instance keeps one R/W session, opened and logged in lazily, reused, and re-opened
 * once when the module reports it closed (CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED,
 * CKR_USER_NOT_LOGGED_IN, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT). Operations on one instance
 * are serialised with a mutex. Note: PKCS#11 login state is per process and token, so a second
 * instance on a token that is already logged in cannot verify its own PIN. */

#include <ctype.h>
#include <dlfcn.h>
#include <pthread.h>
#include <sys/stat.h>

#include <p11-kit/pkcs11.h>

#include "backends.h"
#include "crypto.h"
#include "fileio.h"

#define WRAP_MAGIC "EVP1"
#define WRAP_VERSION 1
#define KEY_ID_SIZE 16U
#define KEY_ID_MAX 64U
#define GCM_IV_SIZE 12U
#define GCM_TAG_BITS 128U
#define PIN_MAX 256U
#define FIND_BATCH 64U

/* ---- the module, shared by every instance of the process ---- */

typedef struct p11_module {
        struct p11_module *next;
        char *path;
        void *dl;
        CK_FUNCTION_LIST_PTR f;
        unsigned n_ref;
        bool finalize; /* we initialised it */
} p11_module;

static pthread_mutex_t modules_lock = PTHREAD_MUTEX_INITIALIZER;
static p11_module *modules = NULL;

typedef struct pkcs11_backend {
        kms_backend base;
        char *module_path;
        char *token_label;
        char *pin_path; /* resolved at open */
        pthread_mutex_t lock;
        p11_module *module;
        CK_SLOT_ID slot;
        CK_SESSION_HANDLE session;
        bool have_session;
        CK_RV last_rv;
} pkcs11_backend;

static pkcs11_backend *P11(kms_backend *b) {
        return (pkcs11_backend *) b;
}

#define CKR_NAME(x) { x, #x }
static const struct {
        CK_RV rv;
        const char *name;
} ckr_names[] = {
        CKR_NAME(CKR_OK),
        CKR_NAME(CKR_CANCEL),
        CKR_NAME(CKR_HOST_MEMORY),
        CKR_NAME(CKR_SLOT_ID_INVALID),
        CKR_NAME(CKR_GENERAL_ERROR),
        CKR_NAME(CKR_FUNCTION_FAILED),
        CKR_NAME(CKR_ARGUMENTS_BAD),
        CKR_NAME(CKR_NO_EVENT),
        CKR_NAME(CKR_NEED_TO_CREATE_THREADS),
        CKR_NAME(CKR_CANT_LOCK),
        CKR_NAME(CKR_ATTRIBUTE_READ_ONLY),
        CKR_NAME(CKR_ATTRIBUTE_SENSITIVE),
        CKR_NAME(CKR_ATTRIBUTE_TYPE_INVALID),
        CKR_NAME(CKR_ATTRIBUTE_VALUE_INVALID),
        CKR_NAME(CKR_DATA_INVALID),
        CKR_NAME(CKR_DATA_LEN_RANGE),
        CKR_NAME(CKR_DEVICE_ERROR),
        CKR_NAME(CKR_DEVICE_MEMORY),
        CKR_NAME(CKR_DEVICE_REMOVED),
        CKR_NAME(CKR_ENCRYPTED_DATA_INVALID),
        CKR_NAME(CKR_ENCRYPTED_DATA_LEN_RANGE),
        CKR_NAME(CKR_FUNCTION_CANCELED),
        CKR_NAME(CKR_FUNCTION_NOT_PARALLEL),
        CKR_NAME(CKR_FUNCTION_NOT_SUPPORTED),
        CKR_NAME(CKR_KEY_HANDLE_INVALID),
        CKR_NAME(CKR_KEY_SIZE_RANGE),
        CKR_NAME(CKR_KEY_TYPE_INCONSISTENT),
        CKR_NAME(CKR_KEY_NOT_NEEDED),
        CKR_NAME(CKR_KEY_CHANGED),
        CKR_NAME(CKR_KEY_NEEDED),
        CKR_NAME(CKR_KEY_INDIGESTIBLE),
        CKR_NAME(CKR_KEY_FUNCTION_NOT_PERMITTED),
        CKR_NAME(CKR_KEY_NOT_WRAPPABLE),
        CKR_NAME(CKR_KEY_UNEXTRACTABLE),
        CKR_NAME(CKR_MECHANISM_INVALID),
        CKR_NAME(CKR_MECHANISM_PARAM_INVALID),
        CKR_NAME(CKR_OBJECT_HANDLE_INVALID),
        CKR_NAME(CKR_OPERATION_ACTIVE),
        CKR_NAME(CKR_OPERATION_NOT_INITIALIZED),
        CKR_NAME(CKR_PIN_INCORRECT),
        CKR_NAME(CKR_PIN_INVALID),
        CKR_NAME(CKR_PIN_LEN_RANGE),
        CKR_NAME(CKR_PIN_EXPIRED),
        CKR_NAME(CKR_PIN_LOCKED),
        CKR_NAME(CKR_SESSION_CLOSED),
        CKR_NAME(CKR_SESSION_COUNT),
        CKR_NAME(CKR_SESSION_HANDLE_INVALID),
        CKR_NAME(CKR_SESSION_PARALLEL_NOT_SUPPORTED),
        CKR_NAME(CKR_SESSION_READ_ONLY),
        CKR_NAME(CKR_SESSION_EXISTS),
        CKR_NAME(CKR_SESSION_READ_ONLY_EXISTS),
        CKR_NAME(CKR_SESSION_READ_WRITE_SO_EXISTS),
        CKR_NAME(CKR_TEMPLATE_INCOMPLETE),
        CKR_NAME(CKR_TEMPLATE_INCONSISTENT),
        CKR_NAME(CKR_TOKEN_NOT_PRESENT),
        CKR_NAME(CKR_TOKEN_NOT_RECOGNIZED),
        CKR_NAME(CKR_TOKEN_WRITE_PROTECTED),
        CKR_NAME(CKR_USER_ALREADY_LOGGED_IN),
        CKR_NAME(CKR_USER_NOT_LOGGED_IN),
        CKR_NAME(CKR_USER_PIN_NOT_INITIALIZED),
        CKR_NAME(CKR_USER_TYPE_INVALID),
        CKR_NAME(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
        CKR_NAME(CKR_USER_TOO_MANY_TYPES),
        CKR_NAME(CKR_BUFFER_TOO_SMALL),
        CKR_NAME(CKR_CRYPTOKI_NOT_INITIALIZED),
        CKR_NAME(CKR_CRYPTOKI_ALREADY_INITIALIZED),
        CKR_NAME(CKR_FUNCTION_REJECTED),
};

static const char *ckr_name(CK_RV rv) {
        static _Thread_local char buf[32];

        for (size_t i = 0; i < ELEMENTSOF(ckr_names); i++)
                if (ckr_names[i].rv == rv)
                        return ckr_names[i].name;
        snprintf(buf, sizeof buf, "CKR_0x%08lX", (unsigned long) rv);
        return buf;
}

/* The kms.h errno for a PKCS#11 return value (callers refine the context-dependent ones). */
static int ckr_to_errno(CK_RV rv) {
        switch (rv) {
        case CKR_OK:
                return 0;
        case CKR_HOST_MEMORY:
                return -ENOMEM;
        case CKR_PIN_INCORRECT:
        case CKR_PIN_INVALID:
        case CKR_PIN_LEN_RANGE:
        case CKR_PIN_EXPIRED:
        case CKR_PIN_LOCKED:
        case CKR_USER_PIN_NOT_INITIALIZED:
        case CKR_USER_NOT_LOGGED_IN:
        case CKR_DEVICE_ERROR:
        case CKR_DEVICE_MEMORY:
        case CKR_DEVICE_REMOVED:
        case CKR_TOKEN_NOT_PRESENT:
        case CKR_TOKEN_NOT_RECOGNIZED:
        case CKR_SLOT_ID_INVALID:
        case CKR_SESSION_CLOSED:
        case CKR_SESSION_COUNT:
        case CKR_SESSION_HANDLE_INVALID:
        case CKR_CRYPTOKI_NOT_INITIALIZED:
        case CKR_FUNCTION_CANCELED:
                return -EHOSTDOWN;
        case CKR_KEY_FUNCTION_NOT_PERMITTED:
                return -EKEYREVOKED;
        case CKR_ENCRYPTED_DATA_INVALID:
        case CKR_ENCRYPTED_DATA_LEN_RANGE:
                return -EBADMSG;
        case CKR_OBJECT_HANDLE_INVALID:
        case CKR_KEY_HANDLE_INVALID:
                return -ENOENT;
        case CKR_ATTRIBUTE_READ_ONLY:
        case CKR_MECHANISM_INVALID:
        case CKR_FUNCTION_NOT_SUPPORTED:
        case CKR_TOKEN_WRITE_PROTECTED:
        case CKR_KEY_SIZE_RANGE:
                return -EOPNOTSUPP;
        case CKR_ARGUMENTS_BAD:
        case CKR_ATTRIBUTE_VALUE_INVALID:
        case CKR_ATTRIBUTE_TYPE_INVALID:
        case CKR_TEMPLATE_INCOMPLETE:
        case CKR_TEMPLATE_INCONSISTENT:
        case CKR_MECHANISM_PARAM_INVALID:
        case CKR_DATA_LEN_RANGE:
                return -EINVAL;
        default:
                return -EIO;
        }
}

static bool ckr_session_gone(CK_RV rv) {
        return rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED || rv == CKR_USER_NOT_LOGGED_IN ||
               rv == CKR_DEVICE_REMOVED || rv == CKR_TOKEN_NOT_PRESENT;
}

/* Records @rv and a reason "WHAT: CKR_NAME". */
static int p11_fail(pkcs11_backend *p, CK_RV rv, const char *what) {
        p->last_rv = rv;
        return kms_backend_set_error(&p->base, ckr_to_errno(rv), "%s: %s (token '%s')", what, ckr_name(rv),
                                     p->token_label);
}

static void module_unref(p11_module *m) {
        if (!m)
                return;
        pthread_mutex_lock(&modules_lock);
        if (--m->n_ref > 0) {
                pthread_mutex_unlock(&modules_lock);
                return;
        }
        for (p11_module **i = &modules; *i; i = &(*i)->next)
                if (*i == m) {
                        *i = m->next;
                        break;
                }
        pthread_mutex_unlock(&modules_lock);

        if (m->finalize)
                (void) m->f->C_Finalize(NULL);
        (void) dlclose(m->dl);
        free(m->path);
        free(m);
}

static int module_ref(pkcs11_backend *p) {
        CK_C_GetFunctionList get;
        CK_C_INITIALIZE_ARGS args = { .flags = CKF_OS_LOCKING_OK };
        p11_module *m;
        CK_RV rv;
        int r = 0;

        if (p->module)
                return 0;

        pthread_mutex_lock(&modules_lock);
        for (m = modules; m; m = m->next)
                if (streq(m->path, p->module_path)) {
                        m->n_ref++;
                        p->module = m;
                        goto out;
                }

        m = calloc(1, sizeof *m);
        if (!m || !(m->path = strdup(p->module_path))) {
                free(m);
                r = -ENOMEM;
                goto out;
        }
        m->dl = dlopen(p->module_path, RTLD_NOW | RTLD_LOCAL);
        if (!m->dl) {
                r = kms_backend_set_error(&p->base, -EHOSTDOWN, "cannot load PKCS#11 module %s: %s", p->module_path,
                                          dlerror());
                goto fail;
        }
        get = (CK_C_GetFunctionList) dlsym(m->dl, "C_GetFunctionList");
        if (!get || get(&m->f) != CKR_OK || !m->f) {
                r = kms_backend_set_error(&p->base, -EHOSTDOWN, "%s is not a PKCS#11 module (no C_GetFunctionList)",
                                          p->module_path);
                goto fail;
        }
        rv = m->f->C_Initialize(&args);
        if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
                r = kms_backend_set_error(&p->base, ckr_to_errno(rv) == -ENOMEM ? -ENOMEM : -EHOSTDOWN,
                                          "C_Initialize of %s failed: %s", p->module_path, ckr_name(rv));
                goto fail;
        }
        /* Someone else in the process initialised it: leave C_Finalize to them. */
        m->finalize = rv == CKR_OK;
        m->n_ref = 1;
        m->next = modules;
        modules = m;
        p->module = m;
        goto out;

fail:
        if (m->dl)
                (void) dlclose(m->dl);
        free(m->path);
        free(m);
out:
        pthread_mutex_unlock(&modules_lock);
        return r;
}

static void p11_close_session(pkcs11_backend *p) {
        if (p->have_session)
                (void) p->module->f->C_CloseSession(p->session);
        p->have_session = false;
}

/* Finds the slot whose token has our label. */
static int find_slot(pkcs11_backend *p, CK_SLOT_ID *ret) {
        CK_FUNCTION_LIST_PTR f = p->module->f;
        _cleanup_free_ CK_SLOT_ID *slots = NULL;
        _cleanup_free_ char *seen = NULL;
        CK_ULONG n = 0;
        size_t n_found = 0, seen_len = 0;
        CK_SLOT_ID found = 0;
        CK_RV rv;

        rv = f->C_GetSlotList(CK_TRUE, NULL, &n);
        if (rv != CKR_OK)
                return p11_fail(p, rv, "C_GetSlotList");
        slots = calloc(MAX(n, (CK_ULONG) 1), sizeof(CK_SLOT_ID));
        if (!slots)
                return -ENOMEM;
        rv = f->C_GetSlotList(CK_TRUE, slots, &n);
        if (rv != CKR_OK)
                return p11_fail(p, rv, "C_GetSlotList");

        for (CK_ULONG i = 0; i < n; i++) {
                CK_TOKEN_INFO info;
                size_t len;
                char *s;

                if (f->C_GetTokenInfo(slots[i], &info) != CKR_OK)
                        continue;
                len = sizeof info.label;
                while (len > 0 && (info.label[len - 1] == ' ' || info.label[len - 1] == 0))
                        len--;
                if (len == strlen(p->token_label) && memcmp(info.label, p->token_label, len) == 0) {
                        found = slots[i];
                        n_found++;
                }
                s = realloc(seen, seen_len + len + 5);
                if (!s)
                        return -ENOMEM;
                seen = s;
                seen_len += (size_t) sprintf(seen + seen_len, "%s'%.*s'", seen_len > 0 ? ", " : "", (int) len,
                                             (const char *) info.label);
        }

        if (n_found == 0)
                return kms_backend_set_error(&p->base, -EHOSTDOWN, "no token labelled '%s' in %s (tokens present: %s)",
                                             p->token_label, p->module_path, seen ? seen : "none");
        if (n_found > 1)
                return kms_backend_set_error(&p->base, -EINVAL, "%zu tokens are labelled '%s' in %s", n_found,
                                             p->token_label, p->module_path);
        *ret = found;
        return 0;
}

static int read_pin(pkcs11_backend *p, secret **ret) {
        _cleanup_(secret_freep) secret *pin = NULL;
        struct stat st;
        char *buf = NULL;
        size_t size, buf_size;
        int r;

        if (stat(p->pin_path, &st) < 0)
                return kms_backend_set_error(&p->base, -EINVAL, "cannot read PIN file %s: %s", p->pin_path,
                                             strerror(errno));
        if (!p->base.ctx || !p->base.ctx->credentials_dir ||
            strncmp(p->pin_path, p->base.ctx->credentials_dir, strlen(p->base.ctx->credentials_dir)) != 0)
                if (st.st_mode & 0077)
                        return kms_backend_set_error(
                                &p->base, -EINVAL,
                                "PIN file %s is accessible by group or others (mode %04o); make it 0400", p->pin_path,
                                (unsigned) (st.st_mode & 07777));

        r = read_full_file_secure(p->pin_path, PIN_MAX, &buf, &size);
        if (r < 0)
                return kms_backend_set_error(&p->base, -EINVAL, "cannot read PIN file %s: %s", p->pin_path,
                                             strerror(-r));
        buf_size = size;
        while (size > 0 && (buf[size - 1] == '\n' || buf[size - 1] == '\r'))
                size--;
        if (size == 0) {
                erase_and_free(buf, buf_size);
                return kms_backend_set_error(&p->base, -EINVAL, "PIN file %s is empty", p->pin_path);
        }
        r = secret_new_copy(buf, size, &pin);
        erase_and_free(buf, buf_size);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(pin);
        return 0;
}

/* Opens and logs in the session unless one is open. */
static int p11_ensure_session(pkcs11_backend *p) {
        _cleanup_(secret_freep) secret *pin = NULL;
        CK_FUNCTION_LIST_PTR f;
        CK_SESSION_HANDLE s;
        CK_RV rv;
        int r;

        if (p->have_session)
                return 0;
        r = module_ref(p);
        if (r < 0)
                return r;
        f = p->module->f;
        r = find_slot(p, &p->slot);
        if (r < 0)
                return r;
        r = read_pin(p, &pin);
        if (r < 0)
                return r;

        rv = f->C_OpenSession(p->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s);
        if (rv != CKR_OK)
                return p11_fail(p, rv, "C_OpenSession");
        rv = f->C_Login(s, CKU_USER, pin->data, pin->size);
        if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
                (void) f->C_CloseSession(s);
                if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LOCKED || rv == CKR_PIN_EXPIRED || rv == CKR_PIN_INVALID ||
                    rv == CKR_PIN_LEN_RANGE)
                        return kms_backend_set_error(&p->base, -EHOSTDOWN, "token '%s' refused the PIN from %s: %s",
                                                     p->token_label, p->pin_path, ckr_name(rv));
                return p11_fail(p, rv, "C_Login");
        }
        p->session = s;
        p->have_session = true;
        return 0;
}

/* Runs @op with a logged-in session, re-opening the session once if the module reports it gone. */
static int p11_run(pkcs11_backend *p, int (*op)(pkcs11_backend *p, void *userdata), void *userdata) {
        int r;

        pthread_mutex_lock(&p->lock);
        for (unsigned attempt = 0;; attempt++) {
                r = p11_ensure_session(p);
                if (r < 0)
                        break;
                p->last_rv = CKR_OK;
                r = op(p, userdata);
                if (r >= 0 || attempt > 0 || !ckr_session_gone(p->last_rv))
                        break;
                p11_close_session(p);
        }
        pthread_mutex_unlock(&p->lock);
        return r;
}

/* ---- open/free ---- */

static int pkcs11_open(const kms_backend_config *cfg, const kms_context *ctx, kms_backend **ret, char **ret_error) {
        static const char *const known[] = { "Module", "TokenLabel", "PinFile", NULL };
        const kms_setting *module, *label, *pin;
        pkcs11_backend *p;
        int r;

        r = kms_config_check_known(cfg, known, ret_error);
        if (r < 0)
                return r;

        module = kms_config_find(cfg, "Module");
        label = kms_config_find(cfg, "TokenLabel");
        pin = kms_config_find(cfg, "PinFile");
        if (!module || !label || !pin)
                return kms_config_error(ret_error, NULL,
                                        "[Backend %s]: Type=pkcs11 needs Module=, TokenLabel= and PinFile=", cfg->name);
        if (module->value[0] != '/')
                return kms_config_error(ret_error, module, "Module= must be an absolute path: %s", module->value);
        if (isempty(label->value) || strlen(label->value) > 32)
                return kms_config_error(ret_error, label, "TokenLabel= must be 1 to 32 bytes: '%s'", label->value);
        if (isempty(pin->value) || (pin->value[0] != '/' && strchr(pin->value, '/')) || streq(pin->value, ".") ||
            streq(pin->value, ".."))
                return kms_config_error(ret_error, pin,
                                        "PinFile= must be an absolute path or a credential name: '%s'", pin->value);
        if (pin->value[0] != '/' && !ctx->credentials_dir)
                return kms_config_error(ret_error, pin,
                                        "PinFile=%s names a credential, but $CREDENTIALS_DIRECTORY is not set",
                                        pin->value);

        p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        pthread_mutex_init(&p->lock, NULL);
        p->module_path = strdup(module->value);
        p->token_label = strdup(label->value);
        if (pin->value[0] == '/')
                p->pin_path = strdup(pin->value);
        else if (asprintf(&p->pin_path, "%s/%s", ctx->credentials_dir, pin->value) < 0)
                p->pin_path = NULL;
        if (!p->module_path || !p->token_label || !p->pin_path) {
                free(p->module_path);
                free(p->token_label);
                free(p->pin_path);
                pthread_mutex_destroy(&p->lock);
                free(p);
                return -ENOMEM;
        }
        *ret = &p->base;
        return 0;
}

static void pkcs11_free(kms_backend *b) {
        pkcs11_backend *p = P11(b);

        if (p->module) {
                p11_close_session(p);
                module_unref(p->module);
        }
        free(p->module_path);
        free(p->token_label);
        free(p->pin_path);
        pthread_mutex_destroy(&p->lock);
        free(p);
}

/* ---- objects ---- */

static int hex_decode(const char *s, uint8_t *buf, size_t max, size_t *ret_size) {
        size_t n = strlen(s);

        if (n == 0 || n % 2 != 0 || n / 2 > max)
                return -EINVAL;
        for (size_t i = 0; i < n / 2; i++) {
                unsigned v;

                if (!isxdigit((unsigned char) s[2 * i]) || !isxdigit((unsigned char) s[2 * i + 1]) ||
                    sscanf(s + 2 * i, "%2x", &v) != 1)
                        return -EINVAL;
                buf[i] = (uint8_t) v;
        }
        *ret_size = n / 2;
        return 0;
}

static char *hex_encode(const uint8_t *p, size_t n) {
        char *s = malloc(2 * n + 1);

        if (!s)
                return NULL;
        for (size_t i = 0; i < n; i++)
                sprintf(s + 2 * i, "%02x", p[i]);
        s[2 * n] = 0;
        return s;
}

/* Finds up to @max AES secret keys matching the extra attribute (if any). */
static int find_keys(pkcs11_backend *p, const CK_ATTRIBUTE *extra, CK_OBJECT_HANDLE **ret, size_t *ret_n) {
        CK_FUNCTION_LIST_PTR f = p->module->f;
        CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
        CK_KEY_TYPE type = CKK_AES;
        CK_ATTRIBUTE tmpl[3] = {
                { CKA_CLASS, &cls, sizeof cls },
                { CKA_KEY_TYPE, &type, sizeof type },
        };
        _cleanup_free_ CK_OBJECT_HANDLE *objs = NULL;
        size_t n = 0;
        CK_RV rv;

        if (extra)
                tmpl[2] = *extra;
        rv = f->C_FindObjectsInit(p->session, tmpl, extra ? 3 : 2);
        if (rv != CKR_OK)
                return p11_fail(p, rv, "C_FindObjectsInit");
        for (;;) {
                CK_OBJECT_HANDLE *a;
                CK_ULONG got = 0;

                a = reallocarray(objs, n + FIND_BATCH, sizeof(CK_OBJECT_HANDLE));
                if (!a) {
                        (void) f->C_FindObjectsFinal(p->session);
                        return -ENOMEM;
                }
                objs = a;
                rv = f->C_FindObjects(p->session, objs + n, FIND_BATCH, &got);
                if (rv != CKR_OK) {
                        (void) f->C_FindObjectsFinal(p->session);
                        return p11_fail(p, rv, "C_FindObjects");
                }
                n += got;
                if (got < FIND_BATCH)
                        break;
        }
        rv = f->C_FindObjectsFinal(p->session);
        if (rv != CKR_OK)
                return p11_fail(p, rv, "C_FindObjectsFinal");
        *ret = TAKE_PTR(objs);
        *ret_n = n;
        return 0;
}

typedef struct p11_key {
        CK_OBJECT_HANDLE handle;
        uint8_t id[KEY_ID_MAX];
        size_t id_size;
        kms_key info;
} p11_key;

static void p11_key_done(p11_key *k) {
        kms_key_done(&k->info);
        *k = (p11_key) {};
}

/* Reads id, label and the usage flags of @h. -ENODATA for a key without a usable CKA_ID. */
static int read_key(pkcs11_backend *p, CK_OBJECT_HANDLE h, p11_key *ret) {
        CK_FUNCTION_LIST_PTR f = p->module->f;
        CK_BBOOL enc = CK_FALSE, dec = CK_FALSE;
        char label[257];
        p11_key k = { .handle = h };
        CK_ATTRIBUTE a[] = {
                { CKA_ID, k.id, sizeof k.id },
                { CKA_LABEL, label, sizeof label - 1 },
                { CKA_ENCRYPT, &enc, sizeof enc },
                { CKA_DECRYPT, &dec, sizeof dec },
        };
        CK_RV rv;

        rv = f->C_GetAttributeValue(p->session, h, a, ELEMENTSOF(a));
        if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID && rv != CKR_ATTRIBUTE_SENSITIVE &&
            rv != CKR_BUFFER_TOO_SMALL)
                return p11_fail(p, rv, "C_GetAttributeValue");
        if (a[0].ulValueLen == CK_UNAVAILABLE_INFORMATION || a[0].ulValueLen == 0 || a[0].ulValueLen > KEY_ID_MAX)
                return -ENODATA;
        k.id_size = a[0].ulValueLen;
        if (a[2].ulValueLen == CK_UNAVAILABLE_INFORMATION)
                enc = CK_FALSE;
        if (a[3].ulValueLen == CK_UNAVAILABLE_INFORMATION)
                dec = CK_FALSE;

        k.info.id = hex_encode(k.id, k.id_size);
        if (!k.info.id)
                return -ENOMEM;
        if (a[1].ulValueLen != CK_UNAVAILABLE_INFORMATION && a[1].ulValueLen > 0 && a[1].ulValueLen < sizeof label) {
                k.info.alias = strndup(label, a[1].ulValueLen);
                if (!k.info.alias) {
                        p11_key_done(&k);
                        return -ENOMEM;
                }
        }
        k.info.state = enc && dec ? KMS_KEY_ENABLED : KMS_KEY_DISABLED;
        *ret = k;
        return 0;
}

/* Finds one key by hex id, else by label. -ENOENT, -EINVAL when a label is ambiguous. */
static int lookup_key(pkcs11_backend *p, const char *ref, p11_key *ret) {
        _cleanup_free_ CK_OBJECT_HANDLE *objs = NULL;
        uint8_t id[KEY_ID_MAX];
        size_t id_size, n = 0;
        CK_ATTRIBUTE attr;
        int r;

        if (hex_decode(ref, id, sizeof id, &id_size) >= 0) {
                attr = (CK_ATTRIBUTE) { CKA_ID, id, id_size };
                r = find_keys(p, &attr, &objs, &n);
                if (r < 0)
                        return r;
        }
        if (n == 0) {
                free(objs);
                objs = NULL;
                attr = (CK_ATTRIBUTE) { CKA_LABEL, (void *) ref, strlen(ref) };
                r = find_keys(p, &attr, &objs, &n);
                if (r < 0)
                        return r;
        }
        if (n == 0)
                return kms_backend_set_error(&p->base, -ENOENT, "no key %s on token '%s'", ref, p->token_label);
        if (n > 1)
                return kms_backend_set_error(&p->base, -EINVAL, "%zu keys on token '%s' match %s; use the key id", n,
                                             p->token_label, ref);
        r = read_key(p, objs[0], ret);
        if (r == -ENODATA)
                return kms_backend_set_error(&p->base, -ENOENT, "key %s on token '%s' has no CKA_ID", ref,
                                             p->token_label);
        return r;
}

static int copy_info(const kms_key *from, kms_key *ret) {
        kms_key k = { .state = from->state };

        k.id = strdup(from->id);
        if (!k.id || (from->alias && !(k.alias = strdup(from->alias)))) {
                kms_key_done(&k);
                return -ENOMEM;
        }
        *ret = k;
        return 0;
}

/* ---- key verbs ---- */

struct create_args {
        const char *alias;
        kms_key *ret;
};

static int create_op(pkcs11_backend *p, void *userdata) {
        struct create_args *a = userdata;
        CK_FUNCTION_LIST_PTR f = p->module->f;
        CK_MECHANISM mech = { CKM_AES_KEY_GEN, NULL, 0 };
        CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
        CK_KEY_TYPE type = CKK_AES;
        CK_ULONG len = 32;
        CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
        uint8_t id[KEY_ID_SIZE];
        CK_ATTRIBUTE tmpl[] = {
                { CKA_CLASS, &cls, sizeof cls },
                { CKA_KEY_TYPE, &type, sizeof type },
                { CKA_VALUE_LEN, &len, sizeof len },
                { CKA_TOKEN, &yes, sizeof yes },
                { CKA_PRIVATE, &yes, sizeof yes },
                { CKA_SENSITIVE, &yes, sizeof yes },
                { CKA_EXTRACTABLE, &no, sizeof no },
                { CKA_MODIFIABLE, &yes, sizeof yes },
                { CKA_ENCRYPT, &yes, sizeof yes },
                { CKA_DECRYPT, &yes, sizeof yes },
                { CKA_WRAP, &no, sizeof no },
                { CKA_UNWRAP, &no, sizeof no },
                { CKA_ID, id, sizeof id },
                { CKA_LABEL, (void *) a->alias, a->alias ? strlen(a->alias) : 0 },
        };
        _cleanup_(p11_key_done) p11_key k = {};
        CK_OBJECT_HANDLE h;
        CK_RV rv;
        int r;

        if (a->alias) {
                _cleanup_free_ CK_OBJECT_HANDLE *objs = NULL;
                CK_ATTRIBUTE attr = { CKA_LABEL, (void *) a->alias, strlen(a->alias) };
                size_t n;

                r = find_keys(p, &attr, &objs, &n);
                if (r < 0)
                        return r;
                if (n > 0)
                        return kms_backend_set_error(&p->base, -EEXIST, "alias %s is already taken on token '%s'",
                                                     a->alias, p->token_label);
        }

        r = crypto_random(id, sizeof id);
        if (r < 0)
                return r;
        rv = f->C_GenerateKey(p->session, &mech, tmpl, a->alias ? ELEMENTSOF(tmpl) : ELEMENTSOF(tmpl) - 1, &h);
        if (rv != CKR_OK)
                return p11_fail(p, rv, "C_GenerateKey");
        r = read_key(p, h, &k);
        if (r < 0)
                return r == -ENODATA ? -EIO : r;
        return copy_info(&k.info, a->ret);
}

static int pkcs11_key_create(kms_backend *b, const char *alias, const char *description, kms_key *ret) {
        struct create_args a = { .alias = alias, .ret = ret };

        /* PKCS#11 has no description attribute: @description is not kept. */
        return p11_run(P11(b), create_op, &a);
}

struct list_args {
        kms_key *keys;
        size_t n;
};

static int list_op(pkcs11_backend *p, void *userdata) {
        struct list_args *a = userdata;
        _cleanup_free_ CK_OBJECT_HANDLE *objs = NULL;
        size_t n;
        int r;

        r = find_keys(p, NULL, &objs, &n);
        if (r < 0)
                return r;
        a->keys = calloc(MAX(n, (size_t) 1), sizeof(kms_key));
        if (!a->keys)
                return -ENOMEM;
        a->n = 0;
        for (size_t i = 0; i < n; i++) {
                p11_key k = {};

                r = read_key(p, objs[i], &k);
                if (r == -ENODATA)
                        continue; /* not one of ours to name */
                if (r < 0) {
                        kms_key_array_free(a->keys, a->n);
                        a->keys = NULL;
                        return r;
                }
                a->keys[a->n++] = k.info;
        }
        return 0;
}

static int cmp_id(const void *x, const void *y) {
        return strcmp(((const kms_key *) x)->id, ((const kms_key *) y)->id);
}

static int pkcs11_key_list(kms_backend *b, kms_key **ret, size_t *ret_n) {
        struct list_args a = {};
        int r;

        r = p11_run(P11(b), list_op, &a);
        if (r < 0)
                return r;
        if (a.n > 1)
                qsort(a.keys, a.n, sizeof(kms_key), cmp_id);
        *ret = a.keys;
        *ret_n = a.n;
        return 0;
}

struct get_args {
        const char *ref;
        kms_key *ret;
};

static int get_op(pkcs11_backend *p, void *userdata) {
        struct get_args *a = userdata;
        _cleanup_(p11_key_done) p11_key k = {};
        int r;

        r = lookup_key(p, a->ref, &k);
        if (r < 0)
                return r;
        return copy_info(&k.info, a->ret);
}

static int pkcs11_key_get(kms_backend *b, const char *ref, kms_key *ret) {
        struct get_args a = { .ref = ref, .ret = ret };

        return p11_run(P11(b), get_op, &a);
}

struct enable_args {
        const char *id;
        bool enable;
};

static int enable_op(pkcs11_backend *p, void *userdata) {
        struct enable_args *a = userdata;
        _cleanup_(p11_key_done) p11_key k = {};
        CK_BBOOL v = a->enable ? CK_TRUE : CK_FALSE;
        CK_ATTRIBUTE attrs[] = {
                { CKA_ENCRYPT, &v, sizeof v },
                { CKA_DECRYPT, &v, sizeof v },
        };
        CK_RV rv;
        int r;

        r = lookup_key(p, a->id, &k);
        if (r < 0)
                return r;
        rv = p->module->f->C_SetAttributeValue(p->session, k.handle, attrs, ELEMENTSOF(attrs));
        if (rv == CKR_ATTRIBUTE_READ_ONLY || rv == CKR_ACTION_PROHIBITED) {
                p->last_rv = rv;
                return kms_backend_set_error(&p->base, -EOPNOTSUPP,
                                             "token '%s' does not allow changing CKA_ENCRYPT/CKA_DECRYPT of key %s: %s",
                                             p->token_label, k.info.id, ckr_name(rv));
        }
        if (rv != CKR_OK)
                return p11_fail(p, rv, "C_SetAttributeValue");
        return 0;
}

static int pkcs11_key_set_enabled(kms_backend *b, const char *id, bool enabled) {
        struct enable_args a = { .id = id, .enable = enabled };

        return p11_run(P11(b), enable_op, &a);
}

static int pkcs11_key_schedule_deletion(kms_backend *b, const char *id, unsigned days, kms_key *ret) {
        return kms_backend_set_error(b, -EOPNOTSUPP,
                                     "PKCS#11 has no scheduled key deletion (backend %s): disable the key, and delete "
                                     "it on the HSM when due",
                                     b->name);
}

static int pkcs11_key_cancel_deletion(kms_backend *b, const char *id) {
        return kms_backend_set_error(b, -EOPNOTSUPP, "PKCS#11 has no scheduled key deletion (backend %s)", b->name);
}

/* ---- wrap/unwrap ---- */

static size_t header_size(size_t id_size) {
        return 4 + 1 + 1 + id_size;
}

/* AAD = header || context. */
static uint8_t *build_aad(const uint8_t *header, size_t hsize, const char *context, size_t *ret_size) {
        size_t c = strlen(context);
        uint8_t *aad = malloc(hsize + c + 1);

        if (!aad)
                return NULL;
        memcpy(aad, header, hsize);
        memcpy(aad + hsize, context, c);
        *ret_size = hsize + c;
        return aad;
}

/* After the token refused the key: is it disabled? */
static int refused(pkcs11_backend *p, const p11_key *k, CK_RV rv, const char *what) {
        p->last_rv = rv;
        if (rv == CKR_KEY_FUNCTION_NOT_PERMITTED) {
                CK_BBOOL dec = CK_TRUE;
                CK_ATTRIBUTE a = { CKA_DECRYPT, &dec, sizeof dec };

                if (p->module->f->C_GetAttributeValue(p->session, k->handle, &a, 1) == CKR_OK && !dec)
                        return kms_backend_set_error(&p->base, -EKEYREVOKED, "key %s is disabled (%s refused: %s)",
                                                     k->info.id, what, ckr_name(rv));
                return kms_backend_set_error(&p->base, -EKEYREVOKED, "key %s may not be used for this (%s: %s)",
                                             k->info.id, what, ckr_name(rv));
        }
        return p11_fail(p, rv, what);
}

struct wrap_args {
        const char *id, *context;
        const secret *plain;
        uint8_t *out;
        size_t out_size;
};

static int wrap_op(pkcs11_backend *p, void *userdata) {
        struct wrap_args *a = userdata;
        CK_FUNCTION_LIST_PTR f = p->module->f;
        _cleanup_(p11_key_done) p11_key k = {};
        _cleanup_free_ uint8_t *out = NULL, *aad = NULL;
        CK_GCM_PARAMS gcm = {};
        CK_MECHANISM mech = { CKM_AES_GCM, &gcm, sizeof gcm };
        size_t hsize, aad_size;
        CK_ULONG ct_size;
        uint8_t *iv;
        CK_RV rv;
        int r;

        r = lookup_key(p, a->id, &k);
        if (r < 0)
                return r;

        hsize = header_size(k.id_size);
        ct_size = a->plain->size + GCM_TAG_BITS / 8;
        if (hsize + GCM_IV_SIZE + ct_size > KMS_WRAPPED_MAX)
                return kms_backend_set_error(&p->base, -EINVAL, "data key of %zu bytes is too large", a->plain->size);
        out = malloc(hsize + GCM_IV_SIZE + ct_size);
        if (!out)
                return -ENOMEM;
        memcpy(out, WRAP_MAGIC, 4);
        out[4] = WRAP_VERSION;
        out[5] = (uint8_t) k.id_size;
        memcpy(out + 6, k.id, k.id_size);
        iv = out + hsize;
        r = crypto_random(iv, GCM_IV_SIZE);
        if (r < 0)
                return r;
        aad = build_aad(out, hsize, a->context, &aad_size);
        if (!aad)
                return -ENOMEM;

        gcm.pIv = iv;
        gcm.ulIvLen = GCM_IV_SIZE;
        gcm.ulIvBits = GCM_IV_SIZE * 8;
        gcm.pAAD = aad;
        gcm.ulAADLen = aad_size;
        gcm.ulTagBits = GCM_TAG_BITS;

        rv = f->C_EncryptInit(p->session, &mech, k.handle);
        if (rv != CKR_OK)
                return refused(p, &k, rv, "C_EncryptInit");
        rv = f->C_Encrypt(p->session, a->plain->data, a->plain->size, out + hsize + GCM_IV_SIZE, &ct_size);
        if (rv != CKR_OK)
                return p11_fail(p, rv, "C_Encrypt");
        if (ct_size != a->plain->size + GCM_TAG_BITS / 8)
                return kms_backend_set_error(&p->base, -EPROTO, "C_Encrypt returned %lu bytes for %zu",
                                             (unsigned long) ct_size, a->plain->size);
        a->out_size = hsize + GCM_IV_SIZE + ct_size;
        a->out = TAKE_PTR(out);
        return 0;
}

static int pkcs11_wrap(kms_backend *b, const char *id, const char *context, const secret *plain, uint8_t **ret,
                       size_t *ret_size) {
        struct wrap_args a = { .id = id, .context = context, .plain = plain };
        int r;

        r = p11_run(P11(b), wrap_op, &a);
        if (r < 0)
                return r;
        *ret = a.out;
        *ret_size = a.out_size;
        return 0;
}

struct unwrap_args {
        const char *id, *context;
        const uint8_t *wrapped;
        size_t size;
        secret *ret;
};

static int unwrap_op(pkcs11_backend *p, void *userdata) {
        struct unwrap_args *a = userdata;
        CK_FUNCTION_LIST_PTR f = p->module->f;
        _cleanup_(p11_key_done) p11_key k = {};
        _cleanup_(secret_freep) secret *plain = NULL;
        _cleanup_free_ uint8_t *aad = NULL, *iv = NULL;
        CK_GCM_PARAMS gcm = {};
        CK_MECHANISM mech = { CKM_AES_GCM, &gcm, sizeof gcm };
        size_t hsize, aad_size, ct_size;
        CK_ULONG out_size;
        CK_RV rv;
        int r;

        r = lookup_key(p, a->id, &k);
        if (r < 0)
                return r;
        if (k.id_size != a->wrapped[5] || memcmp(k.id, a->wrapped + 6, k.id_size) != 0) {
                _cleanup_free_ char *other = hex_encode(a->wrapped + 6, a->wrapped[5]);

                return kms_backend_set_error(&p->base, -EXDEV, "wrapped key belongs to key %s, not %s", strna(other),
                                             k.info.id);
        }
        hsize = header_size(a->wrapped[5]);
        ct_size = a->size - hsize - GCM_IV_SIZE;

        aad = build_aad(a->wrapped, hsize, a->context, &aad_size);
        iv = malloc(GCM_IV_SIZE);
        if (!aad || !iv)
                return -ENOMEM;
        memcpy(iv, a->wrapped + hsize, GCM_IV_SIZE);
        gcm.pIv = iv;
        gcm.ulIvLen = GCM_IV_SIZE;
        gcm.ulIvBits = GCM_IV_SIZE * 8;
        gcm.pAAD = aad;
        gcm.ulAADLen = aad_size;
        gcm.ulTagBits = GCM_TAG_BITS;

        r = secret_new(ct_size, &plain);
        if (r < 0)
                return r;
        rv = f->C_DecryptInit(p->session, &mech, k.handle);
        if (rv != CKR_OK)
                return refused(p, &k, rv, "C_DecryptInit");
        out_size = ct_size;
        rv = f->C_Decrypt(p->session, (CK_BYTE_PTR) a->wrapped + hsize + GCM_IV_SIZE, ct_size, plain->data, &out_size);
        if (rv == CKR_GENERAL_ERROR || rv == CKR_ENCRYPTED_DATA_INVALID || rv == CKR_ENCRYPTED_DATA_LEN_RANGE ||
            rv == CKR_FUNCTION_FAILED) {
                p->last_rv = rv;
                return kms_backend_set_error(
                        &p->base, -EBADMSG,
                        "wrapped key fails authentication (altered, or bound to another volume): %s", ckr_name(rv));
        }
        if (rv != CKR_OK)
                return p11_fail(p, rv, "C_Decrypt");
        if (out_size != ct_size - GCM_TAG_BITS / 8)
                return kms_backend_set_error(&p->base, -EPROTO, "C_Decrypt returned %lu bytes for %zu",
                                             (unsigned long) out_size, ct_size);
        r = secret_truncate(plain, out_size);
        if (r < 0)
                return r;
        a->ret = TAKE_PTR(plain);
        return 0;
}

static int pkcs11_unwrap(kms_backend *b, const char *id, const char *context, const uint8_t *wrapped, size_t size,
                         secret **ret) {
        struct unwrap_args a = { .id = id, .context = context, .wrapped = wrapped, .size = size };
        size_t hsize;
        int r;

        if (size < header_size(0) || memcmp(wrapped, WRAP_MAGIC, 4) != 0 || wrapped[4] != WRAP_VERSION)
                return kms_backend_set_error(b, -EBADMSG, "wrapped key is not in the pkcs11 format");
        hsize = header_size(wrapped[5]);
        if (wrapped[5] == 0 || wrapped[5] > KEY_ID_MAX || size <= hsize + GCM_IV_SIZE + GCM_TAG_BITS / 8)
                return kms_backend_set_error(b, -EBADMSG, "wrapped key is truncated or malformed");
        r = p11_run(P11(b), unwrap_op, &a);
        if (r < 0)
                return r;
        *ret = a.ret;
        return 0;
}

const kms_backend_ops kms_pkcs11_ops = {
        .type = "pkcs11",
        .thread_safe = false, /* one logged-in session per instance */
        .unwrap_checks_state = true,
        .open = pkcs11_open,
        .free = pkcs11_free,
        .key_create = pkcs11_key_create,
        .key_list = pkcs11_key_list,
        .key_get = pkcs11_key_get,
        .key_set_enabled = pkcs11_key_set_enabled,
        .key_schedule_deletion = pkcs11_key_schedule_deletion,
        .key_cancel_deletion = pkcs11_key_cancel_deletion,
        .wrap = pkcs11_wrap,
        .unwrap = pkcs11_unwrap,
};
