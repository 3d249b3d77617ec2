#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# The exe_wrapper of `meson test --setup valgrind` (tests/meson.build): a test binary runs under valgrind
# ($EVS_VALGRIND: memcheck, every error and leak fatal); a test script runs as it is (valgrind would check
# the shell, not us) and wraps what it starts itself, with $EVS_VALGRIND or this wrapper.
#   valgrind-wrapper.sh PROGRAM [ARGS...]
if [ "$(head -c 4 "$1" 2>/dev/null | od -An -c | tr -d ' ')" = 177ELF ]; then
        # shellcheck disable=SC2086 # $EVS_VALGRIND is a command line
        exec $EVS_VALGRIND "$@"
fi
exec "$@"
