/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http-client.h"
#include "tests.h"

uint16_t http_free_port(void) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT(fd >= 0);
        ASSERT(bind(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0);
        ASSERT(getsockname(fd, (struct sockaddr *) &sa, &len) == 0);
        close(fd);
        return ntohs(sa.sin_port);
}

int http_connect(uint16_t port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

static int send_all(int fd, const char *p, size_t len) {
        while (len > 0) {
                ssize_t k = send(fd, p, len, MSG_NOSIGNAL);
                if (k < 0)
                        return -errno;
                p += k;
                len -= (size_t) k;
        }
        return 0;
}

int http_exchange(uint16_t port, const char *request, size_t len, const char *needle, int timeout_ms,
                  HttpAnswer *ret) {
        static __thread char buf[1 << 16];

        memset(ret, 0, sizeof(*ret));
        int fd = http_connect(port);
        if (fd < 0)
                return fd;
        int r = send_all(fd, request, len);
        /* a server that refuses a request may close before it has all of it: read its answer */
        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                if (poll(&p, 1, timeout_ms) <= 0)
                        break;
                ssize_t k = recv(fd, buf, sizeof(buf) - 1, 0);
                if (k <= 0)
                        break;
                buf[k] = 0;
                if (ret->bytes < sizeof(ret->head) - 1) {
                        size_t n = sizeof(ret->head) - 1 - ret->bytes;
                        memcpy(ret->head + ret->bytes, buf, (size_t) k < n ? (size_t) k : n);
                }
                ret->found = ret->found || (needle && strstr(buf, needle));
                ret->bytes += (size_t) k;
        }
        close(fd);
        if (ret->bytes == 0 && r < 0)
                return r;
        (void) sscanf(ret->head, "HTTP/1.%*d %d", &ret->status);
        return 0;
}
