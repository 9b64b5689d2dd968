/* SPDX-License-Identifier: MIT */
#pragma once

/* The vhost-user wire protocol (QEMU docs/interop/vhost-user.rst): message layout, request
 * and feature numbers, and validation of every request and reply. No I/O here. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum VuRequest {
        VU_REQ_NONE = 0,
        VU_GET_FEATURES = 1,
        VU_SET_FEATURES = 2,
        VU_SET_OWNER = 3,
        VU_RESET_OWNER = 4,
        VU_SET_MEM_TABLE = 5,
        VU_SET_LOG_BASE = 6,
        VU_SET_LOG_FD = 7,
        VU_SET_VRING_NUM = 8,
        VU_SET_VRING_ADDR = 9,
        VU_SET_VRING_BASE = 10,
        VU_GET_VRING_BASE = 11,
        VU_SET_VRING_KICK = 12,
        VU_SET_VRING_CALL = 13,
        VU_SET_VRING_ERR = 14,
        VU_GET_PROTOCOL_FEATURES = 15,
        VU_SET_PROTOCOL_FEATURES = 16,
        VU_GET_QUEUE_NUM = 17,
        VU_SET_VRING_ENABLE = 18,
        VU_SEND_RARP = 19,
        VU_NET_SET_MTU = 20,
        VU_SET_BACKEND_REQ_FD = 21,
        VU_IOTLB_MSG = 22,
        VU_SET_VRING_ENDIAN = 23,
        VU_GET_CONFIG = 24,
        VU_SET_CONFIG = 25,
        VU_CREATE_CRYPTO_SESSION = 26,
        VU_CLOSE_CRYPTO_SESSION = 27,
        VU_POSTCOPY_ADVISE = 28,
        VU_POSTCOPY_LISTEN = 29,
        VU_POSTCOPY_END = 30,
        VU_GET_INFLIGHT_FD = 31,
        VU_SET_INFLIGHT_FD = 32,
        VU_GPU_SET_SOCKET = 33,
        VU_RESET_DEVICE = 34,
        VU_VRING_KICK = 35,
        VU_GET_MAX_MEM_SLOTS = 36,
        VU_ADD_MEM_REG = 37,
        VU_REM_MEM_REG = 38,
        VU_SET_STATUS = 39,
        VU_GET_STATUS = 40,
        _VU_REQUEST_MAX,
        _VU_REQUEST_INVALID = -22,
} VuRequest;

/* Requests a back-end sends on its BACKEND_REQ channel. */
typedef enum VuBackendRequest {
        VU_BACKEND_IOTLB_MSG = 1,
        VU_BACKEND_CONFIG_CHANGE_MSG = 2,
        VU_BACKEND_VRING_HOST_NOTIFIER_MSG = 3,
        VU_BACKEND_VRING_CALL = 4,
        VU_BACKEND_VRING_ERR = 5,
        _VU_BACKEND_REQUEST_MAX,
        _VU_BACKEND_REQUEST_INVALID = -22,
} VuBackendRequest;

/* Header flags. */
#define VU_VERSION              0x1u
#define VU_VERSION_MASK         0x3u
#define VU_FLAG_REPLY           0x4u
#define VU_FLAG_NEED_REPLY      0x8u

/* Virtio and vhost feature bits that the daemon itself has to know about. */
#define VU_F_LOG_ALL                    26
#define VU_F_PROTOCOL_FEATURES          30
#define VIRTIO_F_VERSION_1              32
#define VIRTIO_F_ACCESS_PLATFORM        33
#define VIRTIO_F_RING_PACKED            34
#define VIRTIO_F_IN_ORDER               35

/* Protocol feature bits. */
#define VU_PF_MQ                        0
#define VU_PF_LOG_SHMFD                 1
#define VU_PF_RARP                      2
#define VU_PF_REPLY_ACK                 3
#define VU_PF_MTU                       4
#define VU_PF_BACKEND_REQ               5
#define VU_PF_CROSS_ENDIAN              6
#define VU_PF_CRYPTO_SESSION            7
#define VU_PF_PAGEFAULT                 8
#define VU_PF_CONFIG                    9
#define VU_PF_BACKEND_SEND_FD           10
#define VU_PF_HOST_NOTIFIER             11
#define VU_PF_INFLIGHT_SHMFD            12
#define VU_PF_RESET_DEVICE              13
#define VU_PF_INBAND_NOTIFICATIONS      14
#define VU_PF_CONFIGURE_MEM_SLOTS       15
#define VU_PF_STATUS                    16

#define VU_BIT(b) (UINT64_C(1) << (b))

#define VU_HDR_SIZE             12u
#define VU_MAX_PAYLOAD          512u
#define VU_MAX_FDS              8u
#define VU_MAX_MEM_REGIONS      8u
#define VU_MAX_CONFIG_SIZE      256u
#define VU_MAX_VRINGS           256u    /* KICK/CALL/ERR carry the index in 8 bits */
#define VU_MAX_VRING_SIZE       32768u
#define VU_VRING_IDX_MASK       0xffu
#define VU_VRING_NOFD           0x100u

/* Virtio device status bits. */
#define VIRTIO_STATUS_ACKNOWLEDGE       0x01
#define VIRTIO_STATUS_DRIVER            0x02
#define VIRTIO_STATUS_DRIVER_OK         0x04
#define VIRTIO_STATUS_FEATURES_OK       0x08
#define VIRTIO_STATUS_NEEDS_RESET       0x40
#define VIRTIO_STATUS_FAILED            0x80

typedef struct VuHeader {
        uint32_t request;
        uint32_t flags;
        uint32_t size;
} VuHeader;

typedef struct VuVringState {
        uint32_t index;
        uint32_t num;
} VuVringState;

typedef struct VuVringAddr {
        uint32_t index;
        uint32_t flags;
        uint64_t desc_user_addr;
        uint64_t used_user_addr;
        uint64_t avail_user_addr;
        uint64_t log_guest_addr;
} VuVringAddr;

typedef struct VuMemRegion {
        uint64_t guest_phys_addr;
        uint64_t memory_size;
        uint64_t userspace_addr;
        uint64_t mmap_offset;
} VuMemRegion;

typedef struct VuMemTable {
        uint32_t nregions;
        uint32_t padding;
        VuMemRegion regions[VU_MAX_MEM_REGIONS];
} VuMemTable;

typedef struct VuMemRegionMsg {
        uint64_t padding;
        VuMemRegion region;
} VuMemRegionMsg;

typedef struct VuLog {
        uint64_t mmap_size;
        uint64_t mmap_offset;
} VuLog;

typedef struct VuInflight {
        uint64_t mmap_size;
        uint64_t mmap_offset;
        uint16_t num_queues;
        uint16_t queue_size;
} VuInflight;

typedef struct VuConfig {
        uint32_t offset;
        uint32_t size;
        uint32_t flags;
        uint8_t region[VU_MAX_CONFIG_SIZE];
} VuConfig;

/* IOTLB_MSG and BACKEND_IOTLB_MSG (struct vhost_iotlb_msg; 32 bytes with its padding). */
typedef struct VuIotlbMsg {
        uint64_t iova;
        uint64_t size;
        uint64_t uaddr;
        uint8_t perm;
        uint8_t type;
} VuIotlbMsg;

#define VU_IOTLB_MISS           1
#define VU_IOTLB_UPDATE         2
#define VU_IOTLB_INVALIDATE     3
#define VU_IOTLB_ACCESS_FAIL    4
#define VU_ACCESS_RO            1
#define VU_ACCESS_WO            2
#define VU_ACCESS_RW            3

#define VU_CONFIG_HDR_SIZE      12u
#define VU_INFLIGHT_WIRE_SIZE   ((uint32_t) sizeof(VuInflight))

/* One message. The header and the payload are kept apart (and sent as two iovecs) so that
 * the payload's 64-bit fields stay aligned. fds are owned by the message. */
typedef struct VuMsg {
        VuHeader hdr;
        union {
                uint64_t u64;
                VuVringState state;
                VuVringAddr addr;
                VuMemTable memory;
                VuMemRegionMsg mem_reg;
                VuLog log;
                VuInflight inflight;
                VuConfig config;
                VuIotlbMsg iotlb;
                uint8_t raw[VU_MAX_PAYLOAD];
        } payload;
        int fds[VU_MAX_FDS];
        unsigned n_fds;
} VuMsg;

void vu_msg_init(VuMsg *m, VuRequest request, uint32_t flags);
void vu_msg_init_u64(VuMsg *m, VuRequest request, uint64_t value);
void vu_msg_init_state(VuMsg *m, VuRequest request, uint32_t index, uint32_t num);
/* Adds a copy (dup, O_CLOEXEC) of fd to the message. */
int vu_msg_add_fd_dup(VuMsg *m, int fd);
void vu_msg_close_fds(VuMsg *m);
/* A deep copy: fds are duplicated. */
int vu_msg_copy(VuMsg *dst, const VuMsg *src);

static inline bool vu_msg_is_reply(const VuMsg *m) {
        return m->hdr.flags & VU_FLAG_REPLY;
}
static inline bool vu_msg_needs_reply(const VuMsg *m) {
        return m->hdr.flags & VU_FLAG_NEED_REPLY;
}

const char *vu_request_to_string(uint32_t request);
/* True when the request always gets an answer (GET_* and friends, and SET_LOG_BASE, which
 * is only taken with LOG_SHMFD), regardless of REPLY_ACK. */
bool vu_request_has_reply(uint32_t request);
/* True when the request names a vring in its payload; *ret_index gets it. */
bool vu_msg_vring_index(const VuMsg *m, uint32_t *ret_index);

/* Validate a request as a back-end receives it: header flags, known request, payload size,
 * fd count, vring index range. Returns 0 or -EBADMSG with a static reason. */
int vu_msg_check_request(const VuMsg *m, const char **ret_reason);

/* Validate a back-end's reply to `request`: REPLY flag, matching request, payload size and
 * fds. `ack` says the reply is a REPLY_ACK (u64) rather than the request's own answer. */
int vu_msg_check_reply(const VuMsg *m, uint32_t request, bool ack, const char **ret_reason);

/* Validate a request a back-end sends on its channel: CONFIG_CHANGE_MSG, or an IOTLB_MSG
 * (a MISS or an ACCESS_FAIL); the others need features vhost-recon never offers. */
int vu_msg_check_backend_request(const VuMsg *m, const char **ret_reason);

const char *vu_feature_to_string(unsigned bit);
const char *vu_protocol_feature_to_string(unsigned bit);
/* "MQ,REPLY_ACK,bit20" style list of the set bits; returns buf. */
char *vu_features_to_string(uint64_t features, bool protocol, char *buf, size_t size);
