/* SPDX-License-Identifier: MIT */
/* vhost-recond killed with SIGKILL at random moments, CRASHES times (default 200), under the
 * fd store stand-in (fdstore-standin.h), while a C-peer front-end sets up, changes and tears
 * down its device and a C-peer back-end flaps. After each crash and restart:
 *   - the front-end kept its connection (it still gets answers), unless the daemon logged
 *     that the kill caught the front-end's stream mid-message ("position is unknown"),
 *     which is counted and printed;
 *   - the next replay to a fresh back-end is exact: the same memory fd, the same kick and
 *     call eventfds (the very files, compared with kcmp), the vring bases from guest memory,
 *     the enables, features and status;
 *   - no fd leaks: the daemon's fds and the store's are what they were after the first
 *     crash, with the same device.
 * Prints the restart time (SIGKILL to READY=1) as min/median/max. */
#include <errno.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "daemon-harness.h"
#include "fdstore-standin.h"
#include "io.h"
#include "macro.h"
#include "peer.h"
#include "tests.h"

#define N_RINGS 2
#define PF (VU_BIT(VU_PF_MQ) | VU_BIT(VU_PF_REPLY_ACK) | VU_BIT(VU_PF_STATUS) | VU_BIT(VU_PF_BACKEND_REQ))

/* What the back-end was told since it connected. */
typedef struct Seen {
        int mem_fd;
        VuMemRegion region;
        int call[N_RINGS], kick[N_RINGS];
        int64_t base[N_RINGS];
        int enabled[N_RINGS];
        uint64_t features;
        int status;
        unsigned messages;
} Seen;

typedef struct Backend {
        pthread_t thread;
        pthread_mutex_t lock;
        char path[128];
        int fd;
        uint64_t pf;
        Seen seen;
        unsigned connects;
        uint64_t last_message_usec;
        bool flap, stop;
} Backend;

static bool same_file(int a, int b) {
        pid_t me = getpid();
        return a >= 0 && b >= 0 && syscall(SYS_kcmp, me, me, KCMP_FILE, a, b) == 0;
}

static void seen_init(Seen *s) {
        s->mem_fd = -1;
        for (unsigned i = 0; i < N_RINGS; i++)
                s->call[i] = s->kick[i] = -1;
}

static void seen_reset(Seen *s) {
        safe_close(s->mem_fd);
        for (unsigned i = 0; i < N_RINGS; i++) {
                safe_close(s->call[i]);
                safe_close(s->kick[i]);
        }
        memset(s, 0, sizeof(*s));
        s->mem_fd = -1;
        s->status = -1;
        for (unsigned i = 0; i < N_RINGS; i++) {
                s->call[i] = s->kick[i] = -1;
                s->base[i] = -1;
                s->enabled[i] = -1;
        }
}

static void set_fd(int *slot, const VuMsg *m) {
        safe_close(*slot);
        *slot = m->n_fds ? fcntl(m->fds[0], F_DUPFD_CLOEXEC, 3) : -1;
}

static int answer(int fd, const VuMsg *req, uint64_t v) {
        VuMsg r;
        vu_msg_init_u64(&r, req->hdr.request, v);
        r.hdr.flags |= VU_FLAG_REPLY;
        return vu_send_blocking(fd, &r);
}

/* Answers like DPDK's vhost library, and records what a replay must get right. */
static int serve(Backend *b, VuMsg *m) {
        Seen *s = &b->seen;
        unsigned idx = m->payload.state.index;
        int r = 0;

        pthread_mutex_lock(&b->lock);
        s->messages++;
        b->last_message_usec = test_now_usec();
        switch (m->hdr.request) {
        case VU_GET_FEATURES:
                r = answer(b->fd, m, NET_TEST_FEATURES);
                break;
        case VU_GET_PROTOCOL_FEATURES:
                r = answer(b->fd, m, PF);
                break;
        case VU_GET_QUEUE_NUM:
                r = answer(b->fd, m, 8);
                break;
        case VU_GET_STATUS:
                r = answer(b->fd, m, 0xf);
                break;
        case VU_GET_VRING_BASE: {
                VuMsg a;
                vu_msg_init_state(&a, VU_GET_VRING_BASE, idx, 100 + idx);
                a.hdr.flags |= VU_FLAG_REPLY;
                r = vu_send_blocking(b->fd, &a);
                break;
        }
        case VU_SET_PROTOCOL_FEATURES:
                b->pf = m->payload.u64;
                break;
        case VU_SET_FEATURES:
                s->features = m->payload.u64;
                break;
        case VU_SET_STATUS:
                s->status = (int) m->payload.u64;
                break;
        case VU_SET_MEM_TABLE:
                set_fd(&s->mem_fd, m);
                s->region = m->payload.memory.regions[0];
                break;
        case VU_SET_VRING_CALL:
        case VU_SET_VRING_KICK:
                idx = m->payload.u64 & 0xff;
                if (idx < N_RINGS)
                        set_fd(m->hdr.request == VU_SET_VRING_CALL ? &s->call[idx] : &s->kick[idx], m);
                break;
        case VU_SET_VRING_BASE:
                if (idx < N_RINGS)
                        s->base[idx] = m->payload.state.num;
                break;
        case VU_SET_VRING_ENABLE:
                if (idx < N_RINGS)
                        s->enabled[idx] = (int) m->payload.state.num;
                break;
        default:
                break;
        }
        pthread_mutex_unlock(&b->lock);
        if (r >= 0 && vu_msg_needs_reply(m) && !vu_request_has_reply(m->hdr.request) && (b->pf & VU_BIT(VU_PF_REPLY_ACK)))
                r = answer(b->fd, m, 0);
        return r;
}

static void *backend_run(void *userdata) {
        Backend *b = userdata;

        while (!__atomic_load_n(&b->stop, __ATOMIC_ACQUIRE)) {
                if (b->fd < 0) {
                        int fd = peer_connect(b->path, 20);
                        if (fd < 0)
                                continue;
                        pthread_mutex_lock(&b->lock);
                        seen_reset(&b->seen);
                        b->pf = 0;
                        b->fd = fd;
                        b->connects++;
                        pthread_mutex_unlock(&b->lock);
                }
                if (__atomic_exchange_n(&b->flap, false, __ATOMIC_ACQ_REL)) {
                        b->fd = safe_close(b->fd);
                        continue;
                }
                struct pollfd p = { .fd = b->fd, .events = POLLIN };
                if (poll(&p, 1, 2) <= 0)
                        continue;
                const char *reason = NULL;
                VuMsg m;
                int r = vu_recv_blocking(b->fd, &m, 1000, &reason);
                if (r >= 0) {
                        r = serve(b, &m);
                        vu_msg_close_fds(&m);
                }
                if (r < 0)
                        b->fd = safe_close(b->fd);
        }
        b->fd = safe_close(b->fd);
        return NULL;
}

typedef struct Rig {
        Daemon d;               /* paths only: the stand-in runs the daemon */
        Standin sd;
        char fe_path[128];
        FrontendPeer fe;
        Backend be;
        int enabled[N_RINGS];
        size_t log_seen;
} Rig;

static void set_used_indexes(Rig *r) {
        for (unsigned i = 0; i < N_RINGS; i++)
                frontend_peer_set_used_idx(&r->fe, i, (uint16_t) (100 + i));
}

static int frontend_setup(Rig *r) {
        frontend_peer_close(&r->fe);
        int k = frontend_peer_open(&r->fe, r->fe_path, 1u << 20);
        if (k < 0)
                return k;
        r->fe.want_protocol_features = PF;
        k = frontend_peer_setup(&r->fe, N_RINGS, 256, NET_TEST_FEATURES);
        if (k < 0)
                return k;
        set_used_indexes(r);
        for (unsigned i = 0; i < N_RINGS; i++)
                r->enabled[i] = 1;
        return 0;
}

static int request_ack(Rig *r, VuMsg *m) {
        VuMsg reply;
        m->hdr.flags |= VU_FLAG_NEED_REPLY;
        int k = frontend_peer_request(&r->fe, m, &reply);
        if (k < 0)
                return k;
        return reply.payload.u64 == 0 ? 0 : -EPROTO;
}

static int change_call(Rig *r, unsigned ring) {
        int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        VuMsg m;
        vu_msg_init_u64(&m, VU_SET_VRING_CALL, ring);
        m.fds[0] = fd;
        m.n_fds = 1;
        int k = request_ack(r, &m);
        if (k < 0) {
                close(fd);
                return k;
        }
        safe_close(r->fe.call[ring]);
        r->fe.call[ring] = fd;
        return 0;
}

static int toggle_enable(Rig *r, unsigned ring) {
        VuMsg m;
        vu_msg_init_state(&m, VU_SET_VRING_ENABLE, ring, !r->enabled[ring]);
        int k = request_ack(r, &m);
        if (k == 0)
                r->enabled[ring] = !r->enabled[ring];
        return k;
}

static bool log_has_since(Rig *r, const char *needle) {
        char *log = daemon_log_read(&r->d);
        bool hit = strlen(log) >= r->log_seen && strstr(log + r->log_seen, needle);
        free(log);
        return hit;
}

/* A fresh back-end gets a replay: wait for it to be whole and quiet, then compare. */
static void check_replay_exact(Rig *r, unsigned iteration) {
        Backend *b = &r->be;
        unsigned connects;

        pthread_mutex_lock(&b->lock);
        connects = b->connects;
        pthread_mutex_unlock(&b->lock);
        __atomic_store_n(&b->flap, true, __ATOMIC_RELEASE);
        for (int waited = 0;; waited++) {
                pthread_mutex_lock(&b->lock);
                bool done = b->connects > connects && b->seen.status == 0xf &&
                            test_now_usec() - b->last_message_usec > 30000;
                pthread_mutex_unlock(&b->lock);
                if (done)
                        break;
                if (waited > 5000) {
                        fprintf(stderr, "iteration %u: no whole replay within 5 s\n", iteration);
                        ASSERT(false);
                }
                usleep(1000);
        }
        pthread_mutex_lock(&b->lock);
        const Seen *s = &b->seen;
        if (!same_file(s->mem_fd, r->fe.memfd))
                fprintf(stderr, "iteration %u: replayed memory is not the front-end's\n", iteration);
        ASSERT(same_file(s->mem_fd, r->fe.memfd));
        ASSERT_EQ(s->region.memory_size, r->fe.mem_size);
        ASSERT_EQ(s->region.userspace_addr, r->fe.uaddr);
        ASSERT_EQ(s->features, NET_TEST_FEATURES);
        ASSERT_EQ(s->status, 0xf);
        for (unsigned i = 0; i < N_RINGS; i++) {
                if (!same_file(s->call[i], r->fe.call[i]) || !same_file(s->kick[i], r->fe.kick[i]) ||
                    s->enabled[i] != r->enabled[i] || s->base[i] != 100 + i)
                        fprintf(stderr, "iteration %u ring %u: call %s, kick %s, enabled %d (want %d), base %lld\n",
                                iteration, i, same_file(s->call[i], r->fe.call[i]) ? "same" : "DIFFERENT",
                                same_file(s->kick[i], r->fe.kick[i]) ? "same" : "DIFFERENT", s->enabled[i],
                                r->enabled[i], (long long) s->base[i]);
                ASSERT(same_file(s->call[i], r->fe.call[i]));
                ASSERT(same_file(s->kick[i], r->fe.kick[i]));
                ASSERT_EQ(s->enabled[i], r->enabled[i]);
                ASSERT_EQ(s->base[i], 100 + i);
        }
        pthread_mutex_unlock(&b->lock);
}

typedef struct Killer {
        Standin *sd;
        unsigned delay_usec;
        uint64_t killed_usec;
        pid_t victim;
} Killer;

static void *killer_run(void *userdata) {
        Killer *k = userdata;
        usleep(k->delay_usec);
        k->victim = standin_pid(k->sd);
        k->killed_usec = test_now_usec();
        if (k->victim > 0)
                kill(k->victim, SIGKILL);
        return NULL;
}

/* How many times needle is in log. */
static unsigned count_in(const char *log, const char *needle) {
        unsigned n = 0;
        for (const char *p = log; (p = strstr(p, needle)); p++)
                n++;
        return n;
}

static int count_fds(pid_t pid) {
        Daemon d = { .pid = pid };
        return daemon_fd_count(&d);
}

int main(void) {
        unsigned crashes = getenv("CRASHES") ? (unsigned) atoi(getenv("CRASHES")) : 200;
        unsigned seed = getenv("SEED") ? (unsigned) atoi(getenv("SEED")) : (unsigned) time(NULL);
        unsigned dropped = 0, ops[4] = {}, ops_failed = 0, unstored = 0;  /* ops_failed: drops seen by the op itself */
        uint64_t *restart = calloc(crashes + 1, sizeof(uint64_t));
        int base_fds = -1;
        size_t base_store = 0;
        Rig r = {};

        signal(SIGPIPE, SIG_IGN);
        printf("seed %u (SEED= to repeat), %u crashes\n", seed, crashes);
        strcpy(r.d.dir, "/tmp/vr-crash-XXXXXX");
        ASSERT(mkdtemp(r.d.dir));
        snprintf(r.d.conf, sizeof(r.d.conf), "%s/vhost-recon.conf", r.d.dir);
        snprintf(r.d.log, sizeof(r.d.log), "%s/daemon.log", r.d.dir);
        daemon_write_config(&r.d, 1, "reply_timeout_ms = 2000;", NULL, "server", "server", 100);
        daemon_path(&r.d, 0, false, r.fe_path, sizeof(r.fe_path));
        daemon_path(&r.d, 0, true, r.be.path, sizeof(r.be.path));
        ASSERT_EQ(standin_start(&r.sd, r.d.dir, r.d.conf, r.d.log), 0);
        ASSERT(standin_wait_ready(&r.sd, 1, 5000));

        pthread_mutex_init(&r.be.lock, NULL);
        r.be.fd = -1;
        seen_init(&r.be.seen);
        seen_reset(&r.be.seen);
        ASSERT_EQ(pthread_create(&r.be.thread, NULL, backend_run, &r.be), 0);
        /* frontend_setup() closes what the last set-up left: nothing yet (not fd 0) */
        r.fe.fd = r.fe.memfd = r.fe.inflight_fd = r.fe.backend_req_fd = r.fe.backend_req_send = -1;
        for (unsigned i = 0; i < PEER_MAX_RINGS; i++)
                r.fe.kick[i] = r.fe.call[i] = -1;
        ASSERT_EQ(frontend_setup(&r), 0);
        check_replay_exact(&r, 0);

        for (unsigned i = 1; i <= crashes; i++) {
                Killer k = { .sd = &r.sd, .delay_usec = rand_r(&seed) % 3000 };
                pthread_t kt;
                unsigned op = rand_r(&seed) % 8;
                unsigned starts = r.sd.starts;
                int res = 0;

                ASSERT_EQ(pthread_create(&kt, NULL, killer_run, &k), 0);
                /* the front-end changes its device, or sets it up again, while the back-end flaps */
                switch (op) {
                case 0: case 1: case 2:
                        ops[0]++;
                        res = change_call(&r, rand_r(&seed) % N_RINGS);
                        break;
                case 3: case 4:
                        ops[1]++;
                        res = toggle_enable(&r, rand_r(&seed) % N_RINGS);
                        break;
                case 5: case 6:
                        ops[2]++;
                        __atomic_store_n(&r.be.flap, true, __ATOMIC_RELEASE);
                        res = change_call(&r, rand_r(&seed) % N_RINGS);
                        break;
                default:
                        ops[3]++;
                        res = frontend_setup(&r);
                        break;
                }
                pthread_join(kt, NULL);
                ASSERT(k.victim > 0);
                /* restarted and serving */
                for (int w = 0; w < 5000 && r.sd.starts == starts; w++)
                        usleep(100);
                ASSERT(r.sd.starts > starts);
                ASSERT(standin_wait_ready(&r.sd, r.sd.starts, 5000));
                restart[i] = test_now_usec() - k.killed_usec;

                /* the front-end still has its connection and is answered */
                VuMsg m, reply;
                vu_msg_init(&m, VU_GET_FEATURES, 0);
                if (res < 0 || frontend_peer_request(&r.fe, &m, &reply) < 0) {
                        usleep(20000);
                        /* only what the daemon says it did on purpose: a stream caught mid-message, or a
                         * connection made in the instant before the crash that no state named yet */
                        bool explained = log_has_since(&r, "position is unknown") ||
                                         log_has_since(&r, "front-end connection is not in the fd store") ||
                                         log_has_since(&r, "could not be replayed");
                        /* The window the README names: the front-end set up again (op 7: a new
                         * connection) and the kill came between accept() and the commit that
                         * stores it (before or after the old process logged the connect): the
                         * new process found no front-end in any state. */
                        if (!explained && op >= 7 && log_has_since(&r, "0 ports restored")) {
                                explained = true;
                                unstored++;
                        }
                        if (!explained) {
                                char *log = daemon_log_read(&r.d);
                                fprintf(stderr, "iteration %u (op %u, kill after %u µs): the front-end lost its "
                                        "connection (%d) and the daemon did not say why\n%s\n", i, op, k.delay_usec,
                                        res, log + (strlen(log) > 4000 ? strlen(log) - 4000 : 0));
                                free(log);
                                ASSERT(false);
                        }
                        ops_failed += res < 0;
                        dropped++;
                        ASSERT_EQ(frontend_setup(&r), 0);
                }
                check_replay_exact(&r, i);

                usleep(20000);  /* the commits after the replay */
                pid_t pid = standin_pid(&r.sd);
                int n_fds = count_fds(pid);
                size_t n_store = standin_count(&r.sd);
                if (base_fds < 0) {
                        base_fds = n_fds;
                        base_store = n_store;
                        printf("after the first crash: the daemon holds %d fds, the store %zu\n", n_fds, n_store);
                }
                if (n_fds != base_fds || n_store != base_store) {
                        fprintf(stderr, "iteration %u: %d fds (was %d), %zu in the store (was %zu)\n", i, n_fds,
                                base_fds, n_store, base_store);
                        char cmd[128];
                        snprintf(cmd, sizeof(cmd), "ls -l /proc/%d/fd >&2", (int) pid);
                        (void) system(cmd);
                        for (size_t f = 0; f < r.sd.n_fds; f++)
                                fprintf(stderr, "  store: %s\n", r.sd.fds[f].name);
                }
                ASSERT_EQ(n_fds, base_fds);
                ASSERT_EQ(n_store, base_store);
                char *log = daemon_log_read(&r.d);
                r.log_seen = strlen(log);
                free(log);
        }

        qsort(restart + 1, crashes, sizeof(uint64_t), test_cmp_u64);
        char *log = daemon_log_read(&r.d);
        unsigned kept_be = count_in(log, "back-end kept");
        unsigned replayed_be = count_in(log, "gets a full replay");
        unsigned journal = count_in(log, "replayed from the journal");
        unsigned mid_read = count_in(log, "died while reading the front-end");
        unsigned mid_reply = count_in(log, "died while answering on the front-end");
        unsigned mid_other = count_in(log, "died while writing or relaying on the front-end");
        unsigned not_named = count_in(log, "front-end connection is not in the fd store");
        unsigned on_socket = count_in(log, "still on the socket");
        unsigned reply_reached = count_in(log, "and the answer reached it");
        unsigned pending = count_in(log, "accepted just before the crash");
        free(log);
        printf("%u crashes (SIGKILL at 0-3 ms into: %u call changes, %u enable toggles, %u call changes while the "
               "back-end flapped, %u front-end set-ups)\n", crashes, ops[0], ops[1], ops[2], ops[3]);
        printf("front-end kept its connection: %u of %u; closed by the daemon after the crash, saying why: %u "
               "(%u seen by the request under way, %u by the next one)\n",
               crashes - dropped, crashes, dropped, ops_failed, dropped - ops_failed);
        printf("  the daemon's log after the crashes: killed while reading a request %u, while sending a reply %u, "
               "while writing or relaying %u (each closed that front-end); the state's front-end had left, not in "
               "the store %u (the test's next front-end connects anew); closes in the accept-to-store window %u\n",
               mid_read, mid_reply, mid_other, not_named, unstored);
        printf("requests read before a crash and replayed from the journal after it: %u times\n", journal);
        printf("killed between journaling a request and taking it off the socket (read again from the socket): %u; "
               "while answering, the answer found to have reached the front-end: %u; a front-end connection "
               "accepted and stored before any state named it, taken back: %u\n", on_socket, reply_reached, pending);
        printf("back-end kept across the crash: %u; closed for a full replay (mid-probe, mid-replay, mid-message): %u\n",
               kept_be, replayed_be);
        printf("every next replay exact (same memory fd, kick and call eventfds, bases, enables); fds: daemon %d, "
               "store %zu, the same after every crash\n", base_fds, base_store);
        printf("restart (SIGKILL to READY=1, stand-in restarts at once): min %.2f ms, median %.2f ms, max %.2f ms\n",
               restart[1] / 1e3, restart[1 + crashes / 2] / 1e3, restart[crashes] / 1e3);

        __atomic_store_n(&r.be.stop, true, __ATOMIC_RELEASE);
        pthread_join(r.be.thread, NULL);
        standin_stop(&r.sd);
        frontend_peer_close(&r.fe);
        seen_reset(&r.be.seen);
        if (!getenv("KEEP_TEST_LOGS")) {
                char cmd[128];
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", r.d.dir);
                (void) system(cmd);
        }
        free(restart);
        return 0;
}
