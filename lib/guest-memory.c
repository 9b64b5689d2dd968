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

#define VRING_PACKED_DESC_F_USED (1u << 15)

int vring_packed_recover(const GuestMemory *m, uint64_t desc_uaddr, uint32_t num, uint32_t *ret_state,
                         bool *ret_certain) {
        if (num == 0 || num > VU_MAX_VRING_SIZE || (desc_uaddr & 15))
                return -EINVAL;
        const volatile uint8_t *ring = guest_memory_translate(m, desc_uaddr, 16ull * num);
        if (!ring)
                return -EFAULT;

        /* struct { le64 addr; le32 len; le16 id; le16 flags; } */
#define USED_AT(i) ((*(const volatile uint16_t *) (ring + 16 * (size_t) (i) + 14) & VRING_PACKED_DESC_F_USED) != 0)
        bool first = USED_AT(0), wrap;
        uint32_t boundary = num, flips = 0;
        for (uint32_t i = 1; i < num; i++)
                if (USED_AT(i) != USED_AT(i - 1)) {
                        if (flips++ == 0)
                                boundary = i;
                }
#undef USED_AT
        if (boundary == num) {
                /* one value all round: the device is at the start of a lap */
                boundary = 0;
                wrap = !first;
        } else
                wrap = first;
        *ret_state = boundary | ((uint32_t) wrap << 15);
        *ret_certain = flips <= 1;
        return 0;
}
