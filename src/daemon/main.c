/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

#include "build-config.h"
#include "kms-registry.h"
#include "log.h"
#include "manager.h"
#include "udev-watch.h"

#ifdef __SANITIZE_THREAD__
/* ThreadSanitizer builds only (scripts/test.sh). libsystemd's hashmaps, made by sd-device on the engine's
 * workers and by sd-bus and sd-event on the loop thread, all copy their hash key from one static buffer that
 * get_hash_key() (systemd's hashmap.c) refills with getrandom() without a lock: a torn copy is as random a
 * key, so the race is harmless, and libsystemd has no symbols to name it by; the interceptor's frame is
 * the narrowest name TSan matches. */
const char *__tsan_default_suppressions(void);
_public_ const char *__tsan_default_suppressions(void) {
        return "race:getrandom\n";
}
#endif

static const char *arg_config = NULL;
static bool arg_check_config = false;

static void help(void) {
        printf("evs-cryptd [OPTIONS]\n\n"
               "Maps EVS volumes to dm-crypt targets, unlocking each with its KMS-wrapped data key.\n\n"
               "  -h --help           Show this help\n"
               "     --version        Show the version\n"
               "  -c --config=PATH    Configuration file (default " EVS_CONFIG_FILE ")\n"
               "  -d --debug          Log at debug level\n"
               "     --check-config   Load the configuration and open every KMS backend (without\n"
               "                      contacting any KMS), report, and exit 0 if it is valid, 1 if not\n\n"
               "See evs-cryptd(8) and evs-cryptd.conf(5).\n");
}

static int parse_argv(int argc, char *argv[]) {
        enum { ARG_VERSION = 0x100, ARG_CHECK_CONFIG };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "config", required_argument, NULL, 'c' },
                { "debug", no_argument, NULL, 'd' },
                { "check-config", no_argument, NULL, ARG_CHECK_CONFIG },
                {},
        };
        int c;

        while ((c = getopt_long(argc, argv, "hc:d", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        puts("evs-cryptd " PACKAGE_VERSION);
                        return 0;
                case 'c':
                        arg_config = optarg;
                        break;
                case 'd':
                        log_set_max_level(LOG_DEBUG);
                        break;
                case ARG_CHECK_CONFIG:
                        arg_check_config = true;
                        break;
                default:
                        return -EINVAL;
                }
        if (optind < argc)
                return log_error_errno(EINVAL, "Unexpected argument: %s", argv[optind]);
        return 1;
}

/* --check-config: what manager_new() does with the configuration, without side effects (no state
 * directory is created, no KMS is contacted: backends validate their settings in open()). */
static int check_config(void) {
        _cleanup_(evs_config_done) evs_config c = {};
        _cleanup_(kms_registry_freep) kms_registry *reg = NULL;
        _cleanup_free_ char *error = NULL;
        const char *path = arg_config ?: EVS_CONFIG_FILE;
        int r;

        r = evs_config_load(path, !!arg_config, &c, &error);
        if (r < 0)
                return log_error_errno(r, "Bad configuration: %s", error ?: strerror(-r));
        r = kms_registry_new(&c, NULL, &reg, &error);
        if (r < 0)
                return log_error_errno(r, "Bad KMS configuration: %s", error ?: strerror(-r));

        printf("%s: OK\n", path);
        printf("  StateDirectory=%s\n  BusPath=%s\n  AutoAttach=%s\n  RefuseUnboundKeyslots=%s\n  SweepIntervalSec=%u\n",
               c.state_dir, c.bus_path, c.auto_attach ? "yes" : "no", c.refuse_unbound_keyslots ? "yes" : "no",
               c.sweep_interval_sec);
        for (size_t i = 0; i < c.n_backends; i++)
                printf("  [Backend %s] Type=%s%s\n", c.backends[i].name, c.backends[i].type,
                       streq(c.backends[i].name, c.default_backend) ? " (default)" : "");
        return 0;
}

/* Requests in progress: KMS waits are cancelled, device steps finish (a mapping opened is recorded),
 * the rest are answered "shutting down"; the loop ends when all are done, or after 3 s. */
static int on_stop_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        manager *m = userdata;

        (void) sd_notify(false, "STOPPING=1\nSTATUS=Shutting down; open mappings stay open.");
        return engine_begin_stop(m->engine, 3 * USEC_PER_SEC);
}

static int run(int argc, char *argv[]) {
        _cleanup_(manager_freep) manager *m = NULL;
        sigset_t mask;
        unsigned left;
        int r;

        log_setup("evs-cryptd", true);
        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;
        if (arg_check_config) {
                log_setup("evs-cryptd", false); /* an operator's shell: errors to stderr */
                return check_config();
        }

        /* Up to ENGINE_THREADS_MAX worker threads during a storm: two malloc arenas keep the memory
         * bounded (each thread would otherwise get an arena of its own, up to 8 per CPU). */
        (void) mallopt(M_ARENA_MAX, 2);

        /* Key material passes through this process: no core dumps, no ptrace by non-root. */
        if (prctl(PR_SET_DUMPABLE, 0) < 0)
                return log_error_errno(errno, "Failed to disable core dumps: %m");

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        (void) signal(SIGPIPE, SIG_IGN);

        r = manager_new(arg_config ?: EVS_CONFIG_FILE, !!arg_config, &m);
        if (r < 0)
                return r;

        r = sd_event_add_signal(m->event, NULL, SIGTERM, on_stop_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGINT, on_stop_signal, m);
        if (r >= 0)
                r = sd_event_set_watchdog(m->event, true);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the event loop: %m");

        r = manager_start(m);
        if (r < 0)
                return r;
        r = udev_watch_start(m);
        if (r < 0)
                return r;

        log_info("evs-cryptd " PACKAGE_VERSION " ready on %s (state %s, default backend %s).", m->config.bus_path,
                 m->config.state_dir, m->registry->default_backend);
        (void) sd_notify(false, "READY=1");
        manager_notify_status(m);

        r = sd_event_loop(m->event);
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Shutting down; open mappings stay open.");
        udev_watch_stop(m);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");

        left = engine_finish_stop(m->engine);
        if (left > 0) {
                log_warning("evs-cryptd stopping with %u request(s) still waiting on a KMS; open mappings stay "
                            "open.", left);
                _exit(EXIT_SUCCESS); /* their threads still use the backends: free nothing */
        }
        log_info("evs-cryptd stopping; open mappings stay open.");
        return 0;
}

int main(int argc, char *argv[]) {
        int r = run(argc, argv);

        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
