/* SPDX-License-Identifier: MIT */
/* A flooding front-end (requests as fast as a process can write them) cannot starve the
 * other ports or the control socket: each connection is served at most 32 messages per
 * dispatch, and a front-end that does not read its answers is paused, not buffered. The
 * replays of another port and control-socket calls are timed with and without the flood. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "control-client.h"
#include "daemon-harness.h"
#include "io.h"
#include "macro.h"
#include "peer.h"
#include "tests.h"

#define MEM (1u << 20)
#define ROUNDS 30

/* A child that sends GET_FEATURES on port0 as fast as it can; with `read_answers` it also
 * reads every answer (the most work it can make the daemon do), without it never (the daemon
 * must pause it). Reports how many it sent on `out` when killed with SIGTERM. */
static pid_t flooder_start(const char *path, bool read_answers, int *ret_count_fd) {
        int pipefd[2];
        ASSERT(pipe(pipefd) == 0);
        pid_t pid = fork();
        ASSERT(pid >= 0);
        if (pid > 0) {
                close(pipefd[1]);
                *ret_count_fd = pipefd[0];
                return pid;
        }
        close(pipefd[0]);
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigprocmask(SIG_BLOCK, &mask, NULL);

        int fd = peer_connect(path, 2000);
        if (fd < 0)
                _exit(1);
        fcntl(fd, F_SETFL, O_NONBLOCK);
        VuMsg m;
        vu_msg_init(&m, VU_GET_FEATURES, 0);
        uint8_t wire[VU_HDR_SIZE];
        memcpy(wire, &m.hdr, VU_HDR_SIZE);
        uint8_t burst[VU_HDR_SIZE * 64], sink[65536];
        for (unsigned i = 0; i < 64; i++)
                memcpy(burst + i * VU_HDR_SIZE, wire, VU_HDR_SIZE);
        uint64_t sent_bytes = 0;
        for (;;) {
                sigset_t pending;
                sigpending(&pending);
                if (sigismember(&pending, SIGTERM))
                        break;
                struct pollfd p = { .fd = fd, .events = POLLOUT | (read_answers ? POLLIN : 0) };
                if (poll(&p, 1, 100) < 0)
                        break;
                if (p.revents & POLLIN)
                        while (read(fd, sink, sizeof(sink)) > 0)
                                ;
                if (p.revents & POLLOUT) {
                        /* whole headers only: keep the stream in step */
                        size_t off = sent_bytes % VU_HDR_SIZE;
                        ssize_t n = write(fd, burst + off, sizeof(burst) - off);
                        if (n > 0)
                                sent_bytes += n;
                }
                if (p.revents & (POLLHUP | POLLERR))
                        break;
        }
        uint64_t count = sent_bytes / VU_HDR_SIZE;
        (void) !write(pipefd[1], &count, sizeof(count));
        _exit(0);
}

static uint64_t flooder_stop(pid_t pid, int count_fd) {
        uint64_t count = 0;
        kill(pid, SIGTERM);
        ASSERT_EQ(read(count_fd, &count, sizeof(count)), (ssize_t) sizeof(count));
        ASSERT(waitpid(pid, NULL, 0) == pid);
        close(count_fd);
        return count;
}

typedef struct Figures {
        uint64_t replay_p50, replay_max, list_p50, list_max;
} Figures;

/* Port1's back-end reconnects ROUNDS times (each time: connect -> DRIVER_OK replayed) and
 * the control socket is asked for ListPorts between them. */
static Figures measure(Daemon *d, const char *be1) {
        uint64_t replay[ROUNDS], list[ROUNDS];
        char ctl[128];
        snprintf(ctl, sizeof(ctl), "%s/control", d->dir);
        for (unsigned i = 0; i < ROUNDS; i++) {
                BackendPeer b;
                uint64_t t0 = test_now_usec();
                ASSERT_EQ(backend_peer_open(&b, be1, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
                /* a starved port would hit this timeout */
                ASSERT_EQ(backend_peer_serve_until(&b, VU_SET_STATUS, 0xf, 1000), 0);
                replay[i] = test_now_usec() - t0;
                backend_peer_close(&b);

                t0 = test_now_usec();
                json_object *r = control_call_ok(ctl, "io.vhostrecon.ListPorts", NULL);
                list[i] = test_now_usec() - t0;
                ASSERT_EQ(json_object_array_length(json_object_object_get(r, "ports")), 2);
                json_object_put(r);
        }
        qsort(replay, ROUNDS, sizeof(uint64_t), test_cmp_u64);
        qsort(list, ROUNDS, sizeof(uint64_t), test_cmp_u64);
        return (Figures) { replay[ROUNDS / 2], replay[ROUNDS - 1], list[ROUNDS / 2], list[ROUNDS - 1] };
}

static void print_figures(const char *what, Figures f) {
        printf("%-34s port1 replay p50 %6" PRIu64 " us, max %6" PRIu64 " us; ListPorts p50 %6" PRIu64
               " us, max %6" PRIu64 " us\n", what, f.replay_p50, f.replay_max, f.list_p50, f.list_max);
}

static void test_flood(void) {
        Daemon d;
        char fe[2][128], be[2][128];
        FrontendPeer f1;
        BackendPeer b1;
        int count_fd;

        /* features set: port0's GET_FEATURES is answered by the daemon, no back-end needed */
        daemon_start_full(&d, 2, NULL, "features = 0x140000000L;", "server", "server", 100);
        for (unsigned p = 0; p < 2; p++) {
                daemon_path(&d, p, false, fe[p], sizeof(fe[p]));
                daemon_path(&d, p, true, be[p], sizeof(be[p]));
        }
        ASSERT_EQ(peers_setup_device(fe[1], be[1], &f1, &b1, 2), 0);
        backend_peer_close(&b1);

        Figures quiet = measure(&d, be[1]);
        print_figures("no flood:", quiet);

        /* a flooder reading its answers: the daemon works flat out for it */
        pid_t pid = flooder_start(fe[0], true, &count_fd);
        usleep(200000);
        uint64_t t0 = test_now_usec();
        Figures busy = measure(&d, be[1]);
        uint64_t secs_us = test_now_usec() - t0;
        uint64_t sent = flooder_stop(pid, count_fd);
        print_figures("flood, answers read:", busy);
        printf("  the flooder sent %" PRIu64 " requests (%.0f per second)\n", sent,
               sent * 1e6 / (double) (secs_us + 200000));
        ASSERT(sent > 10000);

        /* a flooder that never reads: paused once its answers pile up, the daemon's memory
         * stays bounded, and the others still go on */
        long rss0 = daemon_rss_kib(&d);
        pid = flooder_start(fe[0], false, &count_fd);
        usleep(500000);
        Figures stuck = measure(&d, be[1]);
        long rss1 = daemon_rss_kib(&d);
        sent = flooder_stop(pid, count_fd);
        print_figures("flood, answers never read:", stuck);
        printf("  the flooder got %" PRIu64 " requests in before it was paused; daemon RSS %ld -> %ld KiB\n",
               sent, rss0, rss1);
        ASSERT(rss1 - rss0 < 16 * 1024);
        ASSERT(daemon_log_wait(&d, "port0: front-end disconnected", 2000));

        char ctl[128];
        snprintf(ctl, sizeof(ctl), "%s/control", d.dir);
        int64_t throttled = control_port_counter(ctl, "port0", "throttled");
        printf("  port0 was paused %" PRId64 " times\n", throttled);
        ASSERT(throttled >= 1);

        /* port1 never noticed: its front-end is still there and answered */
        char *log = daemon_log_read(&d);
        ASSERT(!strstr(log, "port1: front-end disconnected"));
        free(log);
        VuMsg m, reply;
        vu_msg_init(&m, VU_GET_FEATURES, 0);
        ASSERT_EQ(frontend_peer_request(&f1, &m, &reply), 0);
        frontend_peer_close(&f1);
        ASSERT_EQ(daemon_stop(&d), 0);
}

int main(void) {
        signal(SIGPIPE, SIG_IGN);
        static const TestCase cases[] = {
                TEST_CASE(test_flood),
        };
        return run_tests(cases, ELEMENTSOF(cases));
}
