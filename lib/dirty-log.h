/* SPDX-License-Identifier: MIT */
#pragma once

/* The dirty log of a live migration (vhost-user.rst, "Migration"): the front-end's log
 * region (SET_LOG_BASE: an fd, u64 mmap size and offset) and its optional log eventfd
 * (SET_LOG_FD), kept from SET_LOG_BASE until logging stops (LOG_ALL dropped from the
 * features, a device reset), so that a back-end connecting in the middle
 * of a migration marks every page it writes before any of its rings runs. Logging itself is
 * switched by VHOST_F_LOG_ALL in SET_FEATURES and VHOST_VRING_F_LOG in SET_VRING_ADDR; the
 * shadow keeps those with the features and the ring addresses. Owns its fds. */

#include <stdbool.h>
#include <stdint.h>

#include "vhost-user.h"

#define VU_VRING_F_LOG 0u      /* SET_VRING_ADDR flags: log writes to the used ring */
#define VU_LOG_PAGE 0x1000u    /* one bit of the log covers this many bytes of guest memory */

typedef struct DirtyLog {
        int fd;                 /* SET_LOG_BASE's region; -1: none */
        VuLog region;           /* its mmap size and offset, as the front-end gave them */
        int notify_fd;          /* SET_LOG_FD's eventfd; -1: none */
} DirtyLog;

void dirty_log_init(DirtyLog *l);
/* Closes the fds: the front-end stopped logging, reset its device, or left. */
void dirty_log_clear(DirtyLog *l);

/* True while the front-end logs: LOG_ALL among the acked features (the shadow's) or the
 * log flag on a ring. */
static inline bool dirty_log_logging(uint64_t features, bool any_vring_logged) {
        return (features & VU_BIT(VU_F_LOG_ALL)) || any_vring_logged;
}

/* SET_LOG_BASE, checked by vu_msg_check_request (one fd, 16 bytes): the region must be a
 * file that can be mapped for mmap_offset + mmap_size bytes (back-ends map it from 0, as
 * DPDK does, and would die of SIGBUS past its end). Keeps a copy of the fd. */
int dirty_log_set_base(DirtyLog *l, const VuMsg *m, const char **ret_reason);
/* SET_LOG_FD: an eventfd. Keeps a copy of it. */
int dirty_log_set_notify(DirtyLog *l, const VuMsg *m, const char **ret_reason);

/* Marks every page of the log dirty (atomically, as the front-end may be reading and
 * clearing it at the same moment). For a back-end lost while logging: it may have written
 * guest memory and died before marking it (DPDK gathers its marks and flushes them after a
 * burst), so the front-end sends all of guest memory once more rather than miss a page.
 * 0, or a negative errno (the log cannot be mapped). */
int dirty_log_mark_all(const DirtyLog *l);

/* The answer the front-end waits for after SET_LOG_BASE (with LOG_SHMFD): a u64 0, what
 * rust-vmm front-ends check; QEMU reads any size. Back-ends answer with no payload (DPDK) or
 * a u64 (libvhost-user), relayed as this. */
void dirty_log_base_reply(VuMsg *ret_reply);

/* The replay's messages for the log, each with a copy of its fd: SET_LOG_BASE, then
 * SET_LOG_FD when one was given. ms has room for 2; *ret_n of them are filled. */
int dirty_log_build_replay(const DirtyLog *l, VuMsg *ms, unsigned *ret_n);
