/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "listener.h"
#include "macro.h"

int mkdir_parents(const char *path) {
        _cleanup_(freep) char *buf = strdup(path);

        if (!buf)
                return -ENOMEM;
        for (char *p = buf + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = 0;
                if (mkdir(buf, 0755) < 0 && errno != EEXIST)
                        return -errno;
                *p = '/';
        }
        return 0;
}

static int fill_addr(const char *path, struct sockaddr_un *ret) {
        memset(ret, 0, sizeof(*ret));
        ret->sun_family = AF_UNIX;
        if (strlen(path) >= sizeof(ret->sun_path))
                return -ENAMETOOLONG;
        strcpy(ret->sun_path, path);
        return 0;
}

/* Whether the socket at path (sa) may be replaced: it may when nothing listens on it, or
 * when its listener was made by a process that is gone or by this one (a listener systemd
 * keeps in the fd store for an earlier vhost-recond). A live process's socket is not ours:
 * -EADDRINUSE, with its holder as far as the kernel tells it. */
static int check_replaceable(const struct sockaddr_un *sa, const struct stat *st, ListenerHolder *ret_holder) {
        _cleanup_(closep) int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        struct ucred cred = { 0 };
        socklen_t len = sizeof(cred);

        if (fd < 0)
                return -errno;
        if (connect(fd, (const struct sockaddr *) sa, sizeof(*sa)) < 0) {
                if (errno == ECONNREFUSED || errno == ENOENT)
                        return 0;
                *ret_holder = (ListenerHolder) { errno == EAGAIN ? HOLDER_BUSY : HOLDER_UNKNOWN, 0, st->st_uid };
                return -EADDRINUSE;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
                return -errno;
        if (cred.pid <= 0) {
                *ret_holder = (ListenerHolder) { HOLDER_ELSEWHERE, 0, cred.uid };
                return -EADDRINUSE;
        }
        if (cred.pid == getpid() || (kill(cred.pid, 0) < 0 && errno == ESRCH))
                return 0;
        *ret_holder = (ListenerHolder) { HOLDER_PROCESS, cred.pid, cred.uid };
        return -EADDRINUSE;
}

const char *listener_holder_describe(const ListenerHolder *h, char *buf, size_t size) {
        switch (h->kind) {
        case HOLDER_PROCESS:
                snprintf(buf, size, "process %d (uid %u) listens there", (int) h->pid, (unsigned) h->uid);
                break;
        case HOLDER_ELSEWHERE:
                snprintf(buf, size, "a process of uid %u in another PID namespace listens there", (unsigned) h->uid);
                break;
        case HOLDER_BUSY:
                snprintf(buf, size, "a process listens there and accepts no connection (the socket is uid %u's)",
                         (unsigned) h->uid);
                break;
        default:
                snprintf(buf, size, "a socket of uid %u is there that vhost-recond (uid %u) may not connect to, so "
                         "it cannot tell whether it is in use (remove it if it is stale)", (unsigned) h->uid,
                         (unsigned) geteuid());
                break;
        }
        return buf;
}

int listener_open(const char *path, mode_t mode, const char *group, int *ret_fd, ListenerHolder *ret_holder) {
        _cleanup_(closep) int fd = -1;
        ListenerHolder holder = { 0 };
        struct sockaddr_un sa;
        struct stat st;
        gid_t gid = (gid_t) -1;
        int r;

        if ((r = fill_addr(path, &sa)) < 0)
                return r;
        if (group) {
                struct group *g = getgrnam(group);
                if (!g)
                        return -ESRCH;
                gid = g->gr_gid;
        }
        if (lstat(path, &st) == 0) {
                if (!S_ISSOCK(st.st_mode))
                        return -EEXIST;
                if ((r = check_replaceable(&sa, &st, &holder)) < 0) {
                        if (ret_holder)
                                *ret_holder = holder;
                        return r;
                }
                if (unlink(path) < 0)
                        return -errno;
        }
        if ((r = mkdir_parents(path)) < 0)
                return r;

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        mode_t old = umask(0177);
        r = bind(fd, (struct sockaddr *) &sa, sizeof(sa));
        umask(old);
        if (r < 0)
                return -errno;
        if (gid != (gid_t) -1 && chown(path, (uid_t) -1, gid) < 0)
                return -errno;
        if (chmod(path, mode ? mode : 0600) < 0)
                return -errno;
        if (listen(fd, SOMAXCONN) < 0)
                return -errno;
        *ret_fd = TAKE_FD(fd);
        return 0;
}

int unix_connect(const char *path, int *ret_fd) {
        _cleanup_(closep) int fd = -1;
        struct sockaddr_un sa;
        int r;

        if ((r = fill_addr(path, &sa)) < 0)
                return r;
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 && errno != EINPROGRESS)
                return -errno;
        *ret_fd = TAKE_FD(fd);
        return 0;
}
