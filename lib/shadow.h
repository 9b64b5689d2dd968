/* SPDX-License-Identifier: MIT */
#pragma once

/* The device shadow: everything a front-end has set on a port, kept so it can be replayed
 * to any back-end that connects, plus what the last back-end said about itself (so that the
 * front-end can be answered while no back-end is there). Owns its fds and mappings. */

#include <stdbool.h>
#include <stdint.h>

#include "dirty-log.h"
#include "guest-memory.h"
#include "iotlb.h"
#include "vhost-user.h"

/* Protocol features the daemon can replay, and so offers to front-ends. */
#define SHADOW_REPLAYABLE_PROTOCOL_FEATURES                                          \
        (VU_BIT(VU_PF_MQ) | VU_BIT(VU_PF_RARP) | VU_BIT(VU_PF_REPLY_ACK) |           \
         VU_BIT(VU_PF_MTU) | VU_BIT(VU_PF_CONFIG) | VU_BIT(VU_PF_RESET_DEVICE) |     \
         VU_BIT(VU_PF_STATUS) | VU_BIT(VU_PF_INFLIGHT_SHMFD) |                        \
         VU_BIT(VU_PF_CONFIGURE_MEM_SLOTS) | VU_BIT(VU_PF_BACKEND_REQ) |              \
         VU_BIT(VU_PF_LOG_SHMFD))

/* Device features never offered to a front-end: none now. LOG_ALL (live migration) is
 * offered, see lib/dirty-log.h; ACCESS_PLATFORM (33), see lib/iotlb.h. */
#define SHADOW_MASKED_FEATURES UINT64_C(0)

typedef struct ShadowVring {
        bool num_set, base_set, addr_set, kick_set, call_set, err_set, enable_set;
        uint32_t num;
        uint32_t base;                  /* as the front-end set it */
        VuVringAddr addr;
        int kick_fd, call_fd, err_fd;   /* -1: none, or VU_VRING_NOFD was given */
        bool enabled;
        bool started;                   /* kicked (SET_VRING_KICK) since the last stop */
        bool resume_valid;              /* a back-end told us where it stopped */
        uint32_t resume;
} ShadowVring;

typedef struct BackendCache {
        bool features_known, protocol_features_known, queue_num_known, max_mem_slots_known;
        uint64_t features, protocol_features, queue_num, max_mem_slots;
        uint8_t config[VU_MAX_CONFIG_SIZE];
        uint8_t config_known[VU_MAX_CONFIG_SIZE / 8];   /* bitmap of cached bytes */
} BackendCache;

typedef struct Shadow {
        bool owner;
        bool features_set, protocol_features_set, status_set, mtu_set;
        uint64_t features, protocol_features, mtu;
        uint8_t status;
        GuestMemory memory;
        bool memory_set;
        bool memory_by_slots;           /* the front-end used ADD_MEM_REG: so does the replay */
        ShadowVring *vrings;            /* grown on demand; n_vrings = highest index used + 1 */
        unsigned n_vrings;
        int backend_req_fd;             /* SET_BACKEND_REQ_FD: the front-end's end of its channel */
        bool inflight_set;              /* SET_INFLIGHT_FD: handed to every back-end */
        VuInflight inflight;
        int inflight_fd;
        uint8_t config[VU_MAX_CONFIG_SIZE];             /* bytes the front-end wrote */
        uint8_t config_written[VU_MAX_CONFIG_SIZE / 8];
        DirtyLog log;                   /* live migration: SET_LOG_BASE, SET_LOG_FD */
        BackendCache backend;
        Iotlb iotlb;                    /* IOTLB_MSG updates in force (ACCESS_PLATFORM + vIOMMU) */
} Shadow;

typedef struct VuMsgList {
        VuMsg *msgs;
        size_t n, allocated;
} VuMsgList;

void vu_msg_list_clear(VuMsgList *l);   /* closes the messages' fds */

void shadow_init(Shadow *s);
/* Forgets the front-end's device (closing its fds); keeps what the back-end said. */
void shadow_reset(Shadow *s);
void shadow_done(Shadow *s);

/* Features offered to the front-end: those of the last back-end minus what cannot be
 * replayed. False when no back-end was ever seen (and nothing was configured). */
bool shadow_frontend_features(const Shadow *s, uint64_t *ret);
bool shadow_frontend_protocol_features(const Shadow *s, uint64_t *ret);

/* Applies a valid (vu_msg_check_request) front-end request. Checks what depends on state
 * (negotiated features, memory bounds, ring sizes, eventfds) and keeps copies of the fds it
 * needs; m keeps its own. Returns 0, or a negative errno with *ret_reason; or 1 when the
 * request is taken but the shadow did not keep all of it (an IOTLB update past the bound or
 * outside memory: *ret_reason says which; a later back-end re-learns it through a miss). */
int shadow_apply(Shadow *s, const VuMsg *m, const char **ret_reason);

/* Answers a request from the shadow alone (no back-end), for requests that need an answer:
 * GETs and, when REPLY_ACK was negotiated, NEED_REPLY acks. 1: *ret_reply filled (its fds
 * are the caller's); 0: only a back-end can answer; <0: error. GET_VRING_BASE stops the
 * ring and answers the resume index. */
int shadow_answer(Shadow *s, const VuMsg *req, VuMsg *ret_reply);

/* Records a back-end's answer to a front-end request that was forwarded. */
void shadow_record_reply(Shadow *s, const VuMsg *req, const VuMsg *reply);
/* Records the back-end's GET_FEATURES / GET_PROTOCOL_FEATURES / GET_QUEUE_NUM answers. */
void shadow_record_backend(Shadow *s, VuRequest request, uint64_t value);

/* Bits the front-end acked that a back-end offering (features, protocol_features) lacks. */
void shadow_missing(const Shadow *s, uint64_t features, uint64_t protocol_features,
                    uint64_t *ret_features, uint64_t *ret_protocol_features);

/* The protocol features to negotiate with a back-end offering `offered`: the front-end's,
 * plus REPLY_ACK when offered, so that the daemon learns when the replay is done. 0 when
 * the front-end never set protocol features: the replay then sets none. */
uint64_t shadow_backend_protocol_features(const Shadow *s, uint64_t offered);

/* Ring and buffer addresses are IOVAs: ACCESS_PLATFORM in SET_FEATURES (QEMU sets it there
 * only with a vIOMMU; without one its addresses stay its own). */
bool shadow_iommu(const Shadow *s);
/* The front-end logs its back-end's writes (a migration is under way): LOG_ALL acked, or a
 * ring with VHOST_VRING_F_LOG. */
bool shadow_logging(const Shadow *s);

/* Number of vrings the front-end has touched (highest index + 1). */
unsigned shadow_vrings_in_use(const Shadow *s);

/* Where a started ring resumes: the index a back-end reported on a clean stop, else the
 * used index read from guest memory after a crash (split rings; packed rings: see
 * vring_packed_recover(), which also completes in guest memory the descriptors the crashed
 * device processed but did not mark used; call it only when no back-end runs the ring),
 * else the base the front-end set. 0, or 1 when a packed ring's index is a best guess, or
 * a negative errno (*ret is then the base). */
int shadow_resume_index(const Shadow *s, unsigned index, uint32_t *ret, bool *ret_from_memory);
/* The same, and how many descriptors it completed (packed rings; 0 otherwise). */
int shadow_resume_index_full(const Shadow *s, unsigned index, uint32_t *ret, bool *ret_from_memory,
                             unsigned *ret_completed);

/* A split ring's avail and used indexes as guest memory has them now (through the IOTLB when
 * addresses are IOVAs), for the logs. Negative errno when a ring is not readable. */
int shadow_read_ring_indexes(const Shadow *s, unsigned index, uint16_t *ret_avail, uint16_t *ret_used);

/* The messages that bring a new back-end to the shadow's state, in order, after the
 * SET_OWNER / GET_FEATURES / GET_PROTOCOL_FEATURES probe. backend_pf is what
 * shadow_backend_protocol_features() returned. Each message carries copies of its fds.
 * With REPLY_ACK every request asks for an ack; without, a GET_FEATURES closes the list
 * as a barrier. */
int shadow_build_replay(const Shadow *s, uint64_t backend_pf, VuMsgList *ret, const char **ret_reason);

/* A back-end said its config changed (CONFIG_CHANGE_MSG): the cached bytes are stale. */
void shadow_config_changed(Shadow *s);

/* Marks a ring stopped at `base` (GET_VRING_BASE answered). */
void shadow_vring_stopped(Shadow *s, unsigned index, uint32_t base);
/* After a replay: the back-end now owns the resume indexes. */
void shadow_replayed(Shadow *s);
