/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>

/* True when fd is an eventfd (as kick/call/err fds must be). */
bool fd_is_eventfd(int fd);
/* Adds 1 to an eventfd without ever blocking: a peer's eventfd may be in blocking mode with
 * its counter near the limit. Returns 0, -EAGAIN when it would block, or -errno. */
int eventfd_signal_nonblock(int fd);
/* Number of open fds of this process (for leak checks). */
int fd_count(void);
