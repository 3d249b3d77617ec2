/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The PKCS#11 backend's parts (the backend itself, its configuration, state mapping and wrapped format are
 * described in pkcs11.c):
 *   pkcs11-session.c  the module (dlopen()ed, shared by the instances of a process), return values and their
 *                     errnos, the slot, the PIN, the logged-in session and p11_run()
 *   pkcs11-objects.c  key objects: attributes, the state mapping, lookup by id or label
 *   pkcs11.c          open/free, the key verbs, wrap/unwrap, the ops table
 * Functions return -errno and record the reason with kms_backend_set_error() (p11_fail()). */

#include <pthread.h>

#include <p11-kit/pkcs11.h>

#include "backends.h"
#include "secret.h"

#define WRAP_MAGIC "EVP1"
#define WRAP_VERSION 1
#define KEY_ID_SIZE 16U
#define KEY_ID_MAX 64U
#define GCM_IV_SIZE 12U
#define GCM_TAG_BITS 128U
#define PIN_MAX 256U
#define FIND_BATCH 64U

typedef struct p11_module {
        struct p11_module *next;
        char *path;
        void *dl;
        CK_FUNCTION_LIST_PTR f;
        unsigned n_ref;
        bool finalize; /* we initialised it */
} p11_module;

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

static inline pkcs11_backend *P11(kms_backend *b) {
        return (pkcs11_backend *) b;
}

typedef struct p11_key {
        CK_OBJECT_HANDLE handle;
        uint8_t id[KEY_ID_MAX];
        size_t id_size;
        kms_key info;
} p11_key;

/* pkcs11-session.c */
const char *p11_ckr_name(CK_RV rv);
int p11_ckr_to_errno(CK_RV rv);
bool p11_ckr_session_gone(CK_RV rv);
int p11_fail(pkcs11_backend *p, CK_RV rv, const char *what);
void p11_module_unref(p11_module *m);
int p11_module_ref(pkcs11_backend *p);
void p11_close_session(pkcs11_backend *p);
int p11_find_slot(pkcs11_backend *p, CK_SLOT_ID *ret);
int p11_read_pin(pkcs11_backend *p, secret **ret);
int p11_ensure_session(pkcs11_backend *p);
int p11_run(pkcs11_backend *p, int (*op)(pkcs11_backend *p, void *userdata), void *userdata);

/* pkcs11-objects.c */
int p11_hex_decode(const char *s, uint8_t *buf, size_t max, size_t *ret_size);
char *p11_hex_encode(const uint8_t *p, size_t n);
int p11_find_keys(pkcs11_backend *p, const CK_ATTRIBUTE *extra, CK_OBJECT_HANDLE **ret, size_t *ret_n);
int p11_read_key(pkcs11_backend *p, CK_OBJECT_HANDLE h, p11_key *ret);
int p11_lookup_key(pkcs11_backend *p, const char *ref, p11_key *ret);
int p11_copy_info(const kms_key *from, kms_key *ret);
void p11_key_done(p11_key *k);
