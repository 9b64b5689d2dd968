/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fd-util.h"

bool fd_is_eventfd(int fd) {
        char path[64], target[64];

        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        ssize_t n = readlink(path, target, sizeof(target) - 1);
        if (n < 0)
                return false;
        target[n] = 0;
        return strcmp(target, "anon_inode:[eventfd]") == 0;
}

int eventfd_signal_nonblock(int fd) {
        int flags = fcntl(fd, F_GETFL);
        if (flags < 0)
                return -errno;
        if (!(flags & O_NONBLOCK)) {
                struct pollfd p = { .fd = fd, .events = POLLOUT };
                if (poll(&p, 1, 0) <= 0 || !(p.revents & POLLOUT))
                        return -EAGAIN;
        }
        uint64_t one = 1;
        if (write(fd, &one, sizeof(one)) != sizeof(one))
                return errno == EAGAIN ? -EAGAIN : -errno;
        return 0;
}

int fd_count(void) {
        DIR *d = opendir("/proc/self/fd");
        int n = 0;

        if (!d)
                return -errno;
        for (struct dirent *e; (e = readdir(d));)
                if (e->d_name[0] != '.')
                        n++;
        closedir(d);
        return n - 1;   /* the directory's own fd */
}
