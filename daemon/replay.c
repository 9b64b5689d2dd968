/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>

#include "backend.h"
#include "fd-util.h"
#include "fdstore.h"
#include "frontend.h"
#include "log.h"
#include "manager.h"
#include "replay.h"

static int send_probe(Port *p, VuRequest request) {
        VuMsg m;

        vu_msg_init(&m, request, 0);
        return backend_send(p, &m, PENDING_PROBE, NULL);
}

void replay_start(Port *p) {
        VuMsg m;

        p->backend_state = BACKEND_PROBING;
        manager_replay_begin(p->manager, p);
        connection_cork(p->backend);
        /* SET_OWNER first, then the features; the answers drive the rest. */
        vu_msg_init(&m, VU_SET_OWNER, 0);
        if (backend_send(p, &m, PENDING_PROBE, NULL) >= 0)
                p->backend_owner_sent = true;
        (void) send_probe(p, VU_GET_FEATURES);
        /* A front-end that negotiated protocol features needs a back-end that has them (or
         * the replay is refused anyway): ask for them at once, one round trip less. */
        p->probe_pf_sent = p->shadow.features_set && (p->shadow.features & VU_BIT(VU_F_PROTOCOL_FEATURES)) &&
                send_probe(p, VU_GET_PROTOCOL_FEATURES) >= 0;
        connection_uncork(p->backend);
}

/* Kick every started ring and signal every call fd once, so that nothing queued during the
 * outage waits for the next notification. */
static unsigned kick_rings(Port *p) {
        unsigned kicked = 0;

        for (unsigned i = 0; i < p->shadow.n_vrings; i++) {
                const ShadowVring *v = &p->shadow.vrings[i];
                if (!v->started)
                        continue;
                if (v->kick_fd >= 0 && eventfd_signal_nonblock(v->kick_fd) >= 0)
                        kicked++;
                if (v->call_fd >= 0)
                        (void) eventfd_signal_nonblock(v->call_fd);
        }
        return kicked;
}

static void replay_done(Port *p) {
        uint64_t took = now_usec() - p->backend->connected_usec;
        unsigned kicked;

        manager_replay_end(p->manager, p);
        shadow_replayed(&p->shadow);
        fdstore_port_changed(p);
        kicked = kick_rings(p);
        p->backend_state = BACKEND_READY;

        if (p->frontend && (p->shadow.features_set || p->shadow.memory_set)) {
                p->stats.replays_ok++;
                p->stats.last_replay_usec = took;
                log_info("%s: replay done in %llu µs (%u messages, %u rings kicked)", p->config.name,
                         (unsigned long long) took, p->replay_messages, kicked);
                if (shadow_iommu(&p->shadow))
                        log_info("%s: vIOMMU: %u IOTLB entries in the shadow replayed; the rest is asked for "
                                 "through misses", p->config.name, p->shadow.iotlb.n);
                json_object *details = json_object_new_object();
                json_object_object_add(details, "replay_usec", json_object_new_uint64(took));
                json_object_object_add(details, "messages", json_object_new_int(p->replay_messages));
                json_object_object_add(details, "rings_kicked", json_object_new_int(kicked));
                manager_port_event(p->manager, p, EVENT_REPLAY_DONE, details);
        } else
                log_info("%s: back-end ready in %llu µs (no device to replay yet)", p->config.name,
                         (unsigned long long) took);
        port_update_link(p);
        frontend_pump(p);
}

static int incompatible(Port *p, uint64_t missing, uint64_t missing_pf) {
        char f[512], pf[256];

        p->stats.incompatible++;
        if (missing)
                port_set_error(p, "incompatible back-end: lacks features 0x%llx (%s)", (unsigned long long) missing,
                               vu_features_to_string(missing, false, f, sizeof(f)));
        else
                port_set_error(p, "incompatible back-end: lacks protocol features 0x%llx (%s)",
                               (unsigned long long) missing_pf, vu_features_to_string(missing_pf, true, pf, sizeof(pf)));
        log_error("%s: %s; closing it, the front-end stays", p->config.name, p->last_error);
        json_object *details = json_object_new_object();
        json_object_object_add(details, "reason", json_object_new_string(p->last_error));
        json_object_object_add(details, "missing_features", json_object_new_uint64(missing));
        json_object_object_add(details, "missing_protocol_features", json_object_new_uint64(missing_pf));
        manager_port_event(p->manager, p, EVENT_INCOMPATIBLE, details);
        return -EPROTO;
}

static int replay_run(Port *p) {
        const BackendCache *be = &p->shadow.backend;
        uint64_t missing, missing_pf;
        VuMsgList l = {};
        const char *reason = NULL;
        int r;

        log_debug("%s: back-end offers features 0x%llx, protocol features 0x%llx", p->config.name,
                  (unsigned long long) be->features, (unsigned long long) be->protocol_features);
        shadow_missing(&p->shadow, be->features, be->protocol_features_known ? be->protocol_features : 0,
                       &missing, &missing_pf);
        if (missing || missing_pf)
                return incompatible(p, missing, missing_pf);

        p->backend_protocol_features = shadow_backend_protocol_features(&p->shadow, be->protocol_features);
        r = shadow_build_replay(&p->shadow, p->backend_protocol_features, &l, &reason);
        if (r < 0) {
                port_set_error(p, "cannot build the replay: %s", reason ? reason : "error");
                log_error("%s: %s", p->config.name, p->last_error);
                return r;
        }

        bool packed = p->shadow.features_set && (p->shadow.features & VU_BIT(VIRTIO_F_RING_PACKED));
        for (unsigned i = 0; i < p->shadow.n_vrings && (packed || log_max_level >= LOG_DEBUG); i++) {
                const ShadowVring *v = &p->shadow.vrings[i];
                uint16_t avail = 0, used = 0;
                uint32_t base;
                if (!v->addr_set)
                        continue;
                /* Only a packed ring's index can be a guess; split rings are read once, by the build. */
                if (packed) {
                        if (shadow_resume_index(&p->shadow, i, &base, NULL) == 1)
                                log_warning("%s: vring %u (packed): the resume index cannot be recovered for sure "
                                            "from the descriptor ring (chained or batched descriptors); resuming at "
                                            "%u, wrap %u: buffers in flight may be processed twice", p->config.name,
                                            i, base & 0x7fff, base >> 15);
                        continue;
                }
                if (shadow_read_ring_indexes(&p->shadow, i, &avail, &used) < 0)
                        log_debug("%s: vring %u: %s, indexes not readable (an IOVA the IOTLB does not map?)",
                                  p->config.name, i, v->started ? "started" : "stopped");
                else
                        log_debug("%s: vring %u: %s, avail idx %u, used idx %u", p->config.name, i,
                                  v->started ? "started" : "stopped", avail, used);
        }

        if (p->shadow.log.fd >= 0)
                log_info("%s: the front-end is logging (live migration): the dirty log and LOG_ALL go to the "
                         "back-end before its rings", p->config.name);
        p->backend_state = BACKEND_REPLAYING;
        p->replay_seq = p->fe_seq;
        p->replay_messages = l.n;
        p->replay_outstanding = 0;
        /* in as few sendmsg calls as the fds allow: the back-end wakes up once or twice, not
         * once a message */
        connection_cork(p->backend);
        for (size_t i = 0; i < l.n && r >= 0; i++) {
                const VuMsg *m = &l.msgs[i];
                r = backend_send_setup(p, m, PENDING_REPLAY, NULL);
                if (r >= 0 && (vu_request_has_reply(m->hdr.request) || vu_msg_needs_reply(m)))
                        p->replay_outstanding++;
        }
        connection_uncork(p->backend);
        vu_msg_list_clear(&l);
        if (r < 0)
                return 0;       /* the back-end is closed from its own dispatch */
        if (p->replay_outstanding == 0)
                replay_done(p);
        return 0;
}

int replay_reply(Port *p, const Pending *pd, const VuMsg *m) {
        if (pd->origin == PENDING_PROBE) {
                shadow_record_backend(&p->shadow, pd->request, m->payload.u64);
                if (pd->request == VU_GET_FEATURES) {
                        if (m->payload.u64 & VU_BIT(VU_F_PROTOCOL_FEATURES)) {
                                if (!p->probe_pf_sent)
                                        (void) send_probe(p, VU_GET_PROTOCOL_FEATURES);
                                return 0;       /* its answer runs the replay */
                        }
                        /* without them: incompatible if the front-end has them, which
                         * replay_run says (an answer to an early probe is not awaited) */
                        shadow_record_backend(&p->shadow, VU_GET_PROTOCOL_FEATURES, 0);
                }
                return replay_run(p);
        }

        /* PENDING_REPLAY */
        if (pd->ack && m->payload.u64 != 0) {
                port_set_error(p, "back-end refused %s in the replay (status %llu)",
                               vu_request_to_string(pd->request), (unsigned long long) m->payload.u64);
                log_error("%s: %s; dropping it", p->config.name, p->last_error);
                return -EPROTO;
        }
        if (pd->request == VU_GET_QUEUE_NUM) {
                shadow_record_backend(&p->shadow, VU_GET_QUEUE_NUM, m->payload.u64);
                unsigned needed = (shadow_vrings_in_use(&p->shadow) + 1) / 2;
                if (m->payload.u64 < needed) {
                        p->stats.incompatible++;
                        port_set_error(p, "incompatible back-end: %llu queue pairs, the front-end uses %u",
                                       (unsigned long long) m->payload.u64, needed);
                        log_error("%s: %s; closing it, the front-end stays", p->config.name, p->last_error);
                        json_object *details = json_object_new_object();
                        json_object_object_add(details, "reason", json_object_new_string(p->last_error));
                        manager_port_event(p->manager, p, EVENT_INCOMPATIBLE, details);
                        return -EPROTO;
                }
        }
        if (--p->replay_outstanding == 0)
                replay_done(p);
        return 0;
}
