/* SPDX-License-Identifier: MIT */
/* Peer policy and socket permissions: allow_uids/allow_gids checked with SO_PEERCRED on both
 * sides and in both modes, refused peers logged and counted; sockets given their mode and
 * group without ever being wider, whatever the daemon's umask. Needs root (to be another
 * uid); skips with the reason otherwise. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "control-client.h"
#include "daemon-harness.h"
#include "io.h"
#include "macro.h"
#include "peer.h"
#include "tests.h"

#define MEM (1u << 20)
#define NOBODY 65534
#define SOME_GID 4242

enum { PEER_SERVED = 10, PEER_REFUSED = 11, PEER_BROKEN = 12 };

static void become(uid_t uid, gid_t gid) {
        if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0)
                _exit(PEER_BROKEN);
}

/* Runs peer(path) in a child as uid/gid; its exit code is the verdict. */
static int as_peer(int (*peer)(const char *path), const char *path, uid_t uid, gid_t gid) {
        pid_t pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                become(uid, gid);
                _exit(peer(path));
        }
        int status;
        ASSERT(waitpid(pid, &status, 0) == pid);
        return WIFEXITED(status) ? WEXITSTATUS(status) : PEER_BROKEN;
}

/* A front-end: PEER_SERVED when GET_FEATURES is answered, PEER_REFUSED when the daemon
 * closes the connection instead. */
static int frontend_child(const char *path) {
        int fd = peer_connect(path, 2000);
        if (fd < 0)
                return PEER_BROKEN;
        VuMsg m, reply;
        vu_msg_init(&m, VU_GET_FEATURES, 0);
        (void) vu_send_blocking(fd, &m);        /* may already fail: the daemon closed */
        int r = vu_recv_blocking(fd, &reply, 3000, NULL);
        return r >= 0 ? PEER_SERVED : r == -ECONNRESET || r == -EPIPE ? PEER_REFUSED : PEER_BROKEN;
}

/* A back-end: PEER_SERVED when the daemon sends it a request (the probe), PEER_REFUSED
 * when it closes without a word. */
static int backend_child(const char *path) {
        int fd = peer_connect(path, 2000);
        if (fd < 0)
                return PEER_BROKEN;
        VuMsg m;
        int r = vu_recv_blocking(fd, &m, 3000, NULL);
        return r >= 0 ? PEER_SERVED : r == -ECONNRESET ? PEER_REFUSED : PEER_BROKEN;
}

static int frontend_as(const char *path, uid_t uid, gid_t gid) {
        return as_peer(frontend_child, path, uid, gid);
}

static int backend_as(const char *path, uid_t uid, gid_t gid) {
        return as_peer(backend_child, path, uid, gid);
}

static int64_t refused_peers(const Daemon *d) {
        char ctl[128];
        snprintf(ctl, sizeof(ctl), "%s/control", d->dir);
        return control_port_counter(ctl, "port0", "refused_peers");
}

static void start(Daemon *d, const char *policy, const char *backend_mode) {
        char port_extra[256];
        snprintf(port_extra, sizeof(port_extra), "features = 0x140000000L; %s", policy);
        daemon_start_full(d, 1, "reply_timeout_ms = 1000;", port_extra, "server", backend_mode, 50);
        ASSERT(chmod(d->dir, 0755) == 0);       /* other uids may reach the sockets */
}

static void test_frontend_allow_uids(void) {
        Daemon d;
        char fe[128];
        FrontendPeer f;
        VuMsg m, reply;

        start(&d, "socket_mode = \"0666\"; allow_uids = [ 0 ];", "server");
        daemon_path(&d, 0, false, fe, sizeof(fe));

        ASSERT_EQ(frontend_as(fe, NOBODY, NOBODY), PEER_REFUSED);
        ASSERT(daemon_log_wait(&d, "port0: front-end peer uid 65534 gid 65534 refused by allow_uids/allow_gids", 2000));
        ASSERT_EQ(refused_peers(&d), 1);

        /* uid 0 is allowed, and the refused one took nothing with it */
        ASSERT_EQ(frontend_peer_open(&f, fe, MEM), 0);
        vu_msg_init(&m, VU_GET_FEATURES, 0);
        ASSERT_EQ(frontend_peer_request(&f, &m, &reply), 0);
        ASSERT_EQ(reply.payload.u64, 0x140000000ull);
        frontend_peer_close(&f);
        ASSERT_EQ(daemon_stop(&d), 0);
}

static void test_backend_allow_uids_server(void) {
        Daemon d;
        char fe[128], be[128];
        FrontendPeer f;
        BackendPeer b;

        start(&d, "socket_mode = \"0666\"; allow_uids = [ 0 ];", "server");
        daemon_path(&d, 0, false, fe, sizeof(fe));
        daemon_path(&d, 0, true, be, sizeof(be));
        ASSERT_EQ(peers_setup_device(fe, be, &f, &b, 2), 0);
        backend_peer_close(&b);
        ASSERT(daemon_log_wait(&d, "port0: link down", 2000));

        ASSERT_EQ(backend_as(be, NOBODY, NOBODY), PEER_REFUSED);
        ASSERT(daemon_log_wait(&d, "port0: back-end peer uid 65534 gid 65534 refused", 2000));
        ASSERT_EQ(refused_peers(&d), 1);

        /* an allowed back-end gets the whole replay; the front-end never left */
        ASSERT_EQ(backend_peer_open(&b, be, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&b, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
        ASSERT(daemon_log_wait(&d, "port0: link up", 2000));
        backend_peer_close(&b);
        frontend_peer_close(&f);
        ASSERT_EQ(daemon_stop(&d), 0);
}

static void test_allow_gids(void) {
        Daemon d;
        char fe[128];

        start(&d, "socket_mode = \"0666\"; allow_gids = [ 4242 ];", "server");
        daemon_path(&d, 0, false, fe, sizeof(fe));
        ASSERT_EQ(frontend_as(fe, NOBODY, SOME_GID), PEER_SERVED);
        ASSERT_EQ(frontend_as(fe, NOBODY, NOBODY), PEER_REFUSED);
        /* with only allow_gids set, root is not let in by being root */
        ASSERT_EQ(frontend_as(fe, 0, 0), PEER_REFUSED);
        ASSERT_EQ(refused_peers(&d), 2);
        ASSERT_EQ(daemon_stop(&d), 0);
}

/* Client mode: SO_PEERCRED of a connected socket names whoever listened. A listener of the
 * wrong uid is refused, counted, and tried again later (backing off); a right one is used. */
static void test_backend_allow_uids_client(void) {
        Daemon d;
        char be[128];
        int pipefd[2];

        start(&d, "allow_uids = [ 0 ];", "client");
        daemon_path(&d, 0, true, be, sizeof(be));
        ASSERT(pipe(pipefd) == 0);
        pid_t pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                struct sockaddr_un sa = { .sun_family = AF_UNIX };
                int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                strcpy(sa.sun_path, be);
                (void) unlink(be);
                if (lfd < 0 || bind(lfd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                        _exit(PEER_BROKEN);
                become(NOBODY, NOBODY);         /* the credentials are taken at listen() */
                if (listen(lfd, 16) < 0)
                        _exit(PEER_BROKEN);
                (void) !write(pipefd[1], "x", 1);
                /* every connection must close without one byte of vhost-user */
                for (;;) {
                        int cfd = peer_accept(lfd, 3000);
                        if (cfd < 0)
                                _exit(PEER_REFUSED);
                        char c;
                        ssize_t n = read(cfd, &c, 1);
                        if (n > 0)
                                _exit(PEER_SERVED);
                        close(cfd);
                }
        }
        close(pipefd[1]);
        char c;
        ASSERT_EQ(read(pipefd[0], &c, 1), 1);
        close(pipefd[0]);
        ASSERT(daemon_log_wait(&d, "port0: back-end peer uid 65534 gid 65534 refused", 3000));
        ASSERT(daemon_log_wait(&d, "port0: back-end peer uid 65534 gid 65534 refused", 3000));
        ASSERT(refused_peers(&d) >= 2);
        kill(pid, SIGKILL);
        int status;
        ASSERT(waitpid(pid, &status, 0) == pid);
        ASSERT(WIFSIGNALED(status));    /* it never saw a byte */

        /* a root listener now: the daemon comes back to it (backoff capped at 5 s) and probes */
        int lfd = peer_listen(be);
        ASSERT(lfd >= 0);
        int fd = peer_accept(lfd, 7000);
        ASSERT(fd >= 0);
        VuMsg m;
        ASSERT(vu_recv_blocking(fd, &m, 2000, NULL) >= 0);
        ASSERT_EQ(m.hdr.request, VU_SET_OWNER);
        vu_msg_close_fds(&m);
        close(fd);
        close(lfd);
        ASSERT_EQ(daemon_stop(&d), 0);
}

/* Sockets get their mode and group before anyone can connect: bind under umask 0177 (so
 * the socket is born 0600 whatever the daemon's umask), chown, chmod, and only then
 * listen. A watcher polling stat() cannot see a window of microseconds, so the order of the
 * system calls is checked under strace, for every socket the daemon binds, with the daemon
 * started under umask 0 (where a plain bind() makes a 0777 socket). */
static void test_socket_mode_never_wider(void) {
        const char *port_extra = "socket_mode = \"0660\"; socket_group = \"nogroup\";";
        struct group *g = getgrnam("nogroup");
        char trace[160], cmd[512], line[512];
        Daemon d = {};
        unsigned checked = 0;

        if (system("command -v strace >/dev/null") != 0) {
                test_skip("test_socket_mode_never_wider: strace is not installed (apt-get install strace)");
                return;
        }
        ASSERT(g);
        strcpy(d.dir, "/tmp/vr-test-XXXXXX");
        ASSERT(mkdtemp(d.dir));
        snprintf(d.conf, sizeof(d.conf), "%s/vhost-recon.conf", d.dir);
        snprintf(trace, sizeof(trace), "%s/strace.out", d.dir);
        daemon_write_config(&d, 16, NULL, port_extra, "server", "server", 100);
        snprintf(cmd, sizeof(cmd),
                 "umask 0; timeout -s TERM 1 strace -qq -e trace=umask,bind,chown,chmod,fchmodat,listen -o %s "
                 "%s --config %s 2>/dev/null", trace, VHOST_RECOND_PATH, d.conf);
        (void) !system(cmd);

        FILE *f = fopen(trace, "re");
        ASSERT(f);
        char last_umask[16] = "", bound[128] = "";
        int bound_fd = -1;
        bool chowned = false, chmodded = false;
        while (fgets(line, sizeof(line), f)) {
                char path[128];
                unsigned mode;
                int fd;
                if (sscanf(line, "umask(%15[0-7])", last_umask) == 1)
                        continue;
                if (sscanf(line, "bind(%d, {sa_family=AF_UNIX, sun_path=\"%127[^\"]\"}", &fd, path) == 2) {
                        ASSERT_STREQ(last_umask, "0177");
                        snprintf(bound, sizeof(bound), "%s", path);
                        bound_fd = fd;
                        chowned = chmodded = false;
                } else if (sscanf(line, "chown(\"%127[^\"]\", -1, %u)", path, &mode) == 2) {
                        ASSERT_STREQ(path, bound);
                        ASSERT_EQ(mode, g->gr_gid);
                        ASSERT(!chmodded);
                        chowned = true;
                } else if (sscanf(line, "chmod(\"%127[^\"]\", %o)", path, &mode) == 2) {
                        ASSERT_STREQ(path, bound);
                        ASSERT_EQ(mode, 0660);
                        chmodded = true;
                } else if (sscanf(line, "listen(%d,", &fd) == 1) {
                        ASSERT_EQ(fd, bound_fd);
                        ASSERT(chmodded);
                        /* the control socket has no group set here; the ports do */
                        ASSERT(chowned || strstr(bound, "/control"));
                        checked++;
                        bound_fd = -1;
                }
        }
        fclose(f);
        printf("%u sockets bound under umask 0177, given group and mode 0660 before listen()\n", checked);
        ASSERT_EQ(checked, 33);         /* 16 ports x 2 sides + the control socket */
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d.dir);
        (void) !system(cmd);
}

/* A listening socket of another process: a child binds it and listens as uid/gid (the
 * credentials the kernel gives its clients), then accepts and closes until killed. Returns
 * its pid once it listens. */
static pid_t listen_as(const char *path, uid_t uid, gid_t gid) {
        int ready[2];
        ASSERT(pipe(ready) == 0);
        pid_t pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
                struct sockaddr_un sa = { .sun_family = AF_UNIX };
                snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
                int fd = socket(AF_UNIX, SOCK_STREAM, 0);
                if (fd < 0 || bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                        _exit(PEER_BROKEN);
                become(uid, gid);       /* bound in the test's directory, listening as uid */
                prctl(PR_SET_PDEATHSIG, SIGKILL);       /* gone with the test (after become(): a uid change clears it) */
                if (listen(fd, 16) < 0)
                        _exit(PEER_BROKEN);
                (void) !write(ready[1], "x", 1);
                for (;;) {
                        int c = accept(fd, NULL, NULL);
                        if (c >= 0)
                                close(c);
                }
        }
        char x;
        close(ready[1]);
        ASSERT(read(ready[0], &x, 1) == 1);
        close(ready[0]);
        return pid;
}

/* The pid that listens on path, as the kernel tells a client (-1 if nothing does). */
static pid_t listener_pid(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct ucred cred;
        socklen_t len = sizeof(cred);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT(fd >= 0);
        pid_t pid = -1;
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0 &&
            getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
                pid = cred.pid;
        close(fd);
        return pid;
}

/* Occurrences of needle in the daemon's log. */
static unsigned log_count(const Daemon *d, const char *needle) {
        char *log = daemon_log_read(d);
        unsigned n = 0;
        for (const char *p = log; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        free(log);
        return n;
}

/* Waits until the port has seen `connections` front-end connections (each probe that
 * looked who listens is one; one that came while another was still there was refused) and
 * every accepted one has left: a port serves one front-end at a time, so the next one
 * would be refused while an earlier one is still being closed. */
static void settle(const Daemon *d, const char *port, unsigned connections) {
        char connected[64], refused[64], left[64];
        snprintf(connected, sizeof(connected), "%s: front-end connected", port);
        snprintf(refused, sizeof(refused), "%s: refusing a second front-end", port);
        snprintf(left, sizeof(left), "%s: front-end disconnected", port);
        for (int i = 0; i < 300; i++) {
                unsigned in = log_count(d, connected);
                if (in + log_count(d, refused) >= connections && log_count(d, left) == in)
                        return;
                usleep(10 * 1000);
        }
        fprintf(stderr, "%s: %u front-end connections seen (%u refused), %u left; %u expected\n", port,
                log_count(d, connected), log_count(d, refused), log_count(d, left), connections);
        ASSERT(false);
}

/* Socket paths the daemon does not own: another process's live socket is left to it (a
 * clear error naming the path, the pid and uid), a stale socket is replaced, a file that is
 * not a socket is an error; the other ports go on. A second daemon on the same control
 * socket refuses to start and names the first one. */
static void test_socket_paths_not_taken(void) {
        char live[128], stale[128], file[128], other[128], needle[320], cmd[512];
        Daemon d;

        daemon_prepare(&d);
        ASSERT(chmod(d.dir, 0755) == 0);
        daemon_write_config(&d, 4, "reply_timeout_ms = 1000;", "features = 0x140000000L;", "server", "server", 50);
        daemon_path(&d, 0, false, live, sizeof(live));
        daemon_path(&d, 1, false, stale, sizeof(stale));
        daemon_path(&d, 2, false, file, sizeof(file));
        daemon_path(&d, 3, false, other, sizeof(other));
        pid_t holder = listen_as(live, NOBODY, NOBODY);
        pid_t gone = listen_as(stale, 0, 0);
        ASSERT(kill(gone, SIGKILL) == 0);
        ASSERT(waitpid(gone, NULL, 0) == gone);         /* its socket file stays, with nobody behind it */
        int f = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        ASSERT(f >= 0);
        close(f);

        daemon_exec(&d);
        char *log = daemon_log_read(&d);
        ASSERT(strstr(log, "2 of 4 ports could not start"));
        snprintf(needle, sizeof(needle), "port0: cannot listen on %s: process %d (uid %d) listens there", live,
                 (int) holder, NOBODY);
        ASSERT(strstr(log, needle));
        snprintf(needle, sizeof(needle), "port2: cannot listen on %s: a file that is not a socket is there", file);
        ASSERT(strstr(log, needle));
        free(log);
        ASSERT_EQ(listener_pid(live), holder);          /* still the other process's socket */
        struct stat st;
        ASSERT(stat(file, &st) == 0 && S_ISREG(st.st_mode));
        ASSERT_EQ(listener_pid(stale), d.pid);          /* the stale one replaced */
        settle(&d, "port1", 1);
        ASSERT_EQ(frontend_as(stale, 0, 0), PEER_SERVED);
        ASSERT_EQ(frontend_as(other, 0, 0), PEER_SERVED);
        printf("another process's live socket left to it, a stale one replaced, a regular file refused\n");

        /* a second daemon on the same config takes none of the first one's sockets */
        snprintf(cmd, sizeof(cmd), "timeout 10 %s --config %s 2> %s/second.log", VHOST_RECOND_PATH, d.conf, d.dir);
        int status = system(cmd);
        ASSERT(WIFEXITED(status) && WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 124);
        ASSERT_EQ(listener_pid(stale), d.pid);
        ASSERT_EQ(listener_pid(other), d.pid);
        settle(&d, "port3", 3);         /* ours, the second daemon's look, ours */
        ASSERT_EQ(frontend_as(other, 0, 0), PEER_SERVED);
        /* one with ports of its own but the same control socket refuses to start, naming it */
        snprintf(cmd, sizeof(cmd), "sed 's#/port\\([0-9]\\)#/second\\1#g' %s > %s/second.conf && "
                 "timeout 10 %s --config %s/second.conf 2> %s/second.log", d.conf, d.dir, VHOST_RECOND_PATH, d.dir, d.dir);
        status = system(cmd);
        ASSERT(WIFEXITED(status) && WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 124);
        snprintf(cmd, sizeof(cmd), "%s/second.log", d.dir);
        FILE *second = fopen(cmd, "re");
        ASSERT(second);
        char text[4096] = "";
        size_t n = fread(text, 1, sizeof(text) - 1, second);
        text[n] = 0;
        fclose(second);
        snprintf(needle, sizeof(needle), "Cannot listen on control socket %s/control: process %d (uid 0) listens there",
                 d.dir, (int) d.pid);
        ASSERT(strstr(text, needle));
        ASSERT_EQ(listener_pid(other), d.pid);
        settle(&d, "port3", 5);
        ASSERT_EQ(frontend_as(other, 0, 0), PEER_SERVED);       /* the first daemon goes on */
        printf("a second vhost-recond on the same control socket: %s", strstr(text, "Cannot listen"));

        int exit_status;
        ASSERT(kill(d.pid, SIGTERM) == 0 && waitpid(d.pid, &exit_status, 0) == d.pid);
        ASSERT(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0);
        ASSERT_EQ(listener_pid(live), holder);          /* its stop did not remove it either */
        ASSERT(access(stale, F_OK) < 0);                /* but its own sockets went */
        kill(holder, SIGKILL);
        waitpid(holder, NULL, 0);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d.dir);
        (void) !system(cmd);
}

int main(void) {
        signal(SIGPIPE, SIG_IGN);
        if (geteuid() != 0) {
                printf("SKIP: peer policy tests need root, to connect as other uids and gids\n");
                return 77;
        }
        static const TestCase cases[] = {
                TEST_CASE(test_frontend_allow_uids),
                TEST_CASE(test_backend_allow_uids_server),
                TEST_CASE(test_allow_gids),
                TEST_CASE(test_backend_allow_uids_client),
                TEST_CASE(test_socket_mode_never_wider),
                TEST_CASE(test_socket_paths_not_taken),
        };
        return run_tests(cases, ELEMENTSOF(cases));
}
