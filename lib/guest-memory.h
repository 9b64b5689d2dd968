/* SPDX-License-Identifier: MIT */
#pragma once

/* The front-end's memory regions as the daemon sees them: mapped read-only, so that the
 * resume index of a ring can be read after a back-end crash. Addresses given by a peer are
 * translated only when the whole range lies inside one mapped region. */

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "vhost-user.h"

typedef struct GuestRegion {
        VuMemRegion info;
        int fd;                 /* owned */
        void *map;              /* read-only mapping of [0, mmap_offset + memory_size) */
        size_t map_len;
} GuestRegion;

/* With CONFIGURE_MEM_SLOTS, regions come one by one (ADD_MEM_REG): QEMU allows 509. */
#define GUEST_MEMORY_MAX_SLOTS 509u

typedef struct GuestMemory {
        GuestRegion *regions;           /* grown on demand */
        unsigned n_regions, allocated;
} GuestMemory;

void guest_memory_init(GuestMemory *m);
void guest_memory_clear(GuestMemory *m);         /* unmaps and closes everything */

/* A peer's fd that will be mapped for `size` bytes from offset 0: a regular file at least
 * that long. (A mapping past the end of a file maps, but touching it raises SIGBUS.) */
int guest_fd_check_mappable(int fd, uint64_t size, const char **ret_reason);

/* Checks a region on its own (sizes, overflow) and against the others (overlap, in both the
 * front-end's address space and the guest's). */
int guest_memory_check_region(const GuestMemory *m, const VuMemRegion *r, const char **ret_reason);
/* Maps fd (duplicated; the caller keeps its own) and adds the region. */
int guest_memory_add(GuestMemory *m, const VuMemRegion *r, int fd, const char **ret_reason);
/* Removes the region matching r's guest address, size and front-end address. */
int guest_memory_remove(GuestMemory *m, const VuMemRegion *r, const char **ret_reason);
/* Replaces the whole table; on failure the old table stays. */
int guest_memory_set_table(GuestMemory *m, const VuMemTable *t, const int *fds, const char **ret_reason);

/* Host pointer for [uaddr, uaddr+len) in the front-end's address space, or NULL when the range
 * is not wholly inside one region. */
const void *guest_memory_translate(const GuestMemory *m, uint64_t uaddr, uint64_t len);

/* Split ring: used->idx (flags u16, idx u16, ring...). */
int vring_split_read_used_idx(const GuestMemory *m, uint64_t used_uaddr, uint16_t *ret_idx);
/* Split ring: avail->idx (flags u16, idx u16, ring...). */
int vring_split_read_avail_idx(const GuestMemory *m, uint64_t avail_uaddr, uint16_t *ret_idx);
/* Packed ring: where a device resumes after a crash, as SET_VRING_BASE wants it (index in
 * bits 0-14, wrap counter in bit 15; the device restarts its used position there too): the
 * start of the run of pending descriptors that ends at the driver's avail position. A
 * descriptor before it that is still pending was processed by the old device but its used
 * flags not written (DPDK writes the first of a burst last): with VRING_PACKED_COMPLETE it
 * is completed in guest memory as the device would have (its USED bit set to its AVAIL
 * bit, through a temporary writable mapping, compare-and-swap), since neither resuming
 * before nor after it lets the ring run; *ret_completed counts them. *ret_certain is false
 * when a hole is left (not completed, or not writable), when the ring shows chained
 * descriptors (NEXT), with VRING_PACKED_IN_ORDER (the device writes one used descriptor
 * for a batch: the positions it skipped look like holes and are not completed), or when
 * the driver's side is not in one piece in three reads (then the first flip of the USED
 * flags is taken: nothing skipped, some buffers may be processed twice). The reasoning is
 * at the function. The old device must be gone. */
enum {
        VRING_PACKED_COMPLETE = 1 << 0,         /* write the holes' used flags */
        VRING_PACKED_IN_ORDER = 1 << 1,         /* VIRTIO_F_IN_ORDER was negotiated */
};
int vring_packed_recover(const GuestMemory *m, uint64_t desc_uaddr, uint32_t num, unsigned flags,
                         uint32_t *ret_state, bool *ret_certain, unsigned *ret_completed);
/* The byte sizes of a split ring's three parts, for bounds checks. */
uint64_t vring_split_desc_size(uint32_t num);
uint64_t vring_split_avail_size(uint32_t num);
uint64_t vring_split_used_size(uint32_t num);
