/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend-channel.h"
#include "backend.h"
#include "frontend.h"
#include "log.h"
#include "manager.h"
#include "replay.h"

static int reply_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Port *p = userdata;
        const char *what = p->pending_head ? vu_request_to_string(p->pending_head->request) : "?";

        port_set_error(p, "back-end did not answer %s within %u ms", what, p->manager->reply_timeout_ms);
        log_warning("%s: %s; dropping it", p->config.name, p->last_error);
        port_connection_lost(p, PORT_BACKEND, 0, "reply timeout");
        return 0;
}

/* The timer runs only while an answer is awaited: an idle port has no timer at all. */
static void timer_update(Port *p) {
        uint64_t usec = (uint64_t) p->manager->reply_timeout_ms * 1000;
        int r;

        if (!p->pending_head) {
                if (p->reply_timer)
                        (void) sd_event_source_set_enabled(p->reply_timer, SD_EVENT_OFF);
                return;
        }
        if (!p->reply_timer) {
                r = sd_event_add_time_relative(p->manager->event, &p->reply_timer, CLOCK_MONOTONIC, usec, 0,
                                               reply_timeout, p);
                if (r < 0)
                        log_warning_errno(r, "%s: cannot arm reply timer: %m", p->config.name);
                return;
        }
        (void) sd_event_source_set_time_relative(p->reply_timer, usec);
        (void) sd_event_source_set_enabled(p->reply_timer, SD_EVENT_ONESHOT);
}

int backend_send(Port *p, const VuMsg *m, PendingOrigin origin, FrontendItem *item) {
        bool has_reply = vu_request_has_reply(m->hdr.request);
        int r;

        if (!p->backend)
                return -ENOTCONN;
        r = connection_send(p->backend, m);
        if (r < 0)
                return r;
        if (!has_reply && !vu_msg_needs_reply(m))
                return 0;

        Pending *pd = calloc(1, sizeof(Pending));
        if (!pd) {
                p->backend->failed = -ENOMEM;
                return -ENOMEM;
        }
        *pd = (Pending) { .request = m->hdr.request, .ack = !has_reply, .origin = origin, .item = item };
        if (p->pending_tail)
                p->pending_tail->next = pd;
        else
                p->pending_head = pd;
        p->pending_tail = pd;
        if (pd == p->pending_head)
                timer_update(p);
        return 0;
}

int backend_stop(Port *p, const char *reason) {
        unsigned n = 0;

        if (p->backend_state != BACKEND_READY)
                return 0;
        for (unsigned i = 0; i < p->shadow.n_vrings; i++) {
                VuMsg m;
                if (!p->shadow.vrings[i].started)
                        continue;
                vu_msg_init_state(&m, VU_GET_VRING_BASE, i, 0);
                if (backend_send(p, &m, PENDING_STOP, NULL) < 0)
                        return 0;
                n++;
        }
        if (n == 0)
                return 0;
        p->stop_outstanding = n;
        p->backend_state = BACKEND_STOPPING;
        snprintf(p->close_reason, sizeof(p->close_reason), "%s", reason);
        port_update_link(p);
        log_info("%s: stopping the back-end's %u rings before closing it (%s)", p->config.name, n, reason);
        return 1;
}

static int stop_reply(Port *p, const VuMsg *m) {
        ShadowVring *v = m->payload.state.index < p->shadow.n_vrings ? &p->shadow.vrings[m->payload.state.index] : NULL;

        /* The ring stays started for the front-end; the next back-end resumes it here. */
        if (v) {
                v->resume_valid = true;
                v->resume = m->payload.state.num;
        }
        if (--p->stop_outstanding > 0)
                return 0;
        return -ECANCELED;      /* closed by connection_io with p->close_reason */
}

int backend_send_setup(Port *p, const VuMsg *m, PendingOrigin origin, FrontendItem *item) {
        if (m->hdr.request != VU_SET_BACKEND_REQ_FD)
                return backend_send(p, m, origin, item);

        int end = -1, r;
        p->backend_channel = backend_channel_free(p->backend_channel);
        r = backend_channel_new(p, &end, &p->backend_channel);
        if (r < 0)
                return log_warning_errno(r, "%s: cannot set up the back-end's channel: %m", p->config.name);
        VuMsg copy = *m;
        copy.fds[0] = end;
        copy.n_fds = 1;
        r = backend_send(p, &copy, origin, item);
        safe_close(end);
        return r;
}

int port_backend_message(Port *p, VuMsg *m) {
        Pending *pd = p->pending_head;
        const char *reason = NULL;
        int r = 0;

        if (!pd) {
                port_set_error(p, "back-end sent %s (%u) unasked", vu_request_to_string(m->hdr.request),
                               m->hdr.request);
                log_warning("%s: %s; dropping it", p->config.name, p->last_error);
                return -EPROTO;
        }
        if (vu_msg_check_reply(m, pd->request, pd->ack, &reason) < 0) {
                port_set_error(p, "bad answer from back-end to %s: %s", vu_request_to_string(pd->request), reason);
                log_warning("%s: %s; dropping it", p->config.name, p->last_error);
                return -EBADMSG;
        }

        p->pending_head = pd->next;
        if (!p->pending_head)
                p->pending_tail = NULL;
        timer_update(p);

        if (pd->origin == PENDING_FRONTEND) {
                if (pd->item)
                        frontend_relay_reply(p, pd->item, m);
        } else if (pd->origin == PENDING_STOP)
                r = stop_reply(p, m);
        else if (pd->origin == PENDING_INTERNAL) {
                if (pd->ack && m->payload.u64 != 0)
                        log_warning("%s: back-end refused %s", p->config.name, vu_request_to_string(pd->request));
        }
        else
                r = replay_reply(p, pd, m);
        free(pd);
        return r;
}

void backend_forget_frontend(Port *p) {
        for (Pending *pd = p->pending_head; pd; pd = pd->next)
                if (pd->item) {
                        frontend_item_free(pd->item);
                        pd->item = NULL;
                }
}

void backend_clear_pending(Port *p) {
        backend_forget_frontend(p);
        while (p->pending_head) {
                Pending *pd = p->pending_head;
                p->pending_head = pd->next;
                free(pd);
        }
        p->pending_tail = NULL;
        p->replay_outstanding = 0;
        timer_update(p);
}

void backend_lost(Port *p, const char *reason) {
        FrontendItem *first = NULL, *last = NULL;
        BackendState was = p->backend_state;
        uint64_t backend_connected_usec = p->backend ? p->backend->connected_usec : 0;
        json_object *details;

        manager_replay_end(p->manager, p);
        /* Front-end requests the back-end owed an answer to, in their order. */
        for (Pending *pd = p->pending_head; pd; pd = pd->next) {
                if (!pd->item)
                        continue;
                pd->item->next = NULL;
                if (last)
                        last->next = pd->item;
                else
                        first = pd->item;
                last = pd->item;
                pd->item = NULL;
        }
        backend_clear_pending(p);

        p->backend = connection_free(p->backend);
        p->backend_channel = backend_channel_free(p->backend_channel);
        p->backend_state = BACKEND_ABSENT;
        /* A back-end lost mid-migration may have written guest memory it had not marked
         * yet. dirty_log_mark_all() would cover that, but is not called: QEMU under TCG
         * takes a marked page as free of translated code, and guests hung after it (see
         * README, "Live migration"). */
        if (p->shadow.log.fd >= 0 && was != BACKEND_PROBING)
                log_info("%s: back-end lost while the front-end logs (live migration)", p->config.name);
        p->backend_owner_sent = false;
        p->stop_outstanding = 0;
        if (was == BACKEND_PROBING || was == BACKEND_REPLAYING) {
                p->stats.replays_failed++;
                if (p->last_error_usec < backend_connected_usec)    /* nothing more precise */
                        port_set_error(p, "back-end lost during the replay: %s", reason);
                log_warning("%s: back-end disconnected during the %s (%s)", p->config.name,
                            was == BACKEND_PROBING ? "probe" : "replay", reason);
                details = json_object_new_object();
                json_object_object_add(details, "reason", json_object_new_string(p->last_error));
                manager_port_event(p->manager, p, EVENT_REPLAY_FAILED, details);
        } else
                log_info("%s: back-end disconnected (%s)", p->config.name, reason);
        details = json_object_new_object();
        json_object_object_add(details, "reason", json_object_new_string(reason));
        manager_port_event(p->manager, p, EVENT_BACKEND_DISCONNECTED, details);
        port_update_link(p);

        if (first)
                frontend_requeue(p, first, last);
        frontend_pump(p);
}
