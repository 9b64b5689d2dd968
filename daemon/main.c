/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build-config.h"
#include "log.h"
#include "manager.h"

static void help(void) {
        printf("vhost-recond [OPTIONS]\n\n"
               "Holds the vhost-user sockets of many ports and replays each device's setup to\n"
               "the switch every time it (re)connects.\n\n"
               "  -c --config FILE     configuration (default " CONFIG_DEFAULT_PATH ")\n"
               "  -p --port NAME       serve only this port (repeatable); a port the file\n"
               "                       does not list gets /run/vhost-recon/NAME.sock and\n"
               "                       /run/vhost-recon/NAME.vswitch.sock\n"
               "     --control PATH    control socket (default: the file's 'control')\n"
               "  -v --verbose         log every message\n"
               "  -h --help            this help\n"
               "     --version         version\n");
}

static int add_filter(Manager *m, const char *name) {
        char **a = realloc(m->port_filter, sizeof(char *) * (m->n_port_filter + 1));
        if (!a)
                return -ENOMEM;
        m->port_filter = a;
        if (!port_name_is_valid(name)) {
                log_error("Invalid port name '%s'", name);
                return -EINVAL;
        }
        if (!(m->port_filter[m->n_port_filter] = strdup(name)))
                return -ENOMEM;
        m->n_port_filter++;
        return 0;
}

int main(int argc, char *argv[]) {
        enum { ARG_CONTROL = 0x100, ARG_VERSION };
        static const struct option options[] = {
                { "config",  required_argument, NULL, 'c' },
                { "port",    required_argument, NULL, 'p' },
                { "control", required_argument, NULL, ARG_CONTROL },
                { "verbose", no_argument,       NULL, 'v' },
                { "help",    no_argument,       NULL, 'h' },
                { "version", no_argument,       NULL, ARG_VERSION },
                {}
        };
        _cleanup_(manager_freep) Manager *m = NULL;
        int c, r;

        r = manager_new(&m);
        if (r < 0) {
                log_error_errno(r, "Cannot set up the event loop: %m");
                return EXIT_FAILURE;
        }

        while ((c = getopt_long(argc, argv, "c:p:vh", options, NULL)) >= 0)
                switch (c) {
                case 'c':
                        free(m->config_path);
                        m->config_path = strdup(optarg);
                        break;
                case 'p':
                        if (add_filter(m, optarg) < 0)
                                return EXIT_FAILURE;
                        break;
                case ARG_CONTROL:
                        free(m->control_path);
                        m->control_path = strdup(optarg);
                        break;
                case 'v':
                        log_max_level = LOG_DEBUG;
                        break;
                case 'h':
                        help();
                        return EXIT_SUCCESS;
                case ARG_VERSION:
                        printf("vhost-recond %s\n", VERSION);
                        return EXIT_SUCCESS;
                default:
                        return EXIT_FAILURE;
                }
        if (optind < argc) {
                log_error("Unexpected argument '%s'; see --help", argv[optind]);
                return EXIT_FAILURE;
        }
        if (!m->config_path && !(m->config_path = strdup(CONFIG_DEFAULT_PATH)))
                return EXIT_FAILURE;

        r = manager_load(m);
        if (r < 0)
                return EXIT_FAILURE;
        r = manager_run(m);
        if (r < 0) {
                log_error_errno(r, "Event loop failed: %m");
                return EXIT_FAILURE;
        }
        return EXIT_SUCCESS;
}
