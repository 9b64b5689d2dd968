/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "control.h"
#include "fdstore.h"
#include "link-map.h"
#include "log.h"
#include "manager.h"
#include "peer-watch.h"
#include "port.h"

uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

uint64_t now_realtime_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static const char *const port_event_table[_PORT_EVENT_MAX] = {
        [EVENT_FRONTEND_CONNECTED] = "frontend-connected",
        [EVENT_FRONTEND_DISCONNECTED] = "frontend-disconnected",
        [EVENT_BACKEND_CONNECTED] = "backend-connected",
        [EVENT_BACKEND_DISCONNECTED] = "backend-disconnected",
        [EVENT_REPLAY_DONE] = "replay-done",
        [EVENT_REPLAY_FAILED] = "replay-failed",
        [EVENT_INCOMPATIBLE] = "incompatible",
        [EVENT_LINK_UP] = "link-up",
        [EVENT_LINK_DOWN] = "link-down",
};

const char *port_event_to_string(PortEvent e) {
        return e >= 0 && e < _PORT_EVENT_MAX ? port_event_table[e] : NULL;
}

static void link_map_sync(Manager *m, Port *p) {
        if (m->link_map)
                (void) link_map_update(m->link_map, p->slot, p->config.name, p->link_up, p->link_generation,
                                       p->link_generation ? now_usec() * 1000 : 0);
}

void manager_port_event(Manager *m, Port *p, PortEvent e, json_object *details) {
        manager_port_event_at(m, p, e, details, now_usec(), now_realtime_usec());
}

void manager_port_event_at(Manager *m, Port *p, PortEvent e, json_object *details, uint64_t monotonic_usec,
                           uint64_t realtime_usec) {
        json_object *ev;

        if (m->announce_head)   /* in the order they happened */
                port_announce_all(m);
        metrics_port_event(p, e, details);
        ev = details ? details : json_object_new_object();

        if (e == EVENT_LINK_UP || e == EVENT_LINK_DOWN) {
                link_map_sync(m, p);
                manager_update_status(m);
        }
        if (!m->control) {
                json_object_put(ev);
                return;
        }
        json_object_object_add(ev, "type", json_object_new_string(port_event_to_string(e)));
        json_object_object_add(ev, "port", json_object_new_string(p->config.name));
        json_object_object_add(ev, "monotonic_usec", json_object_new_uint64(monotonic_usec));
        json_object_object_add(ev, "realtime_usec", json_object_new_uint64(realtime_usec));
        control_server_broadcast(m->control, ev);
        json_object_put(ev);
}

#define STOP_GRACE_USEC (3 * 1000000ull)

static void finish_stop(Manager *m) {
        size_t kept = 0;

        if (fdstore_enabled(m->fdstore)) {
                /* Everything is in the store already; the last state says every stream is idle. */
                m->keep_sockets = true;
                fdstore_commit_all(m);
                for (size_t i = 0; i < m->n_ports; i++)
                        kept += m->ports[i]->frontend != NULL;
                log_info("%zu front-end connection%s kept in the fd store for the next start", kept, kept == 1 ? "" : "s");
                FdStoreStats st;
                fdstore_stats(m->fdstore, &st);
                log_info("fd store: %llu commits (%.1f µs, %.0f bytes each), %llu fds stored, %llu removed, %llu held; "
                         "front-end streams in doubt %llu times, %.1f µs each",
                         (unsigned long long) st.commits, st.commits ? (double) st.commit_usec / st.commits : 0.0,
                         st.commits ? (double) st.bytes / st.commits : 0.0, (unsigned long long) st.stores,
                         (unsigned long long) st.removes, (unsigned long long) st.entries,
                         (unsigned long long) st.doubt_windows,
                         st.doubt_windows ? (double) st.doubt_usec / st.doubt_windows : 0.0);
        }
        (void) sd_event_exit(m->event, 0);
}

/* Until every port is quiescent (or the grace time is over): messages in flight finish. */
static int on_stop_check(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        bool quiet = true;

        for (size_t i = 0; i < m->n_ports && quiet; i++)
                quiet = port_is_quiescent(m->ports[i]);
        if (quiet || now_usec() >= m->stop_deadline_usec) {
                if (!quiet)
                        log_warning("Stopping with requests still in flight after %llu s",
                                    (unsigned long long) (STOP_GRACE_USEC / 1000000));
                finish_stop(m);
                return 0;
        }
        (void) sd_event_source_set_time_relative(s, 10 * 1000);
        (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        return 0;
}

static int on_exit_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;

        if (m->stopping)
                return 0;
        m->stopping = true;
        log_info("Received %s, stopping.", strsignal(si->ssi_signo));
        (void) sd_notify(0, "STOPPING=1");
        for (size_t i = 0; i < m->n_ports; i++)
                port_stop_listening(m->ports[i]);
        m->stop_deadline_usec = now_usec() + STOP_GRACE_USEC;
        if (sd_event_add_time_relative(m->event, &m->stop_timer, CLOCK_MONOTONIC, 0, 0, on_stop_check, m) < 0)
                finish_stop(m);
        return 0;
}

static void passed_fds_collect(Manager *m) {
        char **names = NULL;
        int n = sd_listen_fds_with_names(1, &names);

        if (n <= 0)
                return;
        m->passed_fds = calloc(n, sizeof(int));
        if (!m->passed_fds) {
                for (int i = 0; i < n; i++)
                        free(names[i]);
                free(names);
                return;
        }
        for (int i = 0; i < n; i++) {
                m->passed_fds[i] = SD_LISTEN_FDS_START + i;
                (void) fcntl(m->passed_fds[i], F_SETFD, FD_CLOEXEC);
        }
        m->passed_names = names;
        m->n_passed = n;
}

static void passed_fds_close_rest(Manager *m) {
        for (size_t i = 0; i < m->n_passed; i++) {
                if (m->passed_fds[i] >= 0) {
                        log_warning("systemd passed fd %d (%s), which no configured port uses; closing it",
                                    m->passed_fds[i], m->passed_names[i] ? m->passed_names[i] : "unnamed");
                        m->passed_fds[i] = safe_close(m->passed_fds[i]);
                }
                free(m->passed_names[i]);
        }
        free(m->passed_fds);
        free(m->passed_names);
        m->passed_fds = NULL;
        m->passed_names = NULL;
        m->n_passed = 0;
}

int manager_take_listener(Manager *m, const char *path, const char **ret_name) {
        for (size_t i = 0; i < m->n_passed; i++) {
                int fd = m->passed_fds[i];
                if (fd < 0 || sd_is_socket_unix(fd, SOCK_STREAM, 1, path, 0) <= 0)
                        continue;
                m->passed_fds[i] = -1;
                (void) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
                *ret_name = m->passed_names[i] ? m->passed_names[i] : "unnamed";
                return fd;
        }
        return -1;
}

int manager_take_passed(Manager *m, const char *name) {
        for (size_t i = 0; i < m->n_passed; i++)
                if (m->passed_fds[i] >= 0 && m->passed_names[i] && strcmp(m->passed_names[i], name) == 0) {
                        int fd = m->passed_fds[i];
                        m->passed_fds[i] = -1;
                        return fd;
                }
        return -1;
}

void manager_update_status(Manager *m) {
        size_t up = 0;
        for (size_t i = 0; i < m->n_ports; i++)
                up += m->ports[i]->link_up;
        (void) sd_notifyf(0, "STATUS=%zu port%s, %zu up", m->n_ports, m->n_ports == 1 ? "" : "s", up);
}

static int on_reload_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        char err[1024];
        (void) manager_reload(userdata, err, sizeof(err));
        return 0;
}

static void on_handoff_check(void *userdata);

static int on_announce(sd_event_source *s, uint64_t usec, void *userdata) {
        port_announce_all(userdata);
        return 0;
}

static int on_fdstore_commit(sd_event_source *s, void *userdata) {
        fdstore_commit_dirty(userdata);
        return 0;
}

/* VHOST_RECOND_TEST_HOOKS=1 (tests only, see vhost-recond(8)): SIGUSR1 hangs the event loop
 * (the watchdog's case), SIGUSR2 aborts. */
static int on_test_hook(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        if (si->ssi_signo == SIGUSR2) {
                log_warning("Test hook: aborting");
                abort();
        }
        log_warning("Test hook: hanging the event loop");
        for (;;)
                pause();
        return 0;
}

int manager_new(Manager **ret) {
        _cleanup_(manager_freep) Manager *m = calloc(1, sizeof(Manager));
        sigset_t mask;
        int r;

        if (!m)
                return -ENOMEM;
        r = sd_event_default(&m->event);
        if (r < 0)
                return r;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        if ((r = sd_event_add_signal(m->event, NULL, SIGTERM, on_exit_signal, m)) < 0 ||
            (r = sd_event_add_signal(m->event, NULL, SIGINT, on_exit_signal, m)) < 0 ||
            (r = sd_event_add_signal(m->event, NULL, SIGHUP, on_reload_signal, m)) < 0)
                return r;
        if ((r = sd_event_add_post(m->event, &m->fdstore_commit, on_fdstore_commit, m)) < 0 ||
            (r = sd_event_add_time_relative(m->event, &m->announce, CLOCK_MONOTONIC, ANNOUNCE_DELAY_USEC,
                                            ANNOUNCE_DELAY_USEC / 10, on_announce, m)) < 0 ||
            (r = sd_event_source_set_enabled(m->announce, SD_EVENT_OFF)) < 0 ||
            (r = ioset_new(m->event, &m->ioset)) < 0 ||
            (r = peer_watcher_new(m->event, &m->peer_watcher)) < 0)
                return r;
        ioset_set_after_batch(m->ioset, on_handoff_check, m);
        if (getenv("VHOST_RECOND_TEST_HOOKS")) {
                sigemptyset(&mask);
                sigaddset(&mask, SIGUSR1);
                sigaddset(&mask, SIGUSR2);
                sigprocmask(SIG_BLOCK, &mask, NULL);
                if ((r = sd_event_add_signal(m->event, NULL, SIGUSR1, on_test_hook, m)) < 0 ||
                    (r = sd_event_add_signal(m->event, NULL, SIGUSR2, on_test_hook, m)) < 0)
                        return r;
        }
        /* A peer closing its socket must not kill the daemon. */
        signal(SIGPIPE, SIG_IGN);
        /* WatchdogSec=: sd-event pings systemd from the loop itself, so a hung loop is caught. */
        (void) sd_event_set_watchdog(m->event, true);
        passed_fds_collect(m);
        r = fdstore_new(m, &m->fdstore);
        if (r < 0)
                return r;
        /* a post source costs every dispatch one more loop iteration: only with the store */
        if (!fdstore_enabled(m->fdstore))
                (void) sd_event_source_set_enabled(m->fdstore_commit, SD_EVENT_OFF);
        *ret = TAKE_PTR(m);
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        /* The control socket first: its clients must not see ports half gone. */
        m->control = control_server_free(m->control);
        m->metrics = metrics_server_free(m->metrics);
        sd_event_source_disable_unref(m->stop_timer);
        sd_event_source_disable_unref(m->fdstore_commit);
        sd_event_source_disable_unref(m->announce);
        passed_fds_close_rest(m);
        for (size_t i = 0; i < m->n_ports; i++)
                port_free(m->ports[i]);
        m->fdstore = fdstore_free(m->fdstore);
        m->ioset = ioset_free(m->ioset);
        m->peer_watcher = peer_watcher_free(m->peer_watcher);
        link_map_free(m->link_map);
        free(m->ports);
        config_free(m->config);
        free(m->config_path);
        for (size_t i = 0; i < m->n_port_filter; i++)
                free(m->port_filter[i]);
        free(m->port_filter);
        free(m->control_path);
        sd_event_unref(m->event);
        free(m);
        return NULL;
}

Port *manager_find_port(Manager *m, const char *name) {
        for (size_t i = 0; i < m->n_ports; i++)
                if (strcmp(m->ports[i]->config.name, name) == 0)
                        return m->ports[i];
        return NULL;
}

/* The ports this instance serves: every port of the file, or the --port ones, each from the
 * file or with default paths when the file does not list it. */
static int wanted_ports(Manager *m, const Config *c, PortConfig **ret, size_t *ret_n) {
        size_t n = m->n_port_filter ? m->n_port_filter : c->n_ports;
        PortConfig *v = calloc(n ? n : 1, sizeof(PortConfig));
        int r = 0;

        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < n && r >= 0; i++) {
                if (!m->n_port_filter) {
                        r = port_config_copy(&v[i], &c->ports[i]);
                        continue;
                }
                const PortConfig *pc = config_find_port(c, m->port_filter[i]);
                r = pc ? port_config_copy(&v[i], pc) : port_config_default(m->port_filter[i], &v[i]);
        }
        if (r < 0) {
                for (size_t i = 0; i < n; i++)
                        port_config_done(&v[i]);
                free(v);
                return r;
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

static void free_wanted(PortConfig *v, size_t n) {
        for (size_t i = 0; i < n; i++)
                port_config_done(&v[i]);
        free(v);
}

static int add_port(Manager *m, const PortConfig *pc) {
        _cleanup_(port_freep) Port *p = NULL;
        Port **a;
        int r;

        r = port_new(m, pc, &p);
        if (r < 0)
                return log_error_errno(r, "%s: cannot create port: %m", pc->name);
        /* The lowest slot no other port holds: stable for the port's life (BPF map key). */
        for (p->slot = 0;; p->slot++) {
                bool used = false;
                for (size_t i = 0; i < m->n_ports && !used; i++)
                        used = m->ports[i]->slot == p->slot;
                if (!used)
                        break;
        }
        r = port_start(p);
        if (r < 0)
                return r;
        a = realloc(m->ports, sizeof(Port *) * (m->n_ports + 1));
        if (!a)
                return log_error_errno(ENOMEM, "Out of memory");
        m->ports = a;
        m->ports[m->n_ports++] = p;
        link_map_sync(m, TAKE_PTR(p));
        return 0;
}

static void remove_port(Manager *m, size_t i) {
        if (m->link_map)
                (void) link_map_clear(m->link_map, m->ports[i]->slot);
        fdstore_port_free(m->ports[i], true);
        port_free(m->ports[i]);
        memmove(&m->ports[i], &m->ports[i + 1], sizeof(Port *) * (m->n_ports - i - 1));
        m->n_ports--;
}

static int load_config(Manager *m, Config **ret, char *err, size_t errlen) {
        int r = config_load(m->config_path, ret, err, errlen);
        if (r < 0)
                log_error("%s", err);
        return r;
}

static void apply_globals(Manager *m) {
        m->reply_timeout_ms = m->config->reply_timeout_ms;
        m->replay_handoff_ms = m->config->replay_handoff_ms;
}

static void replay_unlink(Manager *m, Port *p) {
        if (!p->replay_queued)
                return;
        if (p->replay_prev)
                p->replay_prev->replay_next = p->replay_next;
        else
                m->replay_head = p->replay_next;
        if (p->replay_next)
                p->replay_next->replay_prev = p->replay_prev;
        else
                m->replay_tail = p->replay_prev;
        p->replay_prev = p->replay_next = NULL;
        p->replay_queued = false;
}

void manager_replay_begin(Manager *m, Port *p) {
        if (m->replay_handoff_ms == 0 || p->replay_queued || p->replay_boosted)
                return;
        p->replay_prev = m->replay_tail;
        p->replay_next = NULL;
        if (m->replay_tail)
                m->replay_tail->replay_next = p;
        else
                m->replay_head = p;
        m->replay_tail = p;
        p->replay_queued = true;
}

void manager_replay_end(Manager *m, Port *p) {
        replay_unlink(m, p);
        if (p->replay_boosted && p->backend)
                (void) io_watch_set_boost(p->backend->io, false);
        p->replay_boosted = false;
}

/* After every batch of the ports' sockets: O(1) unless a replay is past its threshold. */
static void on_handoff_check(void *userdata) {
        Manager *m = userdata;

        if (!m->replay_head)
                return;
        uint64_t now = now_usec(), limit = (uint64_t) m->replay_handoff_ms * 1000;
        while (m->replay_head && m->replay_head->backend &&
               now - m->replay_head->backend->connected_usec > limit) {
                Port *p = m->replay_head;
                replay_unlink(m, p);
                p->replay_boosted = true;
                p->stats.handoffs++;
                (void) io_watch_set_boost(p->backend->io, true);
        }
}

int manager_load(Manager *m) {
        PortConfig *wanted;
        size_t n;
        int r;

        char err[1024];
        r = config_load(m->config_path, &m->config, err, sizeof(err));
        if (r == -ENOENT && m->n_port_filter > 0) {
                /* vhost-recon@NAME with no config file at all: default paths for NAME. */
                log_notice("%s does not exist; serving %s with default paths", m->config_path, m->port_filter[0]);
                r = config_parse_string("", m->config_path, &m->config, err, sizeof(err));
        }
        if (r < 0) {
                log_error("%s", err);
                return r;
        }
        apply_globals(m);
        if (m->config->bpf_link_map)
                m->link_map = link_map_open(m->config->bpf_link_map);
        r = wanted_ports(m, m->config, &wanted, &n);
        if (r < 0)
                return log_error_errno(r, "Cannot set up ports: %m");
        /* A port that cannot start (its error is logged) does not keep the others down; the
         * daemon fails only when every port did. */
        size_t failed = 0;
        for (size_t i = 0; i < n; i++)
                if ((r = add_port(m, &wanted[i])) < 0)
                        failed++;
        free_wanted(wanted, n);
        if (failed > 0 && failed == n)
                return r;
        if (failed > 0)
                log_warning("%zu of %zu ports could not start (see above); serving the others", failed, n);
        r = control_server_new(m, m->control_path ? m->control_path : m->config->control, m->config->control_mode,
                               m->config->control_group, m->config->admin_group, &m->control);
        if (r < 0)
                return r;
        if (fdstore_enabled(m->fdstore))
                control_server_store(m->control);       /* a crash keeps the control socket too */
        r = fdstore_adopt(m);
        metrics_note_adoptions(m, r);
        if (r > 0)
                log_info("%d port%s restored from systemd's fd store", r, r == 1 ? "" : "s");
        if (!m->metrics && (r = metrics_server_new(m, &m->metrics)) < 0)
                return r;
        passed_fds_close_rest(m);
        if (m->n_ports == 0)
                log_warning("%s lists no ports; waiting for a reload", m->config_path);
        return 0;
}

int manager_reload(Manager *m, char *err, size_t errlen) {
        Config *c = NULL;
        PortConfig *wanted;
        size_t n;
        int r;

        (void) sd_notify(0, "RELOADING=1");
        log_info("Reloading %s", m->config_path);
        r = load_config(m, &c, err, errlen);
        if (r < 0) {
                log_error("Reload failed; keeping the running configuration");
                (void) sd_notify(0, "READY=1");
                return r;
        }
        r = wanted_ports(m, c, &wanted, &n);
        if (r < 0) {
                config_free(c);
                (void) sd_notify(0, "READY=1");
                snprintf(err, errlen, "cannot set up ports: %s", strerror(-r));
                return log_error_errno(r, "Reload failed: %m");
        }

        /* Removed or changed ports go first, so that a changed port can take its paths again. */
        for (size_t i = m->n_ports; i-- > 0;) {
                const PortConfig *pc = NULL;
                for (size_t j = 0; j < n && !pc; j++)
                        if (strcmp(wanted[j].name, m->ports[i]->config.name) == 0)
                                pc = &wanted[j];
                if (pc && port_config_equal(pc, &m->ports[i]->config))
                        continue;
                log_info("%s: %s", m->ports[i]->config.name, pc ? "changed, restarting it" : "removed");
                remove_port(m, i);
        }
        for (size_t j = 0; j < n; j++)
                if (!manager_find_port(m, wanted[j].name)) {
                        log_info("%s: added", wanted[j].name);
                        (void) add_port(m, &wanted[j]);
                }
        free_wanted(wanted, n);
        if (strcmp(c->control, m->config->control) != 0 || c->control_mode != m->config->control_mode)
                log_warning("Control socket settings change at the next start, not on reload");
        config_free(m->config);
        m->config = c;
        apply_globals(m);
        log_info("Reloaded: %zu ports", m->n_ports);
        (void) sd_notify(0, "READY=1");
        manager_update_status(m);
        return 0;
}

int manager_run(Manager *m) {
        (void) sd_notify(0, "READY=1");
        manager_update_status(m);
        log_info("vhost-recond running: %zu port%s", m->n_ports, m->n_ports == 1 ? "" : "s");
        return sd_event_loop(m->event);
}
