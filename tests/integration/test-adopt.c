/* SPDX-License-Identifier: MIT */
/* What a new vhost-recond does with the fd store after a crash, case by case, under the fd
 * store stand-in held down while the world changes:
 *   - the front-end left while the daemon was down: its connection is dropped (with a log
 *     line), the switch is closed too, and nothing of the device stays in the store;
 *   - the switch was being probed when the daemon died: it is closed, and the next one gets
 *     a full replay while the front-end stays;
 *   - a port removed from the configuration while the daemon was down: what it kept is
 *     closed and leaves the store;
 * and, with the daemon killing itself at a chosen instant (VHOST_RECOND_TEST_CRASH_FILE),
 * the instants a random kill rarely hits:
 *   - after a request was journaled, before it was taken off the socket: it is handled once;
 *   - right after a reply went out, before it was counted: kept if the reply is seen to have
 *     reached the front-end, closed with a log line if that cannot be told;
 *   - right after a front-end connection was accepted and stored, before any state named it:
 *     taken back, and its set-up goes on; also when the front-end before it left in the same
 *     instant. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <string.h>
#include <unistd.h>

#include "daemon-harness.h"
#include "fdstore-standin.h"
#include "io.h"
#include "macro.h"
#include "peer.h"
#include "tests.h"

static Daemon d;
static Standin sd;

static void crash_and(void (*while_down)(void)) {
        unsigned starts = sd.starts;
        standin_hold(&sd, true);
        kill(standin_pid(&sd), SIGKILL);
        for (int i = 0; i < 5000 && standin_pid(&sd) != -1; i++)
                usleep(1000);
        ASSERT_EQ(standin_pid(&sd), -1);
        if (while_down)
                while_down();
        standin_hold(&sd, false);
        ASSERT(standin_wait_ready(&sd, starts + 1, 5000));
        usleep(50000);  /* the adoption's commits */
}

static FrontendPeer fe;
static BackendPeer be;

/* The daemon kills itself at `point` (once): a daemon reads the point at its start, so one
 * is started to read it (the old one killed, which the adoption takes like any crash). */
static void arm_crash(const char *point) {
        char path[160];
        snprintf(path, sizeof(path), "%s/crash-at", d.dir);
        FILE *f = fopen(path, "w");
        ASSERT(f);
        fprintf(f, "%s\n", point);
        fclose(f);
        crash_and(NULL);
        ASSERT(access(path, F_OK) < 0);        /* taken */
}

static void wait_restarted(unsigned starts) {
        for (int i = 0; i < 5000 && sd.starts == starts; i++)
                usleep(1000);
        ASSERT(sd.starts > starts);
        ASSERT(standin_wait_ready(&sd, starts + 1, 5000));
        usleep(50000);
}

/* The front-end's stream is where it should be: one request, its own answer, nothing more. */
static void frontend_aligned(void) {
        VuMsg m, reply;
        vu_msg_init(&m, VU_GET_PROTOCOL_FEATURES, 0);
        ASSERT_EQ(frontend_peer_request(&fe, &m, &reply), 0);
        ASSERT_EQ(reply.hdr.request, VU_GET_PROTOCOL_FEATURES);
        ASSERT(frontend_peer_recv(&fe, &reply, 200) < 0);      /* no stray reply */
}

static unsigned count_requests(size_t from, uint32_t request) {
        unsigned n = 0;
        for (size_t i = from; i < be.n_log; i++)
                n += be.log[i].hdr.request == request;
        return n;
}

static void frontend_leaves(void) {
        frontend_peer_close(&fe);
}

static void drop_port1(void) {
        daemon_write_config(&d, 1, NULL, NULL, "server", "server", 100);
}

int main(void) {
        char fe0[128], be0[128], fe1[128], be1[128];

        signal(SIGPIPE, SIG_IGN);
        strcpy(d.dir, "/tmp/vr-adopt-XXXXXX");
        ASSERT(mkdtemp(d.dir));
        snprintf(d.conf, sizeof(d.conf), "%s/vhost-recon.conf", d.dir);
        snprintf(d.log, sizeof(d.log), "%s/daemon.log", d.dir);
        daemon_write_config(&d, 2, NULL, NULL, "server", "server", 100);
        daemon_path(&d, 0, false, fe0, sizeof(fe0));
        daemon_path(&d, 0, true, be0, sizeof(be0));
        daemon_path(&d, 1, false, fe1, sizeof(fe1));
        daemon_path(&d, 1, true, be1, sizeof(be1));
        ASSERT_EQ(standin_start(&sd, d.dir, d.conf, d.log), 0);
        ASSERT(standin_wait_ready(&sd, 1, 5000));
        usleep(50000);
        size_t idle = standin_count(&sd);      /* listeners, control socket, state files */
        printf("two idle ports: %zu fds in the store\n", idle);

        /* 1. the front-end leaves while the daemon is down */
        ASSERT_EQ(peers_setup_device(fe0, be0, &fe, &be, 2), 0);
        usleep(50000);
        size_t busy = standin_count(&sd);
        ASSERT(busy > idle);
        crash_and(frontend_leaves);
        ASSERT(daemon_log_wait(&d, "port0: its front-end connection is not in the fd store", 2000));
        ASSERT_EQ(backend_peer_wait_closed(&be, 2000), 0);     /* the switch drops the memory */
        backend_peer_close(&be);
        usleep(50000);
        ASSERT_EQ(standin_count(&sd), idle);
        printf("ok: the front-end left while the daemon was down: dropped with a log line, the switch closed, "
               "the store back to %zu fds (was %zu)\n", idle, busy);

        /* 2. the switch is in the middle of the probe when the daemon dies */
        ASSERT_EQ(peers_setup_device(fe0, be0, &fe, &be, 2), 0);
        backend_peer_close(&be);
        ASSERT(daemon_log_wait(&d, "port0: link down", 2000));
        int half = peer_connect(be0, 2000);    /* a switch that reads the probe and answers nothing */
        ASSERT(half >= 0);
        ASSERT(daemon_log_wait(&d, "port0: back-end connected", 2000));
        usleep(50000);
        crash_and(NULL);
        ASSERT(daemon_log_wait(&d, "port0: a back-end was being probed or replayed when the daemon died", 2000));
        VuMsg m;
        const char *reason;
        int r;
        while ((r = vu_recv_blocking(half, &m, 2000, &reason)) >= 0)
                vu_msg_close_fds(&m);
        ASSERT(r == -ECONNRESET);               /* closed with the old process */
        close(half);
        ASSERT_EQ(backend_peer_open(&be, be0, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&be, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
        ASSERT(backend_peer_find(&be, 0, VU_SET_MEM_TABLE) != SIZE_MAX);
        ASSERT(backend_peer_find(&be, 0, VU_SET_VRING_KICK) != SIZE_MAX);
        vu_msg_init(&m, VU_GET_FEATURES, 0);
        VuMsg reply;
        ASSERT_EQ(frontend_peer_request(&fe, &m, &reply), 0);  /* the front-end stayed */
        printf("ok: a switch caught mid-probe was closed; the next one got a full replay; the front-end stayed\n");

        /* 3. a port removed from the configuration while the daemon is down */
        FrontendPeer fe_1;
        BackendPeer be_1;
        ASSERT_EQ(peers_setup_device(fe1, be1, &fe_1, &be_1, 1), 0);
        usleep(50000);
        size_t before = standin_count(&sd);
        crash_and(drop_port1);
        ASSERT(daemon_log_wait(&d, "fd store: port port1 is no longer configured; closing what it kept", 2000));
        ASSERT(frontend_peer_recv(&fe_1, &m, 2000) < 0);       /* its connection closed */
        ASSERT_EQ(backend_peer_wait_closed(&be_1, 2000), 0);
        usleep(50000);
        size_t after = standin_count(&sd);
        ASSERT(after < before);
        printf("ok: port1 removed while the daemon was down: its connections closed, the store %zu -> %zu fds\n",
               before, after);
        frontend_peer_close(&fe_1);
        backend_peer_close(&be_1);

        /* 4. killed after a request was journaled, before it left the socket */
        size_t mark = be.n_log;
        int ev = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        ASSERT(ev >= 0);
        arm_crash("read-journaled");
        unsigned starts = sd.starts;
        vu_msg_init_u64(&m, VU_SET_VRING_CALL, 0);
        m.fds[0] = ev;
        m.n_fds = 1;
        ASSERT_EQ(frontend_peer_send(&fe, &m), 0);
        wait_restarted(starts);
        ASSERT(daemon_log_wait(&d, "port0: the request the old process was reading is still on the socket", 2000));
        frontend_aligned();
        while (backend_peer_serve_one(&be, 300) > 0)
                ;
        ASSERT_EQ(count_requests(mark, VU_SET_VRING_CALL), 1u);        /* handled once, not twice */
        printf("ok: killed between journaling a request and taking it off the socket: read again from the "
               "socket, handled once, the front-end kept\n");

        /* 5. killed right after a reply went out, before it was counted; the front-end had not
         *    read it yet: it is still queued for the front-end, so it went out */
        arm_crash("reply-sent");
        starts = sd.starts;
        vu_msg_init(&m, VU_GET_FEATURES, 0);
        ASSERT_EQ(frontend_peer_send(&fe, &m), 0);
        wait_restarted(starts);
        ASSERT(daemon_log_wait(&d, "port0: the daemon died as it answered the front-end, and the answer reached it", 2000));
        ASSERT_EQ(frontend_peer_recv(&fe, &reply, 2000), 0);
        ASSERT_EQ(reply.hdr.request, VU_GET_FEATURES);
        frontend_aligned();
        printf("ok: killed right after a reply went out: seen queued for the front-end, counted, the front-end "
               "kept\n");

        /* 6. the same, but the front-end read the answer while the daemon was down and sent
         *    nothing since: a reply never sent looks the same, so the connection is closed */
        arm_crash("reply-sent");
        starts = sd.starts;
        standin_hold(&sd, true);
        ASSERT_EQ(frontend_peer_send(&fe, &m), 0);
        ASSERT_EQ(frontend_peer_recv(&fe, &reply, 2000), 0);
        for (int i = 0; i < 5000 && standin_pid(&sd) != -1; i++)
                usleep(1000);
        ASSERT_EQ(standin_pid(&sd), -1);
        standin_hold(&sd, false);
        wait_restarted(starts);
        ASSERT(daemon_log_wait(&d, "port0: the daemon died while answering on the front-end's stream", 2000));
        ASSERT(frontend_peer_recv(&fe, &reply, 2000) < 0);     /* closed */
        ASSERT_EQ(backend_peer_wait_closed(&be, 2000), 0);
        backend_peer_close(&be);
        frontend_peer_close(&fe);
        printf("ok: killed right after a reply the front-end then read: cannot be told from one never sent; "
               "closed with a log line\n");

        /* 7. killed right after a front-end connection was accepted and stored */
        arm_crash("frontend-stored");
        starts = sd.starts;
        /* the back-end first, and its probe's end committed (the next loop iteration, the
         * daemon otherwise idle) before the front-end connects: when both came in one batch,
         * the crash at the store found the back-end still probing in the last state, and it
         * was closed for a fresh replay (right, but not what this case looks at) */
        ASSERT_EQ(backend_peer_open(&be, be0, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&be, VU_GET_PROTOCOL_FEATURES, UINT64_MAX, PEER_TIMEOUT_MS), 0);
        ASSERT(daemon_log_wait(&d, "port0: back-end ready", 2000));
        usleep(20 * 1000);
        ASSERT_EQ(frontend_peer_open(&fe, fe0, 1u << 20), 0);
        ASSERT_EQ(frontend_peer_setup_while_serving(&fe, &be, 2), 0);
        ASSERT(sd.starts > starts);
        ASSERT(daemon_log_wait(&d, "port0: the front-end connection accepted just before the crash", 2000));
        frontend_aligned();
        printf("ok: killed right after accepting a front-end: its connection taken back, its set-up went on\n");

        /* 8. the front-end leaves and the next one connects while the daemon is stopped, so
         *    that it finds both at once; killed right after the new one is stored. Whether the
         *    loss was committed before the accept (a state without a front-end) or not (the
         *    state still names the one that left: "fresh"), the new one is taken back with no
         *    device and sets one up. */
        arm_crash("frontend-stored");
        starts = sd.starts;
        pid_t pid = standin_pid(&sd);
        ASSERT_EQ(kill(pid, SIGSTOP), 0);
        frontend_peer_close(&fe);
        ASSERT_EQ(frontend_peer_open(&fe, fe0, 1u << 20), 0);
        ASSERT_EQ(kill(pid, SIGCONT), 0);
        wait_restarted(starts);
        /* (said before the line below, when it is said) */
        bool fresh = daemon_log_wait(&d, "port0: its front-end left, and the next one was accepted just before the crash", 0);
        ASSERT(daemon_log_wait(&d, "port0: the front-end connection accepted just before the crash", 2000));
        ASSERT_EQ(backend_peer_wait_closed(&be, 2000), 0);     /* it had the old device */
        backend_peer_close(&be);
        ASSERT_EQ(backend_peer_open(&be, be0, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&be, VU_GET_PROTOCOL_FEATURES, UINT64_MAX, PEER_TIMEOUT_MS), 0);
        ASSERT_EQ(frontend_peer_setup_while_serving(&fe, &be, 2), 0);
        frontend_aligned();
        printf("ok: a front-end left and the next one was accepted and stored in the same instant (%s): taken "
               "back with no device, its set-up went on\n", fresh ? "the state still named the one that left" :
                                                              "the loss was committed first");

        close(ev);
        frontend_peer_close(&fe);
        backend_peer_close(&be);
        standin_stop(&sd);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d.dir);
        if (!getenv("KEEP_TEST_LOGS"))
                (void) system(cmd);
        printf("8 passed, 0 failed\n");
        return 0;
}
