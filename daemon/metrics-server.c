/* SPDX-License-Identifier: MIT */
/* GET /metrics over HTTP: libmicrohttpd with no thread of its own, driven by sd-event. Its
 * epoll fd is one io source, its timeout one timer; both at idle priority, so the ports
 * and the control socket always come first. A scrape is written as the client reads it,
 * a few ports at a time, between the loop's other events. */

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "macro.h"
#include "log.h"
#include "manager.h"
#include "metrics.h"

/* Bounds on what a client may cost (the README names them). */
#define HTTP_CONNECTION_LIMIT 32u       /* more are closed as soon as accepted */
#define HTTP_TIMEOUT_S 5u               /* idle or slow connections are closed after it */
#define HTTP_MEMORY_LIMIT (32u * 1024)  /* per connection: the request headers must fit */
#define HTTP_BLOCK_SIZE (32u * 1024)    /* a response is produced this much at a time */
#define SCRAPE_PORTS_PER_STEP 16u
/* A request must be in whole this long after its connection opened or the previous answer
 * was sent: the idle timeout alone let a client that sends a header byte every second keep
 * its connection, and 32 of them would keep the endpoint for good. */
#define HTTP_REQUEST_DEADLINE_USEC (10u * 1000000u)

typedef struct HttpConnection HttpConnection;

struct MetricsServer {
        Manager *manager;
        struct MHD_Daemon *daemon;
        sd_event_source *io, *timer;
        unsigned n_connections;
        HttpConnection *connections;    /* at most HTTP_CONNECTION_LIMIT */
};

/* A connection whose request is still coming: deadline is when it must be in (0 while one
 * is answered). */
struct HttpConnection {
        struct MHD_Connection *connection;
        uint64_t deadline;
        HttpConnection *prev, *next;
};

typedef struct Scrape {
        MetricsServer *server;
        bool openmetrics, head_done, done;
        MetricsCursor cursor;
        JsonBuf buf;
        size_t off;
} Scrape;

static void on_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
        MetricsServer *s = cls;
        HttpConnection *h = *socket_context;

        if (code == MHD_CONNECTION_NOTIFY_STARTED) {
                s->n_connections++;
                h = calloc(1, sizeof(HttpConnection));
                if (!h)
                        return;         /* not watched for its deadline; the idle timeout stays */
                h->connection = connection;
                h->deadline = now_usec() + HTTP_REQUEST_DEADLINE_USEC;
                h->next = s->connections;
                if (h->next)
                        h->next->prev = h;
                s->connections = h;
                *socket_context = h;
                return;
        }
        s->n_connections--;
        if (h) {
                if (h->prev)
                        h->prev->next = h->next;
                else
                        s->connections = h->next;
                if (h->next)
                        h->next->prev = h->prev;
                free(h);
                *socket_context = NULL;
        }
}

static HttpConnection *connection_of(struct MHD_Connection *c) {
        const union MHD_ConnectionInfo *info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        return info ? info->socket_context : NULL;
}

/* The next request of a kept-alive connection has its own deadline. */
static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
        HttpConnection *h = connection_of(c);
        if (h)
                h->deadline = now_usec() + HTTP_REQUEST_DEADLINE_USEC;
}

/* Connections past their deadline are shut down (the fd stays libmicrohttpd's, which sees
 * the end and closes it); returns the next deadline, or UINT64_MAX. */
static uint64_t cut_off_late(MetricsServer *s) {
        uint64_t now = now_usec(), next = UINT64_MAX;

        for (HttpConnection *h = s->connections; h; h = h->next) {
                if (h->deadline == 0)
                        continue;
                if (h->deadline > now) {
                        next = MIN(next, h->deadline);
                        continue;
                }
                const union MHD_ConnectionInfo *info = MHD_get_connection_info(h->connection,
                                                                               MHD_CONNECTION_INFO_CONNECTION_FD);
                if (info)
                        (void) shutdown(info->connect_fd, SHUT_RDWR);
                h->deadline = 0;
                next = now;             /* a run right away, to see it end */
                log_debug("metrics: an HTTP client did not send its request within %u s; closing it",
                          (unsigned) (HTTP_REQUEST_DEADLINE_USEC / 1000000u));
        }
        return next;
}

static void update_timer(MetricsServer *s) {
        MHD_UNSIGNED_LONG_LONG ms;
        uint64_t at = cut_off_late(s);

        if (MHD_get_timeout(s->daemon, &ms) == MHD_YES)
                at = MIN(at, now_usec() + ms * 1000);
        if (at == UINT64_MAX) {
                /* no connection: nothing to time, the loop sleeps */
                (void) sd_event_source_set_enabled(s->timer, SD_EVENT_OFF);
                return;
        }
        (void) sd_event_source_set_time(s->timer, at);
        (void) sd_event_source_set_enabled(s->timer, SD_EVENT_ONESHOT);
}

static void run(MetricsServer *s) {
        unsigned before;

        /* libmicrohttpd puts its listening socket back into its epoll set (taken out at the
         * connection limit) only at the start of a run: while a run frees or opens
         * connections, run again. Otherwise, once the last connections closed together at
         * the limit, clients in the backlog and every new one waited for an event that
         * never came: the endpoint was deaf for good. */
        for (unsigned i = 0; i < 8; i++) {
                before = s->n_connections;
                (void) MHD_run(s->daemon);
                if (s->n_connections == before)
                        break;
        }
        update_timer(s);
}

static int on_io(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        run(userdata);
        return 0;
}

static int on_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        run(userdata);
        return 0;
}

static ssize_t scrape_read(void *cls, uint64_t pos, char *out, size_t max) {
        Scrape *sc = cls;
        Manager *m = sc->server->manager;

        /* what MHD did not take last time goes to the front: the buffer holds at most one
         * block and one step, not the whole scrape (it grew to 2 MiB for 256 ports before) */
        if (sc->off > 0) {
                memmove(sc->buf.data, sc->buf.data + sc->off, sc->buf.len - sc->off);
                sc->buf.len -= sc->off;
                sc->off = 0;
        }
        while (sc->buf.len < max && !sc->done) {
                if (!sc->head_done) {
                        metrics_write_head(m, &sc->buf, sc->openmetrics);
                        sc->head_done = true;
                } else
                        sc->done = !metrics_write_ports(m, &sc->buf, sc->openmetrics, &sc->cursor,
                                                        SCRAPE_PORTS_PER_STEP);
        }
        if (sc->buf.oom)
                return MHD_CONTENT_READER_END_WITH_ERROR;
        size_t n = sc->buf.len - sc->off;
        if (n == 0)
                return MHD_CONTENT_READER_END_OF_STREAM;
        if (n > max)
                n = max;
        memcpy(out, sc->buf.data + sc->off, n);
        sc->off += n;                   /* the allocation is kept for the next step */
        return (ssize_t) n;
}

static void scrape_free(void *cls) {
        Scrape *sc = cls;
        json_buf_done(&sc->buf);
        free(sc);
}

static enum MHD_Result queue_text(struct MHD_Connection *c, unsigned status, const char *text, const char *allow) {
        struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *) text, MHD_RESPMEM_PERSISTENT);
        if (!r)
                return MHD_NO;
        (void) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
        if (allow)
                (void) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
        enum MHD_Result ret = MHD_queue_response(c, status, r);
        MHD_destroy_response(r);
        return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
        MetricsServer *s = cls;
        HttpConnection *h = connection_of(c);

        if (h)
                h->deadline = 0;        /* the request is in: the idle timeout covers the answer */
        if (strcmp(url, "/metrics") != 0)
                return queue_text(c, MHD_HTTP_NOT_FOUND, "Not found: vhost-recond serves /metrics only.\n", NULL);
        if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
                return queue_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "Method not allowed: use GET.\n", "GET, HEAD");

        Scrape *sc = calloc(1, sizeof(Scrape));
        if (!sc)
                return MHD_NO;
        sc->server = s;
        sc->openmetrics = metrics_accept_openmetrics(MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT));
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, HTTP_BLOCK_SIZE, scrape_read, sc,
                                                                   scrape_free);
        if (!r) {
                free(sc);
                return MHD_NO;
        }
        (void) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                       sc->openmetrics ? METRICS_CONTENT_TYPE_OPENMETRICS : METRICS_CONTENT_TYPE_TEXT);
        enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        return ret;
}

static int open_listener(Manager *m, const char *setting) {
        struct sockaddr_storage ss;
        unsigned len;
        int r;

        r = config_parse_listen_address(setting, &ss, &len);
        if (r < 0)
                return r;
        if (r == 1) {           /* socket activation: FileDescriptorName=metrics */
                int fd = manager_take_passed(m, "metrics");
                if (fd < 0)
                        return log_error_errno(-ENOENT, "metrics = \"socket\", but systemd passed no socket named \"metrics\"");
                int fl = fcntl(fd, F_GETFL);
                if (fl >= 0)
                        (void) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
                return fd;
        }
        _cleanup_(closep) int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return log_error_errno(-errno, "metrics: cannot create a socket: %m");
        int one = 1;
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (ss.ss_family == AF_INET6)
                (void) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *) &ss, len) < 0)
                return log_error_errno(-errno, "metrics: cannot listen on %s: %m", setting);
        if (listen(fd, 64) < 0)
                return log_error_errno(-errno, "metrics: cannot listen on %s: %m", setting);
        return TAKE_FD(fd);
}

int metrics_server_new(Manager *m, MetricsServer **ret) {
        const char *setting = m->config ? m->config->metrics : NULL;
        int r;

        *ret = NULL;
        if (!setting)
                return 0;
        _cleanup_(metrics_server_freep) MetricsServer *s = calloc(1, sizeof(MetricsServer));
        if (!s)
                return -ENOMEM;
        s->manager = m;
        int fd = open_listener(m, setting);
        if (fd < 0)
                return fd;
        s->daemon = MHD_start_daemon(MHD_USE_EPOLL, 0, NULL, NULL, on_request, s,
                                     MHD_OPTION_LISTEN_SOCKET, (MHD_socket) fd,
                                     MHD_OPTION_CONNECTION_LIMIT, (unsigned) HTTP_CONNECTION_LIMIT,
                                     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) HTTP_TIMEOUT_S,
                                     MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) HTTP_MEMORY_LIMIT,
                                     MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
                                     MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                                     MHD_OPTION_END);
        if (!s->daemon) {
                safe_close(fd);
                return log_error_errno(-EIO, "metrics: libmicrohttpd did not start on %s", setting);
        }
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_EPOLL_FD);
        if (!info)
                return log_error_errno(-EIO, "metrics: libmicrohttpd has no epoll fd");
        r = sd_event_add_io(m->event, &s->io, info->epoll_fd, EPOLLIN, on_io, s);
        if (r < 0)
                return log_error_errno(r, "metrics: cannot watch the HTTP server: %m");
        r = sd_event_add_time(m->event, &s->timer, CLOCK_MONOTONIC, 0, 0, on_timer, s);
        if (r < 0)
                return log_error_errno(r, "metrics: cannot add the HTTP timer: %m");
        (void) sd_event_source_set_enabled(s->timer, SD_EVENT_OFF);
        /* sd-event's default accuracy is 250 ms: MHD asks for "again now" after each block
         * it wrote to a socket that still takes more, and a late timer made a 1.2 MB scrape
         * of 256 ports last 9.5 s */
        (void) sd_event_source_set_time_accuracy(s->timer, 1);
        (void) sd_event_source_set_priority(s->io, SD_EVENT_PRIORITY_IDLE);
        (void) sd_event_source_set_priority(s->timer, SD_EVENT_PRIORITY_IDLE);
        (void) sd_event_source_set_description(s->io, "metrics-http");
        (void) sd_event_source_set_description(s->timer, "metrics-http-timer");
        log_info("metrics: serving http://%s/metrics", setting);
        *ret = TAKE_PTR(s);
        return 0;
}

MetricsServer *metrics_server_free(MetricsServer *s) {
        if (!s)
                return NULL;
        sd_event_source_disable_unref(s->io);
        sd_event_source_disable_unref(s->timer);
        if (s->daemon)
                MHD_stop_daemon(s->daemon);     /* closes the listener and the connections */
        free(s);
        return NULL;
}
