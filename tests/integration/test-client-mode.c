/* SPDX-License-Identifier: MIT */
/* mode = "client": vhost-recond connects to a peer that only listens (as qemu-storage-daemon
 * and virtiofsd do), the moment its socket appears (an inotify watch), and otherwise with a
 * capped backoff. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
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

/* One port, its front-end and back-end sides in the given modes; its two socket paths. */
static void start_port0(Daemon *d, const char *frontend_mode, const char *backend_mode, unsigned reconnect_ms,
                        char fe_path[static 128], char be_path[static 128]) {
        daemon_start_modes(d, 1, NULL, frontend_mode, backend_mode, reconnect_ms);
        daemon_path(d, 0, false, fe_path, 128);
        daemon_path(d, 0, true, be_path, 128);
}

static void test_backend_that_only_listens(void) {
        Daemon d;
        char fe_path[128], be_path[128];
        FrontendPeer fe;
        BackendPeer be;

        start_port0(&d, "server", "client", 20, fe_path, be_path);

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

        start_port0(&d, "server", "client", 20, fe_path, be_path);
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

        start_port0(&d, "client", "server", 20, fe_path, be_path);
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

/* A socket bound and not yet listening, as a peer has it between bind() and listen(). */
static int peer_bind(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        ASSERT(strlen(path) < sizeof(sa.sun_path));
        strcpy(sa.sun_path, path);
        (void) unlink(path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT(fd >= 0);
        ASSERT(bind(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0);
        return fd;
}

/* listen() on a bound socket and the wait for the daemon's connect, in µs (or -1). */
static int64_t listen_and_time_accept(int l, int timeout_ms, int *ret_fd) {
        ASSERT(listen(l, 16) == 0);
        uint64_t t0 = test_now_usec();
        int fd = peer_accept(l, timeout_ms);
        uint64_t t1 = test_now_usec();
        *ret_fd = fd;
        return fd >= 0 ? (int64_t) (t1 - t0) : -1;
}

/* With reconnect_ms = 4000 no timer is due for seconds: only the watch can connect this fast. */
#define SLOW_TIMER_MS 4000
#define BY_WATCH_MS 1000

static void attach_and_replay(Daemon *d, const char *fe_path, int fd, bool device_set_up, FrontendPeer *fe,
                              BackendPeer *be) {
        backend_peer_init_fd(be, fd, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES);
        if (!device_set_up) {
                ASSERT_EQ(backend_peer_serve_until(be, VU_GET_PROTOCOL_FEATURES, UINT64_MAX, PEER_TIMEOUT_MS), 0);
                ASSERT_EQ(frontend_peer_open(fe, fe_path, MEM), 0);
                setup_device(fe, be);
        } else {
                ASSERT_EQ(backend_peer_serve_until(be, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
                ASSERT(daemon_log_wait(d, "port0: replay done", 2000));
        }
        ASSERT(daemon_log_wait(d, "port0: link up", 2000));
}

/* The back-end's socket appears seconds after the daemon started, and again after a crash:
 * the daemon connects at listen(), not on a backoff tick (none is even due). */
static void test_connects_when_socket_appears(void) {
        Daemon d;
        char fe_path[128], be_path[128];
        FrontendPeer fe;
        BackendPeer be;
        int fd;

        start_port0(&d, "server", "client", SLOW_TIMER_MS, fe_path, be_path);
        ASSERT(daemon_log_wait(&d, "cannot reach the back-end", 2000));
        usleep(1500000);
        int l = peer_listen(be_path);
        ASSERT(l >= 0);
        uint64_t t0 = test_now_usec();
        fd = peer_accept(l, BY_WATCH_MS);
        ASSERT(fd >= 0);
        fprintf(stderr, "   first appearance: connected %" PRIu64 " us after listen()\n", test_now_usec() - t0);
        attach_and_replay(&d, fe_path, fd, false, &fe, &be);

        /* the back-end crashes, leaving its socket file behind (it refuses); 2 s later a new
         * one unlinks it and binds again, as qemu-storage-daemon does */
        frontend_peer_set_used_idx(&fe, 0, 7);
        backend_peer_close(&be);
        close(l);
        ASSERT(daemon_log_wait(&d, "port0: link down", 2000));
        usleep(2000000);
        l = peer_bind(be_path);
        int64_t us = listen_and_time_accept(l, BY_WATCH_MS, &fd);
        ASSERT(fd >= 0);
        fprintf(stderr, "   after a crash (stale socket file): connected %" PRId64 " us after listen()\n", us);
        attach_and_replay(&d, fe_path, fd, true, &fe, &be);
        size_t i = backend_peer_find(&be, 0, VU_SET_VRING_BASE);
        ASSERT(i != SIZE_MAX);
        ASSERT_EQ(be.log[i].payload.state.num, 7);

        backend_peer_close(&be);
        close(l);
        frontend_peer_close(&fe);
        ASSERT_EQ(daemon_stop(&d), 0);
}

/* bind() makes the file appear before listen(): the daemon's first connect is refused and the
 * watch's quick retries (every 2 ms, 25 of them) catch the listen(). */
static void test_bound_before_listening(void) {
        Daemon d;
        char fe_path[128], be_path[128];
        FrontendPeer fe;
        BackendPeer be;
        int fd;

        start_port0(&d, "server", "client", SLOW_TIMER_MS, fe_path, be_path);
        ASSERT(daemon_log_wait(&d, "cannot reach the back-end", 2000));
        usleep(200000);
        int l = peer_bind(be_path);
        usleep(15000);
        int64_t us = listen_and_time_accept(l, BY_WATCH_MS, &fd);
        ASSERT(fd >= 0);
        fprintf(stderr, "   bound 15 ms before listen(): connected %" PRId64 " us after listen()\n", us);
        attach_and_replay(&d, fe_path, fd, false, &fe, &be);
        backend_peer_close(&be);
        close(l);
        frontend_peer_close(&fe);
        ASSERT_EQ(daemon_stop(&d), 0);
}

/* A socket that exists and refuses for longer than the quick retries (a stale file, a peer
 * slow to listen): the backoff timer is the fallback, and it does connect. */
static void test_refusing_socket_falls_back_to_timer(void) {
        Daemon d;
        char fe_path[128], be_path[128];
        FrontendPeer fe;
        BackendPeer be;
        int fd;

        start_port0(&d, "server", "client", 50, fe_path, be_path);
        ASSERT(daemon_log_wait(&d, "cannot reach the back-end", 2000));
        int l = peer_bind(be_path);
        usleep(500000);
        int64_t us = listen_and_time_accept(l, 6000, &fd);
        ASSERT(fd >= 0);
        fprintf(stderr, "   refused for 500 ms: connected by the timer %" PRId64 " us after listen()\n", us);
        attach_and_replay(&d, fe_path, fd, false, &fe, &be);
        backend_peer_close(&be);
        close(l);
        frontend_peer_close(&fe);
        ASSERT_EQ(daemon_stop(&d), 0);
}

/* The socket's directory does not exist when the daemon starts (nor its parent): the nearest
 * existing parent is watched, then each level as it is made; and the same after the whole
 * tree was removed and made again at once (mkdir -p). */
static void test_directory_missing(void) {
        Daemon d;
        char fe_path[128], be_path[160], a[140], b[150], cmd[200];
        FrontendPeer fe;
        BackendPeer be;
        int fd;

        daemon_prepare(&d);
        daemon_path(&d, 0, false, fe_path, sizeof(fe_path));
        snprintf(a, sizeof(a), "%s/a", d.dir);
        snprintf(b, sizeof(b), "%s/b", a);
        snprintf(be_path, sizeof(be_path), "%s/be.sock", b);
        FILE *f = fopen(d.conf, "we");
        ASSERT(f);
        fprintf(f, "control = \"%s/control\";\nports = (\n  { name = \"port0\";\n"
                   "    frontend = { path = \"%s\"; mode = \"server\"; };\n"
                   "    backend = { path = \"%s\"; mode = \"client\"; reconnect_ms = %u; }; }\n);\n",
                d.dir, fe_path, be_path, SLOW_TIMER_MS);
        fclose(f);
        daemon_exec(&d);
        ASSERT(daemon_log_wait(&d, "cannot reach the back-end", 2000));

        ASSERT(mkdir(a, 0755) == 0);
        usleep(100000);
        ASSERT(mkdir(b, 0755) == 0);
        usleep(100000);
        int l = peer_bind(be_path);
        int64_t us = listen_and_time_accept(l, BY_WATCH_MS, &fd);
        ASSERT(fd >= 0);
        fprintf(stderr, "   directory made level by level: connected %" PRId64 " us after listen()\n", us);
        attach_and_replay(&d, fe_path, fd, false, &fe, &be);

        backend_peer_close(&be);
        close(l);
        ASSERT(daemon_log_wait(&d, "port0: link down", 2000));
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", a);
        ASSERT(system(cmd) == 0);
        usleep(300000);
        snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", b);
        ASSERT(system(cmd) == 0);
        l = peer_bind(be_path);
        us = listen_and_time_accept(l, BY_WATCH_MS, &fd);
        ASSERT(fd >= 0);
        fprintf(stderr, "   tree removed and made again: connected %" PRId64 " us after listen()\n", us);
        attach_and_replay(&d, fe_path, fd, true, &fe, &be);

        backend_peer_close(&be);
        close(l);
        frontend_peer_close(&fe);
        ASSERT_EQ(daemon_stop(&d), 0);
}

/* A socket path that is a symlink to a socket not made yet: its target may appear anywhere,
 * so the watch says it cannot help and the backoff timer connects. */
static void test_dangling_symlink_uses_timer(void) {
        Daemon d;
        char fe_path[128], be_path[128], target_dir[128], target[160];
        FrontendPeer fe;
        BackendPeer be;
        int fd;

        daemon_prepare(&d);
        daemon_path(&d, 0, false, fe_path, sizeof(fe_path));
        daemon_path(&d, 0, true, be_path, sizeof(be_path));
        snprintf(target_dir, sizeof(target_dir), "%s/elsewhere", d.dir);
        snprintf(target, sizeof(target), "%s/real.sock", target_dir);
        ASSERT(symlink(target, be_path) == 0);
        FILE *f = fopen(d.conf, "we");
        ASSERT(f);
        fprintf(f, "control = \"%s/control\";\nports = (\n  { name = \"port0\";\n"
                   "    frontend = { path = \"%s\"; mode = \"server\"; };\n"
                   "    backend = { path = \"%s\"; mode = \"client\"; reconnect_ms = 50; }; }\n);\n",
                d.dir, fe_path, be_path);
        fclose(f);
        daemon_exec(&d);
        ASSERT(daemon_log_wait(&d, "connecting on a timer", 2000));
        ASSERT(mkdir(target_dir, 0755) == 0);
        int l = peer_bind(target);
        int64_t us = listen_and_time_accept(l, 6000, &fd);
        ASSERT(fd >= 0);
        fprintf(stderr, "   dangling symlink made good: connected by the timer %" PRId64 " us after listen()\n", us);
        attach_and_replay(&d, fe_path, fd, false, &fe, &be);
        backend_peer_close(&be);
        close(l);
        frontend_peer_close(&fe);
        ASSERT_EQ(daemon_stop(&d), 0);
}

/* Waiting for an absent peer costs nothing: no timer ticks, the daemon sleeps in epoll. With
 * reconnect_ms = 20 the backoff alone would wake it about 7 times in these 3 s. */
static void test_idle_while_peer_absent(void) {
        Daemon d;

        daemon_start_modes(&d, 1, NULL, "client", "client", 20);
        ASSERT(daemon_log_wait(&d, "cannot reach the back-end", 2000));
        usleep(200000);
        long before = daemon_context_switches(&d);
        ASSERT(before >= 0);
        usleep(3000000);
        long after = daemon_context_switches(&d);
        fprintf(stderr, "   context switches of the idle daemon in 3 s: %ld\n", after - before);
        ASSERT(after - before <= 1);
        ASSERT_EQ(daemon_stop(&d), 0);
}

/* The front-end side in client mode (QEMU server=on) is watched the same way. */
static void test_frontend_appears(void) {
        Daemon d;
        char fe_path[128], be_path[128];
        FrontendPeer fe;
        BackendPeer be;

        start_port0(&d, "client", "server", SLOW_TIMER_MS, fe_path, be_path);
        ASSERT(daemon_log_wait(&d, "cannot reach the front-end", 2000));
        ASSERT_EQ(backend_peer_open(&be, be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&be, VU_GET_PROTOCOL_FEATURES, UINT64_MAX, PEER_TIMEOUT_MS), 0);
        usleep(1000000);
        int fd, l = peer_bind(fe_path);
        int64_t us = listen_and_time_accept(l, BY_WATCH_MS, &fd);
        ASSERT(fd >= 0);
        fprintf(stderr, "   front-end socket appeared: connected %" PRId64 " us after listen()\n", us);
        ASSERT_EQ(frontend_peer_init_fd(&fe, fd, MEM), 0);
        setup_device(&fe, &be);
        ASSERT(daemon_log_wait(&d, "port0: link up", 2000));
        frontend_peer_close(&fe);
        close(l);
        backend_peer_close(&be);
        ASSERT_EQ(daemon_stop(&d), 0);
}

int main(void) {
        signal(SIGPIPE, SIG_IGN);
        static const TestCase cases[] = {
                TEST_CASE(test_backend_that_only_listens),
                TEST_CASE(test_dying_listener),
                TEST_CASE(test_frontend_that_only_listens),
                TEST_CASE(test_connects_when_socket_appears),
                TEST_CASE(test_bound_before_listening),
                TEST_CASE(test_refusing_socket_falls_back_to_timer),
                TEST_CASE(test_directory_missing),
                TEST_CASE(test_dangling_symlink_uses_timer),
                TEST_CASE(test_idle_while_peer_absent),
                TEST_CASE(test_frontend_appears),
        };
        return run_tests(cases, ELEMENTSOF(cases));
}
