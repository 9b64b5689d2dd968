/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon-harness.h"
#include "tests.h"

static const char *daemon_binary(void) {
        const char *e = getenv("VHOST_RECOND");
        return e ? e : VHOST_RECOND_PATH;
}

void daemon_path(const Daemon *d, unsigned port, bool backend, char *buf, size_t size) {
        snprintf(buf, size, "%s/port%u%s.sock", d->dir, port, backend ? ".vswitch" : "");
}

void daemon_write_config(const Daemon *d, unsigned n_ports, const char *extra, const char *port_extra,
                         const char *frontend_mode, const char *backend_mode, unsigned reconnect_ms) {
        char tmp[160];
        snprintf(tmp, sizeof(tmp), "%s.new", d->conf);
        FILE *f = fopen(tmp, "we");
        ASSERT(f);
        fprintf(f, "control = \"%s/control\";\n%s\nports = (\n", d->dir, extra ? extra : "");
        for (unsigned i = 0; i < n_ports; i++) {
                char fe[128], be[128];
                daemon_path(d, i, false, fe, sizeof(fe));
                daemon_path(d, i, true, be, sizeof(be));
                fprintf(f, "  { name = \"port%u\"; %s\n"
                           "    frontend = { path = \"%s\"; mode = \"%s\"; reconnect_ms = %u; };\n"
                           "    backend = { path = \"%s\"; mode = \"%s\"; reconnect_ms = %u; }; }%s\n",
                        i, port_extra ? port_extra : "", fe, frontend_mode, reconnect_ms, be, backend_mode, reconnect_ms, i + 1 < n_ports ? "," : "");
        }
        fprintf(f, ");\n");
        fclose(f);
        ASSERT(rename(tmp, d->conf) == 0);     /* a reload never reads half a file */
}

void daemon_start(Daemon *d, unsigned n_ports, const char *extra) {
        daemon_start_modes(d, n_ports, extra, "server", "server", 100);
}

void daemon_start_modes(Daemon *d, unsigned n_ports, const char *extra, const char *frontend_mode,
                        const char *backend_mode, unsigned reconnect_ms) {
        daemon_start_full(d, n_ports, extra, NULL, frontend_mode, backend_mode, reconnect_ms);
}

void daemon_prepare(Daemon *d) {
        memset(d, 0, sizeof(*d));
        strcpy(d->dir, "/tmp/vr-test-XXXXXX");
        ASSERT(mkdtemp(d->dir));
        snprintf(d->conf, sizeof(d->conf), "%s/vhost-recon.conf", d->dir);
        snprintf(d->log, sizeof(d->log), "%s/daemon.log", d->dir);
}

void daemon_exec(Daemon *d) {
        d->pid = fork();
        ASSERT(d->pid >= 0);
        if (d->pid == 0) {
                /* dies with the test, and holds no pipe of the test runner open */
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                int fd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                int null = open("/dev/null", O_RDWR | O_CLOEXEC);
                dup2(null, 0);
                dup2(null, 1);
                dup2(fd, 2);
                if (getenv("VHOST_RECOND_QUIET"))
                        execl(daemon_binary(), "vhost-recond", "--config", d->conf, (char *) NULL);
                else
                        execl(daemon_binary(), "vhost-recond", "--config", d->conf, "--verbose", (char *) NULL);
                _exit(127);
        }
        ASSERT(daemon_log_wait(d, "vhost-recond running", 5000));
}

void daemon_start_full(Daemon *d, unsigned n_ports, const char *extra, const char *port_extra,
                       const char *frontend_mode, const char *backend_mode, unsigned reconnect_ms) {
        daemon_prepare(d);
        daemon_write_config(d, n_ports, extra, port_extra, frontend_mode, backend_mode, reconnect_ms);
        daemon_exec(d);
}

char *daemon_log_read(const Daemon *d) {
        FILE *f = fopen(d->log, "re");
        if (!f)
                return strdup("");
        char *buf = NULL;
        size_t n = 0;
        ssize_t k = getdelim(&buf, &n, 0, f);
        fclose(f);
        if (k < 0) {
                free(buf);
                return strdup("");
        }
        return buf;
}

bool daemon_log_wait(Daemon *d, const char *needle, int timeout_ms) {
        for (int waited = 0;; waited += 5) {
                char *log = daemon_log_read(d);
                size_t len = strlen(log);
                char *hit = d->log_seen <= len ? strstr(log + d->log_seen, needle) : NULL;
                if (hit)
                        d->log_seen = hit - log + strlen(needle);
                free(log);
                if (hit)
                        return true;
                if (waited >= timeout_ms) {
                        fprintf(stderr, "daemon log never said \"%s\"\n", needle);
                        return false;
                }
                usleep(5000);
        }
}

int daemon_fd_count(const Daemon *d) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/fd", (int) d->pid);
        DIR *dir = opendir(path);
        int n = 0;
        if (!dir)
                return -1;
        for (struct dirent *e; (e = readdir(dir));)
                if (e->d_name[0] != '.')
                        n++;
        closedir(dir);
        return n;
}

long daemon_rss_kib(const Daemon *d) {
        char path[64], line[256];
        long kib = -1;
        snprintf(path, sizeof(path), "/proc/%d/status", (int) d->pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
                        break;
        fclose(f);
        return kib;
}

long daemon_context_switches(const Daemon *d) {
        char path[64], line[256];
        long n, total = 0;
        bool found = false;
        snprintf(path, sizeof(path), "/proc/%d/status", (int) d->pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "voluntary_ctxt_switches: %ld", &n) == 1 ||
                    sscanf(line, "nonvoluntary_ctxt_switches: %ld", &n) == 1) {
                        total += n;
                        found = true;
                }
        fclose(f);
        return found ? total : -1;
}

int daemon_stop(Daemon *d) {
        int status = 0;
        kill(d->pid, SIGTERM);
        ASSERT(waitpid(d->pid, &status, 0) == d->pid);
        char cmd[128];
        if (getenv("KEEP_TEST_LOGS") == NULL) {
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->dir);
                if (system(cmd) != 0)
                        fprintf(stderr, "could not remove %s\n", d->dir);
        }
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
