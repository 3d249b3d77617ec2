/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>
#include <limits.h>
#include <stdarg.h>
#include <strings.h>

#include "build-config.h"
#include "config.h"
#include "fileio.h"
#include "string-util.h"

#define CONFIG_LINE_MAX (64U * 1024U)
#define CONFIG_FILE_MAX (1024U * 1024U)
#define COMMENT_CHARS "#;"
#define WHITESPACE " \t\r\n\v\f"

typedef struct parse_state {
        evs_config *config;
        FILE *f;
        const char *file;
        unsigned line;
        char *error;           /* first error, "FILE:LINE: reason" */
        unsigned error_line;
        char **default_where;  /* "FILE:LINE" of the DefaultBackend= in effect, across files */
} parse_state;

int parse_boolean(const char *s) {
        static const char *const yes[] = { "1", "yes", "y", "true", "t", "on" };
        static const char *const no[] = { "0", "no", "n", "false", "f", "off" };

        for (size_t i = 0; i < ELEMENTSOF(yes); i++)
                if (strcasecmp(s, yes[i]) == 0)
                        return 1;
        for (size_t i = 0; i < ELEMENTSOF(no); i++)
                if (strcasecmp(s, no[i]) == 0)
                        return 0;
        return -EINVAL;
}

static int set_error_at(parse_state *p, unsigned line, const char *fmt, ...) _printf_(3, 4);
static int set_error_at(parse_state *p, unsigned line, const char *fmt, ...) {
        _cleanup_free_ char *msg = NULL;
        va_list ap;
        int k;

        if (p->error)
                return 0; /* keep the first */
        va_start(ap, fmt);
        k = vasprintf(&msg, fmt, ap);
        va_end(ap);
        if (k < 0 || asprintf(&p->error, "%s:%u: %s", p->file, line, msg) < 0)
                p->error = NULL;
        p->error_line = line;
        return 0;
}
#define set_error(p, ...) set_error_at((p), (p)->line, __VA_ARGS__)

static kms_backend_config *find_backend(evs_config *c, const char *name) {
        for (size_t i = 0; i < c->n_backends; i++)
                if (streq(c->backends[i].name, name))
                        return &c->backends[i];
        return NULL;
}

const kms_backend_config *evs_config_backend(const evs_config *c, const char *name) {
        return find_backend((evs_config *) c, name);
}

static kms_backend_config *add_backend(evs_config *c, const char *name) {
        kms_backend_config *a, *b;

        b = find_backend(c, name);
        if (b)
                return b;
        a = reallocarray(c->backends, c->n_backends + 1, sizeof(kms_backend_config));
        if (!a)
                return NULL;
        c->backends = a;
        b = &c->backends[c->n_backends];
        *b = (kms_backend_config) { .name = strdup(name) };
        if (!b->name)
                return NULL;
        c->n_backends++;
        return b;
}

static int add_setting(parse_state *p, kms_backend_config *b, const char *key, const char *value) {
        kms_setting *a;

        if (streq(key, "Type"))
                return free_and_strdup(&b->type, value);

        a = reallocarray(b->settings, b->n_settings + 1, sizeof(kms_setting));
        if (!a)
                return -ENOMEM;
        b->settings = a;
        a[b->n_settings] = (kms_setting) {
                .key = strdup(key),
                .value = strdup(value),
                .file = strdup(p->file),
                .line = p->line,
        };
        b->n_settings++;
        if (!a[b->n_settings - 1].key || !a[b->n_settings - 1].value || !a[b->n_settings - 1].file)
                return -ENOMEM;
        return 0;
}

static int handle_daemon(parse_state *p, const char *key, const char *value) {
        evs_config *c = p->config;
        int r;

        if (streq(key, "StateDirectory") || streq(key, "BusPath")) {
                if (value[0] != '/' || strlen(value) >= PATH_MAX)
                        return set_error(p, "%s= must be an absolute path: %s", key, value);
                return free_and_strdup(streq(key, "BusPath") ? &c->bus_path : &c->state_dir, value);
        }
        if (streq(key, "AutoAttach")) {
                r = parse_boolean(value);
                if (r < 0)
                        return set_error(p, "AutoAttach= is not a boolean: %s", value);
                c->auto_attach = r;
                return 0;
        }
        if (streq(key, "RefuseUnboundKeyslots")) {
                r = parse_boolean(value);
                if (r < 0)
                        return set_error(p, "RefuseUnboundKeyslots= is not a boolean: %s", value);
                c->refuse_unbound_keyslots = r;
                return 0;
        }
        if (streq(key, "SweepIntervalSec")) {
                if (parse_unsigned(value, 1, 7 * 86400, &c->sweep_interval_sec) < 0)
                        return set_error(p, "SweepIntervalSec= must be 1..604800: %s", value);
                return 0;
        }
        return set_error(p, "unknown key %s= in [Daemon]", key);
}

/* The section header @name (between the brackets) on line @line: 0 when known, else the error is set. */
static int check_section(parse_state *p, const char *name, unsigned line) {
        if (streq(name, "Daemon") || streq(name, "KMS"))
                return 0;
        if (strncmp(name, "Backend ", 8) == 0) {
                if (backend_name_valid(name + 8))
                        return 0;
                set_error_at(p, line, "[%s]: backend names are 1-64 of [A-Za-z0-9_-]", name);
                return -EINVAL;
        }
        set_error_at(p, line, "unknown section [%s]", name);
        return -EINVAL;
}

/* Key=Value on line p->line, in the known section @section. */
static void handle_key(parse_state *p, const char *section, const char *key, const char *value) {
        int r = 0;

        if (streq(section, "Daemon"))
                r = handle_daemon(p, key, value);
        else if (streq(section, "KMS")) {
                if (!streq(key, "DefaultBackend"))
                        r = set_error(p, "unknown key %s= in [KMS]", key);
                else if (!backend_name_valid(value))
                        r = set_error(p, "DefaultBackend= is not a backend name: %s", value);
                else {
                        r = free_and_strdup(&p->config->default_backend, value);
                        free(*p->default_where);
                        if (asprintf(p->default_where, "%s:%u", p->file, p->line) < 0) {
                                *p->default_where = NULL;
                                r = -ENOMEM;
                        }
                }
        } else {
                kms_backend_config *b = add_backend(p->config, section + strlen("Backend "));

                r = b ? add_setting(p, b, key, value) : -ENOMEM;
        }
        if (r < 0)
                set_error(p, "out of memory");
}

static char *strip(char *s) {
        size_t n;

        s += strspn(s, WHITESPACE);
        n = strlen(s);
        while (n > 0 && strchr(WHITESPACE, s[n - 1]))
                s[--n] = '\0';
        return s;
}

/* One logical line (continuations joined), which began on line p->line. Errors are set; parsing goes on, the
 * first error is the one reported. */
static int parse_line(parse_state *p, char *l, char **section) {
        char *eq, *key, *value;

        l = strip(l); /* comment lines never start one (parse_stream() skips them) */
        if (l[0] == '\0')
                return 0;
        if (l[0] == '[') {
                size_t n = strlen(l);

                *section = mfree(*section);
                if (n < 3 || l[n - 1] != ']')
                        return set_error(p, "syntax error (expected [Section] or Key=Value)");
                l[n - 1] = '\0';
                if (check_section(p, l + 1, p->line) < 0)
                        return 0; /* its keys are skipped: that error is the one to read */
                *section = strdup(l + 1);
                return *section ? 0 : -ENOMEM;
        }
        eq = strchr(l, '=');
        if (!eq || eq == l)
                return set_error(p, "syntax error (expected [Section] or Key=Value)");
        *eq = '\0';
        key = strip(l);
        value = strip(eq + 1);
        if (!*section) {
                /* no section yet, or keys of a section whose header was refused */
                if (!p->error)
                        set_error(p, "%s= is outside of any [Section]", key);
                return 0;
        }
        handle_key(p, *section, key, value);
        return 0;
}

/* The logical line that began on line @first (p->line is where it ended): parsed, or refused as too long. */
static int end_line(parse_state *p, unsigned first, char *logical, bool too_long, char **section) {
        unsigned last = p->line;
        int r;

        p->line = first;
        if (too_long)
                r = set_error(p, "the line is longer than %u characters", CONFIG_LINE_MAX);
        else
                r = parse_line(p, logical, section);
        p->line = last;
        return r;
}

/* The syntax of systemd's unit files: whitespace around a line, a key and a value is dropped; empty lines
 * and lines starting with # or ; are comments, and nothing after a value is (a ; or # there is part of the
 * value); a line ending in a backslash (not one escaped by another) goes on on the next one, the backslash
 * read as a space (comment lines within are skipped, and a comment never goes on); a UTF-8 byte order mark
 * may start the file. Logical lines of up to CONFIG_LINE_MAX characters. -ENOMEM, -EIO; syntax errors are
 * set in @p. */
static int parse_stream(parse_state *p) {
        _cleanup_free_ char *buf = NULL, *logical = NULL, *section = NULL;
        size_t cap = 0, len = 0;
        unsigned first = 0; /* where the logical line under way began, 0 when none is */
        bool too_long = false;
        ssize_t n;
        int r;

        while ((n = getline(&buf, &cap, p->f)) >= 0) {
                char *l = buf, *t;
                size_t k;
                bool more = false;

                p->line++;
                if (memchr(buf, '\0', (size_t) n)) {
                        set_error(p, "the line holds a NUL byte");
                        continue;
                }
                if (p->line == 1 && strncmp(l, "\xef\xbb\xbf", 3) == 0)
                        l += 3;
                k = strlen(l);
                while (k > 0 && strchr(WHITESPACE, l[k - 1]))
                        l[--k] = '\0';
                t = l + strspn(l, WHITESPACE);
                if (*t && strchr(COMMENT_CHARS, *t))
                        continue;
                for (size_t b = k; b > 0 && l[b - 1] == '\\'; b--)
                        more = !more; /* an odd number of backslashes: the last one is not escaped */
                if (more)
                        l[k - 1] = ' ';
                if (first == 0)
                        first = p->line;
                if (len + k > CONFIG_LINE_MAX)
                        too_long = true;
                if (!too_long) {
                        char *a = realloc(logical, len + k + 1);

                        if (!a)
                                return -ENOMEM;
                        logical = a;
                        memcpy(logical + len, l, k + 1);
                        len += k;
                }
                if (more)
                        continue;
                r = end_line(p, first, logical, too_long, &section);
                if (r < 0)
                        return r;
                first = 0;
                len = 0;
                too_long = false;
        }
        if (ferror(p->f))
                return -EIO;
        if (first > 0) /* the file ends in a backslash */
                return end_line(p, first, logical, too_long, &section);
        return 0;
}

/* Parses @path. -ENOENT (no error set) when it does not exist; -EINVAL with *ret_error "FILE:LINE: reason",
 * or "FILE: reason" when it cannot be read (a directory, a FIFO, a dangling link...: read_full_file()); -ENOMEM. */
static int parse_file(evs_config *c, const char *path, char **default_where, char **ret_error) {
        parse_state p = { .config = c, .file = path, .default_where = default_where };
        _cleanup_free_ char *data = NULL;
        size_t size = 0;
        int r;

        r = read_full_file(path, CONFIG_FILE_MAX, &data, &size);
        if (r == -ENOENT || r == -ENOMEM)
                return r;
        if (r < 0) {
                if (asprintf(ret_error, "%s: %s", path, read_file_error(r)) < 0)
                        *ret_error = NULL;
                return -EINVAL;
        }
        if (size == 0)
                return 0;
        p.f = fmemopen(data, size, "r");
        if (!p.f)
                return -ENOMEM;
        r = parse_stream(&p);
        fclose(p.f);
        if (r < 0) {
                free(p.error);
                return r;
        }
        if (p.error) {
                *ret_error = p.error;
                return -EINVAL;
        }
        return 0;
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static int parse_dropins(evs_config *c, const char *path, char **default_where, char **ret_error) {
        _cleanup_free_ char *dir = NULL;
        char **names = NULL;
        size_t n = 0;
        struct dirent *de;
        DIR *d;
        int r = 0;

        if (asprintf(&dir, "%s.d", path) < 0)
                return -ENOMEM;
        d = opendir(dir);
        if (!d) {
                r = negative_errno();
                if (r == -ENOENT)
                        return 0;
                if (asprintf(ret_error, "%s: %s", dir, strerror(-r)) < 0)
                        *ret_error = NULL;
                return -EINVAL;
        }
        while ((de = readdir(d))) {
                size_t len = strlen(de->d_name);
                char **a;

                if (de->d_name[0] == '.' || len < 6 || !streq(de->d_name + len - 5, ".conf"))
                        continue;
                a = reallocarray(names, n + 1, sizeof(char *));
                if (!a || !(a[n] = strdup(de->d_name))) {
                        names = a ?: names;
                        r = -ENOMEM;
                        break;
                }
                names = a;
                n++;
        }
        closedir(d);

        if (r >= 0 && n > 0)
                qsort(names, n, sizeof(char *), cmp_str);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                _cleanup_free_ char *file = NULL;

                if (asprintf(&file, "%s/%s", dir, names[i]) < 0)
                        r = -ENOMEM;
                else {
                        r = parse_file(c, file, default_where, ret_error);
                        if (r == -ENOENT) { /* a dangling symbolic link, or gone since the listing */
                                if (asprintf(ret_error, "%s: %s", file, read_file_error(r)) < 0)
                                        *ret_error = NULL;
                                r = -EINVAL;
                        }
                }
        }
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
        return r;
}

int evs_config_load(const char *path, bool must_exist, evs_config *ret, char **ret_error) {
        _cleanup_(evs_config_done) evs_config c = {
                .auto_attach = true,
                .sweep_interval_sec = 3600,
        };
        _cleanup_free_ char *default_where = NULL;
        kms_backend_config *local;
        int r;

        *ret_error = NULL;
        c.state_dir = strdup(EVS_STATE_DIR);
        c.bus_path = strdup(EVS_BUS_PATH);
        c.default_backend = strdup(KMS_LOCAL_BACKEND);
        if (!c.state_dir || !c.bus_path || !c.default_backend)
                return -ENOMEM;

        if (path) {
                r = parse_file(&c, path, &default_where, ret_error);
                if (r == -ENOENT && !must_exist)
                        r = 0;
                else if (r == -ENOENT) {
                        if (asprintf(ret_error, "%s: %s", path, strerror(-r)) < 0)
                                *ret_error = NULL;
                        return r;
                }
                if (r < 0)
                        return r;
                r = parse_dropins(&c, path, &default_where, ret_error);
                if (r < 0)
                        return r;
        }

        /* The local backend always exists. */
        local = add_backend(&c, KMS_LOCAL_BACKEND);
        if (!local)
                return -ENOMEM;
        if (!local->type && !(local->type = strdup("local")))
                return -ENOMEM;

        for (size_t i = 0; i < c.n_backends; i++)
                if (!c.backends[i].type) {
                        /* A section only exists through its settings: point at the first one. */
                        const kms_setting *first = c.backends[i].n_settings > 0 ? &c.backends[i].settings[0] : NULL;

                        if (asprintf(ret_error, "%s:%u: [Backend %s] has no Type=", first ? first->file : strna(path),
                                     first ? first->line : 0, c.backends[i].name) < 0)
                                *ret_error = NULL;
                        return -EINVAL;
                }
        if (!find_backend(&c, c.default_backend)) {
                if (asprintf(ret_error, "%s: DefaultBackend=%s names no [Backend %s] section",
                             default_where ?: strna(path), c.default_backend, c.default_backend) < 0)
                        *ret_error = NULL;
                return -EINVAL;
        }

        *ret = c;
        c = (evs_config) {};
        return 0;
}

void evs_config_done(evs_config *c) {
        if (!c)
                return;
        free(c->state_dir);
        free(c->bus_path);
        free(c->default_backend);
        for (size_t i = 0; i < c->n_backends; i++)
                kms_backend_config_done(&c->backends[i]);
        free(c->backends);
        *c = (evs_config) {};
}
