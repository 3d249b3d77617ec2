/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* libcryptsetup and libdevmapper print their own messages to stderr by default. The daemon reports
 * every failure once, with its own one-line reason; their messages go to the debug log instead. */
void lib_log_setup(void);
