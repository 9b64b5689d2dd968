/* SPDX-License-Identifier: MIT */
#pragma once

/* Small vhost-user peers built on lib/, for integration tests, fault injection and
 * benchmarks: a front-end that sets up a device the way DPDK virtio-user does (with real
 * memfd guest memory and eventfds), and a back-end that answers like DPDK's vhost library
 * and records every message it is sent. Blocking sockets, with timeouts. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vhost-user.h"

#define PEER_TIMEOUT_MS 5000
#define PEER_MAX_RINGS 16

/* Connects to a unix socket, retrying until it exists (up to timeout_ms). */
int peer_connect(const char *path, int timeout_ms);
/* A listening socket at path (a peer that only listens, as qemu-storage-daemon does), and
 * the next connection on it within timeout_ms. */
int peer_listen(const char *path);
int peer_accept(int listen_fd, int timeout_ms);

typedef struct FrontendPeer {
        int fd;
        int memfd;
        uint8_t *mem;
        size_t mem_size;
        uint64_t uaddr;                 /* the front-end's "virtual address" of mem */
        unsigned n_rings;
        unsigned ring_num;
        int kick[PEER_MAX_RINGS], call[PEER_MAX_RINGS];
        uint64_t features, protocol_features;
        uint64_t want_protocol_features;        /* default: MQ, REPLY_ACK, STATUS */
        uint64_t want_features;                 /* setup_while_serving; 0: NET_TEST_FEATURES */
        int inflight_fd;                        /* INFLIGHT_SHMFD: the region the back-end gave */
        int backend_req_fd;                     /* BACKEND_REQ: our end of the channel */
        int backend_req_send;                   /* the end to hand over (-1: made by setup) */
        VuInflight inflight;
} FrontendPeer;

int frontend_peer_open(FrontendPeer *f, const char *path, size_t mem_size);
/* The same, on a connection vhost-recond made to the front-end (client mode). */
int frontend_peer_init_fd(FrontendPeer *f, int fd, size_t mem_size);
void frontend_peer_close(FrontendPeer *f);
/* Sends m; when an answer is due (a GET, or NEED_REPLY), waits for it into *ret. */
int frontend_peer_request(FrontendPeer *f, VuMsg *m, VuMsg *ret);
int frontend_peer_send(FrontendPeer *f, const VuMsg *m);
int frontend_peer_recv(FrontendPeer *f, VuMsg *ret, int timeout_ms);
/* The DPDK virtio-user sequence: owner, features (all offered, masked by want), protocol
 * features (MQ, REPLY_ACK, STATUS where offered), calls, memory table, rings, enable,
 * DRIVER_OK. */
int frontend_peer_setup(FrontendPeer *f, unsigned n_rings, unsigned ring_num, uint64_t want_features);
uint64_t frontend_peer_desc(const FrontendPeer *f, unsigned ring);
uint64_t frontend_peer_avail(const FrontendPeer *f, unsigned ring);
uint64_t frontend_peer_used(const FrontendPeer *f, unsigned ring);
void frontend_peer_set_used_idx(FrontendPeer *f, unsigned ring, uint16_t idx);
/* Reads an eventfd's counter without blocking; 0 when nothing was signalled. */
uint64_t eventfd_drain(int fd);

typedef struct BackendPeer {
        int fd;
        uint64_t features, protocol_features, queue_num;
        uint64_t negotiated_pf;
        VuMsg *log;                     /* every request received, in order (fds closed) */
        size_t n_log, allocated;
        int last_mem_fd;                /* dup of the newest SET_MEM_TABLE's first fd */
        int last_inflight_fd;           /* dup of the newest SET_INFLIGHT_FD's fd */
        int backend_req_fd;             /* the channel SET_BACKEND_REQ_FD gave, to send requests on */
        VuMemRegion last_region;
        uint64_t nack_request;          /* answer a REPLY_ACK with failure for this request */
} BackendPeer;

int backend_peer_open(BackendPeer *b, const char *path, uint64_t features, uint64_t protocol_features);
/* The same, on a connection vhost-recond made to the back-end (client mode). */
void backend_peer_init_fd(BackendPeer *b, int fd, uint64_t features, uint64_t protocol_features);
void backend_peer_close(BackendPeer *b);
/* Reads one request, records it and answers it. Returns the request, 0 on EOF, or -errno. */
int backend_peer_serve_one(BackendPeer *b, int timeout_ms);
/* Serves until a request satisfying (request, u64 value) was served. */
int backend_peer_serve_until(BackendPeer *b, uint32_t request, uint64_t value, int timeout_ms);
/* Waits for EOF from the daemon, serving anything that comes first. 0 when closed. */
int backend_peer_wait_closed(BackendPeer *b, int timeout_ms);
size_t backend_peer_find(const BackendPeer *b, size_t from, uint32_t request);

/* The front-end sets up n_rings rings from a child process (so that this one can be the
 * back-end meanwhile) while be serves, until DRIVER_OK. Fds the front-end needs afterwards
 * (eventfds, a BACKEND_REQ channel) must exist before the call. */
int frontend_peer_setup_while_serving(FrontendPeer *fe, BackendPeer *be, unsigned n_rings);

/* Both peers in one process: the back-end connects and answers the probe, the front-end
 * connects and sets up n_rings rings (from a child process, while the back-end serves),
 * until DRIVER_OK. The front-end's eventfds and memory are the caller's. */
int peers_setup_device(const char *fe_path, const char *be_path, FrontendPeer *fe, BackendPeer *be,
                       unsigned n_rings);

#define NET_TEST_FEATURES (VU_BIT(15) | VU_BIT(28) | VU_BIT(VU_F_PROTOCOL_FEATURES) | VU_BIT(32) | VU_BIT(35))
#define NET_TEST_PROTOCOL_FEATURES (VU_BIT(VU_PF_MQ) | VU_BIT(VU_PF_REPLY_ACK) | VU_BIT(VU_PF_STATUS) | \
                                    VU_BIT(VU_PF_LOG_SHMFD) | VU_BIT(VU_PF_CONFIG) | VU_BIT(VU_PF_INFLIGHT_SHMFD) | \
                                    VU_BIT(VU_PF_CONFIGURE_MEM_SLOTS) | VU_BIT(VU_PF_BACKEND_REQ))
