/* SPDX-License-Identifier: MIT */
/* Fault injection with the C peers. Each case: the next back-end gets a correct replay, the
 * daemon holds no more fds than before, and the other port (a device up on port1 all along)
 * does not notice. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon-harness.h"
#include "io.h"
#include "macro.h"
#include "peer.h"
#include "tests.h"

#define MEM (1u << 20)

typedef struct Rig {
        Daemon d;
        char fe[2][128], be[2][128];
        FrontendPeer fe0, fe1;
        BackendPeer be1;
        int baseline;           /* the daemon's fds with port0's device up and no back-end */
} Rig;

/* port1: a device up all along; port0: a device whose back-end will suffer. */
static void rig_start(Rig *r) {
        BackendPeer a;

        daemon_start(&r->d, 2, "reply_timeout_ms = 300;");
        for (unsigned p = 0; p < 2; p++) {
                daemon_path(&r->d, p, false, r->fe[p], sizeof(r->fe[p]));
                daemon_path(&r->d, p, true, r->be[p], sizeof(r->be[p]));
        }
        ASSERT_EQ(peers_setup_device(r->fe[1], r->be[1], &r->fe1, &r->be1, 2), 0);
        ASSERT_EQ(peers_setup_device(r->fe[0], r->be[0], &r->fe0, &a, 2), 0);
        frontend_peer_set_used_idx(&r->fe0, 0, 77);
        frontend_peer_set_used_idx(&r->fe0, 1, 88);
        backend_peer_close(&a);
        ASSERT(daemon_log_wait(&r->d, "port0: link down", 2000));
        usleep(50000);
        r->baseline = daemon_fd_count(&r->d);
}

/* A good back-end now: the full replay, at the right indexes; then back to no back-end. */
static void rig_check_recovers(Rig *r) {
        BackendPeer b;

        ASSERT_EQ(backend_peer_open(&b, r->be[0], NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&b, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
        size_t b0 = backend_peer_find(&b, 0, VU_SET_VRING_BASE);
        size_t b1 = backend_peer_find(&b, b0 + 1, VU_SET_VRING_BASE);
        ASSERT(b0 != SIZE_MAX && b1 != SIZE_MAX);
        ASSERT_EQ(b.log[b0].payload.state.num, 77);
        ASSERT_EQ(b.log[b1].payload.state.num, 88);
        ASSERT(backend_peer_find(&b, 0, VU_SET_MEM_TABLE) != SIZE_MAX);
        backend_peer_close(&b);
        ASSERT(daemon_log_wait(&r->d, "port0: link down", 2000));
        usleep(50000);
        ASSERT_EQ(daemon_fd_count(&r->d), r->baseline);
}

/* port1 never noticed: one back-end connect, link up, and its front-end still answered. */
static void rig_check_other_port(Rig *r) {
        char *log = daemon_log_read(&r->d);
        ASSERT(!strstr(log, "port1: link down"));
        ASSERT(!strstr(log, "port1: back-end disconnected"));
        free(log);
        VuMsg m, reply;
        vu_msg_init(&m, VU_GET_FEATURES, 0);
        ASSERT_EQ(frontend_peer_request(&r->fe1, &m, &reply), 0);   /* answered by the daemon itself */
}

static void rig_stop(Rig *r) {
        frontend_peer_close(&r->fe0);
        frontend_peer_close(&r->fe1);
        backend_peer_close(&r->be1);
        ASSERT_EQ(daemon_stop(&r->d), 0);
}

static void test_backend_dies_after_each_replay_message(void) {
        Rig r;
        rig_start(&r);

        /* the probe and the replay of this device are 20 messages: die after each one */
        for (int k = 1; k <= 20; k++) {
                BackendPeer b;
                ASSERT_EQ(backend_peer_open(&b, r.be[0], NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
                for (int i = 0; i < k; i++)
                        ASSERT(backend_peer_serve_one(&b, PEER_TIMEOUT_MS) > 0);
                backend_peer_close(&b);
                ASSERT(daemon_log_wait(&r.d, "port0: back-end disconnected", 2000));
                usleep(20000);
                if (daemon_fd_count(&r.d) != r.baseline)
                        fprintf(stderr, "after %d messages: %d fds, %d before\n", k, daemon_fd_count(&r.d), r.baseline);
                ASSERT_EQ(daemon_fd_count(&r.d), r.baseline);
        }
        rig_check_recovers(&r);
        rig_check_other_port(&r);
        rig_stop(&r);
}

static void send_raw(int fd, const void *data, size_t n, const int *fds, unsigned n_fds) {
        union { struct cmsghdr a; uint8_t b[CMSG_SPACE(sizeof(int) * 4)]; } ctl;
        struct iovec iov = { (void *) data, n };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        if (n_fds) {
                mh.msg_control = &ctl;
                mh.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
                memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
        }
        ASSERT_EQ(sendmsg(fd, &mh, MSG_NOSIGNAL), (ssize_t) n);
}

/* Back-ends that answer the probe's GET_FEATURES with something broken. */
static void test_backend_garbage(void) {
        Rig r;
        rig_start(&r);

        for (int c = 0; c < 5; c++) {
                BackendPeer b;
                VuMsg m;
                const char *reason;
                ASSERT_EQ(backend_peer_open(&b, r.be[0], NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
                ASSERT_EQ(vu_recv_blocking(b.fd, &m, PEER_TIMEOUT_MS, &reason), 0);      /* SET_OWNER */
                ASSERT_EQ(vu_recv_blocking(b.fd, &m, PEER_TIMEOUT_MS, &reason), 0);      /* GET_FEATURES */
                ASSERT_EQ(m.hdr.request, VU_GET_FEATURES);
                VuMsg a;
                vu_msg_init_u64(&a, VU_GET_FEATURES, NET_TEST_FEATURES);
                a.hdr.flags |= VU_FLAG_REPLY;
                uint8_t wire[VU_HDR_SIZE + 8];
                memcpy(wire, &a.hdr, VU_HDR_SIZE);
                memcpy(wire + VU_HDR_SIZE, &a.payload.u64, 8);
                int efd[2] = { eventfd(0, EFD_CLOEXEC), eventfd(0, EFD_CLOEXEC) };
                const char *what;
                switch (c) {
                case 0:         /* half a header, then gone */
                        send_raw(b.fd, wire, 6, NULL, 0);
                        what = "half a header";
                        break;
                case 1:         /* half a payload, then gone */
                        send_raw(b.fd, wire, VU_HDR_SIZE + 3, NULL, 0);
                        what = "half a payload";
                        break;
                case 2:         /* fds with a reply that has none */
                        send_raw(b.fd, wire, sizeof(wire), efd, 2);
                        what = "fds without a reason";
                        break;
                case 3:         /* a reply to something else */
                        a.hdr.request = VU_GET_QUEUE_NUM;
                        memcpy(wire, &a.hdr, VU_HDR_SIZE);
                        send_raw(b.fd, wire, sizeof(wire), NULL, 0);
                        what = "a reply to another request";
                        break;
                default:        /* a request where a reply belongs */
                        a.hdr.flags = VU_VERSION;
                        memcpy(wire, &a.hdr, VU_HDR_SIZE);
                        send_raw(b.fd, wire, sizeof(wire), NULL, 0);
                        what = "a request instead of a reply";
                        break;
                }
                close(efd[0]);
                close(efd[1]);
                fprintf(stderr, "   %s\n", what);
                if (c < 2)
                        shutdown(b.fd, SHUT_WR);
                ASSERT_EQ(backend_peer_wait_closed(&b, PEER_TIMEOUT_MS), 0);
                backend_peer_close(&b);
                ASSERT(daemon_log_wait(&r.d, "port0: back-end disconnected", 2000));
                usleep(20000);
                ASSERT_EQ(daemon_fd_count(&r.d), r.baseline);
        }
        rig_check_recovers(&r);
        rig_check_other_port(&r);
        rig_stop(&r);
}

/* A front-end that dies half-way through its setup, and one replaced while a replay runs. */
static void test_frontend_dies_mid_setup_and_during_replay(void) {
        Rig r;
        rig_start(&r);
        BackendPeer b;
        FrontendPeer f;
        VuMsg m, reply;

        /* a back-end is there; a second front-end cannot come while the first holds port0, so
         * the first leaves, a new one sets up half and dies */
        ASSERT_EQ(backend_peer_open(&b, r.be[0], NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&b, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
        frontend_peer_close(&r.fe0);
        ASSERT_EQ(backend_peer_wait_closed(&b, PEER_TIMEOUT_MS), 0);
        backend_peer_close(&b);
        ASSERT_EQ(backend_peer_open(&b, r.be[0], NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&b, VU_GET_PROTOCOL_FEATURES, UINT64_MAX, PEER_TIMEOUT_MS), 0);
        ASSERT(daemon_log_wait(&r.d, "no device to replay", 2000));
        usleep(50000);
        int idle = daemon_fd_count(&r.d);

        ASSERT_EQ(frontend_peer_open(&f, r.fe[0], MEM), 0);
        vu_msg_init(&m, VU_SET_OWNER, 0);
        ASSERT_EQ(frontend_peer_request(&f, &m, NULL), 0);
        vu_msg_init(&m, VU_GET_FEATURES, 0);
        ASSERT_EQ(frontend_peer_request(&f, &m, &reply), 0);
        vu_msg_init_u64(&m, VU_SET_FEATURES, NET_TEST_FEATURES & ~VU_BIT(VU_F_PROTOCOL_FEATURES));
        ASSERT_EQ(frontend_peer_send(&f, &m), 0);
        vu_msg_init(&m, VU_SET_MEM_TABLE, 0);
        m.payload.memory.nregions = 1;
        m.payload.memory.regions[0] = (VuMemRegion) { 0, MEM, f.uaddr, 0 };
        m.hdr.size = 8 + sizeof(VuMemRegion);
        m.fds[0] = f.memfd;
        m.n_fds = 1;
        ASSERT_EQ(frontend_peer_send(&f, &m), 0);
        ASSERT_EQ(backend_peer_serve_until(&b, VU_SET_MEM_TABLE, UINT64_MAX, PEER_TIMEOUT_MS), 0);
        frontend_peer_close(&f);        /* dies mid-setup */
        ASSERT_EQ(backend_peer_wait_closed(&b, PEER_TIMEOUT_MS), 0);
        backend_peer_close(&b);
        ASSERT_EQ(backend_peer_open(&b, r.be[0], NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&b, VU_GET_PROTOCOL_FEATURES, UINT64_MAX, PEER_TIMEOUT_MS), 0);
        ASSERT(daemon_log_wait(&r.d, "no device to replay", 2000));
        usleep(50000);
        ASSERT_EQ(daemon_fd_count(&r.d), idle);         /* the dead front-end's memory fd is gone */

        /* a full device again, then its back-end is replaced, and while that replay waits for
         * its acks the front-end goes away and a new one comes */
        ASSERT_EQ(frontend_peer_open(&r.fe0, r.fe[0], MEM), 0);
        ASSERT_EQ(frontend_peer_setup_while_serving(&r.fe0, &b, 2), 0);
        backend_peer_close(&b);
        ASSERT(daemon_log_wait(&r.d, "port0: link down", 2000));
        ASSERT_EQ(backend_peer_open(&b, r.be[0], NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&b, VU_GET_PROTOCOL_FEATURES, UINT64_MAX, PEER_TIMEOUT_MS), 0);
        frontend_peer_close(&r.fe0);                    /* the replay is in flight, unacked */
        ASSERT_EQ(backend_peer_wait_closed(&b, PEER_TIMEOUT_MS), 0);
        backend_peer_close(&b);
        ASSERT_EQ(backend_peer_open(&b, r.be[0], NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&b, VU_GET_PROTOCOL_FEATURES, UINT64_MAX, PEER_TIMEOUT_MS), 0);
        ASSERT_EQ(frontend_peer_open(&r.fe0, r.fe[0], MEM), 0);
        ASSERT_EQ(frontend_peer_setup_while_serving(&r.fe0, &b, 2), 0);
        ASSERT(daemon_log_wait(&r.d, "port0: link up", 2000));
        backend_peer_close(&b);
        rig_check_other_port(&r);
        rig_stop(&r);
}

int main(void) {
        signal(SIGPIPE, SIG_IGN);
        static const TestCase cases[] = {
                TEST_CASE(test_backend_dies_after_each_replay_message),
                TEST_CASE(test_backend_garbage),
                TEST_CASE(test_frontend_dies_mid_setup_and_during_replay),
        };
        return run_tests(cases, ELEMENTSOF(cases));
}
