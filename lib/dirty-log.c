/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>

#include "dirty-log.h"
#include "fd-util.h"
#include "guest-memory.h"
#include "macro.h"

void dirty_log_init(DirtyLog *l) {
        *l = (DirtyLog) { .fd = -1, .notify_fd = -1 };
}

void dirty_log_clear(DirtyLog *l) {
        safe_close(l->fd);
        safe_close(l->notify_fd);
        dirty_log_init(l);
}

static int fail(const char **ret_reason, const char *reason, int err) {
        if (ret_reason)
                *ret_reason = reason;
        return err;
}

int dirty_log_set_base(DirtyLog *l, const VuMsg *m, const char **ret_reason) {
        const VuLog *g = &m->payload.log;

        if (m->n_fds != 1)
                return fail(ret_reason, "SET_LOG_BASE without exactly one log fd", -EINVAL);
        if (g->mmap_size == 0)
                return fail(ret_reason, "log region of size 0", -EINVAL);
        if (g->mmap_offset + g->mmap_size < g->mmap_offset ||
            g->mmap_offset + g->mmap_size > (uint64_t) SIZE_MAX / 2)
                return fail(ret_reason, "log region offset + size overflows", -EINVAL);
        uint64_t len = g->mmap_offset + g->mmap_size;
        if (guest_fd_check_mappable(m->fds[0], len, NULL) < 0)
                return fail(ret_reason, "log fd is not a mappable file of at least offset + size bytes", -EINVAL);
        /* Back-ends map it read-write, shared: so must it map here. */
        void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, m->fds[0], 0);
        if (p == MAP_FAILED)
                return fail(ret_reason, "log fd cannot be mapped shared and writable", -EINVAL);
        (void) munmap(p, len);

        int fd = fcntl(m->fds[0], F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return fail(ret_reason, "cannot duplicate the log fd", -errno);
        safe_close(l->fd);
        l->fd = fd;
        l->region = *g;
        return 0;
}

int dirty_log_set_notify(DirtyLog *l, const VuMsg *m, const char **ret_reason) {
        if (m->n_fds != 1)
                return fail(ret_reason, "SET_LOG_FD without exactly one eventfd", -EINVAL);
        if (!fd_is_eventfd(m->fds[0]))
                return fail(ret_reason, "SET_LOG_FD's fd is not an eventfd", -EINVAL);
        int fd = fcntl(m->fds[0], F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
                return fail(ret_reason, "cannot duplicate the log eventfd", -errno);
        safe_close(l->notify_fd);
        l->notify_fd = fd;
        return 0;
}

int dirty_log_mark_all(const DirtyLog *l) {
        if (l->fd < 0)
                return 0;
        uint64_t len = l->region.mmap_offset + l->region.mmap_size;
        uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, l->fd, 0);
        if (p == MAP_FAILED)
                return -errno;
        uint8_t *b = p + l->region.mmap_offset, *end = b + l->region.mmap_size;
        /* bytes up to 8-byte alignment, then whole words, then the tail */
        for (; b < end && ((uintptr_t) b & 7); b++)
                __atomic_fetch_or(b, 0xff, __ATOMIC_RELAXED);
        for (; b + 8 <= end; b += 8)
                __atomic_fetch_or((uint64_t *) b, UINT64_MAX, __ATOMIC_RELAXED);
        for (; b < end; b++)
                __atomic_fetch_or(b, 0xff, __ATOMIC_RELAXED);
        (void) munmap(p, len);
        return 0;
}

void dirty_log_base_reply(VuMsg *ret_reply) {
        vu_msg_init_u64(ret_reply, VU_SET_LOG_BASE, 0);
        ret_reply->hdr.flags = VU_VERSION | VU_FLAG_REPLY;
}

int dirty_log_build_replay(const DirtyLog *l, VuMsg *ms, unsigned *ret_n) {
        unsigned n = 0;
        int r;

        *ret_n = 0;
        if (l->fd < 0)
                return 0;
        vu_msg_init(&ms[n], VU_SET_LOG_BASE, 0);
        ms[n].hdr.size = sizeof(VuLog);
        ms[n].payload.log = l->region;
        r = vu_msg_add_fd_dup(&ms[n], l->fd);
        if (r < 0)
                return r;
        n++;
        if (l->notify_fd >= 0) {
                vu_msg_init(&ms[n], VU_SET_LOG_FD, 0);
                r = vu_msg_add_fd_dup(&ms[n], l->notify_fd);
                if (r < 0) {
                        vu_msg_close_fds(&ms[0]);
                        return r;
                }
                n++;
        }
        *ret_n = n;
        return 0;
}
