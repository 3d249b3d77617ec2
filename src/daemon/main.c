/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <getopt.h>
#include <signal.h>
#include <sys/prctl.h>
#include <systemd/sd-daemon.h>

#include "build-config.h"
#include "log.h"
#include "manager.h"
#include "udev-watch.h"

static const char *arg_config = NULL;

static void help(void) {
        printf("evs-cryptd [OPTIONS]\n\n"
               "Maps EVS volumes to dm-crypt targets, unlocking each with its KMS-wrapped data key.\n\n"
               "  -h --help           Show this help\n"
               "     --version        Show the version\n"
               "  -c --config=PATH    Configuration file (default " EVS_CONFIG_FILE ")\n"
               "  -d --debug          Log at debug level\n\n"
               "See evs-cryptd(8) and evs-cryptd.conf(5).\n");
}

static int parse_argv(int argc, char *argv[]) {
        enum { ARG_VERSION = 0x100 };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "config", required_argument, NULL, 'c' },
                { "debug", no_argument, NULL, 'd' },
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
                default:
                        return -EINVAL;
                }
        if (optind < argc)
                return log_error_errno(EINVAL, "Unexpected argument: %s", argv[optind]);
        return 1;
}

static int run(int argc, char *argv[]) {
        _cleanup_(manager_freep) manager *m = NULL;
        sigset_t mask;
        int r;

        log_setup("evs-cryptd", true);
        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;

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

        r = sd_event_add_signal(m->event, NULL, SIGTERM, NULL, NULL);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGINT, NULL, NULL);
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
        log_info("evs-cryptd stopping; open mappings stay open.");
        return 0;
}

int main(int argc, char *argv[]) {
        int r = run(argc, argv);

        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
