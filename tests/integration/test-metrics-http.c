/* SPDX-License-Identifier: MIT */
/* The metrics endpoint (metrics = "127.0.0.1:PORT") under bad HTTP input, while the ports
 * work: unknown paths (404), other methods (405 with Allow), a header larger than the
 * 32 KiB a connection may hold (431), bytes that are no HTTP (400); then 1000 connections
 * at once and 40 slow clients that send a header line every 200 ms, held 8 s; slow clients
 * that leave together while a scrape waits (it is answered); slow clients held longer than
 * the 10 s a request may take (cut off: a waiting scrape is answered while they still
 * send). While the 1000 connections are held
 * a switch reconnects to port0 (a full replay each time, each followed by control calls):
 * all of them are served, the daemon's fds stay within the 32 HTTP connections it allows,
 * the front-end never notices, and a scrape answers once the clients are gone. The replay
 * and control-call times before, during and after the attack are printed, one phase after
 * the other with the same daemon and peers (figures, not assertions). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "control-client.h"
#include "daemon-harness.h"
#include "http-client.h"
#include "io.h"
#include "macro.h"
#include "peer.h"
#include "tests.h"

#define FLOOD 1000
#define SLOW 40
#define HOLD_S 8
#define SLOW_HOLD_S 25        /* well past the daemon's 10 s request deadline */
#define ROUNDS 20
#define MAX_ROUNDS 5000
#define CALLS_PER_ROUND 5
#define HTTP_CONNECTION_LIMIT 32      /* daemon/metrics-server.c */

typedef struct Bench {
        Daemon d;
        uint16_t http;
        char fe_path[128], be_path[128], ctl[160];
        FrontendPeer fe;
        BackendPeer be;
} Bench;

static void print_figures(const char *what, const char *phase, uint64_t *v, size_t n) {
        qsort(v, n, sizeof(*v), test_cmp_u64);
        printf("%s %s: n=%zu p50 %llu us, max %llu us\n", what, phase, n, (unsigned long long) v[n / 2],
               (unsigned long long) v[n - 1]);
}

/* The switch leaves and a new one connects: the time from its connect to the replay's last
 * message (DRIVER_OK), which it answers. */
static uint64_t switch_reconnect(Bench *b) {
        backend_peer_close(&b->be);
        ASSERT(daemon_log_wait(&b->d, "port0: link down", 5000));
        uint64_t t0 = test_now_usec();
        ASSERT_EQ(backend_peer_open(&b->be, b->be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&b->be, VU_SET_STATUS, 0xf, 10000), 0);
        uint64_t t = test_now_usec() - t0;
        ASSERT(daemon_log_wait(&b->d, "port0: replay done in", 5000));
        ASSERT(daemon_log_wait(&b->d, "port0: link up", 5000));
        return t;
}

static uint64_t control_call(Bench *b) {
        uint64_t t0 = test_now_usec();
        json_object *r = control_call_ok(b->ctl, "io.vhostrecon.ListPorts", NULL);
        uint64_t t = test_now_usec() - t0;
        ASSERT(r);
        json_object_put(r);
        return t;
}

/* Whether the child runs still (it is not reaped: the caller waits for its status). */
static bool running(pid_t child) {
        siginfo_t si = { 0 };
        return child > 0 && waitid(P_PID, (id_t) child, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == 0;
}

/* Switch reconnects, each followed by CALLS_PER_ROUND control calls: ROUNDS of them, or
 * while `child` runs (at least ROUNDS); the daemon's fd count after each round goes to
 * *max_fds. */
static void measure(Bench *b, const char *phase, pid_t child, int *max_fds) {
        static uint64_t replay[MAX_ROUNDS], call[MAX_ROUNDS * CALLS_PER_ROUND];
        size_t n = 0, nc = 0;

        while (n < MAX_ROUNDS && (n < ROUNDS || running(child))) {
                replay[n++] = switch_reconnect(b);
                for (unsigned k = 0; k < CALLS_PER_ROUND; k++)
                        call[nc++] = control_call(b);
                int fds = daemon_fd_count(&b->d);
                if (max_fds && fds > *max_fds)
                        *max_fds = fds;
        }
        print_figures("switch reconnect to DRIVER_OK", phase, replay, n);
        print_figures("control call ListPorts", phase, call, nc);
}

static HttpAnswer request(Bench *b, const char *req, size_t len) {
        HttpAnswer a;
        ASSERT_EQ(http_exchange(b->http, req, len, "port=\"port0\"", 3000, &a), 0);
        return a;
}

static void expect_scrape(Bench *b) {
        static const char get[] = "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        HttpAnswer a = request(b, get, sizeof(get) - 1);
        ASSERT_EQ(a.status, 200);
        ASSERT(a.found);
}

static void test_bad_requests(Bench *b) {
        static const char nope[] = "GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        static const char post[] = "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
        static const char junk[] = "\x01\x02\xff not http at all\r\n\r\n";
        HttpAnswer a;

        a = request(b, nope, sizeof(nope) - 1);
        ASSERT_EQ(a.status, 404);
        a = request(b, post, sizeof(post) - 1);
        ASSERT_EQ(a.status, 405);
        ASSERT(strstr(a.head, "Allow: GET, HEAD"));
        a = request(b, junk, sizeof(junk) - 1);
        ASSERT(a.status != 200);
        printf("404 for /nope, 405 with Allow for POST, %d for bytes that are no HTTP\n", a.status);

        /* a header of 64 KiB: more than a connection may hold */
        size_t big = 64 * 1024;
        char *req = malloc(big + 128);
        ASSERT(req);
        int n = snprintf(req, 128, "GET /metrics HTTP/1.1\r\nHost: t\r\nX-Big: ");
        memset(req + n, 'a', big);
        memcpy(req + n + big, "\r\n\r\n", 4);
        a = request(b, req, (size_t) n + big + 4);
        free(req);
        ASSERT(a.status != 200);
        printf("a 64 KiB header: %d (%s)\n", a.status, a.status ? "refused" : "closed");
        expect_scrape(b);
}

/* A child for a client of the endpoint: it dies with the test and holds none of its fds
 * (the peers' connections are the parent's to close). Returns its pid, 0 in the child. */
static pid_t fork_client(void) {
        fflush(stdout);
        pid_t pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                (void) close_range(3, ~0u, 0);
        }
        return pid;
}

/* The attack, from a child: `flood` connections at once (non-blocking connects, never a
 * byte) and `slow` clients that send a header line every 200 ms, all held hold_s seconds. */
static pid_t attack(uint16_t port, unsigned flood, unsigned slow, unsigned hold_s) {
        pid_t pid = fork_client();
        if (pid > 0)
                return pid;
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < flood + slow + 64) {
                rl.rlim_cur = rl.rlim_max < flood + slow + 64 ? rl.rlim_max : flood + slow + 64;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fds[SLOW];
        unsigned opened = 0;
        ASSERT(slow <= SLOW);
        for (unsigned i = 0; i < slow; i++) {
                fds[i] = http_connect(port);
                if (fds[i] >= 0)
                        (void) !send(fds[i], "GET /metrics HTTP/1.1\r\n", 23, MSG_NOSIGNAL);
        }
        for (unsigned i = 0; i < flood; i++) {
                int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        break;
                if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0 || errno == EINPROGRESS)
                        opened++;
        }
        printf("attack: %u connections opened at once, %u slow clients\n", opened, slow);
        fflush(stdout);
        for (unsigned t = 0; t < hold_s * 5; t++) {
                usleep(200 * 1000);
                for (unsigned i = 0; i < slow; i++)
                        if (fds[i] >= 0)
                                (void) !send(fds[i], "X-Slow: 1\r\n", 11, MSG_NOSIGNAL);
        }
        _exit(0);
}

/* A scrape secs into the attack, from a child (its connect may wait for the kernel's
 * backlog, which the flood filled): what it got, and after how long. Exits 0 for a 200
 * with the ports' metrics. */
static pid_t scrape_later(uint16_t port, unsigned secs) {
        static const char get[] = "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        pid_t pid = fork_client();
        if (pid > 0)
                return pid;
        sleep(secs);
        HttpAnswer a;
        uint64_t t0 = test_now_usec();
        int r = http_exchange(port, get, sizeof(get) - 1, "port=\"port0\"", 20000, &a);
        bool ok = r == 0 && a.status == 200 && a.found;
        printf("a scrape %u s into the attack: %s after %.2f s\n", secs,
               r < 0 ? strerror(-r) : ok ? "200 with the ports' metrics" : a.status ? "an error status" : "no answer",
               (test_now_usec() - t0) / 1e6);
        fflush(stdout);
        _exit(ok ? 0 : 1);
}

int main(void) {
        Bench b;
        char extra[96];
        int fds_idle, fds_max = 0, status;

        signal(SIGPIPE, SIG_IGN);
        b.http = http_free_port();
        snprintf(extra, sizeof(extra), "metrics = \"127.0.0.1:%u\";", b.http);
        daemon_start(&b.d, 2, extra);
        daemon_path(&b.d, 0, false, b.fe_path, sizeof(b.fe_path));
        daemon_path(&b.d, 0, true, b.be_path, sizeof(b.be_path));
        snprintf(b.ctl, sizeof(b.ctl), "%s/control", b.d.dir);
        ASSERT_EQ(peers_setup_device(b.fe_path, b.be_path, &b.fe, &b.be, 2), 0);
        expect_scrape(&b);

        printf("== bad requests\n");
        test_bad_requests(&b);

        printf("== without the attack\n");
        measure(&b, "alone", 0, NULL);
        fds_idle = daemon_fd_count(&b.d);

        /* slow clients that fill the 32 connections and leave together, a scrape waiting in
         * the backlog meanwhile: it is answered once they are gone (libmicrohttpd took its
         * listening socket back into its epoll set only at an event that never came; now it
         * is at most its 5 s idle timeout later, for a close it read with the last bytes) */
        printf("== %d slow clients, held 2 s, leaving together\n", SLOW);
        uint64_t t0 = test_now_usec();
        pid_t child = attack(b.http, 0, SLOW, 2);
        pid_t scraper = scrape_later(b.http, 1);
        ASSERT(waitpid(scraper, &status, 0) == scraper && WIFEXITED(status));
        printf("the scrape ended %.1f s into it\n", (test_now_usec() - t0) / 1e6);
        ASSERT_EQ(WEXITSTATUS(status), 0);
        ASSERT(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);

        /* slow clients alone, longer than the request deadline: they are cut off, and a
         * scrape that waited behind them is answered while they still send */
        printf("== %d slow clients, held %d s\n", SLOW, SLOW_HOLD_S);
        t0 = test_now_usec();
        child = attack(b.http, 0, SLOW, SLOW_HOLD_S);
        scraper = scrape_later(b.http, 2);
        ASSERT(waitpid(scraper, &status, 0) == scraper && WIFEXITED(status));
        bool in_time = running(child);
        printf("the scrape ended %.1f s into it, %s\n", (test_now_usec() - t0) / 1e6,
               in_time ? "the slow clients still sending" : "after the slow clients left");
        ASSERT_EQ(WEXITSTATUS(status), 0);
        ASSERT(in_time);
        ASSERT(kill(child, SIGKILL) == 0 && waitpid(child, &status, 0) == child);     /* seen enough */

        printf("== 1000 connections and 40 slow clients, held %d s\n", HOLD_S);
        t0 = test_now_usec();
        child = attack(b.http, FLOOD, SLOW, HOLD_S);
        scraper = scrape_later(b.http, HOLD_S / 2);
        measure(&b, "under attack", child, &fds_max);
        ASSERT(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
        ASSERT(waitpid(scraper, &status, 0) == scraper && WIFEXITED(status));
        printf("the attack took %.1f s\n", (test_now_usec() - t0) / 1e6);
        printf("daemon fds: %d idle, at most %d under attack (it allows %d HTTP connections)\n", fds_idle, fds_max,
               HTTP_CONNECTION_LIMIT);
        ASSERT(fds_max <= fds_idle + HTTP_CONNECTION_LIMIT + 2);

        /* the clients are gone: scrapes answer again, and the ports were never touched */
        static const char get[] = "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        bool ok = false;
        for (unsigned i = 0; i < 50 && !ok; i++) {
                HttpAnswer a;
                ASSERT_EQ(http_exchange(b.http, get, sizeof(get) - 1, "port=\"port0\"", 3000, &a), 0);
                ok = a.status == 200 && a.found;
                if (!ok)
                        usleep(200 * 1000);
        }
        ASSERT(ok);
        printf("after the attack: GET /metrics 200\n");
        measure(&b, "after", 0, NULL);
        char *log = daemon_log_read(&b.d);
        ASSERT(!strstr(log, "port0: front-end disconnected"));      /* the front-end never noticed */
        free(log);

        frontend_peer_close(&b.fe);
        backend_peer_close(&b.be);
        ASSERT_EQ(daemon_stop(&b.d), 0);
        printf("1 passed, 0 failed\n");
        return 0;
}
