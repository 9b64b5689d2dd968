/* SPDX-License-Identifier: MIT */
#pragma once

/* The manager owns the event loop, the configuration and the ports. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "macro.h"

typedef struct Port Port;

typedef struct Manager {
        sd_event *event;
        char *config_path;
        char **port_filter;             /* --port NAME...; NULL: every port of the file */
        size_t n_port_filter;
        char *control_path;             /* --control; else the file's */
        uint32_t reply_timeout_ms;
        Config *config;
        Port **ports;
        size_t n_ports;
} Manager;

int manager_new(Manager **ret);
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);

/* Loads the config and opens the ports (first start). */
int manager_load(Manager *m);
/* SIGHUP: ports added and removed, changed ones restarted; a bad file keeps the old one. */
int manager_reload(Manager *m);
int manager_run(Manager *m);

Port *manager_find_port(Manager *m, const char *name);

uint64_t now_usec(void);
