/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "docstore.h"
#include "errors.h"
#include "image.h"
#include "log.h"
#include "records.h"
#include "string-util.h"
#include "strv.h"
#include "volume-db.h"

int record_error(manager *m, const char *kind, const char *what, const char *name, int r, sd_bus_error *error) {
        _cleanup_free_ char *why = NULL;
        int e;

        if (r == -ENOMEM)
                return r;
        why = docstore_error(m->config.state_dir, kind, name, r);
        if (!why)
                return -ENOMEM;
        log_warning("%s %s: %s.", what, name, why);
        /* A file that is not a record (garbage, a directory, a symlink, a FIFO, too large): a corrupt state file. */
        e = r == -EUCLEAN || r == -EISDIR || r == -ELOOP || r == -EBADF || r == -EFBIG ? EUCLEAN : -r;
        return evs_bus_error_setf(error, e, "%s %s: %s.", what, name, why);
}

int server_record_load(manager *m, const char *name, server_record *ret, sd_bus_error *error) {
        int r;

        if (isempty(name))
                return evs_bus_error_setf(error, EINVAL, "No server given.");
        r = server_db_load(m->config.state_dir, name, ret);
        if (r == -ENXIO)
                return evs_bus_error_setf(error, ENXIO, "No server %s.", name);
        if (r < 0)
                return record_error(m, SERVER_KIND, "Server", name, r, error);
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
                return record_error(m, AS_CONFIG_KIND, "AS configuration", name, r, error);
        return 0;
}

void unreadable_record_array_free(unreadable_record *l, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(l[i].id);
                free(l[i].reason);
        }
        free(l);
}

/* -ENOENT/-ENXIO (no such record: removed since the listing), or the error of loading record @id of @kind. */
static int load_error(manager *m, const char *kind, const char *id) {
        const char *dir = m->config.state_dir;
        int r;

        if (streq(kind, "volumes")) {
                _cleanup_(volume_record_done) volume_record v = {};
                r = volume_db_load(dir, id, &v);
        } else if (streq(kind, "images")) {
                _cleanup_(image_record_done) image_record v = {};
                r = image_db_load(dir, id, &v);
        } else if (streq(kind, SERVER_KIND)) {
                _cleanup_(server_record_done) server_record v = {};
                r = server_db_load(dir, id, &v);
        } else {
                _cleanup_(as_config_record_done) as_config_record v = {};
                r = as_config_db_load(dir, id, &v);
        }
        return r == -ENOENT ? -ENXIO : r;
}

int records_unreadable(manager *m, unreadable_record **ret, size_t *ret_n) {
        static const char *const kinds[] = { "volumes", "images", SERVER_KIND, AS_CONFIG_KIND };
        unreadable_record *l = NULL;
        size_t n = 0;
        int r = 0;

        for (size_t k = 0; r >= 0 && k < ELEMENTSOF(kinds); k++) {
                _cleanup_(strv_freep) char **ids = NULL;

                if (docstore_list(m->config.state_dir, kinds[k], &ids) < 0)
                        continue; /* the directory cannot be listed: its list method says so */
                STRV_FOREACH(id, ids) {
                        unreadable_record *a;
                        int e = load_error(m, kinds[k], *id);

                        if (e >= 0 || e == -ENXIO)
                                continue;
                        if (e == -ENOMEM) {
                                r = e;
                                break;
                        }
                        a = reallocarray(l, n + 1, sizeof(unreadable_record));
                        if (!a) {
                                r = -ENOMEM;
                                break;
                        }
                        l = a;
                        l[n] = (unreadable_record) { .kind = kinds[k], .id = strdup(*id),
                                                     .reason = docstore_error(m->config.state_dir, kinds[k], *id, e) };
                        n++;
                        if (!l[n - 1].id || !l[n - 1].reason) {
                                r = -ENOMEM;
                                break;
                        }
                }
        }
        if (r < 0) {
                unreadable_record_array_free(l, n);
                return r;
        }
        *ret = l;
        *ret_n = n;
        return 0;
}

void records_warn_unreadable(manager *m) {
        unreadable_record *l = NULL;
        size_t n = 0;

        if (records_unreadable(m, &l, &n) < 0)
                return;
        for (size_t i = 0; i < n; i++) {
                if (streq(l[i].kind, "volumes"))
                        continue; /* volume_reconcile() says it, with what the volume list shows */
                log_warning("%s %s: %s; it is listed as unreadable until the file is restored or removed.",
                            streq(l[i].kind, "images") ? "Image" : streq(l[i].kind, SERVER_KIND) ? "Server"
                                                                                                   : "AS configuration",
                            l[i].id, l[i].reason);
        }
        unreadable_record_array_free(l, n);
}
