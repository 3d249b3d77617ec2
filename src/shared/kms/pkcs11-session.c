/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The PKCS#11 module, return values, the slot, the PIN and the session (see pkcs11-internal.h). */

#include <dlfcn.h>
#include <sys/stat.h>

#include "fileio.h"
#include "pkcs11-internal.h"

/* ---- the module, shared by every instance of the process ---- */



static pthread_mutex_t modules_lock = PTHREAD_MUTEX_INITIALIZER;
static p11_module *modules = NULL;



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

const char *p11_ckr_name(CK_RV rv) {
        static _Thread_local char buf[32];

        for (size_t i = 0; i < ELEMENTSOF(ckr_names); i++)
                if (ckr_names[i].rv == rv)
                        return ckr_names[i].name;
        snprintf(buf, sizeof buf, "CKR_0x%08lX", (unsigned long) rv);
        return buf;
}

/* The kms.h errno for a PKCS#11 return value (callers refine the context-dependent ones). */
int p11_ckr_to_errno(CK_RV rv) {
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

bool p11_ckr_session_gone(CK_RV rv) {
        return rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED || rv == CKR_USER_NOT_LOGGED_IN ||
               rv == CKR_DEVICE_REMOVED || rv == CKR_TOKEN_NOT_PRESENT;
}

/* Records @rv and a reason "WHAT: CKR_NAME". */
int p11_fail(pkcs11_backend *p, CK_RV rv, const char *what) {
        p->last_rv = rv;
        return kms_backend_set_error(&p->base, p11_ckr_to_errno(rv), "%s: %s (token '%s')", what, p11_ckr_name(rv),
                                     p->token_label);
}

void p11_module_unref(p11_module *m) {
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

int p11_module_ref(pkcs11_backend *p) {
        CK_C_GetFunctionList get;
        struct stat st;
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
        /* dlopen() would wait on a FIFO for good: only a regular file is a module. */
        if (stat(p->module_path, &st) >= 0 && !S_ISREG(st.st_mode)) {
                r = kms_backend_set_error(&p->base, -EHOSTDOWN, "cannot load PKCS#11 module %s: %s", p->module_path,
                                          S_ISDIR(st.st_mode) ? "a directory" : "not a regular file");
                goto fail;
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
                r = kms_backend_set_error(&p->base, p11_ckr_to_errno(rv) == -ENOMEM ? -ENOMEM : -EHOSTDOWN,
                                          "C_Initialize of %s failed: %s", p->module_path, p11_ckr_name(rv));
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

void p11_close_session(pkcs11_backend *p) {
        if (p->have_session)
                (void) p->module->f->C_CloseSession(p->session);
        p->have_session = false;
}

/* Finds the slot whose token has our label. */
int p11_find_slot(pkcs11_backend *p, CK_SLOT_ID *ret) {
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

int p11_read_pin(pkcs11_backend *p, secret **ret) {
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
int p11_ensure_session(pkcs11_backend *p) {
        _cleanup_(secret_freep) secret *pin = NULL;
        CK_FUNCTION_LIST_PTR f;
        CK_SESSION_HANDLE s;
        CK_RV rv;
        int r;

        if (p->have_session)
                return 0;
        r = p11_module_ref(p);
        if (r < 0)
                return r;
        f = p->module->f;
        r = p11_find_slot(p, &p->slot);
        if (r < 0)
                return r;
        r = p11_read_pin(p, &pin);
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
                                                     p->token_label, p->pin_path, p11_ckr_name(rv));
                return p11_fail(p, rv, "C_Login");
        }
        p->session = s;
        p->have_session = true;
        return 0;
}

/* Runs @op with a logged-in session, re-opening the session once if the module reports it gone. */
int p11_run(pkcs11_backend *p, int (*op)(pkcs11_backend *p, void *userdata), void *userdata) {
        int r;

        pthread_mutex_lock(&p->lock);
        for (unsigned attempt = 0;; attempt++) {
                r = p11_ensure_session(p);
                if (r < 0)
                        break;
                p->last_rv = CKR_OK;
                r = op(p, userdata);
                if (r >= 0 || attempt > 0 || !p11_ckr_session_gone(p->last_rv))
                        break;
                p11_close_session(p);
        }
        pthread_mutex_unlock(&p->lock);
        return r;
}
