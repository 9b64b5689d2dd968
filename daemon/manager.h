/* SPDX-License-Identifier: MIT */
#pragma once

/* The manager owns the event loop, the configuration and the ports. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "ioset.h"
#include "macro.h"

#include <json-c/json.h>

typedef struct Port Port;
typedef struct ControlServer ControlServer;
typedef struct LinkMap LinkMap;
typedef struct FdStore FdStore;

typedef enum PortEvent {
        EVENT_FRONTEND_CONNECTED,
        EVENT_FRONTEND_DISCONNECTED,
        EVENT_BACKEND_CONNECTED,
        EVENT_BACKEND_DISCONNECTED,
        EVENT_REPLAY_DONE,
        EVENT_REPLAY_FAILED,
        EVENT_INCOMPATIBLE,
        EVENT_LINK_UP,
        EVENT_LINK_DOWN,
        _PORT_EVENT_MAX,
        _PORT_EVENT_INVALID = -22,
} PortEvent;

typedef struct Manager {
        sd_event *event;
        char *config_path;
        char **port_filter;             /* --port NAME...; NULL: every port of the file */
        size_t n_port_filter;
        char *control_path;             /* --control; else the file's */
        uint32_t reply_timeout_ms;
        uint32_t replay_handoff_ms;
        /* replays under way and not yet boosted, oldest first; checked after every batch of the ports' sockets */
        Port *replay_head, *replay_tail;
        /* back-ends connected whose log line and event wait for the next line or event (the
         * replay's), or ANNOUNCE_DELAY_USEC at most (the announce timer) */
        Port *announce_head, *announce_tail;
        sd_event_source *announce;
        sd_event_source *fdstore_commit;        /* after each dispatch: FdStore commits */
        FdStore *fdstore;               /* the fd store mirror (fdstore.h) */
        IoSet *ioset;                   /* the ports' sockets (see ioset.h) */
        struct PeerWatcher *peer_watcher;       /* client mode: the peers' socket paths (one inotify fd) */
        Config *config;
        Port **ports;
        size_t n_ports;
        ControlServer *control;
        LinkMap *link_map;
        struct MetricsServer *metrics;  /* HTTP /metrics (metrics.h); NULL: off */

        /* fds systemd passed at start: socket units' listeners and the fd store */
        int *passed_fds;
        char **passed_names;
        size_t n_passed;

        bool stopping;                  /* SIGTERM: finishing what is in flight */
        uint64_t stop_deadline_usec;
        sd_event_source *stop_timer;
        bool keep_sockets;              /* the listeners live on in the fd store */
} Manager;

int manager_new(Manager **ret);
Manager *manager_free(Manager *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);

/* Loads the config and opens the ports (first start). */
int manager_load(Manager *m);
/* SIGHUP: ports added and removed, changed ones restarted; a bad file keeps the old one
 * (and err says why). */
int manager_reload(Manager *m, char *err, size_t errlen);
int manager_run(Manager *m);

Port *manager_find_port(Manager *m, const char *name);

/* The handoff (as the Linux rwsem lock handoff): a replay that has waited longer than
 * replay_handoff_ms since its back-end connected gets its back-end connection served before
 * every other event source, until it is done. Begin when the probe starts; end when the
 * replay is done or its back-end gone. */
void manager_replay_begin(Manager *m, Port *p);
void manager_replay_end(Manager *m, Port *p);

/* A listening unix socket that systemd passed (socket unit or fd store) bound to path, or
 * -1. The caller owns it; *ret_name says where it came from. */
int manager_take_listener(Manager *m, const char *path, const char **ret_name);
/* Takes the passed fd of that name (or -1); the caller owns it. */
int manager_take_passed(Manager *m, const char *name);
/* Tells systemd the one-line state: "3 ports, 2 up". */
void manager_update_status(Manager *m);

/* A port changed: tell the control socket's monitors and the BPF link map. Takes details
 * (extra fields of the event; may be NULL). */
void manager_port_event(Manager *m, Port *p, PortEvent e, json_object *details);
/* The same, stamped with the times it happened at rather than now. */
void manager_port_event_at(Manager *m, Port *p, PortEvent e, json_object *details, uint64_t monotonic_usec,
                           uint64_t realtime_usec);
const char *port_event_to_string(PortEvent e);

uint64_t now_usec(void);
uint64_t now_realtime_usec(void);
