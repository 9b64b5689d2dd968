/* SPDX-License-Identifier: MIT */
#pragma once

#include <sys/types.h>

/* Who listens on a socket that listener_open() would not replace: pid 0 when the kernel did
 * not say (a full backlog, or a socket vhost-recond may not connect to; uid is then the
 * socket file's owner). */
typedef struct ListenerHolder {
        pid_t pid;
        uid_t uid;
} ListenerHolder;

/* A listening unix socket at path, created with mode and group from the start: it is bound
 * under a 0177 umask (owner-only), then given its group and mode, so it is never wider than
 * configured. A stale socket at path is replaced (nothing listens, or its listener was made
 * by a process that is gone); a live process's socket is -EADDRINUSE (its holder in
 * ret_holder, which may be NULL); any other file there is -EEXIST. */
int listener_open(const char *path, mode_t mode, const char *group, int *ret_fd, ListenerHolder *ret_holder);
/* Creates the directories above path (0755), as far as they are missing. */
int mkdir_parents(const char *path);
/* Connects to a listening unix socket, non-blocking. */
int unix_connect(const char *path, int *ret_fd);
