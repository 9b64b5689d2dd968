/* SPDX-License-Identifier: MIT */
#pragma once

/* What Prometheus sees of the daemon: the few figures a port does not keep already (the
 * histograms, the reasons), fed by the port events, and the exposition of everything at
 * scrape time. See README "Metrics". */

#include <stdbool.h>
#include <stdint.h>
#include <json-c/json.h>

#include "macro.h"
#include "metrics-text.h"
#include "varlink.h"

typedef struct Manager Manager;
typedef struct Port Port;
typedef struct MetricsServer MetricsServer;

typedef enum BackendLoss {
        LOSS_CLOSED,            /* the back-end closed its end (a switch stopped or crashed) */
        LOSS_ERROR,             /* sending or receiving failed */
        LOSS_TIMEOUT,           /* it did not answer within reply_timeout_ms */
        LOSS_REPLACED,          /* a new back-end connection came */
        LOSS_FRONTEND_LEFT,     /* closed by the daemon: the front-end left */
        LOSS_VHOSTCTL,          /* vhostctl disconnect */
        LOSS_PROTOCOL,          /* the daemon dropped it for what it sent, or the replay failed */
        _BACKEND_LOSS_MAX,
        _BACKEND_LOSS_INVALID = -22,
} BackendLoss;

typedef enum MessageRefusal {
        REFUSED_MALFORMED,      /* payload size, fd count, index (vu_msg_check_request) */
        REFUSED_REJECTED,       /* well formed, refused by the shadow (shadow_apply) */
        _MESSAGE_REFUSAL_MAX,
        _MESSAGE_REFUSAL_INVALID = -22,
} MessageRefusal;

#define METRICS_REQUEST_SLOTS 41        /* vhost-user requests 0..40; others count in 0 */

/* Per port, inside Port (zeroed with it): 592 bytes (x86-64). */
typedef struct PortMetrics {
        MetricsHistogram outage, replay;
        uint64_t losses[_BACKEND_LOSS_MAX];
        uint64_t refused[_MESSAGE_REFUSAL_MAX];
        uint64_t requests[METRICS_REQUEST_SLOTS];
        uint64_t adoptions;
        bool served;            /* the link was up with the current back-end */
        bool outage_open;       /* such a back-end was lost: the next link up ends the outage */
} PortMetrics;

extern const MetricsBuckets metrics_outage_buckets, metrics_replay_buckets;

/* Hooks (one line each where they sit). */
void metrics_port_event(Port *p, int event, json_object *details);
void metrics_frontend_request(Port *p, uint32_t request);
void metrics_message_refused(Port *p, MessageRefusal why);
/* After fdstore_adopt(): the ports it restored (restored > 0) took over a crashed process's. */
void metrics_note_adoptions(Manager *m, int restored);

BackendLoss backend_loss_from_reason(const char *reason);
const char *backend_loss_to_string(BackendLoss l);

/* The whole exposition. The per-port part can be written a slice at a time (the HTTP
 * server writes it as the client reads, so one scrape of thousands of ports never holds
 * the loop for long). */
void metrics_write_head(Manager *m, JsonBuf *b, bool openmetrics);
/* Writes ports [*cursor, *cursor + n) for the family at *family; advances both. Returns
 * false once everything (and the end marker) is written. */
typedef struct MetricsCursor {
        unsigned family;
        size_t port;
} MetricsCursor;
bool metrics_write_ports(Manager *m, JsonBuf *b, bool openmetrics, MetricsCursor *cursor, size_t n);
void metrics_write_all(Manager *m, JsonBuf *b, bool openmetrics);

/* The HTTP endpoint (metrics-server.c): NULL in *ret when the setting is off. */
int metrics_server_new(Manager *m, MetricsServer **ret);
MetricsServer *metrics_server_free(MetricsServer *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(MetricsServer *, metrics_server_free);
