/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "macro.h"
#include "vhost-user.h"

typedef enum PayloadKind {
        PAYLOAD_NONE,           /* size 0; a zero u64 (size 8) is tolerated, as some front-ends send it */
        PAYLOAD_U64,
        PAYLOAD_STATE,
        PAYLOAD_ADDR,
        PAYLOAD_MEMTABLE,
        PAYLOAD_MEMREG,
        PAYLOAD_LOG,
        PAYLOAD_INFLIGHT,
        PAYLOAD_CONFIG,
        PAYLOAD_FILE,           /* u64: vring index in bits 0-7, bit 8 = no fd */
        PAYLOAD_IOTLB,          /* struct vhost_iotlb_msg */
        PAYLOAD_LOG_REPLY,      /* SET_LOG_BASE's answer: none (DPDK) or a u64 (libvhost-user) */
        PAYLOAD_UNSUPPORTED,    /* never offered by vhost-recon; refused */
} PayloadKind;

typedef struct RequestInfo {
        const char *name;
        PayloadKind request;
        PayloadKind reply;      /* PAYLOAD_NONE: no answer of its own (only a REPLY_ACK) */
        unsigned fds;           /* fds the request carries (FILE and MEMTABLE: computed) */
} RequestInfo;

static const RequestInfo request_info[_VU_REQUEST_MAX] = {
        [VU_GET_FEATURES]          = { "GET_FEATURES",          PAYLOAD_NONE,     PAYLOAD_U64,      0 },
        [VU_SET_FEATURES]          = { "SET_FEATURES",          PAYLOAD_U64,      PAYLOAD_NONE,     0 },
        [VU_SET_OWNER]             = { "SET_OWNER",             PAYLOAD_NONE,     PAYLOAD_NONE,     0 },
        [VU_RESET_OWNER]           = { "RESET_OWNER",           PAYLOAD_NONE,     PAYLOAD_NONE,     0 },
        [VU_SET_MEM_TABLE]         = { "SET_MEM_TABLE",         PAYLOAD_MEMTABLE, PAYLOAD_NONE,     0 },
        [VU_SET_LOG_BASE]          = { "SET_LOG_BASE",          PAYLOAD_LOG,      PAYLOAD_LOG_REPLY, 1 },
        [VU_SET_LOG_FD]            = { "SET_LOG_FD",            PAYLOAD_NONE,     PAYLOAD_NONE,     1 },
        [VU_SET_VRING_NUM]         = { "SET_VRING_NUM",         PAYLOAD_STATE,    PAYLOAD_NONE,     0 },
        [VU_SET_VRING_ADDR]        = { "SET_VRING_ADDR",        PAYLOAD_ADDR,     PAYLOAD_NONE,     0 },
        [VU_SET_VRING_BASE]        = { "SET_VRING_BASE",        PAYLOAD_STATE,    PAYLOAD_NONE,     0 },
        [VU_GET_VRING_BASE]        = { "GET_VRING_BASE",        PAYLOAD_STATE,    PAYLOAD_STATE,    0 },
        [VU_SET_VRING_KICK]        = { "SET_VRING_KICK",        PAYLOAD_FILE,     PAYLOAD_NONE,     0 },
        [VU_SET_VRING_CALL]        = { "SET_VRING_CALL",        PAYLOAD_FILE,     PAYLOAD_NONE,     0 },
        [VU_SET_VRING_ERR]         = { "SET_VRING_ERR",         PAYLOAD_FILE,     PAYLOAD_NONE,     0 },
        [VU_GET_PROTOCOL_FEATURES] = { "GET_PROTOCOL_FEATURES", PAYLOAD_NONE,     PAYLOAD_U64,      0 },
        [VU_SET_PROTOCOL_FEATURES] = { "SET_PROTOCOL_FEATURES", PAYLOAD_U64,      PAYLOAD_NONE,     0 },
        [VU_GET_QUEUE_NUM]         = { "GET_QUEUE_NUM",         PAYLOAD_NONE,     PAYLOAD_U64,      0 },
        [VU_SET_VRING_ENABLE]      = { "SET_VRING_ENABLE",      PAYLOAD_STATE,    PAYLOAD_NONE,     0 },
        [VU_SEND_RARP]             = { "SEND_RARP",             PAYLOAD_U64,      PAYLOAD_NONE,     0 },
        [VU_NET_SET_MTU]           = { "NET_SET_MTU",           PAYLOAD_U64,      PAYLOAD_NONE,     0 },
        [VU_SET_BACKEND_REQ_FD]    = { "SET_BACKEND_REQ_FD",    PAYLOAD_NONE,     PAYLOAD_NONE,     1 },
        [VU_IOTLB_MSG]             = { "IOTLB_MSG",             PAYLOAD_IOTLB,    PAYLOAD_NONE,     0 },
        [VU_SET_VRING_ENDIAN]      = { "SET_VRING_ENDIAN",      PAYLOAD_UNSUPPORTED, PAYLOAD_NONE,  0 },
        [VU_GET_CONFIG]            = { "GET_CONFIG",            PAYLOAD_CONFIG,   PAYLOAD_CONFIG,   0 },
        [VU_SET_CONFIG]            = { "SET_CONFIG",            PAYLOAD_CONFIG,   PAYLOAD_NONE,     0 },
        [VU_CREATE_CRYPTO_SESSION] = { "CREATE_CRYPTO_SESSION", PAYLOAD_UNSUPPORTED, PAYLOAD_NONE,  0 },
        [VU_CLOSE_CRYPTO_SESSION]  = { "CLOSE_CRYPTO_SESSION",  PAYLOAD_UNSUPPORTED, PAYLOAD_NONE,  0 },
        [VU_POSTCOPY_ADVISE]       = { "POSTCOPY_ADVISE",       PAYLOAD_UNSUPPORTED, PAYLOAD_NONE,  0 },
        [VU_POSTCOPY_LISTEN]       = { "POSTCOPY_LISTEN",       PAYLOAD_UNSUPPORTED, PAYLOAD_NONE,  0 },
        [VU_POSTCOPY_END]          = { "POSTCOPY_END",          PAYLOAD_UNSUPPORTED, PAYLOAD_NONE,  0 },
        [VU_GET_INFLIGHT_FD]       = { "GET_INFLIGHT_FD",       PAYLOAD_INFLIGHT, PAYLOAD_INFLIGHT, 0 },
        [VU_SET_INFLIGHT_FD]       = { "SET_INFLIGHT_FD",       PAYLOAD_INFLIGHT, PAYLOAD_NONE,     1 },
        [VU_GPU_SET_SOCKET]        = { "GPU_SET_SOCKET",        PAYLOAD_UNSUPPORTED, PAYLOAD_NONE,  0 },
        [VU_RESET_DEVICE]          = { "RESET_DEVICE",          PAYLOAD_NONE,     PAYLOAD_NONE,     0 },
        [VU_VRING_KICK]            = { "VRING_KICK",            PAYLOAD_STATE,    PAYLOAD_NONE,     0 },
        [VU_GET_MAX_MEM_SLOTS]     = { "GET_MAX_MEM_SLOTS",     PAYLOAD_NONE,     PAYLOAD_U64,      0 },
        [VU_ADD_MEM_REG]           = { "ADD_MEM_REG",           PAYLOAD_MEMREG,   PAYLOAD_NONE,     1 },
        [VU_REM_MEM_REG]           = { "REM_MEM_REG",           PAYLOAD_MEMREG,   PAYLOAD_NONE,     0 },
        [VU_SET_STATUS]            = { "SET_STATUS",            PAYLOAD_U64,      PAYLOAD_NONE,     0 },
        [VU_GET_STATUS]            = { "GET_STATUS",            PAYLOAD_NONE,     PAYLOAD_U64,      0 },
};

static const RequestInfo *request_lookup(uint32_t request) {
        if (request >= _VU_REQUEST_MAX || !request_info[request].name)
                return NULL;
        return &request_info[request];
}

const char *vu_request_to_string(uint32_t request) {
        const RequestInfo *i = request_lookup(request);
        return i ? i->name : "UNKNOWN";
}

bool vu_request_has_reply(uint32_t request) {
        const RequestInfo *i = request_lookup(request);
        return i && i->reply != PAYLOAD_NONE;
}

void vu_msg_init(VuMsg *m, VuRequest request, uint32_t flags) {
        memset(&m->hdr, 0, sizeof(m->hdr));
        memset(&m->payload, 0, sizeof(m->payload.addr)); /* the largest fixed-size kind we fill in */
        m->hdr.request = request;
        m->hdr.flags = VU_VERSION | flags;
        m->n_fds = 0;
}

void vu_msg_init_u64(VuMsg *m, VuRequest request, uint64_t value) {
        vu_msg_init(m, request, 0);
        m->hdr.size = sizeof(uint64_t);
        m->payload.u64 = value;
}

void vu_msg_init_state(VuMsg *m, VuRequest request, uint32_t index, uint32_t num) {
        vu_msg_init(m, request, 0);
        m->hdr.size = sizeof(VuVringState);
        m->payload.state = (VuVringState) { .index = index, .num = num };
}

int vu_msg_add_fd_dup(VuMsg *m, int fd) {
        if (m->n_fds >= VU_MAX_FDS)
                return -E2BIG;
        int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (copy < 0)
                return -errno;
        m->fds[m->n_fds++] = copy;
        return 0;
}

void vu_msg_close_fds(VuMsg *m) {
        for (unsigned i = 0; i < m->n_fds; i++)
                m->fds[i] = safe_close(m->fds[i]);
        m->n_fds = 0;
}

int vu_msg_copy(VuMsg *dst, const VuMsg *src) {
        dst->hdr = src->hdr;
        memcpy(dst->payload.raw, src->payload.raw, MIN(src->hdr.size, VU_MAX_PAYLOAD));
        dst->n_fds = 0;
        for (unsigned i = 0; i < src->n_fds; i++) {
                int r = vu_msg_add_fd_dup(dst, src->fds[i]);
                if (r < 0) {
                        vu_msg_close_fds(dst);
                        return r;
                }
        }
        return 0;
}

bool vu_msg_vring_index(const VuMsg *m, uint32_t *ret_index) {
        const RequestInfo *i = request_lookup(m->hdr.request);
        if (!i)
                return false;
        switch (i->request) {
        case PAYLOAD_STATE:
                *ret_index = m->payload.state.index;
                return true;
        case PAYLOAD_ADDR:
                *ret_index = m->payload.addr.index;
                return true;
        case PAYLOAD_FILE:
                *ret_index = m->payload.u64 & VU_VRING_IDX_MASK;
                return true;
        default:
                return false;
        }
}

static int fail(const char **ret_reason, const char *reason) {
        if (ret_reason)
                *ret_reason = reason;
        return -EBADMSG;
}

static int check_payload(const VuMsg *m, PayloadKind kind, unsigned *ret_fds, const char **ret_reason) {
        uint32_t size = m->hdr.size;

        switch (kind) {
        case PAYLOAD_NONE:
                if (size != 0 && size != sizeof(uint64_t))
                        return fail(ret_reason, "payload size must be 0");
                return 0;
        case PAYLOAD_U64:
                if (size != sizeof(uint64_t))
                        return fail(ret_reason, "payload size must be 8 (u64)");
                return 0;
        case PAYLOAD_STATE:
                if (size != sizeof(VuVringState))
                        return fail(ret_reason, "payload size must be 8 (vring state)");
                if (m->payload.state.index >= VU_MAX_VRINGS)
                        return fail(ret_reason, "vring index out of range");
                return 0;
        case PAYLOAD_ADDR:
                if (size != sizeof(VuVringAddr))
                        return fail(ret_reason, "payload size must be 40 (vring address)");
                if (m->payload.addr.index >= VU_MAX_VRINGS)
                        return fail(ret_reason, "vring index out of range");
                return 0;
        case PAYLOAD_FILE:
                if (size != sizeof(uint64_t))
                        return fail(ret_reason, "payload size must be 8 (vring file)");
                if (m->payload.u64 & ~(uint64_t) (VU_VRING_IDX_MASK | VU_VRING_NOFD))
                        return fail(ret_reason, "reserved bits set in vring file payload");
                *ret_fds = (m->payload.u64 & VU_VRING_NOFD) ? 0 : 1;
                return 0;
        case PAYLOAD_MEMTABLE: {
                if (size < 8)
                        return fail(ret_reason, "memory table shorter than its header");
                uint32_t n = m->payload.memory.nregions;
                if (n > VU_MAX_MEM_REGIONS)
                        return fail(ret_reason, "more than 8 memory regions");
                if (size != 8 + n * sizeof(VuMemRegion))
                        return fail(ret_reason, "memory table size does not match its region count");
                *ret_fds = n;
                return 0;
        }
        case PAYLOAD_MEMREG:
                if (size != sizeof(VuMemRegionMsg))
                        return fail(ret_reason, "payload size must be 40 (memory region)");
                return 0;
        case PAYLOAD_LOG:
                if (size != sizeof(VuLog))
                        return fail(ret_reason, "payload size must be 16 (log)");
                return 0;
        case PAYLOAD_LOG_REPLY:
                if (size != 0 && size != sizeof(uint64_t))
                        return fail(ret_reason, "payload size must be 0 or 8 (log base answer)");
                return 0;
        case PAYLOAD_INFLIGHT:
                /* 20 bytes of fields; QEMU sends the padded C struct (24) */
                if (size != 20 && size != VU_INFLIGHT_WIRE_SIZE)
                        return fail(ret_reason, "payload size must be 24 (inflight)");
                return 0;
        case PAYLOAD_CONFIG:
                if (size < VU_CONFIG_HDR_SIZE)
                        return fail(ret_reason, "config payload shorter than its header");
                if (m->payload.config.size > VU_MAX_CONFIG_SIZE ||
                    size != VU_CONFIG_HDR_SIZE + m->payload.config.size)
                        return fail(ret_reason, "config payload size does not match its size field");
                if ((uint64_t) m->payload.config.offset + m->payload.config.size > VU_MAX_CONFIG_SIZE)
                        return fail(ret_reason, "config offset+size beyond 256 bytes");
                return 0;
        case PAYLOAD_IOTLB:
                if (size != sizeof(VuIotlbMsg))
                        return fail(ret_reason, "payload size must be 32 (IOTLB message)");
                return 0;
        case PAYLOAD_UNSUPPORTED:
                return fail(ret_reason, "request is not offered by vhost-recon");
        }
        return fail(ret_reason, "internal: unknown payload kind");
}

static int check_header(const VuMsg *m, const char **ret_reason) {
        if ((m->hdr.flags & VU_VERSION_MASK) != VU_VERSION)
                return fail(ret_reason, "unsupported protocol version");
        if (m->hdr.flags & ~(VU_VERSION_MASK | VU_FLAG_REPLY | VU_FLAG_NEED_REPLY))
                return fail(ret_reason, "reserved header flag bits set");
        if (m->hdr.size > VU_MAX_PAYLOAD)
                return fail(ret_reason, "payload too large");
        return 0;
}

int vu_msg_check_request(const VuMsg *m, const char **ret_reason) {
        int r = check_header(m, ret_reason);
        if (r < 0)
                return r;
        if (m->hdr.flags & VU_FLAG_REPLY)
                return fail(ret_reason, "a reply where a request was expected");

        const RequestInfo *info = request_lookup(m->hdr.request);
        if (!info)
                return fail(ret_reason, "unknown request");

        unsigned fds = info->fds;
        r = check_payload(m, info->request, &fds, ret_reason);
        if (r < 0)
                return r;

        /* REM_MEM_REG may carry the region's fd (QEMU sends it); it is not needed. */
        if (m->hdr.request == VU_REM_MEM_REG && m->n_fds <= 1)
                return 0;
        if (m->n_fds != fds)
                return fail(ret_reason, m->n_fds > fds ? "more fds than the request carries"
                                                       : "fewer fds than the request carries");
        return 0;
}

int vu_msg_check_reply(const VuMsg *m, uint32_t request, bool ack, const char **ret_reason) {
        int r = check_header(m, ret_reason);
        if (r < 0)
                return r;
        if (!(m->hdr.flags & VU_FLAG_REPLY))
                return fail(ret_reason, "a request where a reply was expected");
        if (m->hdr.request != request)
                return fail(ret_reason, "reply to another request than the one pending");

        const RequestInfo *info = request_lookup(request);
        if (!info)
                return fail(ret_reason, "reply to an unknown request");

        PayloadKind kind = ack ? PAYLOAD_U64 : info->reply;
        unsigned fds = (kind == PAYLOAD_INFLIGHT) ? 1 : 0;
        if (kind == PAYLOAD_NONE)
                return fail(ret_reason, "reply to a request that has none");
        r = check_payload(m, kind, &fds, ret_reason);
        if (r < 0)
                return r;
        if (m->n_fds != fds)
                return fail(ret_reason, "wrong number of fds in reply");
        return 0;
}

int vu_msg_check_backend_request(const VuMsg *m, const char **ret_reason) {
        int r = check_header(m, ret_reason);
        if (r < 0)
                return r;
        if (m->hdr.flags & VU_FLAG_REPLY)
                return fail(ret_reason, "a reply where a request was expected");
        if (m->hdr.request == VU_BACKEND_IOTLB_MSG) {
                /* Relayed whole to the front-end, which answers a MISS with an UPDATE on its
                 * own connection (through the daemon) and logs an ACCESS_FAIL. */
                if (m->hdr.size != sizeof(VuIotlbMsg))
                        return fail(ret_reason, "payload size must be 32 (IOTLB message)");
                if (m->payload.iotlb.type != VU_IOTLB_MISS && m->payload.iotlb.type != VU_IOTLB_ACCESS_FAIL)
                        return fail(ret_reason, "back-end IOTLB message neither a MISS nor an ACCESS_FAIL");
        } else if (m->hdr.request != VU_BACKEND_CONFIG_CHANGE_MSG)
                return fail(ret_reason, "back-end request that needs a feature vhost-recon does not offer");
        else if (m->hdr.size != 0 && m->hdr.size != sizeof(uint64_t))
                return fail(ret_reason, "payload size must be 0");
        if (m->n_fds != 0)
                return fail(ret_reason, "more fds than the request carries");
        return 0;
}

static const char *const feature_names[64] = {
        [0] = "CSUM", [1] = "GUEST_CSUM", [2] = "CTRL_GUEST_OFFLOADS", [3] = "MTU",
        [5] = "MAC", [7] = "GUEST_TSO4", [8] = "GUEST_TSO6", [9] = "GUEST_ECN",
        [10] = "GUEST_UFO", [11] = "HOST_TSO4", [12] = "HOST_TSO6", [13] = "HOST_ECN",
        [14] = "HOST_UFO", [15] = "MRG_RXBUF", [16] = "STATUS", [17] = "CTRL_VQ",
        [18] = "CTRL_RX", [19] = "CTRL_VLAN", [20] = "CTRL_RX_EXTRA", [21] = "GUEST_ANNOUNCE",
        [22] = "MQ", [23] = "CTRL_MAC_ADDR", [24] = "NOTIFY_ON_EMPTY", [26] = "LOG_ALL",
        [27] = "ANY_LAYOUT", [28] = "RING_INDIRECT_DESC", [29] = "RING_EVENT_IDX",
        [30] = "PROTOCOL_FEATURES", [32] = "VERSION_1", [33] = "ACCESS_PLATFORM",
        [34] = "RING_PACKED", [35] = "IN_ORDER", [36] = "ORDER_PLATFORM", [37] = "SR_IOV",
        [38] = "NOTIFICATION_DATA", [39] = "NOTIF_CONFIG_DATA", [40] = "RING_RESET",
};

static const char *const protocol_feature_names[64] = {
        [VU_PF_MQ] = "MQ", [VU_PF_LOG_SHMFD] = "LOG_SHMFD", [VU_PF_RARP] = "RARP",
        [VU_PF_REPLY_ACK] = "REPLY_ACK", [VU_PF_MTU] = "MTU", [VU_PF_BACKEND_REQ] = "BACKEND_REQ",
        [VU_PF_CROSS_ENDIAN] = "CROSS_ENDIAN", [VU_PF_CRYPTO_SESSION] = "CRYPTO_SESSION",
        [VU_PF_PAGEFAULT] = "PAGEFAULT", [VU_PF_CONFIG] = "CONFIG",
        [VU_PF_BACKEND_SEND_FD] = "BACKEND_SEND_FD", [VU_PF_HOST_NOTIFIER] = "HOST_NOTIFIER",
        [VU_PF_INFLIGHT_SHMFD] = "INFLIGHT_SHMFD", [VU_PF_RESET_DEVICE] = "RESET_DEVICE",
        [VU_PF_INBAND_NOTIFICATIONS] = "INBAND_NOTIFICATIONS",
        [VU_PF_CONFIGURE_MEM_SLOTS] = "CONFIGURE_MEM_SLOTS", [VU_PF_STATUS] = "STATUS",
};

const char *vu_feature_to_string(unsigned bit) {
        return bit < 64 ? feature_names[bit] : NULL;
}

const char *vu_protocol_feature_to_string(unsigned bit) {
        return bit < 64 ? protocol_feature_names[bit] : NULL;
}

char *vu_features_to_string(uint64_t features, bool protocol, char *buf, size_t size) {
        size_t n = 0;

        if (size == 0)
                return buf;
        buf[0] = 0;
        for (unsigned b = 0; b < 64; b++) {
                if (!(features & VU_BIT(b)))
                        continue;
                const char *name = protocol ? vu_protocol_feature_to_string(b) : vu_feature_to_string(b);
                int k = name ? snprintf(buf + n, size - n, "%s%s", n ? "," : "", name)
                             : snprintf(buf + n, size - n, "%sbit%u", n ? "," : "", b);
                if (k < 0 || (size_t) k >= size - n)
                        break;
                n += k;
        }
        return buf;
}
