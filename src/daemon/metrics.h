/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The daemon's own counters (attaches by result, refusals by reason, attach latency, the engine lock's
 * hold and wait times per job), thread-safe, and the OpenMetrics text of everything: these and every
 * backend's gate (kms-gate.h). */

#include "kms-registry.h"
#include "time-util.h"

/* @result: "attached", "already", "refused", "failed"; @reason: the refusal's bus error name (or
 * NULL). @duration: from the request to the answer. */
void metrics_attach_done(const char *result, const char *reason, usec_t duration);
void metrics_detach_done(const char *result);
/* A job of the engine (engine.h) ended: it held the engine lock for @held in all, using @held_cpu of
 * CPU time meanwhile (less than @held when it was preempted or slept in the kernel holding it), and
 * waited @waited in all to take it. */
void metrics_engine_job_done(usec_t held, usec_t held_cpu, usec_t waited);

/* The whole text, ending with "# EOF\n". */
int metrics_format(kms_registry *registry, char **ret);
