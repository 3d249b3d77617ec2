/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Changing the CMK that wraps a volume's data key, without touching the data area, crash-safe.
 * The steps, in this order, each leaving a header that still opens when the process dies right after it:
 *
 *   REWRAP_STEP_RESOLVE  resolve the new CMK; it must be enabled.                     disk: untouched
 *   REWRAP_STEP_WRAP     unwrap the data key through the current token (the first
 *                        evs-kms token that unwraps) and wrap it under the new CMK.   disk: untouched
 *   REWRAP_STEP_ADD      write the new token as an additional evs-kms token bound
 *                        to the same keyslot.                                        disk: old + new token
 *   REWRAP_STEP_VERIFY   read the new token back from the header and check that it
 *                        opens the keyslot (a key check, no mapping). On failure
 *                        the new token is removed again.                             disk: old + new token
 *   REWRAP_STEP_REMOVE   remove every other evs-kms token.                            disk: new token only
 *
 * Both tokens wrap the same data key, so whichever evs-kms token comes first in the header unlocks
 * between ADD and REMOVE. A rewrap that finds several evs-kms tokens (an interrupted one) uses the
 * first that unwraps and leaves only its new token: running it again cleans up. */

#include "kms-registry.h"
#include "token.h"

typedef enum rewrap_step {
        REWRAP_STEP_RESOLVE,
        REWRAP_STEP_WRAP,
        REWRAP_STEP_ADD,
        REWRAP_STEP_VERIFY,
        REWRAP_STEP_REMOVE,
        _REWRAP_STEP_MAX,
} rewrap_step;

const char *rewrap_step_to_string(rewrap_step s) _const_;

typedef struct rewrap {
        /* In: */
        const char *device;
        const char *key_ref; /* "[BACKEND:]ID-OR-ALIAS"; NULL or "" is the default key */
        kms_registry *registry;

        /* Out, filled as the steps run: */
        rewrap_step next;      /* the step rewrap_run_step() runs next */
        char *volume_id;       /* the LUKS2 label */
        kms_backend *to;       /* the new CMK's backend */
        kms_key key;           /* the new CMK */
        evs_token old_token;   /* the token the data key was unwrapped through */
        int old_token_id;
        evs_token new_token;
        int new_token_id;      /* -1 until ADD */
        unsigned n_removed;    /* tokens removed by REMOVE */
        kms_backend *failed;   /* on failure: the backend whose kms_backend_error() explains it, or NULL */
        const char *reason;    /* on failure: a static reason when no backend has one, or NULL */
} rewrap;

void rewrap_done(rewrap *w);

/* Runs step w->next and advances it. Errors: RESOLVE: of kms_registry_resolve() (-ENOENT, -EINVAL),
 * -EKEYREVOKED/-EKEYEXPIRED/-ENOKEY/-EHOSTDOWN for a CMK that is not enabled. WRAP: -ENODATA (not a
 * LUKS2 volume or no evs-kms token, w->reason), -EMEDIUMTYPE (token of another volume), errors of
 * envelope_rewrap() for the first token when none unwraps. ADD/REMOVE: -errno of libcryptsetup.
 * VERIFY: -EBADMSG when the token read back differs from the one written, -EPERM when it does not open the
 * keyslot, errors of envelope_open(). -ESTALE once every step ran. */
int rewrap_run_step(rewrap *w);

/* Runs the steps up to and including @last (_REWRAP_STEP_MAX - 1 for all of them). */
int rewrap_run(rewrap *w, rewrap_step last);
