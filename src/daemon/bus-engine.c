/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Bus methods of the engine itself: the backends' queues and the metrics. They read only in-memory
 * counters, on the loop, so they answer at once whatever the KMSs do. */

#include "bus-api.h"
#include "bus-methods.h"
#include "kms-gate.h"
#include "manager.h"
#include "metrics.h"

static int append_backend(sd_bus_message *reply, const void *item) {
        kms_backend *b = *(kms_backend *const *) item;
        kms_gate_status s;

        kms_gate_get_status(b->gate, &s);
        return sd_bus_message_append(reply, EVS_BACKEND_SIG, b->name, b->ops->type, s.in_flight, s.queued,
                                     s.max_in_flight, s.max_concurrent, s.requests_per_second,
                                     (uint32_t) (b->timeout / 1000));
}

int method_get_backends(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        manager *m = userdata;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        return bus_reply_array(msg, EVS_BACKEND_SIG, m->registry->backends, m->registry->n_backends,
                               sizeof(kms_backend *), append_backend);
}

int method_get_metrics(sd_bus_message *msg, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *text = NULL;
        manager *m = userdata;
        int r;

        r = bus_check_root(msg, error);
        if (r < 0)
                return r;
        r = metrics_format(m->registry, &text);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(msg, "s", text);
}
