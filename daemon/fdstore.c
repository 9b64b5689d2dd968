/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "backend.h"
#include "control.h"
#include "fdstore.h"
#include "log.h"
#include "manager.h"
#include "port.h"
#include "shadow-json.h"

static int store(const char *name, int fd) {
        char msg[300];
        snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s", name);
        int r = sd_pid_notify_with_fds(0, 0, msg, &fd, 1);
        if (r <= 0)
                log_warning_errno(r < 0 ? r : ENOTCONN, "Cannot put %s into the fd store: %m", name);
        return r;
}

static int store_port(Port *p) {
        char name[64];
        json_object *state, *shadow;
        int fds[SHADOW_MAX_SAVED_FDS];
        size_t n_fds = 0;
        bool keep_backend;

        for (int s = 0; s < _PORT_SIDE_MAX; s++)
                if (p->listen_fd[s] >= 0 && !p->listen_from_unit[s]) {
                        snprintf(name, sizeof(name), "vr.%u.listen%d", p->slot, s);
                        (void) store(name, p->listen_fd[s]);
                }
        if (!p->frontend)
                return 0;
        if (p->frontend->reader.have || p->fe_head || vu_writer_pending(&p->frontend->writer)) {
                log_warning("%s: the front-end still had a request in flight; it is not kept", p->config.name);
                return 0;
        }
        /* A back-end in the middle of something is left to reconnect and get a replay. */
        keep_backend = p->backend && p->backend_state == BACKEND_READY && !p->pending_head &&
                       p->backend->reader.have == 0 && !vu_writer_pending(&p->backend->writer);

        shadow_to_json(&p->shadow, &shadow, fds, &n_fds);
        state = json_object_new_object();
        json_object_object_add(state, "name", json_object_new_string(p->config.name));
        json_object_object_add(state, "shadow", shadow);
        json_object_object_add(state, "fds", json_object_new_int((int) n_fds));
        json_object_object_add(state, "backend", json_object_new_boolean(keep_backend));
        json_object_object_add(state, "backend_protocol_features", json_object_new_uint64(p->backend_protocol_features));
        json_object_object_add(state, "link_up", json_object_new_boolean(p->link_up));
        json_object_object_add(state, "link_generation", json_object_new_uint64(p->link_generation));
        json_object_object_add(state, "link_changed_realtime_usec", json_object_new_uint64(p->link_changed_realtime_usec));
        json_object_object_add(state, "link_down_usec", json_object_new_uint64(p->link_down_usec));
        json_object_object_add(state, "last_error", json_object_new_string(p->last_error));
        json_object_object_add(state, "stats", port_stats_to_json(&p->stats));

        size_t len;
        const char *text = json_object_to_json_string_length(state, JSON_C_TO_STRING_PLAIN, &len);
        int memfd = memfd_create("vhost-recon-state", MFD_CLOEXEC);
        if (memfd < 0 || write(memfd, text, len) != (ssize_t) len) {
                log_warning_errno(errno, "%s: cannot write its state for the fd store: %m", p->config.name);
                safe_close(memfd);
                json_object_put(state);
                return 0;
        }
        json_object_put(state);

        /* The fds first, the state last: a state in the store means everything is there. */
        int r = 1;
        for (size_t i = 0; i < n_fds && r > 0; i++) {
                snprintf(name, sizeof(name), "vr.%u.fd.%zu", p->slot, i);
                r = store(name, fds[i]);
        }
        if (r > 0) {
                snprintf(name, sizeof(name), "vr.%u.fe", p->slot);
                r = store(name, p->frontend->fd);
        }
        if (r > 0 && keep_backend) {
                snprintf(name, sizeof(name), "vr.%u.be", p->slot);
                r = store(name, p->backend->fd);
        }
        if (r > 0) {
                snprintf(name, sizeof(name), "vr.%u.state", p->slot);
                r = store(name, memfd);
        }
        safe_close(memfd);
        if (r <= 0)
                return 0;
        log_info("%s: front-end%s kept in the fd store (%zu fds)", p->config.name,
                 keep_backend ? " and back-end" : "", n_fds);
        return 1;
}

int fdstore_save(Manager *m) {
        int kept = 0;

        if (!getenv("NOTIFY_SOCKET"))
                return 0;
        m->keep_sockets = true;
        for (size_t i = 0; i < m->n_ports; i++)
                kept += store_port(m->ports[i]);
        control_server_store(m->control);
        return kept;
}

static char *read_all(int fd) {
        struct stat st;
        if (fstat(fd, &st) < 0 || st.st_size > (16 << 20))
                return NULL;
        char *buf = malloc(st.st_size + 1);
        if (!buf)
                return NULL;
        ssize_t n = pread(fd, buf, st.st_size, 0);
        if (n != st.st_size) {
                free(buf);
                return NULL;
        }
        buf[n] = 0;
        return buf;
}

static uint64_t get_u64(json_object *o, const char *key) {
        json_object *v;
        return json_object_object_get_ex(o, key, &v) ? json_object_get_uint64(v) : 0;
}

static int restore_port(Manager *m, unsigned slot, json_object *state) {
        char name[64];
        json_object *v;
        const char *reason = NULL;
        int fds[SHADOW_MAX_SAVED_FDS], fe, be, n_fds, r;

        if (!json_object_object_get_ex(state, "name", &v))
                return log_warning_errno(EBADMSG, "fd store: a state without a port name; ignored");
        const char *port_name = json_object_get_string(v);
        Port *p = manager_find_port(m, port_name);
        snprintf(name, sizeof(name), "vr.%u.fe", slot);
        fe = manager_take_passed(m, name);
        snprintf(name, sizeof(name), "vr.%u.be", slot);
        be = manager_take_passed(m, name);
        n_fds = json_object_object_get_ex(state, "fds", &v) ? json_object_get_int(v) : 0;
        if (n_fds < 0 || n_fds > (int) SHADOW_MAX_SAVED_FDS)
                n_fds = 0;
        for (int i = 0; i < n_fds; i++) {
                snprintf(name, sizeof(name), "vr.%u.fd.%d", slot, i);
                fds[i] = manager_take_passed(m, name);
        }

        if (!p || p->frontend || fe < 0) {
                log_warning("%s: in the fd store but %s; closing what was kept", port_name,
                            !p ? "no longer configured" : p->frontend ? "already has a front-end" : "without a front-end");
                r = -ESRCH;
                goto out;
        }
        r = shadow_from_json(&p->shadow, json_object_object_get(state, "shadow"), fds, n_fds, &reason);
        if (r < 0) {
                log_warning("%s: the kept state is damaged (%s); closing the kept connections", port_name, reason);
                goto out;
        }
        r = connection_new(p, PORT_FRONTEND, TAKE_FD(fe), &p->frontend);
        if (r < 0)
                goto out;
        if (be >= 0 && json_object_object_get_ex(state, "backend", &v) && json_object_get_boolean(v)) {
                r = connection_new(p, PORT_BACKEND, TAKE_FD(be), &p->backend);
                if (r >= 0) {
                        p->backend_state = BACKEND_READY;
                        p->backend_owner_sent = true;
                        p->backend_protocol_features = get_u64(state, "backend_protocol_features");
                        /* Its channel's other end went with the old process: a new one. */
                        if (p->shadow.backend_req_fd >= 0 &&
                            (p->backend_protocol_features & VU_BIT(VU_PF_BACKEND_REQ))) {
                                VuMsg set;
                                vu_msg_init(&set, VU_SET_BACKEND_REQ_FD,
                                            p->backend_protocol_features & VU_BIT(VU_PF_REPLY_ACK) ? VU_FLAG_NEED_REPLY : 0);
                                set.fds[0] = p->shadow.backend_req_fd;
                                set.n_fds = 1;
                                (void) backend_send_setup(p, &set, PENDING_INTERNAL, NULL);
                        }
                }
        }
        port_stats_from_json(&p->stats, json_object_object_get(state, "stats"));
        p->link_up = json_object_object_get_ex(state, "link_up", &v) && json_object_get_boolean(v);
        p->link_generation = get_u64(state, "link_generation");
        p->link_changed_realtime_usec = get_u64(state, "link_changed_realtime_usec");
        p->link_down_usec = get_u64(state, "link_down_usec");
        if (json_object_object_get_ex(state, "last_error", &v))
                snprintf(p->last_error, sizeof(p->last_error), "%s", json_object_get_string(v));
        log_info("%s: restored from the fd store: front-end pid %d, back-end %s, %u vrings", port_name,
                 (int) p->frontend->peer.pid, p->backend ? "kept" : "to reconnect", p->shadow.n_vrings);
        port_update_link(p);
        r = 1;
out:
        safe_close(fe);
        safe_close(be);
        for (int i = 0; i < n_fds; i++)
                safe_close(fds[i]);
        return r;
}

int fdstore_restore(Manager *m) {
        int restored = 0;

        for (size_t i = 0; i < m->n_passed; i++) {
                unsigned slot;
                char tail[16];
                if (m->passed_fds[i] < 0 || !m->passed_names[i] ||
                    sscanf(m->passed_names[i], "vr.%u.%15s", &slot, tail) != 2 || strcmp(tail, "state") != 0)
                        continue;
                int fd = m->passed_fds[i];
                m->passed_fds[i] = -1;
                char *text = read_all(fd);
                safe_close(fd);
                json_object *state = text ? json_tokener_parse(text) : NULL;
                free(text);
                if (!state) {
                        log_warning("fd store: unreadable state for slot %u; ignored", slot);
                        continue;
                }
                if (restore_port(m, slot, state) > 0)
                        restored++;
                json_object_put(state);
        }

        /* Everything of ours is taken (or dropped): empty the store. */
        for (size_t i = 0; i < m->n_passed; i++) {
                char msg[300];
                if (!m->passed_names[i] || strncmp(m->passed_names[i], "vr.", 3) != 0)
                        continue;
                snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s", m->passed_names[i]);
                (void) sd_notify(0, msg);
        }
        return restored;
}
