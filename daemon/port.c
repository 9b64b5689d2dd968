/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fdstore.h"
#include "listener.h"
#include "peer-watch.h"
#include "log.h"
#include "manager.h"
#include "port.h"
#include "varlink.h"
#include "backend-channel.h"
#include "backend.h"
#include "replay.h"

static const char *const backend_state_table[_BACKEND_STATE_MAX] = {
        [BACKEND_ABSENT] = "absent",
        [BACKEND_PROBING] = "probing",
        [BACKEND_REPLAYING] = "replaying",
        [BACKEND_READY] = "connected",
        [BACKEND_STOPPING] = "stopping",
};

static json_object *peer_json(const struct ucred *peer) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "pid", json_object_new_int(peer->pid));
        json_object_object_add(o, "uid", json_object_new_int64(peer->uid));
        return o;
}

const char *backend_state_to_string(BackendState s) {
        return s >= 0 && s < _BACKEND_STATE_MAX ? backend_state_table[s] : NULL;
}

void port_set_error(Port *p, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->last_error, sizeof(p->last_error), fmt, ap);
        va_end(ap);
        p->last_error_usec = now_usec();
}

bool port_peer_allowed(const Port *p, const struct ucred *peer) {
        if (p->config.n_allow_uids == 0 && p->config.n_allow_gids == 0)
                return true;
        for (size_t i = 0; i < p->config.n_allow_uids; i++)
                if (p->config.allow_uids[i] == peer->uid)
                        return true;
        for (size_t i = 0; i < p->config.n_allow_gids; i++)
                if (p->config.allow_gids[i] == peer->gid)
                        return true;
        return false;
}

void port_throttle_frontend(Port *p) {
        Connection *fe = p->frontend;

        if (!fe)
                return;
        bool throttle = p->fe_queued >= FRONTEND_MAX_QUEUED ||
                fe->writer.queued > CONNECTION_THROTTLE_BYTES ||
                (p->backend && p->backend->writer.queued > CONNECTION_THROTTLE_BYTES);
        if (throttle == fe->throttled)
                return;
        fe->throttled = throttle;
        if (throttle)
                p->stats.throttled++;
        log_debug("%s: %s reading the front-end (%u requests waiting)", p->config.name,
                  throttle ? "pausing" : "resuming", p->fe_queued);
        connection_update_events(fe);
}

static void announce_hook(void *userdata) {
        port_announce_all(userdata);
}

static void announce_unlink(Port *p) {
        Manager *m = p->manager;

        if (!p->announce_pending)
                return;
        Port **pp = &m->announce_head, *prev = NULL;
        while (*pp != p) {
                prev = *pp;
                pp = &(*pp)->announce_next;
        }
        *pp = p->announce_next;
        if (m->announce_tail == p)
                m->announce_tail = prev;
        p->announce_next = NULL;
        p->announce_pending = false;
        if (!m->announce_head)          /* nothing held back: the hook must not outlive the manager */
                log_cancel_before_write(announce_hook);
}

/* A back-end's connect is logged and sent to monitors with the next line or event (the
 * replay's "replay done", or its failure: so the order stays), or ANNOUNCE_DELAY_USEC after
 * the connect at the latest (a back-end that does not answer): formatting and writing them
 * cost 20 to 50 µs with cold caches, which the back-end would otherwise wait for, on the
 * same CPU, before its replay. */
static void announce_later(Port *p, const Connection *c) {
        Manager *m = p->manager;

        announce_unlink(p);
        p->announce_peer = c->peer;
        p->announce_usec = c->connected_usec;
        p->announce_realtime_usec = now_realtime_usec();
        p->announce_pending = true;
        if (m->announce_tail)
                m->announce_tail->announce_next = p;
        else
                m->announce_head = p;
        m->announce_tail = p;
        log_set_before_write(announce_hook, m);
        if (m->announce_head == p) {    /* the first one held back: the timer from now */
                (void) sd_event_source_set_time_relative(m->announce, ANNOUNCE_DELAY_USEC);
                (void) sd_event_source_set_enabled(m->announce, SD_EVENT_ONESHOT);
        }
}

void port_announce_all(Manager *m) {
        Port *list = m->announce_head;

        m->announce_head = m->announce_tail = NULL;
        log_cancel_before_write(announce_hook);
        (void) sd_event_source_set_enabled(m->announce, SD_EVENT_OFF);
        while (list) {
                Port *p = list;
                list = p->announce_next;
                p->announce_next = NULL;
                p->announce_pending = false;
                log_info("%s: back-end connected (pid %d, uid %u)", p->config.name, (int) p->announce_peer.pid,
                         (unsigned) p->announce_peer.uid);
                manager_port_event_at(m, p, EVENT_BACKEND_CONNECTED, peer_json(&p->announce_peer), p->announce_usec,
                                      p->announce_realtime_usec);
        }
}

static const SideConfig *side_config(const Port *p, PortSide side) {
        return side == PORT_FRONTEND ? &p->config.frontend : &p->config.backend;
}

/* 0: attached; -EPERM: a peer the policy refuses; other negative errno: no resources. */
static int port_attach(Port *p, PortSide side, int fd) {
        Connection *c;
        int r;

        r = connection_new(p, side, fd, &c);
        if (r < 0) {
                log_error_errno(r, "%s: cannot set up %s connection: %m", p->config.name, port_side_to_string(side));
                return r;
        }
        if (side == PORT_FRONTEND)      /* a back-end is stored once replayed */
                fdstore_port_changed(p);
        if (!port_peer_allowed(p, &c->peer)) {
                p->stats.refused_peers++;
                port_set_error(p, "%s peer uid %u gid %u refused by allow_uids/allow_gids",
                               port_side_to_string(side), (unsigned) c->peer.uid, (unsigned) c->peer.gid);
                /* a client-mode side backs off by itself; an accepting side is paced by the peer */
                if (side_config(p, side)->mode == SIDE_CLIENT || p->refused_logged_usec[side] == 0 ||
                    p->refused_logged_uid[side] != c->peer.uid ||
                    p->last_error_usec - p->refused_logged_usec[side] >= PORT_REFUSED_LOG_USEC) {
                        if (p->refused_unlogged[side] > 0)
                                log_warning("%s: %s (refused %" PRIu64 " more times since the last line)",
                                            p->config.name, p->last_error, p->refused_unlogged[side]);
                        else
                                log_warning("%s: %s", p->config.name, p->last_error);
                        p->refused_logged_usec[side] = p->last_error_usec;
                        p->refused_logged_uid[side] = c->peer.uid;
                        p->refused_unlogged[side] = 0;
                } else
                        p->refused_unlogged[side]++;
                connection_free(c);
                return -EPERM;
        }

        if (side == PORT_FRONTEND) {
                if (p->frontend) {
                        log_warning("%s: refusing a second front-end (pid %d); the first one stays",
                                    p->config.name, (int) c->peer.pid);
                        connection_free(c);
                        return -EBUSY;
                }
                p->frontend = c;
                p->stats.frontend_connects++;
                log_info("%s: front-end connected (pid %d, uid %u)", p->config.name, (int) c->peer.pid,
                         (unsigned) c->peer.uid);
                manager_port_event(p->manager, p, EVENT_FRONTEND_CONNECTED, peer_json(&c->peer));
                return 0;
        }

        if (p->backend)
                port_drop_backend(p, "replaced by a new back-end connection");
        p->backend = c;
        p->stats.backend_connects++;
        announce_later(p, c);
        replay_start(p);
        return 0;
}

static int port_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Port *p = userdata;
        PortSide side = fd == p->listen_fd[PORT_FRONTEND] ? PORT_FRONTEND : PORT_BACKEND;

        /* One connection per dispatch keeps a connect storm on one port from starving others. */
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
                if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                        log_warning_errno(errno, "%s: accept on %s socket failed: %m", p->config.name,
                                          port_side_to_string(side));
                return 0;
        }
        if (side == PORT_FRONTEND && !p->frontend) {
                /* Into the fd store before anything else (see fdstore.h), but only a peer the
                 * port takes: a refused one must not cost systemd a store and a removal. */
                struct ucred peer = { .pid = 0, .uid = (uid_t) -1, .gid = (gid_t) -1 };
                socklen_t len = sizeof(peer);
                if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &peer, &len) == 0 && port_peer_allowed(p, &peer))
                        fdstore_frontend_accepted(p, cfd);
        }
        (void) port_attach(p, side, cfd);
        return 0;
}

int port_new(Manager *m, const PortConfig *config, Port **ret) {
        _cleanup_(port_freep) Port *p = calloc(1, sizeof(Port));
        int r;

        if (!p)
                return -ENOMEM;
        p->manager = m;
        p->listen_fd[PORT_FRONTEND] = p->listen_fd[PORT_BACKEND] = -1;
        shadow_init(&p->shadow);
        r = port_config_copy(&p->config, config);
        if (r < 0)
                return r;
        if (config->features_set)
                shadow_record_backend(&p->shadow, VU_GET_FEATURES, config->features);
        if (config->protocol_features_set)
                shadow_record_backend(&p->shadow, VU_GET_PROTOCOL_FEATURES, config->protocol_features);
        p->link_down_usec = now_usec();
        *ret = TAKE_PTR(p);
        return 0;
}

static void schedule_connect(Port *p, PortSide side, uint32_t delay_ms);

static uint32_t backoff_cap_ms(const SideConfig *sc) {
        return MAX(PORT_RECONNECT_CAP_MS, sc->reconnect_ms);
}

/* The wait after a failed attempt: twice the last one, from reconnect_ms up to the cap. */
static uint32_t next_backoff_ms(const Port *p, PortSide side) {
        const SideConfig *sc = side_config(p, side);
        return MIN(MAX(p->reconnect_delay_ms[side] * 2, sc->reconnect_ms), backoff_cap_ms(sc));
}

static void cancel_timer(Port *p, PortSide side) {
        if (p->reconnect_timer[side])
                (void) sd_event_source_set_enabled(p->reconnect_timer[side], SD_EVENT_OFF);
}

/* After a failed connect: a socket that is not there is waited for through the watch alone,
 * so an idle daemon does not wake; one that appeared but refuses (bound, not listening yet)
 * gets the watch's quick retries; the backoff timer is left for a socket that keeps refusing
 * and for a path inotify cannot watch. */
static void wait_for_peer(Port *p, PortSide side, int error) {
        PeerWatch *w = p->peer_watch[side];

        if (error == -ECONNREFUSED && peer_watch_retry(w)) {
                cancel_timer(p, side);
                return;
        }
        int r = w ? peer_watch_arm(w) : -EOPNOTSUPP;
        if (r < 0 && w && !p->watch_failed[side]) {
                log_warning_errno(r, "%s: cannot watch %s for the %s (%m); connecting on a timer", p->config.name,
                                  side_config(p, side)->path, port_side_to_string(side));
                p->watch_failed[side] = true;
        }
        if (r >= 0 && (error == -ENOENT || error == -ENOTDIR)) {
                if (r > 0)
                        schedule_connect(p, side, 0);   /* it appeared before the watch was in place */
                else
                        cancel_timer(p, side);
                return;
        }
        schedule_connect(p, side, next_backoff_ms(p, side));
}

static void try_connect(Port *p, PortSide side) {
        const SideConfig *sc = side_config(p, side);
        int fd = -1, r;

        if ((side == PORT_FRONTEND ? p->frontend : p->backend) || p->manager->stopping)
                return;
        r = unix_connect(sc->path, &fd);
        if (r < 0) {
                p->stats.connect_failures++;
                if (!p->unreachable[side])
                        log_warning_errno(r, "%s: cannot reach the %s at %s (%m); connecting when it appears, "
                                          "retrying at most every %u ms while it refuses",
                                          p->config.name, port_side_to_string(side), sc->path, backoff_cap_ms(sc));
                p->unreachable[side] = true;
                wait_for_peer(p, side, r);
                return;
        }
        peer_watch_disarm(p->peer_watch[side]);
        cancel_timer(p, side);
        if (p->unreachable[side])
                log_info("%s: the %s at %s is reachable again", p->config.name, port_side_to_string(side), sc->path);
        p->unreachable[side] = false;
        if (port_attach(p, side, fd) < 0)
                /* refused by policy, or no memory: try again later, backing off */
                schedule_connect(p, side, next_backoff_ms(p, side));
}

/* The watch: the peer's socket appeared (or a quick retry is due). */
static void on_peer_appeared(PeerWatch *w, void *userdata) {
        Port *p = userdata;
        PortSide side = w == p->peer_watch[PORT_FRONTEND] ? PORT_FRONTEND : PORT_BACKEND;

        log_debug("%s: the %s socket %s appeared; connecting", p->config.name, port_side_to_string(side),
                  side_config(p, side)->path);
        try_connect(p, side);
}

static int on_reconnect_frontend(sd_event_source *s, uint64_t usec, void *userdata) {
        try_connect(userdata, PORT_FRONTEND);
        return 0;
}

static int on_reconnect_backend(sd_event_source *s, uint64_t usec, void *userdata) {
        try_connect(userdata, PORT_BACKEND);
        return 0;
}

static void schedule_connect(Port *p, PortSide side, uint32_t delay_ms) {
        uint64_t usec = (uint64_t) delay_ms * 1000;

        p->reconnect_delay_ms[side] = delay_ms;
        if (p->reconnect_timer[side]) {
                (void) sd_event_source_set_time_relative(p->reconnect_timer[side], usec);
                (void) sd_event_source_set_enabled(p->reconnect_timer[side], SD_EVENT_ONESHOT);
                return;
        }
        /* 1 ms accuracy: sd-event reads 0 as 250 ms, late for a connect that is due now */
        if (sd_event_add_time_relative(p->manager->event, &p->reconnect_timer[side], CLOCK_MONOTONIC, usec, 1000,
                                       side == PORT_FRONTEND ? on_reconnect_frontend : on_reconnect_backend, p) < 0)
                log_error("%s: cannot arm the %s reconnect timer", p->config.name, port_side_to_string(side));
}

/* Client mode: after a loss, connect again. A connection that lived (a second or more) starts
 * over at reconnect_ms; one that died at once (a dying listener) backs off like a failure. */
static void reconnect_after_loss(Port *p, PortSide side, uint64_t connected_usec) {
        const SideConfig *sc = side_config(p, side);

        if (sc->mode != SIDE_CLIENT || p->manager->stopping)
                return;
        /* a peer that comes back before the timer is connected at once */
        if (p->peer_watch[side])
                (void) peer_watch_arm(p->peer_watch[side]);
        schedule_connect(p, side, now_usec() - connected_usec >= 1000000 ? sc->reconnect_ms : next_backoff_ms(p, side));
}

static int open_side(Port *p, PortSide side) {
        const SideConfig *sc = side_config(p, side);
        int r;

        if (sc->mode == SIDE_CLIENT) {
                r = peer_watch_new(p->manager->peer_watcher, sc->path, on_peer_appeared, p, &p->peer_watch[side]);
                if (r < 0)
                        return log_error_errno(r, "%s: cannot set up the watch of %s: %m", p->config.name, sc->path);
                p->reconnect_delay_ms[side] = sc->reconnect_ms;
                schedule_connect(p, side, 0);
                return 0;
        }
        const char *from = NULL;
        ListenerHolder holder = { 0 };
        p->listen_fd[side] = manager_take_listener(p->manager, sc->path, &from);
        if (p->listen_fd[side] < 0 && (p->listen_fd[side] = fdstore_take_listener(p->manager->fdstore, sc->path)) >= 0)
                from = "vr.f (fd store)";
        if (p->listen_fd[side] >= 0) {
                /* A socket unit's listener belongs to the unit; one from our fd store is ours. */
                p->listen_from_unit[side] = strncmp(from, "vr.", 3) != 0;
                log_info("%s: adopted the listening socket %s from systemd (%s)", p->config.name, sc->path, from);
                r = 0;
        } else
                r = listener_open(sc->path, p->config.socket_mode, p->config.socket_group, &p->listen_fd[side], &holder);
        if (r == -ESRCH)
                return log_error_errno(EINVAL, "%s: socket_group '%s' does not exist", p->config.name,
                                       p->config.socket_group);
        if (r == -EPERM && p->config.socket_group)
                return log_error_errno(r, "%s: cannot give %s to socket_group '%s': vhost-recond (uid %u) is not "
                                       "a member of it (under systemd: SupplementaryGroups=%s)", p->config.name,
                                       sc->path, p->config.socket_group, (unsigned) geteuid(), p->config.socket_group);
        if (r == -EACCES)
                return log_error_errno(r, "%s: cannot listen on %s: its directory is not writable by vhost-recond "
                                       "(uid %u); give the directory to that user or use /run/vhost-recon", p->config.name,
                                       sc->path, (unsigned) geteuid());
        if (r == -EADDRINUSE) {
                char what[192];
                return log_error_errno(r, "%s: cannot listen on %s: %s, it is not this vhost-recond's socket; give "
                                       "the port another path or stop that process", p->config.name, sc->path,
                                       listener_holder_describe(&holder, what, sizeof(what)));
        }
        if (r == -EEXIST)
                return log_error_errno(r, "%s: cannot listen on %s: a file that is not a socket is there",
                                       p->config.name, sc->path);
        if (r == -EROFS)
                return log_error_errno(r, "%s: cannot listen on %s: read-only here (under systemd: add its "
                                       "directory to ReadWritePaths= in a drop-in)", p->config.name, sc->path);
        if (r < 0)
                return log_error_errno(r, "%s: cannot listen on %s: %m", p->config.name, sc->path);
        r = io_watch_add(p->manager->ioset, &p->listen_source[side], p->listen_fd[side], EPOLLIN, port_accept, p);
        if (r < 0)
                return log_error_errno(r, "%s: cannot watch %s: %m", p->config.name, sc->path);
        fdstore_port_changed(p);
        return 0;
}

int port_start(Port *p) {
        int r = open_side(p, PORT_FRONTEND);
        if (r >= 0)
                r = open_side(p, PORT_BACKEND);
        if (r < 0)
                return r;
        log_info("%s: front-end %s %s, back-end %s %s", p->config.name,
                 p->config.frontend.mode == SIDE_CLIENT ? "connects to" : "socket", p->config.frontend.path,
                 p->config.backend.mode == SIDE_CLIENT ? "connects to" : "socket", p->config.backend.path);
        return 0;
}

static void frontend_items_free(Port *p) {
        while (p->fe_head) {
                FrontendItem *it = p->fe_head;
                p->fe_head = it->next;
                vu_msg_close_fds(&it->msg);
                free(it);
        }
        p->fe_tail = NULL;
        p->fe_queued = 0;
}

Port *port_free(Port *p) {
        if (!p)
                return NULL;
        fdstore_port_free(p, false);
        announce_unlink(p);
        manager_replay_end(p->manager, p);
        p->backend = connection_free(p->backend);
        p->backend_channel = backend_channel_free(p->backend_channel);
        p->frontend = connection_free(p->frontend);
        backend_clear_pending(p);
        frontend_items_free(p);
        for (int s = 0; s < _PORT_SIDE_MAX; s++) {
                p->listen_source[s] = io_watch_free(p->listen_source[s]);
                safe_close(p->listen_fd[s]);
                const char *path = s == PORT_FRONTEND ? p->config.frontend.path : p->config.backend.path;
                if (path && p->listen_fd[s] >= 0 && !p->listen_from_unit[s] && !p->manager->keep_sockets)
                        (void) unlink(path);
        }
        sd_event_source_disable_unref(p->reply_timer);
        for (int s = 0; s < _PORT_SIDE_MAX; s++) {
                sd_event_source_disable_unref(p->reconnect_timer[s]);
                peer_watch_free(p->peer_watch[s]);
        }
        shadow_done(&p->shadow);
        port_config_done(&p->config);
        free(p);
        return NULL;
}

void port_stop_listening(Port *p) {
        for (int s = 0; s < _PORT_SIDE_MAX; s++)
                if (p->listen_source[s])
                        (void) io_watch_set_enabled(p->listen_source[s], false);
}

static bool connection_idle(const Connection *c) {
        return !c || (c->reader.have == 0 && !vu_writer_pending(&c->writer) && !c->failed);
}

bool port_is_quiescent(const Port *p) {
        return connection_idle(p->frontend) && connection_idle(p->backend) && !p->fe_head && !p->pending_head &&
               (p->backend_state == BACKEND_ABSENT || p->backend_state == BACKEND_READY);
}

void port_drop_backend(Port *p, const char *reason) {
        port_connection_lost(p, PORT_BACKEND, 0, reason);
}

void port_connection_lost(Port *p, PortSide side, int error, const char *reason) {
        char buf[300];

        if (error && reason)
                snprintf(buf, sizeof(buf), "%s: %s", reason, strerror(abs(error)));
        else
                snprintf(buf, sizeof(buf), "%s", reason ? reason : error ? strerror(abs(error)) : "closed");

        if (side == PORT_BACKEND) {
                if (!p->backend)
                        return;
                uint64_t since = p->backend->connected_usec;
                backend_lost(p, buf);
                reconnect_after_loss(p, PORT_BACKEND, since);
                return;
        }

        if (!p->frontend)
                return;
        log_info("%s: front-end disconnected (%s); closing the back-end so it drops the guest memory",
                 p->config.name, buf);
        json_object *details = json_object_new_object();
        json_object_object_add(details, "reason", json_object_new_string(buf));
        manager_port_event(p->manager, p, EVENT_FRONTEND_DISCONNECTED, details);
        uint64_t since = p->frontend->connected_usec;
        p->frontend = connection_free(p->frontend);
        frontend_items_free(p);
        backend_forget_frontend(p);
        shadow_reset(&p->shadow);
        p->fe_seq = p->replay_seq = 0;
        if (p->backend)
                port_drop_backend(p, "front-end left");
        port_update_link(p);
        reconnect_after_loss(p, PORT_FRONTEND, since);
}

void port_update_link(Port *p) {
        bool started = false;

        fdstore_port_changed(p);
        for (unsigned i = 0; i < p->shadow.n_vrings && !started; i++)
                started = p->shadow.vrings[i].started;
        /* Data can flow: the front-end's device has a running ring and the back-end has it all. */
        bool up = p->frontend && p->backend && p->backend_state == BACKEND_READY && started;
        uint64_t now = now_usec();

        if (up == p->link_up)
                return;
        p->link_up = up;
        p->link_generation++;
        p->link_changed_realtime_usec = now_realtime_usec();
        if (up) {
                p->stats.last_outage_usec = now - p->link_down_usec;
                log_info("%s: link up (down for %.3f s)", p->config.name, p->stats.last_outage_usec / 1e6);
                json_object *details = json_object_new_object();
                json_object_object_add(details, "outage_usec", json_object_new_uint64(p->stats.last_outage_usec));
                manager_port_event(p->manager, p, EVENT_LINK_UP, details);
        } else {
                p->link_down_usec = now;
                log_info("%s: link down", p->config.name);
                manager_port_event(p->manager, p, EVENT_LINK_DOWN, NULL);
        }
}

int port_disconnect(Port *p, PortSide side) {
        if (side == PORT_FRONTEND) {
                if (!p->frontend)
                        return -ENOTCONN;
                port_connection_lost(p, PORT_FRONTEND, 0, "disconnected by vhostctl");
                return 0;
        }
        if (!p->backend)
                return -ENOTCONN;
        if (p->backend_state == BACKEND_STOPPING)
                return 0;
        if (backend_stop(p, "disconnected by vhostctl") == 0)
                port_drop_backend(p, "disconnected by vhostctl");
        return 0;
}

static json_object *features_json(uint64_t v, bool protocol) {
        char names[1024];
        json_object *o = json_object_new_object(), *a = json_object_new_array();

        json_object_object_add(o, "value", json_object_new_uint64(v));
        vu_features_to_string(v, protocol, names, sizeof(names));
        for (char *save = NULL, *t = strtok_r(names, ",", &save); t; t = strtok_r(NULL, ",", &save))
                json_object_array_add(a, json_object_new_string(t));
        json_object_object_add(o, "names", a);
        return o;
}

static json_object *side_json(const Port *p, PortSide side) {
        const SideConfig *sc = side == PORT_FRONTEND ? &p->config.frontend : &p->config.backend;
        const Connection *c = side == PORT_FRONTEND ? p->frontend : p->backend;
        json_object *o = c ? peer_json(&c->peer) : json_object_new_object();

        json_object_object_add(o, "path", json_object_new_string(sc->path));
        json_object_object_add(o, "mode", json_object_new_string(side_mode_to_string(sc->mode)));
        json_object_object_add(o, "connected", json_object_new_boolean(c != NULL));
        if (side == PORT_BACKEND)
                json_object_object_add(o, "state", json_object_new_string(backend_state_to_string(p->backend_state)));
        return o;
}

#define STATS_FIELDS(X)                                                                 \
        X(frontend_connects) X(backend_connects) X(replays_ok) X(replays_failed)        \
        X(incompatible) X(refused_peers) X(throttled) X(handoffs) X(connect_failures) X(last_replay_usec)        \
        X(last_outage_usec)

json_object *port_stats_to_json(const PortStats *s) {
        json_object *o = json_object_new_object();
#define ADD(f) json_object_object_add(o, #f, json_object_new_uint64(s->f));
        STATS_FIELDS(ADD)
#undef ADD
        return o;
}

void port_stats_from_json(PortStats *s, json_object *o) {
        json_object *v;
#define GET(f) s->f = json_object_object_get_ex(o, #f, &v) ? json_object_get_uint64(v) : 0;
        STATS_FIELDS(GET)
#undef GET
}

void port_summary_put(const Port *p, JsonBuf *b) {
        json_buf_puts(b, "{\"name\":");
        json_buf_put_string(b, p->config.name);
        json_buf_puts(b, p->link_up ? ",\"link\":\"up\"" : ",\"link\":\"down\"");
        for (PortSide side = 0; side < _PORT_SIDE_MAX; side++) {
                const Connection *conn = side == PORT_FRONTEND ? p->frontend : p->backend;
                json_buf_puts(b, side == PORT_FRONTEND ? ",\"frontend\":{\"connected\":" : ",\"backend\":{\"connected\":");
                json_buf_puts(b, conn ? "true" : "false");
                if (conn) {
                        json_buf_puts(b, ",\"pid\":");
                        json_buf_put_i64(b, conn->peer.pid);
                }
                if (side == PORT_BACKEND) {
                        json_buf_puts(b, ",\"state\":\"");
                        json_buf_puts(b, backend_state_to_string(p->backend_state));
                        json_buf_puts(b, "\"");
                }
                json_buf_puts(b, "}");
        }
        json_buf_puts(b, ",\"counters\":{\"replays_ok\":");
        json_buf_put_u64(b, p->stats.replays_ok);
        json_buf_puts(b, ",\"replays_failed\":");
        json_buf_put_u64(b, p->stats.replays_failed);
        json_buf_puts(b, ",\"last_replay_usec\":");
        json_buf_put_u64(b, p->stats.last_replay_usec);
        json_buf_puts(b, ",\"last_outage_usec\":");
        json_buf_put_u64(b, p->stats.last_outage_usec);
        json_buf_puts(b, "},\"last_error\":");
        if (p->last_error[0])
                json_buf_put_string(b, p->last_error);
        else
                json_buf_puts(b, "null");
        json_buf_puts(b, "}");
}

json_object *port_to_json(const Port *p) {
        const Shadow *s = &p->shadow;
        json_object *o = json_object_new_object();
        unsigned started = 0;

        for (unsigned i = 0; i < s->n_vrings; i++)
                started += s->vrings[i].started;
        json_object_object_add(o, "name", json_object_new_string(p->config.name));
        json_object_object_add(o, "link", json_object_new_string(p->link_up ? "up" : "down"));
        json_object_object_add(o, "link_changed_realtime_usec", json_object_new_uint64(p->link_changed_realtime_usec));
        json_object_object_add(o, "frontend", side_json(p, PORT_FRONTEND));
        json_object_object_add(o, "backend", side_json(p, PORT_BACKEND));
        json_object_object_add(o, "features", features_json(s->features_set ? s->features : 0, false));
        json_object_object_add(o, "protocol_features",
                               features_json(s->protocol_features_set ? s->protocol_features : 0, true));
        json_object_object_add(o, "status", json_object_new_int(s->status));
        json_object_object_add(o, "vrings", json_object_new_int(s->n_vrings));
        json_object_object_add(o, "vrings_started", json_object_new_int(started));
        json_object_object_add(o, "memory_regions", json_object_new_int(s->memory.n_regions));
        /* ACCESS_PLATFORM: the translations kept for the next back-end, and the updates not kept
         * (past the bound, or outside the memory table) that a back-end must ask for again */
        json_object_object_add(o, "iotlb_entries", json_object_new_int((int) s->iotlb.n));
        json_object_object_add(o, "iotlb_not_kept", json_object_new_uint64(s->iotlb.not_kept));
        /* a live migration under way: the front-end logs, and the log is in every replay */
        json_object_object_add(o, "dirty_logging", json_object_new_boolean(shadow_logging(s)));

        json_object_object_add(o, "counters", port_stats_to_json(&p->stats));
        json_object_object_add(o, "last_error", p->last_error[0] ? json_object_new_string(p->last_error) : NULL);
        return o;
}
