#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# The rewrap interruption test (tests/integration/test-rewrap.c) on a real kernel: after a rewrap stopped
# after each of its steps, the volume is opened as a real dm-crypt mapping and read through.
set -u
[ -e /dev/mapper/control ] || { echo "no device-mapper in the guest"; exit 1; }
exec test-rewrap
