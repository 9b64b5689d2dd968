/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "backend.h"
#include "fdstore.h"
#include "frontend.h"
#include "log.h"
#include "manager.h"

void frontend_item_free(FrontendItem *it) {
        if (!it)
                return;
        vu_msg_close_fds(&it->msg);
        free(it);
}

static void reply_to_frontend(Port *p, const VuMsg *reply) {
        VuMsg m = *reply;

        if (!p->frontend)
                return;
        if (p->replies_to_skip > 0) {
                /* a request from the journal that the old process had answered */
                p->replies_to_skip--;
                p->fe_replies++;
                return;
        }
        m.hdr.flags = VU_VERSION | VU_FLAG_REPLY;
        /* Only this send is in doubt, not the whole dispatch: once it is out whole, the
         * counter in the state file says so. */
        fdstore_reply_begin(p);
        if (connection_send(p->frontend, &m) >= 0)
                fdstore_reply_sent(p);
}

void frontend_relay_reply(Port *p, FrontendItem *it, const VuMsg *reply) {
        VuMsg log_reply;

        shadow_record_reply(&p->shadow, &it->msg, reply);
        if (it->msg.hdr.request == VU_SET_LOG_BASE) {
                /* back-ends answer it in two shapes; the front-end gets one */
                dirty_log_base_reply(&log_reply);
                reply = &log_reply;
        }
        reply_to_frontend(p, reply);
        frontend_item_free(it);
}

void frontend_enqueue(Port *p, FrontendItem *it, bool needs_reply) {
        uint32_t request = it->msg.hdr.request;

        it->seq = ++p->fe_seq;
        it->needs_reply = needs_reply;
        it->local = request == VU_SET_OWNER || request == VU_GET_FEATURES || request == VU_GET_PROTOCOL_FEATURES;
        if (p->fe_tail)
                p->fe_tail->next = it;
        else
                p->fe_head = it;
        p->fe_tail = it;
        p->fe_queued++;
}

void frontend_requeue(Port *p, FrontendItem *first, FrontendItem *last) {
        for (FrontendItem *i = first; i; i = i == last ? NULL : i->next)
                p->fe_queued++;
        last->next = p->fe_head;
        p->fe_head = first;
        if (!p->fe_tail)
                p->fe_tail = last;
}

static FrontendItem *pop(Port *p) {
        FrontendItem *it = p->fe_head;
        p->fe_head = it->next;
        if (!p->fe_head)
                p->fe_tail = NULL;
        it->next = NULL;
        p->fe_queued--;
        return it;
}

/* Answers from the shadow: 1 done, 0 only a back-end can answer. */
static int answer_locally(Port *p, FrontendItem *it) {
        VuMsg reply;
        int r = shadow_answer(&p->shadow, &it->msg, &reply);
        if (r <= 0)
                return r;
        reply_to_frontend(p, &reply);
        vu_msg_close_fds(&reply);
        return 1;
}

static int forward(Port *p, FrontendItem *it) {
        int r;

        VuMsg *m = &it->msg;

        if (m->hdr.request == VU_SET_PROTOCOL_FEATURES) {
                p->backend_protocol_features =
                        shadow_backend_protocol_features(&p->shadow, p->shadow.backend.protocol_features);
                m->payload.u64 = p->backend_protocol_features;
        }
        if (!it->needs_reply)
                m->hdr.flags &= ~VU_FLAG_NEED_REPLY;

        r = backend_send_setup(p, m, PENDING_FRONTEND, it->needs_reply ? it : NULL);
        if (r < 0)
                return r;       /* the back-end is closed from its dispatch; the item stays */
        if (!it->needs_reply)
                frontend_item_free(it);
        /* else it waits in the pending list; backend_lost() hands it back if need be */
        return 0;
}

static void frontend_pump_queue(Port *p) {
        while (p->fe_head && p->frontend) {
                FrontendItem *it = p->fe_head;

                if (it->local) {
                        if (it->needs_reply && answer_locally(p, it) == 0)
                                return;         /* no back-end has told its features yet */
                        frontend_item_free(pop(p));
                        continue;
                }

                switch (p->backend_state) {
                case BACKEND_READY:
                        if (it->seq <= p->replay_seq && (!vu_request_has_reply(it->msg.hdr.request) ||
                                                         it->msg.hdr.request == VU_SET_LOG_BASE)) {
                                /* The replay carried it already. */
                                if (it->needs_reply)
                                        answer_locally(p, it);
                                frontend_item_free(pop(p));
                                continue;
                        }
                        it = pop(p);
                        if (forward(p, it) < 0) {
                                frontend_requeue(p, it, it);
                                return;
                        }
                        continue;

                case BACKEND_ABSENT:
                        if (!it->needs_reply || answer_locally(p, it) > 0) {
                                frontend_item_free(pop(p));
                                continue;
                        }
                        return;                 /* waits for a back-end */

                default:
                        return;                 /* probe or replay under way: keep the order */
                }
        }
}

void frontend_pump(Port *p) {
        frontend_pump_queue(p);
        port_throttle_frontend(p);
}

int port_frontend_message(Port *p, VuMsg *m) {
        const char *reason = NULL;
        int r;

        metrics_frontend_request(p, m->hdr.request);
        r = vu_msg_check_request(m, &reason);
        if (r < 0) {
                metrics_message_refused(p, REFUSED_MALFORMED);
                port_set_error(p, "front-end sent a bad %s (%u): %s", vu_request_to_string(m->hdr.request),
                               m->hdr.request, reason);
                log_warning("%s: %s; dropping the front-end", p->config.name, p->last_error);
                return r;
        }

        /* REPLY_ACK as negotiated before this request (SET_PROTOCOL_FEATURES turns it on). */
        bool needs_reply = vu_request_has_reply(m->hdr.request) ||
                (vu_msg_needs_reply(m) && p->shadow.protocol_features_set &&
                 (p->shadow.protocol_features & VU_BIT(VU_PF_REPLY_ACK)));

        r = shadow_apply(&p->shadow, m, &reason);
        if (r < 0) {
                metrics_message_refused(p, REFUSED_REJECTED);
                port_set_error(p, "front-end %s refused: %s", vu_request_to_string(m->hdr.request), reason);
                log_warning("%s: %s; dropping the front-end", p->config.name, p->last_error);
                return r;
        }
        if (r > 0 && (p->shadow.iotlb.not_kept & (p->shadow.iotlb.not_kept - 1)) == 0)
                /* said at the 1st, 2nd, 4th, ... time: a guest may map much */
                log_warning("%s: %s (%" PRIu64 " so far); passed on, a later back-end asks again",
                            p->config.name, reason, p->shadow.iotlb.not_kept);
        log_debug("%s: front-end %s", p->config.name, vu_request_to_string(m->hdr.request));

        FrontendItem *it = calloc(1, sizeof(FrontendItem));
        if (!it)
                return -ENOMEM;
        it->msg = *m;
        m->n_fds = 0;           /* the item owns them now */
        frontend_enqueue(p, it, needs_reply);

        frontend_pump(p);
        port_update_link(p);
        return 0;
}
