/* SPDX-License-Identifier: MIT */
/* vhost-recon-bench: replay latency, storms, flapping, idle cost, and the same back-end peer
 * against DPDK virtio-user's own reconnect. Built on the C peers of tests/peers; not part
 * of the test run (tests/bench/run-bench.sh runs it and prints the results table).
 *
 *   vhost-recon-bench replay QUEUE_PAIRS ROUNDS
 *   vhost-recon-bench dpdk-reconnect SOCKET ROUNDS
 *   vhost-recon-bench floor ROUNDS
 *   vhost-recon-bench compare RECOND_BACKEND_SOCKET DPDK_SOCKET SAMPLES GAP_MS
 *   vhost-recon-bench storm N ROUNDS HANDOFF_MS
 *   vhost-recon-bench flap N SECONDS HANDOFF_MS
 *   vhost-recon-bench idle N SECONDS
 *   vhost-recon-bench metrics N ROUNDS SCRAPES IDLE_SECONDS
 *       metrics on HTTP: storms with and without a scraper every 100 ms (alternated), a
 *       scrape's duration and size, idle wake-ups, RSS per port against metrics off
 *   vhost-recon-bench standin CONFIG LOG DIR
 *       runs vhost-recond under the fd store stand-in (tests/integration/fdstore-standin.h:
 *       NOTIFY_SOCKET set, so the fd store mirror is on) until SIGTERM; run-compare.sh MIRROR=1
 *
 * Every line of output that starts with "result" is one figure, as key=value pairs. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "control-client.h"
#include "daemon-harness.h"
#include "http-client.h"
#include "fdstore-standin.h"
#include "io.h"
#include "macro.h"
#include "peer.h"
#include "tests.h"

#define MEM (1u << 20)
#define RING_NUM 256

/* p in [0,100]: nearest-rank percentile of a sorted array */
static uint64_t pct(const uint64_t *v, size_t n, unsigned p) {
        size_t i = (n * p + 99) / 100;
        return v[i ? i - 1 : 0];
}

static void raise_nofile(void) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return;
        /* 1024 ports take about 9 fds each in the daemon and 8 here */
        struct rlimit want = { .rlim_cur = 65536, .rlim_max = 65536 };
        if (rl.rlim_max >= 65536 || setrlimit(RLIMIT_NOFILE, &want) < 0) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
}

static void read_proc(pid_t pid, long *rss_kib, long *anon_kib, uint64_t *cpu_ticks, long *wakeups) {
        char path[64], line[512];
        snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
        FILE *f = fopen(path, "re");
        ASSERT(f);
        long vol = 0, invol = 0;
        while (fgets(line, sizeof(line), f)) {
                (void) sscanf(line, "VmRSS: %ld kB", rss_kib);
                (void) sscanf(line, "RssAnon: %ld kB", anon_kib);
                (void) sscanf(line, "voluntary_ctxt_switches: %ld", &vol);
                (void) sscanf(line, "nonvoluntary_ctxt_switches: %ld", &invol);
        }
        fclose(f);
        *wakeups = vol + invol;
        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        f = fopen(path, "re");
        ASSERT(f);
        ASSERT(fgets(line, sizeof(line), f));
        fclose(f);
        /* fields 14 and 15, after the ")" that ends the command name */
        unsigned long ut = 0, st = 0;
        char *p = strrchr(line, ')');
        ASSERT(p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2);
        *cpu_ticks = ut + st;
}

/* ---- one port: replay latency ------------------------------------------------------- */

/* Back-end connect -> SET_STATUS with DRIVER_OK received, ROUNDS times. */
static void bench_replay(unsigned queue_pairs, unsigned rounds) {
        Daemon d;
        char fe[128], be[128];
        FrontendPeer f;
        BackendPeer b;
        uint64_t *t = calloc(rounds, sizeof(uint64_t));

        setenv("VHOST_RECOND_QUIET", "1", 1);
        daemon_start(&d, 1, NULL);
        daemon_path(&d, 0, false, fe, sizeof(fe));
        daemon_path(&d, 0, true, be, sizeof(be));
        ASSERT_EQ(peers_setup_device(fe, be, &f, &b, 2 * queue_pairs), 0);
        backend_peer_close(&b);
        for (unsigned i = 0; i < rounds; i++) {
                usleep(2000);           /* the daemon has seen the last one go */
                uint64_t t0 = test_now_usec();
                ASSERT_EQ(backend_peer_open(&b, be, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
                ASSERT_EQ(backend_peer_serve_until(&b, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
                t[i] = test_now_usec() - t0;
                backend_peer_close(&b);
        }
        qsort(t, rounds, sizeof(uint64_t), test_cmp_u64);
        printf("result bench=replay queue_pairs=%u rounds=%u p50_us=%" PRIu64 " p99_us=%" PRIu64 " max_us=%" PRIu64 "\n",
               queue_pairs, rounds, pct(t, rounds, 50), pct(t, rounds, 99), t[rounds - 1]);
        frontend_peer_close(&f);
        ASSERT_EQ(daemon_stop(&d), 0);
        free(t);
}

/* The same back-end peer against DPDK virtio-user in server mode (it listens at path and
 * redoes its whole setup when a back-end connects). Timed to DRIVER_OK, as the replay is;
 * then served until 50 ms pass without a message, because with several queue pairs
 * virtio-user enables the other rings only after DRIVER_OK (through its control queue),
 * and closing earlier kills testpmd with SIGPIPE. The last message's time is "settled". */
static void bench_dpdk_reconnect(const char *path, unsigned rounds) {
        uint64_t *t = calloc(rounds, sizeof(uint64_t)), *settled = calloc(rounds, sizeof(uint64_t));
        unsigned done = 0;

        for (unsigned i = 0; i < rounds; i++) {
                BackendPeer b;
                usleep(2000);
                uint64_t t0 = test_now_usec(), last = 0;
                /* MQ and CTRL_VQ too: virtio-user with queues=4,cq=1 needs them */
                ASSERT_EQ(backend_peer_open(&b, path, NET_TEST_FEATURES | VU_BIT(17) | VU_BIT(22),
                                            NET_TEST_PROTOCOL_FEATURES), 0);
                /* DRIVER_OK: SET_STATUS with bit 2 */
                int r;
                for (;;) {
                        r = backend_peer_serve_one(&b, 10000);
                        if (r <= 0)
                                break;
                        last = test_now_usec();
                        const VuMsg *m = &b.log[b.n_log - 1];
                        if (m->hdr.request == VU_SET_STATUS && (m->payload.u64 & 4))
                                break;
                }
                if (r <= 0) {
                        fprintf(stderr, "dpdk-reconnect: round %u: %s\n", i, r == 0 ? "closed" : strerror(-r));
                        backend_peer_close(&b);
                        continue;
                }
                t[done] = last - t0;
                while (backend_peer_serve_one(&b, 50) > 0)
                        last = test_now_usec();
                settled[done++] = last - t0;
                backend_peer_close(&b);
        }
        ASSERT(done > 0);
        qsort(t, done, sizeof(uint64_t), test_cmp_u64);
        qsort(settled, done, sizeof(uint64_t), test_cmp_u64);
        printf("result bench=dpdk-reconnect rounds=%u p50_us=%" PRIu64 " p99_us=%" PRIu64 " max_us=%" PRIu64
               " settled_p50_us=%" PRIu64 "\n", done, pct(t, done, 50), pct(t, done, 99), t[done - 1],
               pct(settled, done, 50));
        free(t);
        free(settled);
}

/* The floor on this machine: a stand-in "daemon" (a child process) that has the whole
 * replay of a 1-queue-pair device built before the back-end connects, and sends it the
 * moment it accepts, corked like the daemon's, without probing or reading any answer.
 * No replay can be faster than this; it is timed by the same peer as the others. */
static void bench_floor(unsigned rounds) {
        char dir[] = "/tmp/vr-floor-XXXXXX", path[64];
        uint64_t *t = calloc(rounds, sizeof(uint64_t));

        ASSERT(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/floor.sock", dir);
        int l = peer_listen(path);
        ASSERT(l >= 0);
        pid_t pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                VuMsg msgs[24];
                size_t n = 0;
                int mem = memfd_create("guest", MFD_CLOEXEC), efd[4];
                ASSERT(mem >= 0 && ftruncate(mem, MEM) == 0);
                for (int i = 0; i < 4; i++)
                        ASSERT((efd[i] = eventfd(0, EFD_CLOEXEC)) >= 0);
                vu_msg_init(&msgs[n++], VU_SET_OWNER, 0);
                vu_msg_init(&msgs[n++], VU_GET_FEATURES, 0);
                vu_msg_init(&msgs[n++], VU_GET_PROTOCOL_FEATURES, 0);
                vu_msg_init_u64(&msgs[n++], VU_SET_PROTOCOL_FEATURES, NET_TEST_PROTOCOL_FEATURES);
                vu_msg_init(&msgs[n++], VU_GET_QUEUE_NUM, 0);
                vu_msg_init_u64(&msgs[n++], VU_SET_FEATURES, NET_TEST_FEATURES);
                VuMsg *m = &msgs[n++];
                vu_msg_init(m, VU_SET_MEM_TABLE, 0);
                m->payload.memory.nregions = 1;
                m->payload.memory.padding = 0;
                m->payload.memory.regions[0] = (VuMemRegion) { 0x100000, MEM, 0x7f0000000000, 0 };
                m->hdr.size = 8 + sizeof(VuMemRegion);
                m->fds[m->n_fds++] = mem;
                for (unsigned r = 0; r < 2; r++) {
                        vu_msg_init_state(&msgs[n++], VU_SET_VRING_NUM, r, RING_NUM);
                        vu_msg_init_state(&msgs[n++], VU_SET_VRING_BASE, r, 0);
                        m = &msgs[n++];
                        vu_msg_init(m, VU_SET_VRING_ADDR, 0);
                        m->hdr.size = sizeof(VuVringAddr);
                        m->payload.addr = (VuVringAddr) { .index = r };
                        vu_msg_init_u64(&msgs[n++], VU_SET_VRING_CALL, r);
                        msgs[n - 1].fds[msgs[n - 1].n_fds++] = efd[2 * r];
                        vu_msg_init_u64(&msgs[n++], VU_SET_VRING_KICK, r);
                        msgs[n - 1].fds[msgs[n - 1].n_fds++] = efd[2 * r + 1];
                }
                vu_msg_init_state(&msgs[n++], VU_SET_VRING_ENABLE, 0, 1);
                vu_msg_init_state(&msgs[n++], VU_SET_VRING_ENABLE, 1, 1);
                vu_msg_init_u64(&msgs[n++], VU_SET_STATUS, 0xf);
                for (size_t i = 0; i < n; i++)  /* as the daemon's replay: an ack for each */
                        if (msgs[i].hdr.request != VU_SET_PROTOCOL_FEATURES && !vu_request_has_reply(msgs[i].hdr.request))
                                msgs[i].hdr.flags |= VU_FLAG_NEED_REPLY;
                for (;;) {
                        int fd = peer_accept(l, 60000);
                        if (fd < 0)
                                _exit(0);
                        VuWriter w;
                        vu_writer_init(&w, 0);
                        vu_writer_cork(&w);
                        for (size_t i = 0; i < n; i++)
                                ASSERT_EQ(vu_writer_send(&w, fd, &msgs[i]), 0);
                        ASSERT(vu_writer_uncork(&w, fd) == 1);
                        vu_writer_clear(&w);
                        char sink[4096];        /* the answers, unread, until the peer goes */
                        while (read(fd, sink, sizeof(sink)) > 0)
                                ;
                        close(fd);
                }
        }
        close(l);
        for (unsigned i = 0; i < rounds; i++) {
                BackendPeer b;
                usleep(2000);
                uint64_t t0 = test_now_usec();
                ASSERT_EQ(backend_peer_open(&b, path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
                ASSERT_EQ(backend_peer_serve_until(&b, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
                t[i] = test_now_usec() - t0;
                backend_peer_close(&b);
        }
        kill(pid, SIGKILL);
        ASSERT(waitpid(pid, NULL, 0) == pid);
        unlink(path);
        rmdir(dir);
        qsort(t, rounds, sizeof(uint64_t), test_cmp_u64);
        printf("result bench=floor queue_pairs=1 rounds=%u p50_us=%" PRIu64 " p99_us=%" PRIu64 " max_us=%" PRIu64 "\n",
               rounds, pct(t, rounds, 50), pct(t, rounds, 99), t[rounds - 1]);
        free(t);
}

/* ---- many ports ---------------------------------------------------------------------- */

typedef struct Many {
        Daemon d;
        unsigned n;
        FrontendPeer *fe;
        BackendPeer *be;
        bool *up;
        uint64_t *t_conn, *t_up;
        unsigned *replays;
        int epfd;
} Many;

/* n ports, each with a front-end's device set up and no back-end; `settings` are more
 * daemon-wide settings (or NULL). */
static void many_start_with(Many *m, unsigned n, unsigned handoff_ms, const char *settings) {
        char extra[256], port_extra[160];

        memset(m, 0, sizeof(*m));
        m->n = n;
        raise_nofile();
        setenv("VHOST_RECOND_QUIET", "1", 1);
        snprintf(extra, sizeof(extra), "replay_handoff_ms = %u; %s", handoff_ms, settings ? settings : "");
        /* the daemon answers the front-ends' setup itself: no back-end before the storm */
        snprintf(port_extra, sizeof(port_extra), "features = 0x%" PRIx64 "L; protocol_features = 0x%" PRIx64 "L;",
                 (uint64_t) NET_TEST_FEATURES, (uint64_t) NET_TEST_PROTOCOL_FEATURES);
        daemon_start_full(&m->d, n, extra, port_extra, "server", "server", 100);
        m->fe = calloc(n, sizeof(FrontendPeer));
        m->be = calloc(n, sizeof(BackendPeer));
        m->up = calloc(n, sizeof(bool));
        m->t_conn = calloc(n, sizeof(uint64_t));
        m->t_up = calloc(n, sizeof(uint64_t));
        m->replays = calloc(n, sizeof(unsigned));
        for (unsigned i = 0; i < n; i++) {
                char fe[128];
                daemon_path(&m->d, i, false, fe, sizeof(fe));
                ASSERT_EQ(frontend_peer_open(&m->fe[i], fe, MEM), 0);
                ASSERT_EQ(frontend_peer_setup(&m->fe[i], 2, RING_NUM, UINT64_MAX), 0);
                m->be[i].fd = -1;
        }
        m->epfd = epoll_create1(EPOLL_CLOEXEC);
        ASSERT(m->epfd >= 0);
}

static void many_start(Many *m, unsigned n, unsigned handoff_ms) {
        many_start_with(m, n, handoff_ms, NULL);
}

static void many_stop(Many *m) {
        for (unsigned i = 0; i < m->n; i++) {
                if (m->be[i].fd >= 0)
                        backend_peer_close(&m->be[i]);
                frontend_peer_close(&m->fe[i]);
        }
        close(m->epfd);
        ASSERT_EQ(daemon_stop(&m->d), 0);
        free(m->fe);
        free(m->be);
        free(m->up);
        free(m->t_conn);
        free(m->t_up);
        free(m->replays);
}

static void backend_connect(Many *m, unsigned i) {
        char be[128];
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        daemon_path(&m->d, i, true, be, sizeof(be));
        strcpy(sa.sun_path, be);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT(fd >= 0);
        m->t_conn[i] = test_now_usec();
        ASSERT(connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0);
        backend_peer_init_fd(&m->be[i], fd, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES);
        m->up[i] = false;
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = i };
        ASSERT(epoll_ctl(m->epfd, EPOLL_CTL_ADD, fd, &ev) == 0);
}

/* Serves whatever is ready; returns the ports that saw DRIVER_OK in *up_now. */
static unsigned serve_ready(Many *m, int timeout_ms, unsigned *up_now, unsigned max_up) {
        struct epoll_event ev[256];
        unsigned n_up = 0;
        int k = epoll_wait(m->epfd, ev, ELEMENTSOF(ev), timeout_ms);
        for (int j = 0; j < k; j++) {
                unsigned i = ev[j].data.u32;
                BackendPeer *b = &m->be[i];
                int r = backend_peer_serve_one(b, 1000);
                if (r <= 0) {
                        fprintf(stderr, "port%u: back-end peer: %s\n", i, r == 0 ? "closed by the daemon" : strerror(-r));
                        exit(1);
                }
                const VuMsg *msg = &b->log[b->n_log - 1];
                if (msg->hdr.request == VU_SET_STATUS && msg->payload.u64 == 0xf && !m->up[i]) {
                        m->up[i] = true;
                        m->t_up[i] = test_now_usec();
                        if (n_up < max_up)
                                up_now[n_up++] = i;
                }
        }
        return n_up;
}

static void backend_close(Many *m, unsigned i) {
        (void) epoll_ctl(m->epfd, EPOLL_CTL_DEL, m->be[i].fd, NULL);
        backend_peer_close(&m->be[i]);
        m->be[i].fd = -1;
}

static double mean_u64(const uint64_t *v, size_t n) {
        double s = 0;
        for (size_t i = 0; i < n; i++)
                s += v[i];
        return s / n;
}

/* Every back-end connects at once; time until all saw DRIVER_OK, and each port's wait. */
static void bench_storm(unsigned n, unsigned rounds, unsigned handoff_ms) {
        Many m;
        uint64_t *all_up = calloc(rounds, sizeof(uint64_t));
        uint64_t *wait = calloc((size_t) n * rounds, sizeof(uint64_t));
        unsigned up_now[256];

        many_start(&m, n, handoff_ms);
        for (unsigned r = 0; r < rounds; r++) {
                uint64_t t0 = test_now_usec();
                for (unsigned i = 0; i < n; i++)
                        backend_connect(&m, i);
                unsigned up = 0;
                while (up < n)
                        up += serve_ready(&m, 5000, up_now, ELEMENTSOF(up_now));
                uint64_t last = 0;
                for (unsigned i = 0; i < n; i++) {
                        wait[(size_t) r * n + i] = m.t_up[i] - m.t_conn[i];
                        last = MAX(last, m.t_up[i]);
                }
                all_up[r] = last - t0;
                for (unsigned i = 0; i < n; i++)
                        backend_close(&m, i);
                usleep(300000);         /* every link down again */
        }
        size_t nw = (size_t) n * rounds;
        qsort(wait, nw, sizeof(uint64_t), test_cmp_u64);
        qsort(all_up, rounds, sizeof(uint64_t), test_cmp_u64);
        double mean = mean_u64(wait, nw);
        printf("result bench=storm ports=%u rounds=%u handoff_ms=%u all_up_p50_us=%" PRIu64 " all_up_max_us=%" PRIu64
               " wait_min_us=%" PRIu64 " wait_mean_us=%.0f wait_p99_us=%" PRIu64 " wait_max_us=%" PRIu64
               " max_over_mean=%.2f\n",
               n, rounds, handoff_ms, pct(all_up, rounds, 50), all_up[rounds - 1], wait[0], mean, pct(wait, nw, 99),
               wait[nw - 1], wait[nw - 1] / mean);
        many_stop(&m);
        free(all_up);
        free(wait);
}

typedef struct ControlProbe {
        char path[160];
        atomic_bool stop;
        uint64_t *lat, *parse;
        size_t n, cap;
} ControlProbe;

/* ListPorts every 10 ms until stopped. Timed twice: the control socket's latency, from
 * connect() to the reply's last byte (its NUL), and apart from it the json-c parse of the
 * reply here, which is the client's own work (vhostctl does the same). */
static void *control_probe(void *userdata) {
        ControlProbe *cp = userdata;
        size_t allocated = 1 << 20;
        char *buf = malloc(allocated);

        ASSERT(buf);
        while (!atomic_load(&cp->stop)) {
                ControlClient c;
                size_t have = 0;

                uint64_t t0 = test_now_usec();
                ASSERT_EQ(control_client_open(&c, cp->path), 0);
                ASSERT_EQ(control_client_call(&c, "io.vhostrecon.ListPorts", NULL, false), 0);
                do {    /* the reply as bytes: its parse is timed apart */
                        if (have == allocated)
                                ASSERT(buf = realloc(buf, allocated *= 2));
                        ssize_t n = recv(c.fd, buf + have, allocated - have, 0);
                        ASSERT(n > 0);
                        have += n;
                } while (buf[have - 1] != 0);
                uint64_t t1 = test_now_usec();
                control_client_close(&c);
                json_object *r = json_tokener_parse(buf);
                ASSERT(r && json_object_object_get(json_object_object_get(r, "parameters"), "ports"));
                json_object_put(r);
                uint64_t t2 = test_now_usec();
                if (cp->n < cp->cap) {
                        cp->lat[cp->n] = t1 - t0;
                        cp->parse[cp->n++] = t2 - t1;
                }
                usleep(10000);
        }
        free(buf);
        return NULL;
}

/* Every back-end reconnects as soon as its replay is done, for `secs` seconds; replays per
 * port, and the control socket's ListPorts latency meanwhile. */
static void bench_flap(unsigned n, unsigned secs, unsigned handoff_ms) {
        Many m;
        ControlProbe cp = { .cap = 100000 };
        pthread_t thread;
        unsigned up_now[256];

        many_start(&m, n, handoff_ms);
        snprintf(cp.path, sizeof(cp.path), "%s/control", m.d.dir);
        cp.lat = calloc(cp.cap, sizeof(uint64_t));
        cp.parse = calloc(cp.cap, sizeof(uint64_t));
        ASSERT(pthread_create(&thread, NULL, control_probe, &cp) == 0);

        uint64_t end = test_now_usec() + (uint64_t) secs * 1000000;
        for (unsigned i = 0; i < n; i++)
                backend_connect(&m, i);
        while (test_now_usec() < end) {
                unsigned k = serve_ready(&m, 100, up_now, ELEMENTSOF(up_now));
                for (unsigned j = 0; j < k; j++) {
                        unsigned i = up_now[j];
                        m.replays[i]++;
                        backend_close(&m, i);
                        backend_connect(&m, i);
                }
        }
        atomic_store(&cp.stop, true);
        pthread_join(thread, NULL);

        unsigned min = UINT32_MAX, max = 0;
        uint64_t total = 0;
        for (unsigned i = 0; i < n; i++) {
                min = MIN(min, m.replays[i]);
                max = MAX(max, m.replays[i]);
                total += m.replays[i];
        }
        double mean = (double) total / n;
        qsort(cp.lat, cp.n, sizeof(uint64_t), test_cmp_u64);
        qsort(cp.parse, cp.n, sizeof(uint64_t), test_cmp_u64);
        printf("result bench=flap ports=%u seconds=%u handoff_ms=%u replays_total=%" PRIu64
               " per_port_min=%u per_port_mean=%.1f per_port_max=%u min_over_mean=%.2f"
               " list_calls=%zu list_p50_us=%" PRIu64 " list_p99_us=%" PRIu64 " list_max_us=%" PRIu64
               " parse_p50_us=%" PRIu64 " parse_p99_us=%" PRIu64 "\n",
               n, secs, handoff_ms, total, min, mean, max, min / mean, cp.n, pct(cp.lat, cp.n, 50),
               pct(cp.lat, cp.n, 99), cp.lat[cp.n - 1], pct(cp.parse, cp.n, 50), pct(cp.parse, cp.n, 99));
        free(cp.lat);
        free(cp.parse);
        many_stop(&m);
}

/* Memory per idle port, and the CPU an idle daemon uses. */
static void bench_idle(unsigned n, unsigned secs) {
        Daemon d1;
        Many m;
        long rss1 = 0, anon1 = 0, rss_cfg = 0, anon_cfg = 0, rss_dev = 0, anon_dev = 0, w0, w1;
        uint64_t cpu0, cpu1;

        raise_nofile();
        setenv("VHOST_RECOND_QUIET", "1", 1);
        daemon_start(&d1, 1, NULL);
        usleep(200000);
        read_proc(d1.pid, &rss1, &anon1, &cpu0, &w0);
        ASSERT_EQ(daemon_stop(&d1), 0);

        Daemon dn;
        daemon_start(&dn, n, NULL);
        usleep(200000);
        read_proc(dn.pid, &rss_cfg, &anon_cfg, &cpu0, &w0);
        ASSERT_EQ(daemon_stop(&dn), 0);

        /* n ports, each with a front-end's device set up and no back-end */
        many_start(&m, n, 0);
        usleep(200000);
        read_proc(m.d.pid, &rss_dev, &anon_dev, &cpu0, &w0);
        sleep(secs);
        read_proc(m.d.pid, &rss_dev, &anon_dev, &cpu1, &w1);
        long hz = sysconf(_SC_CLK_TCK);
        printf("result bench=idle ports=%u rss_1port_kib=%ld rss_configured_kib=%ld rss_with_devices_kib=%ld"
               " per_port_configured_kib=%.1f per_port_with_device_kib=%.1f anon_per_port_with_device_kib=%.1f"
               " idle_seconds=%u cpu_ms=%.0f wakeups=%ld\n",
               n, rss1, rss_cfg, rss_dev, (double) (rss_cfg - rss1) / (n - 1), (double) (rss_dev - rss1) / (n - 1),
               (double) (anon_dev - anon1) / (n - 1), secs, (cpu1 - cpu0) * 1000.0 / hz, w1 - w0);
        many_stop(&m);
}

/* ---- metrics: a scrape's cost, and what a scraper does to replays ----------------------- */

/* GET /metrics with Connection: close: the bytes received, headers included. Fails the
 * benchmark on an answer other than 200 or one without the daemon's per-port metrics. */
static size_t scrape(uint16_t port, bool openmetrics) {
        char req[256];
        HttpAnswer a;

        int n = snprintf(req, sizeof(req), "GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n%s\r\n",
                         openmetrics ? "Accept: application/openmetrics-text; version=1.0.0\r\n" : "");
        ASSERT(http_exchange(port, req, (size_t) n, "port=\"port1\"", 10000, &a) == 0);
        if (a.status != 200 || !a.found) {
                fprintf(stderr, "scrape: %s\n", a.status == 200 ? "no metric of port1 in the answer" : "the answer is not 200");
                exit(1);
        }
        return a.bytes;
}

typedef struct Scraper {
        uint16_t port;
        atomic_bool stop, on;
        uint64_t *lat;
        size_t n, cap;
} Scraper;

/* While `on`, a scrape every 100 ms (a Prometheus with scrape_interval: 100ms). */
static void *scraper_thread(void *userdata) {
        Scraper *sc = userdata;

        /* Prometheus runs elsewhere: the client's own reading (10 MB a scrape) at nice 19
         * takes a core from no one here, and what is left is the daemon's work */
        (void) setpriority(PRIO_PROCESS, (id_t) gettid(), 19);

        while (!atomic_load(&sc->stop)) {
                if (atomic_load(&sc->on)) {
                        uint64_t t0 = test_now_usec();
                        (void) scrape(sc->port, false);
                        if (sc->n < sc->cap)
                                sc->lat[sc->n++] = test_now_usec() - t0;
                }
                usleep(100000);
        }
        return NULL;
}

/* One storm: every back-end connects at once; each port's wait (connect -> DRIVER_OK) into w. */
static void storm_round(Many *m, uint64_t *w) {
        unsigned up_now[256], up = 0;

        for (unsigned i = 0; i < m->n; i++)
                backend_connect(m, i);
        while (up < m->n)
                up += serve_ready(m, 5000, up_now, ELEMENTSOF(up_now));
        for (unsigned i = 0; i < m->n; i++) {
                w[i] = m->t_up[i] - m->t_conn[i];
                backend_close(m, i);
        }
        usleep(300000);         /* every link down again */
}

static void print_scrapes(const char *format, uint64_t *lat, size_t n, size_t bytes) {
        qsort(lat, n, sizeof(uint64_t), test_cmp_u64);
        printf("result bench=metrics-scrape format=%s scrapes=%zu bytes=%zu p50_us=%" PRIu64 " p99_us=%" PRIu64
               " max_us=%" PRIu64 "\n", format, n, bytes, pct(lat, n, 50), pct(lat, n, 99), lat[n - 1]);
}

/* N ports with a device each, metrics on HTTP:
 *  - reconnect storms without and with a scraper every 100 ms, alternated round by round
 *    (off, on, off, on, ...: the same daemon, ports, back-ends and gaps); each port's
 *    replay wait, compared at p50/p99/max;
 *  - then a scrape's duration and size (text 0.0.4 and OpenMetrics), every histogram filled;
 *  - wake-ups of the idle daemon between scrapes;
 *  - RSS against a daemon with metrics off, the same ports and devices, after the same
 *    warm-up storm, and what the scrapes added. */
/* The rest of a result line for samples without and with a scraper: p50, p99 and max of
 * each (sorted here), and the differences. */
static void print_off_on(uint64_t *off, size_t n_off, uint64_t *on, size_t n_on) {
        qsort(off, n_off, sizeof(uint64_t), test_cmp_u64);
        qsort(on, n_on, sizeof(uint64_t), test_cmp_u64);
        printf(" off_p50_us=%" PRIu64 " off_p99_us=%" PRIu64 " off_max_us=%" PRIu64
               " on_p50_us=%" PRIu64 " on_p99_us=%" PRIu64 " on_max_us=%" PRIu64
               " delta_p50_us=%" PRId64 " delta_p99_us=%" PRId64 "\n",
               pct(off, n_off, 50), pct(off, n_off, 99), off[n_off - 1], pct(on, n_on, 50), pct(on, n_on, 99),
               on[n_on - 1], (int64_t) pct(on, n_on, 50) - (int64_t) pct(off, n_off, 50),
               (int64_t) pct(on, n_on, 99) - (int64_t) pct(off, n_off, 99));
}

static void bench_metrics(unsigned n, unsigned rounds, unsigned samples, unsigned idle_secs) {
        Many m;
        Scraper sc = { .cap = 100000 };
        char settings[64];
        pthread_t thread;
        size_t nw = (size_t) n * ((rounds + 1) / 2);
        uint64_t *w_off = calloc(nw, sizeof(uint64_t)), *w_on = calloc(nw, sizeof(uint64_t));
        uint64_t *lat = calloc(samples, sizeof(uint64_t));
        size_t n_off = 0, n_on = 0, bytes = 0;
        long rss_on0, anon_on0, rss_on, anon_on, rss_off, anon_off, w0, w1, scratch;
        uint64_t cpu0, cpu1;

        ASSERT(w_off && w_on && lat);
        sc.port = http_free_port();
        sc.lat = calloc(sc.cap, sizeof(uint64_t));
        snprintf(settings, sizeof(settings), "metrics = \"127.0.0.1:%u\";", sc.port);
        many_start_with(&m, n, 0, settings);
        storm_round(&m, w_off);         /* a warm-up, not counted: every port replayed once */
        read_proc(m.d.pid, &rss_on0, &anon_on0, &cpu0, &w0);
        ASSERT(pthread_create(&thread, NULL, scraper_thread, &sc) == 0);
        for (unsigned r = 0; r < rounds; r++) {
                bool on = r % 2;
                atomic_store(&sc.on, on);
                usleep(150000);         /* the same gap each round; the scraper is at work when an "on" storm starts */
                storm_round(&m, on ? w_on + n_on : w_off + n_off);
                *(on ? &n_on : &n_off) += n;
        }
        size_t storm_scrapes = sc.n;

        /* One port's replay at a time, the other ports idle, in blocks of 20 alternated
         * without and with the scraper (a 2048-port scrape is at work most of each 100 ms) */
        unsigned blocks = 2 * rounds, per_block = 20, up_now[4];
        size_t nr = (size_t) per_block * rounds, r_off = 0, r_on = 0;
        uint64_t *t_off = calloc(nr, sizeof(uint64_t)), *t_on = calloc(nr, sizeof(uint64_t));
        ASSERT(t_off && t_on);
        for (unsigned blk = 0; blk < blocks; blk++) {
                bool on = blk % 2;
                atomic_store(&sc.on, on);
                usleep(150000);
                for (unsigned k = 0; k < per_block; k++) {
                        unsigned i = (blk * per_block + k) % n;
                        backend_connect(&m, i);
                        while (!m.up[i])
                                (void) serve_ready(&m, 5000, up_now, ELEMENTSOF(up_now));
                        *(on ? &t_on[r_on++] : &t_off[r_off++]) = m.t_up[i] - m.t_conn[i];
                        backend_close(&m, i);
                        usleep(5000);
                }
        }
        atomic_store(&sc.on, false);
        atomic_store(&sc.stop, true);
        pthread_join(thread, NULL);
        printf("result bench=metrics-replay ports=%u replays_each=%zu scrapes_during=%zu", n, r_off,
               sc.n - storm_scrapes);
        print_off_on(t_off, r_off, t_on, r_on);
        free(t_off);
        free(t_on);
        printf("result bench=metrics-storm ports=%u rounds=%u scrapes_during=%zu", n, rounds, storm_scrapes);
        print_off_on(w_off, n_off, w_on, n_on);
        if (sc.n)
                print_scrapes("text-during-storms-and-replays", sc.lat, sc.n, 0);

        for (int om = 0; om < 2; om++) {
                for (unsigned k = 0; k < samples; k++) {
                        uint64_t t0 = test_now_usec();
                        bytes = scrape(sc.port, om);
                        lat[k] = test_now_usec() - t0;
                        usleep(20000);
                }
                print_scrapes(om ? "openmetrics" : "text-0.0.4", lat, samples, bytes);
        }

        usleep(500000);         /* the last connection closed */
        read_proc(m.d.pid, &rss_on, &anon_on, &cpu0, &w0);
        sleep(idle_secs);
        read_proc(m.d.pid, &scratch, &scratch, &cpu1, &w1);
        long hz = sysconf(_SC_CLK_TCK);
        printf("result bench=metrics-idle ports=%u idle_seconds=%u wakeups=%ld wakeups_per_s=%.2f cpu_ms=%.0f\n",
               n, idle_secs, w1 - w0, (double) (w1 - w0) / idle_secs, (cpu1 - cpu0) * 1000.0 / hz);
        many_stop(&m);

        /* the same ports and devices, metrics off, after the same warm-up storm */
        many_start(&m, n, 0);
        storm_round(&m, w_off);
        read_proc(m.d.pid, &rss_off, &anon_off, &cpu0, &w0);
        many_stop(&m);
        printf("result bench=metrics-memory ports=%u rss_off_kib=%ld rss_on_kib=%ld rss_on_after_scrapes_kib=%ld"
               " on_minus_off_per_port_bytes=%.0f scrapes_added_per_port_bytes=%.0f\n",
               n, rss_off, rss_on0, rss_on, (rss_on0 - rss_off) * 1024.0 / n, (rss_on - rss_on0) * 1024.0 / n);
        free(w_off);
        free(w_on);
        free(lat);
        free(sc.lat);
}

/* ---- like for like: vhost-recond's replay against DPDK's own reconnect ---------------- */

#define COMPARE_MAX_MSGS 64

typedef struct Side {
        const char *name, *path;
        uint64_t *t;                            /* connect -> DRIVER_OK, per sample */
        uint64_t *settled;                      /* connect -> the last message (50 ms quiet) */
        uint64_t (*at)[COMPARE_MAX_MSGS];       /* connect -> each message, per sample */
        uint32_t req[COMPARE_MAX_MSGS];         /* the requests of the first sample */
        unsigned n_msgs, done;
        uint64_t connect_us;                    /* sum of the connect() calls */
} Side;

/* One back-end connection: the same fake back-end for both, timed the same way. */
static bool compare_one(Side *s) {
        BackendPeer b;
        uint64_t t0 = test_now_usec(), last = 0, dok = 0;
        unsigned k = 0;
        int r;

        /* MQ and CTRL_VQ too, which virtio-user asks for */
        if (backend_peer_open(&b, s->path, NET_TEST_FEATURES | VU_BIT(17) | VU_BIT(22), NET_TEST_PROTOCOL_FEATURES) < 0)
                return false;
        s->connect_us += test_now_usec() - t0;
        while ((r = backend_peer_serve_one(&b, dok ? 50 : 10000)) > 0) {
                last = test_now_usec();
                const VuMsg *m = &b.log[b.n_log - 1];
                if (k < COMPARE_MAX_MSGS) {
                        s->at[s->done][k] = last - t0;
                        if (s->done == 0)
                                s->req[k] = m->hdr.request;
                }
                k++;
                if (!dok && m->hdr.request == VU_SET_STATUS && (m->payload.u64 & 4))
                        dok = last;
        }
        backend_peer_close(&b);
        if (!dok)
                return false;
        if (s->done == 0)
                s->n_msgs = MIN(k, COMPARE_MAX_MSGS);
        s->t[s->done] = dok - t0;
        s->settled[s->done] = last - t0;
        s->done++;
        return true;
}

static int cmp_col(const void *a, const void *b) {
        return test_cmp_u64(a, b);
}

/* A B A B: the same peer connects to vhost-recond's back-end socket and to DPDK virtio-user
 * in server mode, GAP_MS apart every time, with the same processes running for both. */
static void bench_compare(const char *recond_path, const char *dpdk_path, unsigned samples, unsigned gap_ms) {
        Side sides[2] = { { .name = "vhost-recond", .path = recond_path }, { .name = "dpdk", .path = dpdk_path } };

        for (int i = 0; i < 2; i++) {
                sides[i].t = calloc(samples, sizeof(uint64_t));
                sides[i].settled = calloc(samples, sizeof(uint64_t));
                sides[i].at = calloc(samples, sizeof(*sides[i].at));
        }
        unsigned failed = 0;
        for (unsigned i = 0; i < samples; i++)
                for (int k = 0; k < 2; k++) {
                        usleep(gap_ms * 1000);
                        if (!compare_one(&sides[k]))
                                failed++;
                }
        for (int k = 0; k < 2; k++) {
                Side *s = &sides[k];
                ASSERT(s->done > 0);
                qsort(s->t, s->done, sizeof(uint64_t), test_cmp_u64);
                qsort(s->settled, s->done, sizeof(uint64_t), test_cmp_u64);
                printf("result bench=compare side=%s samples=%u gap_ms=%u p50_us=%" PRIu64 " p90_us=%" PRIu64
                       " max_us=%" PRIu64 " settled_p50_us=%" PRIu64 " connect_mean_us=%" PRIu64 " messages=%u\n",
                       s->name, s->done, gap_ms, pct(s->t, s->done, 50), pct(s->t, s->done, 90), s->t[s->done - 1],
                       pct(s->settled, s->done, 50), s->connect_us / s->done, s->n_msgs);
        }
        /* the timeline: each message's arrival at the back-end, p50 over the samples */
        for (int k = 0; k < 2; k++) {
                Side *s = &sides[k];
                uint64_t col[s->done], prev = 0;
                printf("timeline side=%s (p50 over %u samples, us from the back-end's connect; +gap to the previous)\n",
                       s->name, s->done);
                for (unsigned m = 0; m < s->n_msgs; m++) {
                        for (unsigned i = 0; i < s->done; i++)
                                col[i] = s->at[i][m];
                        qsort(col, s->done, sizeof(uint64_t), cmp_col);
                        uint64_t v = pct(col, s->done, 50);
                        printf("  %2u %-26s %6" PRIu64 " us  +%" PRIu64 "\n", m, vu_request_to_string(s->req[m]), v,
                               v - MIN(prev, v));
                        prev = v;
                }
        }
        if (failed)
                printf("(%u connections did not reach DRIVER_OK and are left out)\n", failed);
        for (int i = 0; i < 2; i++) {
                free(sides[i].t);
                free(sides[i].settled);
                free(sides[i].at);
        }
}

/* vhost-recond with the fd store mirror on, as systemd would run it (the stand-in plays
 * systemd's part: it keeps what FDSTORE=1 sends), until SIGTERM or SIGINT. */
static void bench_standin(const char *conf, const char *log, const char *dir) {
        static Standin sd;
        sigset_t mask;
        int sig;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        pthread_sigmask(SIG_BLOCK, &mask, NULL);        /* the stand-in's thread inherits it */
        ASSERT_EQ(standin_start(&sd, dir, conf, log), 0);
        ASSERT(standin_wait_ready(&sd, 1, 10000));
        printf("standin daemon_pid=%d\n", (int) standin_pid(&sd));
        fflush(stdout);
        sigwait(&mask, &sig);
        printf("standin fds_stored=%zu stores=%u removes=%u starts=%u\n", standin_count(&sd), sd.stores, sd.removes,
               sd.starts);
        standin_stop(&sd);
}

int main(int argc, char **argv) {
        signal(SIGPIPE, SIG_IGN);
        if (argc >= 4 && !strcmp(argv[1], "replay"))
                bench_replay(atoi(argv[2]), atoi(argv[3]));
        else if (argc >= 4 && !strcmp(argv[1], "dpdk-reconnect"))
                bench_dpdk_reconnect(argv[2], atoi(argv[3]));
        else if (argc >= 6 && !strcmp(argv[1], "compare"))
                bench_compare(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]));
        else if (argc >= 3 && !strcmp(argv[1], "floor"))
                bench_floor(atoi(argv[2]));
        else if (argc >= 5 && !strcmp(argv[1], "storm"))
                bench_storm(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
        else if (argc >= 5 && !strcmp(argv[1], "flap"))
                bench_flap(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
        else if (argc >= 5 && !strcmp(argv[1], "standin"))
                bench_standin(argv[2], argv[3], argv[4]);
        else if (argc >= 6 && !strcmp(argv[1], "metrics"))
                bench_metrics(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
        else if (argc >= 4 && !strcmp(argv[1], "idle"))
                bench_idle(atoi(argv[2]), atoi(argv[3]));
        else {
                fprintf(stderr, "usage: see the top of tests/bench/bench.c, or run tests/bench/run-bench.sh\n");
                return 2;
        }
        return 0;
}
