/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <grp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "build-config.h"
#include "control.h"
#include "listener.h"
#include "log.h"
#include "manager.h"
#include "port.h"
#include "varlink.h"

#define INTERFACE "io.vhostrecon"

static const char interface_description[] =
        "# vhost-recond: link state and control of its vhost-user ports\n"
        "interface io.vhostrecon\n"
        "\n"
        "type Peer (pid: ?int, uid: ?int)\n"
        "\n"
        "# One side of a port. state (back-end only): absent, probing, replaying, connected, stopping\n"
        "type Side (path: string, mode: string, connected: bool, pid: ?int, uid: ?int, state: ?string)\n"
        "\n"
        "type Features (value: int, names: []string)\n"
        "\n"
        "type Counters (\n"
        "  frontend_connects: int, backend_connects: int, replays_ok: int, replays_failed: int,\n"
        "  incompatible: int, refused_peers: int, throttled: int, handoffs: int, connect_failures: int, last_replay_usec: int,\n"
        "  last_outage_usec: int\n"
        ")\n"
        "\n"
        "type Port (\n"
        "  name: string,\n"
        "  link: string,\n"
        "  link_changed_realtime_usec: int,\n"
        "  frontend: Side,\n"
        "  backend: Side,\n"
        "  features: Features,\n"
        "  protocol_features: Features,\n"
        "  status: int,\n"
        "  vrings: int,\n"
        "  vrings_started: int,\n"
        "  memory_regions: int,\n"
        "  iotlb_entries: int,\n"
        "  iotlb_not_kept: int,\n"
        "  counters: Counters,\n"
        "  last_error: ?string\n"
        ")\n"
        "\n"
        "# type: frontend-connected, frontend-disconnected, backend-connected, backend-disconnected,\n"
        "# replay-done, replay-failed, incompatible, link-up, link-down\n"
        "type Event (\n"
        "  type: string, port: string, monotonic_usec: int, realtime_usec: int,\n"
        "  pid: ?int, uid: ?int, reason: ?string, replay_usec: ?int, messages: ?int, rings_kicked: ?int,\n"
        "  missing_features: ?int, missing_protocol_features: ?int, outage_usec: ?int\n"
        ")\n"
        "\n"
        "# What `vhostctl list` shows; GetPort has the rest.\n"
        "type PortSummary (\n"
        "  name: string, link: string,\n"
        "  frontend: (connected: bool, pid: ?int),\n"
        "  backend: (connected: bool, pid: ?int, state: string),\n"
        "  counters: (replays_ok: int, replays_failed: int, last_replay_usec: int, last_outage_usec: int),\n"
        "  last_error: ?string\n"
        ")\n"
        "\n"
        "method ListPorts() -> (ports: []PortSummary)\n"
        "method GetPort(name: string) -> (port: Port)\n"
        "# With \"more\": one reply per event, each with \"continues\": true.\n"
        "method Monitor() -> (event: Event)\n"
        "# side: \"frontend\" or \"backend\". Needs uid 0 or the admin group.\n"
        "method Disconnect(name: string, side: string) -> ()\n"
        "# Reloads the configuration file. Needs uid 0 or the admin group.\n"
        "method Reload() -> ()\n"
        "# Everything GET /metrics serves, in the Prometheus text format 0.0.4.\n"
        "method Metrics() -> (text: string)\n"
        "\n"
        "error NoSuchPort (name: string)\n"
        "error NotConnected (name: string, side: string)\n"
        "error PermissionDenied ()\n"
        "error ReloadFailed (reason: string)\n";

static const char service_description[] =
        "# The Varlink Service Interface\n"
        "interface org.varlink.service\n"
        "\n"
        "method GetInfo() -> (vendor: string, product: string, version: string, url: string, interfaces: []string)\n"
        "method GetInterfaceDescription(interface: string) -> (description: string)\n"
        "\n"
        "error InterfaceNotFound (interface: string)\n"
        "error MethodNotFound (method: string)\n"
        "error MethodNotImplemented (method: string)\n"
        "error InvalidParameter (parameter: string)\n";

typedef struct ControlClient ControlClient;

struct ControlClient {
        ControlServer *server;
        ControlClient *prev, *next;
        int fd;
        sd_event_source *io, *stall_timer;
        VarlinkBuffer in;
        char *out;
        size_t out_size, out_sent;
        uid_t uid;
        bool admin;
        bool monitor;
        bool closing;           /* flush what is queued, then close */
};

struct ControlServer {
        Manager *manager;
        char *path;
        int fd;
        sd_event_source *listen;
        gid_t admin_gid;
        bool have_admin_gid;
        bool from_unit;         /* a socket unit's listener: never unlinked nor stored */
        ControlClient *clients;
        unsigned n_clients;
};

static void client_free(ControlClient *c) {
        ControlServer *s = c->server;

        if (c->prev)
                c->prev->next = c->next;
        else
                s->clients = c->next;
        if (c->next)
                c->next->prev = c->prev;
        s->n_clients--;
        sd_event_source_disable_unref(c->io);
        sd_event_source_disable_unref(c->stall_timer);
        safe_close(c->fd);
        varlink_buffer_done(&c->in);
        free(c->out);
        free(c);
}

static void client_drop(ControlClient *c, const char *why) {
        log_warning("control: dropping client (uid %u): %s", (unsigned) c->uid, why);
        client_free(c);
}

static int client_flush(ControlClient *c) {
        while (c->out_sent < c->out_size) {
                ssize_t n = send(c->fd, c->out + c->out_sent, c->out_size - c->out_sent, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                break;
                        return -errno;
                }
                c->out_sent += n;
        }
        if (c->out_sent == c->out_size) {
                c->out_sent = c->out_size = 0;
                (void) sd_event_source_set_io_events(c->io, EPOLLIN);
                if (c->closing)
                        return -ECONNRESET;
        } else
                (void) sd_event_source_set_io_events(c->io, EPOLLIN | EPOLLOUT);
        return 0;
}

/* Queues a serialized message (taken). A client that lets too much pile up is dropped. */
static int client_queue(ControlClient *c, char *msg, size_t size) {
        if (!msg)
                return -ENOMEM;
        if (c->out_size - c->out_sent + size > CONTROL_MAX_QUEUED) {
                free(msg);
                return -ENOBUFS;
        }
        if (c->out_size == 0) {         /* nothing queued: msg becomes the queue, uncopied */
                free(c->out);
                c->out = msg;
                c->out_size = size;
                c->out_sent = 0;
                return client_flush(c);
        }
        if (c->out_sent > 0) {
                memmove(c->out, c->out + c->out_sent, c->out_size - c->out_sent);
                c->out_size -= c->out_sent;
                c->out_sent = 0;
        }
        char *n = realloc(c->out, c->out_size + size);
        if (!n) {
                free(msg);
                return -ENOMEM;
        }
        memcpy(n + c->out_size, msg, size);
        free(msg);
        c->out = n;
        c->out_size += size;
        return client_flush(c);
}

static int reply(ControlClient *c, json_object *parameters, bool continues) {
        size_t size;
        char *m = varlink_reply_new(parameters, continues, &size);
        return client_queue(c, m, size);
}

static int reply_error(ControlClient *c, const char *error, json_object *parameters) {
        size_t size;
        char *m = varlink_error_new(error, parameters, &size);
        return client_queue(c, m, size);
}

static json_object *param1(const char *key, const char *value) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, key, json_object_new_string(value));
        return o;
}

static int invalid_parameter(ControlClient *c, const char *name) {
        return reply_error(c, "org.varlink.service.InvalidParameter", param1("parameter", name));
}

/* A string parameter, or NULL (after an InvalidParameter error) */
static const char *string_param(ControlClient *c, json_object *params, const char *name) {
        json_object *v;
        if (!json_object_object_get_ex(params, name, &v) || !json_object_is_type(v, json_type_string)) {
                (void) invalid_parameter(c, name);
                return NULL;
        }
        return json_object_get_string(v);
}

static Port *port_param(ControlClient *c, json_object *params) {
        const char *name = string_param(c, params, "name");
        if (!name)
                return NULL;
        Port *p = manager_find_port(c->server->manager, name);
        if (!p)
                (void) reply_error(c, INTERFACE ".NoSuchPort", param1("name", name));
        return p;
}

static int method_get_info(ControlClient *c, json_object *params) {
        json_object *o = json_object_new_object(), *ifs = json_object_new_array();
        json_object_object_add(o, "vendor", json_object_new_string("vhost-recon"));
        json_object_object_add(o, "product", json_object_new_string("vhost-recond"));
        json_object_object_add(o, "version", json_object_new_string(VERSION));
        json_object_object_add(o, "url", json_object_new_string("man:vhost-recond(8)"));
        json_object_array_add(ifs, json_object_new_string("org.varlink.service"));
        json_object_array_add(ifs, json_object_new_string(INTERFACE));
        json_object_object_add(o, "interfaces", ifs);
        return reply(c, o, false);
}

static int method_get_interface_description(ControlClient *c, json_object *params) {
        const char *name = string_param(c, params, "interface");
        if (!name)
                return 0;
        const char *d = strcmp(name, INTERFACE) == 0 ? interface_description :
                        strcmp(name, "org.varlink.service") == 0 ? service_description : NULL;
        if (!d)
                return reply_error(c, "org.varlink.service.InterfaceNotFound", param1("interface", name));
        return reply(c, param1("description", d), false);
}

static int method_list_ports(ControlClient *c, json_object *params) {
        Manager *m = c->server->manager;
        JsonBuf b = {};
        size_t size;

        json_buf_puts(&b, "{\"parameters\":{\"ports\":[");
        for (size_t i = 0; i < m->n_ports; i++) {
                if (i)
                        json_buf_puts(&b, ",");
                port_summary_put(m->ports[i], &b);
        }
        json_buf_puts(&b, "]}}");
        char *buf = json_buf_steal(&b, &size);  /* with the Varlink terminator */
        if (!buf)
                return -ENOMEM;
        return client_queue(c, buf, size);
}

static int method_get_port(ControlClient *c, json_object *params) {
        Port *p = port_param(c, params);
        if (!p)
                return 0;
        json_object *o = json_object_new_object();
        json_object_object_add(o, "port", port_to_json(p));
        return reply(c, o, false);
}

static int method_monitor(ControlClient *c, json_object *params, bool more) {
        if (!more)
                return invalid_parameter(c, "more");
        c->monitor = true;
        return 0;
}

static int method_disconnect(ControlClient *c, json_object *params) {
        if (!c->admin)
                return reply_error(c, INTERFACE ".PermissionDenied", NULL);
        Port *p = port_param(c, params);
        if (!p)
                return 0;
        const char *side = string_param(c, params, "side");
        if (!side)
                return 0;
        PortSide ps = strcmp(side, "frontend") == 0 ? PORT_FRONTEND : strcmp(side, "backend") == 0 ? PORT_BACKEND
                                                                                                    : _PORT_SIDE_INVALID;
        if (ps < 0)
                return invalid_parameter(c, "side");
        log_info("%s: %s disconnect asked by uid %u", p->config.name, port_side_to_string(ps), (unsigned) c->uid);
        if (port_disconnect(p, ps) < 0) {
                json_object *o = param1("name", p->config.name);
                json_object_object_add(o, "side", json_object_new_string(side));
                return reply_error(c, INTERFACE ".NotConnected", o);
        }
        return reply(c, NULL, false);
}

static int method_reload(ControlClient *c, json_object *params) {
        char err[1024] = "";
        if (!c->admin)
                return reply_error(c, INTERFACE ".PermissionDenied", NULL);
        log_info("Reload asked by uid %u", (unsigned) c->uid);
        if (manager_reload(c->server->manager, err, sizeof(err)) < 0)
                return reply_error(c, INTERFACE ".ReloadFailed", param1("reason", err));
        return reply(c, NULL, false);
}

static int method_metrics(ControlClient *c, json_object *params) {
        Manager *m = c->server->manager;
        JsonBuf text = {}, b = {};
        size_t size;

        metrics_write_all(m, &text, false);
        json_buf_put(&text, "", 1);             /* a C string for the escaping */
        if (text.oom) {
                json_buf_done(&text);
                return -ENOMEM;
        }
        json_buf_puts(&b, "{\"parameters\":{\"text\":");
        json_buf_put_string(&b, text.data ? text.data : "");
        json_buf_puts(&b, "}}");
        json_buf_done(&text);
        char *buf = json_buf_steal(&b, &size);  /* with the Varlink terminator */
        if (!buf)
                return -ENOMEM;
        return client_queue(c, buf, size);
}

static int dispatch(ControlClient *c, const char *text) {
        VarlinkCall call;
        const char *reason = NULL;
        int r;

        r = varlink_call_parse(text, &call, &reason);
        if (r < 0) {
                /* Not Varlink: say so, then hang up. */
                c->closing = true;
                return reply_error(c, "org.varlink.service.InvalidParameter", param1("parameter", reason));
        }
        const char *m = call.method;
        bool more = call.more;
        if (strcmp(m, "org.varlink.service.GetInfo") == 0)
                r = method_get_info(c, call.parameters);
        else if (strcmp(m, "org.varlink.service.GetInterfaceDescription") == 0)
                r = method_get_interface_description(c, call.parameters);
        else if (strcmp(m, INTERFACE ".ListPorts") == 0)
                r = method_list_ports(c, call.parameters);
        else if (strcmp(m, INTERFACE ".GetPort") == 0)
                r = method_get_port(c, call.parameters);
        else if (strcmp(m, INTERFACE ".Monitor") == 0)
                r = method_monitor(c, call.parameters, more);
        else if (strcmp(m, INTERFACE ".Disconnect") == 0)
                r = method_disconnect(c, call.parameters);
        else if (strcmp(m, INTERFACE ".Reload") == 0)
                r = method_reload(c, call.parameters);
        else if (strcmp(m, INTERFACE ".Metrics") == 0)
                r = method_metrics(c, call.parameters);
        else if (strncmp(m, INTERFACE ".", strlen(INTERFACE) + 1) == 0 ||
                 strncmp(m, "org.varlink.service.", 20) == 0)
                r = reply_error(c, "org.varlink.service.MethodNotFound", param1("method", m));
        else
                r = reply_error(c, "org.varlink.service.InterfaceNotFound", param1("interface", m));
        varlink_call_done(&call);
        return r;
}

static int client_stalled(sd_event_source *s, uint64_t usec, void *userdata) {
        client_drop(userdata, "stalled in the middle of a request");
        return 0;
}

/* A partial request must be finished within CONTROL_STALL_USEC. */
static void stall_timer_update(ControlClient *c) {
        if (c->in.size == 0) {
                if (c->stall_timer)
                        (void) sd_event_source_set_enabled(c->stall_timer, SD_EVENT_OFF);
                return;
        }
        if (c->stall_timer && sd_event_source_get_enabled(c->stall_timer, NULL) > 0)
                return;         /* already counting since the request began */
        if (!c->stall_timer)
                (void) sd_event_add_time_relative(c->server->manager->event, &c->stall_timer, CLOCK_MONOTONIC,
                                                  CONTROL_STALL_USEC, 0, client_stalled, c);
        else {
                (void) sd_event_source_set_time_relative(c->stall_timer, CONTROL_STALL_USEC);
                (void) sd_event_source_set_enabled(c->stall_timer, SD_EVENT_ONESHOT);
        }
}

static int client_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        ControlClient *c = userdata;
        char buf[16384];
        int r;

        if (revents & EPOLLOUT) {
                r = client_flush(c);
                if (r < 0)
                        return client_free(c), 0;
        }
        if (!(revents & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                return 0;
        if (c->closing)
                return client_free(c), 0;

        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return 0;
                return client_free(c), 0;
        }
        if (n == 0)
                return client_free(c), 0;
        if (varlink_buffer_append(&c->in, buf, n) < 0)
                return client_drop(c, "request too large"), 0;

        /* Everything complete in what was read (at most one read's worth per dispatch). */
        for (;;) {
                char *msg = NULL;
                r = varlink_buffer_next(&c->in, &msg);
                if (r == -E2BIG)
                        return client_drop(c, "request too large"), 0;
                if (r <= 0)
                        break;
                r = dispatch(c, msg);
                free(msg);
                if (r == -ECONNRESET)
                        return client_free(c), 0;
                if (r < 0)
                        return client_drop(c, r == -ENOBUFS ? "does not read its replies" : "cannot answer"), 0;
                if (c->closing)
                        break;
        }
        stall_timer_update(c);
        return 0;
}

static bool peer_is_admin(ControlServer *s, int fd, uid_t uid, gid_t gid) {
        if (uid == 0)
                return true;
        if (!s->have_admin_gid)
                return false;
        if (gid == s->admin_gid)
                return true;
        gid_t groups[256];
        socklen_t len = sizeof(groups);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0)
                return false;
        for (size_t i = 0; i < len / sizeof(gid_t); i++)
                if (groups[i] == s->admin_gid)
                        return true;
        return false;
}

static int on_accept(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        ControlServer *s = userdata;
        struct ucred cred = {};
        socklen_t len = sizeof(cred);

        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0)
                return 0;
        if (s->n_clients >= CONTROL_MAX_CLIENTS) {
                log_warning("control: %u clients already; refusing another", s->n_clients);
                safe_close(cfd);
                return 0;
        }
        ControlClient *c = calloc(1, sizeof(ControlClient));
        if (!c) {
                safe_close(cfd);
                return 0;
        }
        (void) getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &len);
        c->server = s;
        c->fd = cfd;
        c->uid = cred.uid;
        c->admin = peer_is_admin(s, cfd, cred.uid, cred.gid);
        varlink_buffer_init(&c->in, CONTROL_MAX_MESSAGE);
        if (sd_event_add_io(s->manager->event, &c->io, cfd, EPOLLIN, client_io, c) < 0) {
                safe_close(cfd);
                free(c);
                return 0;
        }
        /* Served in turn with replays past their handoff, before the ports' other work:
         * `vhostctl list` answers within a few ms even in a storm. Its work is bounded
         * (request size, clients, queued replies). */
        (void) sd_event_source_set_priority(c->io, CONTROL_PRIORITY);
        c->next = s->clients;
        if (s->clients)
                s->clients->prev = c;
        s->clients = c;
        s->n_clients++;
        return 0;
}

int control_server_new(Manager *m, const char *path, mode_t mode, const char *group, const char *admin_group,
                       ControlServer **ret) {
        ControlServer *s = calloc(1, sizeof(ControlServer));
        int r;

        if (!s)
                return -ENOMEM;
        s->manager = m;
        s->fd = -1;
        if (admin_group) {
                struct group *g = getgrnam(admin_group);
                if (!g) {
                        free(s);
                        return log_error_errno(EINVAL, "admin_group '%s' does not exist", admin_group);
                }
                s->admin_gid = g->gr_gid;
                s->have_admin_gid = true;
        }
        const char *from = NULL;
        ListenerHolder holder = { 0 };
        s->fd = manager_take_listener(m, path, &from);
        if (s->fd >= 0) {
                s->from_unit = strncmp(from, "vr.", 3) != 0;
                r = 0;
        } else
                r = listener_open(path, mode, group, &s->fd, &holder);
        if (r < 0) {
                free(s);
                if (r == -ESRCH)
                        return log_error_errno(EINVAL, "control_group '%s' does not exist", group);
                if (r == -EADDRINUSE) {
                        char what[192];
                        return log_error_errno(r, "Cannot listen on control socket %s: %s (another vhost-recond?); "
                                               "give this one another control path", path,
                                               listener_holder_describe(&holder, what, sizeof(what)));
                }
                return log_error_errno(r, "Cannot listen on control socket %s: %m", path);
        }
        s->path = strdup(path);
        r = sd_event_add_io(m->event, &s->listen, s->fd, EPOLLIN, on_accept, s);
        if (r >= 0)
                r = sd_event_source_set_priority(s->listen, CONTROL_PRIORITY);
        if (r < 0 || !s->path) {
                control_server_free(s);
                return log_error_errno(r < 0 ? r : -ENOMEM, "Cannot watch control socket: %m");
        }
        *ret = s;
        return 0;
}

ControlServer *control_server_free(ControlServer *s) {
        if (!s)
                return NULL;
        while (s->clients)
                client_free(s->clients);
        sd_event_source_disable_unref(s->listen);
        if (s->fd >= 0 && s->path && !s->from_unit && !s->manager->keep_sockets)
                (void) unlink(s->path);
        safe_close(s->fd);
        free(s->path);
        free(s);
        return NULL;
}

void control_server_store(ControlServer *s) {
        if (!s || s->from_unit)
                return;
        int fd = s->fd;
        if (sd_pid_notify_with_fds(0, 0, "FDSTORE=1\nFDNAME=vr.control", &fd, 1) <= 0)
                log_warning("Cannot put the control socket into the fd store");
}

void control_server_broadcast(ControlServer *s, json_object *event) {
        if (!s)
                return;
        for (ControlClient *c = s->clients, *next; c; c = next) {
                next = c->next;
                if (!c->monitor)
                        continue;
                json_object *o = json_object_new_object();
                json_object_object_add(o, "event", json_object_get(event));
                if (reply(c, o, true) < 0)
                        client_drop(c, "does not read its events");
        }
}
