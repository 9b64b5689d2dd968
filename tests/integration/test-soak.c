/* SPDX-License-Identifier: MIT */
/* Soak: SOAK_CYCLES (default 10 000) back-end connect -> full replay -> disconnect cycles on
 * a port with a live device. The daemon's fd count must end where it began and its RSS
 * grow by less than 1 % (not asserted under AddressSanitizer, whose quarantine keeps freed
 * memory by design; the figures are printed either way). */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "daemon-harness.h"
#include "macro.h"
#include "peer.h"
#include "tests.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

static void cycle(const char *be_path) {
        BackendPeer b;
        ASSERT_EQ(backend_peer_open(&b, be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&b, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
        backend_peer_close(&b);
}

int main(void) {
        Daemon d;
        char fe_path[128], be_path[128];
        FrontendPeer fe;
        BackendPeer a;
        int cycles = getenv("SOAK_CYCLES") ? atoi(getenv("SOAK_CYCLES")) : 10000;

        signal(SIGPIPE, SIG_IGN);
        /* not verbose: the log is about the replays, not every request */
        setenv("VHOST_RECOND_QUIET", "1", 1);
        daemon_start(&d, 1, NULL);
        daemon_path(&d, 0, false, fe_path, sizeof(fe_path));
        daemon_path(&d, 0, true, be_path, sizeof(be_path));
        ASSERT_EQ(peers_setup_device(fe_path, be_path, &fe, &a, 2), 0);
        backend_peer_close(&a);

        for (int i = 0; i < 200; i++)          /* warm up: allocations settle */
                cycle(be_path);
        usleep(100000);
        int fds0 = daemon_fd_count(&d);
        long rss0 = daemon_rss_kib(&d);

        uint64_t t0 = test_now_usec();
        for (int i = 0; i < cycles; i++)
                cycle(be_path);
        double took = (test_now_usec() - t0) / 1e6;
        usleep(200000);
        int fds1 = daemon_fd_count(&d);
        long rss1 = daemon_rss_kib(&d);
        double growth = 100.0 * (rss1 - rss0) / rss0;

        printf("soak: %d back-end reconnect cycles (full replay each) in %.1f s, %.0f per second\n", cycles, took,
               cycles / took);
        /* ASan's quarantine and valgrind's own heap grow the RSS: judged in the plain build */
        bool judge_rss = !UNDER_ASAN && !getenv("SOAK_UNDER_VALGRIND");
        printf("soak: daemon fds %d -> %d, RSS %ld -> %ld KiB (%+.2f %%)%s\n", fds0, fds1, rss0, rss1, growth,
               judge_rss ? "" : UNDER_ASAN ? " [AddressSanitizer: RSS not judged]" : " [valgrind: RSS not judged]");
        char *log = daemon_log_read(&d);
        int replays = 0;
        for (const char *p = log; (p = strstr(p, "port0: replay done")); p++)
                replays++;
        free(log);
        printf("soak: %d replays logged\n", replays);

        ASSERT_EQ(fds1, fds0);
        ASSERT(replays >= cycles);
        if (judge_rss)
                ASSERT(growth < 1.0);
        frontend_peer_close(&fe);
        ASSERT_EQ(daemon_stop(&d), 0);
        printf("1 passed, 0 failed\n");
        return 0;
}
