/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* AS configurations: made from a server, list, show, delete. */

#include <fcntl.h>

#include "evs-messages.h"
#include "as-config-ops.h"
#include "docstore.h"
#include "errors.h"
#include "fileio.h"
#include "json-util.h"
#include "log.h"
#include "records.h"
#include "inherit.h"
#include "server-live.h"
#include "server.h"
#include "strv.h"
#include "string-util.h"

#define KIND AS_CONFIG_KIND

static void fill_live(manager *m, as_config_record *v) {
        (void) disk_spec_fill_key_state(&v->system, m->registry);
        for (size_t i = 0; i < v->n_data; i++)
                (void) disk_spec_fill_key_state(&v->data[i], m->registry);
}

/* The server's record, its disks' CMKs and ciphers as their headers say (the headers are the truth). */
static int load_server(manager *m, const char *name, server_record *ret, bool *ret_system_encrypted,
                       sd_bus_error *error) {
        _cleanup_(server_record_done) server_record s = {};
        int r;

        r = server_record_load(m, name, &s, error);
        if (r < 0)
                return r;
        r = disk_spec_read_header(&s.system);
        if (r < 0)
                return r;
        *ret_system_encrypted = r > 0;
        for (size_t i = 0; i < s.n_data; i++)
                if (disk_spec_read_header(&s.data[i]) < 0)
                        return -ENOMEM;
        *ret = s;
        s = (server_record) {};
        return 0;
}

int as_config_create(manager *m, const char *name, const char *server, as_config_record *ret, sd_bus_error *error) {
        _cleanup_(as_config_record_done) as_config_record v = {};
        _cleanup_(server_record_done) server_record s = {};
        bool system_encrypted = false;
        size_t bad = 0;
        int r;

        if (!server_name_valid(name))
                return evs_bus_error_setf(
                        error, EINVAL,
                        "Invalid AS configuration name '%s': 1-%u characters of [A-Za-z0-9._-], not starting with '.'.",
                        strempty(name), SERVER_NAME_MAX);
        r = as_config_db_load(m->config.state_dir, name, &v);
        if (r != -ENXIO)
                return r >= 0 ? evs_bus_error_setf(error, EEXIST, "An AS configuration named %s exists already.", name)
                              : record_error(m, KIND, "AS configuration", name, r, error);
        r = load_server(m, server, &s, &system_encrypted, error);
        if (r < 0)
                return r;
        r = inherit_as_config_from_server(name, &s, system_encrypted, now_realtime(), &v, &bad);
        if (r == -ENODATA)
                return evs_bus_error_setf(
                        error, ENODATA,
                        "Refusing to make AS configuration %s from server %s: its system disk %s is not encrypted.",
                        name, s.name, s.system.device);
        if (r == -ENOMSG)
                return evs_bus_error_setf(error, ENODATA, "Server %s has no image recorded.", s.name);
        if (r == -ENOKEY)
                return evs_bus_error_setf(error, ENODATA, "Data disk %s of server %s: its header cannot be read.",
                                          s.data[bad].device, s.name);
        if (r < 0)
                return r;

        /* Each launched disk must be as large as the server's. */
        for (size_t i = 0; i < s.n_data; i++) {
                r = path_size(s.data[i].device, &v.data[i].size);
                if (r < 0)
                        return evs_bus_error_setf(error, -r, "Cannot size data disk %s of server %s: %s.",
                                                  s.data[i].device, s.name, strerror(-r));
        }
        r = path_size(s.system.device, &v.system.size);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot size the system disk of server %s: %s.", s.name,
                                          strerror(-r));
        r = as_config_db_save(m->config.state_dir, &v);
        if (r < 0)
                return evs_bus_error_setf(error, -r, "Cannot record AS configuration %s: %s.", name, strerror(-r));
        log_id(LOG_INFO, 0, EVS_MESSAGE_AS_CONFIG_CREATED, "Created AS configuration %s from server %s: image %s, system key %s (%s), %zu data disk(s).", name,
                 s.name, v.image, v.system.key_id, v.system.backend, v.n_data);
        fill_live(m, &v);
        *ret = v;
        v = (as_config_record) {};
        return 0;
}

int as_config_get(manager *m, const char *name, as_config_record *ret, sd_bus_error *error) {
        int r;

        r = as_config_record_load(m, name, ret, error);
        if (r < 0)
                return r;
        fill_live(m, ret);
        return 0;
}

/* For the list: a record that does not load is listed too, by name alone (a broken file never makes an AS
 * configuration vanish); ListUnreadableRecords says why. */
static int load_one(void *userdata, const char *name, void *record) {
        manager *m = userdata;
        as_config_record *v = record;
        int r = as_config_db_load(m->config.state_dir, name, v);

        if (r >= 0) {
                fill_live(userdata, v);
                return r;
        }
        if (r == -ENXIO || r == -ENOMEM) /* -ENXIO: removed since the listing */
                return r;
        v->name = strdup(name);
        v->corrupt = docstore_error(m->config.state_dir, KIND, name, r);
        if (!v->name || !v->corrupt) {
                as_config_record_done(v);
                return -ENOMEM;
        }
        log_warning("AS configuration %s: %s; it is listed as unreadable.", name, v->corrupt);
        return 0;
}

int as_config_list(manager *m, as_config_record **ret, size_t *ret_n, sd_bus_error *error) {
        int r;

        r = docstore_load_all(m->config.state_dir, KIND, sizeof(as_config_record), load_one, m, (void **) ret, ret_n);
        if (r < 0)
                return evs_bus_error_setf(error, r, "Cannot list AS configurations: %s.", strerror(-r));
        return 0;
}

int as_config_delete(manager *m, const char *name, as_config_record *ret, sd_bus_error *error) {
        _cleanup_(as_config_record_done) as_config_record v = {};
        int r;

        r = as_config_get(m, name, &v, error);
        if (r < 0)
                return r;
        r = docstore_remove(m->config.state_dir, KIND, v.name);
        if (r < 0 && r != -ENOENT)
                return evs_bus_error_setf(error, -r, "Cannot delete AS configuration %s: %s.", v.name, strerror(-r));
        log_id(LOG_INFO, 0, EVS_MESSAGE_AS_CONFIG_DELETED, "Deleted AS configuration %s.", v.name);
        *ret = v;
        v = (as_config_record) {};
        return 0;
}
