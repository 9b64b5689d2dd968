/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <sys/types.h>

/* Who holds a socket that listener_open() would not replace. */
typedef enum HolderKind {
        HOLDER_PROCESS,         /* a process of this PID namespace: pid and uid */
        HOLDER_ELSEWHERE,       /* a process in another PID namespace: uid only */
        HOLDER_BUSY,            /* a listener that accepts nothing (full backlog): uid of the file */
        HOLDER_UNKNOWN,         /* a socket vhost-recond may not connect to: uid of the file */
} HolderKind;

typedef struct ListenerHolder {
        HolderKind kind;
        pid_t pid;
        uid_t uid;
} ListenerHolder;

/* "process 12 (uid 0) listens there", and so on: for the error line that names the path. */
const char *listener_holder_describe(const ListenerHolder *h, char *buf, size_t size);

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
