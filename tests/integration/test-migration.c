/* SPDX-License-Identifier: MIT */
/* Live migration through vhost-recond, with the project's C peers: the front-end's dirty
 * log (SET_LOG_BASE, SET_LOG_FD) and the start and stop of logging (LOG_ALL, VRING_F_LOG)
 * are forwarded to a connected back-end and answered as the front-end expects; while no
 * back-end is there they are answered from the shadow; a back-end connecting mid-logging
 * gets LOG_ALL and the log before any of its rings, one connecting after logging stopped
 * gets neither; a bad log is refused with its reason. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon-harness.h"
#include "dirty-log.h"
#include "macro.h"
#include "peer.h"
#include "tests.h"

#define LOG_SIZE 4096u
#define MIG_FEATURES (NET_TEST_FEATURES | VU_BIT(VU_F_LOG_ALL))

typedef struct Mig {
        Daemon d;
        char fe_path[128], be_path[128];
        FrontendPeer fe;
        BackendPeer be;
        int logfd;
} Mig;

/* A daemon, a back-end offering LOG_ALL and LOG_SHMFD, and a front-end that took them (not
 * logging yet), its two rings set up through that back-end. */
static void mig_start(Mig *t) {
        daemon_start(&t->d, 1, NULL);
        daemon_path(&t->d, 0, false, t->fe_path, sizeof(t->fe_path));
        daemon_path(&t->d, 0, true, t->be_path, sizeof(t->be_path));
        ASSERT_EQ(backend_peer_open(&t->be, t->be_path, MIG_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&t->be, VU_GET_PROTOCOL_FEATURES, UINT64_MAX, PEER_TIMEOUT_MS), 0);
        ASSERT_EQ(frontend_peer_open(&t->fe, t->fe_path, 1u << 20), 0);
        t->fe.want_protocol_features |= VU_BIT(VU_PF_LOG_SHMFD);
        ASSERT_EQ(frontend_peer_setup_while_serving(&t->fe, &t->be, 2), 0);
        ASSERT(t->fe.protocol_features & VU_BIT(VU_PF_LOG_SHMFD));
        ASSERT(daemon_log_wait(&t->d, "port0: link up", 2000));
        t->logfd = memfd_create("vhost-log", MFD_CLOEXEC);
        ASSERT(t->logfd >= 0 && ftruncate(t->logfd, LOG_SIZE) == 0);
}

static void mig_finish(Mig *t) {
        frontend_peer_close(&t->fe);
        backend_peer_close(&t->be);
        close(t->logfd);
        ASSERT_EQ(daemon_stop(&t->d), 0);
}

/* QEMU's SET_LOG_BASE: no NEED_REPLY, yet with LOG_SHMFD it waits for an answer. */
static int fe_log_base(FrontendPeer *fe, int logfd) {
        VuMsg m, r;
        vu_msg_init(&m, VU_SET_LOG_BASE, 0);
        m.hdr.size = sizeof(VuLog);
        m.payload.log = (VuLog) { .mmap_size = LOG_SIZE, .mmap_offset = 0 };
        m.fds[0] = logfd;
        m.n_fds = 1;
        int k = frontend_peer_request(fe, &m, &r);
        if (k < 0)
                return k;
        /* one answer, a u64 0, whatever shape the back-end gave its own */
        return r.hdr.request == VU_SET_LOG_BASE && (r.hdr.flags & VU_FLAG_REPLY) && r.hdr.size == 8 &&
               r.payload.u64 == 0 && r.n_fds == 0 ? 0 : -EPROTO;
}

static int fe_log_fd(FrontendPeer *fe, int efd) {
        VuMsg m, r;
        vu_msg_init(&m, VU_SET_LOG_FD, VU_FLAG_NEED_REPLY);
        m.fds[0] = efd;
        m.n_fds = 1;
        int k = frontend_peer_request(fe, &m, &r);
        return k < 0 ? k : r.payload.u64 == 0 ? 0 : -EPROTO;
}

static uint64_t addr_value(unsigned ring, bool log) {
        return ring | (uint64_t) (log ? VU_BIT(VU_VRING_F_LOG) : 0) << 32;
}

/* Logging on or off as QEMU switches it: SET_FEATURES, then every ring's address with or
 * without VHOST_VRING_F_LOG (its used ring logged at its guest address); each acked. */
static int fe_logging(FrontendPeer *fe, bool on) {
        VuMsg m, r;
        int k;

        vu_msg_init_u64(&m, VU_SET_FEATURES, NET_TEST_FEATURES | (on ? VU_BIT(VU_F_LOG_ALL) : 0));
        m.hdr.flags |= VU_FLAG_NEED_REPLY;
        if ((k = frontend_peer_request(fe, &m, &r)) < 0 || r.payload.u64 != 0)
                return k < 0 ? k : -EPROTO;
        for (unsigned i = 0; i < fe->n_rings; i++) {
                vu_msg_init(&m, VU_SET_VRING_ADDR, VU_FLAG_NEED_REPLY);
                m.hdr.size = sizeof(VuVringAddr);
                m.payload.addr = (VuVringAddr) { .index = i, .flags = on ? VU_BIT(VU_VRING_F_LOG) : 0,
                                                 .desc_user_addr = frontend_peer_desc(fe, i),
                                                 .avail_user_addr = frontend_peer_avail(fe, i),
                                                 .used_user_addr = frontend_peer_used(fe, i),
                                                 .log_guest_addr = frontend_peer_used(fe, i) - fe->uaddr };
                if ((k = frontend_peer_request(fe, &m, &r)) < 0 || r.payload.u64 != 0)
                        return k < 0 ? k : -EPROTO;
        }
        return 0;
}

/* Runs the front-end's part in a child while this process serves as the back-end until it
 * has seen (request, value). */
#define WHILE_SERVING(t, request, value, frontend_expr)                                                 \
        do {                                                                                            \
                pid_t child_ = fork();                                                                  \
                ASSERT(child_ >= 0);                                                                    \
                if (child_ == 0)                                                                        \
                        _exit((frontend_expr) == 0 ? 0 : 1);                                            \
                ASSERT_EQ(backend_peer_serve_until(&(t)->be, (request), (value), PEER_TIMEOUT_MS), 0);  \
                int status_;                                                                            \
                ASSERT(waitpid(child_, &status_, 0) == child_ && WIFEXITED(status_));                   \
                ASSERT_EQ(WEXITSTATUS(status_), 0);                                                     \
        } while (0)

static size_t find(const BackendPeer *b, size_t from, uint32_t request) {
        size_t i = backend_peer_find(b, from, request);
        if (i == SIZE_MAX)
                fprintf(stderr, "no %s after message %zu\n", vu_request_to_string(request), from);
        ASSERT(i != SIZE_MAX);
        return i;
}

/* With a back-end: everything is forwarded, the log with its fd and its answer relayed. */
static void test_forwarded(void) {
        Mig t;
        mig_start(&t);
        size_t from = t.be.n_log;
        int efd = eventfd(0, EFD_CLOEXEC);

        WHILE_SERVING(&t, VU_SET_VRING_ADDR, addr_value(1, true),
                      fe_log_base(&t.fe, t.logfd) ?: fe_log_fd(&t.fe, efd) ?: fe_logging(&t.fe, true));
        size_t i = find(&t.be, from, VU_SET_LOG_BASE);
        ASSERT_EQ(t.be.log[i].n_fds, 1);
        ASSERT_EQ(t.be.log[i].payload.log.mmap_size, LOG_SIZE);
        ASSERT_EQ(t.be.log[i].payload.log.mmap_offset, 0);
        ASSERT_EQ(t.be.log[i + 1].hdr.request, VU_SET_LOG_FD);
        ASSERT_EQ(t.be.log[i + 1].n_fds, 1);
        ASSERT_EQ(t.be.log[i + 2].hdr.request, VU_SET_FEATURES);
        ASSERT_EQ(t.be.log[i + 2].payload.u64, MIG_FEATURES);
        ASSERT_EQ(t.be.log[i + 3].hdr.request, VU_SET_VRING_ADDR);
        ASSERT_EQ(t.be.log[i + 3].payload.addr.flags, VU_BIT(VU_VRING_F_LOG));
        ASSERT_EQ(t.be.log[i + 3].payload.addr.log_guest_addr, frontend_peer_used(&t.fe, 0) - t.fe.uaddr);

        /* and off again */
        from = t.be.n_log;
        WHILE_SERVING(&t, VU_SET_VRING_ADDR, addr_value(1, false), fe_logging(&t.fe, false));
        i = find(&t.be, from, VU_SET_FEATURES);
        ASSERT_EQ(t.be.log[i].payload.u64, NET_TEST_FEATURES);
        close(efd);
        mig_finish(&t);
}

/* The switch restarts in the middle of a migration: the front-end keeps logging (answered
 * from the shadow meanwhile), and the new back-end gets LOG_ALL and the log before any
 * ring is set up, let alone kicked. */
static void test_backend_connects_mid_logging(void) {
        Mig t;
        mig_start(&t);
        backend_peer_close(&t.be);
        ASSERT(daemon_log_wait(&t.d, "port0: link down", 2000));

        /* no back-end: every answer comes from the shadow */
        ASSERT_EQ(fe_log_base(&t.fe, t.logfd), 0);
        ASSERT_EQ(fe_logging(&t.fe, true), 0);
        frontend_peer_set_used_idx(&t.fe, 0, 4321);
        frontend_peer_set_used_idx(&t.fe, 1, 1234);

        BackendPeer b;
        ASSERT_EQ(backend_peer_open(&b, t.be_path, MIG_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&b, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
        ASSERT(daemon_log_wait(&t.d, "port0: the front-end is logging", 2000));
        ASSERT(daemon_log_wait(&t.d, "port0: replay done", 2000));
        ASSERT(daemon_log_wait(&t.d, "port0: link up", 2000));
        size_t features = find(&b, 0, VU_SET_FEATURES), log = find(&b, 0, VU_SET_LOG_BASE);
        size_t first_ring = SIZE_MAX;
        for (size_t i = 0; i < b.n_log && first_ring == SIZE_MAX; i++)
                if (b.log[i].hdr.request >= VU_SET_VRING_NUM && b.log[i].hdr.request <= VU_SET_VRING_ERR)
                        first_ring = i;
        ASSERT_EQ(b.log[features].payload.u64, MIG_FEATURES);
        ASSERT(features < log);
        ASSERT(log < first_ring);
        ASSERT(first_ring < find(&b, 0, VU_SET_VRING_KICK));
        ASSERT_EQ(b.log[log].n_fds, 1);
        ASSERT_EQ(b.log[log].payload.log.mmap_size, LOG_SIZE);
        for (size_t i = first_ring; i < b.n_log; i++)
                if (b.log[i].hdr.request == VU_SET_VRING_ADDR)
                        ASSERT_EQ(b.log[i].payload.addr.flags, VU_BIT(VU_VRING_F_LOG));
        ASSERT_EQ(b.log[find(&b, 0, VU_SET_VRING_BASE)].payload.state.num, 4321);

        /* the switch dies mid-migration: said in the log */
        backend_peer_close(&b);
        ASSERT(daemon_log_wait(&t.d, "port0: back-end lost while the front-end logs (live migration)", 2000));

        /* the end of the migration: the source stops its rings, answered from the used
         * ring while no back-end is there */
        ASSERT(daemon_log_wait(&t.d, "port0: link down", 2000));
        VuMsg m, r;
        frontend_peer_set_used_idx(&t.fe, 0, 4400);
        vu_msg_init_state(&m, VU_GET_VRING_BASE, 0, 0);
        ASSERT_EQ(frontend_peer_request(&t.fe, &m, &r), 0);
        ASSERT_EQ(r.payload.state.num, 4400);
        mig_finish(&t);
}

/* After logging stopped (a cancelled migration, the source going on), a new back-end gets
 * no log and no LOG_ALL. */
static void test_no_log_after_logging_stopped(void) {
        Mig t;
        mig_start(&t);
        WHILE_SERVING(&t, VU_SET_VRING_ADDR, addr_value(1, true), fe_log_base(&t.fe, t.logfd) ?: fe_logging(&t.fe, true));
        WHILE_SERVING(&t, VU_SET_VRING_ADDR, addr_value(1, false), fe_logging(&t.fe, false));
        backend_peer_close(&t.be);
        ASSERT(daemon_log_wait(&t.d, "port0: link down", 2000));

        BackendPeer b;
        ASSERT_EQ(backend_peer_open(&b, t.be_path, MIG_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&b, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
        ASSERT(daemon_log_wait(&t.d, "port0: replay done", 2000));
        ASSERT_EQ(backend_peer_find(&b, 0, VU_SET_LOG_BASE), SIZE_MAX);
        /* the daemon never wrote into the front-end's log */
        uint8_t *lg = mmap(NULL, LOG_SIZE, PROT_READ, MAP_SHARED, t.logfd, 0);
        ASSERT(lg != MAP_FAILED);
        for (unsigned i = 0; i < LOG_SIZE; i++)
                ASSERT_EQ(lg[i], 0);
        munmap(lg, LOG_SIZE);
        ASSERT_EQ(backend_peer_find(&b, 0, VU_SET_LOG_FD), SIZE_MAX);
        ASSERT_EQ(b.log[find(&b, 0, VU_SET_FEATURES)].payload.u64, NET_TEST_FEATURES);
        for (size_t i = 0; i < b.n_log; i++)
                if (b.log[i].hdr.request == VU_SET_VRING_ADDR)
                        ASSERT_EQ(b.log[i].payload.addr.flags, 0);
        char *log = daemon_log_read(&t.d);
        ASSERT(!strstr(log, "the front-end is logging"));
        free(log);
        backend_peer_close(&b);
        mig_finish(&t);
}

/* A log that is not a mappable file of its size is refused with the reason: the front-end
 * that sent it is dropped, as for a bad memory region; the port takes the next one. */
static void test_bad_log_refused(void) {
        Mig t;
        mig_start(&t);
        backend_peer_close(&t.be);
        ASSERT(daemon_log_wait(&t.d, "port0: link down", 2000));

        int small = memfd_create("short-log", MFD_CLOEXEC);
        ASSERT(small >= 0 && ftruncate(small, LOG_SIZE / 2) == 0);
        ASSERT(fe_log_base(&t.fe, small) < 0);
        ASSERT(daemon_log_wait(&t.d, "SET_LOG_BASE refused: log fd is not a mappable file of at least offset + size bytes", 2000));
        close(small);
        frontend_peer_close(&t.fe);

        /* a front-end that never negotiated LOG_SHMFD sends a log fd: refused too */
        ASSERT_EQ(frontend_peer_open(&t.fe, t.fe_path, 1u << 20), 0);
        VuMsg m;
        vu_msg_init(&m, VU_SET_OWNER, 0);
        ASSERT_EQ(frontend_peer_request(&t.fe, &m, NULL), 0);
        ASSERT(fe_log_base(&t.fe, t.logfd) < 0);
        ASSERT(daemon_log_wait(&t.d, "SET_LOG_BASE refused: request needs a protocol feature that was not negotiated", 2000));
        mig_finish(&t);
}

RUN_TESTS(
        TEST_CASE(test_forwarded),
        TEST_CASE(test_backend_connects_mid_logging),
        TEST_CASE(test_no_log_after_logging_stopped),
        TEST_CASE(test_bad_log_refused),
)
