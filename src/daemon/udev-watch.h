/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "manager.h"

/* udev property our rule (conf/60-evs-cryptd.rules) sets on block devices holding an EVS volume. */
#define EVS_UDEV_PROPERTY "EVS_VOLUME_ID"

/* Watches block devices marked by the udev rule: attaches them when they appear (and those present at
 * start) when AutoAttach=yes, closes their mapping when they disappear. A no-op without udev. */
int udev_watch_start(manager *m);
void udev_watch_stop(manager *m);
