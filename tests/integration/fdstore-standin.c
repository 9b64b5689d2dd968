/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fdstore-standin.h"

static const char *daemon_binary(void) {
        const char *e = getenv("VHOST_RECOND");
        return e ? e : VHOST_RECOND_PATH;
}

static bool same_file(int a, int b) {
        pid_t me = getpid();
        return syscall(SYS_kcmp, me, me, KCMP_FILE, a, b) == 0;
}

static void store_fd(Standin *s, const char *name, int fd) {
        for (size_t i = 0; i < s->n_fds; i++)
                if (same_file(s->fds[i].fd, fd)) {
                        close(fd);      /* systemd keeps one copy of a file */
                        return;
                }
        if (s->n_fds == STANDIN_MAX_FDS) {
                close(fd);
                return;
        }
        snprintf(s->fds[s->n_fds].name, sizeof(s->fds[0].name), "%s", name);
        s->fds[s->n_fds++].fd = fd;
        s->stores++;
}

static void remove_name(Standin *s, const char *name) {
        for (size_t i = 0; i < s->n_fds;)
                if (strcmp(s->fds[i].name, name) == 0) {
                        close(s->fds[i].fd);
                        s->fds[i] = s->fds[--s->n_fds];
                        s->removes++;
                } else
                        i++;
}

static void handle_message(Standin *s) {
        char buf[4096], ctl[CMSG_SPACE(sizeof(int) * 253) + CMSG_SPACE(sizeof(struct ucred))];
        struct iovec iov = { buf, sizeof(buf) - 1 };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl) };
        int fds[253];
        size_t n_fds = 0;

        ssize_t n = recvmsg(s->notify_fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0)
                return;
        buf[n] = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                        memcpy(fds + n_fds, CMSG_DATA(c), k * sizeof(int));
                        n_fds += k;
                }
        bool fdstore = false, remove = false;
        const char *name = "stored";
        for (char *save = NULL, *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                if (strcmp(line, "FDSTORE=1") == 0)
                        fdstore = true;
                else if (strcmp(line, "FDSTOREREMOVE=1") == 0)
                        remove = true;
                else if (strncmp(line, "FDNAME=", 7) == 0)
                        name = line + 7;
                else if (strcmp(line, "READY=1") == 0)
                        s->ready = s->starts;
        }
        pthread_mutex_lock(&s->lock);
        if (remove)
                remove_name(s, name);
        for (size_t i = 0; i < n_fds; i++) {
                if (fdstore)
                        store_fd(s, name, fds[i]);
                else
                        close(fds[i]);
        }
        pthread_mutex_unlock(&s->lock);
}

static void drop_hung_up(Standin *s) {
        for (size_t i = 0; i < s->n_fds;) {
                struct pollfd p = { .fd = s->fds[i].fd };
                if (poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR))) {
                        close(s->fds[i].fd);
                        s->fds[i] = s->fds[--s->n_fds];
                } else
                        i++;
        }
}

static void put_uint(char *dst, const char *prefix, unsigned long v) {
        char digits[24];
        int n = 0;
        do
                digits[n++] = (char) ('0' + v % 10);
        while ((v /= 10) > 0);
        size_t l = strlen(prefix);
        memcpy(dst, prefix, l);
        while (n > 0)
                dst[l++] = digits[--n];
        dst[l] = 0;
}

/* Called with the lock held. */
static int spawn(Standin *s) {
        static char names[STANDIN_MAX_FDS * 64 + 32], n_env[32], pid_env[32], notify_env[160];
        size_t n = s->n_fds, len = 0;

        len = (size_t) snprintf(names, sizeof(names), "LISTEN_FDNAMES=");
        for (size_t i = 0; i < n; i++)
                len += (size_t) snprintf(names + len, sizeof(names) - len, "%s%s", i ? ":" : "", s->fds[i].name);
        put_uint(n_env, "LISTEN_FDS=", n);
        snprintf(notify_env, sizeof(notify_env), "NOTIFY_SOCKET=%s", s->notify_path);
        static char crash_env[192];
        snprintf(crash_env, sizeof(crash_env), "VHOST_RECOND_TEST_CRASH_FILE=%s/crash-at", s->dir);
        char *envp[] = { n_env, pid_env, names, notify_env, (char *) "VHOST_RECOND_TEST_HOOKS=1", crash_env, NULL };
        int base = 3 + (int) n + 16;

        pid_t pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                int log = open(s->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                int null = open("/dev/null", O_RDWR | O_CLOEXEC);
                dup2(null, 0);
                dup2(null, 1);
                dup2(log, 2);
                int high[STANDIN_MAX_FDS];
                for (size_t i = 0; i < n; i++)
                        high[i] = fcntl(s->fds[i].fd, F_DUPFD_CLOEXEC, base + 200);
                for (size_t i = 0; i < n; i++)
                        dup2(high[i], 3 + (int) i);     /* without O_CLOEXEC */
                syscall(SYS_close_range, 3 + n, ~0u, 0);
                put_uint(pid_env, "LISTEN_PID=", (unsigned long) getpid());
                execle(s->binary, "vhost-recond", "--config", s->conf, (char *) NULL, envp);
                _exit(127);
        }
        s->pid = pid;
        s->starts++;
        return 0;
}

static void *run(void *userdata) {
        Standin *s = userdata;

        while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
                struct pollfd p = { .fd = s->notify_fd, .events = POLLIN };
                if (poll(&p, 1, 1) > 0)
                        handle_message(s);
                pthread_mutex_lock(&s->lock);
                int status;
                if (s->pid < 0 && !s->hold) {
                        drop_hung_up(s);
                        (void) spawn(s);
                } else if (s->pid > 0 && waitpid(s->pid, &status, WNOHANG) == s->pid) {
                        /* what it sent before dying is in the socket: take it first */
                        while (poll(&p, 1, 0) > 0) {
                                pthread_mutex_unlock(&s->lock);
                                handle_message(s);
                                pthread_mutex_lock(&s->lock);
                        }
                        s->pid = -1;    /* down */
                        if (!s->hold) {
                                drop_hung_up(s);
                                (void) spawn(s);
                        }
                }
                pthread_mutex_unlock(&s->lock);
        }
        return NULL;
}

int standin_start(Standin *s, const char *dir, const char *conf, const char *log) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        memset(s, 0, sizeof(*s));
        pthread_mutex_init(&s->lock, NULL);
        s->binary = daemon_binary();
        snprintf(s->dir, sizeof(s->dir), "%s", dir);
        snprintf(s->conf, sizeof(s->conf), "%s", conf);
        snprintf(s->log, sizeof(s->log), "%s", log);
        snprintf(s->notify_path, sizeof(s->notify_path), "%s/notify", dir);
        if (strlen(s->notify_path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, s->notify_path, strlen(s->notify_path) + 1);
        s->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (s->notify_fd < 0 || bind(s->notify_fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return -errno;
        int big = 8 << 20;
        (void) setsockopt(s->notify_fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
        pthread_mutex_lock(&s->lock);
        int r = spawn(s);
        pthread_mutex_unlock(&s->lock);
        if (r < 0)
                return r;
        return -pthread_create(&s->thread, NULL, run, s);
}

void standin_stop(Standin *s) {
        pthread_mutex_lock(&s->lock);
        pid_t pid = s->pid;
        s->pid = 0;     /* not restarted */
        pthread_mutex_unlock(&s->lock);
        /* before the thread ends: the daemon's PR_SET_PDEATHSIG follows that thread */
        if (pid > 0) {
                kill(pid, SIGTERM);
                waitpid(pid, NULL, 0);
        }
        __atomic_store_n(&s->stop, true, __ATOMIC_RELEASE);
        pthread_join(s->thread, NULL);
        for (size_t i = 0; i < s->n_fds; i++)
                close(s->fds[i].fd);
        s->n_fds = 0;
        close(s->notify_fd);
        unlink(s->notify_path);
}

bool standin_wait_ready(Standin *s, unsigned start, int timeout_ms) {
        for (int waited = 0; waited <= timeout_ms; waited++) {
                if (__atomic_load_n(&s->ready, __ATOMIC_ACQUIRE) >= start)
                        return true;
                usleep(1000);
        }
        return false;
}

void standin_hold(Standin *s, bool hold) {
        pthread_mutex_lock(&s->lock);
        s->hold = hold;
        pthread_mutex_unlock(&s->lock);
}

bool standin_has(Standin *s, const char *prefix) {
        bool found = false;
        pthread_mutex_lock(&s->lock);
        for (size_t i = 0; i < s->n_fds && !found; i++)
                found = strncmp(s->fds[i].name, prefix, strlen(prefix)) == 0;
        pthread_mutex_unlock(&s->lock);
        return found;
}

pid_t standin_pid(Standin *s) {
        pthread_mutex_lock(&s->lock);
        pid_t pid = s->pid;
        pthread_mutex_unlock(&s->lock);
        return pid;
}

size_t standin_count(Standin *s) {
        pthread_mutex_lock(&s->lock);
        size_t n = s->n_fds;
        pthread_mutex_unlock(&s->lock);
        return n;
}
