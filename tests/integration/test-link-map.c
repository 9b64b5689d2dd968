/* SPDX-License-Identifier: MIT */
/* The pinned BPF link map: one entry per port, updated on every link change, readable
 * with libbpf and with `bpftool map lookup pinned`. Needs root (BPF and a bpffs mount);
 * skips with the reason elsewhere. */
#include <bpf/bpf.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon-harness.h"
#include "link-map.h"
#include "macro.h"
#include "peer.h"
#include "tests.h"

#define SKIP 77

static char bpffs[64];

static void lookup(const char *path, uint32_t slot, struct vhost_recon_link *ret) {
        int fd = bpf_obj_get(path);
        ASSERT(fd >= 0);
        ASSERT_EQ(bpf_map_lookup_elem(fd, &slot, ret), 0);
        close(fd);
}

/* The same entry as bpftool sees it (JSON: the value as an array of hex bytes). */
static bool bpftool_lookup(const char *path, uint32_t slot, struct vhost_recon_link *ret) {
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "bpftool -j map lookup pinned '%s' key %u %u %u %u 2>/dev/null", path,
                 slot & 0xff, (slot >> 8) & 0xff, (slot >> 16) & 0xff, slot >> 24);
        FILE *f = popen(cmd, "r");
        if (!f)
                return false;
        char buf[8192];
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = 0;
        if (pclose(f) != 0)
                return false;
        char *v = strstr(buf, "\"value\":[");
        ASSERT(v);
        v += 9;
        uint8_t *out = (uint8_t *) ret;
        for (size_t i = 0; i < sizeof(*ret); i++) {
                unsigned byte;
                v = strstr(v, "\"0x");
                ASSERT(v && sscanf(v, "\"0x%x\"", &byte) == 1);
                out[i] = (uint8_t) byte;
                v += 3;
        }
        return true;
}

static void cleanup(void) {
        if (bpffs[0]) {
                umount2(bpffs, MNT_DETACH);
                rmdir(bpffs);
                bpffs[0] = 0;
        }
}

/* A failed assertion aborts: still leave no mount behind. */
static void on_abort(int sig) {
        cleanup();
        signal(sig, SIG_DFL);
        raise(sig);
}

int main(void) {
        Daemon d;
        char fe_path[128], be_path[128], map[128], extra[256];
        FrontendPeer fe;
        BackendPeer be;
        struct vhost_recon_link l, t;

        signal(SIGPIPE, SIG_IGN);
        if (geteuid() != 0) {
                printf("SKIP: needs root for BPF maps and a bpffs mount\n");
                return SKIP;
        }
        strcpy(bpffs, "/tmp/vr-bpffs-XXXXXX");
        ASSERT(mkdtemp(bpffs));
        if (mount("bpf", bpffs, "bpf", 0, NULL) < 0) {
                printf("SKIP: cannot mount bpffs: %s\n", strerror(errno));
                rmdir(bpffs);
                return SKIP;
        }
        atexit(cleanup);
        signal(SIGABRT, on_abort);
        snprintf(map, sizeof(map), "%s/vhost-recon/links", bpffs);
        snprintf(extra, sizeof(extra), "bpf_link_map = \"%s\";", map);

        daemon_start(&d, 2, extra);
        char *log = daemon_log_read(&d);
        ASSERT_CONTAINS(log, "BPF link map pinned at");
        free(log);
        daemon_path(&d, 0, false, fe_path, sizeof(fe_path));
        daemon_path(&d, 0, true, be_path, sizeof(be_path));

        lookup(map, 1, &l);
        ASSERT_STREQ(l.name, "port1");
        ASSERT_EQ(l.slot, 1);
        ASSERT_EQ(l.link_up, 0);
        ASSERT_EQ(l.generation, 0);
        lookup(map, 2, &l);
        ASSERT_STREQ(l.name, "");               /* unused slot */

        ASSERT_EQ(peers_setup_device(fe_path, be_path, &fe, &be, 2), 0);
        ASSERT(daemon_log_wait(&d, "port0: link up", 2000));
        lookup(map, 0, &l);
        ASSERT_STREQ(l.name, "port0");
        ASSERT_EQ(l.link_up, 1);
        ASSERT_EQ(l.generation, 1);
        ASSERT(l.changed_ns > 0);
        uint64_t up_ns = l.changed_ns;

        if (bpftool_lookup(map, 0, &t)) {
                ASSERT_STREQ(t.name, "port0");
                ASSERT_EQ(t.link_up, 1);
                ASSERT_EQ(t.generation, 1);
        } else
                fprintf(stderr, "bpftool not available: checked with libbpf only\n");

        backend_peer_close(&be);
        ASSERT(daemon_log_wait(&d, "port0: link down", 2000));
        lookup(map, 0, &l);
        ASSERT_EQ(l.link_up, 0);
        ASSERT_EQ(l.generation, 2);
        ASSERT(l.changed_ns > up_ns);
        frontend_peer_close(&fe);
        ASSERT_EQ(daemon_stop(&d), 0);

        /* Where the map cannot be pinned, the daemon says so once and goes on. */
        daemon_start(&d, 1, "bpf_link_map = \"/proc/nonexistent/links\";");
        log = daemon_log_read(&d);
        ASSERT_CONTAINS(log, "going on without it");
        free(log);
        ASSERT_EQ(daemon_stop(&d), 0);

        printf("1 passed, 0 failed\n");
        return 0;
}
