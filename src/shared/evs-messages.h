/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Journal MESSAGE_IDs of evs-cryptd's events: `journalctl MESSAGE_ID=...`. Documented in evs-cryptd(8). */

#define EVS_MESSAGE_VOLUME_ATTACHED "bf993f3e5c75475f81c6f193bdaf2ae6"
#define EVS_MESSAGE_VOLUME_DETACHED "0609ac1c0f654fdd8137e34936cb824b"
#define EVS_MESSAGE_ATTACH_REFUSED "dc7f4e099cd84e59a063ff0e2c88110c"
#define EVS_MESSAGE_KEY_STATE_OPEN_VOLUME "8305e7eda0a94275a59609220925fde9"
#define EVS_MESSAGE_VOLUME_CREATED "8fca4fe18b024699a3bd561abc59b8cb"
#define EVS_MESSAGE_KEY_CHANGED "62c78acc56b04b059a17d9f6eda91f38"
