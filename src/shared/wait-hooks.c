/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stddef.h>

#include "wait-hooks.h"

static void (*hook_begin)(void) = NULL;
static void (*hook_end)(void) = NULL;
static __thread unsigned suppressed = 0;

void wait_hooks_set(void (*begin)(void), void (*end)(void)) {
        hook_begin = begin;
        hook_end = end;
}

void wait_hooks_suppress(bool suppress) {
        if (suppress)
                suppressed++;
        else if (suppressed > 0)
                suppressed--;
}

bool wait_hooks_suppressed(void) {
        return hook_begin && suppressed > 0;
}

void wait_hooks_begin(void) {
        if (hook_begin && suppressed == 0)
                hook_begin();
}

void wait_hooks_end(void) {
        if (hook_end && suppressed == 0)
                hook_end();
}
