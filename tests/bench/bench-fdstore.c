/* SPDX-License-Identifier: MIT */
/* What keeping the fd store in sync costs, like for like: two vhost-recond side by side with
 * the same port and device, one under the fd store stand-in (NOTIFY_SOCKET set: the mirror
 * on), one without (off). Samples alternate between them, with the same gaps.
 *   - per setup message: a front-end request answered by the daemon (no back-end), round
 *     trip: SET_VRING_ENABLE with NEED_REPLY (state only), SET_VRING_CALL with a new eventfd
 *     (an fd taken and one released: FDSTORE + FDSTOREREMOVE);
 *   - per replay: a back-end connects, until the replay's last message (SET_STATUS) arrives;
 *   - memory: each daemon's RSS, the state memfd's bytes;
 *   - with --syscalls: strace -c on each daemon during the same workload.
 * Usage: bench-fdstore [--samples N] [--syscalls] */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon-harness.h"
#include "fdstore-standin.h"
#include "io.h"
#include "macro.h"
#include "peer.h"
#include "tests.h"

#define BATCH 50

typedef struct Side {
        const char *label;
        Daemon d;
        Standin sd;
        bool mirror;
        char fe_path[128], be_path[128];
        FrontendPeer fe;
        uint64_t *enable, *call, *replay;
        size_t n_enable, n_call, n_replay;
} Side;

static void start(Side *s, bool mirror) {
        s->mirror = mirror;
        s->label = mirror ? "mirror on " : "mirror off";
        if (!mirror) {
                setenv("VHOST_RECOND_QUIET", "1", 1);
                daemon_start(&s->d, 1, NULL);
        } else {
                strcpy(s->d.dir, "/tmp/vr-bench-fds-XXXXXX");
                ASSERT(mkdtemp(s->d.dir));
                snprintf(s->d.conf, sizeof(s->d.conf), "%s/vhost-recon.conf", s->d.dir);
                snprintf(s->d.log, sizeof(s->d.log), "%s/daemon.log", s->d.dir);
                daemon_write_config(&s->d, 1, NULL, NULL, "server", "server", 100);
                ASSERT_EQ(standin_start(&s->sd, s->d.dir, s->d.conf, s->d.log), 0);
                ASSERT(standin_wait_ready(&s->sd, 1, 5000));
                s->d.pid = standin_pid(&s->sd);
        }
        daemon_path(&s->d, 0, false, s->fe_path, sizeof(s->fe_path));
        daemon_path(&s->d, 0, true, s->be_path, sizeof(s->be_path));
        BackendPeer b;
        ASSERT_EQ(peers_setup_device(s->fe_path, s->be_path, &s->fe, &b, 2), 0);
        backend_peer_close(&b);
        usleep(50000);
}

static uint64_t batch_enable(Side *s) {
        uint64_t t0 = test_now_usec();
        for (unsigned i = 0; i < BATCH; i++) {
                VuMsg m, reply;
                vu_msg_init_state(&m, VU_SET_VRING_ENABLE, i % 2, 1);
                m.hdr.flags |= VU_FLAG_NEED_REPLY;
                ASSERT_EQ(frontend_peer_request(&s->fe, &m, &reply), 0);
        }
        return (test_now_usec() - t0) * 1000 / BATCH;   /* ns */
}

static uint64_t batch_call(Side *s) {
        uint64_t t0 = test_now_usec();
        for (unsigned i = 0; i < BATCH; i++) {
                VuMsg m, reply;
                int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                vu_msg_init_u64(&m, VU_SET_VRING_CALL, i % 2);
                m.hdr.flags |= VU_FLAG_NEED_REPLY;
                m.fds[0] = fd;
                m.n_fds = 1;
                ASSERT_EQ(frontend_peer_request(&s->fe, &m, &reply), 0);
                safe_close(s->fe.call[i % 2]);
                s->fe.call[i % 2] = fd;
        }
        return (test_now_usec() - t0) * 1000 / BATCH;
}

static uint64_t one_replay(Side *s) {
        BackendPeer b;
        uint64_t t0 = test_now_usec();
        ASSERT_EQ(backend_peer_open(&b, s->be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&b, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
        uint64_t t = test_now_usec() - t0;
        backend_peer_close(&b);
        usleep(5000);
        return t;
}

static void stats(const char *what, const char *unit, Side *sides, uint64_t *(*get)(Side *), size_t n) {
        for (int k = 0; k < 2; k++) {
                uint64_t *v = get(&sides[k]);
                qsort(v, n, sizeof(uint64_t), test_cmp_u64);
                uint64_t sum = 0;
                for (size_t i = 0; i < n; i++)
                        sum += v[i];
                printf("  %-34s %s  median %8.1f  mean %8.1f  p90 %8.1f  max %8.1f %s  (n=%zu)\n", what, sides[k].label,
                       v[n / 2] / 1e3, sum / (double) n / 1e3, v[n * 9 / 10] / 1e3, v[n - 1] / 1e3, unit, n);
        }
}

static uint64_t *get_enable(Side *s) { return s->enable; }
static uint64_t *get_call(Side *s) { return s->call; }
static uint64_t *get_replay(Side *s) { return s->replay; }

static pid_t strace_start(pid_t pid, const char *out) {
        char p[16];
        snprintf(p, sizeof(p), "%d", (int) pid);
        pid_t t = fork();
        if (t == 0) {
                execlp("strace", "strace", "-c", "-q", "-o", out, "-p", p, (char *) NULL);
                _exit(127);
        }
        usleep(300000);
        return t;
}

static void strace_stop(pid_t t, const char *out, const char *label, unsigned ops) {
        kill(t, SIGINT);
        waitpid(t, NULL, 0);
        printf("--- strace -c of the daemon, %s, %u operations:\n", label, ops);
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "sed 's/^/    /' %s", out);
        (void) system(cmd);
}

int main(int argc, char **argv) {
        size_t samples = 60;
        bool syscalls = false;
        Side sides[2] = {};

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--samples") == 0 && i + 1 < argc)
                        samples = (size_t) atoi(argv[++i]);
                else if (strcmp(argv[i], "--syscalls") == 0)
                        syscalls = true;
        }
        signal(SIGPIPE, SIG_IGN);
        start(&sides[0], true);
        start(&sides[1], false);
        for (int k = 0; k < 2; k++) {
                sides[k].enable = calloc(samples, sizeof(uint64_t));
                sides[k].call = calloc(samples, sizeof(uint64_t));
                sides[k].replay = calloc(samples, sizeof(uint64_t));
        }
        /* warm-up, then interleaved: on, off, on, off... */
        for (int k = 0; k < 2; k++) {
                (void) batch_enable(&sides[k]);
                (void) batch_call(&sides[k]);
                (void) one_replay(&sides[k]);
        }
        for (size_t i = 0; i < samples; i++)
                for (int k = 0; k < 2; k++) {
                        Side *s = &sides[(i + k) % 2];
                        s->enable[i] = batch_enable(s);
                        s->call[i] = batch_call(s);
                        s->replay[i] = one_replay(s) * 1000;
                }

        char cpus[64] = "?";
        FILE *f = popen("nproc", "r");
        if (f) {
                if (!fgets(cpus, sizeof(cpus), f))
                        strcpy(cpus, "?");
                cpus[strcspn(cpus, "\n")] = 0;
                pclose(f);
        }
        printf("vhost-recond with and without the fd store mirror: one port, a 2-ring device (C peers), "
               "%zu interleaved samples each (requests in batches of %d), %s CPUs, both daemons side by side\n",
               samples, BATCH, cpus);
        stats("SET_VRING_ENABLE+ack (state only)", "µs", sides, get_enable, samples);
        stats("SET_VRING_CALL+ack (new eventfd)", "µs", sides, get_call, samples);
        stats("replay (connect to SET_STATUS)", "µs", sides, get_replay, samples);
        for (int k = 0; k < 2; k++) {
                sides[k].d.pid = sides[k].mirror ? standin_pid(&sides[k].sd) : sides[k].d.pid;
                printf("  RSS %s: %ld KiB, %d fds\n", sides[k].label, daemon_rss_kib(&sides[k].d),
                       daemon_fd_count(&sides[k].d));
        }
        printf("  fd store (stand-in): %zu fds\n", standin_count(&sides[0].sd));

        if (syscalls)
                for (int k = 0; k < 2; k++) {
                        char out[160];
                        snprintf(out, sizeof(out), "%s/strace.out", sides[k].d.dir);
                        pid_t t = strace_start(sides[k].d.pid, out);
                        for (int i = 0; i < 4; i++) {
                                (void) batch_enable(&sides[k]);
                                (void) batch_call(&sides[k]);
                        }
                        for (int i = 0; i < 20; i++)
                                (void) one_replay(&sides[k]);
                        strace_stop(t, out, sides[k].label,
                                    4 * BATCH);
                        printf("    (that is %d SET_VRING_ENABLE, %d SET_VRING_CALL, 20 replays)\n", 4 * BATCH, 4 * BATCH);
                }

        frontend_peer_close(&sides[0].fe);
        frontend_peer_close(&sides[1].fe);
        standin_stop(&sides[0].sd);
        char *log = daemon_log_read(&sides[0].d);
        const char *line = strstr(log, "fd store: ");
        const char *last = NULL;
        while (line) {
                last = line;
                line = strstr(line + 1, "fd store: ");
        }
        if (last)
                printf("  mirror's own account: %.*s\n", (int) strcspn(last, "\n"), last);
        free(log);
        daemon_stop(&sides[1].d);
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", sides[0].d.dir);
        (void) system(cmd);
        return 0;
}
