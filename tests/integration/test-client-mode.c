/* SPDX-License-Identifier: MIT */
/* mode = "client": vhost-recond connects to a peer that only listens (as qemu-storage-daemon
 * and virtiofsd do), and reconnects with a capped backoff whenever it goes away. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon-harness.h"
#include "macro.h"
#include "peer.h"
#include "tests.h"

#define MEM (1u << 20)

static int count(const char *haystack, const char *needle) {
        int n = 0;
        for (const char *p = haystack; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}

static void setup_device(FrontendPeer *fe, BackendPeer *be) {
        ASSERT_EQ(frontend_peer_setup_while_serving(fe, be, 2), 0);
}

static void test_backend_that_only_listens(void) {
        Daemon d;
        char fe_path[128], be_path[128];
        FrontendPeer fe;
        BackendPeer be;

        daemon_start_modes(&d, 1, NULL, "server", "client", 20);
        daemon_path(&d, 0, false, fe_path, sizeof(fe_path));
        daemon_path(&d, 0, true, be_path, sizeof(be_path));

        /* not there yet: the daemon says so once and keeps trying */
        ASSERT(daemon_log_wait(&d, "cannot reach the back-end", 2000));
        usleep(300000);
        int l = peer_listen(be_path);
        ASSERT(l >= 0);
        int fd = peer_accept(l, 6000);
        ASSERT(fd >= 0);
        ASSERT(daemon_log_wait(&d, "is reachable again", 2000));
        backend_peer_init_fd(&be, fd, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES);
        ASSERT_EQ(backend_peer_serve_until(&be, VU_GET_PROTOCOL_FEATURES, UINT64_MAX, PEER_TIMEOUT_MS), 0);
        ASSERT_EQ(frontend_peer_open(&fe, fe_path, MEM), 0);
        setup_device(&fe, &be);
        ASSERT(daemon_log_wait(&d, "port0: link up", 2000));

        /* the back-end crashes and stays away for 1.5 s, then listens again */
        frontend_peer_set_used_idx(&fe, 0, 42);
        backend_peer_close(&be);
        close(l);
        (void) unlink(be_path);
        ASSERT(daemon_log_wait(&d, "port0: link down", 2000));
        usleep(1500000);
        l = peer_listen(be_path);
        ASSERT(l >= 0);
        fd = peer_accept(l, 6000);     /* within the 5 s cap */
        ASSERT(fd >= 0);
        backend_peer_init_fd(&be, fd, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES);
        ASSERT_EQ(backend_peer_serve_until(&be, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
        ASSERT(daemon_log_wait(&d, "port0: replay done", 2000));
        size_t i = backend_peer_find(&be, 0, VU_SET_VRING_BASE);
        ASSERT(i != SIZE_MAX);
        ASSERT_EQ(be.log[i].payload.state.num, 42);
        ASSERT(backend_peer_find(&be, 0, VU_SET_MEM_TABLE) != SIZE_MAX);

        /* "cannot reach" once per outage, not once per try */
        char *log = daemon_log_read(&d);
        ASSERT_EQ(count(log, "cannot reach the back-end"), 2);
        free(log);

        backend_peer_close(&be);
        close(l);
        frontend_peer_close(&fe);
        ASSERT_EQ(daemon_stop(&d), 0);
}

/* A listener that accepts and closes at once (a back-end on its way down) is just another
 * retry; the real one after it gets the replay. */
static void test_dying_listener(void) {
        Daemon d;
        char fe_path[128], be_path[128];
        FrontendPeer fe;
        BackendPeer be;

        daemon_start_modes(&d, 1, NULL, "server", "client", 20);
        daemon_path(&d, 0, false, fe_path, sizeof(fe_path));
        daemon_path(&d, 0, true, be_path, sizeof(be_path));
        int l = peer_listen(be_path);
        ASSERT(l >= 0);
        int fd = peer_accept(l, 6000);
        ASSERT(fd >= 0);
        backend_peer_init_fd(&be, fd, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES);
        ASSERT_EQ(backend_peer_serve_until(&be, VU_GET_PROTOCOL_FEATURES, UINT64_MAX, PEER_TIMEOUT_MS), 0);
        ASSERT_EQ(frontend_peer_open(&fe, fe_path, MEM), 0);
        setup_device(&fe, &be);
        backend_peer_close(&be);
        ASSERT(daemon_log_wait(&d, "port0: link down", 2000));

        for (int k = 0; k < 3; k++) {
                fd = peer_accept(l, 6000);
                ASSERT(fd >= 0);
                close(fd);
        }
        ASSERT(daemon_log_wait(&d, "back-end disconnected during the probe", 2000));
        fd = peer_accept(l, 6000);
        ASSERT(fd >= 0);
        backend_peer_init_fd(&be, fd, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES);
        ASSERT_EQ(backend_peer_serve_until(&be, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
        ASSERT(daemon_log_wait(&d, "port0: replay done", 2000));
        backend_peer_close(&be);
        close(l);
        frontend_peer_close(&fe);
        ASSERT_EQ(daemon_stop(&d), 0);
}

/* The front-end side in client mode: vhost-recond connects to a front-end that listens
 * (QEMU with server=on, DPDK virtio-user with server=1), and again after it leaves. */
static void test_frontend_that_only_listens(void) {
        Daemon d;
        char fe_path[128], be_path[128];
        FrontendPeer fe;
        BackendPeer be;

        daemon_start_modes(&d, 1, NULL, "client", "server", 20);
        daemon_path(&d, 0, false, fe_path, sizeof(fe_path));
        daemon_path(&d, 0, true, be_path, sizeof(be_path));
        ASSERT_EQ(backend_peer_open(&be, be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&be, VU_GET_PROTOCOL_FEATURES, UINT64_MAX, PEER_TIMEOUT_MS), 0);

        for (int round = 0; round < 2; round++) {
                int l = peer_listen(fe_path);
                ASSERT(l >= 0);
                int fd = peer_accept(l, 6000);
                ASSERT(fd >= 0);
                ASSERT_EQ(frontend_peer_init_fd(&fe, fd, MEM), 0);
                setup_device(&fe, &be);
                ASSERT(daemon_log_wait(&d, "port0: link up", 2000));
                /* the front-end leaves: the back-end is closed so that it drops the memory */
                frontend_peer_close(&fe);
                close(l);
                ASSERT_EQ(backend_peer_wait_closed(&be, PEER_TIMEOUT_MS), 0);
                backend_peer_close(&be);
                ASSERT_EQ(backend_peer_open(&be, be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
                ASSERT_EQ(backend_peer_serve_until(&be, VU_GET_PROTOCOL_FEATURES, UINT64_MAX, PEER_TIMEOUT_MS), 0);
        }
        backend_peer_close(&be);
        ASSERT_EQ(daemon_stop(&d), 0);
}

int main(void) {
        signal(SIGPIPE, SIG_IGN);
        static const TestCase cases[] = {
                TEST_CASE(test_backend_that_only_listens),
                TEST_CASE(test_dying_listener),
                TEST_CASE(test_frontend_that_only_listens),
        };
        return run_tests(cases, ELEMENTSOF(cases));
}
