/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include "kms.h"

extern const kms_backend_ops kms_local_ops;
extern const kms_backend_ops kms_kmip_ops;
extern const kms_backend_ops kms_pkcs11_ops;
extern const kms_backend_ops kms_exec_ops;
