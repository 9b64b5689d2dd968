/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "listener.h"
#include "log.h"
#include "manager.h"
#include "port.h"
#include "backend.h"
#include "replay.h"

static const char *const backend_state_table[_BACKEND_STATE_MAX] = {
        [BACKEND_ABSENT] = "absent",
        [BACKEND_PROBING] = "probing",
        [BACKEND_REPLAYING] = "replaying",
        [BACKEND_READY] = "connected",
};

const char *backend_state_to_string(BackendState s) {
        return s >= 0 && s < _BACKEND_STATE_MAX ? backend_state_table[s] : NULL;
}

void port_set_error(Port *p, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->last_error, sizeof(p->last_error), fmt, ap);
        va_end(ap);
}

static bool peer_allowed(const Port *p, const struct ucred *peer) {
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

static void port_attach(Port *p, PortSide side, int fd) {
        Connection *c;
        int r;

        r = connection_new(p, side, fd, &c);
        if (r < 0) {
                log_error_errno(r, "%s: cannot set up %s connection: %m", p->config.name, port_side_to_string(side));
                return;
        }
        if (!peer_allowed(p, &c->peer)) {
                p->stats.refused_peers++;
                port_set_error(p, "%s peer uid %u gid %u refused by allow_uids/allow_gids",
                               port_side_to_string(side), (unsigned) c->peer.uid, (unsigned) c->peer.gid);
                log_warning("%s: %s", p->config.name, p->last_error);
                connection_free(c);
                return;
        }

        if (side == PORT_FRONTEND) {
                if (p->frontend) {
                        log_warning("%s: refusing a second front-end (pid %d); the first one stays",
                                    p->config.name, (int) c->peer.pid);
                        connection_free(c);
                        return;
                }
                p->frontend = c;
                p->stats.frontend_connects++;
                log_info("%s: front-end connected (pid %d, uid %u)", p->config.name, (int) c->peer.pid,
                         (unsigned) c->peer.uid);
                return;
        }

        if (p->backend)
                port_drop_backend(p, "replaced by a new back-end connection");
        p->backend = c;
        p->stats.backend_connects++;
        log_info("%s: back-end connected (pid %d, uid %u)", p->config.name, (int) c->peer.pid,
                 (unsigned) c->peer.uid);
        replay_start(p);
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
        port_attach(p, side, cfd);
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

static int open_side(Port *p, PortSide side) {
        const SideConfig *sc = side == PORT_FRONTEND ? &p->config.frontend : &p->config.backend;
        int r;

        if (sc->mode != SIDE_SERVER)
                return log_error_errno(EOPNOTSUPP, "%s: %s mode \"%s\" is not supported yet", p->config.name,
                                       port_side_to_string(side), side_mode_to_string(sc->mode));
        r = listener_open(sc->path, p->config.socket_mode, p->config.socket_group, &p->listen_fd[side]);
        if (r == -ESRCH)
                return log_error_errno(EINVAL, "%s: socket_group '%s' does not exist", p->config.name,
                                       p->config.socket_group);
        if (r < 0)
                return log_error_errno(r, "%s: cannot listen on %s: %m", p->config.name, sc->path);
        r = sd_event_add_io(p->manager->event, &p->listen_source[side], p->listen_fd[side], EPOLLIN,
                            port_accept, p);
        if (r < 0)
                return log_error_errno(r, "%s: cannot watch %s: %m", p->config.name, sc->path);
        return 0;
}

int port_start(Port *p) {
        int r = open_side(p, PORT_FRONTEND);
        if (r >= 0)
                r = open_side(p, PORT_BACKEND);
        if (r < 0)
                return r;
        log_info("%s: front-end socket %s, back-end socket %s", p->config.name, p->config.frontend.path,
                 p->config.backend.path);
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
}

Port *port_free(Port *p) {
        if (!p)
                return NULL;
        p->backend = connection_free(p->backend);
        p->frontend = connection_free(p->frontend);
        backend_clear_pending(p);
        frontend_items_free(p);
        for (int s = 0; s < _PORT_SIDE_MAX; s++) {
                sd_event_source_disable_unref(p->listen_source[s]);
                safe_close(p->listen_fd[s]);
                const char *path = s == PORT_FRONTEND ? p->config.frontend.path : p->config.backend.path;
                if (path && p->listen_fd[s] >= 0)
                        (void) unlink(path);
        }
        sd_event_source_disable_unref(p->reply_timer);
        shadow_done(&p->shadow);
        port_config_done(&p->config);
        free(p);
        return NULL;
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
                backend_lost(p, buf);
                return;
        }

        if (!p->frontend)
                return;
        log_info("%s: front-end disconnected (%s); closing the back-end so it drops the guest memory",
                 p->config.name, buf);
        p->frontend = connection_free(p->frontend);
        frontend_items_free(p);
        backend_forget_frontend(p);
        shadow_reset(&p->shadow);
        p->fe_seq = p->replay_seq = 0;
        if (p->backend)
                port_drop_backend(p, "front-end left");
        port_update_link(p);
}

void port_update_link(Port *p) {
        bool started = false;
        for (unsigned i = 0; i < p->shadow.n_vrings && !started; i++)
                started = p->shadow.vrings[i].started;
        /* Data can flow: the front-end's device has a running ring and the back-end has it all. */
        bool up = p->frontend && p->backend && p->backend_state == BACKEND_READY && started;
        uint64_t now = now_usec();

        if (up == p->link_up)
                return;
        p->link_up = up;
        if (up) {
                p->stats.last_outage_usec = now - p->link_down_usec;
                log_info("%s: link up (down for %.3f s)", p->config.name, p->stats.last_outage_usec / 1e6);
        } else {
                p->link_down_usec = now;
                log_info("%s: link down", p->config.name);
        }
}
