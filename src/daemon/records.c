/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "errors.h"
#include "records.h"
#include "string-util.h"

int server_record_load(manager *m, const char *name, server_record *ret, sd_bus_error *error) {
        int r;

        if (isempty(name))
                return evs_bus_error_setf(error, EINVAL, "No server given.");
        r = server_db_load(m->config.state_dir, name, ret);
        if (r == -ENXIO)
                return evs_bus_error_setf(error, ENXIO, "No server %s.", name);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot read the record of server %s: %s.", name, strerror(-r));
        return 0;
}

int as_config_record_load(manager *m, const char *name, as_config_record *ret, sd_bus_error *error) {
        int r;

        if (isempty(name))
                return evs_bus_error_setf(error, EINVAL, "No AS configuration given.");
        r = as_config_db_load(m->config.state_dir, name, ret);
        if (r == -ENXIO)
                return evs_bus_error_setf(error, ENXIO, "No AS configuration %s.", name);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot read AS configuration %s: %s.", name, strerror(-r));
        return 0;
}
