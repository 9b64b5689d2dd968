/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <sys/stat.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "build-config.h"
#include "fdstore.h"
#include "manager.h"
#include "metrics.h"
#include "port.h"
#include "vhost-user.h"

/* Replays took 0.2-0.9 ms here (README "Replay"), 2-8 ms in a storm of 1000 ports; outages
 * of a restarted switch 0.1-3 s (testpmd 0.28 s, OVS 1-2 s). */
static const uint64_t replay_bounds[] = { 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000,
                                          250000, 1000000, 5000000 };
static const uint64_t outage_bounds[] = { 10000, 50000, 100000, 200000, 300000, 500000, 750000, 1000000,
                                          1500000, 2000000, 3000000, 5000000, 10000000, 30000000, 60000000 };
const MetricsBuckets metrics_replay_buckets = { replay_bounds, ELEMENTSOF(replay_bounds) };
const MetricsBuckets metrics_outage_buckets = { outage_bounds, ELEMENTSOF(outage_bounds) };

static const char *const loss_table[_BACKEND_LOSS_MAX] = {
        [LOSS_CLOSED] = "closed",
        [LOSS_ERROR] = "error",
        [LOSS_TIMEOUT] = "timeout",
        [LOSS_REPLACED] = "replaced",
        [LOSS_FRONTEND_LEFT] = "frontend_left",
        [LOSS_VHOSTCTL] = "vhostctl",
        [LOSS_PROTOCOL] = "protocol",
};

const char *backend_loss_to_string(BackendLoss l) {
        return l >= 0 && l < _BACKEND_LOSS_MAX ? loss_table[l] : NULL;
}

/* The reasons port.c, backend.c and connection.c give (free text, kept for the log). */
BackendLoss backend_loss_from_reason(const char *reason) {
        if (!reason)
                return LOSS_PROTOCOL;
        if (strstr(reason, "closed the connection"))
                return LOSS_CLOSED;
        if (strstr(reason, "timeout"))
                return LOSS_TIMEOUT;
        if (strstr(reason, "replaced"))
                return LOSS_REPLACED;
        if (strstr(reason, "front-end left"))
                return LOSS_FRONTEND_LEFT;
        if (strstr(reason, "vhostctl"))
                return LOSS_VHOSTCTL;
        if (strstr(reason, "failed") || strstr(reason, "reset") || strstr(reason, "Broken pipe"))
                return LOSS_ERROR;
        return LOSS_PROTOCOL;
}

static uint64_t detail_u64(json_object *details, const char *key) {
        json_object *v;
        return details && json_object_object_get_ex(details, key, &v) ? json_object_get_uint64(v) : 0;
}

void metrics_port_event(Port *p, int event, json_object *details) {
        PortMetrics *pm = &p->metrics;
        json_object *v;

        switch (event) {
        case EVENT_BACKEND_DISCONNECTED: {
                const char *reason = details && json_object_object_get_ex(details, "reason", &v)
                                             ? json_object_get_string(v) : NULL;
                pm->losses[backend_loss_from_reason(reason)]++;
                /* an outage of the front-end's device; not when the front-end itself left */
                if (p->frontend && pm->served)
                        pm->outage_open = true;
                pm->served = false;
                break;
        }
        case EVENT_FRONTEND_DISCONNECTED:
                pm->outage_open = false;
                break;
        case EVENT_LINK_UP:
                if (pm->outage_open)
                        metrics_histogram_observe(&pm->outage, &metrics_outage_buckets,
                                                  detail_u64(details, "outage_usec"));
                pm->outage_open = false;
                pm->served = true;
                break;
        case EVENT_REPLAY_DONE:
                metrics_histogram_observe(&pm->replay, &metrics_replay_buckets, detail_u64(details, "replay_usec"));
                break;
        default:
                break;
        }
}

void metrics_frontend_request(Port *p, uint32_t request) {
        p->metrics.requests[request < METRICS_REQUEST_SLOTS ? request : 0]++;
}

void metrics_message_refused(Port *p, MessageRefusal why) {
        p->metrics.refused[why]++;
}

void metrics_note_adoptions(Manager *m, int restored) {
        if (restored <= 0)
                return;
        for (size_t i = 0; i < m->n_ports; i++)
                if (m->ports[i]->frontend)
                        m->ports[i]->metrics.adoptions++;
}

/* Daemon-wide figures, read at scrape time. */

/* Linux 6.2 and later give the count as the size of /proc/self/fd: one syscall. Reading
 * the directory instead took 20 ms with 2048 ports (35 000 fds), all in one event-loop
 * step; it is kept for older kernels, whose scrapes of many ports cost that much. */
static uint64_t count_open_fds(void) {
        struct stat st;
        if (stat("/proc/self/fd", &st) == 0 && st.st_size > 0)
                return st.st_size;

        DIR *d = opendir("/proc/self/fd");
        uint64_t n = 0;
        struct dirent *de;

        if (!d)
                return 0;
        while ((de = readdir(d)))
                n += de->d_name[0] != '.';
        closedir(d);
        return n > 0 ? n - 1 : 0;       /* not the directory's own fd */
}

static uint64_t resident_bytes(void) {
        unsigned long size, resident;
        FILE *f = fopen("/proc/self/statm", "re");
        int k;

        if (!f)
                return 0;
        k = fscanf(f, "%lu %lu", &size, &resident);
        fclose(f);
        return k == 2 ? (uint64_t) resident * (uint64_t) sysconf(_SC_PAGESIZE) : 0;
}

#define P "vhost_recon_"

void metrics_write_head(Manager *m, JsonBuf *b, bool om) {
        uint64_t iterations = 0, up = 0;
        MetricsLabel build[] = { { "version", VERSION } };
        FdStoreStats st = {};

        for (size_t i = 0; i < m->n_ports; i++)
                up += m->ports[i]->link_up;
        (void) sd_event_get_iteration(m->event, &iterations);
        if (m->fdstore)
                fdstore_stats(m->fdstore, &st);

        metrics_text_family(b, om, P "build", METRICS_INFO, "vhost-recond's version.");
        metrics_text_sample_u64(b, P "build", "_info", build, 1, 1);
        metrics_text_family(b, om, P "ports", METRICS_GAUGE, "Ports served.");
        metrics_text_sample_u64(b, P "ports", NULL, NULL, 0, m->n_ports);
        metrics_text_family(b, om, P "ports_up", METRICS_GAUGE, "Ports whose link is up.");
        metrics_text_sample_u64(b, P "ports_up", NULL, NULL, 0, up);
        metrics_text_family(b, om, P "open_fds", METRICS_GAUGE, "File descriptors the daemon holds.");
        metrics_text_sample_u64(b, P "open_fds", NULL, NULL, 0, count_open_fds());
        metrics_text_family(b, om, P "resident_memory_bytes", METRICS_GAUGE, "Resident memory of the daemon.");
        metrics_text_sample_u64(b, P "resident_memory_bytes", NULL, NULL, 0, resident_bytes());
        metrics_text_family(b, om, P "event_loop_iterations", METRICS_COUNTER, "Event loop iterations.");
        metrics_text_sample_u64(b, P "event_loop_iterations", "_total", NULL, 0, iterations);
        metrics_text_family(b, om, P "fdstore_commits", METRICS_COUNTER, "States written to systemd's fd store.");
        metrics_text_sample_u64(b, P "fdstore_commits", "_total", NULL, 0, st.commits);
        metrics_text_family(b, om, P "fdstore_commit_seconds", METRICS_COUNTER, "Time spent in fd store commits.");
        metrics_text_sample_double(b, P "fdstore_commit_seconds", "_total", NULL, 0, st.commit_usec / 1e6);
        metrics_text_family(b, om, P "fdstore_fds", METRICS_GAUGE, "File descriptors held in systemd's fd store.");
        metrics_text_sample_u64(b, P "fdstore_fds", NULL, NULL, 0, st.entries);
}

/* One family's samples for one port. */
typedef void (*PortWriter)(JsonBuf *b, const Port *p, const char *name);

typedef struct PortFamily {
        const char *name;
        MetricsType type;
        const char *help;
        PortWriter write;
} PortFamily;

#define LABELS(p) MetricsLabel l[3] = { { "port", (p)->config.name } }

static void w_link_up(JsonBuf *b, const Port *p, const char *name) {
        LABELS(p);
        metrics_text_sample_u64(b, name, NULL, l, 1, p->link_up);
}

static void w_connected(JsonBuf *b, const Port *p, const char *name) {
        LABELS(p);
        l[1] = (MetricsLabel) { "side", "frontend" };
        metrics_text_sample_u64(b, name, NULL, l, 2, p->frontend != NULL);
        l[1].value = "backend";
        metrics_text_sample_u64(b, name, NULL, l, 2, p->backend != NULL);
}

static void w_connects(JsonBuf *b, const Port *p, const char *name) {
        LABELS(p);
        l[1] = (MetricsLabel) { "side", "frontend" };
        metrics_text_sample_u64(b, name, "_total", l, 2, p->stats.frontend_connects);
        l[1].value = "backend";
        metrics_text_sample_u64(b, name, "_total", l, 2, p->stats.backend_connects);
}

static void w_losses(JsonBuf *b, const Port *p, const char *name) {
        LABELS(p);
        for (int i = 0; i < _BACKEND_LOSS_MAX; i++) {
                l[1] = (MetricsLabel) { "reason", backend_loss_to_string(i) };
                metrics_text_sample_u64(b, name, "_total", l, 2, p->metrics.losses[i]);
        }
}

static void w_outage(JsonBuf *b, const Port *p, const char *name) {
        LABELS(p);
        metrics_text_histogram(b, name, l, 1, &metrics_outage_buckets, &p->metrics.outage);
}

static void w_replay(JsonBuf *b, const Port *p, const char *name) {
        LABELS(p);
        metrics_text_histogram(b, name, l, 1, &metrics_replay_buckets, &p->metrics.replay);
}

static void w_replays(JsonBuf *b, const Port *p, const char *name) {
        LABELS(p);
        l[1] = (MetricsLabel) { "result", "ok" };
        metrics_text_sample_u64(b, name, "_total", l, 2, p->stats.replays_ok);
        l[1].value = "failed";
        metrics_text_sample_u64(b, name, "_total", l, 2, p->stats.replays_failed);
        l[1].value = "incompatible";
        metrics_text_sample_u64(b, name, "_total", l, 2, p->stats.incompatible);
}

static void w_requests(JsonBuf *b, const Port *p, const char *name) {
        LABELS(p);
        /* only the requests seen: 40 series a port for nothing would triple a scrape */
        for (unsigned i = 0; i < METRICS_REQUEST_SLOTS; i++) {
                if (!p->metrics.requests[i])
                        continue;
                const char *r = i ? vu_request_to_string(i) : "OTHER";
                l[1] = (MetricsLabel) { "request", r ? r : "OTHER" };
                metrics_text_sample_u64(b, name, "_total", l, 2, p->metrics.requests[i]);
        }
}

static void w_refused(JsonBuf *b, const Port *p, const char *name) {
        LABELS(p);
        l[1] = (MetricsLabel) { "side", "frontend" };
        l[2] = (MetricsLabel) { "reason", "malformed" };
        metrics_text_sample_u64(b, name, "_total", l, 3, p->metrics.refused[REFUSED_MALFORMED]);
        l[2].value = "rejected";
        metrics_text_sample_u64(b, name, "_total", l, 3, p->metrics.refused[REFUSED_REJECTED]);
}

static void w_peers_dropped(JsonBuf *b, const Port *p, const char *name) {
        LABELS(p);
        l[1] = (MetricsLabel) { "reason", "credentials" };
        metrics_text_sample_u64(b, name, "_total", l, 2, p->stats.refused_peers);
        l[1].value = "bad_message";
        metrics_text_sample_u64(b, name, "_total", l, 2,
                                p->metrics.refused[REFUSED_MALFORMED] + p->metrics.refused[REFUSED_REJECTED]);
}

static void w_throttled(JsonBuf *b, const Port *p, const char *name) {
        LABELS(p);
        metrics_text_sample_u64(b, name, "_total", l, 1, p->stats.throttled);
}

static void w_iotlb(JsonBuf *b, const Port *p, const char *name) {
        LABELS(p);
        metrics_text_sample_u64(b, name, NULL, l, 1, p->shadow.iotlb.n);
}

static void w_dirty_log(JsonBuf *b, const Port *p, const char *name) {
        LABELS(p);
        metrics_text_sample_u64(b, name, NULL, l, 1, p->shadow.log.fd >= 0);
}

static void w_adoptions(JsonBuf *b, const Port *p, const char *name) {
        LABELS(p);
        metrics_text_sample_u64(b, name, "_total", l, 1, p->metrics.adoptions);
}

static const PortFamily port_families[] = {
        { P "port_link_up", METRICS_GAUGE, "1 when the port's data can flow (front-end and replayed back-end).", w_link_up },
        { P "port_connected", METRICS_GAUGE, "1 when the side's peer is connected.", w_connected },
        { P "port_connects", METRICS_COUNTER, "Connections accepted or made, by side.", w_connects },
        { P "port_backend_losses", METRICS_COUNTER, "Back-end connections lost, by reason.", w_losses },
        { P "port_outage_seconds", METRICS_HISTOGRAM, "Outages: back-end lost under a front-end, to link up again.", w_outage },
        { P "port_replay_seconds", METRICS_HISTOGRAM, "Replays: back-end connect to the replay acknowledged.", w_replay },
        { P "port_replays", METRICS_COUNTER, "Replays by result.", w_replays },
        { P "port_requests", METRICS_COUNTER, "Front-end requests by type (types seen only).", w_requests },
        { P "port_messages_refused", METRICS_COUNTER, "Messages refused, by side and reason.", w_refused },
        { P "port_peers_dropped", METRICS_COUNTER, "Peers refused or dropped, by reason.", w_peers_dropped },
        { P "port_frontend_throttled", METRICS_COUNTER, "Times the front-end was paused for flooding.", w_throttled },
        { P "port_iotlb_entries", METRICS_GAUGE, "IOTLB entries kept for the port (vIOMMU).", w_iotlb },
        { P "port_dirty_logging", METRICS_GAUGE, "1 while the front-end logs dirty pages (live migration).", w_dirty_log },
        { P "port_crash_adoptions", METRICS_COUNTER, "Times the port was taken over from a crashed or restarted daemon.", w_adoptions },
};

bool metrics_write_ports(Manager *m, JsonBuf *b, bool om, MetricsCursor *c, size_t n) {
        while (n > 0 && c->family < ELEMENTSOF(port_families)) {
                const PortFamily *f = &port_families[c->family];
                if (c->port == 0)
                        metrics_text_family(b, om, f->name, f->type, f->help);
                for (; n > 0 && c->port < m->n_ports; n--, c->port++)
                        f->write(b, m->ports[c->port], f->name);
                if (c->port >= m->n_ports) {
                        c->family++;
                        c->port = 0;
                }
        }
        if (c->family < ELEMENTSOF(port_families))
                return true;
        if (c->family == ELEMENTSOF(port_families)) {
                metrics_text_end(b, om);
                c->family++;
        }
        return false;
}

void metrics_write_all(Manager *m, JsonBuf *b, bool om) {
        MetricsCursor c = {};
        metrics_write_head(m, b, om);
        while (metrics_write_ports(m, b, om, &c, SIZE_MAX))
                ;
}
