/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "io.h"
#include "macro.h"
#include "peer.h"

static uint64_t mono_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1000ull + ts.tv_nsec / 1000000;
}

int peer_connect(const char *path, int timeout_ms) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        uint64_t until = mono_ms() + timeout_ms;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        for (;;) {
                int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        return -errno;
                if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0)
                        return fd;
                int r = -errno;
                close(fd);
                if (mono_ms() > until)
                        return r;
                usleep(5000);
        }
}

int peer_listen(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        (void) unlink(path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

int peer_accept(int listen_fd, int timeout_ms) {
        struct pollfd p = { .fd = listen_fd, .events = POLLIN };
        int r = poll(&p, 1, timeout_ms);
        if (r < 0)
                return -errno;
        if (r == 0)
                return -ETIMEDOUT;
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        return fd < 0 ? -errno : fd;
}

static int frontend_peer_prepare(FrontendPeer *f, size_t mem_size) {
        memset(f, 0, sizeof(*f));
        f->inflight_fd = -1;
        f->backend_req_fd = -1;
        f->backend_req_send = -1;
        f->want_protocol_features = VU_BIT(VU_PF_MQ) | VU_BIT(VU_PF_REPLY_ACK) | VU_BIT(VU_PF_STATUS);
        for (unsigned i = 0; i < PEER_MAX_RINGS; i++)
                f->kick[i] = f->call[i] = -1;
        f->memfd = memfd_create("guest-memory", MFD_CLOEXEC);
        if (f->memfd < 0 || ftruncate(f->memfd, mem_size) < 0)
                return -errno;
        f->mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
        if (f->mem == MAP_FAILED)
                return -errno;
        f->mem_size = mem_size;
        f->uaddr = (uint64_t) (uintptr_t) f->mem;
        f->fd = -1;
        return 0;
}

int frontend_peer_open(FrontendPeer *f, const char *path, size_t mem_size) {
        int r = frontend_peer_prepare(f, mem_size);
        if (r < 0)
                return r;
        f->fd = peer_connect(path, PEER_TIMEOUT_MS);
        return f->fd < 0 ? f->fd : 0;
}

int frontend_peer_init_fd(FrontendPeer *f, int fd, size_t mem_size) {
        int r = frontend_peer_prepare(f, mem_size);
        f->fd = fd;
        return r;
}

void frontend_peer_close(FrontendPeer *f) {
        for (unsigned i = 0; i < PEER_MAX_RINGS; i++) {
                f->kick[i] = safe_close(f->kick[i]);
                f->call[i] = safe_close(f->call[i]);
        }
        if (f->mem && f->mem != MAP_FAILED)
                munmap(f->mem, f->mem_size);
        f->mem = NULL;
        f->memfd = safe_close(f->memfd);
        f->inflight_fd = safe_close(f->inflight_fd);
        f->backend_req_fd = safe_close(f->backend_req_fd);
        f->fd = safe_close(f->fd);
}

int frontend_peer_send(FrontendPeer *f, const VuMsg *m) {
        return vu_send_blocking(f->fd, m);
}

int frontend_peer_recv(FrontendPeer *f, VuMsg *ret, int timeout_ms) {
        const char *reason;
        return vu_recv_blocking(f->fd, ret, timeout_ms, &reason);
}

int frontend_peer_request(FrontendPeer *f, VuMsg *m, VuMsg *ret) {
        int r = frontend_peer_send(f, m);
        if (r < 0)
                return r;
        if (!vu_request_has_reply(m->hdr.request) && !vu_msg_needs_reply(m))
                return 0;
        VuMsg tmp;
        VuMsg *reply = ret ? ret : &tmp;
        r = frontend_peer_recv(f, reply, PEER_TIMEOUT_MS);
        if (r < 0)
                return r;
        if (reply->hdr.request != m->hdr.request || !vu_msg_is_reply(reply))
                return -EPROTO;
        if (!ret)
                vu_msg_close_fds(reply);
        if (vu_msg_needs_reply(m) && !vu_request_has_reply(m->hdr.request) && reply->payload.u64 != 0)
                return -EIO;
        return 0;
}

uint64_t frontend_peer_desc(const FrontendPeer *f, unsigned ring) {
        return f->uaddr + 0x10000ull * (ring + 1);
}
uint64_t frontend_peer_avail(const FrontendPeer *f, unsigned ring) {
        return frontend_peer_desc(f, ring) + 16ull * f->ring_num;
}
uint64_t frontend_peer_used(const FrontendPeer *f, unsigned ring) {
        return frontend_peer_desc(f, ring) + 0x8000;
}

void frontend_peer_set_used_idx(FrontendPeer *f, unsigned ring, uint16_t idx) {
        uint16_t *used = (uint16_t *) (f->mem + (frontend_peer_used(f, ring) - f->uaddr));
        __atomic_store_n(&used[1], idx, __ATOMIC_RELEASE);
}

uint64_t eventfd_drain(int fd) {
        uint64_t v = 0;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, 0) == 1 && read(fd, &v, sizeof(v)) != sizeof(v))
                v = 0;
        return v;
}

static int request_u64(FrontendPeer *f, VuRequest req, uint64_t *ret) {
        VuMsg m, reply;
        vu_msg_init(&m, req, 0);
        int r = frontend_peer_request(f, &m, &reply);
        if (r >= 0)
                *ret = reply.payload.u64;
        return r;
}

static int set_u64(FrontendPeer *f, VuRequest req, uint64_t v, bool ack) {
        VuMsg m;
        vu_msg_init_u64(&m, req, v);
        if (ack)
                m.hdr.flags |= VU_FLAG_NEED_REPLY;
        return frontend_peer_request(f, &m, NULL);
}

static int set_state(FrontendPeer *f, VuRequest req, uint32_t index, uint32_t num) {
        VuMsg m;
        vu_msg_init_state(&m, req, index, num);
        return frontend_peer_request(f, &m, NULL);
}

static int set_file(FrontendPeer *f, VuRequest req, unsigned index, int fd) {
        VuMsg m;
        vu_msg_init_u64(&m, req, index);
        m.fds[0] = fd;
        m.n_fds = 1;
        return frontend_peer_send(f, &m);
}

int frontend_peer_setup(FrontendPeer *f, unsigned n_rings, unsigned ring_num, uint64_t want_features) {
        uint64_t features, pf = 0;
        bool ack;
        VuMsg m;
        int r;

        if (n_rings > PEER_MAX_RINGS || 0x10000ull * (n_rings + 1) > f->mem_size)
                return -EINVAL;
        f->n_rings = n_rings;
        f->ring_num = ring_num;

        vu_msg_init(&m, VU_SET_OWNER, 0);
        if ((r = frontend_peer_request(f, &m, NULL)) < 0)
                return r;
        if ((r = request_u64(f, VU_GET_FEATURES, &features)) < 0)
                return r;
        if (features & VU_BIT(VU_F_PROTOCOL_FEATURES)) {
                if ((r = request_u64(f, VU_GET_PROTOCOL_FEATURES, &pf)) < 0)
                        return r;
                pf &= f->want_protocol_features;
                if ((r = set_u64(f, VU_SET_PROTOCOL_FEATURES, pf, false)) < 0)
                        return r;
        }
        f->protocol_features = pf;
        ack = pf & VU_BIT(VU_PF_REPLY_ACK);
        for (unsigned i = 0; i < n_rings; i++) {
                if (f->kick[i] < 0)
                        f->kick[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                if (f->call[i] < 0)
                        f->call[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                if ((r = set_file(f, VU_SET_VRING_CALL, i, f->call[i])) < 0)
                        return r;
        }
        f->features = features & want_features;
        if ((r = set_u64(f, VU_SET_FEATURES, f->features, false)) < 0)
                return r;
        if (pf & VU_BIT(VU_PF_STATUS) &&
            (r = set_u64(f, VU_SET_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                                           VIRTIO_STATUS_FEATURES_OK, ack)) < 0)
                return r;

        if (pf & VU_BIT(VU_PF_BACKEND_REQ)) {
                /* As QEMU: a socketpair, one end for the back-end's requests. */
                int pair[2] = { f->backend_req_fd, f->backend_req_send };
                if (pair[1] < 0 && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0)
                        return -errno;
                f->backend_req_send = -1;
                vu_msg_init(&m, VU_SET_BACKEND_REQ_FD, ack ? VU_FLAG_NEED_REPLY : 0);
                m.fds[0] = pair[1];
                m.n_fds = 1;
                r = frontend_peer_request(f, &m, NULL);
                close(pair[1]);
                if (r < 0) {
                        close(pair[0]);
                        return r;
                }
                f->backend_req_fd = pair[0];
        }
        if (pf & VU_BIT(VU_PF_INFLIGHT_SHMFD)) {
                /* As QEMU's vhost-user-blk: the back-end allocates, the front-end hands it back. */
                VuMsg reply;
                vu_msg_init(&m, VU_GET_INFLIGHT_FD, 0);
                m.hdr.size = VU_INFLIGHT_WIRE_SIZE;
                m.payload.inflight = (VuInflight) { .num_queues = n_rings, .queue_size = ring_num };
                if ((r = frontend_peer_request(f, &m, &reply)) < 0)
                        return r;
                f->inflight = reply.payload.inflight;
                f->inflight_fd = reply.fds[0];
                vu_msg_init(&m, VU_SET_INFLIGHT_FD, ack ? VU_FLAG_NEED_REPLY : 0);
                m.hdr.size = VU_INFLIGHT_WIRE_SIZE;
                m.payload.inflight = f->inflight;
                m.fds[0] = f->inflight_fd;
                m.n_fds = 1;
                if ((r = frontend_peer_request(f, &m, NULL)) < 0)
                        return r;
        }

        if (pf & VU_BIT(VU_PF_CONFIGURE_MEM_SLOTS)) {
                /* As QEMU does with CONFIGURE_MEM_SLOTS: slots, then each region on its own
                 * (two halves here, so that there is more than one). */
                uint64_t slots;
                if ((r = request_u64(f, VU_GET_MAX_MEM_SLOTS, &slots)) < 0)
                        return r;
                if (slots < 2)
                        return -ENOSPC;
                for (unsigned i = 0; i < 2; i++) {
                        uint64_t half = f->mem_size / 2;
                        vu_msg_init(&m, VU_ADD_MEM_REG, ack ? VU_FLAG_NEED_REPLY : 0);
                        m.hdr.size = sizeof(VuMemRegionMsg);
                        m.payload.mem_reg.region = (VuMemRegion) { .guest_phys_addr = i * half, .memory_size = half,
                                                                   .userspace_addr = f->uaddr + i * half,
                                                                   .mmap_offset = i * half };
                        m.fds[0] = f->memfd;
                        m.n_fds = 1;
                        if ((r = frontend_peer_request(f, &m, NULL)) < 0)
                                return r;
                }
        } else {
                vu_msg_init(&m, VU_SET_MEM_TABLE, ack ? VU_FLAG_NEED_REPLY : 0);
                m.payload.memory.nregions = 1;
                m.payload.memory.regions[0] = (VuMemRegion) { .guest_phys_addr = 0, .memory_size = f->mem_size,
                                                              .userspace_addr = f->uaddr, .mmap_offset = 0 };
                m.hdr.size = 8 + sizeof(VuMemRegion);
                m.fds[0] = f->memfd;
                m.n_fds = 1;
                if ((r = frontend_peer_request(f, &m, NULL)) < 0)
                        return r;
        }

        for (unsigned i = 0; i < n_rings; i++) {
                if ((r = set_state(f, VU_SET_VRING_NUM, i, ring_num)) < 0 ||
                    (r = set_state(f, VU_SET_VRING_BASE, i, 0)) < 0)
                        return r;
                vu_msg_init(&m, VU_SET_VRING_ADDR, 0);
                m.hdr.size = sizeof(VuVringAddr);
                m.payload.addr = (VuVringAddr) { .index = i, .desc_user_addr = frontend_peer_desc(f, i),
                                                 .avail_user_addr = frontend_peer_avail(f, i),
                                                 .used_user_addr = frontend_peer_used(f, i) };
                if ((r = frontend_peer_request(f, &m, NULL)) < 0)
                        return r;
                if ((r = set_file(f, VU_SET_VRING_KICK, i, f->kick[i])) < 0)
                        return r;
        }
        if (features & VU_BIT(VU_F_PROTOCOL_FEATURES))
                for (unsigned i = 0; i < n_rings; i++)
                        if ((r = set_state(f, VU_SET_VRING_ENABLE, i, 1)) < 0)
                                return r;
        if (pf & VU_BIT(VU_PF_STATUS) && (r = set_u64(f, VU_SET_STATUS, 0xf, ack)) < 0)
                return r;
        return 0;
}

void backend_peer_init_fd(BackendPeer *b, int fd, uint64_t features, uint64_t protocol_features) {
        memset(b, 0, sizeof(*b));
        b->features = features;
        b->protocol_features = protocol_features;
        b->queue_num = 8;
        b->last_mem_fd = -1;
        b->last_inflight_fd = -1;
        b->backend_req_fd = -1;
        b->fd = fd;
}

int backend_peer_open(BackendPeer *b, const char *path, uint64_t features, uint64_t protocol_features) {
        backend_peer_init_fd(b, peer_connect(path, PEER_TIMEOUT_MS), features, protocol_features);
        return b->fd < 0 ? b->fd : 0;
}

void backend_peer_close(BackendPeer *b) {
        b->fd = safe_close(b->fd);
        b->last_mem_fd = safe_close(b->last_mem_fd);
        b->last_inflight_fd = safe_close(b->last_inflight_fd);
        b->backend_req_fd = safe_close(b->backend_req_fd);
        free(b->log);
        b->log = NULL;
        b->n_log = b->allocated = 0;
}

static int answer(BackendPeer *b, const VuMsg *req, uint64_t value) {
        VuMsg r;
        vu_msg_init_u64(&r, req->hdr.request, value);
        r.hdr.flags |= VU_FLAG_REPLY;
        return vu_send_blocking(b->fd, &r);
}

int backend_peer_serve_one(BackendPeer *b, int timeout_ms) {
        const char *reason = NULL;
        VuMsg m;
        int r;

        r = vu_recv_blocking(b->fd, &m, timeout_ms, &reason);
        if (r == -ECONNRESET)
                return 0;
        if (r < 0)
                return r;
        if (vu_msg_check_request(&m, &reason) < 0) {
                vu_msg_close_fds(&m);
                return -EBADMSG;
        }

        switch (m.hdr.request) {
        case VU_GET_FEATURES:
                r = answer(b, &m, b->features);
                break;
        case VU_GET_PROTOCOL_FEATURES:
                r = answer(b, &m, b->protocol_features);
                break;
        case VU_GET_QUEUE_NUM:
                r = answer(b, &m, b->queue_num);
                break;
        case VU_GET_STATUS:
                r = answer(b, &m, 0xf);
                break;
        case VU_GET_MAX_MEM_SLOTS:
                r = answer(b, &m, 32);
                break;
        case VU_ADD_MEM_REG:
                if (b->last_mem_fd < 0)
                        b->last_mem_fd = fcntl(m.fds[0], F_DUPFD_CLOEXEC, 3);
                break;
        case VU_SET_PROTOCOL_FEATURES:
                b->negotiated_pf = m.payload.u64;
                break;
        case VU_GET_VRING_BASE: {
                VuMsg a;
                vu_msg_init_state(&a, VU_GET_VRING_BASE, m.payload.state.index, 1000 + m.payload.state.index);
                a.hdr.flags |= VU_FLAG_REPLY;
                r = vu_send_blocking(b->fd, &a);
                break;
        }
        case VU_GET_INFLIGHT_FD: {
                /* libvhost-user's layout is the back-end's business; any region will do here */
                VuMsg a;
                int fd = memfd_create("inflight", MFD_CLOEXEC);
                size_t size = 4096 * (size_t) (m.payload.inflight.num_queues ? m.payload.inflight.num_queues : 1);
                if (fd < 0 || ftruncate(fd, size) < 0) {
                        r = -errno;
                        safe_close(fd);
                        break;
                }
                vu_msg_init(&a, VU_GET_INFLIGHT_FD, VU_FLAG_REPLY);
                a.hdr.size = VU_INFLIGHT_WIRE_SIZE;
                a.payload.inflight = (VuInflight) { .mmap_size = size, .mmap_offset = 0,
                                                    .num_queues = m.payload.inflight.num_queues,
                                                    .queue_size = m.payload.inflight.queue_size };
                a.fds[0] = fd;
                a.n_fds = 1;
                r = vu_send_blocking(b->fd, &a);
                close(fd);
                break;
        }
        case VU_SET_BACKEND_REQ_FD:
                safe_close(b->backend_req_fd);
                b->backend_req_fd = fcntl(m.fds[0], F_DUPFD_CLOEXEC, 3);
                break;
        case VU_SET_INFLIGHT_FD:
                safe_close(b->last_inflight_fd);
                b->last_inflight_fd = m.n_fds ? fcntl(m.fds[0], F_DUPFD_CLOEXEC, 3) : -1;
                break;
        case VU_SET_LOG_BASE: {
                /* as DPDK answers it: an empty reply */
                VuMsg a;
                vu_msg_init(&a, VU_SET_LOG_BASE, VU_FLAG_REPLY);
                r = vu_send_blocking(b->fd, &a);
                break;
        }
        case VU_SET_MEM_TABLE:
                safe_close(b->last_mem_fd);
                b->last_mem_fd = m.n_fds ? fcntl(m.fds[0], F_DUPFD_CLOEXEC, 3) : -1;
                b->last_region = m.payload.memory.regions[0];
                break;
        default:
                break;
        }
        if (r >= 0 && vu_msg_needs_reply(&m) && !vu_request_has_reply(m.hdr.request) &&
            (b->negotiated_pf & VU_BIT(VU_PF_REPLY_ACK)))
                r = answer(b, &m, b->nack_request == m.hdr.request ? 1 : 0);

        if (b->n_log == b->allocated) {
                size_t n = b->allocated ? b->allocated * 2 : 64;
                VuMsg *l = realloc(b->log, n * sizeof(VuMsg));
                if (!l) {
                        vu_msg_close_fds(&m);
                        return -ENOMEM;
                }
                b->log = l;
                b->allocated = n;
        }
        unsigned n_fds = m.n_fds;
        vu_msg_close_fds(&m);
        m.n_fds = n_fds;        /* remembered as a count */
        b->log[b->n_log++] = m;
        return r < 0 ? r : (int) m.hdr.request;
}

int backend_peer_serve_until(BackendPeer *b, uint32_t request, uint64_t value, int timeout_ms) {
        uint64_t until = mono_ms() + timeout_ms;
        for (;;) {
                int left = (int) (until - mono_ms());
                if (left <= 0)
                        return -ETIMEDOUT;
                int r = backend_peer_serve_one(b, left);
                if (r <= 0)
                        return r == 0 ? -ECONNRESET : r;
                const VuMsg *m = &b->log[b->n_log - 1];
                if ((uint32_t) r == request && (value == UINT64_MAX || m->payload.u64 == value))
                        return 0;
        }
}

int backend_peer_wait_closed(BackendPeer *b, int timeout_ms) {
        uint64_t until = mono_ms() + timeout_ms;
        for (;;) {
                int left = (int) (until - mono_ms());
                if (left <= 0)
                        return -ETIMEDOUT;
                int r = backend_peer_serve_one(b, left);
                if (r == 0 || r == -ECONNRESET || r == -EPIPE)
                        return 0;
                if (r < 0)
                        return r;
        }
}

size_t backend_peer_find(const BackendPeer *b, size_t from, uint32_t request) {
        for (size_t i = from; i < b->n_log; i++)
                if (b->log[i].hdr.request == request)
                        return i;
        return SIZE_MAX;
}

int peers_setup_device(const char *fe_path, const char *be_path, FrontendPeer *fe, BackendPeer *be,
                       unsigned n_rings) {
        int r;

        r = backend_peer_open(be, be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES);
        if (r < 0)
                return r;
        r = backend_peer_serve_until(be, VU_GET_PROTOCOL_FEATURES, UINT64_MAX, PEER_TIMEOUT_MS);
        if (r < 0)
                return r;
        r = frontend_peer_open(fe, fe_path, 1u << 20);
        if (r < 0)
                return r;
        return frontend_peer_setup_while_serving(fe, be, n_rings);
}

int frontend_peer_setup_while_serving(FrontendPeer *fe, BackendPeer *be, unsigned n_rings) {
        int r, status;

        for (unsigned i = 0; i < n_rings; i++) {
                if (fe->kick[i] < 0)
                        fe->kick[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                if (fe->call[i] < 0)
                        fe->call[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        }
        pid_t child = fork();
        if (child < 0)
                return -errno;
        if (child == 0)
                _exit(frontend_peer_setup(fe, n_rings, 256, fe->want_features ? fe->want_features : NET_TEST_FEATURES) < 0 ? 1 : 0);
        if (fe->backend_req_send >= 0)          /* the child hands it over */
                fe->backend_req_send = safe_close(fe->backend_req_send);
        r = backend_peer_serve_until(be, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS);
        if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
                return r < 0 ? r : -EPROTO;
        /* what the child negotiated, for the caller's records */
        fe->n_rings = n_rings;
        fe->ring_num = 256;
        fe->features = NET_TEST_FEATURES;
        fe->protocol_features = be->negotiated_pf & fe->want_protocol_features;
        return r;
}
