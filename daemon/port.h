/* SPDX-License-Identifier: MIT */
#pragma once

/* A port: one front-end connection that lives as long as the VM or app, one back-end
 * connection that may come and go, and the device shadow between them. */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <json-c/json.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "macro.h"
#include "metrics.h"
#include "connection.h"
#include "shadow.h"
#include "varlink.h"

typedef struct Manager Manager;

typedef enum BackendState {
        BACKEND_ABSENT,
        BACKEND_PROBING,        /* SET_OWNER, GET_FEATURES, GET_PROTOCOL_FEATURES */
        BACKEND_REPLAYING,      /* the shadow is being replayed, pipelined */
        BACKEND_READY,          /* messages flow through */
        BACKEND_STOPPING,       /* being stopped cleanly (GET_VRING_BASE) before a disconnect */
        _BACKEND_STATE_MAX,
        _BACKEND_STATE_INVALID = -22,
} BackendState;

/* A front-end request waiting to be forwarded or answered, in arrival order. */
typedef struct FrontendItem {
        struct FrontendItem *next;
        VuMsg msg;
        uint64_t seq;
        bool needs_reply;
        bool local;             /* answered by the daemon itself, never forwarded */
} FrontendItem;

typedef enum PendingOrigin {
        PENDING_PROBE,
        PENDING_REPLAY,
        PENDING_FRONTEND,
        PENDING_STOP,
        PENDING_INTERNAL,       /* the daemon's own request: an ack is only checked */
} PendingOrigin;

/* A request sent to the back-end whose answer is awaited; back-ends answer in order. */
typedef struct Pending {
        struct Pending *next;
        uint32_t request;
        bool ack;               /* a REPLY_ACK is awaited, not the request's own answer */
        PendingOrigin origin;
        FrontendItem *item;     /* PENDING_FRONTEND: the request to answer */
} Pending;

/* The longest wait between two connects in client mode (unless reconnect_ms is longer). */
#define PORT_RECONNECT_CAP_MS 5000u

typedef struct PortStats {
        uint64_t frontend_connects;
        uint64_t backend_connects;
        uint64_t replays_ok;
        uint64_t replays_failed;
        uint64_t incompatible;
        uint64_t refused_peers;
        uint64_t handoffs;              /* replays that waited past replay_handoff_ms */
        uint64_t throttled;             /* times the front-end was paused for flooding */
        uint64_t connect_failures;      /* client mode: connects that did not reach the peer */
        uint64_t last_replay_usec;      /* back-end connect -> replay acknowledged */
        uint64_t last_outage_usec;      /* link down -> link up */
} PortStats;

typedef struct Port {
        Manager *manager;
        PortConfig config;
        Shadow shadow;

        int listen_fd[_PORT_SIDE_MAX];
        IoWatch *listen_source[_PORT_SIDE_MAX];
        bool listen_from_unit[_PORT_SIDE_MAX]; /* a socket unit's: never unlinked nor stored */

        /* mode = "client": vhost-recond connects the moment the peer's socket appears (the
         * watch), and otherwise with a capped backoff */
        struct PeerWatch *peer_watch[_PORT_SIDE_MAX];
        sd_event_source *reconnect_timer[_PORT_SIDE_MAX];
        uint32_t reconnect_delay_ms[_PORT_SIDE_MAX];
        bool unreachable[_PORT_SIDE_MAX];      /* said once until it is reachable again */
        bool watch_failed[_PORT_SIDE_MAX];     /* said once: inotify cannot watch the path */
        Connection *frontend, *backend;
        struct BackendChannel *backend_channel;        /* BACKEND_REQ relay for the current back-end */
        struct PortMirror *mirror;      /* its part of the fd store (fdstore.h) */

        BackendState backend_state;
        uint64_t backend_protocol_features;     /* negotiated with the current back-end */
        bool backend_owner_sent;
        bool probe_pf_sent;             /* GET_PROTOCOL_FEATURES went with GET_FEATURES */

        FrontendItem *fe_head, *fe_tail;
        unsigned fe_queued;             /* items between fe_head and fe_tail */
        uint64_t fe_seq;                /* sequence of the last front-end request */
        uint64_t fe_replies;            /* replies sent to the front-end (the fd store counts them) */
        uint64_t replies_to_skip;       /* after a crash: replies the old process sent already */
        uint64_t replay_seq;            /* requests up to this one are in the replay */

        Pending *pending_head, *pending_tail;
        unsigned replay_outstanding;    /* replay answers still awaited */
        unsigned replay_messages;
        sd_event_source *reply_timer;

        unsigned stop_outstanding;      /* GET_VRING_BASE answers awaited before closing */
        char close_reason[128];         /* why a handler returned -ECANCELED */

        bool link_up;
        uint64_t link_down_usec;
        uint64_t link_changed_realtime_usec;
        uint64_t link_generation;
        unsigned slot;                  /* stable index (BPF link map key) */
        /* the manager's queue of replays under way, oldest first (the handoff) */
        struct Port *replay_prev, *replay_next;
        bool replay_queued;
        bool replay_boosted;            /* its back-end is served before anything else */
        /* the back-end's connect, not yet logged nor sent to monitors (manager_announce) */
        struct Port *announce_next;
        bool announce_pending;
        struct ucred announce_peer;
        uint64_t announce_usec, announce_realtime_usec;
        PortStats stats;
        PortMetrics metrics;            /* metrics.h: what Prometheus sees besides stats */
        char last_error[256];
        uint64_t last_error_usec;
        /* the same peer refused again on a side is logged at most every PORT_REFUSED_LOG_USEC:
         * a front-end that reconnects at once (QEMU's vhost-user client does) would flood the
         * journal */
        uint64_t refused_logged_usec[_PORT_SIDE_MAX];
        uid_t refused_logged_uid[_PORT_SIDE_MAX];
        uint64_t refused_unlogged[_PORT_SIDE_MAX];
} Port;

#define PORT_REFUSED_LOG_USEC (10 * 1000000ull)

int port_new(Manager *m, const PortConfig *config, Port **ret);
/* Logs and sends to monitors the back-end connects held back (the log line and the event
 * are written with the next line or event, "replay done" at the latest, off the
 * reconnect's critical path, or ANNOUNCE_DELAY_USEC after the connect). */
#define ANNOUNCE_DELAY_USEC (10 * 1000)
void port_announce_all(Manager *m);
Port *port_free(Port *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(Port *, port_free);

/* Opens (or adopts from systemd) the listening sockets of the sides in server mode. */
int port_start(Port *p);
/* Stops accepting new connections (the daemon is stopping). */
void port_stop_listening(Port *p);
/* Nothing in flight: no partial message, no queued output, no answer awaited, no replay. */
bool port_is_quiescent(const Port *p);

/* Called by a connection: a whole message arrived (the handler may take its fds; the
 * rest are closed by the caller). A negative return closes that connection. */
int port_frontend_message(Port *p, VuMsg *m);
int port_backend_message(Port *p, VuMsg *m);
/* The connection of `side` is gone (EOF, error, or dropped by the daemon). */
void port_connection_lost(Port *p, PortSide side, int error, const char *reason);

/* Recomputes link up (front-end connected with a running ring, back-end replayed) and
 * logs a change. */
void port_update_link(Port *p);
/* The peer passes the port's allow_uids/allow_gids. */
bool port_peer_allowed(const Port *p, const struct ucred *peer);
/* Stops or resumes reading the front-end, after its queue or either side's output changed. */
void port_throttle_frontend(Port *p);

/* Closes the back-end (from vhostctl or a failure). */
void port_drop_backend(Port *p, const char *reason);
/* vhostctl disconnect: the back-end is first stopped cleanly (GET_VRING_BASE on every
 * running ring, so the next one resumes exactly), the front-end is closed at once. */
int port_disconnect(Port *p, PortSide side);
/* Everything vhostctl shows of a port. */
json_object *port_to_json(const Port *p);
/* What `vhostctl list` shows, for ListPorts, as JSON text: about 220 bytes a port. */
void port_summary_put(const Port *p, JsonBuf *b);
/* The counters alone, as vhostctl shows them and the fd store keeps them. */
json_object *port_stats_to_json(const PortStats *s);
void port_stats_from_json(PortStats *s, json_object *o);

const char *backend_state_to_string(BackendState s);
_printf_(2, 3) void port_set_error(Port *p, const char *fmt, ...);
