/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "guest-memory.h"
#include "macro.h"

void guest_memory_init(GuestMemory *m) {
        memset(m, 0, sizeof(*m));
}

static void region_release(GuestRegion *g) {
        if (g->map)
                munmap(g->map, g->map_len);
        g->map = NULL;
        g->fd = safe_close(g->fd);
}

void guest_memory_clear(GuestMemory *m) {
        for (unsigned i = 0; i < m->n_regions; i++)
                region_release(&m->regions[i]);
        free(m->regions);
        guest_memory_init(m);
}

static int fail(const char **ret_reason, const char *reason) {
        if (ret_reason)
                *ret_reason = reason;
        return -EINVAL;
}

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
        return a < b + blen && b < a + alen;
}

static int check_alone(const VuMemRegion *r, const char **ret_reason) {
        if (r->memory_size == 0)
                return fail(ret_reason, "memory region of size 0");
        if (r->guest_phys_addr + r->memory_size < r->guest_phys_addr ||
            r->userspace_addr + r->memory_size < r->userspace_addr ||
            r->mmap_offset + r->memory_size < r->mmap_offset)
                return fail(ret_reason, "memory region wraps around the address space");
        if (r->mmap_offset + r->memory_size > (uint64_t) SIZE_MAX / 2)
                return fail(ret_reason, "memory region absurdly large");
        return 0;
}

int guest_memory_check_region(const GuestMemory *m, const VuMemRegion *r, const char **ret_reason) {
        int k = check_alone(r, ret_reason);
        if (k < 0)
                return k;
        for (unsigned i = 0; i < m->n_regions; i++) {
                const VuMemRegion *o = &m->regions[i].info;
                if (ranges_overlap(r->userspace_addr, r->memory_size, o->userspace_addr, o->memory_size))
                        return fail(ret_reason, "memory regions overlap (front-end addresses)");
                if (ranges_overlap(r->guest_phys_addr, r->memory_size, o->guest_phys_addr, o->memory_size))
                        return fail(ret_reason, "memory regions overlap (guest addresses)");
        }
        return 0;
}

int guest_fd_check_mappable(int fd, uint64_t size, const char **ret_reason) {
        struct stat st;

        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
                return fail(ret_reason, "memory fd is not a file that can be mapped");
        if ((uint64_t) st.st_size < size)
                return fail(ret_reason, "memory region goes past the end of its fd");
        return 0;
}

static int region_map(GuestRegion *g, const VuMemRegion *r, int fd, const char **ret_reason) {
        /* A front-end must not be able to kill the daemon with a region longer than its memory. */
        int k = guest_fd_check_mappable(fd, r->mmap_offset + r->memory_size, ret_reason);
        if (k < 0)
                return k;
        int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (copy < 0)
                return fail(ret_reason, "cannot duplicate memory fd");

        /* Map from offset 0, as back-ends do: hugetlbfs wants a huge-page aligned offset. */
        size_t len = r->mmap_offset + r->memory_size;
        void *p = mmap(NULL, len, PROT_READ, MAP_SHARED | MAP_NORESERVE, copy, 0);
        if (p == MAP_FAILED) {
                safe_close(copy);
                return fail(ret_reason, "memory fd cannot be mapped");
        }
        *g = (GuestRegion) { .info = *r, .fd = copy, .map = p, .map_len = len };
        return 0;
}

int guest_memory_add(GuestMemory *m, const VuMemRegion *r, int fd, const char **ret_reason) {
        if (m->n_regions >= GUEST_MEMORY_MAX_SLOTS)
                return fail(ret_reason, "too many memory regions");
        int k = guest_memory_check_region(m, r, ret_reason);
        if (k < 0)
                return k;
        if (m->n_regions == m->allocated) {
                unsigned n = m->allocated ? m->allocated * 2 : 4;
                GuestRegion *a = realloc(m->regions, n * sizeof(GuestRegion));
                if (!a)
                        return fail(ret_reason, "out of memory");
                m->regions = a;
                m->allocated = n;
        }
        k = region_map(&m->regions[m->n_regions], r, fd, ret_reason);
        if (k < 0)
                return k;
        m->n_regions++;
        return 0;
}

int guest_memory_remove(GuestMemory *m, const VuMemRegion *r, const char **ret_reason) {
        for (unsigned i = 0; i < m->n_regions; i++) {
                const VuMemRegion *o = &m->regions[i].info;
                if (o->guest_phys_addr != r->guest_phys_addr || o->memory_size != r->memory_size ||
                    o->userspace_addr != r->userspace_addr)
                        continue;
                region_release(&m->regions[i]);
                memmove(&m->regions[i], &m->regions[i + 1], (m->n_regions - i - 1) * sizeof(GuestRegion));
                m->n_regions--;
                return 0;
        }
        return fail(ret_reason, "REM_MEM_REG names a region that was never added");
}

int guest_memory_set_table(GuestMemory *m, const VuMemTable *t, const int *fds, const char **ret_reason) {
        GuestMemory n;
        int k;

        if (t->nregions > VU_MAX_MEM_REGIONS)
                return fail(ret_reason, "too many memory regions");
        guest_memory_init(&n);
        for (unsigned i = 0; i < t->nregions; i++) {
                k = guest_memory_add(&n, &t->regions[i], fds[i], ret_reason);
                if (k < 0) {
                        guest_memory_clear(&n);
                        return k;
                }
        }
        guest_memory_clear(m);
        *m = n;
        return 0;
}

const void *guest_memory_translate(const GuestMemory *m, uint64_t uaddr, uint64_t len) {
        for (unsigned i = 0; i < m->n_regions; i++) {
                const GuestRegion *g = &m->regions[i];
                uint64_t start = g->info.userspace_addr, size = g->info.memory_size;
                if (uaddr < start || uaddr - start > size || len > size - (uaddr - start))
                        continue;
                return (const uint8_t *) g->map + g->info.mmap_offset + (uaddr - start);
        }
        return NULL;
}

uint64_t vring_split_desc_size(uint32_t num) {
        return 16ull * num;
}

uint64_t vring_split_avail_size(uint32_t num) {
        return 6ull + 2ull * num;
}

uint64_t vring_split_used_size(uint32_t num) {
        return 6ull + 8ull * num;
}

static int read_ring_idx(const GuestMemory *m, uint64_t uaddr, unsigned align, uint16_t *ret_idx) {
        if (uaddr & (align - 1))
                return -EINVAL;
        const volatile uint16_t *ring = guest_memory_translate(m, uaddr, 4);
        if (!ring)
                return -EFAULT;
        *ret_idx = ring[1];
        return 0;
}

int vring_split_read_used_idx(const GuestMemory *m, uint64_t used_uaddr, uint16_t *ret_idx) {
        return read_ring_idx(m, used_uaddr, 4, ret_idx);
}

int vring_split_read_avail_idx(const GuestMemory *m, uint64_t avail_uaddr, uint16_t *ret_idx) {
        return read_ring_idx(m, avail_uaddr, 2, ret_idx);
}

#define VRING_PACKED_DESC_F_NEXT  (1u << 0)
#define VRING_PACKED_DESC_F_AVAIL (1u << 7)
#define VRING_PACKED_DESC_F_USED  (1u << 15)

/* Compare-and-swap of a descriptor's flags through a temporary writable mapping of the region
 * (the daemon's own mapping stays read-only). -EAGAIN when the flags changed under us. */
static int write_desc_flags(const GuestMemory *m, uint64_t flags_uaddr, uint16_t expected, uint16_t value) {
        for (unsigned i = 0; i < m->n_regions; i++) {
                const GuestRegion *g = &m->regions[i];
                uint64_t start = g->info.userspace_addr, size = g->info.memory_size;
                if (flags_uaddr < start || flags_uaddr - start > size || 2 > size - (flags_uaddr - start))
                        continue;
                void *p = mmap(NULL, g->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, g->fd, 0);
                if (p == MAP_FAILED)
                        return -errno;
                uint16_t *f = (uint16_t *) ((uint8_t *) p + g->info.mmap_offset + (flags_uaddr - start));
                /* release: the id and len the device wrote before are seen before the flags */
                bool ok = __atomic_compare_exchange_n(f, &expected, value, false, __ATOMIC_RELEASE,
                                                      __ATOMIC_RELAXED);
                munmap(p, g->map_len);
                return ok ? 0 : -EAGAIN;
        }
        return -EFAULT;
}

/* The fallback when the driver's side of the ring is not in one piece: the first flip of the
 * USED flags (nothing skipped; see the header). */
static uint32_t first_used_flip(const uint16_t *fl, uint32_t num) {
        bool first = fl[0] & VRING_PACKED_DESC_F_USED, wrap;
        uint32_t boundary = num;
        for (uint32_t i = 1; i < num && boundary == num; i++)
                if (!!(fl[i] & VRING_PACKED_DESC_F_USED) != !!(fl[i - 1] & VRING_PACKED_DESC_F_USED))
                        boundary = i;
        if (boundary == num) {
                boundary = 0;
                wrap = !first;
        } else
                wrap = first;
        return boundary | ((uint32_t) wrap << 15);
}

/* How the ring is read (virtio 1.1, 2.7). Every write of a descriptor's flags, by the driver
 * (AVAIL = w, USED = !w) or by the device (AVAIL = USED = w), carries the AVAIL bit of the
 * lap it belongs to. So:
 * - a descriptor is pending (made available, not used) when AVAIL != USED, done when equal;
 * - the AVAIL bits, taken round the ring with the wrap at position 0, change lap in exactly
 *   one place when the driver is not in the middle of a write: its avail position A (the
 *   oldest descriptor is there);
 * - the device consumed in order up to its position R: the pending descriptors are the run
 *   [R, A), everything in [A, R) (one lap back) was used by it.
 * R is therefore the start of the run of pending descriptors that ends just before A, and its
 * wrap counter is the AVAIL bit of the descriptor at R (or the lap after A's when the device
 * had caught up with the driver and the run is empty).
 *
 * A pending descriptor inside [A, R) is a hole. Two things leave one:
 * - DPDK's vhost (22.11, virtio_net.c) writes the flags of the first descriptor of a burst
 *   last: the dequeue path keeps the head in shadow_used_packed[0] until the burst ends
 *   (vhost_shadow_dequeue_{single,batch}_packed, vhost_flush_dequeue_shadow_packed), and
 *   vhost_flush_enqueue_shadow_packed writes every id and len, then the flags of all but the
 *   head, then the head's. A SIGKILL in between leaves the head pending with used descriptors
 *   after it. Resuming at the head does not work: the device processes it and then stops at
 *   the next descriptor, which is used in this lap and so never available to it again.
 *   Resuming past it does not work either: the driver takes used buffers in order and waits
 *   for the head for ever. The device had processed the head (its packet read, or written
 *   with its id and len), so the head is completed here as the device would have: USED set
 *   to AVAIL, the other bits kept (release store, after the id and len already there).
 * - the tail of a chain the device used as one buffer (its used element is on the head).
 *   The driver never reads the flags of a tail (it steps over the chain), so completing it
 *   changes nothing it sees; it writes them itself when it makes the slot available again,
 *   and the compare-and-swap leaves any such new write alone.
 * A chain also blurs R: if the device used a chain just before R, its tails are pending and
 * join the run. Used flags that kept NEXT (DPDK's dequeue keeps the driver's flags) show it,
 * and R is moved past the chain; a device that drops NEXT from the used head cannot be told
 * apart, so a ring with any NEXT flag is reported as not certain. So is a ring whose AVAIL
 * bits change lap more than once in three reads (the driver writing a chain head last),
 * which falls back to the first flip of the USED flags.
 * With VIRTIO_F_IN_ORDER a device may write one used descriptor for a batch and skip the
 * others for good: they look like holes, or join the pending run when they end the used
 * part, so R may fall among them; nothing is completed and the answer is never certain.
 * This assumes a device that uses descriptors in ring order (the net devices; an
 * out-of-order device such as vhost-user-blk needs INFLIGHT_SHMFD, see the README). */
static int packed_scan(const GuestMemory *m, uint64_t desc_uaddr, const volatile uint8_t *ring, uint16_t *fl,
                       uint32_t num, unsigned flags, uint32_t *ret_state, bool *ret_certain,
                       unsigned *ret_completed) {
#define AV(i) (!!(fl[i] & VRING_PACKED_DESC_F_AVAIL))
#define PENDING(i) (AV(i) != !!(fl[i] & VRING_PACKED_DESC_F_USED))
        bool chains = false;
        for (uint32_t i = 0; i < num; i++) {
                fl[i] = *(const volatile uint16_t *) (ring + 16 * (size_t) i + 14);
                chains = chains || (fl[i] & VRING_PACKED_DESC_F_NEXT);
        }
        /* the driver's avail position: the one change of lap in the AVAIL bits */
        uint32_t a = 0, changes = 0;
        for (uint32_t i = 0; i < num; i++) {
                uint32_t prev = i == 0 ? num - 1 : i - 1;
                if (i == 0 ? AV(0) == AV(prev) : AV(i) != AV(prev)) {
                        a = i;
                        changes++;
                }
        }
        if (changes != 1)
                return -EAGAIN;

        /* the pending run before a */
        uint32_t run = 0;
        while (run < num && PENDING((a + num - 1 - run) % num))
                run++;
        uint32_t r = (a + num - run) % num;
        bool wrap = run == num ? AV(a) : run == 0 ? !AV(a) : AV(r);
        /* a chain the device used just before r, whose tails are in the run */
        uint32_t prev = (r + num - 1) % num;
        if (run > 0 && run < num && (fl[prev] & VRING_PACKED_DESC_F_NEXT)) {
                uint32_t skipped = 0;
                while (skipped < run && (fl[(r + skipped) % num] & VRING_PACKED_DESC_F_NEXT))
                        skipped++;
                if (skipped == run)
                        return -EAGAIN;                 /* a chain without its last descriptor */
                skipped++;
                r = (r + skipped) % num;
                run -= skipped;
                wrap = run == 0 ? !AV(a) : AV(r);
        }

        /* holes in [a, r) */
        bool all_done = true;
        for (uint32_t k = 0; k < num - run; k++) {
                uint32_t i = (a + k) % num;
                if (!PENDING(i))
                        continue;
                if ((flags & (VRING_PACKED_COMPLETE | VRING_PACKED_IN_ORDER)) != VRING_PACKED_COMPLETE) {
                        all_done = false;
                        continue;
                }
                uint16_t value = AV(i) ? fl[i] | VRING_PACKED_DESC_F_USED : fl[i] & ~VRING_PACKED_DESC_F_USED;
                int k2 = write_desc_flags(m, desc_uaddr + 16ull * i + 14, fl[i], value);
                if (k2 == -EAGAIN)
                        return -EAGAIN;                 /* the driver wrote it meanwhile: read again */
                if (k2 < 0) {
                        all_done = false;
                        continue;
                }
                (*ret_completed)++;
        }
#undef PENDING
#undef AV
        *ret_state = r | ((uint32_t) wrap << 15);
        *ret_certain = all_done && !chains && !(flags & VRING_PACKED_IN_ORDER);
        return 0;
}

int vring_packed_recover(const GuestMemory *m, uint64_t desc_uaddr, uint32_t num, unsigned flags,
                         uint32_t *ret_state, bool *ret_certain, unsigned *ret_completed) {
        if (num == 0 || num > VU_MAX_VRING_SIZE || (desc_uaddr & 15))
                return -EINVAL;
        const volatile uint8_t *ring = guest_memory_translate(m, desc_uaddr, 16ull * num);
        if (!ring)
                return -EFAULT;
        uint16_t *fl = malloc(sizeof(uint16_t) * num);
        if (!fl)
                return -ENOMEM;

        unsigned completed = 0;
        int r = -EAGAIN;
        for (unsigned attempt = 0; attempt < 3 && r == -EAGAIN; attempt++)
                r = packed_scan(m, desc_uaddr, ring, fl, num, flags, ret_state, ret_certain, &completed);
        if (r == -EAGAIN) {
                /* the fl[] of the last read */
                *ret_state = first_used_flip(fl, num);
                *ret_certain = false;
                r = 0;
        }
        free(fl);
        if (ret_completed)
                *ret_completed = completed;
        return r;
}
