/* SPDX-License-Identifier: MIT */
/* Real back-ends that only listen, behind vhost-recond in client mode: qemu-storage-daemon
 * (a vhost-user-blk export) and virtiofsd. A front-end (the project's C peer) sets up a
 * device through vhost-recond; the back-end is killed with SIGKILL and started again; the
 * daemon reconnects and the real back-end takes the whole replay (every request acked),
 * while the front-end's connection stays. Skips, saying why, where a peer is missing. */
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon-harness.h"
#include "macro.h"
#include "peer.h"
#include "tests.h"

#define SKIP 77
#define QSD "/usr/bin/qemu-storage-daemon"
#define VIRTIOFSD "/usr/lib/qemu/virtiofsd"

typedef struct Peer {
        const char *name;
        const char *binary;
        pid_t pid;
} Peer;

static void start_peer(Peer *p, const Daemon *d, const char *sock) {
        char log[160], disk[160], share[160], arg[512];

        snprintf(log, sizeof(log), "%s/%s.log", d->dir, p->name);
        snprintf(disk, sizeof(disk), "%s/disk.img", d->dir);
        snprintf(share, sizeof(share), "%s/share", d->dir);
        if (access(disk, F_OK) < 0) {
                int fd = open(disk, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
                ASSERT(fd >= 0 && ftruncate(fd, 64 << 20) == 0);
                close(fd);
        }
        mkdir(share, 0755);
        (void) unlink(sock);
        p->pid = fork();
        ASSERT(p->pid >= 0);
        if (p->pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                dup2(fd, 1);
                dup2(fd, 2);
                if (strcmp(p->name, "qemu-storage-daemon") == 0) {
                        char blk[400];
                        snprintf(blk, sizeof(blk), "driver=file,node-name=disk0,filename=%s", disk);
                        snprintf(arg, sizeof(arg),
                                 "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=%s,"
                                 "num-queues=2,writable=on", sock);
                        execl(p->binary, p->binary, "--blockdev", blk, "--export", arg, (char *) NULL);
                } else {
                        char sp[300], src[300];
                        snprintf(sp, sizeof(sp), "--socket-path=%s", sock);
                        snprintf(src, sizeof(src), "source=%s", share);
                        execl(p->binary, p->binary, sp, "-o", src, "-o", "cache=none", "-o", "sandbox=chroot",
                              (char *) NULL);
                }
                _exit(127);
        }
        for (int i = 0; i < 200 && access(sock, F_OK) < 0; i++)
                usleep(10000);
        ASSERT(access(sock, F_OK) == 0);
}

static void kill_peer(Peer *p) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
}

static int run(Peer *p) {
        Daemon d;
        char fe_path[128], be_path[128];
        FrontendPeer fe;
        VuMsg m, r;

        /* reconnect_ms = 3000: no timer can connect within a second of a restart; the socket
         * watch must */
        daemon_start_modes(&d, 1, NULL, "server", "client", 3000);
        daemon_path(&d, 0, false, fe_path, sizeof(fe_path));
        daemon_path(&d, 0, true, be_path, sizeof(be_path));
        start_peer(p, &d, be_path);
        ASSERT(daemon_log_wait(&d, "port0: back-end ready", 10000));

        /* the real back-end answers the front-end's whole setup through vhost-recond */
        ASSERT_EQ(frontend_peer_open(&fe, fe_path, 1u << 20), 0);
        /* as QEMU's vhost-user-blk does: the inflight region, where the back-end offers it
         * (qemu-storage-daemon 7.2 does not: it offers 0x8f2b) */
        fe.want_protocol_features |= VU_BIT(VU_PF_INFLIGHT_SHMFD) | VU_BIT(VU_PF_CONFIGURE_MEM_SLOTS);
        ASSERT_EQ(frontend_peer_setup(&fe, 2, 128, ~UINT64_C(0)), 0);
        ASSERT(daemon_log_wait(&d, "port0: link up", 5000));
        fprintf(stderr, "   %s took the setup: features 0x%llx, protocol features 0x%llx%s\n", p->name,
                (unsigned long long) fe.features, (unsigned long long) fe.protocol_features,
                fe.inflight_fd >= 0 ? ", with an inflight region" : "");

        for (int round = 1; round <= 2; round++) {
                kill_peer(p);
                ASSERT(daemon_log_wait(&d, "port0: link down", 5000));
                usleep(200000);
                start_peer(p, &d, be_path);
                uint64_t t0 = test_now_usec();
                ASSERT(daemon_log_wait(&d, "port0: replay done", 10000));
                ASSERT(daemon_log_wait(&d, "port0: link up", 5000));
                uint64_t ms = (test_now_usec() - t0) / 1000;
                fprintf(stderr, "   %s round %d: link up %" PRIu64 " ms after its socket appeared\n", p->name,
                        round, ms);
                ASSERT(ms < 1000);
                /* the front-end never noticed: its connection answers as before */
                vu_msg_init(&m, VU_GET_FEATURES, 0);
                ASSERT_EQ(frontend_peer_request(&fe, &m, &r), 0);
                ASSERT_EQ(r.payload.u64 & fe.features, fe.features);
                fprintf(stderr, "   %s round %d: reconnected and replayed\n", p->name, round);
        }
        char *log = daemon_log_read(&d);
        const char *line = strstr(log, "replay done in");
        fprintf(stderr, "   daemon: %.60s\n", line ? line : "?");
        free(log);

        frontend_peer_close(&fe);
        kill_peer(p);
        ASSERT_EQ(daemon_stop(&d), 0);
        return 1;
}

int main(void) {
        Peer peers[] = {
                { "qemu-storage-daemon", QSD, 0 },
                { "virtiofsd", VIRTIOFSD, 0 },
        };
        int ran = 0, skipped = 0;

        signal(SIGPIPE, SIG_IGN);
        for (size_t i = 0; i < ELEMENTSOF(peers); i++) {
                if (access(peers[i].binary, X_OK) < 0) {
                        printf("skip %s: %s not installed (apt-get install qemu-system-common)\n", peers[i].name,
                               peers[i].binary);
                        skipped++;
                        continue;
                }
                if (strcmp(peers[i].name, "virtiofsd") == 0 && geteuid() != 0) {
                        printf("skip virtiofsd: needs root\n");
                        skipped++;
                        continue;
                }
                fprintf(stderr, "== %s\n", peers[i].name);
                ran += run(&peers[i]);
        }
        if (skipped > 0) {
                printf("SKIP: %d of %zu peers could not run here (see above)\n", skipped, ELEMENTSOF(peers));
                return SKIP;
        }
        printf("%d passed, 0 failed\n", ran);
        return 0;
}
