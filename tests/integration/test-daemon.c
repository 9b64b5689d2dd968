/* SPDX-License-Identifier: MIT */
/* vhost-recond against the project's C peers: the replay matches the shadow message by
 * message, front-end requests during a replay go out after it in order, an incompatible
 * back-end is refused while the front-end stays, a leaving front-end closes the back-end,
 * answers from the shadow while no back-end is there, a stuck back-end is dropped. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "control-client.h"
#include "daemon-harness.h"
#include "io.h"
#include "macro.h"
#include "peer.h"
#include "tests.h"

#define MEM (1u << 20)

typedef struct Port0 {
        Daemon d;
        char fe_path[128], be_path[128];
        FrontendPeer fe;
        BackendPeer be;
} Port0;

/* A daemon with a front-end set up through back-end A (still connected). */
static void start_with_device(Port0 *p, const char *extra) {
        daemon_start(&p->d, 2, extra);
        daemon_path(&p->d, 0, false, p->fe_path, sizeof(p->fe_path));
        daemon_path(&p->d, 0, true, p->be_path, sizeof(p->be_path));
        ASSERT_EQ(peers_setup_device(p->fe_path, p->be_path, &p->fe, &p->be, 2), 0);
}

static void finish(Port0 *p) {
        frontend_peer_close(&p->fe);
        backend_peer_close(&p->be);
        ASSERT_EQ(daemon_stop(&p->d), 0);
}

static void expect_at(const BackendPeer *b, size_t i, uint32_t request) {
        ASSERT(i < b->n_log);
        if (b->log[i].hdr.request != request)
                fprintf(stderr, "message %zu is %s, expected %s\n", i, vu_request_to_string(b->log[i].hdr.request),
                        vu_request_to_string(request));
        ASSERT_EQ(b->log[i].hdr.request, request);
}

static void test_replay_matches_shadow(void) {
        Port0 p;
        BackendPeer b;

        start_with_device(&p, NULL);
        /* back-end A moved the rings on, then crashed */
        frontend_peer_set_used_idx(&p.fe, 0, 100);
        frontend_peer_set_used_idx(&p.fe, 1, 200);
        backend_peer_close(&p.be);
        ASSERT(daemon_log_wait(&p.d, "port0: link down", 2000));

        ASSERT_EQ(backend_peer_open(&b, p.be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&b, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
        ASSERT(daemon_log_wait(&p.d, "port0: replay done in", 2000));
        ASSERT(daemon_log_wait(&p.d, "port0: link up", 2000));

        static const uint32_t expected[] = {
                VU_SET_OWNER, VU_GET_FEATURES, VU_GET_PROTOCOL_FEATURES,
                VU_SET_PROTOCOL_FEATURES, VU_GET_QUEUE_NUM, VU_SET_FEATURES, VU_SET_MEM_TABLE,
                VU_SET_VRING_NUM, VU_SET_VRING_BASE, VU_SET_VRING_ADDR, VU_SET_VRING_CALL, VU_SET_VRING_KICK,
                VU_SET_VRING_NUM, VU_SET_VRING_BASE, VU_SET_VRING_ADDR, VU_SET_VRING_CALL, VU_SET_VRING_KICK,
                VU_SET_VRING_ENABLE, VU_SET_VRING_ENABLE, VU_SET_STATUS,
        };
        ASSERT_EQ(b.n_log, ELEMENTSOF(expected));
        for (size_t i = 0; i < ELEMENTSOF(expected); i++)
                expect_at(&b, i, expected[i]);
        const VuMsg *l = b.log;
        ASSERT_EQ(b.negotiated_pf, p.fe.protocol_features);
        ASSERT_EQ(l[5].payload.u64, NET_TEST_FEATURES);
        ASSERT_EQ(l[6].n_fds, 1);
        ASSERT_EQ(l[6].payload.memory.regions[0].userspace_addr, p.fe.uaddr);
        ASSERT_EQ(l[7].payload.state.num, 256);
        ASSERT_EQ(l[8].payload.state.num, 100);         /* resumed at used->idx */
        ASSERT_EQ(l[13].payload.state.num, 200);
        ASSERT_EQ(l[9].payload.addr.used_user_addr, frontend_peer_used(&p.fe, 0));
        ASSERT_EQ(l[14].payload.addr.desc_user_addr, frontend_peer_desc(&p.fe, 1));
        ASSERT_EQ(l[10].n_fds, 1);
        ASSERT_EQ(l[11].n_fds, 1);
        ASSERT_EQ(l[17].payload.state.num, 1);
        ASSERT_EQ(l[19].payload.u64, 0xf);
        for (size_t i = 3; i < b.n_log; i++)     /* every replayed request asked for an ack */
                if (l[i].hdr.request != VU_SET_PROTOCOL_FEATURES && !vu_request_has_reply(l[i].hdr.request))
                        ASSERT(vu_msg_needs_reply(&l[i]));

        /* the memory handed on is the front-end's own: B sees the used index it wrote */
        uint8_t *mem = mmap(NULL, MEM, PROT_READ, MAP_SHARED, b.last_mem_fd, 0);
        ASSERT(mem != MAP_FAILED);
        ASSERT_EQ(((uint16_t *) (mem + (frontend_peer_used(&p.fe, 0) - p.fe.uaddr)))[1], 100);
        munmap(mem, MEM);

        /* the front-end never noticed: its connection answers as before */
        VuMsg m, r;
        vu_msg_init(&m, VU_GET_STATUS, 0);
        pid_t child = fork();
        if (child == 0)
                _exit(frontend_peer_request(&p.fe, &m, &r) == 0 && r.payload.u64 == 0xf ? 0 : 1);
        ASSERT_EQ(backend_peer_serve_until(&b, VU_GET_STATUS, UINT64_MAX, PEER_TIMEOUT_MS), 0);
        int status;
        ASSERT(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);

        backend_peer_close(&b);
        finish(&p);
}

/* The rings are kicked and the call fds signalled once after the replay. */
static void test_replay_kicks_rings(void) {
        Daemon d;
        char fe_path[128], be_path[128];
        FrontendPeer fe;
        BackendPeer b;

        daemon_start(&d, 1, NULL);
        daemon_path(&d, 0, false, fe_path, sizeof(fe_path));
        daemon_path(&d, 0, true, be_path, sizeof(be_path));
        /* no back-end seen yet: the front-end's GET_FEATURES waits for the first one */
        ASSERT_EQ(frontend_peer_open(&fe, fe_path, MEM), 0);
        pid_t child = fork();
        if (child == 0) {
                BackendPeer x;
                if (backend_peer_open(&x, be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES) < 0)
                        _exit(1);
                _exit(backend_peer_serve_until(&x, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS) == 0 ? 0 : 2);
        }
        ASSERT_EQ(frontend_peer_setup(&fe, 2, 256, NET_TEST_FEATURES), 0);
        int status;
        ASSERT(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
        ASSERT(daemon_log_wait(&d, "back-end disconnected", 2000));

        for (unsigned i = 0; i < 2; i++) {
                (void) eventfd_drain(fe.kick[i]);
                (void) eventfd_drain(fe.call[i]);
        }
        ASSERT_EQ(backend_peer_open(&b, be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&b, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
        ASSERT(daemon_log_wait(&d, "2 rings kicked", 2000));
        for (unsigned i = 0; i < 2; i++) {
                ASSERT_EQ(eventfd_drain(fe.kick[i]), 1);
                ASSERT_EQ(eventfd_drain(fe.call[i]), 1);
        }
        backend_peer_close(&b);
        frontend_peer_close(&fe);
        ASSERT_EQ(daemon_stop(&d), 0);
}

/* Front-end requests that come while the replay is in flight go out after it, in order. */
static void test_requests_during_replay_keep_order(void) {
        Port0 p;
        BackendPeer b;
        VuMsg m;

        start_with_device(&p, NULL);
        backend_peer_close(&p.be);
        ASSERT(daemon_log_wait(&p.d, "port0: link down", 2000));

        ASSERT_EQ(backend_peer_open(&b, p.be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        /* answer the probe, then hold the replay's acks */
        ASSERT_EQ(backend_peer_serve_until(&b, VU_GET_PROTOCOL_FEATURES, UINT64_MAX, PEER_TIMEOUT_MS), 0);
        ASSERT(daemon_log_wait(&p.d, "vring 1: started", 2000));

        int new_call = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        vu_msg_init_u64(&m, VU_SET_VRING_CALL, 0);
        m.fds[0] = new_call;
        m.n_fds = 1;
        ASSERT_EQ(frontend_peer_send(&p.fe, &m), 0);
        vu_msg_init_state(&m, VU_SET_VRING_ENABLE, 1, 0);
        ASSERT_EQ(frontend_peer_send(&p.fe, &m), 0);
        vu_msg_init_state(&m, VU_GET_VRING_BASE, 1, 0);
        ASSERT_EQ(frontend_peer_send(&p.fe, &m), 0);
        usleep(100000);         /* the daemon has them before the back-end acks anything */

        ASSERT_EQ(backend_peer_serve_until(&b, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
        size_t end = b.n_log;
        ASSERT_EQ(backend_peer_serve_until(&b, VU_GET_VRING_BASE, UINT64_MAX, PEER_TIMEOUT_MS), 0);
        ASSERT_EQ(b.n_log, end + 3);
        expect_at(&b, end, VU_SET_VRING_CALL);
        ASSERT_EQ(b.log[end].payload.u64, 0);
        ASSERT_EQ(b.log[end].n_fds, 1);
        expect_at(&b, end + 1, VU_SET_VRING_ENABLE);
        ASSERT_EQ(b.log[end + 1].payload.state.index, 1);
        ASSERT_EQ(b.log[end + 1].payload.state.num, 0);
        expect_at(&b, end + 2, VU_GET_VRING_BASE);

        /* and the back-end's answer reaches the front-end */
        VuMsg r;
        ASSERT_EQ(frontend_peer_recv(&p.fe, &r, PEER_TIMEOUT_MS), 0);
        ASSERT_EQ(r.hdr.request, VU_GET_VRING_BASE);
        ASSERT_EQ(r.payload.state.index, 1);
        ASSERT_EQ(r.payload.state.num, 1001);   /* BackendPeer answers 1000 + index */

        close(new_call);
        backend_peer_close(&b);
        finish(&p);
}

static void test_incompatible_backend_refused(void) {
        Port0 p;
        BackendPeer b;

        start_with_device(&p, NULL);
        backend_peer_close(&p.be);
        ASSERT(daemon_log_wait(&p.d, "port0: link down", 2000));

        /* a switch that lost IN_ORDER (bit 35) and STATUS */
        ASSERT_EQ(backend_peer_open(&b, p.be_path, NET_TEST_FEATURES & ~VU_BIT(35),
                                    NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_wait_closed(&b, PEER_TIMEOUT_MS), 0);
        ASSERT(daemon_log_wait(&p.d, "incompatible back-end: lacks features 0x800000000 (IN_ORDER)", 2000));
        ASSERT_EQ(backend_peer_find(&b, 0, VU_SET_MEM_TABLE), SIZE_MAX);   /* nothing was replayed */
        backend_peer_close(&b);

        ASSERT_EQ(backend_peer_open(&b, p.be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES & ~VU_BIT(VU_PF_STATUS)), 0);
        ASSERT_EQ(backend_peer_wait_closed(&b, PEER_TIMEOUT_MS), 0);
        ASSERT(daemon_log_wait(&p.d, "lacks protocol features 0x10000 (STATUS)", 2000));
        backend_peer_close(&b);

        /* the front-end stayed: answered from the shadow */
        VuMsg m, r;
        vu_msg_init(&m, VU_GET_STATUS, 0);
        ASSERT_EQ(frontend_peer_request(&p.fe, &m, &r), 0);
        ASSERT_EQ(r.payload.u64, 0xf);

        /* the next compatible back-end gets the full replay */
        ASSERT_EQ(backend_peer_open(&b, p.be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&b, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
        ASSERT(daemon_log_wait(&p.d, "port0: replay done", 2000));
        backend_peer_close(&b);
        finish(&p);
}

static void test_frontend_leaving_closes_backend(void) {
        Port0 p;

        start_with_device(&p, NULL);
        frontend_peer_close(&p.fe);
        ASSERT_EQ(backend_peer_wait_closed(&p.be, PEER_TIMEOUT_MS), 0);
        ASSERT(daemon_log_wait(&p.d, "port0: front-end disconnected", 2000));
        backend_peer_close(&p.be);

        /* a back-end that comes now gets no device, only the probe */
        ASSERT_EQ(backend_peer_open(&p.be, p.be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&p.be, VU_GET_PROTOCOL_FEATURES, UINT64_MAX, PEER_TIMEOUT_MS), 0);
        ASSERT(daemon_log_wait(&p.d, "no device to replay", 2000));
        ASSERT_EQ(backend_peer_serve_one(&p.be, 200), -ETIMEDOUT);
        ASSERT_EQ(p.be.n_log, 3);
        finish(&p);
}

static void test_answers_from_shadow_without_backend(void) {
        Port0 p;
        VuMsg m, r;

        start_with_device(&p, NULL);
        backend_peer_close(&p.be);
        ASSERT(daemon_log_wait(&p.d, "port0: link down", 2000));

        vu_msg_init(&m, VU_GET_FEATURES, 0);
        ASSERT_EQ(frontend_peer_request(&p.fe, &m, &r), 0);
        ASSERT_EQ(r.payload.u64, NET_TEST_FEATURES);
        vu_msg_init(&m, VU_GET_PROTOCOL_FEATURES, 0);
        ASSERT_EQ(frontend_peer_request(&p.fe, &m, &r), 0);
        /* LOG_SHMFD is replayed (live migration), so it is offered as the back-end offers it */
        ASSERT_EQ(r.payload.u64, NET_TEST_PROTOCOL_FEATURES);
        vu_msg_init_u64(&m, VU_SET_STATUS, 0xf);
        m.hdr.flags |= VU_FLAG_NEED_REPLY;
        ASSERT_EQ(frontend_peer_request(&p.fe, &m, &r), 0);
        ASSERT_EQ(r.payload.u64, 0);
        /* stopping a ring: the resume index comes from the used ring */
        frontend_peer_set_used_idx(&p.fe, 0, 555);
        vu_msg_init_state(&m, VU_GET_VRING_BASE, 0, 0);
        ASSERT_EQ(frontend_peer_request(&p.fe, &m, &r), 0);
        ASSERT_EQ(r.payload.state.index, 0);
        ASSERT_EQ(r.payload.state.num, 555);
        finish(&p);
}

/* A back-end that stops answering is dropped after reply_timeout_ms, and the other port
 * goes on meanwhile. */
static void test_stuck_backend_dropped_other_port_unaffected(void) {
        Port0 p;
        BackendPeer b, b1;
        FrontendPeer fe1;
        char fe1_path[128], be1_path[128];

        start_with_device(&p, "reply_timeout_ms = 300;");
        backend_peer_close(&p.be);
        ASSERT(daemon_log_wait(&p.d, "port0: link down", 2000));
        ASSERT_EQ(backend_peer_open(&b, p.be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&b, VU_GET_PROTOCOL_FEATURES, UINT64_MAX, PEER_TIMEOUT_MS), 0);
        /* b now holds the replay without acking; port1 is set up meanwhile */
        daemon_path(&p.d, 1, false, fe1_path, sizeof(fe1_path));
        daemon_path(&p.d, 1, true, be1_path, sizeof(be1_path));
        ASSERT_EQ(backend_peer_open(&b1, be1_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(frontend_peer_open(&fe1, fe1_path, MEM), 0);
        pid_t child = fork();
        if (child == 0)
                _exit(frontend_peer_setup(&fe1, 2, 256, NET_TEST_FEATURES) < 0);
        ASSERT_EQ(backend_peer_serve_until(&b1, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
        int status;
        ASSERT(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
        ASSERT(daemon_log_wait(&p.d, "port1: link up", 2000));

        ASSERT(daemon_log_wait(&p.d, "port0: back-end did not answer", 2000));
        ASSERT(daemon_log_wait(&p.d, "back-end disconnected during the replay", 2000));

        backend_peer_close(&b);
        backend_peer_close(&b1);
        frontend_peer_close(&fe1);
        finish(&p);
}

/* A back-end that refuses part of the replay (NACK) is dropped; the next one is fine. */
static void test_nacked_replay(void) {
        Port0 p;
        BackendPeer b;

        start_with_device(&p, NULL);
        backend_peer_close(&p.be);
        ASSERT(daemon_log_wait(&p.d, "port0: link down", 2000));
        ASSERT_EQ(backend_peer_open(&b, p.be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        b.nack_request = VU_SET_MEM_TABLE;
        ASSERT_EQ(backend_peer_wait_closed(&b, PEER_TIMEOUT_MS), 0);
        ASSERT(daemon_log_wait(&p.d, "back-end refused SET_MEM_TABLE in the replay", 2000));
        backend_peer_close(&b);
        ASSERT_EQ(backend_peer_open(&b, p.be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&b, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
        backend_peer_close(&b);
        finish(&p);
}

/* A malformed front-end message drops that front-end only; a second front-end is refused. */
static void test_bad_frontend_and_second_frontend(void) {
        Port0 p;
        VuMsg m, r;

        start_with_device(&p, NULL);
        int second = peer_connect(p.fe_path, 1000);
        ASSERT(second >= 0);
        ASSERT(daemon_log_wait(&p.d, "refusing a second front-end", 2000));
        char c;
        ASSERT_EQ(read(second, &c, 1), 0);      /* closed by the daemon */
        close(second);
        /* the first one is still served (GET_STATUS goes through to the back-end) */
        vu_msg_init(&m, VU_GET_STATUS, 0);
        pid_t child = fork();
        if (child == 0)
                _exit(frontend_peer_request(&p.fe, &m, &r) == 0 && r.payload.u64 == 0xf ? 0 : 1);
        ASSERT_EQ(backend_peer_serve_until(&p.be, VU_GET_STATUS, UINT64_MAX, PEER_TIMEOUT_MS), 0);
        int status;
        ASSERT(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);

        vu_msg_init_u64(&m, VU_SET_FEATURES, 0);
        m.hdr.flags = 0x3;      /* protocol version 3 */
        ASSERT_EQ(frontend_peer_send(&p.fe, &m), 0);
        ASSERT(daemon_log_wait(&p.d, "front-end sent a bad SET_FEATURES (2): unsupported protocol version", 2000));
        ASSERT_EQ(backend_peer_wait_closed(&p.be, PEER_TIMEOUT_MS), 0);
        finish(&p);
}

/* INFLIGHT_SHMFD: the region the front-end got from the first back-end is handed to every
 * later one, before its rings, as the same memory. */
static void test_inflight_region_to_every_backend(void) {
        Daemon d;
        char fe_path[128], be_path[128];
        FrontendPeer fe;
        BackendPeer a, b;

        daemon_start(&d, 1, NULL);
        daemon_path(&d, 0, false, fe_path, sizeof(fe_path));
        daemon_path(&d, 0, true, be_path, sizeof(be_path));
        ASSERT_EQ(backend_peer_open(&a, be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&a, VU_GET_PROTOCOL_FEATURES, UINT64_MAX, PEER_TIMEOUT_MS), 0);
        ASSERT_EQ(frontend_peer_open(&fe, fe_path, MEM), 0);
        fe.want_protocol_features |= VU_BIT(VU_PF_INFLIGHT_SHMFD);
        ASSERT_EQ(frontend_peer_setup_while_serving(&fe, &a, 2), 0);
        ASSERT(backend_peer_find(&a, 0, VU_GET_INFLIGHT_FD) != SIZE_MAX);
        ASSERT(a.last_inflight_fd >= 0);
        uint8_t *region = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, a.last_inflight_fd, 0);
        ASSERT(region != MAP_FAILED);
        memcpy(region, "in flight at the crash", 23);      /* what back-end A had recorded */
        munmap(region, 4096);
        backend_peer_close(&a);
        ASSERT(daemon_log_wait(&d, "port0: link down", 2000));

        ASSERT_EQ(backend_peer_open(&b, be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&b, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
        size_t at = backend_peer_find(&b, 0, VU_SET_INFLIGHT_FD);
        ASSERT(at != SIZE_MAX);
        ASSERT(at < backend_peer_find(&b, 0, VU_SET_VRING_NUM));
        ASSERT_EQ(b.log[at].n_fds, 1);
        region = mmap(NULL, 4096, PROT_READ, MAP_SHARED, b.last_inflight_fd, 0);
        ASSERT(region != MAP_FAILED);
        ASSERT(memcmp(region, "in flight at the crash", 23) == 0);
        munmap(region, 4096);
        backend_peer_close(&b);
        frontend_peer_close(&fe);
        ASSERT_EQ(daemon_stop(&d), 0);
}

/* CONFIGURE_MEM_SLOTS: a front-end that added its memory region by region gets the same
 * regions added one by one to every new back-end. */
static void test_mem_slots_replayed_region_by_region(void) {
        Daemon d;
        char fe_path[128], be_path[128];
        FrontendPeer fe;
        BackendPeer a, b;

        daemon_start(&d, 1, NULL);
        daemon_path(&d, 0, false, fe_path, sizeof(fe_path));
        daemon_path(&d, 0, true, be_path, sizeof(be_path));
        ASSERT_EQ(backend_peer_open(&a, be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&a, VU_GET_PROTOCOL_FEATURES, UINT64_MAX, PEER_TIMEOUT_MS), 0);
        ASSERT_EQ(frontend_peer_open(&fe, fe_path, MEM), 0);
        fe.want_protocol_features |= VU_BIT(VU_PF_CONFIGURE_MEM_SLOTS);
        ASSERT_EQ(frontend_peer_setup_while_serving(&fe, &a, 2), 0);
        ASSERT(backend_peer_find(&a, 0, VU_GET_MAX_MEM_SLOTS) != SIZE_MAX);
        ASSERT_EQ(backend_peer_find(&a, 0, VU_SET_MEM_TABLE), SIZE_MAX);
        frontend_peer_set_used_idx(&fe, 1, 9);
        backend_peer_close(&a);
        ASSERT(daemon_log_wait(&d, "port0: link down", 2000));

        ASSERT_EQ(backend_peer_open(&b, be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&b, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
        ASSERT_EQ(backend_peer_find(&b, 0, VU_SET_MEM_TABLE), SIZE_MAX);
        size_t r0 = backend_peer_find(&b, 0, VU_ADD_MEM_REG);
        size_t r1 = backend_peer_find(&b, r0 + 1, VU_ADD_MEM_REG);
        ASSERT(r0 != SIZE_MAX && r1 != SIZE_MAX);
        ASSERT_EQ(b.log[r0].payload.mem_reg.region.memory_size, MEM / 2);
        ASSERT_EQ(b.log[r1].payload.mem_reg.region.userspace_addr, fe.uaddr + MEM / 2);
        ASSERT(r1 < backend_peer_find(&b, 0, VU_SET_VRING_ADDR));
        /* the used index still comes from guest memory, now across two regions */
        size_t base = backend_peer_find(&b, backend_peer_find(&b, 0, VU_SET_VRING_BASE) + 1, VU_SET_VRING_BASE);
        ASSERT_EQ(b.log[base].payload.state.num, 9);
        backend_peer_close(&b);
        frontend_peer_close(&fe);
        ASSERT_EQ(daemon_stop(&d), 0);
}

/* BACKEND_REQ: each back-end gets a channel of its own, relayed whole to the front-end's; a
 * back-end dying mid-message leaves nothing on the front-end's channel. */
static void test_backend_channel_relayed(void) {
        Daemon d;
        char fe_path[128], be_path[128];
        FrontendPeer fe;
        BackendPeer a, b;
        VuMsg m;
        const char *reason;

        daemon_start(&d, 1, NULL);
        daemon_path(&d, 0, false, fe_path, sizeof(fe_path));
        daemon_path(&d, 0, true, be_path, sizeof(be_path));
        ASSERT_EQ(backend_peer_open(&a, be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&a, VU_GET_PROTOCOL_FEATURES, UINT64_MAX, PEER_TIMEOUT_MS), 0);
        ASSERT_EQ(frontend_peer_open(&fe, fe_path, MEM), 0);
        fe.want_protocol_features |= VU_BIT(VU_PF_BACKEND_REQ);
        int pair[2];
        ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
        fe.backend_req_fd = pair[0];
        fe.backend_req_send = pair[1];
        ASSERT_EQ(frontend_peer_setup_while_serving(&fe, &a, 2), 0);
        ASSERT(a.backend_req_fd >= 0);

        /* A's config changes: the front-end hears it on its own channel, and A gets the ack */
        vu_msg_init(&m, (VuRequest) VU_BACKEND_CONFIG_CHANGE_MSG, VU_FLAG_NEED_REPLY);
        ASSERT_EQ(vu_send_blocking(a.backend_req_fd, &m), 0);
        ASSERT_EQ(vu_recv_blocking(fe.backend_req_fd, &m, PEER_TIMEOUT_MS, &reason), 0);
        ASSERT_EQ(m.hdr.request, VU_BACKEND_CONFIG_CHANGE_MSG);
        ASSERT(vu_msg_needs_reply(&m));
        vu_msg_init_u64(&m, (VuRequest) VU_BACKEND_CONFIG_CHANGE_MSG, 0);
        m.hdr.flags |= VU_FLAG_REPLY;
        ASSERT_EQ(vu_send_blocking(fe.backend_req_fd, &m), 0);
        ASSERT_EQ(vu_recv_blocking(a.backend_req_fd, &m, PEER_TIMEOUT_MS, &reason), 0);
        ASSERT(vu_msg_is_reply(&m));
        ASSERT_EQ(m.payload.u64, 0);
        ASSERT(daemon_log_wait(&d, "back-end says its config changed", 2000));

        /* A dies in the middle of its next request */
        ASSERT_EQ(write(a.backend_req_fd, "\x02\x00\x00\x00\x01", 5), 5);
        backend_peer_close(&a);
        ASSERT(daemon_log_wait(&d, "port0: link down", 2000));

        ASSERT_EQ(backend_peer_open(&b, be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&b, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
        ASSERT(backend_peer_find(&b, 0, VU_SET_BACKEND_REQ_FD) != SIZE_MAX);
        ASSERT(b.backend_req_fd >= 0);
        vu_msg_init(&m, (VuRequest) VU_BACKEND_CONFIG_CHANGE_MSG, 0);
        ASSERT_EQ(vu_send_blocking(b.backend_req_fd, &m), 0);
        /* the front-end reads B's whole message: nothing of A's half */
        ASSERT_EQ(vu_recv_blocking(fe.backend_req_fd, &m, PEER_TIMEOUT_MS, &reason), 0);
        ASSERT_EQ(m.hdr.request, VU_BACKEND_CONFIG_CHANGE_MSG);
        ASSERT_EQ(m.hdr.flags, VU_VERSION);

        /* a request needing a feature never offered closes that channel, not the port */
        vu_msg_init(&m, (VuRequest) VU_BACKEND_VRING_HOST_NOTIFIER_MSG, 0);
        ASSERT_EQ(vu_send_blocking(b.backend_req_fd, &m), 0);
        ASSERT(daemon_log_wait(&d, "back-end channel closed: back-end request that needs a feature", 2000));
        VuMsg g, r;
        vu_msg_init(&g, VU_GET_FEATURES, 0);
        ASSERT_EQ(frontend_peer_request(&fe, &g, &r), 0);
        backend_peer_close(&b);
        frontend_peer_close(&fe);
        ASSERT_EQ(daemon_stop(&d), 0);
}

static void iotlb_msg(VuMsg *m, uint8_t type, uint64_t iova, uint64_t size, uint64_t uaddr) {
        vu_msg_init(m, VU_IOTLB_MSG, VU_FLAG_NEED_REPLY);
        m->hdr.size = sizeof(VuIotlbMsg);
        m->payload.iotlb.iova = iova;
        m->payload.iotlb.size = size;
        m->payload.iotlb.uaddr = uaddr;
        m->payload.iotlb.perm = type == VU_IOTLB_UPDATE ? VU_ACCESS_RW : 0;
        m->payload.iotlb.type = type;
}

/* ACCESS_PLATFORM with a vIOMMU: IOTLB updates forwarded with their acks, a back-end's miss
 * relayed whole to the front-end's channel, updates acked from the shadow while no back-end
 * is there, and a new back-end gets the translations before the ring addresses and resumes
 * at the used index read through them. */
static void test_iommu(void) {
        Daemon d;
        char fe_path[128], be_path[128];
        FrontendPeer fe;
        BackendPeer a, b;
        VuMsg m, r;
        const char *reason;
        const uint64_t features = NET_TEST_FEATURES | VU_BIT(VIRTIO_F_ACCESS_PLATFORM);

        daemon_start(&d, 1, NULL);
        daemon_path(&d, 0, false, fe_path, sizeof(fe_path));
        daemon_path(&d, 0, true, be_path, sizeof(be_path));
        ASSERT_EQ(backend_peer_open(&a, be_path, features, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&a, VU_GET_PROTOCOL_FEATURES, UINT64_MAX, PEER_TIMEOUT_MS), 0);
        ASSERT_EQ(frontend_peer_open(&fe, fe_path, MEM), 0);
        fe.want_protocol_features |= VU_BIT(VU_PF_BACKEND_REQ);
        fe.want_features = features;
        int pair[2];
        ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
        fe.backend_req_fd = pair[0];
        fe.backend_req_send = pair[1];
        ASSERT_EQ(frontend_peer_setup_while_serving(&fe, &a, 2), 0);
        size_t sf = backend_peer_find(&a, 0, VU_SET_FEATURES);
        ASSERT(sf != SIZE_MAX);
        ASSERT(a.log[sf].payload.u64 & VU_BIT(VIRTIO_F_ACCESS_PLATFORM));

        /* The rings' addresses are IOVAs now. Ring 0's used ring is mapped elsewhere in
         * memory than its number says (ring 1's maps to itself): the update goes to A, and
         * A's ack back to the front-end. */
        const uint64_t used0 = frontend_peer_used(&fe, 0), used1 = frontend_peer_used(&fe, 1);
        const uint64_t elsewhere = fe.uaddr + 0x80000;
        iotlb_msg(&m, VU_IOTLB_UPDATE, used0, 0x1000, elsewhere);
        ASSERT_EQ(frontend_peer_send(&fe, &m), 0);
        ASSERT_EQ(backend_peer_serve_until(&a, VU_IOTLB_MSG, UINT64_MAX, PEER_TIMEOUT_MS), 0);
        ASSERT_EQ(frontend_peer_recv(&fe, &r, PEER_TIMEOUT_MS), 0);
        ASSERT_EQ(r.hdr.request, VU_IOTLB_MSG);
        ASSERT(vu_msg_is_reply(&r));
        ASSERT_EQ(r.payload.u64, 0);
        const VuIotlbMsg *got = &a.log[a.n_log - 1].payload.iotlb;
        ASSERT_EQ(got->iova, used0);
        ASSERT_EQ(got->uaddr, elsewhere);
        ASSERT_EQ(got->type, VU_IOTLB_UPDATE);

        /* A misses on ring 1: the front-end reads the whole message on its channel */
        vu_msg_init(&m, (VuRequest) VU_BACKEND_IOTLB_MSG, 0);
        m.hdr.size = sizeof(VuIotlbMsg);
        m.payload.iotlb.iova = used1;
        m.payload.iotlb.perm = VU_ACCESS_RW;
        m.payload.iotlb.type = VU_IOTLB_MISS;
        ASSERT_EQ(vu_send_blocking(a.backend_req_fd, &m), 0);
        ASSERT_EQ(vu_recv_blocking(fe.backend_req_fd, &r, PEER_TIMEOUT_MS, &reason), 0);
        ASSERT_EQ(r.hdr.request, VU_BACKEND_IOTLB_MSG);
        ASSERT_EQ(r.hdr.size, sizeof(VuIotlbMsg));
        ASSERT_EQ(r.payload.iotlb.iova, used1);
        ASSERT_EQ(r.payload.iotlb.type, VU_IOTLB_MISS);
        /* ... and answers it */
        iotlb_msg(&m, VU_IOTLB_UPDATE, used1, 0x1000, used1);
        ASSERT_EQ(frontend_peer_send(&fe, &m), 0);
        ASSERT_EQ(backend_peer_serve_until(&a, VU_IOTLB_MSG, UINT64_MAX, PEER_TIMEOUT_MS), 0);
        ASSERT_EQ(frontend_peer_recv(&fe, &r, PEER_TIMEOUT_MS), 0);
        ASSERT_EQ(r.payload.u64, 0);

        /* A crashes. Updates and invalidations are taken and acked from the shadow. */
        backend_peer_close(&a);
        ASSERT(daemon_log_wait(&d, "port0: link down", 2000));
        iotlb_msg(&m, VU_IOTLB_UPDATE, 0x40000000, 0x2000, fe.uaddr + 0x90000);
        ASSERT_EQ(frontend_peer_request(&fe, &m, &r), 0);
        iotlb_msg(&m, VU_IOTLB_UPDATE, 0x50000000, 0x1000, fe.uaddr + 0xa0000);
        ASSERT_EQ(frontend_peer_request(&fe, &m, &r), 0);
        iotlb_msg(&m, VU_IOTLB_INVALIDATE, 0x50000000, 0x1000, 0);
        ASSERT_EQ(frontend_peer_request(&fe, &m, &r), 0);

        /* where ring 0's used index really is, and a decoy where its IOVA would point */
        ((uint16_t *) (fe.mem + 0x80000))[1] = 321;
        frontend_peer_set_used_idx(&fe, 0, 999);
        frontend_peer_set_used_idx(&fe, 1, 654);

        ASSERT_EQ(backend_peer_open(&b, be_path, features, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&b, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
        size_t first_iotlb = backend_peer_find(&b, 0, VU_IOTLB_MSG);
        ASSERT(first_iotlb != SIZE_MAX);
        ASSERT(backend_peer_find(&b, 0, VU_SET_VRING_NUM) < first_iotlb);
        ASSERT(first_iotlb < backend_peer_find(&b, 0, VU_SET_VRING_ADDR));
        ASSERT(backend_peer_find(&b, 0, VU_SET_MEM_TABLE) < first_iotlb);
        uint64_t seen[3] = {};
        unsigned n = 0;
        for (size_t i = first_iotlb; i != SIZE_MAX; i = backend_peer_find(&b, i + 1, VU_IOTLB_MSG)) {
                ASSERT(n < 3);
                ASSERT_EQ(b.log[i].payload.iotlb.type, VU_IOTLB_UPDATE);
                seen[n++] = b.log[i].payload.iotlb.iova;
        }
        ASSERT_EQ(n, 3);                /* the invalidated one is gone */
        /* and GetPort counts what the shadow keeps */
        char ctl[128];
        snprintf(ctl, sizeof(ctl), "%s/control", d.dir);
        json_object *params = json_object_new_object();
        json_object_object_add(params, "name", json_object_new_string("port0"));
        json_object *gp = control_call_ok(ctl, "io.vhostrecon.GetPort", params);
        json_object *port = json_object_object_get(gp, "port");
        ASSERT_EQ(json_object_get_int(json_object_object_get(port, "iotlb_entries")), 3);
        ASSERT_EQ(json_object_get_int(json_object_object_get(port, "iotlb_not_kept")), 0);
        json_object_put(gp);
        ASSERT_EQ(seen[0], 0x40000000);        /* in IOVA order */
        ASSERT_EQ(seen[1], used0);
        ASSERT_EQ(seen[2], used1);
        size_t base = backend_peer_find(&b, 0, VU_SET_VRING_BASE);
        ASSERT_EQ(b.log[base].payload.state.index, 0);
        ASSERT_EQ(b.log[base].payload.state.num, 321);
        base = backend_peer_find(&b, base + 1, VU_SET_VRING_BASE);
        ASSERT_EQ(b.log[base].payload.state.num, 654);

        /* a back-end IOTLB message that is neither a miss nor an access failure closes
         * only the channel */
        vu_msg_init(&m, (VuRequest) VU_BACKEND_IOTLB_MSG, 0);
        m.hdr.size = sizeof(VuIotlbMsg);
        m.payload.iotlb.type = VU_IOTLB_UPDATE;
        ASSERT_EQ(vu_send_blocking(b.backend_req_fd, &m), 0);
        ASSERT(daemon_log_wait(&d, "back-end channel closed: back-end IOTLB message neither", 2000));
        VuMsg g;
        vu_msg_init(&g, VU_GET_FEATURES, 0);
        ASSERT_EQ(frontend_peer_request(&fe, &g, &r), 0);
        ASSERT(r.payload.u64 & VU_BIT(VIRTIO_F_ACCESS_PLATFORM));
        backend_peer_close(&b);
        frontend_peer_close(&fe);
        ASSERT_EQ(daemon_stop(&d), 0);
}

int main(void) {
        signal(SIGPIPE, SIG_IGN);
        static const TestCase cases[] = {
                TEST_CASE(test_replay_matches_shadow),
                TEST_CASE(test_replay_kicks_rings),
                TEST_CASE(test_requests_during_replay_keep_order),
                TEST_CASE(test_incompatible_backend_refused),
                TEST_CASE(test_frontend_leaving_closes_backend),
                TEST_CASE(test_answers_from_shadow_without_backend),
                TEST_CASE(test_stuck_backend_dropped_other_port_unaffected),
                TEST_CASE(test_nacked_replay),
                TEST_CASE(test_bad_frontend_and_second_frontend),
                TEST_CASE(test_inflight_region_to_every_backend),
                TEST_CASE(test_mem_slots_replayed_region_by_region),
                TEST_CASE(test_backend_channel_relayed),
                TEST_CASE(test_iommu),
        };
        return run_tests(cases, ELEMENTSOF(cases));
}
