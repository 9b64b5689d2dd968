/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "fd-util.h"
#include "macro.h"
#include "shadow.h"

static void vring_init(ShadowVring *v) {
        *v = (ShadowVring) { .kick_fd = -1, .call_fd = -1, .err_fd = -1 };
}

static void vring_release(ShadowVring *v) {
        safe_close(v->kick_fd);
        safe_close(v->call_fd);
        safe_close(v->err_fd);
        vring_init(v);
}

void shadow_init(Shadow *s) {
        memset(s, 0, sizeof(*s));
        guest_memory_init(&s->memory);
        iotlb_init(&s->iotlb);
        dirty_log_init(&s->log);
        s->inflight_fd = -1;
        s->backend_req_fd = -1;
}

static void reset_vrings(Shadow *s) {
        for (unsigned i = 0; i < s->n_vrings; i++)
                vring_release(&s->vrings[i]);
        free(s->vrings);
        s->vrings = NULL;
        s->n_vrings = 0;
}

void shadow_reset(Shadow *s) {
        BackendCache backend = s->backend;

        reset_vrings(s);
        guest_memory_clear(&s->memory);
        iotlb_clear(&s->iotlb);
        safe_close(s->inflight_fd);
        safe_close(s->backend_req_fd);
        dirty_log_clear(&s->log);
        shadow_init(s);
        s->backend = backend;
}

void shadow_done(Shadow *s) {
        shadow_reset(s);
}

void vu_msg_list_clear(VuMsgList *l) {
        for (size_t i = 0; i < l->n; i++)
                vu_msg_close_fds(&l->msgs[i]);
        free(l->msgs);
        *l = (VuMsgList) {};
}

static int fail(const char **ret_reason, const char *reason, int err) {
        if (ret_reason)
                *ret_reason = reason;
        return err;
}

bool shadow_frontend_features(const Shadow *s, uint64_t *ret) {
        if (!s->backend.features_known)
                return false;
        *ret = s->backend.features & ~SHADOW_MASKED_FEATURES;
        return true;
}

bool shadow_frontend_protocol_features(const Shadow *s, uint64_t *ret) {
        if (!s->backend.protocol_features_known)
                return false;
        *ret = s->backend.protocol_features & SHADOW_REPLAYABLE_PROTOCOL_FEATURES;
        return true;
}

static bool pf_negotiated(const Shadow *s, unsigned bit) {
        return s->protocol_features_set && (s->protocol_features & VU_BIT(bit));
}

bool shadow_iommu(const Shadow *s) {
        return s->features_set && (s->features & VU_BIT(VIRTIO_F_ACCESS_PLATFORM));
}

/* A ring's address as the front-end's own: through the IOTLB when addresses are IOVAs. */
static int ring_uaddr(const Shadow *s, uint64_t addr, uint64_t len, uint64_t *ret) {
        if (!shadow_iommu(s)) {
                *ret = addr;
                return 0;
        }
        return iotlb_translate(&s->iotlb, addr, len, ret);
}

static bool packed(const Shadow *s) {
        return s->features_set && (s->features & VU_BIT(VIRTIO_F_RING_PACKED));
}

/* The protocol feature a request depends on, or -1. */
static int request_protocol_feature(uint32_t request) {
        switch (request) {
        case VU_GET_QUEUE_NUM:          return VU_PF_MQ;
        case VU_GET_CONFIG:
        case VU_SET_CONFIG:             return VU_PF_CONFIG;
        case VU_GET_STATUS:
        case VU_SET_STATUS:             return VU_PF_STATUS;
        case VU_RESET_DEVICE:           return VU_PF_RESET_DEVICE;
        case VU_SEND_RARP:              return VU_PF_RARP;
        case VU_NET_SET_MTU:            return VU_PF_MTU;
        case VU_SET_BACKEND_REQ_FD:     return VU_PF_BACKEND_REQ;
        case VU_GET_INFLIGHT_FD:
        case VU_SET_INFLIGHT_FD:        return VU_PF_INFLIGHT_SHMFD;
        case VU_GET_MAX_MEM_SLOTS:
        case VU_ADD_MEM_REG:
        case VU_REM_MEM_REG:            return VU_PF_CONFIGURE_MEM_SLOTS;
        case VU_VRING_KICK:             return VU_PF_INBAND_NOTIFICATIONS;
        /* without a shared log a back-end in another process could not mark anything */
        case VU_SET_LOG_BASE:
        case VU_SET_LOG_FD:             return VU_PF_LOG_SHMFD;
        default:                        return -1;
        }
}

static ShadowVring *vring_get(Shadow *s, unsigned index) {
        if (index >= VU_MAX_VRINGS)
                return NULL;
        if (index >= s->n_vrings) {
                ShadowVring *n = realloc(s->vrings, sizeof(ShadowVring) * (index + 1));
                if (!n)
                        return NULL;
                for (unsigned i = s->n_vrings; i <= index; i++)
                        vring_init(&n[i]);
                s->vrings = n;
                s->n_vrings = index + 1;
        }
        return &s->vrings[index];
}

unsigned shadow_vrings_in_use(const Shadow *s) {
        return s->n_vrings;
}

static int check_vring_addr(const Shadow *s, const VuVringAddr *a, uint32_t num, const char **ret_reason) {
        if (!s->memory_set)
                return fail(ret_reason, "vring address before a memory table", -EINVAL);
        if (num == 0)
                num = 1;
        if ((a->desc_user_addr & 15) || (a->avail_user_addr & 1) || (a->used_user_addr & 3))
                return fail(ret_reason, "misaligned vring address", -EINVAL);
        /* The packed ring's event suppression areas are 4 bytes each. */
        uint64_t desc = vring_split_desc_size(num);
        uint64_t avail = packed(s) ? 4 : vring_split_avail_size(num);
        uint64_t used = packed(s) ? 4 : vring_split_used_size(num);
        /* IOVAs: the IOTLB may not know them yet (QEMU maps the used ring after this); they
         * are translated, and checked against memory, when they are read. */
        if (shadow_iommu(s))
                return 0;
        if (!guest_memory_translate(&s->memory, a->desc_user_addr, desc) ||
            !guest_memory_translate(&s->memory, a->avail_user_addr, avail) ||
            !guest_memory_translate(&s->memory, a->used_user_addr, used))
                return fail(ret_reason, "vring address outside the memory table", -EINVAL);
        return 0;
}

static int replace_fd(int *slot, const VuMsg *m, const char **ret_reason) {
        int fd = -1;

        if (m->n_fds == 1) {
                if (!fd_is_eventfd(m->fds[0]))
                        return fail(ret_reason, "vring kick/call/err fd is not an eventfd", -EINVAL);
                fd = fcntl(m->fds[0], F_DUPFD_CLOEXEC, 3);
                if (fd < 0)
                        return fail(ret_reason, "cannot duplicate fd", -errno);
        }
        safe_close(*slot);
        *slot = fd;
        return 0;
}

static void config_mark(uint8_t *bitmap, uint32_t offset, uint32_t size) {
        for (uint32_t i = offset; i < offset + size; i++)
                bitmap[i / 8] |= 1u << (i % 8);
}

static bool config_has(const uint8_t *bitmap, uint32_t offset, uint32_t size) {
        for (uint32_t i = offset; i < offset + size; i++)
                if (!(bitmap[i / 8] & (1u << (i % 8))))
                        return false;
        return true;
}

bool shadow_logging(const Shadow *s) {
        bool ring_logged = false;
        for (unsigned i = 0; i < s->n_vrings && !ring_logged; i++)
                ring_logged = s->vrings[i].addr_set && (s->vrings[i].addr.flags & VU_BIT(VU_VRING_F_LOG));
        return dirty_log_logging(s->features_set ? s->features : 0, ring_logged);
}

static void reset_device(Shadow *s) {
        reset_vrings(s);
        dirty_log_clear(&s->log);
        s->features_set = false;
        s->features = 0;
        s->status_set = false;
        s->status = 0;
}

int shadow_apply(Shadow *s, const VuMsg *m, const char **ret_reason) {
        const VuRequest req = m->hdr.request;
        uint64_t offered;
        ShadowVring *v;
        int pf = request_protocol_feature(req), r;

        if (pf >= 0 && !pf_negotiated(s, pf))
                return fail(ret_reason, "request needs a protocol feature that was not negotiated", -EPROTO);

        switch (req) {
        case VU_SET_OWNER:
                s->owner = true;
                return 0;

        case VU_RESET_OWNER:
                reset_device(s);
                s->owner = false;
                return 0;

        case VU_RESET_DEVICE:
                reset_device(s);
                return 0;

        case VU_SET_FEATURES:
                if (!shadow_frontend_features(s, &offered))
                        return fail(ret_reason, "SET_FEATURES before any features were offered", -EPROTO);
                if (m->payload.u64 & ~offered)
                        return fail(ret_reason, "SET_FEATURES acks bits that were not offered", -EPROTO);
                /* The end of a migration (or its cancel): the front-end frees its log, and a
                 * back-end connecting from now on gets none. */
                if (s->features_set && (s->features & VU_BIT(VU_F_LOG_ALL)) &&
                    !(m->payload.u64 & VU_BIT(VU_F_LOG_ALL)))
                        dirty_log_clear(&s->log);
                s->features = m->payload.u64;
                s->features_set = true;
                return 0;

        case VU_SET_PROTOCOL_FEATURES:
                if (!shadow_frontend_protocol_features(s, &offered))
                        return fail(ret_reason, "SET_PROTOCOL_FEATURES before any were offered", -EPROTO);
                if (m->payload.u64 & ~offered)
                        return fail(ret_reason, "SET_PROTOCOL_FEATURES acks bits that were not offered", -EPROTO);
                s->protocol_features = m->payload.u64;
                s->protocol_features_set = true;
                return 0;

        case VU_SET_MEM_TABLE:
                r = guest_memory_set_table(&s->memory, &m->payload.memory, m->fds, ret_reason);
                if (r < 0)
                        return r;
                s->memory_set = true;
                s->memory_by_slots = false;
                return 0;

        case VU_ADD_MEM_REG:
                if (s->backend.max_mem_slots_known && s->memory.n_regions >= s->backend.max_mem_slots)
                        return fail(ret_reason, "more memory regions than the back-end has slots", -EINVAL);
                r = guest_memory_add(&s->memory, &m->payload.mem_reg.region, m->fds[0], ret_reason);
                if (r < 0)
                        return r;
                s->memory_set = s->memory_by_slots = true;
                return 0;

        case VU_REM_MEM_REG:
                return guest_memory_remove(&s->memory, &m->payload.mem_reg.region, ret_reason);

        case VU_GET_MAX_MEM_SLOTS:
                return 0;

        case VU_SET_VRING_NUM: {
                uint32_t num = m->payload.state.num;
                if (num == 0 || num > VU_MAX_VRING_SIZE)
                        return fail(ret_reason, "vring size 0 or above 32768", -EINVAL);
                if (!packed(s) && (num & (num - 1)))
                        return fail(ret_reason, "split vring size not a power of two", -EINVAL);
                if (!(v = vring_get(s, m->payload.state.index)))
                        return fail(ret_reason, "out of memory", -ENOMEM);
                if (v->addr_set && check_vring_addr(s, &v->addr, num, ret_reason) < 0)
                        return -EINVAL;
                v->num = num;
                v->num_set = true;
                return 0;
        }

        case VU_SET_VRING_BASE:
                if (!(v = vring_get(s, m->payload.state.index)))
                        return fail(ret_reason, "out of memory", -ENOMEM);
                v->base = m->payload.state.num;
                v->base_set = true;
                v->resume_valid = false;
                return 0;

        case VU_SET_VRING_ADDR:
                if (!(v = vring_get(s, m->payload.addr.index)))
                        return fail(ret_reason, "out of memory", -ENOMEM);
                r = check_vring_addr(s, &m->payload.addr, v->num_set ? v->num : 0, ret_reason);
                if (r < 0)
                        return r;
                v->addr = m->payload.addr;
                v->addr_set = true;
                return 0;

        case VU_SET_VRING_KICK:
        case VU_SET_VRING_CALL:
        case VU_SET_VRING_ERR:
                if (!(v = vring_get(s, m->payload.u64 & VU_VRING_IDX_MASK)))
                        return fail(ret_reason, "out of memory", -ENOMEM);
                r = replace_fd(req == VU_SET_VRING_KICK ? &v->kick_fd :
                               req == VU_SET_VRING_CALL ? &v->call_fd : &v->err_fd, m, ret_reason);
                if (r < 0)
                        return r;
                if (req == VU_SET_VRING_KICK)
                        v->kick_set = v->started = true;
                else if (req == VU_SET_VRING_CALL)
                        v->call_set = true;
                else
                        v->err_set = true;
                return 0;

        case VU_SET_VRING_ENABLE:
                if (!(v = vring_get(s, m->payload.state.index)))
                        return fail(ret_reason, "out of memory", -ENOMEM);
                v->enabled = m->payload.state.num != 0;
                v->enable_set = true;
                return 0;

        case VU_SET_STATUS:
                s->status = (uint8_t) m->payload.u64;
                s->status_set = true;
                return 0;

        case VU_NET_SET_MTU:
                s->mtu = m->payload.u64;
                s->mtu_set = true;
                return 0;

        case VU_SET_CONFIG: {
                const VuConfig *c = &m->payload.config;
                memcpy(s->config + c->offset, c->region, c->size);
                config_mark(s->config_written, c->offset, c->size);
                /* What the front-end wrote is what it will read back. */
                memcpy(s->backend.config + c->offset, c->region, c->size);
                config_mark(s->backend.config_known, c->offset, c->size);
                return 0;
        }

        case VU_GET_VRING_BASE:
                if (!vring_get(s, m->payload.state.index))
                        return fail(ret_reason, "out of memory", -ENOMEM);
                return 0;

        case VU_SET_INFLIGHT_FD: {
                const VuInflight *in = &m->payload.inflight;
                if (in->mmap_size == 0 || in->mmap_offset + in->mmap_size < in->mmap_offset ||
                    in->mmap_offset + in->mmap_size > (uint64_t) SIZE_MAX / 2)
                        return fail(ret_reason, "absurd inflight region", -EINVAL);
                /* It must be mappable, as each back-end will map it, and not past its end. */
                if (guest_fd_check_mappable(m->fds[0], in->mmap_offset + in->mmap_size, NULL) < 0)
                        return fail(ret_reason, "inflight fd cannot be mapped", -EINVAL);
                void *p = mmap(NULL, in->mmap_offset + in->mmap_size, PROT_READ, MAP_SHARED, m->fds[0], 0);
                if (p == MAP_FAILED)
                        return fail(ret_reason, "inflight fd cannot be mapped", -EINVAL);
                munmap(p, in->mmap_offset + in->mmap_size);
                int fd = fcntl(m->fds[0], F_DUPFD_CLOEXEC, 3);
                if (fd < 0)
                        return fail(ret_reason, "cannot duplicate fd", -errno);
                safe_close(s->inflight_fd);
                s->inflight_fd = fd;
                s->inflight = *in;
                s->inflight_set = true;
                return 0;
        }

        case VU_GET_INFLIGHT_FD:
                return 0;

        case VU_SET_LOG_BASE:
                return dirty_log_set_base(&s->log, m, ret_reason);

        case VU_SET_LOG_FD:
                return dirty_log_set_notify(&s->log, m, ret_reason);

        case VU_SET_BACKEND_REQ_FD: {
                int fd = fcntl(m->fds[0], F_DUPFD_CLOEXEC, 3);
                if (fd < 0)
                        return fail(ret_reason, "cannot duplicate fd", -errno);
                safe_close(s->backend_req_fd);
                s->backend_req_fd = fd;
                return 0;
        }

        case VU_IOTLB_MSG:
                r = iotlb_apply(&s->iotlb, &s->memory, &m->payload.iotlb, ret_reason);
                if (r == -ERANGE || r == -ENOSPC)
                        return 1;       /* passed on, not kept: a miss brings it back */
                return r;

        case VU_GET_FEATURES:
        case VU_GET_PROTOCOL_FEATURES:
        case VU_GET_QUEUE_NUM:
        case VU_GET_STATUS:
        case VU_GET_CONFIG:
        case VU_SEND_RARP:
                return 0;

        default:
                /* Everything else needs a protocol feature that is never offered (above), or
                 * is refused by the codec. */
                return fail(ret_reason, "request not supported by vhost-recon", -EOPNOTSUPP);
        }
}

static void reply_init(VuMsg *reply, const VuMsg *req) {
        vu_msg_init(reply, req->hdr.request, VU_FLAG_REPLY);
}

static void reply_u64(VuMsg *reply, const VuMsg *req, uint64_t value) {
        reply_init(reply, req);
        reply->hdr.size = sizeof(uint64_t);
        reply->payload.u64 = value;
}

int shadow_resume_index(const Shadow *s, unsigned index, uint32_t *ret, bool *ret_from_memory) {
        return shadow_resume_index_full(s, index, ret, ret_from_memory, NULL);
}

int shadow_resume_index_full(const Shadow *s, unsigned index, uint32_t *ret, bool *ret_from_memory,
                             unsigned *ret_completed) {
        const ShadowVring *v = index < s->n_vrings ? &s->vrings[index] : NULL;
        bool from_memory = false;
        int r = 0;

        if (ret_completed)
                *ret_completed = 0;
        if (!v)
                *ret = 0;
        else if (v->resume_valid)
                *ret = v->resume;
        else if (v->started && v->addr_set && packed(s)) {
                bool certain = true;
                unsigned completed = 0;
                uint32_t num = v->num_set ? v->num : 0;
                uint64_t desc;
                r = ring_uaddr(s, v->addr.desc_user_addr, 16ull * MAX(num, 1u), &desc);
                if (r >= 0)
                        r = vring_packed_recover(&s->memory, desc, num,
                                                 VRING_PACKED_COMPLETE |
                                                 (s->features & VU_BIT(VIRTIO_F_IN_ORDER) ? VRING_PACKED_IN_ORDER : 0),
                                                 ret, &certain, &completed);
                if (ret_completed)
                        *ret_completed = completed;
                if (r >= 0) {
                        from_memory = true;
                        r = certain ? 0 : 1;
                } else
                        *ret = v->base;
        } else if (v->started && v->addr_set) {
                uint16_t idx;
                uint64_t used;
                r = ring_uaddr(s, v->addr.used_user_addr, 4, &used);
                if (r >= 0)
                        r = vring_split_read_used_idx(&s->memory, used, &idx);
                if (r >= 0) {
                        *ret = idx;
                        from_memory = true;
                } else
                        *ret = v->base;
        } else
                *ret = v->base;

        if (ret_from_memory)
                *ret_from_memory = from_memory;
        return r;
}

int shadow_read_ring_indexes(const Shadow *s, unsigned index, uint16_t *ret_avail, uint16_t *ret_used) {
        const ShadowVring *v = index < s->n_vrings ? &s->vrings[index] : NULL;
        uint64_t avail, used;
        int r;

        if (!v || !v->addr_set)
                return -ENOENT;
        r = ring_uaddr(s, v->addr.avail_user_addr, 4, &avail);
        if (r >= 0)
                r = ring_uaddr(s, v->addr.used_user_addr, 4, &used);
        if (r >= 0)
                r = vring_split_read_avail_idx(&s->memory, avail, ret_avail);
        if (r >= 0)
                r = vring_split_read_used_idx(&s->memory, used, ret_used);
        return r;
}

void shadow_vring_stopped(Shadow *s, unsigned index, uint32_t base) {
        ShadowVring *v = vring_get(s, index);
        if (!v)
                return;
        v->started = false;
        v->resume_valid = true;
        v->resume = base;
}

void shadow_config_changed(Shadow *s) {
        memset(s->backend.config_known, 0, sizeof(s->backend.config_known));
}

void shadow_replayed(Shadow *s) {
        for (unsigned i = 0; i < s->n_vrings; i++)
                if (s->vrings[i].started)
                        s->vrings[i].resume_valid = false;
}

int shadow_answer(Shadow *s, const VuMsg *req, VuMsg *ret_reply) {
        uint64_t value;

        switch (req->hdr.request) {
        case VU_GET_FEATURES:
                if (!shadow_frontend_features(s, &value))
                        return 0;
                reply_u64(ret_reply, req, value);
                return 1;

        case VU_GET_PROTOCOL_FEATURES:
                if (!shadow_frontend_protocol_features(s, &value))
                        return 0;
                reply_u64(ret_reply, req, value);
                return 1;

        case VU_GET_QUEUE_NUM:
                if (!s->backend.queue_num_known)
                        return 0;
                reply_u64(ret_reply, req, s->backend.queue_num);
                return 1;

        case VU_GET_MAX_MEM_SLOTS:
                if (!s->backend.max_mem_slots_known)
                        return 0;
                reply_u64(ret_reply, req, s->backend.max_mem_slots);
                return 1;

        case VU_GET_STATUS:
                reply_u64(ret_reply, req, s->status);
                return 1;

        case VU_GET_VRING_BASE: {
                uint32_t index = req->payload.state.index, base;
                (void) shadow_resume_index(s, index, &base, NULL);
                shadow_vring_stopped(s, index, base);
                reply_init(ret_reply, req);
                ret_reply->hdr.size = sizeof(VuVringState);
                ret_reply->payload.state = (VuVringState) { .index = index, .num = base };
                return 1;
        }

        case VU_GET_CONFIG: {
                const VuConfig *c = &req->payload.config;
                if (!config_has(s->backend.config_known, c->offset, c->size))
                        return 0;
                reply_init(ret_reply, req);
                ret_reply->hdr.size = VU_CONFIG_HDR_SIZE + c->size;
                ret_reply->payload.config.offset = c->offset;
                ret_reply->payload.config.size = c->size;
                ret_reply->payload.config.flags = c->flags;
                memcpy(ret_reply->payload.config.region, s->backend.config + c->offset, c->size);
                return 1;
        }

        case VU_GET_INFLIGHT_FD: {
                /* The region in use, while it fits what is asked (a front-end restarting its device). */
                const VuInflight *q = &req->payload.inflight;
                if (!s->inflight_set || q->num_queues != s->inflight.num_queues ||
                    q->queue_size != s->inflight.queue_size)
                        return 0;
                reply_init(ret_reply, req);
                ret_reply->hdr.size = VU_INFLIGHT_WIRE_SIZE;
                ret_reply->payload.inflight = s->inflight;
                return vu_msg_add_fd_dup(ret_reply, s->inflight_fd) < 0 ? -errno : 1;
        }

        case VU_SET_LOG_BASE:
                /* Nothing writes guest memory without a back-end; the next one gets the log
                 * in its replay before any ring runs. */
                dirty_log_base_reply(ret_reply);
                return 1;

        default:
                if (vu_request_has_reply(req->hdr.request))
                        return 0;
                /* A REPLY_ACK: the shadow took the request, so it succeeded. */
                reply_u64(ret_reply, req, 0);
                return 1;
        }
}

void shadow_record_backend(Shadow *s, VuRequest request, uint64_t value) {
        switch (request) {
        case VU_GET_FEATURES:
                s->backend.features = value;
                s->backend.features_known = true;
                break;
        case VU_GET_PROTOCOL_FEATURES:
                s->backend.protocol_features = value;
                s->backend.protocol_features_known = true;
                break;
        case VU_GET_QUEUE_NUM:
                s->backend.queue_num = value;
                s->backend.queue_num_known = true;
                break;
        case VU_GET_MAX_MEM_SLOTS:
                s->backend.max_mem_slots = value;
                s->backend.max_mem_slots_known = true;
                break;
        default:
                break;
        }
}

void shadow_record_reply(Shadow *s, const VuMsg *req, const VuMsg *reply) {
        switch (req->hdr.request) {
        case VU_GET_VRING_BASE:
                shadow_vring_stopped(s, reply->payload.state.index, reply->payload.state.num);
                break;
        case VU_GET_CONFIG: {
                const VuConfig *c = &reply->payload.config;
                if (c->offset == req->payload.config.offset && c->size == req->payload.config.size) {
                        memcpy(s->backend.config + c->offset, c->region, c->size);
                        config_mark(s->backend.config_known, c->offset, c->size);
                }
                break;
        }
        case VU_GET_QUEUE_NUM:
        case VU_GET_MAX_MEM_SLOTS:
                shadow_record_backend(s, req->hdr.request, reply->payload.u64);
                break;
        default:
                break;
        }
}

void shadow_missing(const Shadow *s, uint64_t features, uint64_t protocol_features,
                    uint64_t *ret_features, uint64_t *ret_protocol_features) {
        *ret_features = s->features_set ? s->features & ~features : 0;
        *ret_protocol_features = s->protocol_features_set ? s->protocol_features & ~protocol_features : 0;
}

uint64_t shadow_backend_protocol_features(const Shadow *s, uint64_t offered) {
        /* without SET_PROTOCOL_FEATURES in the replay the back-end has none, REPLY_ACK neither */
        if (!s->protocol_features_set)
                return 0;
        return s->protocol_features | (offered & VU_BIT(VU_PF_REPLY_ACK));
}

static VuMsg *list_add(VuMsgList *l) {
        if (l->n == l->allocated) {
                size_t n = l->allocated ? l->allocated * 2 : 32;
                VuMsg *m = realloc(l->msgs, n * sizeof(VuMsg));
                if (!m)
                        return NULL;
                l->msgs = m;
                l->allocated = n;
        }
        VuMsg *m = &l->msgs[l->n++];
        m->n_fds = 0;
        return m;
}

static int add_u64(VuMsgList *l, VuRequest req, uint64_t value) {
        VuMsg *m = list_add(l);
        if (!m)
                return -ENOMEM;
        vu_msg_init_u64(m, req, value);
        return 0;
}

static int add_state(VuMsgList *l, VuRequest req, uint32_t index, uint32_t num) {
        VuMsg *m = list_add(l);
        if (!m)
                return -ENOMEM;
        vu_msg_init_state(m, req, index, num);
        return 0;
}

static int add_file(VuMsgList *l, VuRequest req, unsigned index, int fd) {
        VuMsg *m = list_add(l);
        if (!m)
                return -ENOMEM;
        vu_msg_init_u64(m, req, index | (fd < 0 ? VU_VRING_NOFD : 0));
        return fd < 0 ? 0 : vu_msg_add_fd_dup(m, fd);
}

static int build_vring(const Shadow *s, unsigned i, bool num_sent, VuMsgList *l, const char **ret_reason) {
        const ShadowVring *v = &s->vrings[i];
        int r = 0;

        if (v->num_set && !num_sent)
                r = add_state(l, VU_SET_VRING_NUM, i, v->num);
        if (r >= 0 && (v->base_set || v->started || v->resume_valid)) {
                uint32_t base;
                if (shadow_resume_index(s, i, &base, NULL) < 0)
                        return fail(ret_reason, "used ring not readable in guest memory", -EFAULT);
                r = add_state(l, VU_SET_VRING_BASE, i, base);
        }
        if (r >= 0 && v->addr_set) {
                VuMsg *m = list_add(l);
                if (!m)
                        return -ENOMEM;
                vu_msg_init(m, VU_SET_VRING_ADDR, 0);
                m->hdr.size = sizeof(VuVringAddr);
                m->payload.addr = v->addr;
        }
        /* KICK last: back-ends such as DPDK take it as the sign the ring is complete. */
        if (r >= 0 && v->call_set)
                r = add_file(l, VU_SET_VRING_CALL, i, v->call_fd);
        if (r >= 0 && v->err_set)
                r = add_file(l, VU_SET_VRING_ERR, i, v->err_fd);
        if (r >= 0 && v->started)
                r = add_file(l, VU_SET_VRING_KICK, i, v->kick_fd);
        return r;
}

int shadow_build_replay(const Shadow *s, uint64_t backend_pf, VuMsgList *ret, const char **ret_reason) {
        VuMsgList l = {};
        bool reply_ack = backend_pf & VU_BIT(VU_PF_REPLY_ACK);
        int r = 0;

        if (s->protocol_features_set) {
                r = add_u64(&l, VU_SET_PROTOCOL_FEATURES, backend_pf);
                if (r >= 0 && (s->protocol_features & VU_BIT(VU_PF_MQ))) {
                        VuMsg *m = list_add(&l);
                        if (!m)
                                r = -ENOMEM;
                        else
                                vu_msg_init(m, VU_GET_QUEUE_NUM, 0);
                }
        }
        if (r >= 0 && s->features_set)
                r = add_u64(&l, VU_SET_FEATURES, s->features);
        /* Carries the front-end's channel: the daemon gives each back-end a channel of its own
         * in its place and relays between the two. */
        if (r >= 0 && s->backend_req_fd >= 0 && pf_negotiated(s, VU_PF_BACKEND_REQ)) {
                VuMsg *m = list_add(&l);
                if (!m)
                        r = -ENOMEM;
                else {
                        vu_msg_init(m, VU_SET_BACKEND_REQ_FD, 0);
                        r = vu_msg_add_fd_dup(m, s->backend_req_fd);
                }
        }
        for (unsigned i = 0; r >= 0 && s->memory_set && s->memory_by_slots && i < s->memory.n_regions; i++) {
                VuMsg *m = list_add(&l);
                if (!m) {
                        r = -ENOMEM;
                        break;
                }
                vu_msg_init(m, VU_ADD_MEM_REG, 0);
                m->hdr.size = sizeof(VuMemRegionMsg);
                m->payload.mem_reg.padding = 0;
                m->payload.mem_reg.region = s->memory.regions[i].info;
                r = vu_msg_add_fd_dup(m, s->memory.regions[i].fd);
        }
        if (r >= 0 && s->memory_set && !s->memory_by_slots) {
                VuMsg *m = list_add(&l);
                if (!m)
                        r = -ENOMEM;
                else {
                        vu_msg_init(m, VU_SET_MEM_TABLE, 0);
                        m->payload.memory.nregions = s->memory.n_regions;
                        m->payload.memory.padding = 0;
                        m->hdr.size = 8 + s->memory.n_regions * sizeof(VuMemRegion);
                        for (unsigned i = 0; r >= 0 && i < s->memory.n_regions; i++) {
                                m->payload.memory.regions[i] = s->memory.regions[i].info;
                                r = vu_msg_add_fd_dup(m, s->memory.regions[i].fd);
                        }
                }
        }
        /* The log before any ring runs (LOG_ALL came with the features), so that every
         * write of the new back-end is marked. The shadow holds one only from SET_LOG_BASE
         * until logging stops. */
        if (r >= 0 && s->log.fd >= 0) {
                VuMsg ms[2];
                unsigned n = 0;
                r = dirty_log_build_replay(&s->log, ms, &n);
                for (unsigned i = 0; r >= 0 && i < n; i++) {
                        VuMsg *m = list_add(&l);
                        if (!m) {
                                for (unsigned k = i; k < n; k++)
                                        vu_msg_close_fds(&ms[k]);
                                r = -ENOMEM;
                                break;
                        }
                        *m = ms[i];
                }
        }
        /* Before the rings: a back-end checks the region for I/O to resubmit as rings start. */
        if (r >= 0 && s->inflight_set && pf_negotiated(s, VU_PF_INFLIGHT_SHMFD)) {
                VuMsg *m = list_add(&l);
                if (!m)
                        r = -ENOMEM;
                else {
                        vu_msg_init(m, VU_SET_INFLIGHT_FD, 0);
                        m->hdr.size = VU_INFLIGHT_WIRE_SIZE;
                        m->payload.inflight = s->inflight;
                        r = vu_msg_add_fd_dup(m, s->inflight_fd);
                }
        }
        if (r >= 0 && s->mtu_set && pf_negotiated(s, VU_PF_MTU))
                r = add_u64(&l, VU_NET_SET_MTU, s->mtu);
        for (uint32_t off = 0; r >= 0 && off < VU_MAX_CONFIG_SIZE;) {
                if (!config_has(s->config_written, off, 1)) {
                        off++;
                        continue;
                }
                uint32_t end = off;
                while (end < VU_MAX_CONFIG_SIZE && config_has(s->config_written, end, 1))
                        end++;
                VuMsg *m = list_add(&l);
                if (!m) {
                        r = -ENOMEM;
                        break;
                }
                vu_msg_init(m, VU_SET_CONFIG, 0);
                m->payload.config.offset = off;
                m->payload.config.size = end - off;
                m->payload.config.flags = 0;
                memcpy(m->payload.config.region, s->config + off, end - off);
                m->hdr.size = VU_CONFIG_HDR_SIZE + (end - off);
                off = end;
        }
        /* With a vIOMMU the translations go before the ring addresses, so that the back-end
         * finds the rings mapped instead of asking. DPDK 22.11 keeps an IOTLB per virtqueue
         * and drops updates for queues it has not made yet: SET_VRING_NUM makes them. */
        bool iotlb = r >= 0 && shadow_iommu(s) && s->iotlb.n > 0;
        for (unsigned i = 0; iotlb && r >= 0 && i < s->n_vrings; i++)
                if (s->vrings[i].num_set)
                        r = add_state(&l, VU_SET_VRING_NUM, i, s->vrings[i].num);
        for (unsigned i = 0; iotlb && r >= 0 && i < s->iotlb.n; i++) {
                const IotlbEntry *e = &s->iotlb.entries[i];
                if (!iotlb_entry_in_memory(e, &s->memory))
                        continue;       /* the memory table changed under it: re-learned */
                VuMsg *m = list_add(&l);
                if (!m) {
                        r = -ENOMEM;
                        break;
                }
                vu_msg_init(m, VU_IOTLB_MSG, 0);
                m->hdr.size = sizeof(VuIotlbMsg);
                m->payload.iotlb.iova = e->iova;        /* the padding stays zeroed */
                m->payload.iotlb.size = e->size;
                m->payload.iotlb.uaddr = e->uaddr;
                m->payload.iotlb.perm = e->perm;
                m->payload.iotlb.type = VU_IOTLB_UPDATE;
        }
        for (unsigned i = 0; r >= 0 && i < s->n_vrings; i++)
                r = build_vring(s, i, iotlb, &l, ret_reason);
        if (s->features_set && (s->features & VU_BIT(VU_F_PROTOCOL_FEATURES)))
                for (unsigned i = 0; r >= 0 && i < s->n_vrings; i++)
                        if (s->vrings[i].enable_set)
                                r = add_state(&l, VU_SET_VRING_ENABLE, i, s->vrings[i].enabled);
        if (r >= 0 && s->status_set && pf_negotiated(s, VU_PF_STATUS))
                r = add_u64(&l, VU_SET_STATUS, s->status);

        if (r >= 0 && !reply_ack && l.n > 0) {     /* nothing to replay: nothing to wait for */
                VuMsg *m = list_add(&l);
                if (!m)
                        r = -ENOMEM;
                else
                        vu_msg_init(m, VU_GET_FEATURES, 0);
        }
        if (r >= 0 && reply_ack)
                /* SET_PROTOCOL_FEATURES is what turns REPLY_ACK on: no ack for it. */
                for (size_t i = 0; i < l.n; i++)
                        if (l.msgs[i].hdr.request != VU_SET_PROTOCOL_FEATURES &&
                            !vu_request_has_reply(l.msgs[i].hdr.request))
                                l.msgs[i].hdr.flags |= VU_FLAG_NEED_REPLY;

        if (r < 0) {
                vu_msg_list_clear(&l);
                if (r == -ENOMEM)
                        fail(ret_reason, "out of memory", r);
                return r;
        }
        *ret = l;
        return 0;
}
