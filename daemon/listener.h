/* SPDX-License-Identifier: MIT */
#pragma once

#include <sys/types.h>

/* A listening unix socket at path, created with mode and group from the start: it is bound
 * under a 0177 umask (owner-only), then given its group and mode, so it is never wider than
 * configured. A stale socket at path is replaced; any other file there is an error. */
int listener_open(const char *path, mode_t mode, const char *group, int *ret_fd);
/* Creates the directories above path (0755), as far as they are missing. */
int mkdir_parents(const char *path);
/* Connects to a listening unix socket, non-blocking. */
int unix_connect(const char *path, int *ret_fd);
